"""The transformers engine: generation on the learner's own module, and weight loading into a module of its own."""

from __future__ import annotations

import pytest
import torch

from botlab.config import ModelConfig
from botlab.engines import Sampling, create_engine
from tests.fixtures.engines import perturbed, teacher_logprobs

pytestmark = pytest.mark.slow


def test_generation_leaves_the_learners_modes_and_gradients_alone(transformers_engine, engine_learner):
    prompt = transformers_engine.chat_prompt_ids([{"role": "user", "content": "Hi"}])
    sampling = Sampling(temperature=1.0, max_tokens=4, seed=0)
    modes = {name: m.training for name, m in engine_learner.named_modules()}
    try:
        for set_modes in (engine_learner.train, engine_learner.eval, lambda: _mixed(engine_learner)):
            set_modes()
            wanted = {name: m.training for name, m in engine_learner.named_modules()}
            transformers_engine.generate([prompt], sampling)
            assert {name: m.training for name, m in engine_learner.named_modules()} == wanted
        assert all(p.grad is None and p.requires_grad for p in engine_learner.parameters())
    finally:
        for name, m in engine_learner.named_modules():
            m.training = modes[name]


def _mixed(model):
    model.train()
    model.model.layers[0].eval()


def test_shared_module_reload_is_free_but_counts(transformers_engine, engine_learner):
    version = transformers_engine.weight_version
    before = engine_learner.model.norm.weight.detach().clone()
    transformers_engine.load_weights(engine_learner.named_parameters())
    assert transformers_engine.weight_version == version + 1
    assert torch.equal(engine_learner.model.norm.weight, before)


def test_own_module_takes_the_learners_weights(builtin_model_dir, engine_learner):
    cfg = ModelConfig(engine="transformers", dtype="float32", max_model_len=512)
    engine, why = create_engine(cfg, builtin_model_dir)
    assert why == "transformers: model.engine is 'transformers'" and not engine.shares_learner
    prompt = engine.chat_prompt_ids([{"role": "user", "content": "Name a fruit."}])
    s = Sampling(temperature=0.7, max_tokens=12, seed=5)
    with perturbed(engine_learner, engine, scale=0.05):
        (c,), = engine.generate([prompt], s)
        reference = teacher_logprobs(engine_learner, prompt, c.token_ids, 0.7)
        assert torch.allclose(torch.tensor(c.logprobs), reference, atol=1e-3)
    # Exiting restored the original weights in the engine: it scores those tokens as the original learner does.
    (again,), = engine.generate([prompt], Sampling(temperature=0.7, max_tokens=12, seed=5))
    reference = teacher_logprobs(engine_learner, prompt, again.token_ids, 0.7)
    assert torch.allclose(torch.tensor(again.logprobs), reference, atol=1e-3)
    engine.close()
