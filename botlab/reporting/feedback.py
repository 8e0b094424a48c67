"""Feedback: store every accepted message once, then turn it into curriculum directives and say what changed.

The same path serves email replies, Nostr DMs and `botlab feedback` (channel "cli"). Storing and applying are
separate steps so a crash in between leaves the message pending, to be applied at the next poll.

A message that starts with `/status` or `/ask` is a request, not feedback: nothing in it steers. `/status` is
answered with the short status; `/ask QUESTION` (Nostr, opt-in) with the team's current model, rate-limited per
sender. Both end as status 'answered', and the answer is the response.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from botlab.agents.reporter import interpret_feedback
from botlab.curriculum import (
    Curriculum, DigestNow, apply_directive, load_curriculum, parse_commands, save_curriculum, validate_directives,
)
from botlab.notifiers.replies import Incoming
from botlab.phrases import read_phrases
from botlab.store import Store

log = logging.getLogger(__name__)

DIGEST_REQUESTED_KEY = "digest_requested"
ANSWERED = "answered"  # the status of a request (/status, /ask) that got its answer
MAX_ANSWER = 3000
_REQUEST = re.compile(r"\s*/(status|ask)\b", re.IGNORECASE)

# Reads plain words into raw directive items (a model call); raises when it cannot.
Interpreter = Callable[[str, dict[str, Any]], list[Any]]


@dataclass
class Requests:
    """How /status and /ask are answered where the messages are applied."""

    status: Callable[[], str]  # the short status, read from the store
    ask: Callable[[str], str] | None = None  # the model's answer to a question; None: no model answers here
    why_no_ask: str = "/ask is not enabled for this team"
    asks_per_hour: int = 5
    ask_channels: tuple[str, ...] = ("nostr",)


def interpreter_for(model: Any) -> Interpreter | None:
    """The reporter model's reading of plain words; None without a model (the phrase grammar reads them)."""
    if model is None:
        return None
    return lambda text, curriculum: interpret_feedback(model, text, curriculum)


def requests_for(store: Store, team: Any, policy: Any = None) -> Requests:
    """How /status and /ask are answered here; policy: the model being trained (only the daemon has one)."""
    nostr = team.notifiers.nostr
    ask_cfg = nostr.ask if nostr is not None else None
    requests = Requests(status=lambda: short_status(store, team))
    if ask_cfg is None or not ask_cfg.enabled:
        requests.why_no_ask = "/ask is off for this team (notifiers.nostr.ask.enabled)"
    elif policy is None:
        requests.why_no_ask = "/ask is answered only while the team runs (botlab run): no model is loaded now"
    else:
        requests.ask = lambda question: ask_model(policy, question, ask_cfg.max_tokens)
        requests.asks_per_hour = ask_cfg.per_hour
        requests.why_no_ask = "/ask is answered only by Nostr DM"
    return requests


def request_kind(text: str) -> str | None:
    """'status' or 'ask' when the message is a request, else None (feedback)."""
    match = _REQUEST.match(text)
    return match.group(1).lower() if match else None


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


def apply_pending(store: Store, interpreter: Interpreter | None = None, requests: Requests | None = None,
                  model_free: bool = False) -> list[int]:
    """Apply every pending message in arrival order; returns their ids. A message that fails is answered with the
    error (status 'error'), so it neither blocks the ones after it nor disappears.

    model_free: only what needs no model call now (the daemon's trainer may be using the engine): /status, and
    feedback up to the first message whose words the model must read (the ones after it wait, as order matters);
    /ask waits too."""
    done, waiting = [], False
    for row in store.query("SELECT id, channel, sender, received_at, text FROM feedback WHERE status = 'pending' "
                           "ORDER BY id"):
        kind = request_kind(row["text"])
        if model_free and kind != "status":
            needs_model = (kind == "ask" and requests is not None and requests.ask is not None) or (
                kind is None and interpreter is not None and bool(parse_commands(row["text"]).plain_words))
            waiting = waiting or (needs_model and kind is None)
            if needs_model or (waiting and kind is None):
                continue
        try:
            if kind is not None:
                answer_request(store, row, kind, requests)
            else:
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


