"""TRR++ advantages and the clipped policy loss: the maths of one update, kept free of models and I/O."""

from __future__ import annotations

from collections import defaultdict

import torch


def baseline_group(role: str, task_type: str, prompt: str, solver_baseline: str) -> tuple[str, ...]:
    """The samples a reward is whitened against (train.solver_baseline): TRR++'s task type and role, or, for a
    solver answer under the per-task baseline, the other answers to the same prompt (the same task)."""
    if role == "solver" and solver_baseline == "task":
        return task_type, role, prompt
    return task_type, role


def trr_advantages(rewards: list[float], groups: list[tuple[str, ...]], lengths: list[int]) -> list[float]:
    """Task-relative REINFORCE++: whiten each sequence's reward within its (task type, role) group (or any finer
    group the caller names, e.g. one task's answers: train.solver_baseline).

    As in AZR, the statistics are over the group's response TOKENS (the reward is copied to every token, gamma = 1),
    so longer responses weigh more; variance is unbiased; a group of one gets advantage 0 (nothing to compare with).
    """
    members: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    advantages = [0.0] * len(rewards)
    for indices in members.values():
        token_rewards = torch.cat([torch.full((max(lengths[i], 1),), float(rewards[i])) for i in indices]).double()
        if token_rewards.numel() < 2:
            continue
        mean, var = token_rewards.mean(), token_rewards.var(unbiased=True)
        for i in indices:
            advantages[i] = float((rewards[i] - mean) / torch.sqrt(var + 1e-8))
    return advantages


def clipped_policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip, summed over the masked tokens (the caller divides by the batch's token count).

    Shapes: (batch, tokens) for the log-probs and mask, (batch,) for the advantages.
    """
    ratio = torch.exp(new_logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    loss = (per_token * mask).sum()
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        stats = {
            "clip_fraction": float(((unclipped != clipped).float() * mask).sum() / n),
            "ratio_mean": float((ratio * mask).sum() / n),
        }
    return loss, stats


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                   with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of `targets` under logits/temperature, and (if asked) each position's entropy."""
    logits = logits.float()
    if temperature > 0:  # greedy rollouts (temperature 0) are scored on the raw distribution
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1) if with_entropy else None
    return chosen, entropy
