"""Does a long run stay flat? Run a team for N steps and print memory, open files, threads, children and disk per step.

    python -m botlab.bench.soak teams/demo-cpu.yaml --steps 20 [--warmup 2] [--json]
    python -m botlab.bench.soak teams/demo-cpu.yaml --run-dir DIR --report-only   # a run that already happened

The numbers are the daemon's own `process/*` and `disk/*` metrics (botlab/resources.py), taken after each step's
update. The baseline is the same process after its warm-up steps (allocator pools, compiled kernels and the first
checkpoint all land early); the ratios say how far the last step is from it, and the slope is a least-squares fit
over the steps after the warm-up. The run goes into a fresh directory under /tmp unless --run-dir is given.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path

from botlab.daemon import run_team
from botlab.rundir import STORE_NAME
from botlab.teamfile import load_team

COLUMNS = ["process/rss_mb", "process/children_rss_mb", "process/open_fds", "process/threads", "process/children",
           "disk/run_dir_mb"]


def per_step(db: sqlite3.Connection) -> dict[int, dict[str, float]]:
    rows = db.execute("SELECT step, name, value FROM metrics WHERE name LIKE 'process/%' OR name LIKE 'disk/%'")
    table: dict[int, dict[str, float]] = {}
    for step, name, value in rows:
        table.setdefault(step, {})[name] = value
    return dict(sorted(table.items()))


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares growth per step."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def summarise(table: dict[int, dict[str, float]], warmup: int) -> dict:
    steps = list(table)
    base = steps[min(warmup, len(steps)) - 1]
    last = steps[-1]
    after = [s for s in steps if s >= base]
    out = {"baseline_step": base, "last_step": last}
    for column in COLUMNS:
        first, final = table[base].get(column, 0.0), table[last].get(column, 0.0)
        out[column] = {
            "baseline": first, "last": final, "ratio": final / first if first else None,
            "slope_per_step": slope([(s, table[s].get(column, 0.0)) for s in after]),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("team", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="steps before the baseline is taken")
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="read the metrics of --run-dir, run nothing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    team = load_team(args.team)
    team.storage_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="botlab-soak-"))
    if args.report_only:
        if not (team.run_dir / STORE_NAME).is_file():
            print(f"error: --report-only: no run in {team.run_dir}")
            return 2
    else:
        code = run_team(team, steps=args.steps)
        if code != 0:
            return code
    db = sqlite3.connect(team.run_dir / STORE_NAME)
    table = per_step(db)
    if not table:
        print(f"error: no step in {team.run_dir} recorded process metrics")
        return 2
    result = {"steps": table, "summary": summarise(table, args.warmup)}
    if args.json:
        print(json.dumps(result))
        return 0
    short = ["rss MB", "child MB", "fds", "threads", "children", "disk MB"]
    print(f"{len(table)} steps of {team.name} in {team.run_dir}")
    print("  step " + " ".join(f"{h:>9s}" for h in short))
    for step, row in table.items():
        print(f"  {step:4d} " + " ".join(f"{row.get(c, 0.0):9.1f}" for c in COLUMNS))
    summary = result["summary"]
    print(f"baseline: the same process after step {summary['baseline_step']} (warm-up); last: step {summary['last_step']}")
    for name, column in zip(short, COLUMNS):
        s = summary[column]
        ratio = f"{s['ratio']:.3f}" if s["ratio"] is not None else "n/a"
        print(f"  {name:9s} last/baseline {ratio:>6s}   growth {s['slope_per_step']:+.2f} per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
