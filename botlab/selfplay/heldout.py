"""The run's own held-out split: admitted tasks set aside so every run has a learning curve with nothing downloaded.

A task drawn into the split is stored with status 'heldout' and never enters a buffer, so it is never a solver task,
never a proposer reference and never an induction program; the proposal that wrote it is not trained on either.
Proposals that duplicate a held-out program are rejected like duplicates of buffered ones (the reviewer sees both).
Deduction and abduction draw only programs that no buffer of any type holds. Induction tasks probe a buffered program
(that is how they are made), so what is held out there is the task: its inputs, hint and hidden tests.

The split fills while tasks are admitted (one in `heldout_every`, by a hash of the program, so seeding-era and later
tasks are drawn alike) and is frozen once it holds `heldout_size` tasks per type.
"""

from __future__ import annotations

import hashlib

from botlab.config import SelfPlayConfig, TaskType
from botlab.selfplay.buffers import row_to_triplet
from botlab.store import Store
from botlab.tasks import Triplet

STATUS = "heldout"


def counts(store: Store) -> dict[str, int]:
    rows = store.query("SELECT task_type, COUNT(*) AS n FROM tasks WHERE status = ? GROUP BY task_type", (STATUS,))
    return {r["task_type"]: r["n"] for r in rows}


def tasks(store: Store, task_type: TaskType) -> list[Triplet]:
    rows = store.query("SELECT * FROM tasks WHERE status = ? AND task_type = ? ORDER BY id", (STATUS, task_type))
    return [row_to_triplet(r, task_type) for r in rows]


def programs(store: Store) -> list[str]:
    """Held-out programs of every type: the reviewer treats them as taken."""
    return [r["program"] for r in store.query("SELECT program FROM tasks WHERE status = ?", (STATUS,))]


def draws(fingerprint: str, every: int) -> bool:
    """Whether a program falls into the split's share (a stable hash: the same program always decides alike)."""
    return int(hashlib.sha256(fingerprint.encode()).hexdigest()[:8], 16) % every == 0


class Splitter:
    """Decides, for the admitted proposals of one step or seed round, which go to the split."""

    def __init__(self, store: Store, cfg: SelfPlayConfig):
        self.store = store
        self.cfg = cfg
        self.room = {t: cfg.heldout_size - counts(store).get(t, 0) for t in cfg.task_types}
        self.buffered: set[str] | None = None  # read only once a candidate is drawn: a frozen split needs none

    def take(self, triplet: Triplet, fingerprint: str) -> bool:
        task_type = triplet.task_type
        if self.room.get(task_type, 0) <= 0 or not draws(fingerprint, self.cfg.heldout_every):
            return False
        if task_type != "induction" and fingerprint in self._buffered():
            return False
        self.room[task_type] -= 1
        return True

    def _buffered(self) -> set[str]:
        if self.buffered is None:
            self.buffered = {r["fingerprint"] for r in self.store.query(
                "SELECT t.fingerprint FROM buffers b JOIN tasks t ON t.id = b.task_id")}
        return self.buffered
