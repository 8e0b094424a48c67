"""The held-out split: admitted tasks set aside are never trained on, never references, never solver tasks."""

import random

import pytest

from botlab.config import TeamConfig
from botlab.curriculum import Curriculum
from botlab.engines import Completion
from botlab.selfplay import heldout
from botlab.selfplay.generation import Sample
from botlab.selfplay.proposals import Proposal
from botlab.selfplay.step import SelfPlay, StepReport
from botlab.selfplay.summary import StepSummary
from botlab.store import open_store
from botlab.tasks import Triplet
from tests.fixtures.runs import check_heldout_unseen

PROGRAMS = [
    "def f(xs):\n    return [x * 2 for x in xs]",
    "def f(s):\n    return s.upper() + '!'",
    "def f(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total",
    "def f(a, b):\n    return sorted(a + b)",
]
INPUTS = ["[1, 2]", "'ab'", "5", "[3], [1]"]


def proposal(task_type: str, program: str, input_text: str) -> Proposal:
    completion = Completion(text=program, token_ids=[1, 2, 3], logprobs=[-1.0] * 3, finish_reason="stop")
    sample = Sample("proposer", task_type, [5, 6], "prompt", completion, 0.7)
    return Proposal(sample, True, None, Triplet(program, [input_text], [], "", task_type))


def test_draw_is_stable_and_takes_about_one_in_n():
    marks = [f"{i:024x}" for i in range(4000)]
    taken = sum(heldout.draws(m, 4) for m in marks)
    assert 800 < taken < 1200
    assert [heldout.draws(m, 4) for m in marks[:50]] == [heldout.draws(m, 4) for m in marks[:50]]
    assert all(heldout.draws(m, 1) for m in marks[:50])


@pytest.mark.slow
def test_split_tasks_never_reach_buffers_samples_or_prompts(tmp_path, sandbox, transformers_engine):
    team = TeamConfig(name="h", storage_dir=tmp_path,
                      selfplay={"task_types": ["deduction", "abduction"], "heldout_size": 2, "heldout_every": 1,
                                "references": 6})
    with open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        selfplay.ensure_zero_triplets()
        proposals = [proposal("deduction", p, i) for p, i in zip(PROGRAMS, INPUTS)]
        selfplay._validate(proposals)
        assert all(p.valid for p in proposals), [p.reason for p in proposals]
        selfplay._review(proposals, Curriculum())
        assert [(p.admitted, p.heldout) for p in proposals] == [(False, True)] * 2 + [(True, False)] * 2
        for p in proposals:
            p.sample.reward = selfplay_reward()
        report = StepReport(1, summary=StepSummary(proposals=4, heldout=2, solved=0), proposals=proposals)
        selfplay.commit(report, 0.0)

        assert heldout.counts(store) == {"deduction": 2}
        assert [t.program for t in heldout.tasks(store, "deduction")] == PROGRAMS[:2]
        assert [t.outputs for t in heldout.tasks(store, "deduction")] == [["[2, 4]"], ["'AB!'"]]
        with store.transaction() as db:
            assert check_heldout_unseen(db) == 2
        # The split is frozen at heldout_size: later admitted tasks go to the buffers.
        later = [proposal("abduction", "def f(x):\n    return x % 7 + 1", "10"),
                 proposal("deduction", "def f(t):\n    return t[::-1] * 2", "'xy'")]
        selfplay._validate(later)
        selfplay._review(later, Curriculum())
        assert [(p.admitted, p.heldout) for p in later] == [(False, True), (True, False)]
        # Proposing a held-out program again (in any task type) is a duplicate, not a way into training.
        again = [proposal("abduction", PROGRAMS[0], "[0]"), proposal("deduction", PROGRAMS[1] + "  # same", "'q'")]
        selfplay._validate(again)
        selfplay._review(again, Curriculum())
        assert [p.reason for p in again] == ["exact_duplicate", "exact_duplicate"]
        # No draw of references, solver tasks or induction programs ever returns a held-out task.
        held_ids = {t.id for t in heldout.tasks(store, "deduction")}
        rng = random.Random(0)
        for _ in range(50):
            drawn = selfplay.buffers.references("deduction", 6, rng) + selfplay.buffers.solver_batch("deduction", 6, rng)
            drawn.append(selfplay.buffers.program_for_induction(rng))
            assert not {t.id for t in drawn} & held_ids


def selfplay_reward():
    from botlab.selfplay.rewards import Reward

    return Reward(-0.5, {"parsed": True})

