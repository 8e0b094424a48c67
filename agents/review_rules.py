"""The reviewer's rule checks on one candidate: safety red flags and trivial programs.

Duplicates need the buffer and live in agents/reviewer.py. These checks read programs as text and AST only; the
candidate has already run in the sandbox, which is what gave it its outputs.
"""

from __future__ import annotations

import ast
import re

from botlab.agents.pyast import PARSE_ERRORS, is_docstring, parse_or_none
from botlab.tasks import Triplet


def safety_flags(candidate: Triplet, patterns: dict[str, str]) -> list[str]:
    """Names of the red-flag patterns found in the program or the message.

    A program the sandbox ran without harm can still be probing it (dunder walks, dynamic code, system modules) or
    announce intentions in a comment; such tasks never enter a buffer, where they would be copied and refined.
    """
    text = candidate.program + "\n" + candidate.message
    return [name for name, pattern in patterns.items() if re.search(pattern, text)]


def trivial_reason(task_type: str, candidate: Triplet) -> tuple[str, str] | None:
    """(reason, detail) when the task can be solved without reasoning, else None."""
    entry = _entry(candidate.program)
    if entry is not None:
        params = _parameters(entry)
        body = [s for s in entry.body if not is_docstring(s)]
        if (
            len(body) == 1
            and isinstance(body[0], ast.Return)
            and isinstance(body[0].value, ast.Name)
            and body[0].value.id in params
        ):
            return "identity", f"f returns its argument {body[0].value.id!r} unchanged"
        if not params & _names_read(entry):
            return "constant_output", "f never reads its arguments, so its output cannot depend on the input"
    outputs = candidate.outputs
    if len(outputs) >= 2 and len(set(outputs)) == 1:
        return "constant_output", f"all {len(outputs)} outputs are {outputs[0][:60]}"
    if outputs and all(_same_value(i, o) for i, o in zip(candidate.inputs, outputs)):
        what = "the output equals the input" if len(outputs) == 1 else f"all {len(outputs)} outputs equal their inputs"
        return "output_equals_input", what
    return None


def _entry(program: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    tree = parse_or_none(program)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "f":
            return node
    return None


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    a = fn.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]
    return {p.arg for p in params}


def _names_read(fn: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _same_value(arguments: str, output: str) -> bool:
    """Does the output read as the same expression as the input? Several arguments read as a tuple of them.

    Compared as parsed expressions (so "'a'" equals '"a"' and "[1,2]" equals "[1, 2]"); nothing is evaluated.
    """
    try:
        return ast.dump(ast.parse(f"({arguments}\n)", mode="eval")) == ast.dump(ast.parse(f"({output}\n)", mode="eval"))
    except PARSE_ERRORS:  # ast.dump recurses too: keep it inside the guard
        return False
