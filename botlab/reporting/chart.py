"""The digest's chart: small multiples sized for a phone, one solve-rate panel per task type and the held-out curve.

Drawn at twice the size it is shown (CHART_WIDTH_PX) so it stays sharp on high-density screens, with fonts that
still read when a 390 px wide phone shows it a little smaller.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botlab.reporting.digest import DigestFacts

CHART_WIDTH_PX = 480  # the CSS width the HTML shows the chart at, at most (it shrinks with the screen)
_WIDTH_IN, _PANEL_IN, _DPI = 4.8, 2.0, 200  # 4.8 in at 100 px/in = CHART_WIDTH_PX; drawn at 2x
_MARKERS = ("o", "s", "^", "D", "v")
_MAX_MARKED_POINTS = 60  # past this many points a marker per point is clutter
_YLIM = (-0.08, 1.08)  # below 0: a line at 0 is drawn above the axis, not on it


def render_chart(facts: "DigestFacts") -> bytes | None:
    """A PNG of the run so far, or None before there is anything to draw."""
    series = facts.series
    types = sorted(name.removeprefix("solve_rate/") for name in series if name.startswith("solve_rate/"))
    held_out = {n.removeprefix("eval/"): p for n, p in series.items() if n.startswith("eval/")}
    panels = len(types) + (1 if held_out else 0)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    cols = 1 if panels == 1 else 2
    rows = math.ceil(panels / cols)
    steps = [s for points in series.values() for s, _ in points]
    pad = max(0.5, 0.03 * (max(steps) - min(steps)))  # room for the end markers
    xlim = (min(steps) - pad, max(steps) + pad)  # the same steps in every panel, so they compare at a glance
    with matplotlib.rc_context({"font.size": 9, "axes.titlesize": 9, "xtick.labelsize": 8.5, "ytick.labelsize": 8.5,
                                "legend.fontsize": 7.5}):
        fig = Figure(figsize=(_WIDTH_IN, _PANEL_IN * rows), dpi=_DPI, layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for i, task_type in enumerate(types):
            _solve_panel(axes[i], task_type, series[f"solve_rate/{task_type}"], f"C{i}")
        if held_out:
            _held_out_panel(axes[len(types)], held_out, series)
        for ax in axes[panels:]:
            ax.remove()
        for ax in axes[:panels]:
            ax.set_xlim(xlim)
            ax.set_ylim(_YLIM)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # steps are whole numbers
            ax.set_yticks([0, 0.5, 1])
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.grid(alpha=0.3)
            ax.set_xlabel("step", labelpad=1)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def _solve_panel(ax, task_type: str, points: list[tuple[int, float]], color: str) -> None:
    steps, values = zip(*points)
    ax.plot(steps, values, color=color, linewidth=1.6, marker="o" if len(steps) <= _MAX_MARKED_POINTS else None,
            markersize=3)
    ax.set_title(f"{task_type}: {values[-1]:.0%} at step {steps[-1]}", loc="left")


def _held_out_panel(ax, scores: dict[str, list[tuple[int, float]]], series: dict) -> None:
    """Greedy pass@1 per held-out suite over steps, the 95% interval shaded: the run's learning curve. Suites that
    score the same (0 early on) stay apart by marker and dash."""
    for i, (suite, points) in enumerate(sorted(scores.items())):
        ci = dict(series.get(f"eval_ci95/{suite}", []))
        steps, values = zip(*points)
        low = [max(0.0, v - ci.get(s, 0.0)) for s, v in points]
        high = [min(1.0, v + ci.get(s, 0.0)) for s, v in points]
        color = f"C{i + 3}"
        ax.plot(steps, values, color=color, marker=_MARKERS[i % len(_MARKERS)], markersize=3.5,
                linestyle=("-", "--", ":")[i % 3], linewidth=1.4, label=suite)
        ax.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
    ax.set_title("held-out pass@1 (band: 95%)", loc="left")
    ax.legend(loc="best", framealpha=0.8, handlelength=1.8, borderaxespad=0.3)
