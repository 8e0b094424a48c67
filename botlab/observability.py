"""Metrics out of the run: TensorBoard event files (the field's usual viewer) and metrics.jsonl, plus W&B if asked.

    tensorboard --logdir runs/NAME/tensorboard
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class MetricsSink:
    def __init__(self, run_dir: Path, team_name: str, wandb_project: str | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                log.warning("observability.wandb_project is set but wandb is not installed; skipping W&B")
            else:
                self.wandb = wandb.init(project=wandb_project, name=team_name, dir=str(run_dir), resume="allow")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        self.jsonl.close()
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
