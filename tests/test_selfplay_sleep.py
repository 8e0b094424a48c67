"""The step puts the rollout engine to sleep while the learner trains and wakes it for the weight sync.

vLLM's sleep mode needs a GPU (its CPU backend has none), so the engine here is the real transformers engine with
its sleep and wake-up recorded and enforced by a subclass: a fake only for what cannot happen for real on CPU.
Everything else is real: the step, the sandbox, the store and the learner (on a tiny model, to keep it quick).
"""

from __future__ import annotations

import pytest

from botlab.config import ModelConfig, TeamConfig
from botlab.engines import EngineError
from botlab.engines.transformers_engine import TransformersEngine
from botlab.selfplay.learner import Learner
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store

pytestmark = pytest.mark.slow


class SleepyEngine(TransformersEngine):
    """Records the calls the step makes and refuses, as vLLM does, to be used while asleep."""

    name = "sleepy"  # built without the learner's module (shares_learner False): the step syncs into it as into vLLM
    can_sleep = True

    def __init__(self, *args, events: list[str]):
        super().__init__(*args)
        self.events = events
        self.asleep = False

    def sleep(self) -> None:
        self.events.append("sleep")
        self.asleep = True

    def wake_up(self) -> None:
        self.events.append("wake_up")
        self.asleep = False

    def _generate(self, prompts, sampling):
        if self.asleep:
            raise EngineError("generate while asleep")
        self.events.append("generate")
        return super()._generate(prompts, sampling)

    def _load_weights(self, named_tensors) -> None:
        if self.asleep:
            raise EngineError("load_weights while asleep")
        self.events.append("load_weights")
        super()._load_weights(named_tensors)


class RecordedLearner(Learner):
    def __init__(self, *args, events: list[str]):
        super().__init__(*args)
        self.events = events

    def train_step(self, rollouts, **kwargs):
        self.events.append("train_step")
        return super().train_step(rollouts, **kwargs)


def test_the_engine_sleeps_through_learning_and_wakes_for_the_sync(tmp_path, sandbox, tiny_llama_dir):
    team = TeamConfig(
        name="sleep", storage_dir=tmp_path, model={"name": str(tiny_llama_dir), "sleep_mode": True},
        roles={"proposer": {"max_new_tokens": 16}, "solver": {"max_new_tokens": 16}},
        selfplay={"task_types": ["deduction"], "propose_batch": 1, "solve_batch": 1, "references": 1,
                  "learnability_rollouts": 2},
        train={"entropy_coef": 0.001},  # an update even when every reward is equal (zero advantages)
    )
    events: list[str] = []
    learner = RecordedLearner(tiny_llama_dir, team.model, team.train, events=events)
    engine = SleepyEngine(ModelConfig(engine="transformers"), tiny_llama_dir, events=events)
    with open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, engine, sandbox, learner)
        selfplay.ensure_zero_triplets()
        selfplay.run_step(1, on_phase=lambda phase: events.append(f"phase {phase}"))
    learn = events.index("phase learn")
    assert "generate" in events[:learn]
    assert events[learn:] == ["phase learn", "sleep", "train_step", "phase sync", "wake_up", "load_weights"]
    assert not engine.asleep
