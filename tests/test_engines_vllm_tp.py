"""vLLM with tensor parallelism (2 worker processes) on the CPU backend: the learner's weights reach every shard.

The embedded model's 9 attention heads do not split in two, so these tests use a tiny random Llama with the
embedded tokenizer (tests/fixtures/model.py). Generation runs on both workers at once (each holds half of every
layer), so tokens and logprobs that match the learner prove that both took the new weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from botlab.config import ModelConfig, TrainConfig
from botlab.engines import EngineError, Sampling, create_engine
from botlab.engines import vllm_engine
from botlab.engines.vllm_engine import WEIGHT_FILE_PREFIX, _remove_stale_weight_files
from tests.fixtures.engines import teacher_logprobs

GREEDY = Sampling(temperature=0, max_tokens=6)


def _weight_files() -> list[Path]:
    return sorted(Path("/dev/shm").glob(f"{WEIGHT_FILE_PREFIX}{os.getpid()}-*"))


@pytest.fixture(scope="module")
def tp_engine_and_why(tiny_llama_dir):
    if os.environ.get("BOTLAB_NO_VLLM"):
        pytest.skip("BOTLAB_NO_VLLM is set: no vLLM engine on this host")
    cfg = ModelConfig(engine="vllm", tensor_parallel_size=2, max_model_len=256, cpu_kv_cache_gib=0.25,
                      sleep_mode=True)
    with pytest.MonkeyPatch.context() as env:
        # One core per worker: vLLM's automatic binding wants a NUMA node per worker, and this host has one.
        # (Only for this engine: a single-worker engine refuses a list of two.)
        env.setenv("VLLM_CPU_OMP_THREADS_BIND", os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0|1"))
        engine, why = create_engine(cfg, tiny_llama_dir)
        yield engine, why
        engine.close()


@pytest.fixture(scope="module")
def tp_engine(tp_engine_and_why):
    return tp_engine_and_why[0]


@pytest.fixture(scope="module")
def learner(tiny_llama_dir):
    from botlab.selfplay.learner import Learner

    return Learner(tiny_llama_dir, ModelConfig(), TrainConfig(lr=1e-2, bf16_autocast=False))


def _policy(learner):
    return learner.accelerator.unwrap_model(learner.model)


def _teach(learner, prompt: list[int], target: list[int], steps: int) -> None:
    """Real TRR++ updates that reward one reply, with the learner's own logprobs as the sampling-time ones."""
    from botlab.selfplay.learner import Rollout

    for _ in range(steps):
        old = teacher_logprobs(_policy(learner), prompt, target, 1.0).tolist()
        learner.train_step([Rollout(prompt, target, old, advantage=1.0, temperature=1.0)])


