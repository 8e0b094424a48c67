"""The proposer role: prompts that ask the policy for new tasks, and the parser of its answers.

Deduction and abduction: the proposer writes a program f and one input (a ```python block, then an ```input block),
shown K reference triplets it must differ from, the team's goal and the curriculum's focus and difficulty nudge.
Induction: the proposer is given a program (from the deduction/abduction buffers) and writes `induction_inputs`
calls of f, one per line in a ```python block (```input blocks holding the arguments are read too), plus a ```message
hinting at f; the solver later sees the first `induction_visible` pairs.

Parsing rules (see agents/blocks.py for the block format and why <think> is optional):
- program: the FIRST code block (```python, or an untagged block with a top-level def). First, because small models
  tend to repeat themselves after a good answer; the first is the one they meant.
- the entry function becomes f (agents.blocks.entry_program: several top-level functions without an f are ambiguous).
- deduction/abduction input: the FIRST ```input block (or untagged block without a def).
- induction inputs: the arguments of every `f(...)` line of a calls block (a ```python or untagged block whose lines
  all call f) and every ```input block (or other untagged block without a def), in order; duplicates (same arguments
  up to formatting) are dropped; the first `induction_inputs` distinct ones are kept, fewer is "too_few_inputs".
- induction message: the FIRST ```message block; it must not quote the program ("message_leaks_code").
Every failure has a machine-readable `reason`; `detail` says what exactly, for logs and the digest.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from botlab.agents.blocks import Block, Blocks, CodeProblem, answer_region, check_arguments, defines_function
from botlab.agents.blocks import entry_program, split_blocks
from botlab.agents.priming import Segment
from botlab.agents.pyast import input_key, parse_or_none
from botlab.agents.prompts import chat, load_prompts, render
from botlab.config import SelfPlayConfig, TaskType
from botlab.curriculum import Curriculum
from botlab.tasks import Triplet, check_task_type

# Program lines at least this long that reappear in an induction message count as quoting the code.
_LEAK_MIN_CHARS = 12
_DEF = re.compile(r"\bdef\s+\w+\s*\(")


@dataclass
class ProposalParse:
    program: str = ""
    inputs: list[str] = field(default_factory=list)
    message: str = ""
    reason: str | None = None  # None when the proposal parsed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def _fail(reason: str, detail: str) -> ProposalParse:
    return ProposalParse(reason=reason, detail=detail)


_CALL_LINE = re.compile(r"^\s*f\s*\(")

# Primed replies (roles.proposer.prime_answer, see agents/priming.py). Deduction and abduction: the program, then
# its input, each part ending at its block's closing fence. Induction: each call of f is its own one-line part (a
# small model writes two or three calls and wanders off), then the message.
_PROGRAM_AND_INPUT = [Segment("```python\ndef f(", "```"), Segment("\n```input\n", "```", max_tokens=64)]
_CALL_TOKENS = 48
_MESSAGE_TOKENS = 48


class Proposer:
    def __init__(self, selfplay_cfg: SelfPlayConfig, goal: str = ""):
        self.cfg = selfplay_cfg
        self.goal = goal.strip()
        self.prompts = load_prompts("proposer")

    # --- prompts -----------------------------------------------------------------------------------------------------

    def messages(
        self, task_type: TaskType, references: list[Triplet], curriculum: Curriculum | None = None, topic: str = ""
    ) -> list[dict]:
        """Chat messages asking for one proposal.

        Deduction/abduction: `references` are the K triplets to show (their first input and output); `topic` (one of
        selfplay.topics) is asked for when the curriculum has no focus topics.
        Induction: `references[0]` is the program to write inputs for; further references are not shown.
        """
        check_task_type(task_type)
        curriculum = curriculum or Curriculum()
        if task_type == "induction":
            if not references:
                raise ValueError("induction proposals need the program to probe as references[0]")
            user = render(
                self.prompts["induction"],
                program=references[0].program,
                n=self.cfg.induction_inputs,
                visible=self.cfg.induction_visible,
                difficulty=self.prompts["induction_difficulty_lines"].get(curriculum.difficulty_for(task_type), ""),
            )
        else:
            user = render(
                self.prompts["program"],
                task=self.prompts["program_task"][task_type],
                goal=self.goal,
                focus=", ".join(curriculum.topics) or topic,
                difficulty=self.prompts["difficulty_lines"].get(curriculum.difficulty_for(task_type), ""),
                references=[r for r in references if r.inputs and r.outputs],
            )
        return chat(self.prompts["system"], user)

    def revision_messages(self, messages: list[dict], reply: str, reason: str, detail: str = "") -> list[dict]:
        """The conversation after a failed proposal: its reply, then why it failed (roles.proposer.revise)."""
        verdict = reason.replace("_", " ") + (f" ({detail.strip()[:200]})" if detail.strip() else "")
        return [*messages, {"role": "assistant", "content": reply},
                {"role": "user", "content": render(self.prompts["revise"], verdict=verdict)}]

    def call_messages(self, program: str, n: int) -> tuple[list[dict], list[Segment]]:
        """Messages asking for `n` calls of `program`, and the primed reply (one call per line): how a seed round
        gets inputs for a program whose own input failed (selfplay.seed_call_inputs)."""
        calls = [Segment("f(", "\n", max_tokens=_CALL_TOKENS)] * (n - 1)
        user = render(self.prompts["calls"], program=program, n=n, parameters=_parameters_of_f(program))
        return chat(self.prompts["system"], user), [Segment("```python\nf(", "\n", max_tokens=_CALL_TOKENS), *calls]

    def primed(self, task_type: TaskType) -> list[Segment]:
        """The reply's parts when the team primes answers (roles.proposer.prime_answer)."""
        check_task_type(task_type)
        if task_type != "induction":
            return _PROGRAM_AND_INPUT
        calls = [Segment("f(", "\n", max_tokens=_CALL_TOKENS)] * (self.cfg.induction_inputs - 1)
        return [Segment("```python\nf(", "\n", max_tokens=_CALL_TOKENS), *calls,
                Segment("```\n```message\n", "```", max_tokens=_MESSAGE_TOKENS)]

    # --- parsing -----------------------------------------------------------------------------------------------------

    def parse(self, task_type: TaskType, completion_text: str, program: str | None = None) -> ProposalParse:
        """Read a proposal. For induction, pass the probed `program` to catch a message that quotes it."""
        check_task_type(task_type)
        if not completion_text.strip():
            return _fail("empty_completion", "the completion is empty")
        region, reason = answer_region(completion_text)
        if reason:
            return _fail(reason, "<think> was opened and never closed")
        blocks = split_blocks(region)
        if task_type == "induction":
            return self._parse_induction(blocks, program)
        return self._parse_program_and_input(blocks)

    def read_program(self, completion_text: str) -> str | None:
        """The program of a deduction/abduction reply whatever became of its input, or None."""
        region, reason = answer_region(completion_text)
        codes = _code_blocks(split_blocks(region)) if not reason else []
        try:
            return entry_program(codes[0]) if codes and codes[0].strip() else None
        except CodeProblem:
            return None

    @staticmethod
    def read_calls(completion_text: str) -> list[str]:
        """The arguments of each line of the text that is one call of f, in order, without repeats."""
        found: dict[str, str] = {}
        for line in completion_text.splitlines():
            text = _call_arguments(line) if _CALL_LINE.match(line) else None
            if text and text.strip() and not check_arguments(text):
                found.setdefault(input_key(text), text.strip())
        return list(found.values())

    def _parse_program_and_input(self, blocks: Blocks) -> ProposalParse:
        codes = _code_blocks(blocks)
        if not codes:
            return _missing(blocks, "no_code_block", "no ```python block")
        if not codes[0].strip():
            return _fail("empty_program", "the ```python block is empty")
        try:
            program = entry_program(codes[0])
        except CodeProblem as e:
            return _fail(e.reason, e.detail)
        inputs = _input_blocks(blocks)
        if not inputs:
            return _missing(blocks, "no_input_block", "no ```input block")
        if not inputs[0].strip():
            return _fail("empty_input", "the ```input block is empty")
        problem = check_arguments(inputs[0])
        if problem:
            return _fail("input_syntax_error", problem[1])
        return ProposalParse(program=program, inputs=[inputs[0].strip()])

    def _parse_induction(self, blocks: Blocks, program: str | None) -> ProposalParse:
        wanted = self.cfg.induction_inputs
        inputs: list[str] = []
        seen: set[str] = set()
        for n, text in enumerate(_induction_inputs(blocks), start=1):
            if text is None:
                return _fail("input_syntax_error", f"input {n}: the line is not one call of f")
            if not text.strip():
                continue
            problem = check_arguments(text)
            if problem:
                return _fail("input_syntax_error", f"input {n}: {problem[1]}")
            key = input_key(text)
            if key not in seen:
                seen.add(key)
                inputs.append(text.strip())
        if len(inputs) < wanted:
            return _missing(blocks, "too_few_inputs", f"{len(inputs)} distinct inputs, {wanted} needed")
        messages = blocks.of_kind("message")
        if not messages:
            return _missing(blocks, "no_message_block", "no ```message block")
        message = messages[0].text.strip()
        if not message:
            return _fail("empty_message", "the ```message block is empty")
        if program and _quotes_code(message, program):
            return _fail("message_leaks_code", "the message quotes the program")
        return ProposalParse(program=program or "", inputs=inputs[:wanted], message=message)


