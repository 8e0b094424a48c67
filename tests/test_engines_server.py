"""The server engine against a real vLLM OpenAI-compatible server (the CPU build), shared by the test session."""

from __future__ import annotations

import httpx
import pytest
import torch
from pydantic import ValidationError

from botlab.config import ModelConfig
from botlab.engines import EngineError, Sampling, create_engine
from botlab.engines.server_engine import _rpc, _run
from tests.fixtures.engines import TEST_MODEL_LEN, perturbed, teacher_logprobs
from tests.fixtures.vllm_server import SERVER_MODEL_LEN, free_port


@pytest.fixture(scope="session")
def server_url(vllm_server_url):
    """The session's vLLM server (tests/fixtures/vllm_server.py)."""
    return vllm_server_url


@pytest.fixture(scope="module")
def server_engine(server_url, builtin_model_dir):
    # The same server under two names: two "servers" for the engine, so prompts and pushes go to both.
    other_name = server_url.replace("127.0.0.1", "localhost")
    cfg = ModelConfig(engine="server", server_urls=[server_url, other_name], max_model_len=TEST_MODEL_LEN)
    engine, why = create_engine(cfg, builtin_model_dir)
    assert why.startswith("server: ") and other_name in why
    yield engine
    root = engine.weights_root
    engine.close()
    assert not root.exists()  # the snapshots were this engine's own


def chat(engine, text: str) -> list[int]:
    return engine.chat_prompt_ids([{"role": "user", "content": text}])


@pytest.mark.slow
def test_completions_carry_token_ids_and_the_learners_logprobs(server_engine, engine_learner):
    prompts = [chat(server_engine, "Hi"), chat(server_engine, "Write a Python function that reverses a list.")]
    greedy = Sampling(temperature=0, max_tokens=12)
    sampled = Sampling(n=3, temperature=0.7, max_tokens=16, seed=3)
    out = server_engine.generate(prompts * 2, [greedy, greedy, sampled, sampled])
    assert [len(group) for group in out] == [1, 1, 3, 3]
    for prompt, group, s in zip(prompts * 2, out, [greedy, greedy, sampled, sampled]):
        for c in group:
            assert 1 <= len(c.token_ids) == len(c.logprobs) <= s.max_tokens
            assert c.text == server_engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            assert c.finish_reason in ("stop", "length")
            # Tolerances of the in-process vLLM engine (bf16 weights and activations against the fp32 learner).
            err = (torch.tensor(c.logprobs) - teacher_logprobs(engine_learner, prompt, c.token_ids, s.temperature)).abs()
            assert err.max() < (0.3 if s.greedy else 0.6) and err.mean() < 0.06, (err.mean(), err.max())
    assert len({tuple(c.token_ids) for c in out[2]}) > 1  # the n samples are drawn independently
    # Results stay with their prompts however the servers took them; both "servers" took some.
    assert server_engine.generate([prompts[1]], greedy)[0][0].token_ids == out[1][0].token_ids
    assert all(server_engine.prompts_by_server[url] > 0 for url in server_engine.urls)


@pytest.mark.slow
def test_stop_strings_seeds_and_the_context_limit(server_engine):
    prompt = chat(server_engine, "What is 2+2?")
    full = server_engine.generate([prompt], Sampling(temperature=0, max_tokens=12))[0][0].text
    stop = " " + full.split()[2]
    c = server_engine.generate([prompt], Sampling(temperature=0, max_tokens=12, stop=[stop]))[0][0]
    assert c.finish_reason == "stop" and c.text == full[: full.index(stop)]
    assert stop in server_engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)  # its tokens stay
    seeded = Sampling(n=2, temperature=1.0, max_tokens=6, seed=7)
    first, again = ([c.token_ids for c in server_engine.generate([prompt], seeded)[0]] for _ in range(2))
    assert first == again
    # A prompt leaving room for 3 tokens ends there, as in-process (the server alone would refuse the request).
    long = (chat(server_engine, "Write a long story about a dragon.") * 100)[: TEST_MODEL_LEN - 3]
    c = server_engine.generate([long], Sampling(temperature=0, max_tokens=50))[0][0]
    assert c.finish_reason == "length" and len(c.token_ids) == 3


@pytest.mark.slow
def test_load_weights_pushes_the_learners_weights_to_every_server(server_engine, engine_learner):
    prompts = [chat(server_engine, "Hi"), chat(server_engine, "Write a Python function that reverses a list.")]
    greedy = Sampling(temperature=0, max_tokens=8)
    before = server_engine.generate(prompts[:1], greedy)[0][0].token_ids
    version = server_engine.weight_version
    s = Sampling(temperature=0.7, max_tokens=16, seed=3)
    with perturbed(engine_learner, server_engine, scale=0.05):
        assert server_engine.weight_version == version + 1
        # Twice each prompt: through both names, so both loads are checked.
        out = server_engine.generate(prompts * 2, s)
        for prompt, (c,) in zip(prompts * 2, out):
            err = (torch.tensor(c.logprobs) - teacher_logprobs(engine_learner, prompt, c.token_ids, 0.7)).abs()
            assert err.mean() < 0.06 and err.max() < 0.6, (err.mean(), err.max())
        assert server_engine.generate(prompts[:1], greedy)[0][0].token_ids != before
    # The same tokens under the original weights score differently: the match above came from the pushed weights.
    stale = (torch.tensor(c.logprobs) - teacher_logprobs(engine_learner, prompt, c.token_ids, 0.7)).abs()
    assert stale.mean() > 0.12
    assert server_engine.weight_version == version + 2
    assert server_engine.generate(prompts[:1], greedy)[0][0].token_ids == before
    assert not any(server_engine.weights_root.iterdir())  # each snapshot is deleted once the servers loaded it


