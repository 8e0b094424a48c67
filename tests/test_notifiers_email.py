"""The email channel against real peers on loopback: aiosmtpd (STARTTLS + AUTH) delivering into Dovecot over LMTP,
replies read back over IMAP with IDLE."""

from __future__ import annotations

import asyncio
import io
import ssl
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import pytest
from rich.console import Console

from botlab.config import TeamConfig
from botlab.curriculum import load_curriculum
from botlab.notifiers.mail import CURSOR_KEY
from botlab.notifiers.secrets import NotifierConfigError
from botlab.reporting.service import Reporter
from botlab.store import Store
from tests.test_digest import record_steps

USER_ENV, PASSWORD_ENV = "BOTLAB_TEST_MAIL_USER", "BOTLAB_TEST_MAIL_PASSWORD"


def email_team(tmp_path, peers, **email) -> TeamConfig:
    settings = {"from_addr": peers.bot, "to": [peers.human], "smtp_host": "127.0.0.1", "smtp_port": peers.smtp.port,
                "smtp_security": "starttls", "imap_host": "127.0.0.1", "imap_port": peers.dovecot.imaps_port,
                "imap_security": "tls", "username_env": USER_ENV, "password_env": PASSWORD_ENV,
                "ca_file": str(peers.ca_file)} | email
    return TeamConfig.model_validate({"name": "demo", "storage_dir": str(tmp_path),
                                      "schedules": {"feedback_poll_every": "1h", "digest_every": "6h"},
                                      "notifiers": {"email": settings}})


@pytest.fixture
def mail_env(monkeypatch, mail_peers):
    monkeypatch.setenv(USER_ENV, mail_peers.bot)
    monkeypatch.setenv(PASSWORD_ENV, mail_peers.password)
    return mail_peers


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "botlab.sqlite") as s:
        yield s


@pytest.fixture
async def reporter(tmp_path, mail_env, store):
    r = Reporter(email_team(tmp_path, mail_env), store, console=Console(file=io.StringIO()))
    await r.start()
    yield r
    await r.stop()


def reply_to(digest: EmailMessage, sender: str, body: str, **headers) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = digest["From"]
    msg["Subject"] = "Re: " + str(digest["Subject"])
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
    msg["In-Reply-To"] = digest["Message-ID"]
    msg["References"] = digest["Message-ID"]
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    quoted = "\n".join("> " + line for line in digest.get_body(("plain",)).get_content().splitlines())
    msg.set_content(f"{body}\n\nOn Mon, 1 Jun 2026 at 10:00, botlab <{digest['From']}> wrote:\n{quoted}\n")
    return msg


async def send_as(peers, msg: EmailMessage, user: str) -> None:
    context = ssl.create_default_context(cafile=str(peers.ca_file))
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=peers.smtp.port, start_tls=True, tls_context=context,
                          username=user, password=peers.password, timeout=10)


async def wait_for_feedback(reporter: Reporter, store: Store, count: int, timeout: float = 10.0) -> None:
    """Tick whenever IMAP IDLE announces mail, until `count` messages are stored (feedback polling is hourly)."""
    deadline = time.monotonic() + timeout
    new_mail = reporter.channels["email"].news
    while store.scalar("SELECT COUNT(*) FROM feedback") < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"fewer than {count} feedback messages after {timeout} s")
        try:
            await asyncio.wait_for(new_mail.wait(), min(left, 2.0))
        except asyncio.TimeoutError:
            pass
        await reporter.tick()


