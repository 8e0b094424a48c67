"""Rollouts with zero advantage carry no gradient: leaving them out (and counting their tokens) gives the same update;
the per-task solver baseline makes a task whose answers all scored alike such a rollout group."""

from types import SimpleNamespace

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from botlab.config import ModelConfig, TeamConfig, TrainConfig
from botlab.engines.base import Completion
from botlab.selfplay.generation import Sample
from botlab.selfplay.learner import Learner, Rollout
from botlab.selfplay.rewards import Reward
from botlab.selfplay.step import SelfPlay
from botlab.selfplay.trr import token_logprobs


def with_logprobs(learner: Learner, prompt: list[int], completion: list[int], advantage: float) -> Rollout:
    model = learner.accelerator.unwrap_model(learner.model)
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        lp, _ = token_logprobs(model(input_ids=ids).logits[:, :-1], ids[:, 1:], 1.0)
    return Rollout(prompt, completion, lp[0, len(prompt) - 1:].tolist(), advantage, 1.0)


def save_tiny_model(path) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(path)


def test_leaving_out_zero_advantage_rollouts_keeps_the_update(tmp_path):
    save_tiny_model(tmp_path)
    # No clipping: a clipped gradient loses its scale, which would hide the token count checked below.
    train = TrainConfig(lr=1e-2, micro_batch=2, bf16_autocast=False, grad_clip=1e6)
    full, lean = Learner(tmp_path, ModelConfig(), train), Learner(tmp_path, ModelConfig(), train)
    steps = [[([1, 2, 3], [10, 11, 12], 1.3), ([4, 5], [20, 21, 22, 23], 0.0), ([6], [30, 31], -0.7)],
             [([7, 8], [40], 0.0), ([9], [41, 42], 0.9), ([3, 3], [43, 44, 45, 46, 47], 0.0)]]
    moved = Learner(tmp_path, ModelConfig(), train)
    for specs in steps:
        batch = [with_logprobs(full, *spec) for spec in specs]
        full.train_step(batch)
        tokens = sum(len(r.completion_ids) for r in batch)
        stats = lean.train_step([r for r in batch if r.advantage != 0], batch_tokens=tokens)
        assert stats["trained_sequences"] == sum(1 for r in batch if r.advantage != 0)
        moved.train_step([r for r in batch if r.advantage != 0])  # without the count: steps of another size
    for (name, a), (_, b) in zip(full.model.named_parameters(), lean.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    # AdamW's first step hides a scale; over steps of different zero shares the token count matters.
    assert any(not torch.allclose(a, b, atol=1e-6)
               for (_, a), (_, b) in zip(full.model.named_parameters(), moved.model.named_parameters()))


def test_per_task_baseline_skips_a_task_whose_answers_all_failed(tmp_path):
    """Through SelfPlay._learn with a real learner: under train.solver_baseline 'task', the four wrong answers to a
    task nobody solved have advantage 0 and are not trained; under TRR++'s task-type baseline they are."""
    save_tiny_model(tmp_path)
    # Task A: one right answer in four; task B: four wrong answers.
    rewards = {"task A": [1.0, -0.5, -0.5, -0.5], "task B": [-0.5] * 4}
    samples = [Sample("solver", "deduction", [1, 2], prompt, Completion("x", [10 + k, 11], [-1.0, -1.0], "stop"), 1.0,
                      reward=Reward(value)) for prompt, values in rewards.items() for k, value in enumerate(values)]
    skipped = {}
    for baseline in ("task_type", "task"):
        team = TeamConfig(name="t", selfplay={"solver_samples": 4},
                          train={"solver_baseline": baseline, "micro_batch": 4, "bf16_autocast": False})
        learner = Learner(tmp_path, ModelConfig(), team.train)
        stats = SelfPlay._learn(SimpleNamespace(team=team, learner=learner), samples)
        skipped[baseline] = stats["skipped_sequences"]
    assert skipped == {"task_type": 0, "task": 4}


def test_a_nan_sampling_logprob_reads_as_the_policys_own(tmp_path):
    """A hint token (selfplay.solver_hints) has no sampling-time log-prob: NaN, read as the policy's at update time.
    The update equals the one with the true log-probs, and it moves the weights."""
    save_tiny_model(tmp_path)
    train = TrainConfig(lr=1e-2, micro_batch=2, bf16_autocast=False)
    exact, hinted = Learner(tmp_path, ModelConfig(), train), Learner(tmp_path, ModelConfig(), train)
    before = [p.detach().clone() for p in exact.model.parameters()]
    batch = [with_logprobs(exact, [1, 2, 3], [10, 11, 12], 1.0), with_logprobs(exact, [4, 5], [20, 21], -0.5)]
    exact.train_step(batch)
    hinted.train_step([Rollout(r.prompt_ids, r.completion_ids, [float("nan")] + r.old_logprobs[1:], r.advantage,
                               r.temperature) for r in batch])
    for (name, a), (_, b) in zip(exact.model.named_parameters(), hinted.model.named_parameters()):
        assert torch.isfinite(b).all() and torch.allclose(a, b, atol=1e-5), name
    assert any(not torch.allclose(a, b) for a, b in zip(before, hinted.model.parameters()))
