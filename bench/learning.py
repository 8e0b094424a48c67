"""Does self-play learn? Run a team for N steps and compare the first and last steps' solver samples.

    python -m botlab.bench.learning teams/demo-cpu.yaml --steps 12 [--window 3] [--json]

Prints format compliance and solve rate per task type, with 95% Wilson intervals, for the first `window` steps
(the baseline: the model before training moved it much) and the last `window` steps, in one run. It also prints the
per-phase seconds of an average step. The run goes into a fresh directory under /tmp unless --run-dir is given.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import tempfile
from pathlib import Path

from botlab.daemon import run_team
from botlab.teamfile import load_team


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    if n == 0:
        return (float("nan"),) * 3
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def window_stats(db: sqlite3.Connection, first: int, last: int) -> dict:
    rows = db.execute(
        "SELECT role, task_type, parts FROM samples WHERE step BETWEEN ? AND ?", (first, last)
    ).fetchall()
    out: dict = {}
    for role in ("proposer", "solver"):
        picked = [(t, json.loads(p)) for r, t, p in rows if r == role]
        parsed = sum(1 for _, p in picked if p.get("parsed"))
        out[f"{role}_format"] = wilson(parsed, len(picked)) + (len(picked),)
    for task_type in ("deduction", "abduction", "induction"):
        solved = [json.loads(p) for r, t, p in rows if r == "solver" and t == task_type]
        out[f"solve_{task_type}"] = wilson(sum(1 for p in solved if p.get("correct")), len(solved)) + (len(solved),)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("team", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    team = load_team(args.team)
    team.storage_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="botlab-learning-"))
    code = run_team(team, steps=args.steps)
    if code != 0:
        return code
    db = sqlite3.connect(team.run_dir / "botlab.sqlite")
    last = db.execute("SELECT MAX(step) FROM steps").fetchone()[0]
    start = window_stats(db, 1, args.window)
    end = window_stats(db, last - args.window + 1, last)
    timings = [json.loads(t) for (t,) in db.execute("SELECT timings FROM steps")]
    phases = {k: sum(t.get(k, 0) for t in timings) / len(timings) for k in timings[-1]}
    result = {"steps": last, "window": args.window, "start": start, "end": end, "seconds_per_phase": phases}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{last} steps of {team.name}; first {args.window} steps vs last {args.window} (95% Wilson intervals)")
    for key in start:
        (p0, lo0, hi0, n0), (p1, lo1, hi1, n1) = start[key], end[key]
        print(f"  {key:18s} start {p0:5.2f} [{lo0:.2f}, {hi0:.2f}] n={n0:<4d} "
              f"end {p1:5.2f} [{lo1:.2f}, {hi1:.2f}] n={n1:<4d}")
    print("  average seconds per phase: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