@pytest.mark.slow
def test_a_learner_update_reaches_the_servers(server_engine, engine_learner, builtin_model_dir):
    """The daemon's cycle: sample, Learner.train_step, push Learner.named_weights; the servers then score as the
    updated learner does."""
    from botlab.config import TrainConfig
    from botlab.selfplay.learner import Learner, Rollout

    learner = Learner(builtin_model_dir, ModelConfig(), TrainConfig(lr=1e-3, micro_batch=4, bf16_autocast=False))
    model = learner.accelerator.unwrap_model(learner.model)
    prompt = chat(server_engine, "Name a fruit.")
    sampled = server_engine.generate([prompt], Sampling(n=4, temperature=1.0, max_tokens=12, seed=5))[0]
    learner.train_step([Rollout(prompt, c.token_ids, c.logprobs, advantage, 1.0)
                        for c, advantage in zip(sampled, [1.0, -1.0, 1.0, -1.0])])
    server_engine.load_weights(learner.named_weights())
    try:
        model.eval()
        (c,) = server_engine.generate([prompt], Sampling(temperature=1.0, max_tokens=16, seed=6))[0]
        updated = (torch.tensor(c.logprobs) - teacher_logprobs(model, prompt, c.token_ids, 1.0)).abs()
        stale = (torch.tensor(c.logprobs) - teacher_logprobs(engine_learner, prompt, c.token_ids, 1.0)).abs()
        assert updated.mean() < 0.06 and updated.max() < 0.6, (updated.mean(), updated.max())
        assert stale.mean() > 2 * updated.mean(), (stale.mean(), updated.mean())
    finally:
        server_engine.load_weights(engine_learner.named_parameters())  # the other tests' weights


@pytest.mark.slow
def test_partial_weights_are_refused_before_any_server_sees_them(server_engine, engine_learner):
    version = server_engine.weight_version
    some = [(n, p) for n, p in engine_learner.named_parameters() if "layers.0." in n]
    with pytest.raises(ValueError, match=r"parameters missing \(e.g. "):
        server_engine.load_weights(some)
    with pytest.raises(ValueError, match="no parameter named 'model.nope.weight'"):
        server_engine.load_weights([("model.nope.weight", torch.zeros(3))])
    assert server_engine.weight_version == version


@pytest.mark.slow
def test_a_server_that_is_down_is_named(server_url, builtin_model_dir):
    down = f"http://127.0.0.1:{free_port()}"
    cfg = ModelConfig(engine="server", server_urls=[server_url, down], max_model_len=TEST_MODEL_LEN)
    with pytest.raises(EngineError, match=rf"vLLM server {down} is unreachable .*--logprobs-mode processed_logprobs"):
        create_engine(cfg, builtin_model_dir)
    too_long = ModelConfig(engine="server", server_urls=[server_url], max_model_len=SERVER_MODEL_LEN * 2)
    with pytest.raises(EngineError, match=rf"{server_url} takes {SERVER_MODEL_LEN} tokens but model.max_model_len"):
        create_engine(too_long, builtin_model_dir)
    # A worker method the server lacks reads as a server started without botlab's extension.
    with pytest.raises(EngineError, match=rf"{server_url} runs without botlab's worker extension: start each server"):
        _run(_ask(server_url, "botlab_no_such_method"))


async def _ask(url: str, method: str):
    async with httpx.AsyncClient() as client:
        return await _rpc(client, url, method)


def test_server_urls_are_checked_where_they_are_declared():
    cfg = ModelConfig(engine="server", server_urls=["http://10.0.0.5:8000/", " https://gpu-2:443"])
    assert cfg.server_urls == ["http://10.0.0.5:8000", "https://gpu-2:443"]
    for bad in ["10.0.0.5:8000", "http://10.0.0.5", "http://h:8000/v1", "ftp://h:21", "http://h:port", "http://:80"]:
        with pytest.raises(ValidationError, match="is not a server URL like http://10.0.0.5:8000"):
            ModelConfig(engine="server", server_urls=[bad])
    with pytest.raises(ValidationError, match="engine 'server' needs server_urls"):
        ModelConfig(engine="server")
    with pytest.raises(ValidationError, match="apply to engine 'server', not 'auto'"):
        ModelConfig(server_urls=["http://h:8000"])
    with pytest.raises(ValidationError, match="lists a server twice"):
        ModelConfig(engine="server", server_urls=["http://h:8000", "http://h:8000/"])
