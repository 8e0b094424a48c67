"""A self-play step with every model-using role a smolagents agent on the policy: the proposer and solver agents
(agents/role_agent.py, the proposer with its RunCandidate tool) and the reviewer's LLM pass (agents/review_agent.py).
Real embedded model, real sandbox, real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from botlab.agents.policy_model import PolicyModel
from botlab.agents.review_agent import CATEGORY_REASON
from botlab.config import TeamConfig
from botlab.selfplay.seed_file import read_seed_file
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store

pytestmark = pytest.mark.slow

SEED_FILE = Path(__file__).resolve().parents[1] / "teams" / "seeds" / "smollm2-135m.jsonl"
LLM_REASONS = {*CATEGORY_REASON.values(), "llm_reject"}


def test_a_step_with_the_reviewers_llm_pass_on_the_policy_beside_the_role_agents(
        tmp_path, transformers_engine, sandbox):
    team = TeamConfig(
        name="agents-step", storage_dir=tmp_path,
        selfplay={"task_types": ["deduction", "abduction"], "propose_batch": 2, "solve_batch": 2, "solver_samples": 2,
                  "heldout_size": 0},
        roles={"proposer": {"prime_answer": True, "temperature": 0.7, "max_new_tokens": 48},
               "solver": {"prime_answer": True, "temperature": 0.7, "max_new_tokens": 16},
               "reviewer": {"llm": True, "inputs_per_program": 3}})
    judged = []
    with open_store(team.run_dir) as store:
        play = SelfPlay(team, store, transformers_engine, sandbox, learner=None,
                        reviewer_model=PolicyModel(transformers_engine, max_tokens=32))
        judge = play.reviewer.llm.judge

        def judge_and_note(task_type, candidate, pool, rules):  # the real agent's verdict, noted on its way back
            decision, note = judge(task_type, candidate, pool, rules)
            judged.append((candidate.program, decision, note))
            return decision, note

        play.reviewer.llm.judge = judge_and_note
        play.ensure_zero_triplets()
        play.seed_from_file(read_seed_file(SEED_FILE)[:1])
        assert judged, "no seed task reached the reviewer's agent"
        before = len(judged)
        report = play.run_step(1)

    # Every proposal was run by its agent's tool; the solver agents' answers are checked and rewarded.
    assert report.proposals and all(p.reason or p.valid for p in report.proposals)
    assert report.solutions and all(s.reward is not None for s in report.solutions)
    # Each proposal the rules admitted went on to the reviewer's agent, which decided or left the rule verdict.
    passed_rules = [p for p in report.proposals if p.admitted or p.reason in LLM_REASONS]
    assert len(judged) - before == len(passed_rules)
    assert all(decision is not None or note for _, decision, note in judged)
