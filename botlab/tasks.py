"""The task triplet every part of botlab passes around: a program, its inputs and their gold outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from botlab.config import TASK_TYPES, TaskType

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


# Induction shows several inputs (the first selfplay.induction_inputs) and a message; the sandbox gives the outputs.
ZERO_INDUCTION_INPUTS = ["'Hello world'", "[1, 2]", "7", "'abc'", "(3, 'x')", "{'k': 1}", "-2", "''", "[[0]]", "True"]
ZERO_INDUCTION_MESSAGE = "The function gives back exactly what it receives."


def output_kind(output: str) -> str:
    """What kind of value a canonical output repr spells: str, list, tuple, dict, set, bool, number, none or other.
    Read from the text (never evaluated): draws by kind (selfplay.draw) need nothing more."""
    text = output.strip()
    if not text:
        return "other"
    if text[0] in ("'", '"'):
        return "str"
    if text[0] in ("[", "("):
        return "list" if text[0] == "[" else "tuple"
    if text[0] == "{":
        return "set" if text != "{}" and ":" not in text else "dict"  # a set of strings holding ':' reads as a dict
    if text in ("True", "False"):
        return "bool"
    if text == "None":
        return "none"
    if text[0].isdigit() or text[0] in "-." or text in ("inf", "nan"):
        return "number"
    return "other"


def zero_triplet(task_type: TaskType, induction_inputs: int = len(ZERO_INDUCTION_INPUTS)) -> Triplet:
    if task_type == "induction":
        return Triplet(ZERO_PROGRAM, ZERO_INDUCTION_INPUTS[:induction_inputs], [], ZERO_INDUCTION_MESSAGE, task_type)
    return Triplet(ZERO_PROGRAM, [ZERO_INPUT], [ZERO_OUTPUT], task_type=task_type)


def check_task_type(task_type: str) -> None:
    """A task type the caller passed must be one of TASK_TYPES."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type must be one of {', '.join(TASK_TYPES)}, not {task_type!r}")
