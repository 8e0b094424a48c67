"""The task triplet every part of botlab passes around: a program, its inputs and their gold outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from botlab.config import TaskType

# AZR's zero triplet: the identity function, the seed of every buffer.
ZERO_PROGRAM = "def f(a):\n    return a"
ZERO_INPUT = "'Hello world'"
ZERO_OUTPUT = "'Hello world'"


@dataclass
class Triplet:
    """A verified task. `inputs` are f's argument texts ("[1, 2], 3"); `outputs` their canonical reprs.

    Deduction and abduction use one input; induction uses several plus a `message` (the proposer's hint).
    """

    program: str
    inputs: list[str]
    outputs: list[str]
    message: str = ""
    task_type: TaskType = "deduction"
    id: int | None = None  # row id in the store's tasks table, once stored
    extra: dict = field(default_factory=dict)


def zero_triplet(task_type: TaskType) -> Triplet:
    return Triplet(ZERO_PROGRAM, [ZERO_INPUT], [ZERO_OUTPUT], task_type=task_type)
