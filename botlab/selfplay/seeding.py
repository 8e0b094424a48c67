"""Seed rounds only: a program that failed on its own input gets its input from calls of f the model writes.

The untrained 135M model writes fair programs (`def f(a, b): return a * b`) under the input it copied from the zero
triplet ('Hello world'), so most of its seed proposals fail in the sandbox for the input alone. Asked for calls of
its program (the program right above, its parameters in view), it writes arguments that fit. Like AZR's seeding
clean-up (it strips comments and what follows the function), this only shapes the seed set: nothing in a seed round
is trained, and self-play steps judge each proposal as written. Switched by selfplay.seed_call_inputs.
"""

from __future__ import annotations

from botlab.agents.proposer import Proposer
from botlab.config import SamplingConfig
from botlab.sandbox import Executor
from botlab.selfplay.generation import Generator
from botlab.selfplay.proposals import Proposal
from botlab.tasks import Triplet

CALLS = 3  # calls asked per program; the first that runs becomes its input
_INPUT_FAILURES = {"exception", "empty_input", "no_input_block", "input_syntax_error", "unclosed_block",
                   "none_output"}


def inputs_from_calls(proposer: Proposer, generator: Generator, executor: Executor, proposals: list[Proposal],
                      role_cfg: SamplingConfig) -> int:
    """Give each deduction/abduction proposal that failed for its input the first of the model's calls of its
    program that the sandbox validates. Returns how many were mended; the others keep their verdict."""
    todo: list[tuple[Proposal, str]] = []
    for p in proposals:
        task_type = p.sample.task_type
        if p.valid or task_type == "induction" or p.reason not in _INPUT_FAILURES:
            continue
        program = p.triplet.program if p.triplet else proposer.read_program(p.sample.text)
        if program:
            todo.append((p, program))
    if not todo:
        return 0
    prompts = [(p.sample.task_type, *proposer.call_messages(program, CALLS)) for p, program in todo]
    replies = generator.generate("proposer", prompts, role_cfg, n=1)
    candidates = [(i, program, args) for i, ((_, program), [reply]) in enumerate(zip(todo, replies))
                  for args in proposer.read_calls(reply.text)]
    results = executor.validate_many([(program, [args]) for _, program, args in candidates])
    mended: set[int] = set()
    for (i, program, args), result in zip(candidates, results):
        if i in mended or not result.valid:
            continue
        mended.add(i)
        p = todo[i][0]
        p.triplet = Triplet(program, [args], result.outputs, "", p.sample.task_type)
        p.parse_ok, p.valid, p.reason = True, True, None
        p.detail = "input from a call of f the model wrote (seed round)"
    return len(mended)
