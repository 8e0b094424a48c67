"""Rewards of the two roles, each returned with its parts so they can be stored and inspected.

Follows AZR (docs/method.md, Rewards) with its known defects removed: an invalid proposal is a format failure, never
"solved"; learnability is measured with samples at the training temperature.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Reward:
    value: float
    parts: dict = field(default_factory=dict)


def learnability(solve_rate: float) -> float:
    """1 - solve rate, but 0 for tasks nobody solves or everybody solves: neither teaches anything."""
    if solve_rate <= 0.0 or solve_rate >= 1.0:
        return 0.0
    return 1.0 - solve_rate


def proposer_reward(
    *, parsed: bool, valid: bool, admitted: bool, solve_rate: float | None, format_penalty: float, wrong_penalty: float,
    reason: str | None = None, rarity_bonus: float = 0.0,
) -> Reward:
    """Format failure or invalid task -> format_penalty; valid but rejected or unlearnable -> wrong_penalty. An
    admitted task also gets `rarity_bonus` (selfplay.rare_kind_bonus: more for a kind of output its buffer lacks)."""
    parts = {"parsed": parsed, "valid": valid, "admitted": admitted, "solve_rate": solve_rate, "reason": reason}
    if not (parsed and valid):
        return Reward(format_penalty, parts | {"why": "format"})
    if not admitted or solve_rate is None:
        return Reward(wrong_penalty, parts | {"why": "rejected"})
    score = learnability(solve_rate)
    parts |= {"learnability": score, "rarity_bonus": rarity_bonus}
    if score == 0.0:
        return Reward(wrong_penalty + rarity_bonus, parts | {"why": "unlearnable"})
    return Reward(score + rarity_bonus, parts | {"why": "learnability"})


def solver_reward(*, parsed: bool, correct: bool, format_penalty: float, wrong_penalty: float,
                  reason: str | None = None) -> Reward:
    """1 for a correct answer, wrong_penalty for a well-formed wrong one, format_penalty for no answer."""
    parts = {"parsed": parsed, "correct": correct, "reason": reason}
    if not parsed:
        return Reward(format_penalty, parts)
    return Reward(1.0 if correct else wrong_penalty, parts)
