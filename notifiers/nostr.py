"""The Nostr channel (nostr-sdk 0.45): NIP-17 gift-wrapped DMs to the recipients, DM replies from allowlisted keys.

One client stays connected to the configured relays; it reconnects and re-sends its subscription by itself after
a relay restart. One task drains the notification stream (each `notifications()` call is a new receiver, so it
is taken once, before subscribing). Relays send stored events again on every subscription, so replies are deduped
by rumor id in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from nostr_sdk import (
    Client, EventBuilder, Filter, Keys, Kind, KindStandard, PublicKey, RelayOptions, RelayStatus, RelayUrl, ReqTarget,
    Tag, Timestamp, UnwrappedGift, nip59_make_gift_wrap,
)

from botlab.config import NostrNotifier
from botlab.notifiers.outbox import OutboxItem
from botlab.notifiers.replies import Incoming
from botlab.notifiers.secrets import NotifierConfigError, env_secret
from botlab.store import Store

log = logging.getLogger(__name__)

GIFT_WRAP = Kind.from_std(KindStandard.GIFT_WRAP)
DM_KIND, NOTE_KIND, DM_RELAYS_KIND = 14, 1, 10050
WRAP_BACKDATE_S = 2 * 86400 + 600  # NIP-59 gift wraps carry a random created_at up to two days in the past
SEND_TIMEOUT_S = 5
MAX_TEXT = 4000
STARTED_KEY, SEEN_UNTIL_KEY, THREADS_KEY = "nostr/started_at", "nostr/seen_until", "nostr/threads"


class NostrSendError(Exception):
    pass


def parse_pubkey(value: str, field: str) -> PublicKey:
    try:
        return PublicKey.parse(value)
    except Exception:
        raise NotifierConfigError(f"{field}: {value!r} is not an npub or hex public key") from None


class NostrChannel:
    name = "nostr"

    def __init__(self, config: NostrNotifier, store: Store):
        self.config = config
        self.store = store
        secret = env_secret(config.nsec_env, "notifiers.nostr.nsec_env")
        try:
            self.keys = Keys.parse(secret)
        except Exception:
            raise NotifierConfigError(
                f"notifiers.nostr.nsec_env: environment variable {config.nsec_env} does not hold a valid nsec key"
            ) from None
        self.recipients = [parse_pubkey(r, "notifiers.nostr.recipients") for r in config.recipients]
        allowed = config.allowed_pubkeys if config.allowed_pubkeys is not None else config.recipients
        self.allowed = {parse_pubkey(a, "notifiers.nostr.allowed_pubkeys").to_hex() for a in allowed}
        self.client: Client | None = None
        self.inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self.news = asyncio.Event()
        self._drain_task: asyncio.Task | None = None
        self._reported: set[str] = set()  # ignored wraps already logged in this process
        self._relay_list_sent = False
        self._received_at: float | None = None

    @property
    def public_key(self) -> PublicKey:
        return self.keys.public_key()

    async def start(self, listen: bool = True) -> None:
        now = time.time()
        if self.store.get(STARTED_KEY) is None:
            self.store.put(STARTED_KEY, now)
        self.client = Client()
        stream = self.client.notifications()  # before subscribing, or early events are lost
        options = RelayOptions().retry_interval(timedelta(seconds=self.config.reconnect_s)).adjust_retry_interval(False)
        for url in self.config.relays:
            await self.client.add_relay(RelayUrl.parse(url), opts=options)
        await self.client.connect(timedelta(seconds=3))  # waits at most this long for the relays
        if listen:
            await self._subscribe(stream)
        await self._publish_relay_list()

    def _wraps_to_me(self) -> Filter:
        """Gift wraps addressed to us since the last read (or since the team first started)."""
        since = (self.store.get(SEEN_UNTIL_KEY) or self.store.get(STARTED_KEY)) - WRAP_BACKDATE_S
        return Filter().kind(GIFT_WRAP).pubkey(self.public_key).since(Timestamp.from_secs(int(since)))

    async def _subscribe(self, stream) -> None:
        await self.client.subscribe(ReqTarget.auto([self._wraps_to_me()]))
        self._drain_task = asyncio.create_task(self._drain(stream), name="botlab-nostr-inbox")

    async def catch_up(self, timeout: float = 5.0) -> None:
        """Read what the relays hold for us now, once (`botlab inbox`, no subscription): receive() returns it."""
        if self.client is None:
            raise NostrSendError("the Nostr channel is not started")
        self._received_at = time.time()
        events = await self.client.fetch_events(ReqTarget.auto([self._wraps_to_me()]),
                                                timeout=timedelta(seconds=timeout))
        for event in events:
            self._take(event)

    async def stop(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            await asyncio.wait({self._drain_task}, timeout=5)  # never hang a shutdown on the stream
            self._drain_task = None
        if self.client is not None:
            await self.client.shutdown()
            self.client = None

    # --- out ---------------------------------------------------------------------------------------------------------

    async def _publish_relay_list(self) -> None:
        """NIP-17: readers look up our kind-10050 list to know where to send DMs."""
        tags = [Tag.parse(["relay", url]) for url in self.config.relays]
        event = EventBuilder(Kind(DM_RELAYS_KIND), "").tags(tags).finalize(self.keys)
        try:
            await self._send_event(event)
            self._relay_list_sent = True
        except Exception as err:  # relays down: tried again before the next message
            log.warning("nostr: could not publish the DM relay list: %s", err)

    async def _send_event(self, event) -> None:
        if self.client is None:
            raise NostrSendError("the Nostr channel is not started")
        # Fail fast when no relay is up: send_event would wait for one for seconds, on every retry.
        relays = (await self.client.relays()).values()
        if not any(relay.status() == RelayStatus.CONNECTED for relay in relays):
            raise NostrSendError("not connected to any relay")
        out = await self.client.send_event(event, ok_timeout=timedelta(seconds=SEND_TIMEOUT_S))
        if not out.success:
            failed = "; ".join(f"{url}: {why}" for url, why in out.failed.items()) or "no relay connected"
            raise NostrSendError(f"no relay accepted the event ({failed})")

    async def send(self, item: OutboxItem) -> None:
        if not self._relay_list_sent:
            await self._publish_relay_list()
        text = item.payload["text"]
        if item.kind == "note":
            await self._send_event(EventBuilder(Kind(NOTE_KIND), text).tags([Tag.hashtag("botlab")])
                                   .finalize(self.keys))
            return
        receiver = parse_pubkey(item.recipient, "outbox recipient")
        rumor = (EventBuilder(Kind(DM_KIND), text).tags([Tag.public_key(receiver)])
                 .finalize_unsigned(self.public_key).ensure_id())
        await self._send_event(nip59_make_gift_wrap(self.keys, receiver, rumor))
        if item.payload.get("digest_id") is not None:
            self._remember_thread(rumor.id().to_hex(), item.payload["digest_id"])

    def _remember_thread(self, rumor_id: str, digest_id: int) -> None:
        """Which digest a DM was, so a reply tagging it (["e", id]) is matched to that digest."""
        threads = self.store.get(THREADS_KEY, {})
        threads[rumor_id] = digest_id
        self.store.put(THREADS_KEY, dict(list(threads.items())[-200:]))

    # --- in ----------------------------------------------------------------------------------------------------------

    async def _drain(self, stream) -> None:
        while True:
            notification = await stream.next()
            if notification is None or not notification.is_new_event():
                continue  # EOSE, OK and other relay messages
            self._take(notification.event)

    def _take(self, event) -> None:
        if event.kind().as_u16() != GIFT_WRAP.as_u16():
            return
        result = self._open(event)
        if isinstance(result, Incoming):
            self.inbox.put_nowait(result)
            self.news.set()
        elif result and event.id().to_hex() not in self._reported:
            self._reported.add(event.id().to_hex())
            self.store.log_event("feedback_ignored", f"nostr: {result}", level="warning")

    def _open(self, event) -> Incoming | str:
        """The DM inside a gift wrap if it may steer the team; else why not ('' = old, nothing to report)."""
        try:
            gift = UnwrappedGift.from_gift_wrap(self.keys, event)  # checks the seal: a forged sender fails here
        except Exception as err:
            return f"could not open a gift wrap ({err})"
        rumor, sender = gift.rumor(), gift.sender().to_hex()
        if rumor.kind().as_u16() != DM_KIND:
            return f"a gift-wrapped kind {rumor.kind().as_u16()} event is not a DM"
        if sender not in self.allowed:
            return f"DM from {gift.sender().to_bech32()}, which is not allowed to steer this team"
        if rumor.created_at().as_secs() < int(self.store.get(STARTED_KEY, 0)):
            return ""  # written before this team first listened: not meant for it
        threads = self.store.get(THREADS_KEY, {})
        replied_to = [t.to_vec()[1] for t in rumor.tags() if t.to_vec()[:1] == ["e"] and len(t.to_vec()) > 1]
        digest_id = next((threads[r] for r in replied_to if r in threads), None)
        rumor_id = (rumor.id() or rumor.ensure_id().id()).to_hex()
        return Incoming(channel="nostr", external_id=rumor_id, sender=gift.sender().to_bech32(),
                        text=rumor.content().strip()[:MAX_TEXT], digest_id=digest_id)

    async def receive(self) -> list[Incoming]:
        self.news.clear()
        self._received_at = self._received_at or time.time()  # catch_up() already noted when it read
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out

    async def commit_receive(self) -> None:
        """Stored: a restart subscribes from here (minus the gift-wrap backdating)."""
        if self._received_at is not None:
            self.store.put(SEEN_UNTIL_KEY, self._received_at)
            self._received_at = None
