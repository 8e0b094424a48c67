"""The schedule (tick), the console channel, the outbox backoff and the CLI commands, on a real store."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from botlab.config import TeamConfig
from botlab.curriculum import load_curriculum
from botlab.notifiers import outbox
from botlab.reporting.cli import digest_now, local_feedback
from botlab.reporting.feedback import short_status
from botlab.reporting.service import NEXT_DIGEST_KEY, Reporter
from botlab.store import open_store
from tests.test_digest import record_steps


@pytest.fixture
def team(tmp_path) -> TeamConfig:
    return TeamConfig.model_validate({"name": "demo", "storage_dir": str(tmp_path),
                                      "schedules": {"digest_every": "1h", "feedback_poll_every": "60s"}})


@pytest.fixture
def store(team):
    with open_store(team.run_dir) as s:
        yield s


@pytest.fixture
def screen() -> Console:
    return Console(file=io.StringIO(), width=200)


def digests(store) -> list[int]:
    return [r["id"] for r in store.query("SELECT id FROM digests ORDER BY id")]


async def test_digests_follow_the_schedule_and_catch_up_once(team, store, screen):
    reporter = Reporter(team, store, console=screen)
    await reporter.start()
    t0 = store.get("schedule/digest_at")
    assert store.get(NEXT_DIGEST_KEY) == t0 + 3600
    record_steps(store, [1, 2])
    await reporter.tick(t0 + 10)
    assert digests(store) == []  # not due yet
    await reporter.tick(t0 + 3600)
    assert digests(store) == [1]
    await reporter.tick(t0 + 3601)
    assert digests(store) == [1]

    # Ten hours down, then a restart: one digest to catch up, not ten.
    await reporter.stop()
    record_steps(store, [3])
    restarted = Reporter(team, store, console=screen)
    await restarted.start()
    await restarted.tick(t0 + 13 * 3600)
    await restarted.tick(t0 + 13 * 3600 + 5)
    assert digests(store) == [1, 2]
    assert store.get(NEXT_DIGEST_KEY) == t0 + 14 * 3600

    # Nothing happened for an hour: the scheduled digest is skipped, the schedule moves on.
    await restarted.tick(t0 + 14 * 3600)
    assert digests(store) == [1, 2] and store.get(NEXT_DIGEST_KEY) == t0 + 15 * 3600
    await restarted.stop()


async def test_console_channel_writes_the_digest_files(team, store, screen):
    reporter = Reporter(team, store, console=screen)
    await reporter.start()
    record_steps(store, [1])
    digest_id = await reporter.send_digest("test")
    folder = team.run_dir / "digests"
    assert sorted(p.name for p in folder.iterdir()) == ["digest-0001.eml", "digest-0001.html", "digest-0001.txt"]
    assert (folder / "digest-0001.txt").read_text() == store.scalar("SELECT text FROM digests WHERE id = ?",
                                                                    (digest_id,))
    printed = screen.file.getvalue()
    assert "[botlab demo] digest #1: step 1/500" in printed and "Step 1 ran; step 1 of 500. Solve rate 15%." in printed


async def test_a_digest_asked_for_by_feedback_goes_out_at_the_next_tick(team, store, screen):
    reporter = Reporter(team, store, console=screen)
    await reporter.start()
    t0 = store.get("schedule/digest_at")
    assert local_feedback(team, "Please send me a digest now.", screen) == 0
    assert store.get("digest_requested") is True
    await reporter.tick(t0 + 1)
    assert digests(store) == [1]
    text = store.scalar("SELECT text FROM digests WHERE id = 1")
    assert '"Please send me a digest now." (cli' in text and "a digest will be sent now" in text
    await reporter.tick(t0 + 2)
    assert digests(store) == [1] and store.get("digest_requested") is False


async def test_feedback_stored_while_the_daemon_is_away_is_applied_by_the_next_poll(team, store, screen):
    reporter = Reporter(team, store, console=screen)
    await reporter.start()
    assert local_feedback(team, "/pause", screen) == 0  # no daemon alive: applied at once
    assert load_curriculum(store).paused
    assert "training paused" in screen.file.getvalue()
    assert local_feedback(team, "   ", screen) == 2


def test_status_from_the_command_line_gets_the_short_status(team, store, screen):
    """`botlab feedback "/status"` is answered as a Nostr DM's /status is; /ask says why no model answers here."""
    record_steps(store, [1, 2])
    assert local_feedback(team, "/status", screen) == 0
    status = store.query("SELECT status, response FROM feedback ORDER BY id")[-1]
    assert status["status"] == "answered" and status["response"] == short_status(store, team)
    assert "botlab demo: " in status["response"] and "step 2 of 500" in status["response"]
    assert local_feedback(team, "/ask what is 2+2?", screen) == 0
    ask = store.query("SELECT status, response FROM feedback ORDER BY id")[-1]
    assert ask["status"] == "ignored" and ask["response"] == "/ask is off for this team (notifiers.nostr.ask.enabled)"
    printed = screen.file.getvalue()
    assert "not a command" not in printed and status["response"] in printed


def test_outbox_backoff_doubles_up_to_an_hour():
    assert [outbox.retry_delay(n) for n in (1, 2, 3, 4, 8, 20)] == [30, 60, 120, 240, 3600, 3600]


def test_digest_command(team, screen, tmp_path):
    assert digest_now(team, send=False, console=screen) == 1  # no run yet
    assert "has not run yet" in screen.file.getvalue()
    with open_store(team.run_dir) as store:
        record_steps(store, [1, 2])
    assert digest_now(team, send=False, console=screen) == 0
    folder = team.run_dir / "digests"
    assert sorted(p.name for p in folder.iterdir()) == ["preview.eml", "preview.html", "preview.txt"]
    with open_store(team.run_dir) as store:
        assert digests(store) == []  # a preview stores nothing
    assert digest_now(team, send=True, console=screen) == 0
    with open_store(team.run_dir) as store:
        assert digests(store) == [1] and outbox.unsent(store) == 0
    assert "digest #1 sent" in screen.file.getvalue()


def test_digest_command_reports_a_missing_secret(tmp_path, screen, monkeypatch):
    monkeypatch.delenv("BOTLAB_TEST_NSEC_UNSET", raising=False)
    team = TeamConfig.model_validate({"name": "demo", "storage_dir": str(tmp_path), "notifiers": {"nostr": {
        "nsec_env": "BOTLAB_TEST_NSEC_UNSET", "relays": ["ws://127.0.0.1:1"],
        "recipients": ["npub1sl69f7tkqru020fhwl73vkjjfv0nnr0g8djhrvzxjswuznyalzdqz6maaw"]}}})
    with open_store(team.run_dir) as store:
        record_steps(store, [1])
    assert digest_now(team, send=True, console=screen) == 2
    assert "notifiers.nostr.nsec_env: environment variable BOTLAB_TEST_NSEC_UNSET is not set" in \
        screen.file.getvalue()


def test_the_reporter_runs_on_the_daemons_side_loop(team, store, screen):
    """As the daemon uses it: built in the main thread, driven on the I/O thread's loop, store shared."""
    from botlab.daemon import SideLoop

    side = SideLoop()
    try:
        reporter = Reporter(team, store, console=screen)
        side.call(reporter.start(), timeout=30)
        record_steps(store, [1, 2])
        assert local_feedback(team, "/digest", screen) == 0
        side.call(reporter.tick(time.time()), timeout=120)
        side.call(reporter.stop(), timeout=30)
    finally:
        side.close()
    assert digests(store) == [1]
    assert "feedback: \"/digest\"" in store.scalar("SELECT short FROM digests")
