"""`botlab bench learning` on the tiny team: a fresh run, then the base and the trained model scored alike."""

import json

import pytest

from tests.fixtures.runs import botlab, check_run_invariants, write_tiny_team


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    team = write_tiny_team(tmp_path)
    both = botlab("bench", "learning", str(team), "--steps", "2", "--minutes", "1")
    assert both.returncode == 2 and "exactly one of --minutes and --steps" in both.stderr
    missing = botlab("bench", "learning", str(team), "--steps", "2", "--data", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.mark.slow
def test_two_steps_then_base_and_trained_scores(tmp_path, builtin_model_dir):
    team = write_tiny_team(tmp_path)
    run_dir = tmp_path / "bench"
    done = botlab("bench", "learning", str(team), "--steps", "2", "--window", "1", "--humaneval-limit", "2",
                  "--run-dir", str(run_dir), "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert result["steps"] == 2 and result["window"] == 1
    assert result["models"]["end"].endswith("step-000002")  # the trained checkpoint, not the base model
    for moment in ("start", "end"):
        score, ci, n = result[moment]["held_out"]["humaneval"]
        assert n == 2 and 0 <= score <= 1 and ci >= 0
        p, low, high, samples = result[moment]["selfplay"]["solver_format"]
        assert samples > 0 and 0 <= low <= p <= high <= 1
    assert set(result["start"]["held_out"]) == set(result["end"]["held_out"])
    assert {"propose", "solve", "learn"} <= set(result["seconds_per_phase"])
    check_run_invariants(run_dir / "tiny")


def test_report_reads_start_against_end_with_answer_kinds():
    from bench.learning import report

    def moment(score, kinds):
        return {"held_out": {"cruxeval-o": (score, 0.03, 467)},
                "answer_kinds": {"cruxeval-o": {"gold": kinds, "answered": {}}},
                "selfplay": {"solver_format": (0.9, 0.85, 0.94, 240)}}

    result = {"steps": 94, "team": "demo-cpu", "step_seconds": 3531.0, "run_dir": "/runs/demo-cpu", "window": 5,
              "seconds_per_phase": {"learn": 15.8, "propose": 15.9},
              "start": moment(0.111, {"list": [129, 0, 0], "number": [152, 130, 29]}),
              "end": moment(0.2, {"list": [129, 12, 3], "number": [152, 140, 31]})}
    text = report(result)
    assert "cruxeval-o            0.111 ± 0.030 ->  0.200 ± 0.030  n=467  (intervals apart)" in text
    assert "    number      152  of that kind  130 ->  140  right   29 ->   31" in text
    assert "    list        129  of that kind    0 ->   12  right    0 ->    3" in text
    assert text.index("number") < text.index("list")  # the commonest kind of output first
    assert "average seconds per phase: learn 15.8, propose 15.9" in text
