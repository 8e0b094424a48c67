"""The solver role: prompts that pose a verified task to the policy, and the parser of its answers.

Deduction: f and an input are shown; the answer is the value, one ```output block.
Abduction: f and an output are shown; the answer is f's arguments, one ```input block.
Induction: the first `induction_visible` input/output pairs and the proposer's message are shown (the other pairs are
hidden tests); the answer is a program, one ```python block whose entry function becomes f.

Parsing rules (see agents/blocks.py for the block format and why <think> is optional): the answer is the LAST
complete block of the expected kind (an untagged block counts: as code when it has a top-level def, else as the
expected value/arguments; a ```python block without a def also counts as the value/arguments). Last, because a solver may draft and correct itself; the final block is its answer.
Deduction answers and abduction arguments must be values written out (agents.blocks.is_value): the sandbox
evaluates them, and an expression would let it do the solver's work ("answer_not_a_value").
Every failure has a machine-readable `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass

from botlab.agents.blocks import CodeProblem, answer_region, check_arguments, check_value, defines_function
from botlab.agents.blocks import entry_program, split_blocks
from botlab.agents.prompts import chat, load_prompts, render
from botlab.config import TASK_TYPES, SelfPlayConfig, TaskType
from botlab.tasks import Triplet

# The block kind each task type answers with, and the reason when it is missing.
ANSWER_KIND: dict[str, tuple[str, str]] = {
    "deduction": ("output", "no_output_block"),
    "abduction": ("input", "no_input_block"),
    "induction": ("python", "no_code_block"),
}


# Opening of the answer when the team primes answers (roles.solver.prime_answer); the block's closing fence is
# then the stop sequence, so a solver turn costs only the answer's tokens.
ANSWER_PREFIX = {"deduction": "```output\n", "abduction": "```input\n", "induction": "```python\ndef f("}
ANSWER_STOP = "```"


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

    def parse(self, task_type: TaskType, completion_text: str) -> AnswerParse:
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {', '.join(TASK_TYPES)}, not {task_type!r}")
        if not completion_text.strip():
            return AnswerParse(reason="empty_completion", detail="the completion is empty")
        region, reason = answer_region(completion_text)
        if reason:
            return AnswerParse(reason=reason, detail="<think> was opened and never closed")
        blocks = split_blocks(region)
        kind, missing = ANSWER_KIND[task_type]
        wants_code = kind == "python"
        candidates = [b.text for b in blocks.blocks if b.kind == kind or _counts_as(b, wants_code)]
        if not candidates:
            if blocks.unclosed:
                return AnswerParse(reason="unclosed_block", detail=f"no complete ```{kind} block (one was left open)")
            return AnswerParse(reason=missing, detail=f"no ```{kind} block")
        answer = candidates[-1].strip()
        if not answer:
            return AnswerParse(reason="empty_answer", detail=f"the ```{kind} block is empty")
        if wants_code:
            try:
                return AnswerParse(answer=entry_program(answer))
            except CodeProblem as e:
                return AnswerParse(reason=e.reason, detail=e.detail)
        problem = check_arguments(answer, values_only=True) if kind == "input" else check_value(answer)
        if problem:
            reason = "answer_syntax_error" if problem[0] == "syntax" else "answer_not_a_value"
            return AnswerParse(reason=reason, detail=problem[1])
        return AnswerParse(answer=answer)


def _counts_as(block, wants_code: bool) -> bool:
    """An untagged block is code if it defines a function, else a value. A ```python block without a def is taken
    as a value too: small models put everything in python blocks, and the value check still applies."""
    if block.kind == "":
        return defines_function(block.text) == wants_code
    return block.kind == "python" and not wants_code and not defines_function(block.text)


def _check_task(task_type: str, task: Triplet) -> None:
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type must be one of {', '.join(TASK_TYPES)}, not {task_type!r}")
    if not task.inputs or len(task.inputs) != len(task.outputs):
        raise ValueError(
            f"task {task.id!r}: needs as many outputs as inputs and at least one (got {len(task.inputs)} inputs, "
            f"{len(task.outputs)} outputs)"
        )
