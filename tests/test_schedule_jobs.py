"""The daemon's timed work as APScheduler jobs on its side loop (botlab/schedule.py): digests and reply polls run
while the main thread is busy, a restart catches up once, work that needs the engine waits for the next boundary,
and pruning keeps what the committed step needs. The last test runs a real daemon with a deliberately long phase."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from botlab.config import TeamConfig
from botlab.curriculum import load_curriculum
from botlab.daemon import SideLoop
from botlab.notifiers.replies import Incoming
from botlab.reporting.feedback import record
from botlab.reporting.service import Reporter
from botlab.rundir import NEXT_DIGEST_KEY
from botlab.schedule import Schedule
from botlab.selfplay.checkpoints import prune
from botlab.store import open_store
from tests.fixtures.runs import REPO, botlab, read_kv, wait_started, write_tiny_team
from tests.test_digest import record_steps

WAIT_S = 60  # an upper bound for something that should happen within a second or two, on a loaded host


def team_with(tmp_path, **schedules) -> TeamConfig:
    return TeamConfig.model_validate({"name": "demo", "storage_dir": str(tmp_path), "schedules": schedules})


def wait_until(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.05)
    return found


def digests(store) -> list[int]:
    return [r["id"] for r in store.query("SELECT id FROM digests ORDER BY id")]


def digest_events(store) -> list[str]:
    """Written once a digest is stored and enqueued: its reason."""
    return [r["message"] for r in store.query("SELECT message FROM events WHERE kind = 'digest' ORDER BY id")]


@pytest.fixture
def side():
    loop = SideLoop()
    yield loop
    loop.close()


def start_reporter(team, store, side) -> tuple[Reporter, Schedule]:
    """As the daemon does: the reporter on the side loop, its jobs on a schedule there."""
    reporter = Reporter(team, store, console=Console(file=io.StringIO()))
    side.call(reporter.start(live=True), timeout=30)
    schedule = Schedule(store, side.loop)
    reporter.add_jobs(schedule)
    schedule.start()
    return reporter, schedule


def stop_reporter(reporter, schedule, side) -> None:
    schedule.stop()
    side.call(reporter.stop(), timeout=30)


def test_digest_and_reply_poll_run_while_the_main_thread_is_busy(tmp_path, side):
    """No tick is called: the main thread only waits, as in a long phase, and the jobs do the work."""
    team = team_with(tmp_path, digest_every=1, feedback_poll_every=1)
    with open_store(team.run_dir) as store:
        record_steps(store, [1, 2])
        reporter, schedule = start_reporter(team, store, side)
        try:
            assert schedule.next_run("digest") == pytest.approx(store.get(NEXT_DIGEST_KEY), abs=1e-3)
            record(store, Incoming(channel="cli", external_id="cli-1", sender="me", text="/pause"))
            wait_until(lambda: digest_events(store), "a scheduled digest")
            wait_until(lambda: load_curriculum(store).paused, "the /pause reply applied")
        finally:
            stop_reporter(reporter, schedule, side)
        assert store.scalar("SELECT status FROM feedback") == "applied"
        assert "(schedule," in digest_events(store)[0]


def test_a_restart_after_a_long_downtime_catches_up_once(tmp_path, side):
    team = team_with(tmp_path, digest_every="1h", feedback_poll_every="1h")
    with open_store(team.run_dir) as store:
        record_steps(store, [1])
        ten_hours_ago = time.time() - 10 * 3600
        store.put("schedule/digest_at", ten_hours_ago)
        store.put("schedule/poll_at", ten_hours_ago)
        started = time.time()
        reporter, schedule = start_reporter(team, store, side)
        try:
            wait_until(lambda: digest_events(store), "the catch-up digest")
            wait_until(lambda: store.get("schedule/poll_at") >= started, "the catch-up poll")
            # The next ones are an interval after the catch-up, not ten overdue runs in a row.
            assert store.get(NEXT_DIGEST_KEY) >= started + 3600
            assert schedule.next_run("digest") == pytest.approx(store.get(NEXT_DIGEST_KEY), abs=1e-3)
            assert schedule.next_run("feedback poll") >= started + 3600
            side.call(reporter.tick(time.time()), timeout=60)  # a boundary right after it: nothing more is due
        finally:
            stop_reporter(reporter, schedule, side)
        assert digests(store) == [1]


def test_a_digest_asked_for_during_a_phase_goes_out_with_the_next_poll(tmp_path, side):
    team = team_with(tmp_path, digest_every="6h", feedback_poll_every=1)
    with open_store(team.run_dir) as store:
        record_steps(store, [1])
        reporter, schedule = start_reporter(team, store, side)
        try:
            record(store, Incoming(channel="cli", external_id="cli-1", sender="me", text="/digest"))
            wait_until(lambda: digest_events(store), "the digest asked for")
        finally:
            stop_reporter(reporter, schedule, side)
        assert digests(store) == [1] and "(asked for by feedback," in digest_events(store)[0]
        assert store.get("digest_requested") is False


def test_engine_work_due_during_a_phase_runs_at_the_next_boundary_in_the_main_thread(tmp_path, side):
    """An evaluation needs the engine the step is using: its job hands it over, and it runs once, in the main
    thread, when the phase ends, however often it fell due meanwhile."""
    with open_store(tmp_path) as store:
        schedule = Schedule(store, side.loop)
        fired, ran = [], []
        schedule.every("eval", 0.05, lambda: (fired.append(1), schedule.for_boundary("eval", lambda: ran.append(
            threading.current_thread().name))), "schedule/eval_at")
        schedule.start()
        try:
            # The main thread is in a phase: the job falls due (several times), nothing runs.
            wait_until(lambda: len(fired) >= 3, "the eval job firing")
            assert schedule.waiting() == ["eval"] and ran == []
            # The phase ends: the boundary runs it, once.
            assert schedule.run_boundary() == ["eval"]
            assert ran == [threading.main_thread().name]
            assert schedule.run_boundary() in ([], ["eval"])  # the job may have fallen due again meanwhile
        finally:
            schedule.stop()


def test_a_failing_job_is_recorded_and_runs_again(tmp_path, side):
    with open_store(tmp_path) as store:
        schedule = Schedule(store, side.loop)
        calls = []

        def broken():
            calls.append(1)
            raise OSError("disk gone")

        schedule.every("broken", 0.05, broken, "schedule/broken_at")
        schedule.start()
        try:
            wait_until(lambda: len(calls) >= 2, "a second run after a failure")
        finally:
            schedule.stop()
        assert "scheduled broken: OSError: disk gone" in store.scalar(
            "SELECT message FROM events WHERE kind = 'error'")


def make_steps(folder: Path, steps: list[int], partial: list[int] = ()) -> None:
    for step in steps:
        (folder / f"step-{step:06d}").mkdir(parents=True)
    for step in partial:
        (folder / f"step-{step:06d}.partial").mkdir(parents=True)


def test_prune_keeps_what_the_committed_step_needs_and_leaves_later_steps_alone(tmp_path):
    make_steps(tmp_path / "state", [3, 4, 5], partial=[2])
    make_steps(tmp_path / "checkpoints", [2, 4, 6], partial=[4])
    removed = prune(tmp_path, committed_step=5, keep_checkpoints=1)
    # step 5 is committed; the next step is writing step 6 (its checkpoint here) meanwhile.
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["step-000005"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    assert len(removed) == 5
    assert prune(tmp_path, committed_step=5, keep_checkpoints=1) == []  # a second prune finds nothing more


# --- a real daemon with a long phase ----------------------------------------------------------------------------------

LEARN_SLEEP_S = 25  # the learn phase made long on purpose: jobs fire inside it (each within about a second)


@pytest.mark.slow
def test_jobs_fire_during_a_long_phase_of_a_real_daemon(tmp_path, builtin_model_dir):
    """`botlab run` (tests/fixtures/slow_learn.py: the learn phase sleeps LEARN_SLEEP_S first) with a reply poll
    every second and a digest and an evaluation every 2 s: a reply sent during the learn phase is applied and a
    digest goes out before that phase ends; the evaluation that fell due meanwhile runs at the next boundary, in
    the main thread."""
    team = write_tiny_team(tmp_path, steps=1, digest_every="2s")
    text = team.read_text().replace("feedback_poll_every: 5s,", "feedback_poll_every: 1s, eval_every: 2s, "
                                    "eval_every_steps: 0,")
    assert "eval_every: 2s" in text
    team.write_text(text)
    db_path = tmp_path / "runs" / "tiny" / "botlab.sqlite"
    record_file = tmp_path / "slow_learn.jsonl"
    launched_at = time.time()
    with open(tmp_path / "daemon.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fixtures" / "slow_learn.py"), "run",
                                 str(team), "--steps", "1"], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "SLOW_LEARN_S": str(LEARN_SLEEP_S),
                                     "SLOW_LEARN_RECORD": str(record_file)})
    try:
        wait_started(proc, db_path, launched_at)

        def in_learn_phase() -> str | None:
            assert proc.poll() is None, f"the daemon exited ({proc.returncode}); see {tmp_path / 'daemon.log'}"
            phase = read_kv(db_path, "phase") or ""
            return phase if phase.endswith(": learn") else None  # not ": learnability"

        phase = wait_until(in_learn_phase, "the learn phase", timeout=600)
        result = botlab("feedback", str(team), "/harder")
        assert result.returncode == 0 and "applies it at its next poll" in result.stdout, result.stdout
        db = sqlite3.connect(db_path, timeout=10)
        try:
            applied = lambda: db.execute("SELECT status FROM feedback").fetchone()[0] == "applied"  # noqa: E731
            wait_until(applied, "the reply applied", timeout=LEARN_SLEEP_S)
            wait_until(lambda: db.execute("SELECT COUNT(*) FROM digests").fetchone()[0], "a digest",
                       timeout=LEARN_SLEEP_S)
        finally:
            db.close()
        assert read_kv(db_path, "phase") == phase  # both happened before the learn phase ended
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in record_file.read_text().splitlines()]
    learn = next(r for r in records if r["what"] == "learn")
    evals = [r for r in records if r["what"] == "eval" and r["start"] >= learn["start"]]
    assert evals, "no evaluation ran after the learn phase began"
    assert evals[0]["start"] >= learn["end"] and evals[0]["thread"] == "MainThread"
    assert evals[0]["phase"] == "step 1/1: sync"  # the boundary that ends the learn phase
