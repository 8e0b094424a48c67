"""What a step reports: its summary (stored in its row of the steps table) and its metrics.

The step writes a `StepSummary`; `botlab status`, the digest and the console read it back through
`StepSummary.from_json`, the one parser of stored summaries (a row that lacks a key, as older rows may, gets the
field's default). Nothing here imports torch: status and digests load it without the learner.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botlab.selfplay.generation import Sample
    from botlab.selfplay.proposals import Proposal


@dataclass
class StepSummary:
    rewards: dict[str, dict[str, float | None]] = field(default_factory=dict)  # task type -> role -> mean reward
    solve_rates: dict[str, float | None] = field(default_factory=dict)  # task type -> share of correct answers
    valid_rate: float | None = None  # share of proposals the sandbox validated
    admitted_rate: float | None = None  # share of proposals admitted to a buffer
    format_rate: dict[str, float | None] = field(default_factory=dict)  # role -> share of replies that parsed
    rejections: dict[str, int] = field(default_factory=dict)  # the 10 most common rejection reasons, with counts
    tokens_per_second: float | None = None  # generated tokens over the generating phases' time
    proposals: int = 0
    heldout: int = 0  # proposals set aside for the held-out split
    solved: int = 0  # solver answers

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, stored: str | None) -> "StepSummary":
        values = json.loads(stored) if stored else {}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


def summarise(proposals: list[Proposal], solutions: list[Sample], train_stats: dict, timings: dict[str, float],
              tokens: int, buffer_sizes: dict[str, int], heldout_sizes: dict[str, int],
              ) -> tuple[StepSummary, dict[str, float]]:
    """The step's summary and its metrics (per task type and role, rates, throughput, the learner's statistics and
    the phases' seconds)."""
    types = sorted({p.sample.task_type for p in proposals} | {s.task_type for s in solutions})
    rewards, solve_rates, metrics = {}, {}, {}
    for t in types:
        prop = [p.sample.reward.value for p in proposals if p.sample.task_type == t and not p.heldout]
        sol = [s for s in solutions if s.task_type == t]
        rewards[t] = {"proposer": _mean(prop), "solver": _mean([s.reward.value for s in sol])}
        solve_rates[t] = _mean([1.0 if s.reward.parts.get("correct") else 0.0 for s in sol])
        for role, value in rewards[t].items():
            if value is not None:
                metrics[f"reward/{role}/{t}"] = value
        if solve_rates[t] is not None:
            metrics[f"solve_rate/{t}"] = solve_rates[t]
        metrics[f"buffer_size/{t}"] = buffer_sizes[t]
    for t, n in heldout_sizes.items():
        metrics[f"heldout_size/{t}"] = n
    n = len(proposals) or 1
    valid_rate = sum(p.valid for p in proposals) / n
    admitted_rate = sum(p.admitted for p in proposals) / n
    format_rate = {
        "proposer": sum(p.parse_ok for p in proposals) / n,
        "solver": _mean([1.0 if s.reward.parts.get("parsed") else 0.0 for s in solutions]),
    }
    rejections = Counter(p.reason for p in proposals if p.reason and not p.admitted)
    seconds = sum(timings.get(k, 0.0) for k in ("propose", "learnability", "solve"))
    tps = tokens / seconds if seconds > 0 else None
    metrics |= {"valid_rate": valid_rate, "admitted_rate": admitted_rate, "generated_tokens": tokens,
                "format_rate/proposer": format_rate["proposer"]}
    if format_rate["solver"] is not None:
        metrics["format_rate/solver"] = format_rate["solver"]
    if tps:
        metrics["tokens_per_second"] = tps
    metrics |= {f"train/{k}": v for k, v in train_stats.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    metrics |= {f"time/{k}": v for k, v in timings.items()}
    summary = StepSummary(
        rewards=rewards, solve_rates=solve_rates, valid_rate=valid_rate, admitted_rate=admitted_rate,
        format_rate=format_rate, rejections=dict(rejections.most_common(10)), tokens_per_second=tps,
        proposals=len(proposals), heldout=sum(p.heldout for p in proposals), solved=len(solutions),
    )
    return summary, metrics


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
