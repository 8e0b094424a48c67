"""The team's mailbox over IMAP (aioimaplib): fetch what arrived after a stored cursor, and watch with IDLE.

The cursor (UIDVALIDITY and the last UID handled) is kept by the caller in the store, so nothing is read twice
or missed after a restart. Without a cursor the mail already there is skipped (it predates the team), unless the
caller says since when the team has been writing to people: then mail that arrived from that day on is read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from dataclasses import dataclass
from typing import Callable

import aioimaplib

log = logging.getLogger(__name__)

IDLE_RENEW_S = 25 * 60  # servers may drop an IDLE after 30 minutes (RFC 2177)
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UIDNEXT = re.compile(rb"UIDNEXT (\d+)")


class ImapError(Exception):
    pass


@dataclass
class ImapAccount:
    host: str
    port: int
    security: str  # "tls" | "none"
    username: str
    password: str
    ssl_context: ssl.SSLContext | None = None
    timeout: float = 15.0


async def _connect(account: ImapAccount, conn_lost: Callable | None = None) -> aioimaplib.IMAP4:
    # IMAP4 with an ssl_context is implicit TLS; IMAP4_SSL would drop conn_lost_cb (aioimaplib 2.0).
    context = (account.ssl_context or ssl.create_default_context()) if account.security == "tls" else None
    client = aioimaplib.IMAP4(account.host, account.port, timeout=account.timeout, conn_lost_cb=conn_lost,
                              ssl_context=context)
    await client.wait_hello_from_server()
    response = await client.login(account.username, account.password)
    if response.result != "OK":
        raise ImapError(f"IMAP login as {account.username} failed: {_text(response.lines)}")
    return client


async def _select(client: aioimaplib.IMAP4) -> tuple[int, int]:
    """Select INBOX; (UIDVALIDITY, UIDNEXT)."""
    response = await client.select("INBOX")
    if response.result != "OK":
        raise ImapError(f"cannot select INBOX: {_text(response.lines)}")
    joined = b" ".join(bytes(line) for line in response.lines)
    validity, uidnext = _UIDVALIDITY.search(joined), _UIDNEXT.search(joined)
    if not validity:
        raise ImapError("the server sent no UIDVALIDITY for INBOX")
    return int(validity.group(1)), int(uidnext.group(1)) if uidnext else 0


async def _last_uid_before(client: aioimaplib.IMAP4, since: float, uidnext: int) -> int:
    """The highest UID that arrived before the day preceding `since`."""
    day = time.strftime("%d-%b-%Y", time.gmtime(since - 86400))
    response = await client.uid_search(f"SINCE {day}", charset=None)
    if response.result != "OK":
        raise ImapError(f"UID SEARCH SINCE failed: {_text(response.lines)}")
    uids = [int(u) for u in bytes(response.lines[0]).split()]
    return min(uids) - 1 if uids else max(uidnext - 1, 0)


def _text(lines: list) -> str:
    return " ".join(bytes(line).decode(errors="replace") for line in lines)[:200]


async def fetch_new(account: ImapAccount, cursor: dict | None, since: float | None = None
                    ) -> tuple[list[tuple[int, bytes]], dict]:
    """Messages after the cursor, oldest first, and the cursor to store once they are handled.

    Without a cursor: nothing (the cursor is set to now), or with `since` (a time) the mail that arrived from the
    day before it on (a day early: IMAP dates have no time of day and servers' time zones differ)."""
    client = await _connect(account)
    try:
        validity, uidnext = await _select(client)
        if cursor is None and since is None:
            return [], {"uidvalidity": validity, "last_uid": max(uidnext - 1, 0)}
        if cursor is None:
            last = await _last_uid_before(client, since, uidnext)
        else:
            last = cursor["last_uid"] if cursor.get("uidvalidity") == validity else 0  # mailbox rebuilt: read again
        response = await client.uid_search(f"UID {last + 1}:*", charset=None)
        if response.result != "OK":
            raise ImapError(f"UID SEARCH failed: {_text(response.lines)}")
        uids = sorted(int(u) for u in bytes(response.lines[0]).split() if int(u) > last)  # n:* always matches the top
        out = []
        for uid in uids:
            fetched = await client.uid("fetch", str(uid), "(BODY.PEEK[])")
            if fetched.result != "OK" or len(fetched.lines) < 2:
                raise ImapError(f"UID FETCH {uid} failed: {_text(fetched.lines)}")
            out.append((uid, bytes(fetched.lines[1])))
        return out, {"uidvalidity": validity, "last_uid": uids[-1] if uids else last}
    finally:
        await _logout(client)


async def mark_seen(account: ImapAccount, uids: list[int]) -> None:
    """Flag handled mail as read, for whoever also looks at the mailbox. Best effort."""
    if not uids:
        return
    client = await _connect(account)
    try:
        await _select(client)
        await client.uid("store", ",".join(map(str, uids)), "+FLAGS", r"(\Seen)")
    finally:
        await _logout(client)


async def _logout(client: aioimaplib.IMAP4) -> None:
    try:
        await client.logout()
    except Exception:  # the connection may already be gone; nothing to clean up then
        pass


async def watch(account: ImapAccount, on_new_mail: Callable[[], None], stop: asyncio.Event,
                max_backoff: float = 60.0) -> None:
    """Call `on_new_mail` whenever the server announces mail (IDLE); reconnect with backoff; return once `stop`
    is set. (An explicit stop, because a cancellation can be swallowed by asyncio.wait_for before Python 3.12.)"""
    backoff = 1.0
    while not stop.is_set():
        lost = asyncio.Event()
        client = None
        try:
            client = await _connect(account, conn_lost=lambda exc: lost.set())
            await _select(client)
            backoff = 1.0
            on_new_mail()  # mail may have come while we were not watching
            while not lost.is_set() and not stop.is_set():
                if await _idle_once(client, lost, stop):
                    on_new_mail()
            if lost.is_set():
                raise ImapError("connection lost")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("IMAP watch of %s@%s: %s; reconnecting in %.0f s", account.username, account.host, err,
                        backoff)
            await _wait(stop, backoff)
            backoff = min(backoff * 2, max_backoff)
        finally:
            if client is not None and not lost.is_set():
                await _logout(client)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def _idle_once(client: aioimaplib.IMAP4, lost: asyncio.Event, stop: asyncio.Event) -> bool:
    """One IDLE round until a push, the renewal time, a lost connection or a stop; True when mail was announced."""
    idle = await client.idle_start(timeout=IDLE_RENEW_S)
    new_mail = False
    while client.has_pending_idle():
        push = asyncio.ensure_future(client.wait_server_push())
        interrupted = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stop.wait())]
        done, _ = await asyncio.wait({push, *interrupted}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in interrupted:
            waiter.cancel()
        if push not in done:
            push.cancel()
            if lost.is_set():
                return new_mail
            break  # stop: end the IDLE politely, then the caller logs out
        message = push.result()
        if message == aioimaplib.STOP_WAIT_SERVER_PUSH:
            break
        if any(b"EXISTS" in bytes(line) for line in message):
            new_mail = True
            break
    client.idle_done()
    await asyncio.wait_for(idle, 10)
    return new_mail
