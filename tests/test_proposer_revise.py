"""The proposer's RunCandidate tool (agents/role_agent.py) and roles.proposer.revise: each reply is run in the sandbox
by its agent's tool; a failed one gets a second turn with the verdict. Real model, real sandbox."""

from __future__ import annotations

import random

import pytest

from botlab.config import TeamConfig
from botlab.curriculum import Curriculum
from botlab.engines import Completion
from botlab.selfplay.generation import Sample
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store

pytestmark = pytest.mark.slow


def reply(selfplay: SelfPlay, text: str, prompt) -> Sample:
    ids = selfplay.engine.tokenizer.encode(text, add_special_tokens=False)
    return Sample("proposer", prompt[0], selfplay.engine.chat_prompt_ids(prompt[1]), prompt[1][-1]["content"],
                  Completion(text=text, token_ids=ids, logprobs=[-1.0] * len(ids), finish_reason="stop"), 0.7)


def team(tmp_path, revise: bool, max_new_tokens: int = 64) -> TeamConfig:
    return TeamConfig(name="revise", storage_dir=tmp_path,
                      selfplay={"task_types": ["deduction", "abduction"], "propose_batch": 2},
                      roles={"proposer": {"revise": revise, "temperature": 0.7, "max_new_tokens": max_new_tokens}})


def test_the_tool_runs_each_reply_and_hands_a_failed_first_turn_its_verdict(tmp_path, transformers_engine, sandbox):
    with open_store(tmp_path / "run") as store:
        selfplay = SelfPlay(team(tmp_path, revise=True), store, transformers_engine, sandbox, learner=None)
        messages = selfplay.proposer.messages("deduction", [])
        prompt = ("deduction", messages, [])
        raises = reply(selfplay, "```python\ndef f(x):\n    return x / 0\n```\n```input\n3\n```", prompt)
        fine = reply(selfplay, "```python\ndef f(x):\n    return x + 1\n```\n```input\n3\n```", prompt)
        turns = [(0, messages, [raises], 1), (1, messages, [fine], 1), (0, messages, [raises], 2)]
        verdicts = selfplay._run_candidates([prompt, prompt], [None, None], turns, selfplay.team.roles.proposer)
    (failed, again), (valid, none), (revision, never) = verdicts
    assert (failed.valid, failed.reason, valid.valid, valid.triplet.outputs) == (False, "exception", True, ["4"])
    assert "ZeroDivisionError" in failed.detail
    assert none is None and never is None  # a valid proposal and a second turn are not asked again
    assert revision.revision and not failed.revision
    assert again[:-2] == messages and again[-2] == {"role": "assistant", "content": raises.text}
    assert again[-1]["content"].startswith("That did not work: exception (") and "ZeroDivisionError" in \
        again[-1]["content"]


@pytest.mark.parametrize("revise", [True, False])
def test_every_failed_proposal_is_revised_in_the_step_round_only_when_the_team_says_so(
        tmp_path, transformers_engine, sandbox, revise):
    # Eight tokens never hold a program and its input: every first turn fails.
    with open_store(tmp_path / "run") as store:
        selfplay = SelfPlay(team(tmp_path, revise, max_new_tokens=8), store, transformers_engine, sandbox,
                            learner=None)
        selfplay.ensure_zero_triplets()
        timings, sandbox_calls = {}, []
        validate_many = sandbox.validate_many
        sandbox.validate_many = lambda jobs: sandbox_calls.append(len(jobs)) or validate_many(jobs)
        try:
            proposals, _ = selfplay._propose(Curriculum(), random.Random(0), timings=timings)
        finally:
            del sandbox.validate_many  # the executor's own method again
    first = [p for p in proposals if not p.revision]
    revisions = [p for p in proposals if p.revision]
    assert len(first) == 4 and not any(p.valid for p in first) and timings["validate"] > 0
    assert len(revisions) == (4 if revise else 0)
    # The agents' tool runs each round's candidates in one sandbox call (none parse here, so none is run).
    assert sandbox_calls == ([0, 0] if revise else [0])
    for p in revisions:
        # trained as a turn of its conversation: the first reply, then the verdict
        conversation = p.prompt[1]
        assert conversation[-2]["role"] == "assistant" and conversation[-1]["content"].startswith("That did not work")
        assert p.sample.prompt_ids == transformers_engine.chat_prompt_ids(conversation)
