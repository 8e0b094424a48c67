"""selfplay.topics: one building block per program proposal, drawn by the loop; the human's focus topics win."""

from __future__ import annotations

import random

import pytest

from botlab.agents.proposer import Proposer
from botlab.config import SelfPlayConfig, TeamConfig
from botlab.curriculum import Curriculum
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store

TOPICS = ["a while loop", "a dict", "string slicing"]


def test_a_topic_is_asked_for_unless_the_curriculum_has_focus_topics():
    proposer = Proposer(SelfPlayConfig(topics=TOPICS))
    plain = proposer.messages("deduction", [], Curriculum(), topic="a dict")[-1]["content"]
    assert "Focus on: a dict\n" in plain
    focused = proposer.messages("deduction", [], Curriculum(focus=["recursion"]), topic="a dict")[-1]["content"]
    assert "Focus on: recursion\n" in focused and "a dict" not in focused


@pytest.mark.slow
def test_each_program_proposal_gets_a_topic_of_the_team_file(tmp_path, transformers_engine, sandbox):
    team = TeamConfig(name="topics", storage_dir=tmp_path,
                      selfplay={"task_types": ["deduction", "abduction"], "propose_batch": 4, "topics": TOPICS},
                      roles={"proposer": {"prime_answer": True, "max_new_tokens": 16}})
    with open_store(team.run_dir) as store:
        play = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        play.ensure_zero_triplets()
        proposals, _ = play._propose(Curriculum(), random.Random(0))
    asked = [next(t for t in TOPICS if f"Focus on: {t}\n" in p.sample.prompt_text) for p in proposals]
    assert len(asked) == 8 and len(set(asked)) > 1  # every prompt names one; they are drawn, not fixed