def answer_request(store: Store, row, kind: str, requests: Requests | None) -> str:
    """Answer a /status or /ask message (a stored feedback row); nothing in it steers."""
    if requests is None:
        status, response = "ignored", f"/{kind} cannot be answered here"
    elif kind == "status":
        status, response = ANSWERED, requests.status()
    else:
        status, response = _ask(store, row, requests)
    with store.transaction() as db:
        db.execute("UPDATE feedback SET status = ?, response = ? WHERE id = ?", (status, response, row["id"]))
    log.info("feedback #%d: /%s %s", row["id"], kind, status)
    return response


def _ask(store: Store, row, requests: Requests) -> tuple[str, str]:
    question = _REQUEST.sub("", row["text"], count=1).strip()
    if row["channel"] not in requests.ask_channels or requests.ask is None:
        return "ignored", requests.why_no_ask
    if not question:
        return "ignored", "write the question after /ask, e.g. /ask what does sorted('cab') return?"
    hour_ago = row["received_at"] - 3600
    recent = store.query(
        "SELECT received_at FROM feedback WHERE sender = ? AND channel = ? AND status = ? AND id != ? "
        "AND received_at > ? AND lower(ltrim(text)) LIKE '/ask%' ORDER BY received_at",
        (row["sender"], row["channel"], ANSWERED, row["id"], hour_ago))
    if len(recent) >= requests.asks_per_hour:
        again = time.strftime("%H:%M UTC", time.gmtime(recent[0]["received_at"] + 3600))
        return "ignored", (f"not answered: at most {requests.asks_per_hour} questions an hour; ask again after "
                           f"{again}")
    answer = requests.ask(question).strip()
    return ANSWERED, (answer[:MAX_ANSWER] or "the model gave an empty answer")


def ask_model(model: Any, question: str, max_tokens: int) -> str:
    """The model's answer to a question: one chat turn, greedy. The text is only ever sent back, never run."""
    from smolagents import ChatMessage, MessageRole

    message = ChatMessage(role=MessageRole.USER, content=[{"type": "text", "text": question[:2000]}])
    answer = model.generate([message], max_tokens=max_tokens, temperature=0).content
    if isinstance(answer, list):  # content parts
        answer = " ".join(part.get("text", "") for part in answer if isinstance(part, dict))
    return answer or ""


def short_status(store: Store, team: Any) -> str:
    """What `/status` answers: `botlab status` in a few lines for a phone (no links, at most ~600 characters)."""
    from botlab.rundir import daemon_alive
    from botlab.status import collect

    info = collect(store, team, alive=daemon_alive(team.run_dir))
    head = f"botlab {team.name}: {info['state']}, step {info['step']} of {info['total_steps']}"
    lines = [head + (f" ({info['phase']})" if info.get("phase") else "")]
    if info["solve_rates"]:
        lines.append("solve " + ", ".join(f"{t} {r:.0%}" for t, r in sorted(info["solve_rates"].items())
                                          if isinstance(r, (int, float))))
    if info["held_out"]:
        lines.append("held-out " + ", ".join(f"{s} {e['score']:.2f}" for s, e in info["held_out"].items()))
    c = info["curriculum"]
    plan = ["weights " + " ".join(f"{t} {w:g}" for t, w in c["task_weights"].items())]
    plan += [f"difficulty {c['difficulty']:+d}"] if c["difficulty"] else []
    plan += [f"{t} {d:+d}" for t, d in c["type_difficulty"].items() if d]
    plan += ["focus " + ", ".join(c["focus"])] if c["focus"] else []
    plan += [f"{len(c['reviewer_rules'])} reviewer rule(s)"] if c["reviewer_rules"] else []
    plan += ["PAUSED (/resume)"] if c["paused"] else []
    lines.append("; ".join(plan))
    changed = [n for n in info["recent_feedback"] if n["status"] == "applied"]
    if changed:
        note = changed[-1]
        lines.append(f"last change (#{note['id']}): {_clip(note['response'], 160)}")
    if info["next_digest_at"]:
        lines.append("next digest " + time.strftime("%a %H:%M UTC", time.gmtime(info["next_digest_at"])))
    if info["unsent_messages"]:
        lines.append(f"{info['unsent_messages']} message(s) waiting to be sent")
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
