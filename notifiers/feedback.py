"""Feedback: store every accepted message once, then turn it into curriculum directives and say what changed.

The same path serves email replies, Nostr DMs and `botlab feedback` (channel "cli"). Storing and applying are
separate steps so a crash in between leaves the message pending, to be applied at the next poll.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from botlab.curriculum import (
    DigestNow, apply_directive, interpret_keywords, load_curriculum, parse_commands, save_curriculum,
    validate_directives,
)
from botlab.notifiers.replies import Incoming
from botlab.store import Store

log = logging.getLogger(__name__)

DIGEST_REQUESTED_KEY = "digest_requested"

# Reads plain words into raw directive items (a model call); raises when it cannot.
Interpreter = Callable[[str, dict[str, Any]], list[Any]]


def record(store: Store, message: Incoming, now: float | None = None) -> int | None:
    """Store the message; None when this channel already delivered it (a duplicate)."""
    with store.transaction() as db:
        cursor = db.execute(
            "INSERT OR IGNORE INTO feedback(channel, external_id, sender, received_at, text, digest_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (message.channel, message.external_id, message.sender, time.time() if now is None else now,
             message.text, message.digest_id),
        )
        return cursor.lastrowid if cursor.rowcount else None


def apply_pending(store: Store, interpreter: Interpreter | None = None) -> list[int]:
    """Apply every pending message in arrival order; returns their ids."""
    done = []
    for row in store.query("SELECT id, text FROM feedback WHERE status = 'pending' ORDER BY id"):
        apply_one(store, row["id"], row["text"], interpreter)
        done.append(row["id"])
    return done


def apply_one(store: Store, feedback_id: int, text: str, interpreter: Interpreter | None) -> str:
    parsed = parse_commands(text)
    directives, notes = list(parsed.directives), list(parsed.problems)
    if parsed.plain_words:
        read, read_notes = _read_plain_words(parsed.plain_words, load_curriculum(store).model_dump(), interpreter,
                                             had_commands=bool(directives))
        directives += read
        notes += read_notes
    # The model call is done; now change the curriculum and the feedback row together.
    with store.transaction():
        curriculum = load_curriculum(store)
        changes = []
        for directive in directives:
            curriculum, change = apply_directive(curriculum, directive)
            if change:
                changes.append(change)
            if isinstance(directive, DigestNow):
                store.put(DIGEST_REQUESTED_KEY, True)
        save_curriculum(store, curriculum)
        response = "; ".join(changes + notes) or "nothing to change was found in this message"
        store.db.execute(
            "UPDATE feedback SET status = ?, directives = ?, response = ? WHERE id = ?",
            ("applied" if changes else "ignored", json.dumps([d.model_dump() for d in directives]), response,
             feedback_id),
        )
    log.info("feedback #%d: %s", feedback_id, response)
    return response


def _read_plain_words(text: str, curriculum: dict, interpreter: Interpreter | None,
                      had_commands: bool) -> tuple[list, list[str]]:
    """The model reads plain words; without one (or if it fails) a few keywords are recognised."""
    if interpreter is not None:
        try:
            return validate_directives(interpreter(text, curriculum))
        except Exception as err:
            log.warning("the reporter model could not read feedback: %s", err)
            notes = [f"the model could not read the words ({type(err).__name__}); keywords were used"]
            return interpret_keywords(text), notes
    found = interpret_keywords(text)
    if found or had_commands:
        return found, []
    return [], ["without a reporter model only commands and a few phrases are understood; see the commands"]
