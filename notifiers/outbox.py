"""The outbox: every outgoing message is stored before it is sent and marked sent after.

A failed send is retried with exponential backoff; after a restart whatever is unsent goes out, and a message is
never enqueued twice (dedupe_key) nor sent again once marked sent.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from botlab.store import Store

FIRST_RETRY_S = 30.0
MAX_RETRY_S = 3600.0


@dataclass
class OutboxItem:
    id: int
    channel: str
    recipient: str
    kind: str
    payload: dict[str, Any]
    attempts: int


def enqueue(db: sqlite3.Connection, channel: str, recipient: str, kind: str, payload: dict[str, Any],
            dedupe_key: str, now: float) -> None:
    """Inside the caller's transaction, so a digest and its messages are stored together."""
    db.execute(
        "INSERT OR IGNORE INTO outbox(channel, recipient, kind, payload, dedupe_key, created_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (channel, recipient, kind, json.dumps(payload), dedupe_key, now, now),
    )


def due(store: Store, now: float) -> list[OutboxItem]:
    rows = store.query(
        "SELECT * FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= ? ORDER BY id", (now,))
    return [OutboxItem(id=r["id"], channel=r["channel"], recipient=r["recipient"], kind=r["kind"],
                       payload=json.loads(r["payload"]), attempts=r["attempts"]) for r in rows]


def mark_sent(store: Store, item: OutboxItem, now: float) -> None:
    with store.transaction() as db:
        db.execute("UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                   (now, item.id))


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failures: 30 s, 60 s, 2 min, ... at most an hour."""
    return min(FIRST_RETRY_S * 2 ** max(attempts - 1, 0), MAX_RETRY_S)


def mark_failed(store: Store, item: OutboxItem, error: str, now: float) -> float:
    """Record the failure; returns when the next attempt is due."""
    attempts = item.attempts + 1
    next_at = now + retry_delay(attempts)
    with store.transaction() as db:
        db.execute("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                   (attempts, next_at, error[:500], item.id))
    return next_at


def unsent(store: Store) -> int:
    return store.scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
