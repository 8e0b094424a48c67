"""Solver answers checked in the sandbox, by value: the one place self-play, the held-out split and eval agree on.

Deduction: the answer value == the gold output. Abduction: f(answer arguments) == the gold output. Induction: the
answer program maps every hidden input to its gold output (the pairs after the first `visible`).
"""

from __future__ import annotations

from botlab.agents.solver import AnswerParse
from botlab.sandbox import Executor
from botlab.tasks import Triplet


def check_answers(executor: Executor, visible: int, items: list[tuple[Triplet, AnswerParse]]) -> list[bool]:
    """One bool per (task, parsed answer); unparsed answers are wrong. All task types in one sandbox batch."""
    correct = [False] * len(items)
    # in the order of check_all's arguments
    pending: dict[str, list[tuple[int, tuple]]] = {"deduction": [], "abduction": [], "induction": []}
    for i, (task, parsed) in enumerate(items):
        if not parsed.ok:
            continue
        if task.task_type == "deduction":
            pending["deduction"].append((i, (task.outputs[0], parsed.answer)))
        elif task.task_type == "abduction":
            pending["abduction"].append((i, (task.program, task.outputs[0], parsed.answer)))
        else:
            hidden = list(zip(task.inputs[visible:], task.outputs[visible:]))
            pending["induction"].append((i, (parsed.answer, hidden)))
    checked = executor.check_all(*([job for _, job in jobs] for jobs in pending.values()))
    for jobs, results in zip(pending.values(), checked):
        for (i, _), result in zip(jobs, results):
            correct[i] = result.correct
    return correct
