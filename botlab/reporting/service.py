"""The reporter as the daemon sees it: one object that sends digests, reads feedback and keeps the schedule.

All network work is async and runs on the daemon's asyncio loop; model calls run in a worker thread so IMAP IDLE
and the Nostr subscription keep being served meanwhile. Schedule times live in the store, so a restart after a
long downtime catches up with one digest, never a burst. In the daemon, `add_jobs` makes the digest and the reply
poll APScheduler jobs (botlab/schedule.py) that run on time during a phase; `tick`, at each pause between phases,
does what needs the engine (a digest or words read by the policy, /ask) and anything else that is due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from rich.console import Console

from botlab.agents.reporter import make_reporter_model, write_narrative
from botlab.config import TeamConfig
from botlab.curriculum import HELP
from botlab.notifiers import outbox
from botlab.notifiers.console import ConsoleChannel
from botlab.notifiers.mail import EmailChannel, digest_message_id
from botlab.reporting.digest import (
    DigestFacts, RenderedDigest, collect_facts, email_message, from_address, render, standalone_html,
    template_narrative,
)
from botlab.reporting.feedback import (
    ANSWERED as REQUEST_ANSWERED, DIGEST_REQUESTED_KEY, apply_pending, interpreter_for, record, request_kind,
    requests_for,
)
from botlab.rundir import NEXT_DIGEST_KEY
from botlab.schedule import Schedule
from botlab.store import Store

log = logging.getLogger(__name__)

DIGEST_AT_KEY, POLL_AT_KEY = "schedule/digest_at", "schedule/poll_at"
SMTP_POLICY = policy.SMTP.clone(max_line_length=998)  # long Message-IDs must not be folded
# Feedback that changed nothing is answered at once, not at the digest; so are /status and /ask.
ANSWERED = ("applied", "question", "ignored", "error", REQUEST_ANSWERED)  # every message: answered
WAITING = "received: the model answers at the next pause between training phases (it is busy with one now)"
ANSWERED_UP_TO_KEY = "feedback/answered_up_to"  # feedback ids up to this one had their answers enqueued


class Reporter:
    def __init__(self, team: TeamConfig, store: Store, model: Any = None, console: Console | None = None,
                 dkim_dns=None):
        self.team = team
        self.store = store
        self.model = make_reporter_model(team.roles.reporter, model)
        self.interpreter = interpreter_for(self.model)
        self.policy = model  # the model being trained: it answers /ask (the daemon's only; None elsewhere)
        self.console = console
        self.dkim_dns = dkim_dns  # a DNS lookup for DKIM keys; None = real DNS (tests pass their own)
        self.channels: dict[str, Any] = {}
        self._flush_lock = asyncio.Lock()
        self._poll_lock = asyncio.Lock()
        self._digest_lock = asyncio.Lock()  # the digest job and a tick never both send the one that is due
        self.schedule: Schedule | None = None
        self._live_task: asyncio.Task | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def _build_channels(self) -> dict[str, Any]:
        """Raises NotifierConfigError (naming the team.yaml field) when a secret or key is missing or malformed."""
        n, channels = self.team.notifiers, {}
        if n.console.enabled:
            channels["console"] = ConsoleChannel(self.team.run_dir, self.console)
        if n.email is not None and n.email.enabled:
            email = n.email
            if email.ca_file is not None and not email.ca_file.is_absolute() and self.team._source is not None:
                email = email.model_copy(update={"ca_file": self.team._source.parent / email.ca_file})
            channels["email"] = EmailChannel(email, self.store, self.team.name, dkim_dns=self.dkim_dns)
        if n.nostr is not None and n.nostr.enabled:
            from botlab.notifiers.nostr import NostrChannel  # loads the nostr-sdk library only when used

            channels["nostr"] = NostrChannel(n.nostr, self.store)
        return channels

    async def start(self, listen: bool = True, live: bool = False) -> None:
        """Connect the channels and start listening for replies (listen=False: send only, for the CLI). live: answer
        what needs no model as it arrives, between the daemon's ticks (see `_answer_live`)."""
        self.channels = self._build_channels()
        for channel in self.channels.values():
            await channel.start(listen=listen)
        if listen and live:
            self._live_task = asyncio.create_task(self._answer_live(), name="botlab-live-answers")
        if self.store.get(DIGEST_AT_KEY) is None:
            self.store.put(DIGEST_AT_KEY, time.time())  # the first digest comes one interval after the first start
        if self.store.get(ANSWERED_UP_TO_KEY) is None:  # a run from before answers existed: no late answers
            self.store.put(ANSWERED_UP_TO_KEY, self._last_done_feedback())
        self._set_next_digest()

    @property
    def engine_bound(self) -> bool:
        """The reporter's model is the policy: its calls need the engine, free only between the daemon's phases."""
        return self.model is not None and self.model is self.policy

    def add_jobs(self, schedule: Schedule) -> None:
        """The digest and the reply poll as jobs on the daemon's schedule, so they happen during a long phase: the
        poll every feedback_poll_every (answering what needs no model, as replies that arrive are), the digest when
        due or asked for, unless writing it needs the engine; the next tick then sends it."""
        self.schedule = schedule
        schedule.every("feedback poll", self.team.schedules.seconds("feedback_poll_every"), self._poll_job,
                       POLL_AT_KEY)
        self._set_next_digest()

    async def _poll_job(self) -> None:
        """Replies read and answered as far as no model is needed; a digest they asked for goes out now."""
        await self.poll_feedback(model_free=True)
        if self.store.get(DIGEST_REQUESTED_KEY):
            await self._digest_job()
        await self.flush_outbox()

    async def _digest_job(self) -> None:
        if self.engine_bound:
            return  # the policy writes the narrative: the next tick sends it
        if await self.digest_if_due(time.time()) is None:
            self._set_next_digest()  # not due after all (the job woke a hair early): again at the due time

    async def stop(self) -> None:
        if self._live_task is not None:
            self._live_task.cancel()
            await asyncio.wait({self._live_task}, timeout=5)
            self._live_task = None
        for channel in self.channels.values():
            try:
                await channel.stop()
            except Exception as err:
                log.warning("stopping the %s channel: %s", channel.name, err)

    # --- digests -----------------------------------------------------------------------------------------------------

    async def preview(self, now: float | None = None) -> tuple[DigestFacts, RenderedDigest]:
        """The digest as it would go out now; nothing is stored."""
        def make() -> tuple[DigestFacts, RenderedDigest]:
            facts = collect_facts(self.store, self.team, now)
            return facts, render(facts, *self._narrative(facts))

        return await asyncio.to_thread(make)

    async def send_digest(self, reason: str, now: float | None = None) -> int | None:
        """Render, store, enqueue for every channel, flush. None when nothing new happened on a scheduled digest."""
        now = time.time() if now is None else now
        # In a worker thread: reading the store, drawing the chart and the model take seconds, and the loop must
        # keep serving IMAP IDLE and the Nostr subscription meanwhile.
        digest_id = await asyncio.to_thread(self._make_digest, reason, now)
        if digest_id is not None:
            await self.flush_outbox(now)
        return digest_id

    def _make_digest(self, reason: str, now: float) -> int | None:
        facts = collect_facts(self.store, self.team, now)
        if reason == "schedule" and not (facts.steps or facts.feedback or facts.errors):
            self._digest_done(now)
            log.info("scheduled digest skipped: nothing happened since the last one")
            return None
        narrative, source = self._narrative(facts)
        digest_id = self._store_digest(facts, render(facts, narrative, source), now)
        self.store.log_event("digest", f"digest #{digest_id} ({reason}, narrative: {source})")
        return digest_id

    def _narrative(self, facts: DigestFacts) -> tuple[str, str]:
        if self.model is None:
            return template_narrative(facts), "template"
        text, why = write_narrative(self.model, facts.for_agent(), self.team.roles.reporter.max_words)
        if text:
            return text, "model"
        self.store.log_event("reporter", f"digest #{facts.number}: template narrative used, {why}", level="warning")
        return template_narrative(facts), "template"

    def _store_digest(self, facts: DigestFacts, digest: RenderedDigest, now: float) -> int:
        """The digest row, its feedback marked as reported and one outbox row per channel and recipient, at once."""
        from_addr = from_address(self.team)
        digest_id = facts.number
        message_id = digest_message_id(from_addr, digest_id)
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO digests(id, created_at, first_step, last_step, message_id, subject, text, html, short, "
                "narrative_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (digest_id, now, facts.first_step, facts.last_step, message_id, digest.subject, digest.text,
                 digest.html, digest.short, digest.narrative_source),
            )
            db.executemany("UPDATE feedback SET reported_in = ? WHERE id = ?",
                           [(digest_id, note.id) for note in facts.feedback])
            for channel, recipient, kind, payload in self._messages(digest, digest_id, from_addr, message_id, now):
                outbox.enqueue(db, channel, recipient, kind, payload, f"digest-{digest_id}:{channel}:{recipient}", now)
            self._digest_done(now)
        return digest_id

    def _messages(self, digest: RenderedDigest, digest_id: int, from_addr: str, message_id: str, now: float):
        """(channel, recipient, kind, payload) for every enabled channel, started or not: one that is down now
        gets its messages when it is back."""
        n = self.team.notifiers
        if n.console.enabled:
            to = ", ".join(n.email.to) if n.email else "you@localhost"
            eml = email_message(digest, from_addr, to, message_id, now).as_string(policy=SMTP_POLICY)
            stem = f"digest-{digest_id:04d}"
            files = {f"{stem}.html": standalone_html(digest), f"{stem}.txt": digest.text, f"{stem}.eml": eml}
            lines = digest.short.splitlines()
            yield "console", "console", "digest", {"subject": digest.subject, "summary": lines[min(1, len(lines) - 1)],
                                                   "files": files}
        if n.email is not None and n.email.enabled:
            for to in n.email.to:
                raw = email_message(digest, from_addr, to, message_id, now).as_string(policy=SMTP_POLICY)
                yield "email", to, "digest", {"raw": raw, "digest_id": digest_id}
        if n.nostr is not None and n.nostr.enabled:
            from botlab.notifiers.nostr import parse_pubkey

            for recipient in n.nostr.recipients:
                pubkey = parse_pubkey(recipient, "notifiers.nostr.recipients").to_hex()
                yield "nostr", pubkey, "digest", {"text": digest.short, "digest_id": digest_id}
            if n.nostr.public_notes:
                yield "nostr", "public", "note", {"text": digest.short.splitlines()[0]}

    def _digest_done(self, now: float) -> None:
        self.store.put(DIGEST_AT_KEY, now)
        self.store.put(DIGEST_REQUESTED_KEY, False)
        self._set_next_digest()

    def _set_next_digest(self) -> None:
        every = self.team.schedules.seconds("digest_every")
        last = self.store.get(DIGEST_AT_KEY)
        due = last + every if every > 0 and last is not None else None
        self.store.put(NEXT_DIGEST_KEY, due)
        if self.schedule is not None:
            # max_instances 2: a digest job may set the next one while it still runs.
            self.schedule.at("digest", due, self._digest_job, max_instances=2)

    async def digest_if_due(self, now: float) -> int | None:
        """Send the digest asked for by feedback, or the scheduled one when its time has come (once, however many
        intervals were missed)."""
        async with self._digest_lock:
            every = self.team.schedules.seconds("digest_every")
            last_digest = self.store.get(DIGEST_AT_KEY) or now
            if self.store.get(DIGEST_REQUESTED_KEY):
                return await self.send_digest("asked for by feedback", now)
            if every > 0 and now - last_digest >= every:
                return await self.send_digest("schedule", now)
            return None

    # --- the outbox --------------------------------------------------------------------------------------------------

    async def flush_outbox(self, now: float | None = None) -> int:
        """Send what is due; returns how many went out. Failures wait for their retry time."""
        sent = 0
        async with self._flush_lock:  # one flush at a time: a message is never sent by two flushes
            for item in outbox.due(self.store, time.time() if now is None else now):
                channel = self.channels.get(item.channel)
                try:
                    if channel is None:
                        raise RuntimeError(f"the {item.channel} channel is not enabled or not started")
                    await channel.send(item)
                except Exception as err:
                    at = time.time() if now is None else now
                    retry = outbox.mark_failed(self.store, item, f"{type(err).__name__}: {err}", at)
                    log.warning("sending %s to %s failed (%s); retry in %.0f s", item.kind, item.recipient, err,
                                retry - at)
                    if item.attempts == 0:
                        self.store.log_event("send_failed", f"{item.channel} to {item.recipient}: {err}",
                                             level="warning")
                    continue
                outbox.mark_sent(self.store, item, time.time())
                sent += 1
        return sent

    # --- feedback ----------------------------------------------------------------------------------------------------

    async def _answer_live(self) -> None:
        """The daemon ticks between phases, and a phase can take minutes: read replies as they arrive and answer at
        once what needs no model (/status; commands, and plain words when the phrase grammar reads them). /ask and
        words for the model wait for the tick, when the engine is free. The poll every feedback_poll_every is the
        schedule's job (`add_jobs`); this waits for the channels' news (IMAP IDLE, a Nostr DM)."""
        if not self.channels:
            return
        while True:
            waits = [asyncio.create_task(channel.news.wait()) for channel in self.channels.values()]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            try:
                await self._poll_job()
            except Exception as err:  # a channel or the store failed: the tick tries again too
                log.warning("answering replies as they arrive failed: %s", err)
                await asyncio.sleep(5)

    async def poll_feedback(self, model_free: bool = False) -> list[int]:
        """Read new replies on every channel, store them (once), apply their directives; the ids applied.
        model_free: apply only what needs no model call now (see feedback.apply_pending)."""
        async with self._poll_lock:
            for channel in self.channels.values():
                try:
                    incoming = await channel.receive()
                except Exception as err:  # a server is down: the next poll tries again, the cursor did not move
                    log.warning("reading feedback from %s failed: %s", channel.name, err)
                    continue
                for message in incoming:
                    if record(self.store, message) is None:
                        log.info("duplicate %s message %s ignored", message.channel, message.external_id)
                await channel.commit_receive()
            self.store.put(POLL_AT_KEY, time.time())
            applied = await asyncio.to_thread(apply_pending, self.store, self.interpreter,
                                              requests_for(self.store, self.team, self.policy), model_free)
            self._enqueue_answers(time.time())
            if model_free:
                self._acknowledge_waiting(time.time())
            return applied

    async def read_inbox(self) -> list[int]:
        """One read of every channel, for `botlab inbox`: what the relays hold too, stored, applied and answered."""
        for channel in self.channels.values():
            try:
                await channel.catch_up()
            except Exception as err:
                log.warning("reading %s failed: %s", channel.name, err)
        applied = await self.poll_feedback()
        await self.flush_outbox()
        return applied

    def _last_done_feedback(self) -> int:
        """The highest id up to which no message is pending (a live poll may answer a /status past a waiting one)."""
        waiting = self.store.scalar("SELECT MIN(id) FROM feedback WHERE status = 'pending'")
        if waiting is not None:
            return waiting - 1
        return self.store.scalar("SELECT COALESCE(MAX(id), 0) FROM feedback")

    def _enqueue_answers(self, now: float) -> None:
        """Every message gets its answer back on the channel it came from: what it changed, the question it raised,
        why nothing changed, the error, or a request's (/status, /ask) answer. Enqueued with the mark of what was
        answered, so a crash in between loses none; one answered past the mark is enqueued again later, which its
        dedupe key ignores."""
        with self.store.transaction() as db:
            done = self._last_done_feedback()
            marks = ", ".join("?" * len(ANSWERED))
            rows = self.store.query(f"SELECT * FROM feedback WHERE id > ? AND status IN ({marks})",
                                    (self.store.get(ANSWERED_UP_TO_KEY) or 0, *ANSWERED))
            for row in rows:
                answer = self._answer(row, now)
                if answer is not None:
                    outbox.enqueue(db, row["channel"], answer[0], "answer", answer[1],
                                   f"answer-{row['id']}:{row['channel']}", now)
            self.store.put(ANSWERED_UP_TO_KEY, done)

    def _acknowledge_waiting(self, now: float) -> None:
        """A message left waiting for the model (an /ask, words the model reads) while a phase holds the engine gets a
        short word at once, so nobody waits a long phase in silence; its answer follows at the next pause (once per
        message: the dedupe key)."""
        with self.store.transaction() as db:
            for row in self.store.query("SELECT * FROM feedback WHERE status = 'pending'"):
                if row["external_id"].startswith("job:"):
                    continue  # a NIP-90 job gets its result, or an error, and nothing in between
                reply = self._answer(dict(row) | {"response": WAITING}, now)
                if reply is not None:
                    outbox.enqueue(db, row["channel"], reply[0], "answer", reply[1],
                                   f"waiting-{row['id']}:{row['channel']}", now)

    def _answer(self, row, now: float) -> tuple[str, dict] | None:
        """(recipient, payload) of the answer to a feedback row, or None where its channel has no way back."""
        n = self.team.notifiers
        text = (row["response"] if request_kind(row["text"])
                else answer_text(row["text"], row["response"], row["status"]))
        if row["channel"] == "nostr" and row["external_id"].startswith("job:"):  # a NIP-90 job request
            return row["sender"], {"text": text, "job": row["external_id"][4:], "ok": row["status"] == REQUEST_ANSWERED}
        if row["channel"] == "email" and n.email is not None and n.email.enabled:
            return row["sender"], {"raw": answer_email(self.team.name, n.email.from_addr, row["sender"],
                                                        row["external_id"], text, now)}
        if row["channel"] == "nostr" and n.nostr is not None and n.nostr.enabled:
            from botlab.notifiers.nostr import parse_pubkey

            return parse_pubkey(row["sender"], "feedback sender").to_hex(), {"text": text}
        return None

    def _reply_waiting(self) -> bool:
        return any(channel.news.is_set() for channel in self.channels.values())

    # --- the schedule ------------------------------------------------------------------------------------------------

    async def tick(self, now: float | None = None) -> None:
        """Do what is due: read feedback, send a digest (scheduled or asked for), retry unsent messages."""
        now = time.time() if now is None else now
        schedules = self.team.schedules
        last_poll = self.store.get(POLL_AT_KEY) or 0
        # Pending feedback is what the live answers left for the model (/ask, words the model reads).
        pending = self.store.scalar("SELECT COUNT(*) FROM feedback WHERE status = 'pending'")
        if self._reply_waiting() or pending or now - last_poll >= schedules.seconds("feedback_poll_every"):
            await self.poll_feedback()
        await self.digest_if_due(now)
        await self.flush_outbox(max(now, time.time()))  # answers enqueued by this tick's poll are due now


def answer_text(text: str, response: str, status: str) -> str:
    """The answer to a message: a short 'done' when it changed something, else why not and how to write one."""
    quoted = "\n".join("> " + line for line in text.splitlines()[:20])
    if status == "applied":
        return f"You wrote:\n{quoted}\n\nDone: {response}"
    if status == "pending":
        return f"You wrote:\n{quoted}\n\n{response}"
    return f"You wrote:\n{quoted}\n\n{response}\n\nReply in plain words or with commands: {HELP}"


def answer_email(team: str, from_addr: str, to: str, replied_id: str, text: str, now: float) -> str:
    msg = EmailMessage()
    msg["From"], msg["To"] = from_addr, to
    msg["Subject"] = f"Re: [botlab {team}] your feedback"
    msg["Message-ID"] = make_msgid(idstring="answer", domain=from_addr.rsplit("@", 1)[-1])
    if replied_id.startswith("<"):
        msg["In-Reply-To"] = msg["References"] = replied_id
    msg["Auto-Submitted"] = "auto-replied"  # an automatic answer: mail programs must not answer it in turn
    msg["Date"] = formatdate(now)
    msg.set_content(text)
    return msg.as_string(policy=SMTP_POLICY)