@pytest.mark.slow
def test_learner_weights_reach_every_tensor_parallel_worker(tp_engine_and_why, learner, tiny_llama_dir,
                                                             monkeypatch):
    engine, why = tp_engine_and_why
    assert engine.name == "vllm" and "2 tensor-parallel workers" in why
    assert len(engine.llm.collective_rpc(lambda worker: os.getpid())) == 2  # two worker processes
    tokenizer = engine.tokenizer
    prompt = engine.chat_prompt_ids([{"role": "user", "content": "What colour is the sky?"}])
    before = engine.generate([prompt], GREEDY)[0][0].token_ids
    # A random 2-layer model learns a word in a few updates, not a sentence: teach it to say " blue" over and over.
    [blue] = tokenizer(" blue", add_special_tokens=False)["input_ids"]
    target = [blue] * GREEDY.max_tokens
    assert before != target

    _teach(learner, prompt, target, steps=3)
    policy = _policy(learner)
    learned = [int(t) for t in policy.generate(torch.tensor([prompt]), max_new_tokens=len(target),
                                                do_sample=False)[0, len(prompt):]]
    assert learned == target, "the updates did not teach the reply: the test would prove nothing"

    # Small files, so the sync spreads over several, as a large model's does (1 GiB each).
    monkeypatch.setattr(vllm_engine, "WEIGHT_FILE_BYTES", 2**20)
    made, new_file = [], vllm_engine._new_weight_file
    monkeypatch.setattr(vllm_engine, "_new_weight_file", lambda folder: made.append(new_file(folder)) or made[-1])
    version = engine.weight_version
    engine.load_weights(learner.named_weights())
    assert engine.weight_version == version + 1
    assert len(made) > 1 and all(path.parent == Path("/dev/shm") for path in made)
    assert _weight_files() == []  # the shared files are gone after the sync
    assert engine.generate([prompt], GREEDY)[0][0].token_ids == target

    # Sampled logprobs are the learner's own, to the precision of bf16 (the tolerance of tests/test_engines.py).
    other = engine.chat_prompt_ids([{"role": "user", "content": "Write a haiku about rain."}])
    samples = engine.generate([prompt, other], Sampling(temperature=0.7, max_tokens=16, seed=3))
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    for ids, (c,) in zip([prompt, other], samples):
        err = (torch.tensor(c.logprobs) - teacher_logprobs(policy, ids, c.token_ids, 0.7)).abs()
        assert err.mean() < 0.06 and err.max() < 0.6, (err.mean(), err.max())
        # The same tokens under the initial weights score differently: the match came from the synced weights.
        stale = (torch.tensor(c.logprobs) - teacher_logprobs(original, ids, c.token_ids, 0.7)).abs()
        assert stale.mean() > 0.12, stale.mean()


@pytest.mark.slow
def test_partial_weights_are_refused_before_the_workers_see_them(tp_engine, learner):
    prompt = tp_engine.chat_prompt_ids([{"role": "user", "content": "Hi"}])
    before = tp_engine.generate([prompt], GREEDY)[0][0].token_ids
    version = tp_engine.weight_version
    some = [(n, p) for n, p in learner.named_weights() if "layers.0." in n]
    with pytest.raises(ValueError, match=r"parameters missing \(e.g. "):
        tp_engine.load_weights(some)
    assert tp_engine.weight_version == version and _weight_files() == []
    assert tp_engine.generate([prompt], GREEDY)[0][0].token_ids == before


@pytest.mark.slow
def test_weights_that_cannot_be_written_leave_the_engine_as_it_was(tp_engine, learner, monkeypatch, tmp_path):
    prompt = tp_engine.chat_prompt_ids([{"role": "user", "content": "Hi"}])
    before = tp_engine.generate([prompt], GREEDY)[0][0].token_ids
    monkeypatch.setattr(vllm_engine, "_weight_folder", lambda nbytes: tmp_path / "gone")  # as if /dev/shm vanished
    with pytest.raises(EngineError, match=r"could not write the weights to .*gone .*keeps its previous weights"):
        tp_engine.load_weights(learner.named_weights())
    assert tp_engine.generate([prompt], GREEDY)[0][0].token_ids == before


@pytest.mark.slow
def test_sleep_mode_on_cpu_is_reported_and_harmless(tp_engine_and_why):
    engine, why = tp_engine_and_why
    assert engine.can_sleep is False  # model.sleep_mode is true, but vLLM's CPU backend has no sleep mode
    assert why.endswith("model.sleep_mode is ignored: vLLM on the CPU backend has no sleep mode")
    prompt = engine.chat_prompt_ids([{"role": "user", "content": "Hi"}])
    before = engine.generate([prompt], GREEDY)[0][0].token_ids
    engine.sleep()
    engine.wake_up()
    assert engine.generate([prompt], GREEDY)[0][0].token_ids == before


def test_weight_files_of_dead_processes_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = Path("/dev/shm") / f"{WEIGHT_FILE_PREFIX}{gone.stdout.strip()}-x.safetensors"
    ours = Path("/dev/shm") / f"{WEIGHT_FILE_PREFIX}{os.getpid()}-x.safetensors"
    try:
        stale.write_bytes(b"left by a killed run")
        ours.write_bytes(b"a sync in flight")
        _remove_stale_weight_files()
        assert not stale.exists() and ours.exists()
    finally:
        stale.unlink(missing_ok=True)
        ours.unlink(missing_ok=True)
