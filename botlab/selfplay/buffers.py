"""Task buffers per task type, kept in the store so they survive restarts and commit with their step.

Proposer references are sampled uniformly (AZR found recency sampling risks collapse); solver batches take the
newest tasks first, then fill uniformly. With selfplay.draw = by_output_kind both draw a kind of output first,
uniformly among the kinds the buffer holds, then a task of that kind. A full buffer evicts (oldest, or lowest
learnability) instead of freezing as the original does at 16384.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time

from botlab.agents.pyast import input_key
from botlab.config import SelfPlayConfig, TaskType
from botlab.store import Store
from botlab.tasks import Triplet, output_kind

PROGRAM_TYPES: tuple[TaskType, ...] = ("deduction", "abduction")  # induction proposers draw programs from these


class Buffers:
    def __init__(self, store: Store, cfg: SelfPlayConfig):
        self.store = store
        self.cfg = cfg

    # --- reading ----------------------------------------------------------------------------------------------------

    def size(self, task_type: TaskType) -> int:
        return self.store.scalar("SELECT COUNT(*) FROM buffers WHERE task_type = ?", (task_type,))

    def sizes(self) -> dict[str, int]:
        return {t: self.size(t) for t in ("deduction", "abduction", "induction")}

    def references(self, task_type: TaskType, k: int, rng: random.Random) -> list[Triplet]:
        """K distinct tasks of this type."""
        ids = self._ids(task_type)
        return self._load(self._draw(ids, min(k, len(ids)), rng, distinct=True), task_type)

    def kind_shares(self, task_type: TaskType) -> dict[str, float]:
        """The share of each kind of output (tasks.output_kind) among the buffer's tasks of this type."""
        kinds = list(self._output_kinds(self._ids(task_type)).values())
        return {kind: kinds.count(kind) / len(kinds) for kind in set(kinds)}

    def program_for_induction(self, rng: random.Random) -> Triplet | None:
        """A program from the deduction/abduction buffers, for the induction proposer to write inputs for."""
        ids = self._ids(*PROGRAM_TYPES)
        if not ids:
            return None
        return self._load([rng.choice(ids)], "induction")[0]

    def solver_batch(self, task_type: TaskType, size: int, rng: random.Random) -> list[Triplet]:
        """The tasks added at the newest step first, then the rest uniformly. A buffer smaller than the batch is
        drawn from again, so the batch keeps its size: TRR++ whitens rewards per task type and role, and one sample
        per type (a young buffer) has no spread to learn from, while several attempts at one task do."""
        rows = self.store.query(
            "SELECT task_id, added_step FROM buffers WHERE task_type = ? ORDER BY added_step DESC, task_id DESC",
            (task_type,),
        )
        if not rows:
            return []
        newest_step = rows[0]["added_step"]
        newest = [r["task_id"] for r in rows if r["added_step"] == newest_step][:size]
        rest = [r["task_id"] for r in rows if r["added_step"] != newest_step]
        chosen = newest + self._draw(rest, min(size - len(newest), len(rest)), rng, distinct=True)
        chosen += self._draw([r["task_id"] for r in rows], size - len(chosen), rng, distinct=False)
        return self._load(chosen, task_type)

    def _draw(self, ids: list[int], n: int, rng: random.Random, distinct: bool) -> list[int]:
        """n of `ids`, uniformly or (selfplay.draw) by output kind; `distinct` draws without replacement."""
        if self.cfg.draw == "uniform" or n <= 0:
            return rng.sample(ids, n) if distinct else rng.choices(ids, k=n)
        by_kind: dict[str, list[int]] = {}
        for task_id, kind in self._output_kinds(ids).items():
            by_kind.setdefault(kind, []).append(task_id)
        chosen = []
        for _ in range(n):
            kind = rng.choice(sorted(by_kind))
            group = by_kind[kind]
            task_id = group.pop(rng.randrange(len(group))) if distinct else rng.choice(group)
            if not group:
                del by_kind[kind]
            chosen.append(task_id)
        return chosen

    def _output_kinds(self, ids: list[int]) -> dict[int, str]:
        """Task id -> the kind of its first output, in id order."""
        marks = ",".join("?" * len(ids))
        rows = self.store.query(f"SELECT id, outputs FROM tasks WHERE id IN ({marks}) ORDER BY id", ids)
        return {r["id"]: output_kind((json.loads(r["outputs"]) or [""])[0]) for r in rows}

    def tasks(self, task_type: TaskType) -> list[Triplet]:
        """Every buffered task of this type (the warm start answers them all)."""
        return self._load(self._ids(task_type), task_type)

    def programs(self, task_type: TaskType) -> list[str]:
        """Buffered programs of this type, for the reviewer's duplicate checks."""
        return [r["program"] for r in self.store.query(
            "SELECT t.program FROM buffers b JOIN tasks t ON t.id = b.task_id WHERE b.task_type = ?", (task_type,)
        )]

    def program_inputs(self, task_type: TaskType) -> dict[str, set[str]]:
        """The input keys of the buffered tasks of this type, by program fingerprint (the reviewer's new-input
        rule)."""
        out: dict[str, set[str]] = {}
        for r in self.store.query("SELECT t.fingerprint, t.inputs FROM buffers b JOIN tasks t ON t.id = b.task_id "
                                  "WHERE b.task_type = ? AND t.fingerprint IS NOT NULL", (task_type,)):
            out.setdefault(r["fingerprint"], set()).update(input_key(x) for x in json.loads(r["inputs"])[:1])
        return out

    def _ids(self, *task_types: TaskType) -> list[int]:
        marks = ",".join("?" * len(task_types))
        rows = self.store.query(
            f"SELECT DISTINCT task_id FROM buffers WHERE task_type IN ({marks}) ORDER BY task_id", task_types
        )
        return [r["task_id"] for r in rows]

    def _load(self, ids: list[int], task_type: TaskType) -> list[Triplet]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = {r["id"]: r for r in self.store.query(f"SELECT * FROM tasks WHERE id IN ({marks})", ids)}
        return [row_to_triplet(rows[i], task_type) for i in ids]

    # --- writing (inside the step's transaction) --------------------------------------------------------------------

    def add(self, db: sqlite3.Connection, task_type: TaskType, task_id: int, step: int) -> None:
        db.execute("INSERT OR IGNORE INTO buffers(task_type, task_id, added_step) VALUES (?, ?, ?)",
                   (task_type, task_id, step))
        self._evict(db, task_type)

    def _evict(self, db: sqlite3.Connection, task_type: TaskType) -> None:
        excess = db.execute("SELECT COUNT(*) FROM buffers WHERE task_type = ?", (task_type,)).fetchone()[0]
        excess -= self.cfg.buffer_max
        if excess <= 0:
            return
        order = "b.added_step, b.task_id" if self.cfg.eviction == "oldest" else "COALESCE(t.learnability, 0), b.task_id"
        db.execute(
            f"""DELETE FROM buffers WHERE task_type = ? AND task_id IN (
                SELECT b.task_id FROM buffers b JOIN tasks t ON t.id = b.task_id
                WHERE b.task_type = ? ORDER BY {order} LIMIT ?)""",
            (task_type, task_type, excess),
        )


def insert_task(db: sqlite3.Connection, step: int, triplet: Triplet, status: str, reason: str | None,
                learnability: float | None = None, fingerprint: str | None = None) -> int:
    cursor = db.execute(
        """INSERT INTO tasks(step, task_type, program, inputs, outputs, message, status, reason, learnability,
                             created_at, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (step, triplet.task_type, triplet.program, json.dumps(triplet.inputs), json.dumps(triplet.outputs),
         triplet.message, status, reason, learnability, time.time(), fingerprint),
    )
    return cursor.lastrowid


def row_to_triplet(row: sqlite3.Row, task_type: TaskType) -> Triplet:
    return Triplet(
        program=row["program"], inputs=json.loads(row["inputs"]), outputs=json.loads(row["outputs"]),
        message=row["message"], task_type=task_type, id=row["id"],
    )
