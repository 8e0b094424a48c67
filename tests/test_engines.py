"""Both rollout engines pass the same interface tests on the real builtin model, one engine of each kind per session."""

from __future__ import annotations

import math

import pytest
import torch

from botlab.engines import Completion, Engine, Sampling
from tests.fixtures.engines import TEST_MODEL_LEN, perturbed, teacher_logprobs

pytestmark = pytest.mark.slow

GREEDY = Sampling(temperature=0, max_tokens=12)


@pytest.fixture(params=["transformers", "vllm"])
def engine(request) -> Engine:
    return request.getfixturevalue(f"{request.param}_engine")


def chat(engine: Engine, text: str) -> list[int]:
    return engine.chat_prompt_ids([{"role": "user", "content": text}])


def check_completion(engine: Engine, c: Completion, sampling: Sampling) -> None:
    assert isinstance(c, Completion)
    assert 1 <= len(c.token_ids) <= sampling.max_tokens
    assert len(c.logprobs) == len(c.token_ids)
    assert all(math.isfinite(lp) and lp <= 1e-4 for lp in c.logprobs)
    assert c.finish_reason in ("stop", "length")
    if c.finish_reason == "length":
        assert len(c.token_ids) == sampling.max_tokens
    if not sampling.stop:
        assert c.text == engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_chat_prompt_ids_render_the_chat_template(engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ids = engine.chat_prompt_ids(messages)
    text = engine.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.") and text.endswith("<|im_start|>assistant\n")
    assert ids.count(engine.tokenizer.bos_token_id) == text.count("<|im_start|>")  # no extra BOS from encoding
    with pytest.raises(ValueError, match=r"messages\[1\]\['content'\]"):
        engine.chat_prompt_ids([messages[0], {"role": "user"}])


def test_generate_keeps_prompt_order_and_per_prompt_sampling(engine, engine_learner):
    prompts = [chat(engine, "What is 2+2?"), chat(engine, "Answer with one word: what color is the sky?")]
    sampling = [Sampling(n=3, temperature=1.0, top_p=0.9, max_tokens=6, seed=1), GREEDY]
    out = engine.generate(prompts, sampling)
    assert [len(group) for group in out] == [3, 1]
    for group, s in zip(out, sampling):
        for c in group:
            check_completion(engine, c, s)
    # The greedy answer in the batch is the one that prompt gets alone: results are not shuffled between prompts.
    alone = engine.generate([prompts[1]], GREEDY)[0][0]
    assert out[1][0].token_ids == alone.token_ids
    # The model ends this answer itself: EOS is kept in token_ids, not in the text.
    assert alone.finish_reason == "stop" and alone.token_ids[-1] == engine.tokenizer.eos_token_id
    assert "<|im_end|>" not in alone.text and alone.text.strip()
    # Greedy logprobs are the model's plain log-softmax (bf16 vLLM: to bf16 precision).
    reference = teacher_logprobs(engine_learner, prompts[1], alone.token_ids, 0)
    assert (torch.tensor(alone.logprobs) - reference).abs().max() < (1e-3 if engine.name == "transformers" else 0.3)


def test_seed_reproduces_samples(engine):
    prompt = chat(engine, "Tell me a fact about cats.")
    s = Sampling(n=2, temperature=1.0, max_tokens=6, seed=7)
    first = [c.token_ids for c in engine.generate([prompt], s)[0]]
    again = [c.token_ids for c in engine.generate([prompt], s)[0]]
    other = [c.token_ids for c in engine.generate([prompt], Sampling(n=2, temperature=1.0, max_tokens=6, seed=8))[0]]
    assert first == again
    assert first[0] != first[1]  # n samples are drawn independently
    assert other != first


def test_stop_string_cuts_text_but_keeps_its_tokens(engine):
    prompt = chat(engine, "What is 2+2?")
    full = engine.generate([prompt], GREEDY)[0][0].text
    stop = " " + full.split()[2]
    c = engine.generate([prompt], Sampling(temperature=0, max_tokens=12, stop=[stop]))[0][0]
    assert c.finish_reason == "stop"
    assert c.text == full[: full.index(stop)]
    decoded = engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    assert stop in decoded and stop not in engine.tokenizer.decode(c.token_ids[:-1], skip_special_tokens=True)


def test_logprobs_match_the_learner_after_load_weights(engine, engine_learner):
    """Sampled at temperature 0.7 from weights the learner pushed: the engine's logprobs are the learner's own."""
    short, long = chat(engine, "Hi"), chat(engine, "Write a Python function that reverses a list, with a docstring.")
    s = Sampling(temperature=0.7, max_tokens=16, seed=3)
    with perturbed(engine_learner, engine, scale=0.05):
        # Two prompt lengths in one batch, so the short one is padded (transformers) or batched (vLLM).
        for prompt, (c,) in zip([short, long], engine.generate([short, long], s)):
            after = teacher_logprobs(engine_learner, prompt, c.token_ids, 0.7)
            err = (torch.tensor(c.logprobs) - after).abs()
            # fp32 engines agree to rounding; bf16 vLLM to the precision of bf16 weights and activations.
            mean_tol, max_tol = (1e-3, 1e-2) if engine.name == "transformers" else (0.06, 0.6)
            assert err.mean() < mean_tol and err.max() < max_tol, (err.mean(), err.max())
    # The same tokens under the original weights score differently: the match above came from the new weights.
    before = teacher_logprobs(engine_learner, prompt, c.token_ids, 0.7)
    assert (torch.tensor(c.logprobs) - before).abs().mean() > 2 * mean_tol


def test_weight_change_changes_greedy_output_and_a_plain_reload_does_not(engine, engine_learner):
    prompt = chat(engine, "Answer with one word: what color is the sky?")
    greedy = Sampling(temperature=0, max_tokens=8)
    before = engine.generate([prompt], greedy)[0][0].token_ids
    version = engine.weight_version
    engine.load_weights(engine_learner.named_parameters())
    assert engine.weight_version == version + 1
    assert engine.generate([prompt], greedy)[0][0].token_ids == before
    with perturbed(engine_learner, engine, scale=0.1):
        assert engine.generate([prompt], greedy)[0][0].token_ids != before
    assert engine.weight_version == version + 3
    # The step's GPU cycle: sleep while the learner trains, wake up, take the weights (sleep may have dropped them),
    # generate. Sleep and wake-up are no-ops where unsupported (CPU).
    engine.sleep()
    engine.wake_up()
    engine.load_weights(engine_learner.named_parameters())
    assert engine.generate([prompt], greedy)[0][0].token_ids == before


def test_bad_input_is_refused_with_the_field_named(engine):
    prompt = chat(engine, "Hi")
    with pytest.raises(ValueError, match=r"prompts\[1\] must be a non-empty list"):
        engine.generate([prompt, []], GREEDY)
    with pytest.raises(ValueError, match="sampling has 2 entries but there are 1 prompts"):
        engine.generate([prompt], [GREEDY, GREEDY])
    with pytest.raises(ValueError, match=r"prompts\[0\] holds a token id outside"):
        engine.generate([[10**7]], GREEDY)
    with pytest.raises(ValueError, match=rf"prompts\[0\] has {TEST_MODEL_LEN} tokens.*max_model_len={TEST_MODEL_LEN}"):
        engine.generate([(prompt * 200)[:TEST_MODEL_LEN]], GREEDY)
    with pytest.raises(ValueError, match="no parameter named 'model.nope.weight'"):
        engine.load_weights([("model.nope.weight", torch.zeros(3))])
    with pytest.raises(ValueError, match=r"model.norm.weight has shape \(3,\), expected \(576,\)"):
        engine.load_weights([("model.norm.weight", torch.zeros(3))])
    assert engine.generate([prompt], GREEDY)[0][0].token_ids  # still serving, weights untouched


def test_generation_stops_at_max_model_len(engine):
    # A prompt that leaves room for 3 tokens: the completion ends there, with finish_reason "length".
    prompt = (chat(engine, "Write a long story about a dragon.") * 100)[: TEST_MODEL_LEN - 3]
    c = engine.generate([prompt], Sampling(temperature=0, max_tokens=50))[0][0]
    assert c.finish_reason == "length" and len(c.token_ids) == 3
