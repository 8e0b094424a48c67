"""The curriculum: what human feedback may change in how the team works, and nothing else.

The state lives in the store (kv key "curriculum"); the self-play loop reads it at the start of every step.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from botlab.config import TaskType
from botlab.store import Store

KV_KEY = "curriculum"


class Curriculum(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_weights: dict[TaskType, float] = Field(
        default_factory=lambda: {"deduction": 1.0, "abduction": 1.0, "induction": 1.0},
        description="relative share of proposals and solver tasks per type; 0 switches a type off",
    )
    focus: list[str] = Field(default_factory=list, description="topics/keywords the proposer is asked to work on")
    difficulty: int = Field(0, ge=-3, le=3, description="harder (+) / easier (-) nudges for the proposer")
    reviewer_rules: list[str] = Field(default_factory=list, description="extra rules for the reviewer")
    paused: bool = False


def load_curriculum(store: Store) -> Curriculum:
    raw = store.get(KV_KEY)
    return Curriculum.model_validate(raw) if raw else Curriculum()


def save_curriculum(store: Store, curriculum: Curriculum) -> None:
    store.put(KV_KEY, curriculum.model_dump())