async def test_a_digest_arrives_with_its_chart(reporter, store, mail_env, tmp_path):
    record_steps(store, range(1, 4))
    digest_id = await reporter.send_digest("test")
    [raw] = await mail_env.dovecot.wait_for_messages(mail_env.human, 1)
    msg = message_from_bytes(raw, policy=policy.default)
    row = store.query("SELECT * FROM digests WHERE id = ?", (digest_id,))[0]
    assert msg["Message-ID"] == row["message_id"] and msg["Subject"] == row["subject"]
    assert msg["Auto-Submitted"] == "auto-generated"
    html = msg.get_body(("html",))
    assert 'src="cid:chart"' in html.get_content()
    images = [part for part in msg.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"] == "<chart>"
    assert images[0].get_content().startswith(b"\x89PNG\r\n\x1a\n")
    assert "Steps 1-3 ran; step 3 of 500." in msg.get_body(("plain",)).get_content()
    assert store.scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL") == 0
    # The console channel wrote the same digest as files, the chart embedded in the .html.
    files = sorted(p.name for p in (tmp_path / "demo" / "digests").iterdir())
    assert files == ["digest-0001.eml", "digest-0001.html", "digest-0001.txt"]
    assert "data:image/png;base64," in (tmp_path / "demo" / "digests" / "digest-0001.html").read_text()


async def test_a_reply_changes_the_curriculum_and_the_next_digest_says_so(reporter, store, mail_env):
    record_steps(store, range(1, 3))
    await reporter.send_digest("test")
    [raw] = await mail_env.dovecot.wait_for_messages(mail_env.human, 1)
    digest = message_from_bytes(raw, policy=policy.default)

    body = "Looks good. Focus on abduction, the tasks are too easy.\n/rule no identity functions"
    await send_as(mail_env, reply_to(digest, mail_env.human, body), mail_env.human)
    await wait_for_feedback(reporter, store, 1)

    row = store.query("SELECT * FROM feedback")[0]
    assert row["digest_id"] == 1 and row["sender"] == mail_env.human and row["status"] == "applied"
    assert "wrote:" not in row["text"] and "> " not in row["text"]  # the quoted digest is stripped
    curriculum = load_curriculum(store)
    assert curriculum.task_weights["abduction"] == 3.0 and curriculum.difficulty == 1
    assert curriculum.reviewer_rules == ["no identity functions"]

    record_steps(store, range(3, 5))
    second = await reporter.send_digest("test")
    messages = await mail_env.dovecot.wait_for_messages(mail_env.human, 2)
    text = message_from_bytes(messages[1], policy=policy.default).get_body(("plain",)).get_content()
    assert "Focus on abduction, the tasks are too easy" in text
    assert "task weights abduction 1 -> 3" in text and "difficulty +0 -> +1" in text
    assert store.scalar("SELECT reported_in FROM feedback") == second


async def test_spoofed_strangers_and_automatic_mail_are_ignored(reporter, store, mail_env):
    await reporter.send_digest("test")
    [raw] = await mail_env.dovecot.wait_for_messages(mail_env.human, 1)
    digest = message_from_bytes(raw, policy=policy.default)
    stranger = reply_to(digest, "mallory@evil.test", "/pause")
    vacation = reply_to(digest, mail_env.human, "I am out of office until Monday. /pause", Auto_Submitted="auto-replied")
    for msg in (stranger, vacation):
        mail_env.dovecot.deliver(mail_env.bot, msg.as_bytes(), sender=str(msg["From"]))
    await reporter.poll_feedback()
    assert store.scalar("SELECT COUNT(*) FROM feedback") == 0
    assert not load_curriculum(store).paused
    reasons = [r["message"] for r in store.query("SELECT message FROM events WHERE kind = 'feedback_ignored'")]
    assert any("mallory@evil.test is not allowed" in r for r in reasons)
    assert any("Auto-Submitted: auto-replied" in r for r in reasons)


async def test_dkim_required_rejects_a_forged_from_and_accepts_a_signed_reply(tmp_path, mail_env, store):
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    public_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)

    def dns(name, timeout=5):  # the human's domain publishes its DKIM key (no real DNS on loopback)
        return record if name == b"s1._domainkey.example.test." else None

    team = email_team(tmp_path, mail_env, dkim_required=True)
    reporter = Reporter(team, store, console=Console(file=io.StringIO()), dkim_dns=dns)
    await reporter.start()
    try:
        await reporter.send_digest("test")
        [raw] = await mail_env.dovecot.wait_for_messages(mail_env.human, 1)
        digest = message_from_bytes(raw, policy=policy.default)
        forged = reply_to(digest, mail_env.human, "/pause")  # From: the human, but no signature
        signed = reply_to(digest, mail_env.human, "/harder").as_bytes()
        signed = dkim.sign(signed, b"s1", b"example.test", private_pem,
                           include_headers=[b"from", b"to", b"subject", b"message-id", b"in-reply-to"]) + signed
        for raw_reply in (forged.as_bytes(), signed):
            mail_env.dovecot.deliver(mail_env.bot, raw_reply, sender=mail_env.human)
        await reporter.poll_feedback()
    finally:
        await reporter.stop()
    assert [r["text"] for r in store.query("SELECT text FROM feedback")] == ["/harder"]
    curriculum = load_curriculum(store)
    assert curriculum.difficulty == 1 and not curriculum.paused
    assert store.scalar("SELECT COUNT(*) FROM events WHERE message LIKE '%no DKIM signature%'") == 1


