"""vLLM-only behaviour: in-process, and weight loads that would break it midway are refused up front."""

from __future__ import annotations

import pytest
import torch

from botlab.engines import Sampling

pytestmark = pytest.mark.slow


def test_runs_in_this_process_and_leaves_torch_threads_to_the_learner(vllm_engine):
    import os

    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert vllm_engine.llm.llm_engine.model_executor is not None  # only reachable in-process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # vLLM's CPU worker disables this for the process; the engine gives it back
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)


def test_partial_weights_are_refused_before_vllm_sees_them(vllm_engine, engine_learner):
    prompt = vllm_engine.chat_prompt_ids([{"role": "user", "content": "Hi"}])
    greedy = Sampling(temperature=0, max_tokens=8)
    before = vllm_engine.generate([prompt], greedy)[0][0].token_ids
    version = vllm_engine.weight_version
    some = [(n, p) for n, p in engine_learner.named_parameters() if "layers.0." in n]
    with pytest.raises(ValueError, match=r"parameters missing \(e.g. "):
        vllm_engine.load_weights(some)
    assert vllm_engine.weight_version == version
    assert vllm_engine.generate([prompt], greedy)[0][0].token_ids == before
