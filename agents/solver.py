"""The solver role: prompts that pose a verified task to the policy, and the parser of its answers.

Deduction: f and an input are shown; the answer is the value, completing `assert f(INPUT) == VALUE`.
Abduction: f and an output are shown; the answer is f's arguments, completing `assert f(ARGS) == OUTPUT`.
Induction: the first `induction_visible` input/output pairs and the proposer's message are shown (the other pairs are
hidden tests); the answer is a program, one ```python block whose entry function becomes f.

Parsing rules (see agents/blocks.py for the block format and why <think> is optional): the answer is the LAST
complete block of the expected kind. Deduction and abduction read the last `assert f(...) == ...` line of a ```python
(or untagged) block; an ```output / ```input block, or a block holding just the value, is read as the value/arguments
too. Induction reads a ```python block (an untagged one with a top-level def counts). Last, because a solver may draft
and correct itself; the final block is its answer.
Deduction answers and abduction arguments must be values written out (agents.blocks.is_value): the sandbox
evaluates them, and an expression would let it do the solver's work ("answer_not_a_value").
Every failure has a machine-readable `reason`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from botlab.agents.blocks import MAX_CODE_CHARS, CodeProblem, answer_region, check_arguments, check_value
from botlab.agents.blocks import defines_function, entry_program, split_blocks
from botlab.agents.priming import Segment
from botlab.agents.pyast import PARSE_ERRORS
from botlab.agents.prompts import chat, load_prompts, render
from botlab.config import SelfPlayConfig, TaskType
from botlab.tasks import Triplet, check_task_type

# The block kind each task type answers with, and the reason when it is missing.
ANSWER_KIND: dict[str, tuple[str, str]] = {
    "deduction": ("output", "no_output_block"),
    "abduction": ("input", "no_input_block"),
    "induction": ("python", "no_code_block"),
}

_ASSERTION = re.compile(r"^\s*assert\s+f\s*\(")


@dataclass
class AnswerParse:
    answer: str = ""  # deduction: a value expression; abduction: argument text; induction: a program defining f
    reason: str | None = None  # None when the answer parsed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


class Solver:
    def __init__(self, selfplay_cfg: SelfPlayConfig):
        self.cfg = selfplay_cfg
        self.prompts = load_prompts("solver")

    def messages(self, task_type: TaskType, task: Triplet) -> list[dict]:
        """Chat messages posing `task`. Induction shows only the first `induction_visible` pairs."""
        _check_task(task_type, task)
        template = self.prompts[task_type]
        if task_type == "deduction":
            user = render(template, program=task.program, input=task.inputs[0])
        elif task_type == "abduction":
            user = render(template, program=task.program, output=task.outputs[0])
        else:
            visible = self.cfg.induction_visible
            pairs = list(zip(task.inputs[:visible], task.outputs[:visible]))
            user = render(template, pairs=pairs, message=task.message)
        return chat(self.prompts["system"], user)

    def primed(self, task_type: TaskType, task: Triplet) -> list[Segment]:
        """The reply's opening when the team primes answers (roles.solver.prime_answer): the model writes only the
        value, the arguments or the function, so a solver turn costs only the answer's tokens."""
        _check_task(task_type, task)
        if task_type == "deduction":
            return [Segment(f"```python\nassert f({task.inputs[0]}) == ", "\n", closing="\n```")]
        if task_type == "abduction":
            return [Segment("```python\nassert f(", "\n", closing="\n```")]
        return [Segment("```python\ndef f(", "```")]

    def parse(self, task_type: TaskType, completion_text: str) -> AnswerParse:
        check_task_type(task_type)
        if not completion_text.strip():
            return AnswerParse(reason="empty_completion", detail="the completion is empty")
        region, reason = answer_region(completion_text)
        if reason:
            return AnswerParse(reason=reason, detail="<think> was opened and never closed")
        blocks = split_blocks(region)
        kind, missing = ANSWER_KIND[task_type]
        wants_code = kind == "python"
        candidates = [b for b in blocks.blocks if b.kind == kind or _counts_as(b, wants_code)]
        if not candidates:
            if blocks.unclosed:
                return AnswerParse(reason="unclosed_block", detail=f"no complete ```{kind} block (one was left open)")
            return AnswerParse(reason=missing, detail=f"no assertion or ```{kind} block")
        answer = candidates[-1].text.strip()
        if not answer:
            return AnswerParse(reason="empty_answer", detail="the answer block is empty")
        if wants_code:
            try:
                return AnswerParse(answer=entry_program(answer))
            except CodeProblem as e:
                return AnswerParse(reason=e.reason, detail=e.detail)
        assertion = [line for line in answer.splitlines() if _ASSERTION.match(line)]
        if assertion:
            answer, problem = _from_assertion(assertion[-1].strip(), task_type)
            if problem:
                return problem
        problem = check_arguments(answer, values_only=True) if kind == "input" else check_value(answer)
        if problem:
            reason = "answer_syntax_error" if problem[0] == "syntax" else "answer_not_a_value"
            return AnswerParse(reason=reason, detail=problem[1])
        return AnswerParse(answer=answer)


def _from_assertion(line: str, task_type: str) -> tuple[str, AnswerParse | None]:
    """The value (deduction) or the arguments (abduction) of `assert f(ARGS) == VALUE`."""
    if len(line) > MAX_CODE_CHARS:
        return "", AnswerParse(reason="answer_syntax_error", detail=f"the assertion has {len(line)} characters")
    try:
        test = ast.parse(line).body[0].test
    except PARSE_ERRORS as e:
        return "", AnswerParse(reason="answer_syntax_error", detail=f"the assertion is not valid Python: {e}")
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.left, ast.Call)):
        return "", AnswerParse(reason="answer_syntax_error", detail="the assertion is not `assert f(...) == ...`")
    if task_type == "deduction":
        return ast.get_source_segment(line, test.comparators[0]), None
    call = ast.get_source_segment(line, test.left)  # "f(ARGS)", by characters (ast's offsets count bytes)
    return call[call.index("(") + 1 : -1], None


def _counts_as(block, wants_code: bool) -> bool:
    """An untagged block is code if it defines a function, else a value. A ```python block without a def is taken
    as a value too: small models put everything in python blocks, and the value check still applies."""
    if block.kind == "":
        return defines_function(block.text) == wants_code
    return block.kind == "python" and not wants_code and not defines_function(block.text)


def _check_task(task_type: str, task: Triplet) -> None:
    check_task_type(task_type)
    if not task.inputs or len(task.inputs) != len(task.outputs):
        raise ValueError(
            f"task {task.id!r}: needs as many outputs as inputs and at least one (got {len(task.inputs)} inputs, "
            f"{len(task.outputs)} outputs)"
        )
