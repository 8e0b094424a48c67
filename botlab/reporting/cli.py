"""`botlab digest`, `botlab feedback` and `botlab inbox`: the reporter from the command line (these are CLI
commands; the slash commands of a reply are botlab.curriculum's). Each returns the exit code."""

from __future__ import annotations

import asyncio
import getpass
import uuid

from rich.console import Console
from rich.text import Text

from botlab.agents.reporter import make_reporter_model
from botlab.config import TeamConfig
from botlab.notifiers import outbox
from botlab.notifiers.console import write_atomic
from botlab.notifiers.replies import Incoming
from botlab.notifiers.secrets import NotifierConfigError
from botlab.reporting.digest import email_message, from_address, standalone_html
from botlab.reporting.feedback import (
    DIGEST_REQUESTED_KEY, answer_request, apply_one, interpreter_for, record, request_kind, requests_for,
)
from botlab.rundir import STORE_NAME, daemon_alive
from botlab.store import StoreError, open_store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def digest_now(team: TeamConfig, send: bool, console: Console) -> int:
    """Render the digest now (written to RUN_DIR/digests/preview.*); with send, store and send it."""
    run_dir = team.run_dir
    if not (run_dir / STORE_NAME).exists():
        console.print(f"team {team.name} has not run yet ({run_dir} has no database): nothing to report")
        return EXIT_FAILED
    try:
        with open_store(run_dir) as store:
            if send and daemon_alive(run_dir):
                # The running daemon owns the outbox; two senders could send a message twice.
                store.put(DIGEST_REQUESTED_KEY, True)
                console.print("the running team will send a digest at its next tick")
                return EXIT_OK
            return asyncio.run(_send(team, store, console) if send else _preview(team, store, console))
    except (NotifierConfigError, StoreError) as err:
        return _refused(err, console)


def _refused(err: NotifierConfigError | StoreError, console: Console) -> int:
    """A notifier setting that cannot work is the user's to fix (exit 2); an unusable store is a failure (exit 1)."""
    console.print(f"[red]error:[/red] {err}", highlight=False)
    return EXIT_USAGE if isinstance(err, NotifierConfigError) else EXIT_FAILED


async def _preview(team: TeamConfig, store, console: Console) -> int:
    from botlab.reporting.service import Reporter

    _, digest = await Reporter(team, store).preview()
    folder = team.run_dir / "digests"
    folder.mkdir(parents=True, exist_ok=True)
    from_addr = from_address(team)
    write_atomic(folder / "preview.html", standalone_html(digest))
    write_atomic(folder / "preview.txt", digest.text)
    write_atomic(folder / "preview.eml", email_message(digest, from_addr, from_addr, "<preview@botlab>").as_string())
    console.print(Text(digest.subject, style="bold"))
    console.print(digest.text, highlight=False, markup=False)
    console.print(f"written to {folder}/preview.html, .txt and .eml (not sent; --send sends it)", highlight=False)
    return EXIT_OK


async def _send(team: TeamConfig, store, console: Console) -> int:
    from botlab.reporting.service import Reporter

    reporter = Reporter(team, store, console=console)
    await reporter.start(listen=False)
    try:
        digest_id = await reporter.send_digest("asked for on the command line")
    finally:
        await reporter.stop()
    waiting = outbox.unsent(store)
    console.print(f"digest #{digest_id} stored; {waiting} message(s) not sent yet" if waiting
                  else f"digest #{digest_id} sent", highlight=False)
    return EXIT_FAILED if waiting else EXIT_OK


def read_inbox(team: TeamConfig, console: Console) -> int:
    """`botlab inbox`: read every channel once, store and apply what arrived, answer it; no model is loaded."""
    if not (team.run_dir / STORE_NAME).exists():
        console.print(f"team {team.name} has not run yet ({team.run_dir} has no database): no digest to reply to")
        return EXIT_FAILED
    try:
        with open_store(team.run_dir) as store:
            if daemon_alive(team.run_dir):
                console.print("the running team reads its inbox itself; nothing was read")
                return EXIT_OK
            before = store.scalar("SELECT COALESCE(MAX(id), 0) FROM feedback")
            asyncio.run(_read_inbox(team, store, console))
            rows = store.query("SELECT id, channel, sender, status, response FROM feedback WHERE id > ? ORDER BY id",
                               (before,))
            waiting = outbox.unsent(store)
    except (NotifierConfigError, StoreError) as err:
        return _refused(err, console)
    for row in rows:
        console.print(f"feedback #{row['id']} ({row['channel']}, {row['sender']}): {row['response']}",
                      highlight=False, markup=False)
    console.print(f"{len(rows)} new message(s)" + (f"; {waiting} message(s) not sent yet" if waiting else ""))
    return EXIT_FAILED if waiting else EXIT_OK


async def _read_inbox(team: TeamConfig, store, console: Console) -> None:
    from botlab.reporting.service import Reporter

    reporter = Reporter(team, store, console=console)  # 'policy' needs the daemon's engine: the grammar reads
    await reporter.start(listen=False)
    try:
        await reporter.read_inbox()
        if store.get(DIGEST_REQUESTED_KEY):
            await reporter.send_digest("asked for by feedback")
    finally:
        await reporter.stop()


def local_feedback(team: TeamConfig, text: str, console: Console) -> int:
    """Store the text as feedback (channel "cli") and apply it now, unless a running team will. /status is
    answered here at once (it only reads the store), running team or not."""
    if not text.strip():
        console.print("[red]error:[/red] the feedback text is empty")
        return EXIT_USAGE
    try:
        with open_store(team.run_dir) as store:
            message = Incoming(channel="cli", external_id=f"cli-{uuid.uuid4()}", sender=_user(), text=text.strip())
            feedback_id = record(store, message)
            kind = request_kind(message.text)
            if kind != "status" and daemon_alive(team.run_dir):
                console.print(f"feedback #{feedback_id} stored; the running team applies it at its next poll")
                return EXIT_OK
            if kind is not None:  # /status, or /ask with no team running: answered as a channel's request is
                row = store.query("SELECT * FROM feedback WHERE id = ?", (feedback_id,))[0]
                response = answer_request(store, row, kind, requests_for(store, team))
            else:
                model = make_reporter_model(team.roles.reporter)  # 'policy' needs the daemon's engine: keywords here
                response = apply_one(store, feedback_id, message.text, interpreter_for(model))
    except StoreError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return EXIT_FAILED
    console.print(f"feedback #{feedback_id}: {response}", highlight=False, markup=False)
    return EXIT_OK


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        return "cli"
