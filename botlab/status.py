"""What a run is doing, read from its run dir: used by `botlab status` and by the digest."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from botlab.config import TeamConfig
from botlab.curriculum import load_curriculum
from botlab.reporting.digest import held_out_scores
from botlab.rundir import DAEMON_PAUSED_KEY, DAEMON_STATE_KEY, ENGINE_KEY, LAST_EVAL_KEY, NEXT_DIGEST_KEY, PHASE_KEY
from botlab.rundir import NOSTR_DM_RELAYS_KEY, RESUME_KEY, STARTED_AT_KEY, STORE_NAME, daemon_alive
from botlab.selfplay import heldout
from botlab.selfplay.summary import StepSummary
from botlab.store import Store, open_store

RECENT_FEEDBACK = 5


def run_status(team: TeamConfig) -> dict[str, Any]:
    """Everything `botlab status --json` prints. Works on a run that never started."""
    run_dir = team.run_dir
    base: dict[str, Any] = {"team": team.name, "run_dir": str(run_dir)}
    if not (run_dir / STORE_NAME).exists():
        return base | {"state": "not started", "step": 0, "total_steps": team.train.steps}
    with open_store(run_dir) as store:
        return base | collect(store, team, alive=daemon_alive(run_dir))


def collect(store: Store, team: TeamConfig, alive: bool) -> dict[str, Any]:
    recorded = store.get(DAEMON_STATE_KEY, "stopped")
    if alive:
        state = "paused" if store.get(DAEMON_PAUSED_KEY, False) else "running"
    else:
        state = "crashed" if recorded in ("running", "paused") else recorded
    last = store.query("SELECT * FROM steps ORDER BY step DESC LIMIT 1")
    summary = StepSummary.from_json(last[0]["summary"]) if last else StepSummary()
    started = store.get(STARTED_AT_KEY)
    errors = store.scalar(
        "SELECT COUNT(*) FROM events WHERE level = 'error' AND at >= ?", (started or 0,)
    )
    buffers = {row["task_type"]: row["n"] for row in store.query(
        "SELECT task_type, COUNT(*) AS n FROM buffers GROUP BY task_type ORDER BY task_type"
    )}
    last_digest = store.query("SELECT id, created_at, subject FROM digests ORDER BY id DESC LIMIT 1")
    return {
        "state": state,
        "step": last[0]["step"] if last else 0,
        "total_steps": team.train.steps,
        "phase": store.get(PHASE_KEY) if alive else None,
        "last_step_at": last[0]["finished_at"] if last else None,
        "seconds_per_step": _seconds_per_step(store),
        "tokens_per_second": summary.tokens_per_second,
        "rewards": summary.rewards,
        "solve_rates": summary.solve_rates,
        "valid_rate": summary.valid_rate,
        "buffer_sizes": buffers,
        "heldout_sizes": heldout.counts(store),
        "last_digest": dict(last_digest[0]) if last_digest else None,
        "next_digest_at": store.get(NEXT_DIGEST_KEY),
        "pending_feedback": store.scalar("SELECT COUNT(*) FROM feedback WHERE status = 'pending'"),
        "unsent_messages": store.scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"),
        "nostr_dm_relays": store.get(NOSTR_DM_RELAYS_KEY, {}),
        "last_eval": store.get(LAST_EVAL_KEY),
        "held_out": held_out_scores(store),
        "engine": store.get(ENGINE_KEY),
        "errors_since_start": errors,
        "resume_state": _found(store.resolve(store.get(RESUME_KEY))),
        "last_checkpoint": _found(store.resolve(store.scalar(
            "SELECT checkpoint FROM steps WHERE checkpoint IS NOT NULL ORDER BY step DESC LIMIT 1"))),
        "curriculum": load_curriculum(store).model_dump(),
        "recent_feedback": [dict(r) for r in store.query(
            "SELECT id, channel, sender, received_at, text, status, response FROM feedback ORDER BY id DESC LIMIT ?",
            (RECENT_FEEDBACK,))][::-1],
        "checked_at": time.time(),
    }


def _found(path: Path | None) -> dict[str, Any] | None:
    """A stored path as found now (resolved against the run dir, which may have moved) and whether it is there."""
    return None if path is None else {"path": str(path), "present": path.exists()}


def _seconds_per_step(store: Store, window: int = 10) -> float | None:
    rows = store.query("SELECT started_at, finished_at FROM steps ORDER BY step DESC LIMIT ?", (window,))
    if not rows:
        return None
    return sum(r["finished_at"] - r["started_at"] for r in rows) / len(rows)
