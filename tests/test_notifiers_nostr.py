"""The Nostr channel against a real relay on loopback (nostr-sdk LocalRelay) and a human with their own client."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from nostr_sdk import EventBuilder, Filter, Keys, Kind, ReqTarget, Tag, nip59_make_gift_wrap
from pydantic import ValidationError

from botlab.config import TeamConfig
from botlab.curriculum import load_curriculum
from botlab.notifiers.secrets import NotifierConfigError
from botlab.reporting.service import Reporter
from botlab.store import Store
from tests.fixtures.nostr import Human, wait_relay_connected
from tests.test_digest import record_steps

NSEC_ENV = "BOTLAB_TEST_NSEC"


@pytest.fixture
def bot_keys(monkeypatch) -> Keys:
    keys = Keys.generate()
    monkeypatch.setenv(NSEC_ENV, keys.secret_key().to_bech32())
    return keys


def nostr_team(tmp_path, relay, human: Human, **nostr) -> TeamConfig:
    settings = {"nsec_env": NSEC_ENV, "relays": [relay.url], "recipients": [human.npub], "reconnect_s": 5} | nostr
    return TeamConfig.model_validate({"name": "demo", "storage_dir": str(tmp_path),
                                      "schedules": {"feedback_poll_every": "1h"},
                                      "notifiers": {"console": {"enabled": False}, "nostr": settings}})


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "botlab.sqlite") as s:
        yield s


@pytest.fixture
async def reporter(tmp_path, nostr_relay, nostr_human, bot_keys, store):
    r = Reporter(nostr_team(tmp_path, nostr_relay, nostr_human), store)
    await r.start()
    yield r
    await r.stop()


async def wait_for_feedback(reporter: Reporter, store: Store, count: int, timeout: float = 10.0) -> None:
    """Tick whenever the subscription delivers a DM, until `count` messages are stored (polling is hourly)."""
    deadline = time.monotonic() + timeout
    arrived = reporter.channels["nostr"].news
    while store.scalar("SELECT COUNT(*) FROM feedback") < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"fewer than {count} feedback messages after {timeout} s")
        try:
            await asyncio.wait_for(arrived.wait(), min(left, 1.0))
        except asyncio.TimeoutError:
            pass
        await reporter.tick()


async def wait_for_inbox(reporter: Reporter, count: int, timeout: float = 10.0) -> None:
    """Until the subscription has queued `count` accepted DMs (not yet stored)."""
    deadline = time.monotonic() + timeout
    while reporter.channels["nostr"].inbox.qsize() < count:
        assert time.monotonic() < deadline, f"fewer than {count} DMs arrived"
        await asyncio.sleep(0.02)


async def test_a_digest_arrives_as_a_dm_and_the_dm_relays_are_published(tmp_path, nostr_relay, nostr_human,
                                                                        bot_keys, store):
    reporter = Reporter(nostr_team(tmp_path, nostr_relay, nostr_human, public_notes=True), store)
    await reporter.start()
    try:
        record_steps(store, range(1, 3))
        await reporter.send_digest("test")
        sender, text, _ = await nostr_human.next_dm()
    finally:
        await reporter.stop()
    assert sender == bot_keys.public_key().to_bech32()
    assert text.startswith("botlab demo #1: step 2/500") and "/focus abduction" in text
    assert store.scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL") == 0
    mine = Filter().author(bot_keys.public_key())
    relay_list = await nostr_human.client.fetch_events(ReqTarget.auto([mine.kind(Kind(10050))]), timedelta(seconds=2))
    [event] = relay_list
    assert [t.to_vec() for t in event.tags()] == [["relay", nostr_relay.url]]
    notes = await nostr_human.client.fetch_events(ReqTarget.auto([mine.kind(Kind(1))]), timedelta(seconds=2))
    assert [n.content() for n in notes] == ["botlab demo #1: step 2/500, solve 20%"]


async def test_a_reply_changes_the_curriculum_and_the_next_digest_says_so(reporter, store, nostr_human, bot_keys):
    record_steps(store, range(1, 3))
    await reporter.send_digest("test")
    _, _, digest_rumor = await nostr_human.next_dm()
    await nostr_human.send_dm(bot_keys.public_key(), "/focus abduction\nplease also /pause", reply_to=digest_rumor)
    await wait_for_feedback(reporter, store, 1)

    row = store.query("SELECT * FROM feedback")[0]
    assert (row["channel"], row["sender"], row["digest_id"], row["status"]) == \
        ("nostr", nostr_human.npub, 1, "applied")
    curriculum = load_curriculum(store)
    assert curriculum.task_weights["abduction"] == 3.0 and curriculum.paused
    # The message is answered at once with what it changed...
    _, answer, _ = await nostr_human.next_dm()
    assert "Done: focus on abduction; task weights abduction 1 -> 3; training paused" in " ".join(answer.split())

    # ...and the next digest says so too.
    await reporter.send_digest("test")
    _, text, _ = await nostr_human.next_dm()
    flat = " ".join(text.split())  # the DM wraps its lines
    assert "feedback: \"/focus abduction" in flat and "task weights abduction 1 -> 3; training paused" in flat
    assert ", paused" in text.splitlines()[0]


async def test_a_wrong_pubkey_and_a_forged_sender_are_ignored(reporter, store, nostr_relay, nostr_human, bot_keys):
    stranger = Human(nostr_relay.url)
    await stranger.connect()
    try:
        await stranger.send_dm(bot_keys.public_key(), "/pause")
        # The rumor claims to be the allowed human, but the stranger sealed it: the seal check must catch it.
        await stranger.send_forged_dm(bot_keys.public_key(), "/pause", claimed_author=nostr_human.keys.public_key())
    finally:
        await stranger.close()
    await nostr_human.send_dm(bot_keys.public_key(), "/harder")  # the one message that counts, sent last
    await wait_for_feedback(reporter, store, 1)
    await reporter.poll_feedback()
    assert [r["text"] for r in store.query("SELECT text FROM feedback")] == ["/harder"]
    assert not load_curriculum(store).paused
    reasons = [r["message"] for r in store.query("SELECT message FROM events WHERE kind = 'feedback_ignored'")]
    assert any(f"DM from {stranger.npub}, which is not allowed" in r for r in reasons)
    assert any("could not open a gift wrap" in r for r in reasons)


async def test_relay_restart_send_retried_once_and_reply_still_received(reporter, store, nostr_relay, nostr_human,
                                                                        bot_keys):
    nostr_relay.stop()
    now = time.time()
    await reporter.send_digest("test", now=now)
    assert "not connected" in store.query("SELECT last_error FROM outbox")[0]["last_error"]

    await nostr_relay.start()  # an in-memory relay: it comes back empty
    await wait_relay_connected(reporter.channels["nostr"].client, nostr_relay.url)  # reconnects by itself
    human = Human(nostr_relay.url, keys=nostr_human.keys)  # the phone reconnects too, and publishes its DM relays
    await human.connect()
    try:
        assert await reporter.flush_outbox(now + 31) == 1
        assert await reporter.flush_outbox(now + 10_000) == 0
        _, text, rumor = await human.next_dm()
        assert text.startswith("botlab demo #1")
        await human.send_dm(bot_keys.public_key(), "/easier", reply_to=rumor)
        await wait_for_feedback(reporter, store, 1)  # the subscription was renewed after the restart
        _, answer, _ = await human.next_dm()
        assert answer.startswith("You wrote:") and "Done: " in answer  # what /easier changed
        with pytest.raises(TimeoutError):
            await human.next_dm(timeout=0.3)  # the digest came once
    finally:
        await human.close()
    assert load_curriculum(store).difficulty == -1


async def test_duplicate_delivery_and_restarts_apply_a_dm_once(tmp_path, nostr_relay, nostr_human, bot_keys, store):
    team = nostr_team(tmp_path, nostr_relay, nostr_human)
    reporter = Reporter(team, store)
    await reporter.start()
    try:
        # One DM wrapped twice (clients re-wrap when they resend): two events, one rumor id.
        rumor = (EventBuilder(Kind(14), "/harder").tags([Tag.public_key(bot_keys.public_key())])
                 .finalize_unsigned(nostr_human.keys.public_key()).ensure_id())
        for _ in range(2):
            await nostr_human.send_raw(nip59_make_gift_wrap(nostr_human.keys, bot_keys.public_key(), rumor))
        await wait_for_inbox(reporter, 2)
        await reporter.poll_feedback()
    finally:
        await reporter.stop()
    # A restart subscribes again, and the relay sends its stored wraps once more.
    again = Reporter(team, store)
    await again.start()
    try:
        await wait_for_inbox(again, 2)
        await again.poll_feedback()
    finally:
        await again.stop()
    assert store.scalar("SELECT COUNT(*) FROM feedback") == 1
    assert load_curriculum(store).difficulty == 1


def test_a_bad_key_names_the_field(tmp_path, nostr_relay, monkeypatch, store):
    monkeypatch.setenv(NSEC_ENV, "nsec1notakey")
    human = Human(nostr_relay.url)
    with pytest.raises(NotifierConfigError, match=f"notifiers.nostr.nsec_env: environment variable {NSEC_ENV} "
                                                  "does not hold a valid nsec key"):
        Reporter(nostr_team(tmp_path, nostr_relay, human), store)._build_channels()
    # A malformed npub never gets this far: the team file is refused (tests/test_teamfile.py).
    with pytest.raises(ValidationError, match="'npub1nope' is not an npub or hex public key"):
        nostr_team(tmp_path, nostr_relay, human, recipients=["npub1nope"])


async def test_a_dm_before_the_first_daemon_start_is_read_by_botlab_inbox(tmp_path, nostr_relay, nostr_human,
                                                                          bot_keys):
    """`botlab digest --send`, a DM reply while nothing listens, then `botlab inbox` applies it; both are answered by
    DM: the clear one with what it changed, the unclear one with what was not understood."""
    import io

    from rich.console import Console

    from botlab.reporting.cli import digest_now, read_inbox
    from botlab.store import open_store

    team = nostr_team(tmp_path, nostr_relay, nostr_human)
    with open_store(team.run_dir) as fresh:
        record_steps(fresh, range(1, 3))
    assert await asyncio.to_thread(digest_now, team, True, Console(file=io.StringIO())) == 0
    _, _, digest_rumor = await nostr_human.next_dm()
    await nostr_human.send_dm(bot_keys.public_key(), "abduction is too hard", reply_to=digest_rumor)
    await nostr_human.send_dm(bot_keys.public_key(), "make it more interesting", reply_to=digest_rumor)

    assert await asyncio.to_thread(read_inbox, team, Console(file=io.StringIO())) == 0
    with open_store(team.run_dir) as store:
        statuses = {r["text"]: r["status"] for r in store.query("SELECT text, status FROM feedback")}
        assert load_curriculum(store).difficulty_for("abduction") == -1
    assert statuses == {"abduction is too hard": "applied", "make it more interesting": "question"}
    answers = sorted([(await nostr_human.next_dm())[1] for _ in range(2)])
    assert answers[0].startswith("You wrote:\n> abduction is too hard") and "Done: " in answers[0]
    assert answers[1].startswith("You wrote:\n> make it more interesting") and "did not understand" in answers[1]
    # A second read finds nothing new: each DM is applied once.
    assert await asyncio.to_thread(read_inbox, team, Console(file=io.StringIO())) == 0
    with open_store(team.run_dir) as store:
        assert store.scalar("SELECT COUNT(*) FROM feedback") == 2


# --- NIP-17 DM relays, NIP-42 AUTH, /status ---------------------------------------------------------------------------


async def wraps_on(relay_url: str, to: Keys) -> int:
    """How many gift wraps for `to` a relay holds, asked by a third client."""
    observer = Human(relay_url, dm_relays=[])
    await observer.connect()
    try:
        wraps = Filter().kind(Kind(1059)).pubkey(to.public_key())
        return len(await observer.client.fetch_events(ReqTarget.auto([wraps]), timedelta(seconds=2)))
    finally:
        await observer.close()


async def test_a_dm_goes_to_the_recipients_own_dm_relay(tmp_path, nostr_relay, second_relay, bot_keys, store):
    """The human reads DMs only on a relay the team is not configured with, and says so in their kind-10050 list."""
    human = Human(nostr_relay.url, dm_relays=[second_relay.url])
    await human.connect()
    reporter = Reporter(nostr_team(tmp_path, nostr_relay, human), store)
    await reporter.start()
    try:
        record_steps(store, range(1, 3))
        await reporter.send_digest("test")
        _, text, digest_rumor = await human.next_dm()
        assert text.startswith("botlab demo #1")
        assert await wraps_on(second_relay.url, human.keys) == 1
        assert await wraps_on(nostr_relay.url, human.keys) == 0  # NIP-17: only to the recipient's DM relays
        # Replies still come to the team's own relays (its 10050 list names them).
        await human.send_dm(bot_keys.public_key(), "/harder", reply_to=digest_rumor)
        await wait_for_feedback(reporter, store, 1)
    finally:
        await reporter.stop()
        await human.close()
    assert load_curriculum(store).difficulty == 1
    [entry] = store.get("nostr/dm_relays").values()
    assert (entry["npub"], entry["relays"]) == (human.npub, [second_relay.url])


async def test_a_recipient_without_dm_relays_gets_no_dm_unless_the_team_file_says_so(tmp_path, nostr_relay, bot_keys,
                                                                                     store):
    from botlab.status import collect

    human = Human(nostr_relay.url, dm_relays=[])  # publishes no kind-10050 list
    await human.connect()
    try:
        team = nostr_team(tmp_path, nostr_relay, human)
        reporter = Reporter(team, store)
        await reporter.start()
        try:
            record_steps(store, range(1, 3))
            await reporter.send_digest("test")
        finally:
            await reporter.stop()
        [row] = store.query("SELECT sent_at, last_error FROM outbox WHERE channel = 'nostr'")
        assert row["sent_at"] is None and "publishes no DM relay list (kind 10050)" in row["last_error"]
        assert "send_without_dm_relays: true" in row["last_error"]
        assert collect(store, team, alive=False)["nostr_dm_relays"][human.keys.public_key().to_hex()]["relays"] == []
        with pytest.raises(TimeoutError):
            await human.next_dm(timeout=0.5)

        fallback = nostr_team(tmp_path, nostr_relay, human, send_without_dm_relays=True)
        reporter = Reporter(fallback, store)
        await reporter.start()
        try:
            assert await reporter.flush_outbox(time.time() + 31) == 1  # the held digest goes out on the retry
        finally:
            await reporter.stop()
        _, text, _ = await human.next_dm()
        assert text.startswith("botlab demo #1")
    finally:
        await human.close()


async def test_a_relay_that_requires_auth(tmp_path, auth_relay, bot_keys, store):
    """NIP-42: the relay takes no event and serves no DM before the client authenticates; both sides do."""
    human = Human(auth_relay.url)
    await human.connect()
    reporter = Reporter(nostr_team(tmp_path, auth_relay, human), store)
    await reporter.start()
    try:
        record_steps(store, range(1, 3))
        await reporter.send_digest("test")
        _, text, digest_rumor = await human.next_dm()
        assert text.startswith("botlab demo #1")
        await human.send_dm(bot_keys.public_key(), "/easier", reply_to=digest_rumor)
        await wait_for_feedback(reporter, store, 1)
    finally:
        await reporter.stop()
        await human.close()
    assert load_curriculum(store).difficulty == -1
    assert store.scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL") == 0


async def test_an_unauthenticated_client_is_refused_by_the_auth_relay(auth_relay):
    """The check above means something: without AUTH this relay refuses the same event."""
    from nostr_sdk import Client, RelayUrl

    client = Client()
    await client.add_relay(RelayUrl.parse(auth_relay.url))
    await client.connect(timedelta(seconds=3))
    try:
        event = EventBuilder(Kind(1), "hello").finalize(Keys.generate())
        out = await client.send_event(event, ok_timeout=timedelta(seconds=3))
        assert not out.success and "auth-required" in " ".join(out.failed.values())
    finally:
        await client.shutdown()


async def test_status_by_dm_is_answered_as_it_arrives(tmp_path, nostr_relay, nostr_human, bot_keys, store):
    """With live answers (as the daemon runs them) a /status DM is answered without waiting for the daemon's next
    tick (no tick() here), and a command needing no model is applied and counted the same way."""
    reporter = Reporter(nostr_team(tmp_path, nostr_relay, nostr_human), store)
    await reporter.start(live=True)
    try:
        record_steps(store, range(1, 3))
        await nostr_human.send_dm(bot_keys.public_key(), "/focus abduction")
        await nostr_human.send_dm(bot_keys.public_key(), "/status")
        answers = [(await nostr_human.next_dm(timeout=20))[1] for _ in range(2)]  # /focus's "Done: ..." and /status
    finally:
        await reporter.stop()
    [answer] = [a for a in answers if a.startswith("botlab demo:")]
    lines = answer.splitlines()
    assert lines[0] == "botlab demo: stopped, step 2 of 500"
    assert "weights deduction 1 abduction 3 induction 1; focus abduction" in lines
    assert "last change (#1): focus on abduction; task weights abduction 1 -> 3" in lines
    assert len(answer) <= 600
    assert [r["status"] for r in store.query("SELECT status FROM feedback ORDER BY id")] == ["applied", "answered"]


async def test_ask_is_refused_when_it_is_off(reporter, store, nostr_human, bot_keys):
    await nostr_human.send_dm(bot_keys.public_key(), "/ask what is 2 + 2? /pause")
    await wait_for_feedback(reporter, store, 1)
    _, answer, _ = await nostr_human.next_dm()
    assert answer == "/ask is off for this team (notifiers.nostr.ask.enabled)"
    assert not load_curriculum(store).paused  # nothing in a request steers


# --- the team's model on Nostr ----------------------------------------------------------------------------------------


async def job_events(client, kind: int, author: Keys) -> list:
    found = Filter().kind(Kind(kind)).author(author.public_key())
    return list(await client.fetch_events(ReqTarget.auto([found]), timedelta(seconds=2)))


@pytest.mark.slow
async def test_ask_by_dm_and_by_job_request_is_answered_by_the_current_model(tmp_path, nostr_relay, nostr_human,
                                                                            bot_keys, store, transformers_engine):
    """/ask by NIP-17 DM and a NIP-90 kind-5050 request, answered by the policy on the real engine; the DM waits
    for the tick (the engine is the trainer's between ticks), the rate limit refuses a second question."""
    from botlab.agents.policy_model import PolicyModel
    from botlab.reporting.feedback import ask_model

    policy = PolicyModel(transformers_engine)
    customer = Human(nostr_relay.url)
    await customer.connect()
    ask = {"enabled": True, "per_hour": 1, "max_tokens": 24, "job_requests": True}
    team = nostr_team(tmp_path, nostr_relay, nostr_human, ask=ask,
                      allowed_pubkeys=[nostr_human.npub, customer.npub])
    reporter = Reporter(team, store, model=policy)
    await reporter.start(live=True)
    try:
        await nostr_human.send_dm(bot_keys.public_key(), "/ask What is the capital of France?")
        await nostr_human.send_dm(bot_keys.public_key(), "/status")
        live = sorted([(await nostr_human.next_dm(timeout=20))[1] for _ in range(2)])  # answered live ...
        assert live[0].startswith("botlab demo: ")
        # ... /ask is not: it gets a word at once, and its answer at the next tick.
        assert live[1] == f"received: the model answers at the next pause between training phases (it is busy with " \
            "one now)"
        assert store.query("SELECT status FROM feedback WHERE id = 1")[0]["status"] == "pending"
        await reporter.tick()
        _, answer, _ = await nostr_human.next_dm()
        expected = await asyncio.to_thread(ask_model, policy, "What is the capital of France?", 24)
        assert answer == expected.strip() and answer

        await nostr_human.send_dm(bot_keys.public_key(), "/ask And of Spain?")
        await wait_for_feedback(reporter, store, 3)
        _, refusal, _ = await nostr_human.next_dm()
        if refusal.startswith("received: "):  # the live poll saw it first
            _, refusal, _ = await nostr_human.next_dm()
        assert refusal.startswith("not answered: at most 1 questions an hour; ask again after ")

        def job(keys: Keys, prompt: str):
            return (EventBuilder(Kind(5050), "").tags([Tag.parse(["i", prompt, "text"]),
                                                       Tag.parse(["output", "text/plain"]),
                                                       Tag.public_key(bot_keys.public_key())]).finalize(keys))

        request = job(customer.keys, "Say hello.")
        await customer.send_raw(request)
        await customer.send_raw(job(nostr_human.keys, "Say goodbye."))  # this sender's hour is used up
        await wait_for_feedback(reporter, store, 5)
        await reporter.tick()
    finally:
        await reporter.stop()
    try:
        [result] = await job_events(customer.client, 6050, bot_keys)
        tags = [t.to_vec() for t in result.tags()]
        assert ["e", request.id().to_hex()] in tags and ["p", customer.keys.public_key().to_hex()] in tags
        assert ["i", "Say hello.", "text"] in tags and ["request", request.as_json()] in tags
        assert result.content() == (await asyncio.to_thread(ask_model, policy, "Say hello.", 24)).strip()
        [error] = await job_events(customer.client, 7000, bot_keys)
        status = next(t for t in (t.to_vec() for t in error.tags()) if t[0] == "status")
        assert status[1] == "error" and status[2].startswith("not answered: at most 1 questions an hour")
    finally:
        await customer.close()
    assert not load_curriculum(store).paused and load_curriculum(store).difficulty == 0
