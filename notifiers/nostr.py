"""The Nostr channel (nostr-sdk 0.45): NIP-17 gift-wrapped DMs to the recipients, DM replies from allowlisted keys.

One client stays connected to the configured relays (reading and writing); it reconnects and re-sends its
subscription by itself after a relay restart, and answers a relay's NIP-42 AUTH challenge with the team's key.
Each DM goes to the recipient's own DM relays, their kind-10050 list (NIP-17), looked up on the configured relays,
kept in the store and looked up again daily; those relays join the client for writing only. A recipient without a
list gets no DM unless the team file says to use the configured relays instead.

One task drains the notification stream (each `notifications()` call is a new receiver, so it is taken once,
before subscribing). Relays send stored events again on every subscription, so replies are deduped by rumor id in
the store. With `ask.job_requests`, NIP-90 kind-5050 job requests addressed to the team come in the same way and
are answered with a public kind-6050 result (or a kind-7000 error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from nostr_sdk import (
    ClientBuilder, Event, EventBuilder, Filter, Keys, Kind, KindStandard, PublicKey, RelayCapabilities, RelayOptions,
    RelayStatus, RelayUrl, ReqTarget, SendEventTarget, SignerAuthenticator, Tag, Timestamp, UnwrappedGift,
    nip17_extract_relay_list, nip59_make_gift_wrap, uniffi_set_event_loop,
)

from botlab.config import NostrNotifier
from botlab.notifiers.outbox import OutboxItem
from botlab.notifiers.replies import Incoming
from botlab.notifiers.secrets import NotifierConfigError, env_secret
from botlab.rundir import NOSTR_DM_RELAYS_KEY as DM_RELAYS_KEY
from botlab.store import Store

log = logging.getLogger(__name__)

GIFT_WRAP = Kind.from_std(KindStandard.GIFT_WRAP)
DM_KIND, NOTE_KIND, DM_RELAYS_KIND = 14, 1, 10050
JOB_REQUEST, JOB_RESULT, JOB_FEEDBACK = 5050, 6050, 7000  # NIP-90 text generation
WRAP_BACKDATE_S = 2 * 86400 + 600  # NIP-59 gift wraps carry a random created_at up to two days in the past
SEND_TIMEOUT_S = 5
CONNECT_TIMEOUT_S = 3
LOOKUP_TIMEOUT_S = 3
DM_RELAYS_MAX_AGE_S = 86400  # a recipient's DM relay list is looked up again daily
NO_DM_RELAYS_RECHECK_S = 600  # one who has none may publish one soon: looked up again at a send after 10 minutes
MAX_DM_RELAYS = 3  # NIP-17 asks for short lists; a longer one is cut, not sent to in full
MAX_TEXT = 4000
STARTED_KEY, SEEN_UNTIL_KEY, THREADS_KEY = "nostr/started_at", "nostr/seen_until", "nostr/threads"
JOBS_KEY = "nostr/jobs"  # {job request id: the request as JSON}, for the result's "request" tag
ASK = "/ask"


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
        self.client = None
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
        # The AUTH signer is called back from nostr-sdk's own threads; uniffi runs it on the loop named here. While
        # one is named, every nostr-sdk call must come from that loop (the daemon's side loop; asyncio.run in the CLI).
        uniffi_set_event_loop(asyncio.get_running_loop())
        self.client = ClientBuilder().authenticator(SignerAuthenticator(self.keys)).build()
        stream = self.client.notifications()  # before subscribing, or early events are lost
        for url in self.config.relays:
            await self.client.add_relay(RelayUrl.parse(url), opts=self._relay_options())
        await self.client.connect(timedelta(seconds=CONNECT_TIMEOUT_S))  # waits at most this long for the relays
        if listen:
            await self._subscribe(stream)
        await self._publish_relay_list()

    def _relay_options(self) -> RelayOptions:
        return RelayOptions().retry_interval(timedelta(seconds=self.config.reconnect_s)).adjust_retry_interval(False)

    def _inbox_filters(self) -> list[Filter]:
        """Gift wraps addressed to us since the last read (or since the team first started); job requests too."""
        since = (self.store.get(SEEN_UNTIL_KEY) or self.store.get(STARTED_KEY)) - WRAP_BACKDATE_S
        filters = [Filter().kind(GIFT_WRAP).pubkey(self.public_key).since(Timestamp.from_secs(int(since)))]
        if self.config.ask.job_requests and self.allowed:
            authors = [PublicKey.parse(hex_key) for hex_key in sorted(self.allowed)]
            filters.append(Filter().kind(Kind(JOB_REQUEST)).pubkey(self.public_key).authors(authors)
                           .since(Timestamp.from_secs(int(since))))
        return filters

    async def _subscribe(self, stream) -> None:
        await self.client.subscribe(ReqTarget.auto(self._inbox_filters()))
        self._drain_task = asyncio.create_task(self._drain(stream), name="botlab-nostr-inbox")

    async def catch_up(self, timeout: float = 5.0) -> None:
        """Read what the relays hold for us now, once (`botlab inbox`, no subscription): receive() returns it."""
        if self.client is None:
            raise NostrSendError("the Nostr channel is not started")
        self._received_at = time.time()
        events = await self.client.fetch_events(ReqTarget.auto(self._inbox_filters()),
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
            uniffi_set_event_loop(None)  # the loop may end now; calls from another loop must not be sent to it

    # --- out ---------------------------------------------------------------------------------------------------------

    async def _publish_relay_list(self) -> None:
        """NIP-17: readers look up our kind-10050 list to know where to send DMs."""
        tags = [Tag.parse(["relay", url]) for url in self.config.relays]
        event = EventBuilder(Kind(DM_RELAYS_KIND), "").tags(tags).finalize(self.keys)
        try:
            await self._send_event(event, self.config.relays)
            self._relay_list_sent = True
        except Exception as err:  # relays down: tried again before the next message
            log.warning("nostr: could not publish the DM relay list: %s", err)

    async def _connected(self, urls: list[str]) -> list[str]:
        """Those of `urls` the client is connected to; a relay new to the client joins it for writing only (so our
        subscription and lookups stay on the configured relays)."""
        if self.client is None:
            raise NostrSendError("the Nostr channel is not started")
        pool = {str(url): relay for url, relay in (await self.client.relays(all=True)).items()}
        connected = []
        for url in urls:
            relay = pool.get(str(RelayUrl.parse(url)))
            if relay is None:
                await self.client.add_relay(RelayUrl.parse(url), capabilities=RelayCapabilities.write(),
                                            opts=self._relay_options())
                relay = await self.client.relay(RelayUrl.parse(url))
            if relay.status() != RelayStatus.CONNECTED:
                try:
                    await relay.try_connect(timedelta(seconds=CONNECT_TIMEOUT_S))
                except Exception as err:  # down: the others may do, else the outbox retries
                    log.info("nostr: cannot connect to %s: %s", url, err)
            if relay.status() == RelayStatus.CONNECTED:
                connected.append(url)
        return connected

    async def _send_event(self, event, urls: list[str]) -> None:
        # Fail fast when no relay is up: send_event would wait for one for seconds, on every retry.
        targets = await self._connected(urls)
        if not targets:
            raise NostrSendError(f"not connected to any relay of {', '.join(urls)}")
        out = await self.client.send_event(event, target=SendEventTarget.to([RelayUrl.parse(u) for u in targets]),
                                           ok_timeout=timedelta(seconds=SEND_TIMEOUT_S))
        if not out.success:
            failed = "; ".join(f"{url}: {why}" for url, why in out.failed.items()) or "no relay connected"
            raise NostrSendError(f"no relay accepted the event ({failed})")

    async def send(self, item: OutboxItem) -> None:
        if not self._relay_list_sent:
            await self._publish_relay_list()
        text = item.payload["text"]
        if item.kind == "note":
            await self._send_event(EventBuilder(Kind(NOTE_KIND), text).tags([Tag.hashtag("botlab")])
                                   .finalize(self.keys), self.config.relays)
            return
        if item.payload.get("job"):
            await self._send_job_answer(item.payload)
            return
        receiver = parse_pubkey(item.recipient, "outbox recipient")
        relays = await self.dm_relays(receiver)
        if not relays:
            if not self.config.send_without_dm_relays:
                raise NostrSendError(
                    f"{receiver.to_bech32()} publishes no DM relay list (kind 10050), and NIP-17 says not to send "
                    "then; the DM waits for one (notifiers.nostr.send_without_dm_relays: true sends to the "
                    "configured relays instead)")
            relays = list(self.config.relays)
        rumor = (EventBuilder(Kind(DM_KIND), text).tags([Tag.public_key(receiver)])
                 .finalize_unsigned(self.public_key).ensure_id())
        await self._send_event(nip59_make_gift_wrap(self.keys, receiver, rumor), relays)
        if item.payload.get("digest_id") is not None:
            self._remember_thread(rumor.id().to_hex(), item.payload["digest_id"])

    async def dm_relays(self, receiver: PublicKey) -> list[str]:
        """The recipient's DM relays (NIP-17 kind 10050): from the store, or looked up on the configured relays when
        the entry is a day old (10 minutes when they had none). [] when they publish no list."""
        key, now = receiver.to_hex(), time.time()
        entry = self.store.get(DM_RELAYS_KEY, {}).get(key)
        max_age = DM_RELAYS_MAX_AGE_S if entry and entry["relays"] else NO_DM_RELAYS_RECHECK_S
        if entry is not None and now - entry["checked_at"] < max_age:
            return entry["relays"]
        try:
            relays = await self._look_up_dm_relays(receiver)
        except NostrSendError:
            if entry is None:
                raise
            return entry["relays"]  # the relays are down now: what we knew still holds
        known = self.store.get(DM_RELAYS_KEY, {})
        known[key] = {"npub": receiver.to_bech32(), "relays": relays, "checked_at": now}
        self.store.put(DM_RELAYS_KEY, known)
        if not relays:
            fallback = "using the configured relays" if self.config.send_without_dm_relays else "DMs to them wait"
            log.warning("nostr: %s publishes no DM relay list (kind 10050); %s", receiver.to_bech32(), fallback)
        elif entry is None or entry["relays"] != relays:
            log.info("nostr: DMs to %s go to %s", receiver.to_bech32(), ", ".join(relays))
        return relays

    async def _look_up_dm_relays(self, receiver: PublicKey) -> list[str]:
        if not await self._connected(self.config.relays):
            raise NostrSendError(f"not connected to any relay of {', '.join(self.config.relays)}")
        lists = await self.client.fetch_events(
            ReqTarget.auto([Filter().author(receiver).kind(Kind(DM_RELAYS_KIND))]),
            timeout=timedelta(seconds=LOOKUP_TIMEOUT_S))
        if not lists:
            return []
        newest = max(lists, key=lambda event: event.created_at().as_secs())  # a replaceable event: the latest counts
        relays = [str(url) for url in nip17_extract_relay_list(newest)]
        return [url for url in relays if url.startswith(("ws://", "wss://"))][:MAX_DM_RELAYS]

    async def _send_job_answer(self, payload: dict) -> None:
        """NIP-90: the answer as a kind-6050 result, a refusal as kind-7000 feedback with status error."""
        request = self.store.get(JOBS_KEY, {}).get(payload["job"])
        if request is None:
            raise NostrSendError(f"job request {payload['job']} is no longer known")
        request_event = Event.from_json(request)
        refs = [Tag.parse(["e", payload["job"]]), Tag.public_key(request_event.author())]
        if payload.get("ok"):
            inputs = [t for t in request_event.tags() if t.to_vec()[:1] == ["i"]]
            event = (EventBuilder(Kind(JOB_RESULT), payload["text"])
                     .tags([Tag.parse(["request", request]), *refs, *inputs]).finalize(self.keys))
        else:
            event = (EventBuilder(Kind(JOB_FEEDBACK), "")
                     .tags([Tag.parse(["status", "error", payload["text"]]), *refs]).finalize(self.keys))
        await self._send_event(event, self.config.relays)

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
        kind = event.kind().as_u16()
        if kind == GIFT_WRAP.as_u16():
            result = self._open(event)
        elif kind == JOB_REQUEST and self.config.ask.job_requests:
            result = self._job(event)
        else:
            return
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

    def _job(self, event) -> Incoming | str:
        """A NIP-90 text-generation request to the team, as '/ask PROMPT' from its author; else why not."""
        author = event.author()
        if author.to_hex() not in self.allowed:  # the filter asks only for allowed authors; a relay may not obey
            return f"job request from {author.to_bech32()}, which is not allowed to ask this team"
        if event.created_at().as_secs() < int(self.store.get(STARTED_KEY, 0)):
            return ""
        tags = [t.to_vec() for t in event.tags()]
        if any(t[:1] == ["encrypted"] for t in tags):
            return f"encrypted job request from {author.to_bech32()}: not supported (a /ask by DM is private)"
        prompt = next((t[1] for t in tags if t[:1] == ["i"] and len(t) > 2 and t[2] in ("text", "prompt")), "")
        event_id = event.id().to_hex()
        jobs = self.store.get(JOBS_KEY, {})
        jobs[event_id] = event.as_json()
        self.store.put(JOBS_KEY, dict(list(jobs.items())[-200:]))
        return Incoming(channel="nostr", external_id=f"job:{event_id}", sender=author.to_bech32(),
                        text=f"{ASK} {prompt.strip()}"[:MAX_TEXT])

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
