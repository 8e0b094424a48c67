"""`botlab run` end to end on the embedded model: steps commit, checkpoints load, a clean stop resumes exactly."""

import json
import sqlite3
from pathlib import Path

import pytest

from tests.fixtures.runs import botlab, check_run_invariants, write_tiny_team


def buffer_state(db_path: Path) -> list:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT task_type, task_id, added_step FROM buffers ORDER BY task_type, task_id").fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_demo_team_runs_checkpoints_and_resumes(tmp_path, builtin_model_dir):
    team = write_tiny_team(tmp_path, keep_samples=1)
    # A seed file (selfplay.seed_file) is admitted before the seed rounds, into both program buffers.
    seeded = "def f(s):\n    return s[::-1] + s[0]"
    (tmp_path / "seed.jsonl").write_text(json.dumps({"program": seeded, "input": "'abc'"}) + "\n")
    team.write_text(team.read_text().replace("selfplay:\n", "selfplay:\n  seed_file: seed.jsonl\n", 1))
    first = botlab("run", str(team), "--steps", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "seed file seed.jsonl: buffers" in first.stdout + first.stderr
    run_dir = tmp_path / "runs" / "tiny"
    db_path = run_dir / "botlab.sqlite"
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT b.task_type, t.outputs FROM buffers b JOIN tasks t ON t.id = b.task_id "
                      "WHERE t.program = ? ORDER BY 1", (seeded,)).fetchall() == [
        ("abduction", '["\'cbaa\'"]'), ("deduction", '["\'cbaa\'"]')]
    steps = db.execute("SELECT step, summary, timings, checkpoint FROM steps ORDER BY step").fetchall()
    assert [s[0] for s in steps] == [1]
    summary = json.loads(steps[-1][1])
    assert {"rewards", "solve_rates", "valid_rate", "format_rate"} <= set(summary)
    assert {"propose", "validate", "review", "learnability", "solve", "learn"} <= set(json.loads(steps[-1][2]))
    assert db.execute("SELECT COUNT(*) FROM samples WHERE step = 1").fetchone()[0] >= 2
    checkpoint = run_dir / steps[-1][3]  # relative to the run dir
    db.close()

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(checkpoint) is not None

    before = buffer_state(db_path)
    status = botlab("status", str(team), "--json")
    assert status.returncode == 0
    info = json.loads(status.stdout)
    assert info["state"] == "stopped" and info["step"] == 1
    assert info["engine"]["name"] == "transformers"

    second = botlab("run", str(team), "--steps", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming after step 1" in second.stdout + second.stderr
    db = sqlite3.connect(db_path)
    assert [s for (s,) in db.execute("SELECT step FROM steps ORDER BY step")] == [1, 2]
    db.close()
    after = buffer_state(db_path)
    assert set(before) <= set(after)  # the resumed run started from exactly the committed buffers
    assert check_run_invariants(run_dir)["steps"] == 2
    db = sqlite3.connect(db_path)
    assert [s for (s,) in db.execute("SELECT DISTINCT step FROM samples")] == [2]  # keep_samples_steps: 1
    resources = dict(db.execute("SELECT name, value FROM metrics WHERE step = 2 AND name LIKE 'process/%' "
                                "OR step = 2 AND name LIKE 'disk/%'").fetchall())
    db.close()
    assert resources["process/rss_mb"] > 100 and resources["process/open_fds"] > 3
    # the disk measure counts the run dir: the database, the checkpoint and the resume state (hard-linked once)
    assert resources["disk/run_dir_mb"] > 500
