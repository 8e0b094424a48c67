"""What `botlab run` shows while it works: a live status line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.live import Live
from rich.text import Text

from botlab.selfplay.summary import StepSummary

log = logging.getLogger("botlab.run")


class RunProgress:
    def __init__(self, team_name: str, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.team = team_name
        self.live: Live | None = None
        self.step_text = "starting"
        self.last_line = ""
        if self.console.is_terminal and sys.stderr.isatty():
            self.live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def phase(self, step_label: str, phase: str) -> None:
        self.step_text = f"{step_label} · {phase}"
        self._show()

    def note(self, message: str) -> None:
        """A line that stays in the scrollback (and the log)."""
        log.info(message)
        self.console.print(message, highlight=False, markup=False)

    def step_done(self, step: int, total: int | None, summary: StepSummary, timings: dict) -> None:
        solve = " ".join(f"{t[:3]} {v:.2f}" for t, v in sorted(summary.solve_rates.items()) if v is not None)
        tps = summary.tokens_per_second
        phases = " ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        of = f"/{total}" if total else ""
        self.note(
            f"step {step}{of}: valid {summary.valid_rate or 0:.2f}, admitted {summary.admitted_rate or 0:.2f}, "
            f"solve [{solve or '-'}], {tps or 0:.0f} tok/s | {phases}"
        )

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _show(self) -> None:
        line = f"[{self.team}] {self.step_text}"
        if self.live is not None:
            self.live.update(Text(line))
        elif line != self.last_line:
            log.debug(line)
        self.last_line = line
