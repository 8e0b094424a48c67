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
    Curriculum, DigestNow, apply_directive, load_curriculum, parse_commands, save_curriculum, validate_directives,
)
from botlab.notifiers.replies import Incoming
from botlab.phrases import read_phrases
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
    """Apply every pending message in arrival order; returns their ids. A message that fails is answered with the
    error (status 'error'), so it neither blocks the ones after it nor disappears."""
    done = []
    for row in store.query("SELECT id, text FROM feedback WHERE status = 'pending' ORDER BY id"):
        try:
            apply_one(store, row["id"], row["text"], interpreter)
        except Exception as err:
            log.exception("feedback #%d could not be applied", row["id"])
            with store.transaction() as db:
                db.execute("UPDATE feedback SET status = 'error', response = ? WHERE id = ?",
                           (f"could not be applied ({type(err).__name__}: {' '.join(str(err).split())[:300]}); "
                            "nothing was changed, please send it again", row["id"]))
        done.append(row["id"])
    return done


def apply_one(store: Store, feedback_id: int, text: str, interpreter: Interpreter | None) -> str:
    """Apply one stored message; the answer says what changed and asks about what was not understood."""
    parsed = parse_commands(text)
    directives, notes = list(parsed.directives), list(parsed.problems)
    questions: list[str] = []
    if parsed.plain_words:
        # The words are read against the curriculum as the message's commands leave it ("/weights ... less induction").
        after_commands = load_curriculum(store)
        for directive in directives:
            after_commands, _ = apply_directive(after_commands, directive)
        read, read_notes, questions = _read_plain_words(parsed.plain_words, after_commands, interpreter)
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
        response = "; ".join(changes + notes + [f"question: {q}" for q in questions])
        response = response or "nothing to change was found in this message"
        status = "applied" if changes else "question" if questions else "ignored"
        store.db.execute(
            "UPDATE feedback SET status = ?, directives = ?, response = ? WHERE id = ?",
            (status, json.dumps([d.model_dump() for d in directives]), response, feedback_id),
        )
    log.info("feedback #%d: %s", feedback_id, response)
    return response


def _read_plain_words(text: str, curriculum: Curriculum, interpreter: Interpreter | None
                      ) -> tuple[list, list[str], list[str]]:
    """(directives, notes, questions). The model reads plain words; without one, or when it fails or finds nothing
    valid, the phrase grammar (botlab.phrases) does."""
    notes: list[str] = []
    if interpreter is not None:
        try:
            found, notes = validate_directives(interpreter(text, curriculum.model_dump()))
            if found:
                return found, notes, []
        except Exception as err:
            log.warning("the reporter model could not read feedback: %s", err)
            notes = [f"the model could not read the words ({type(err).__name__}); the phrase grammar was used"]
    reading = read_phrases(text, curriculum)
    return reading.directives, notes, reading.questions
