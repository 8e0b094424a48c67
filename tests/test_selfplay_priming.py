"""Primed replies in the loop: the parts the loop opens are in the trained sequence with a zero mask, and the parser
reads opening + sampled text + closing, on the real model and engine."""

from __future__ import annotations

import pytest

from botlab.config import TeamConfig
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store
from botlab.tasks import Triplet

pytestmark = pytest.mark.slow


@pytest.fixture
def selfplay(tmp_path, transformers_engine, sandbox):
    team = TeamConfig(name="priming", storage_dir=tmp_path, selfplay={"induction_inputs": 3, "induction_visible": 2},
                      roles={"proposer": {"prime_answer": True, "temperature": 0.7, "max_new_tokens": 48},
                             "solver": {"prime_answer": True, "temperature": 0.7, "max_new_tokens": 16}})
    with open_store(team.run_dir) as store:
        yield SelfPlay(team, store, transformers_engine, sandbox, learner=None)


def test_induction_proposal_parts_are_opened_by_the_loop(selfplay):
    program = Triplet("def f(n):\n    return n + 1", ["1"], ["2"], task_type="induction")
    parts = selfplay.proposer.primed("induction")
    messages = selfplay.proposer.messages("induction", [program])
    samples = [group[0] for group in selfplay.generator.generate("proposer", [("induction", messages, parts)] * 4,
                                                                 selfplay.team.roles.proposer, n=1)]
    tokenizer = selfplay.engine.tokenizer
    continued = [s for s in samples if s.train_mask]
    assert continued, "no reply reached its first stop string; the later parts were never opened"
    for s in continued:
        ids, mask = s.completion.token_ids, s.train_mask
        assert len(mask) == len(ids) == len(s.completion.logprobs)
        # Exactly the openings of the parts after the first carry mask 0 (and no rollout logprob) ...
        opened = sum(1 for a, b in zip(mask, mask[1:]) if a == 1 and b == 0)
        inserted = tokenizer.decode([t for t, m in zip(ids, mask) if m == 0])
        assert inserted == "".join(p.opening for p in parts[1 : 1 + opened])
        assert all(lp == 0.0 for lp, m in zip(s.completion.logprobs, mask) if m == 0)
        # ... and the parser reads them in the text, after the first opening (part of the prompt).
        assert s.text.startswith(parts[0].opening) and s.text.count("\nf(") >= opened - (opened == len(parts) - 1)


def test_primed_solver_answers_are_parsed_and_checked(selfplay, sandbox):
    [checked] = sandbox.validate_many([("def f(n):\n    return n + 1", ["3"])])
    task = Triplet("def f(n):\n    return n + 1", ["3"], checked.outputs, task_type="deduction")
    [group] = selfplay.generator.generate("solver", [selfplay._solver_prompt(task)], selfplay.team.roles.solver, n=8)
    for s in group:
        s.task = task
        assert s.text.startswith("```python\nassert f(3) == ")
    correct = selfplay._check(group)
    for s, ok in zip(group, correct):
        # The sandbox's verdict agrees with the parsed value: right exactly when it is 4.
        assert ok == (s.answer.ok and s.answer.answer.strip() == "4")