def _parameters_of_f(program: str) -> list[str]:
    """The names of f's positional parameters (an example call in the prompt would fix their number instead)."""
    tree = parse_or_none(program)
    for node in tree.body if tree else []:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "f":
            return [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
    return []


def _missing(blocks: Blocks, reason: str, detail: str) -> ProposalParse:
    """A required block is missing; if one was left open at the end, the completion was cut off."""
    if blocks.unclosed:
        return _fail("unclosed_block", f"{detail} (a block was left open)")
    return _fail(reason, detail)


def _code_blocks(blocks: Blocks) -> list[str]:
    return [b.text for b in blocks.blocks if b.kind == "python" or (b.kind == "" and defines_function(b.text))]


def _input_blocks(blocks: Blocks) -> list[str]:
    return [b.text for b in blocks.blocks if _is_input(b)]


def _is_input(block: Block) -> bool:
    return block.kind == "input" or (block.kind == "" and not defines_function(block.text))


def _induction_inputs(blocks: Blocks) -> list[str | None]:
    """Argument texts in order: each line of a calls block, each ```input (or untagged non-code) block.
    None stands for a calls-block line that is not one call of f."""
    found: list[str | None] = []
    for b in blocks.blocks:
        lines = [line for line in b.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if b.kind in ("python", "", "input") and lines and all(_CALL_LINE.match(line) for line in lines):
            found += [_call_arguments(line) for line in lines]
        elif _is_input(b):
            found.append(b.text)
    return found


def _call_arguments(line: str) -> str | None:
    """The arguments of a line `f(ARGS)  # comment`, or None when the line is not one call."""
    tree = parse_or_none(line.strip())
    node = tree.body[0] if tree is not None and len(tree.body) == 1 else None
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)):
        return None
    call = ast.get_source_segment(line.strip(), node.value)
    return call[call.index("(") + 1 : -1]


def _quotes_code(message: str, program: str) -> bool:
    if _DEF.search(message):
        return True
    flat = " ".join(message.split())
    for line in program.splitlines():
        line = " ".join(line.split())
        if len(line) >= _LEAK_MIN_CHARS and not line.startswith("#") and line in flat:
            return True
    return False
