"""The email channel: digests out over SMTP (aiosmtplib), replies in over IMAP (see imap.py and replies.py)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from email.utils import make_msgid

import aiosmtplib

from botlab.config import EmailNotifier
from botlab.notifiers import imap
from botlab.notifiers.outbox import OutboxItem
from botlab.notifiers.replies import Incoming, MailRules, read_reply
from botlab.notifiers.secrets import NotifierConfigError, env_secret
from botlab.store import Store

log = logging.getLogger(__name__)

CURSOR_KEY = "email/imap_cursor"
STOP_TIMEOUT_S = 5


def digest_message_id(from_addr: str, digest_id: int) -> str:
    domain = from_addr.rsplit("@", 1)[-1] or "botlab.local"
    return make_msgid(idstring=f"digest-{digest_id}", domain=domain)


class EmailChannel:
    name = "email"

    def __init__(self, config: EmailNotifier, store: Store, team_name: str, dkim_dns=None):
        self.config = config
        self.store = store
        user = env_secret(config.username_env, "notifiers.email.username_env") if config.username_env else None
        password = env_secret(config.password_env, "notifiers.email.password_env") if config.password_env else None
        self.username, self.password = user, password  # both or neither, and both with imap_host (config.py checks)
        if config.ca_file is not None and not config.ca_file.is_file():
            raise NotifierConfigError(f"notifiers.email.ca_file: {config.ca_file} is not a file")
        self.tls = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        allowed = config.allowed_senders if config.allowed_senders is not None else config.to
        self.rules = MailRules(
            allowed_senders={a.lower() for a in allowed}, own_addresses={config.from_addr.lower()},
            subject_tag=f"[botlab {team_name}]", dkim_required=config.dkim_required, dkim_dns=dkim_dns)
        self.account = None
        if config.imap_host:
            self.account = imap.ImapAccount(config.imap_host, config.imap_port, config.imap_security, user, password,
                                            ssl_context=self.tls)
        self.news = asyncio.Event()  # set by the IDLE watcher: poll now
        self._watcher: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._pending_cursor: dict | None = None  # where the cursor moves once the caller stored what was read
        self._pending_uids: list[int] = []

    # --- out ---------------------------------------------------------------------------------------------------------

    async def start(self, listen: bool = True) -> None:
        # The read position is fixed before the first digest goes out (also by `botlab digest --send`), so a reply
        # that arrives before the daemon first listens is still read.
        if self.account is not None and self.store.get(CURSOR_KEY) is None:
            await self._init_cursor()
        if self.account is not None and listen:
            self._stopping.clear()
            self._watcher = asyncio.create_task(imap.watch(self.account, self.news.set, self._stopping),
                                                name="botlab-imap-idle")

    async def _init_cursor(self) -> None:
        if self._first_digest_at() is not None:
            return  # digests went out while the server was down: receive() reads from the first one's day
        try:
            _, cursor = await imap.fetch_new(self.account, None)
            self.store.put(CURSOR_KEY, cursor)
        except Exception as err:  # the server may be down now; the first poll that works sets the cursor
            log.warning("IMAP %s: %s", self.config.imap_host, err)

    def _first_digest_at(self) -> float | None:
        return self.store.scalar("SELECT MIN(created_at) FROM digests")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._stopping.set()
            done, _ = await asyncio.wait({self._watcher}, timeout=STOP_TIMEOUT_S)
            if not done:  # stuck in a network call: cancel, but never wait unboundedly
                self._watcher.cancel()
                await asyncio.wait({self._watcher}, timeout=STOP_TIMEOUT_S)
            self._watcher = None

    async def send(self, item: OutboxItem) -> None:
        security = self.config.smtp_security
        await aiosmtplib.send(
            item.payload["raw"].encode(), sender=self.config.from_addr, recipients=[item.recipient],
            hostname=self.config.smtp_host, port=self.config.smtp_port,
            use_tls=security == "tls", start_tls=security == "starttls", tls_context=self.tls,
            username=self.username, password=self.password, timeout=30,
        )

    # --- in ----------------------------------------------------------------------------------------------------------

    async def catch_up(self) -> None:
        pass  # receive() reads the server itself

    async def receive(self) -> list[Incoming]:
        """Replies that arrived since the stored cursor; ignored mail is logged as an event with the reason."""
        if self.account is None:
            return []
        self.news.clear()
        cursor = self.store.get(CURSOR_KEY)
        since = self._first_digest_at() if cursor is None else None
        messages, new_cursor = await imap.fetch_new(self.account, cursor, since=since)
        accepted = []
        for uid, raw in messages:
            result = read_reply(raw, self.rules, self._find_digest)
            if isinstance(result, str):
                self.store.log_event("feedback_ignored", f"email uid {uid}: {result}", level="warning")
            else:
                accepted.append(result)
        # The caller stores `accepted` before the cursor moves (see commit_receive): a crash in between re-reads
        # the same mail, and the feedback table's (channel, external_id) key drops the duplicates.
        self._pending_cursor = new_cursor
        self._pending_uids = [uid for uid, _ in messages]
        return accepted

    async def commit_receive(self) -> None:
        """The caller stored what receive() returned: move the cursor past it."""
        cursor = self._pending_cursor
        if cursor is not None:
            self.store.put(CURSOR_KEY, cursor)
            self._pending_cursor = None
            try:
                await imap.mark_seen(self.account, self._pending_uids)
            except Exception as err:
                log.info("could not flag mail as read: %s", err)

    def _find_digest(self, message_ids: list[str]) -> int | None:
        for mid in message_ids:
            found = self.store.scalar("SELECT id FROM digests WHERE message_id = ?", (mid,))
            if found is not None:
                return found
        return None