async def test_smtp_down_then_up_sends_once(tmp_path, mail_env, store):
    mail_env.smtp.stop()
    reporter = Reporter(email_team(tmp_path, mail_env), store, console=Console(file=io.StringIO()))
    await reporter.start()
    now = time.time()
    await reporter.send_digest("test", now=now)
    row = store.query("SELECT * FROM outbox WHERE channel = 'email'")[0]
    assert row["sent_at"] is None and row["attempts"] == 1 and "connect" in row["last_error"].lower()
    assert await reporter.flush_outbox(now + 1) == 0  # not due yet: backoff
    await reporter.stop()

    # The daemon restarts while the server is back up: the unsent message goes out, once.
    mail_env.smtp.start()
    restarted = Reporter(email_team(tmp_path, mail_env), store, console=Console(file=io.StringIO()))
    await restarted.start()
    try:
        assert await restarted.flush_outbox(now + 31) == 1
        assert await restarted.flush_outbox(now + 10_000) == 0
        await restarted.tick(now + 20_000)
    finally:
        await restarted.stop()
    # The SMTP server answers 250 only after Dovecot has the mail, so this is the final count.
    assert mail_env.smtp.handler.received == 1
    assert len(mail_env.dovecot.messages(mail_env.human)) == 1


async def test_duplicate_delivery_and_restarts_apply_a_reply_once(tmp_path, mail_env, store):
    team = email_team(tmp_path, mail_env, imap_port=mail_env.dovecot.imap_port, imap_security="none")
    reporter = Reporter(team, store, console=Console(file=io.StringIO()))
    await reporter.start()
    await reporter.send_digest("test")
    [raw] = await mail_env.dovecot.wait_for_messages(mail_env.human, 1)
    digest = message_from_bytes(raw, policy=policy.default)
    await reporter.stop()

    # While the team is down the reply arrives twice (a client or server retry: same Message-ID).
    reply = reply_to(digest, mail_env.human, "/harder").as_bytes()
    for _ in range(2):
        mail_env.dovecot.deliver(mail_env.bot, reply, sender=mail_env.human)

    for _ in range(2):  # two restarts: the stored IMAP cursor keeps old mail from being read again
        again = Reporter(team, store, console=Console(file=io.StringIO()))
        await again.start()
        await again.poll_feedback()
        await again.stop()
    assert store.scalar("SELECT COUNT(*) FROM feedback") == 1
    assert load_curriculum(store).difficulty == 1
    assert store.get(CURSOR_KEY)["last_uid"] == 2

    # The mailbox is rebuilt (new UIDVALIDITY): everything is read again, and still applied once.
    store.put(CURSOR_KEY, {"uidvalidity": 1, "last_uid": 99})
    again = Reporter(team, store, console=Console(file=io.StringIO()))
    await again.start()
    await again.poll_feedback()
    await again.stop()
    assert store.scalar("SELECT COUNT(*) FROM feedback") == 1
    assert load_curriculum(store).difficulty == 1


def test_missing_secrets_and_files_name_the_field(tmp_path, mail_peers, monkeypatch, store):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setenv(USER_ENV, "bot")
    with pytest.raises(NotifierConfigError, match=f"notifiers.email.password_env: environment variable "
                                                  f"{PASSWORD_ENV} is not set"):
        Reporter(email_team(tmp_path, mail_peers), store)._build_channels()
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    with pytest.raises(NotifierConfigError, match="notifiers.email.ca_file: /nowhere/ca.pem is not a file"):
        Reporter(email_team(tmp_path, mail_peers, ca_file="/nowhere/ca.pem"), store)._build_channels()


# --- nothing lost: replies that arrive before the daemon first listens ---------------------------------------------


async def _digest_sent_then_replied(tmp_path, mail_env, body: str) -> TeamConfig:
    """`botlab digest --send` before any daemon ran, then the human replies while nothing listens."""
    from botlab.reporting.cli import digest_now
    from botlab.store import open_store

    team = email_team(tmp_path, mail_env)
    with open_store(team.run_dir) as fresh:
        record_steps(fresh, range(1, 3))
    screen = Console(file=io.StringIO())
    assert await asyncio.to_thread(digest_now, team, True, screen) == 0, screen.file.getvalue()
    [raw] = await mail_env.dovecot.wait_for_messages(mail_env.human, 1)
    digest = message_from_bytes(raw, policy=policy.default)
    await send_as(mail_env, reply_to(digest, mail_env.human, body), mail_env.human)
    await mail_env.dovecot.wait_for_messages(mail_env.bot, 1)
    return team


