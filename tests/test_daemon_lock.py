"""One daemon per run dir: a second `botlab run` is refused with a clear message, and the lock dies with its holder."""

import os
import subprocess
import sys
from pathlib import Path

from botlab.rundir import AlreadyRunning, DaemonLock, daemon_alive

REPO = Path(__file__).resolve().parent.parent


def test_second_daemon_is_refused(tmp_path):
    team = tmp_path / "team.yaml"
    team.write_text(f"name: locked\nstorage_dir: {tmp_path}\n")
    run_dir = tmp_path / "locked"
    with DaemonLock(run_dir):
        assert daemon_alive(run_dir)
        result = subprocess.run([sys.executable, "-m", "botlab.cli", "run", str(team), "--steps", "1"],
                                capture_output=True, text=True, timeout=120, cwd=REPO)
        assert result.returncode == 1
        assert f"another botlab (pid {os.getpid()}) is already running this team" in result.stdout
        assert "Traceback" not in result.stdout + result.stderr
    assert not daemon_alive(run_dir)


def test_lock_is_released_when_the_holder_dies(tmp_path):
    run_dir = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from botlab.rundir import DaemonLock\n"
        f"l = DaemonLock(Path({str(run_dir)!r})).__enter__(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    try:
        try:
            with DaemonLock(run_dir):
                raise AssertionError("the lock should be held")
        except AlreadyRunning:
            pass
    finally:
        holder.kill()
        holder.wait()
    with DaemonLock(run_dir):
        pass
