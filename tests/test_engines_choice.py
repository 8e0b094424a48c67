"""Choosing the engine (`model.engine`) and validating sampling settings."""

from __future__ import annotations

import sys

import pytest

from botlab.config import ModelConfig
from botlab.engines import EngineError, Sampling, create_engine


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "Sampling.n"),
        ({"temperature": -0.1}, "Sampling.temperature"),
        ({"temperature": float("nan")}, "Sampling.temperature"),
        ({"top_p": 0}, "Sampling.top_p"),
        ({"top_p": 1.5}, "Sampling.top_p"),
        ({"max_tokens": 0}, "Sampling.max_tokens"),
        ({"stop": "\n"}, "Sampling.stop"),
        ({"stop": [""]}, "Sampling.stop"),
        ({"seed": 1.5}, "Sampling.seed"),
    ],
)
def test_bad_sampling_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Sampling(**kwargs)


@pytest.fixture
def vllm_unimportable(monkeypatch):
    """`import vllm` fails, as on a host without it (None in sys.modules makes the import raise)."""
    monkeypatch.setitem(sys.modules, "vllm", None)


def test_engine_vllm_without_vllm_is_a_clear_error(vllm_unimportable, tmp_path):
    with pytest.raises(EngineError, match=r"model.engine is 'vllm' but `import vllm` fails \(ModuleNotFoundError"):
        create_engine(ModelConfig(engine="vllm"), tmp_path)


@pytest.mark.slow
def test_auto_without_vllm_falls_back_to_transformers_and_says_why(
    vllm_unimportable, builtin_model_dir, engine_learner
):
    engine, why = create_engine(ModelConfig(engine="auto"), builtin_model_dir, engine_learner)
    assert engine.name == "transformers"
    assert why.startswith("transformers: model.engine is 'auto' and `import vllm` fails (ModuleNotFoundError")
    assert "shares the learner's module" in why


@pytest.mark.slow
def test_auto_with_vllm_picks_vllm_and_says_why(vllm_engine_and_why):
    engine, why = vllm_engine_and_why
    assert engine.name == "vllm"
    assert why.startswith("vllm: model.engine is 'auto' and `import vllm` works (vLLM ")