@pytest.mark.parametrize("reader", ["daemon", "inbox"])
async def test_a_reply_before_the_first_daemon_start_is_applied(tmp_path, mail_env, reader):
    from botlab.reporting.cli import read_inbox
    from botlab.store import open_store

    team = await _digest_sent_then_replied(tmp_path, mail_env, "deduction is too easy")
    if reader == "daemon":  # the daemon's first start: its reporter listens, and its first poll reads the reply
        with open_store(team.run_dir) as store:
            first = Reporter(team, store, console=Console(file=io.StringIO()))
            await first.start()
            try:
                await first.poll_feedback()
            finally:
                await first.stop()
    else:
        screen = Console(file=io.StringIO(), width=200)
        assert await asyncio.to_thread(read_inbox, team, screen) == 0
        assert "feedback #1 (email, human@example.test): deduction difficulty +0 -> +1" in screen.file.getvalue()
    with open_store(team.run_dir) as store:
        assert load_curriculum(store).difficulty_for("deduction") == 1
        assert store.scalar("SELECT status FROM feedback") == "applied"


async def test_the_read_position_survives_a_mail_server_that_was_down_at_the_first_digest(tmp_path, mail_env):
    """No cursor could be stored when the digest went out: the first read starts at the first digest's day."""
    from botlab.reporting.cli import read_inbox
    from botlab.store import open_store

    team = await _digest_sent_then_replied(tmp_path, mail_env, "/harder")
    with open_store(team.run_dir) as store:
        store.db.execute("DELETE FROM kv WHERE key = ?", (CURSOR_KEY,))  # as if IMAP had been unreachable then
    assert await asyncio.to_thread(read_inbox, team, Console(file=io.StringIO())) == 0
    with open_store(team.run_dir) as store:
        assert load_curriculum(store).difficulty == 1 and store.get(CURSOR_KEY)["last_uid"] == 1


async def test_a_reply_that_changes_nothing_is_answered_by_mail(tmp_path, mail_env):
    from botlab.reporting.cli import read_inbox
    from botlab.store import open_store

    team = await _digest_sent_then_replied(tmp_path, mail_env, "The string tasks are too easy.")
    assert await asyncio.to_thread(read_inbox, team, Console(file=io.StringIO())) == 0
    messages = await mail_env.dovecot.wait_for_messages(mail_env.human, 2)
    answer = message_from_bytes(messages[1], policy=policy.default)
    with open_store(team.run_dir) as store:
        row = store.query("SELECT * FROM feedback")[0]
    assert row["status"] == "question"
    assert answer["In-Reply-To"] == row["external_id"] and answer["Auto-Submitted"] == "auto-replied"
    assert answer["Subject"] == "Re: [botlab demo] your feedback"
    body = answer.get_body(("plain",)).get_content()
    assert "> The string tasks are too easy." in body
    assert 'question: "The string tasks are too easy": difficulty changes for all tasks' in body


async def test_a_reply_that_changes_something_is_answered_with_what_changed(tmp_path, mail_env):
    """Issue 14 point 2: an accepted message is answered too, briefly: what it changed, without the command list."""
    from botlab.reporting.cli import read_inbox
    from botlab.curriculum import HELP
    from botlab.store import open_store

    team = await _digest_sent_then_replied(tmp_path, mail_env, "/focus abduction")
    assert await asyncio.to_thread(read_inbox, team, Console(file=io.StringIO())) == 0
    messages = await mail_env.dovecot.wait_for_messages(mail_env.human, 2)
    answer = message_from_bytes(messages[1], policy=policy.default)
    with open_store(team.run_dir) as store:
        row = store.query("SELECT * FROM feedback")[0]
    assert row["status"] == "applied"
    assert answer["In-Reply-To"] == row["external_id"]
    body = answer.get_body(("plain",)).get_content()
    assert "> /focus abduction" in body and f"Done: {row['response']}" in body and "abduction" in row["response"]
    assert HELP not in body


async def test_an_answer_is_not_lost_to_a_crash_after_applying(reporter, store, mail_env):
    """The poll applied a reply and died before enqueuing its answer: the next poll sends the answer, once."""
    from botlab.reporting.feedback import apply_pending, record
    from botlab.notifiers.replies import Incoming

    record(store, Incoming(channel="email", external_id="<r1@example.test>", sender=mail_env.human,
                           text="deduction is meh"))
    apply_pending(store)  # ...and here the process died
    await reporter.poll_feedback()
    await reporter.poll_feedback()
    await reporter.flush_outbox()
    [raw] = await mail_env.dovecot.wait_for_messages(mail_env.human, 1)
    answer = message_from_bytes(raw, policy=policy.default)
    assert answer["In-Reply-To"] == "<r1@example.test>"
    assert 'did not understand "deduction is meh"' in answer.get_body(("plain",)).get_content()
    assert store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'answer'") == 1
