"""A step's rows in the store: each proposal as a task (an admitted one joins its type's buffer), each trained sample
with its reward. Written inside the step's commit transaction."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from typing import TYPE_CHECKING

from botlab.agents.reviewer import fingerprint
from botlab.selfplay import heldout
from botlab.selfplay.buffers import PROGRAM_TYPES, Buffers, insert_task
from botlab.selfplay.generation import Sample

if TYPE_CHECKING:
    from botlab.selfplay.proposals import Proposal

PROMPT_CHARS = 4000  # the end of the prompt is kept (the references come first; the task last)


def store_proposal(db: sqlite3.Connection, buffers: Buffers, step: int, p: Proposal, shared_seed: bool = False
                   ) -> None:
    """A parsed proposal becomes a task row (admitted, held out, rejected or invalid); its sample points to it.
    `shared_seed` (seed rounds): an admitted deduction or abduction task joins both buffers, as AZR's seed set
    starts both (a program and its input make either task)."""
    if p.triplet is None:
        p.sample.task = None
        return
    status = "admitted" if p.admitted else heldout.STATUS if p.heldout else "rejected" if p.valid else "invalid"
    learn = None if p.solve_rate is None else 1.0 - p.solve_rate
    task_id = insert_task(db, step, p.triplet, status, p.reason, learn, fingerprint(p.triplet.program))
    p.triplet.id = task_id
    p.sample.task = p.triplet
    if not p.admitted:
        return
    buffers.add(db, p.triplet.task_type, task_id, step)
    if shared_seed and p.triplet.task_type in PROGRAM_TYPES:
        for other in PROGRAM_TYPES:
            if other != p.triplet.task_type and other in buffers.cfg.task_types:
                twin = replace(p.triplet, task_type=other, id=None)  # a row of its own type, as every buffer entry
                buffers.add(db, other, insert_task(db, step, twin, status, None, None, fingerprint(twin.program)),
                            step)


def insert_sample(db: sqlite3.Connection, step: int, s: Sample) -> None:
    db.execute(
        "INSERT INTO samples(step, role, task_type, task_id, prompt, completion, reward, parts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (step, s.role, s.task_type, s.task.id if s.task else None, s.prompt_text[-PROMPT_CHARS:], s.text,
         s.reward.value, json.dumps(s.reward.parts, default=str)),
    )
