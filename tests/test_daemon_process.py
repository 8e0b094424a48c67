"""The daemon as a real process: kill -9 at random points loses and repeats nothing, SIGTERM stops it cleanly, SIGHUP
reloads what can be reloaded."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.fixtures.runs import botlab, check_run_invariants, launch, read_kv, wait_for_phase, write_tiny_team

pytestmark = pytest.mark.slow


def last_step(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT COALESCE(MAX(step), 0) FROM steps").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def events(db_path: Path, kind: str) -> list[str]:
    db = sqlite3.connect(db_path)
    try:
        return [m for (m,) in db.execute("SELECT message FROM events WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        db.close()


def kill_9(proc) -> None:
    """SIGKILL the daemon; whatever it started (sandbox workers, their runs) must die with it."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], f"processes outlived the killed daemon: {alive}"


def test_kill_9_at_random_points_then_resume(tmp_path, builtin_model_dir):
    steps = 4
    team = write_tiny_team(tmp_path, steps=steps, digest_every="5s")  # digests are written between the kills too
    # An entropy bonus gives every step a gradient, so every step has an update to be killed in.
    team.write_text(team.read_text().replace("train: {", "train: {entropy_coef: 0.001, "))
    run_dir = tmp_path / "runs" / "tiny"
    db_path = run_dir / "botlab.sqlite"
    log = tmp_path / "run.log"
    # One kill at a random moment (start-up, seeding or step 1), then two where state is written: after the resume
    # state is saved but before the step commits, and during an update after a resume.
    kill_points = [random.Random().uniform(0.5, 20.0), f"step 2/{steps}: save", f"step 3/{steps}: learn"]
    for n, point in enumerate(kill_points):
        committed = last_step(db_path)
        if n == 1:  # feedback while no daemon runs: the command applies it
            assert botlab("feedback", str(team), "/focus deduction").returncode == 0
        proc = launch("run", str(team), log=log)
        if n == 2:  # feedback while the daemon runs: stored, applied at its next poll (or after the kill, by the next run)
            assert botlab("feedback", str(team), "/difficulty +1").returncode == 0
        if isinstance(point, str):
            wait_for_phase(proc, db_path, point)
        else:
            time.sleep(point)  # some random moment of its work
        kill_9(proc)
        # Nothing committed is lost, at most the step in flight is gone, and the directory is consistent.
        assert last_step(db_path) in (committed, committed + 1)
        check_run_invariants(run_dir, after_crash=True)
        assert read_kv(db_path, "daemon_state") == "running"  # what `botlab status` reports as crashed

    assert last_step(db_path) == 2
    final = botlab("run", str(team))
    assert final.returncode == 0, log.read_text()[-3000:] + final.stdout + final.stderr
    assert "resuming after step 2" in final.stdout + final.stderr
    counts = check_run_invariants(run_dir)
    assert counts["steps"] == steps and counts["feedback"] == 2 and counts["digests"] >= 1
    # One optimizer update per committed step that trained (a step whose advantages were all 0 has no gradient and
    # makes no update): no redone step was applied twice, none was skipped.
    state = torch.load(run_dir / read_kv(db_path, "resume_state") / "learner.pt", weights_only=False)
    updates = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    db = sqlite3.connect(db_path)
    [(trained,)] = db.execute("SELECT COUNT(*) FROM metrics WHERE name = 'train/trained_sequences' AND value > 0")
    db.close()
    assert updates == ({float(trained)} if trained else set())
    assert len(events(db_path, "restart")) == len(kill_points)  # every run after a kill said it found a crash
    assert read_kv(db_path, "daemon_state") == "stopped"


def running_step_one(tmp_path: Path):
    """A tiny team's daemon, caught while it proposes in step 1."""
    team = write_tiny_team(tmp_path, steps=10)
    db_path = tmp_path / "runs" / "tiny" / "botlab.sqlite"
    proc = launch("run", str(team), log=tmp_path / "run.log")
    wait_for_phase(proc, db_path, "step 1/10: propose")
    return team, db_path, proc


def test_sigterm_finishes_the_step_in_flight(tmp_path, builtin_model_dir):
    team, db_path, proc = running_step_one(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == 0
    assert last_step(db_path) == 1  # the step in flight was finished and committed, no further step began
    check_run_invariants(db_path.parent)
    assert read_kv(db_path, "daemon_state") == "stopped"
    assert events(db_path, "restart") == []

    # Without its resume state the team must not train on from the base weights: a clear error, nothing changed.
    state = db_path.parent / read_kv(db_path, "resume_state")
    state.rename(state.with_name("moved-away"))
    refused = botlab("run", str(team))
    assert refused.returncode == 1
    assert "is missing" in refused.stdout + refused.stderr
    assert f"the resume state of step 1 is missing ({state})" in events(db_path, "error")[-1]
    assert last_step(db_path) == 1


def test_second_sigterm_abandons_the_step(tmp_path, builtin_model_dir):
    team, db_path, proc = running_step_one(tmp_path)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 130
    assert last_step(db_path) == 0  # abandoned: nothing of step 1 was committed
    check_run_invariants(db_path.parent)
    assert read_kv(db_path, "daemon_state") == "stopped"
    assert any("abandoned" in m for m in events(db_path, "stop"))


def test_sighup_reloads_schedules_and_names_what_it_refused(tmp_path, builtin_model_dir):
    team, db_path, proc = running_step_one(tmp_path)
    original = team.read_text()
    team.write_text(original + "\nbogus_key: 1\n")
    proc.send_signal(signal.SIGHUP)
    refused = wait_for_event(proc, db_path, "reload")
    assert "refused" in refused and "bogus_key" in refused

    # A digest every second (reloadable) and a hotter solver (not reloadable while running).
    changed = original.replace("digest_every: 1h", "digest_every: 1s")
    changed = changed.replace("solver: {max_new_tokens: 32, prime_answer: true, temperature: 0.7}",
                              "solver: {max_new_tokens: 32, prime_answer: true, temperature: 0.9}")
    assert changed.count("1s") == 1 and "temperature: 0.9" in changed
    team.write_text(changed)
    proc.send_signal(signal.SIGHUP)
    reloaded = wait_for_event(proc, db_path, "reload", after=refused)
    assert reloaded.startswith("reloaded schedules") and "roles.solver" in reloaded and "selfplay" not in reloaded
    deadline = time.monotonic() + 300
    while not check_run_invariants(db_path.parent, after_crash=True)["digests"]:  # the new schedule is in force
        assert time.monotonic() < deadline, "no digest after the schedule was reloaded"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == 0


def wait_for_event(proc, db_path: Path, kind: str, after: str | None = None, timeout: float = 300) -> str:
    """The newest event of `kind` once there is one (newer than the message `after`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(db_path, kind)
        if found and found[-1] != after:
            return found[-1]
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}) before a {kind} event"
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event in {timeout} s")
