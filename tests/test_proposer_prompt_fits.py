"""Proposer prompts keep room for the reply: references are dropped, longest first, until the prompt fits."""

import pytest

from botlab.config import TeamConfig
from botlab.curriculum import Curriculum
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store
from botlab.tasks import Triplet


@pytest.mark.slow
def test_proposer_prompts_drop_references_until_the_reply_fits(tmp_path, sandbox, transformers_engine):
    """As AZR resamples a prompt that is too long: the longest references go first; a bare prompt that cannot fit
    (an induction program longer than the context) is left out instead of failing the step."""
    team = TeamConfig(name="f", storage_dir=tmp_path)
    long_program = "def f(x):\n" + "".join(f"    x = x + {i}  # step {i} of a long walk\n" for i in range(40)) + \
        "    return x"
    short = Triplet("def f(x):\n    return x * 2", ["3"], ["6"], task_type="deduction")
    long = Triplet(long_program, ["1"], ["781"], task_type="deduction")
    with open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        budget = 96
        messages = selfplay._fitting_messages("deduction", [long, short, long], Curriculum(), budget)
        assert len(transformers_engine.chat_prompt_ids(messages)) + budget < transformers_engine.max_model_len
        assert "return x * 2" in messages[-1]["content"]  # the short reference stays
        assert selfplay._fitting_messages("deduction", [short], Curriculum(), budget) is not None
        huge = Triplet(long_program * 3, ["1"], ["1"], task_type="induction")
        assert selfplay._fitting_messages("induction", [huge], Curriculum(), budget) is None
