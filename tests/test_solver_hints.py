"""selfplay.solver_hints: a deduction task whose answers were all wrong and never of its output's kind gets one answer
started with the output's first character; a right one is trained with the task's other answers, hint included."""

from __future__ import annotations

import math

import pytest

from botlab.config import TeamConfig
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store
from botlab.tasks import Triplet


def test_hints_need_primed_answers():
    with pytest.raises(ValueError, match="roles.solver.prime_answer"):
        TeamConfig(name="t", selfplay={"solver_hints": True})
    TeamConfig(name="t", selfplay={"solver_hints": True}, roles={"solver": {"prime_answer": True}})


@pytest.mark.slow
def test_a_step_hints_the_string_task_its_solver_answered_with_numbers(tmp_path, transformers_engine, sandbox):
    team = TeamConfig(
        name="hints", storage_dir=tmp_path,
        selfplay={"task_types": ["deduction"], "propose_batch": 1, "solve_batch": 2, "solver_samples": 2,
                  "heldout_size": 0, "solver_hints": True},
        roles={"proposer": {"prime_answer": True, "max_new_tokens": 16},
               # greedy: the embedded model answers the zero triplet ('Hello world') with a number, every time
               "solver": {"prime_answer": True, "temperature": 0.0, "max_new_tokens": 16}})
    with open_store(team.run_dir) as store:
        play = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        play.ensure_zero_triplets()
        assert play.seed_from_file([Triplet("def f(a):\n    return a * 2", ["4"], [], "", "deduction")])["admitted"]
        report = play.run_step(1)

    unaided = [s for s in report.solutions if "hint" not in s.reward.parts]
    hinted = [s for s in report.solutions if "hint" in s.reward.parts]
    assert {s.task.outputs[0] for s in unaided} == {"'Hello world'", "8"} and len(unaided) == 4
    assert not any(s.reward.parts["correct"] for s in unaided if s.task.outputs[0] == "'Hello world'")
    # One hinted answer, for the string task only, right, and in the task's group (the same prompt).
    [answer] = hinted
    assert answer.task.outputs[0] == "'Hello world'" and answer.reward.parts == answer.reward.parts | {
        "hint": "'", "correct": True}
    assert answer.prompt_text in {s.prompt_text for s in unaided if s.task is answer.task}
    assert report.metrics["solver/hinted_right"] == 1
    # The hint is the reply's first token, trained (no mask) with a NaN sampling log-prob: the learner's own.
    hint_ids = transformers_engine.tokenizer.encode("'", add_special_tokens=False)
    assert answer.completion.token_ids[:len(hint_ids)] == hint_ids and answer.train_mask is None
    assert all(math.isnan(x) for x in answer.completion.logprobs[:len(hint_ids)])
    assert not any(math.isnan(x) for x in answer.completion.logprobs[len(hint_ids):])
    # Solve rates count the unaided answers only.
    unaided_rate = sum(s.reward.parts["correct"] for s in unaided) / len(unaided)
    assert report.summary.solve_rates["deduction"] == pytest.approx(unaided_rate)
