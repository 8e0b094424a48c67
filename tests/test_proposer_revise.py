"""roles.proposer.revise: a proposal that failed gets a second turn with the verdict, on the real model and sandbox."""

from __future__ import annotations

import pytest

from botlab.config import TeamConfig
from botlab.engines import Completion
from botlab.selfplay.generation import Sample
from botlab.selfplay.proposals import read_proposal
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store

pytestmark = pytest.mark.slow


def reply(selfplay: SelfPlay, text: str, prompt) -> Sample:
    ids = selfplay.engine.tokenizer.encode(text, add_special_tokens=False)
    return Sample("proposer", prompt[0], selfplay.engine.chat_prompt_ids(prompt[1]), prompt[1][-1]["content"],
                  Completion(text=text, token_ids=ids, logprobs=[-1.0] * len(ids), finish_reason="stop"), 0.7)


def test_a_failed_proposal_is_asked_again_with_its_verdict(tmp_path, transformers_engine, sandbox):
    team = TeamConfig(name="revise", storage_dir=tmp_path,
                      roles={"proposer": {"revise": True, "temperature": 0.7, "max_new_tokens": 64}})
    with open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        selfplay.ensure_zero_triplets()
        messages = selfplay.proposer.messages("deduction", [])
        prompt = ("deduction", messages, [])
        raises = read_proposal(selfplay.proposer, prompt, None,
                               reply(selfplay, "```python\ndef f(x):\n    return x / 0\n```\n```input\n3\n```", prompt))
        fine = read_proposal(selfplay.proposer, prompt, None,
                             reply(selfplay, "```python\ndef f(x):\n    return x + 1\n```\n```input\n3\n```", prompt))
        selfplay._validate([raises, fine])
        assert (raises.valid, raises.reason, fine.valid) == (False, "exception", True)
        assert "ZeroDivisionError" in raises.detail

        [revision] = selfplay._revise([raises, fine])  # only the failed one is asked again
    assert revision.revision and revision.prompt[0] == "deduction"
    conversation = revision.prompt[1]
    assert conversation[:-2] == messages and conversation[-2] == {"role": "assistant", "content": raises.sample.text}
    assert conversation[-1]["content"].startswith("That did not work: exception (") and "ZeroDivisionError" in \
        conversation[-1]["content"]
    # The revision is trained on as a turn of that conversation, and the sandbox has judged it.
    assert revision.sample.prompt_ids == transformers_engine.chat_prompt_ids(conversation)
    assert revision.valid or revision.reason
    # A revision is never revised again.
    assert selfplay._revise([revision]) == []
