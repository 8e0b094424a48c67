"""One sandbox worker process seen from the trainer: start it, talk to it in frames, kill it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from botlab.sandbox.runtime.protocol import WorkerGone, read_frame, write_frame

SANDBOX_DIR = Path(__file__).resolve().parent
# -S: no site-packages in the sandbox (stdlib only), -s: no user site, -B: never write .pyc files.
_BOOT = f"import sys; sys.path.insert(0, {str(SANDBOX_DIR)!r}); from runtime.hub import main; main()"
START_TIMEOUT_S = 60.0


class WorkerStartError(RuntimeError):
    """A sandbox worker could not start; the message carries its own error output."""


class Worker:
    """A fork-server process (runtime/hub.py) with a fixed hash seed; it runs one job (or one list) at a time."""

    def __init__(
        self, index: int, hash_seed: int, settings: dict, log_dir: Path, python: str = sys.executable,
        user: int | None = None,
    ):
        """`python` must be a CPython >= 3.11 (the worker needs only its standard library); `user` runs the worker
        as another uid (from a root trainer), e.g. to use an unprivileged user namespace."""
        self.python = python
        self.user = user
        self.index = index
        self.hash_seed = hash_seed
        self.settings = settings
        self.log_path = log_dir / f"worker-{index}.log"
        self.runs = 0
        self.answered_at = 0.0  # time.monotonic() of its last answer (the scheduler prefers the longest idle)
        self.isolation = ""
        self.process: subprocess.Popen | None = None

    # --- life cycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the process and send its settings; `wait_ready` completes the start (so many start at once)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.python, "-S", "-s", "-B", "-c", _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={"PYTHONHASHSEED": str(self.hash_seed)},  # nothing else from our environment
                cwd="/",
                start_new_session=True,  # its own process group, away from the terminal's signals
                bufsize=0,
                user=self.user,
            )
        self.runs = 0
        write_frame(self.stdin, self.settings)

    def wait_ready(self, deadline: float) -> None:
        try:
            ready, _, _ = select.select([self.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise WorkerGone("no ready message in time")
            message = read_frame(self.stdout)
        except WorkerGone as err:
            self.kill()
            raise WorkerStartError(f"sandbox worker {self.index} did not start ({err}): {self._log_tail()}") from None
        if not isinstance(message, dict) or not message.get("ready"):
            self.kill()
            raise WorkerStartError(f"sandbox worker {self.index} sent {message!r} instead of ready")
        self.isolation = str(message.get("isolation", ""))

    def restart(self) -> None:
        self.kill()
        self.start()
        self.wait_ready(time.monotonic() + START_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL its process group; its own children die with its pid namespace (or by their death signal)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                pipe.close()
        self.process.wait()
        self.process = None

    # --- talking ------------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def stdin(self) -> int:
        return self._pipe(self.process.stdin if self.process else None)

    @property
    def stdout(self) -> int:
        return self._pipe(self.process.stdout if self.process else None)

    def fileno(self) -> int:
        return self.stdout

    def send(self, job: dict | list[dict]) -> None:
        """One job (answered with one result) or a list of jobs (answered with a list of results, in order)."""
        self.runs += len(job) if isinstance(job, list) else 1
        write_frame(self.stdin, job)

    def receive(self, timeout_s: float | None = None) -> dict | list[dict]:
        if timeout_s is not None and not select.select([self.stdout], [], [], timeout_s)[0]:
            raise WorkerGone(f"no answer within {timeout_s:g} s")
        message = read_frame(self.stdout)
        if not isinstance(message, (dict, list)):
            raise WorkerGone(f"unexpected message {message!r:.80}")
        self.answered_at = time.monotonic()
        return message

    @staticmethod
    def _pipe(pipe: IO[bytes] | None) -> int:
        if pipe is None or pipe.closed:
            raise WorkerGone("worker not running")
        return pipe.fileno()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip() or "(no output)"
        except OSError:
            return "(no log)"
