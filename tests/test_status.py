"""`botlab status`: every JSON field, for a run that never started and for one with committed steps."""

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from botlab.cli import app
from botlab.store import open_store
from botlab.teamfile import load_team

FIELDS = {"team", "run_dir", "state", "step", "total_steps", "phase", "last_step_at", "seconds_per_step",
          "tokens_per_second", "rewards", "solve_rates", "valid_rate", "buffer_sizes", "last_digest",
          "next_digest_at", "pending_feedback", "unsent_messages", "last_eval", "engine", "errors_since_start",
          "checked_at"}


def team_file(tmp_path: Path) -> Path:
    path = tmp_path / "team.yaml"
    path.write_text(f"name: st\nstorage_dir: {tmp_path / 'runs'}\ntrain: {{steps: 40}}\n")
    return path


def status_json(path: Path) -> dict:
    result = CliRunner().invoke(app, ["status", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_not_started(tmp_path):
    info = status_json(team_file(tmp_path))
    assert info["state"] == "not started" and info["step"] == 0 and info["total_steps"] == 40


def test_fields_of_a_run_that_crashed(tmp_path):
    path = team_file(tmp_path)
    team = load_team(path)
    summary = {"rewards": {"deduction": {"proposer": 0.5, "solver": -0.5}}, "solve_rates": {"deduction": 0.25},
               "valid_rate": 0.75, "tokens_per_second": 321.0}
    with open_store(team.run_dir) as store:
        store.put("daemon_state", "running")  # recorded running, but nobody holds the lock: it crashed
        store.put("started_at", time.time() - 100)
        store.put("engine", {"name": "vllm", "why": "vllm: importable"})
        store.put("last_eval", {"suite": "cruxeval-o", "score": 0.1})
        store.log_event("error", "smtp down", level="error")
        with store.transaction() as db:
            db.execute("INSERT INTO steps(step, started_at, finished_at, summary) VALUES (1, 0, 30, ?)",
                       (json.dumps(summary),))
            db.execute("INSERT INTO steps(step, started_at, finished_at, summary) VALUES (2, 30, 70, ?)",
                       (json.dumps(summary),))
            db.execute("INSERT INTO tasks(id, step, task_type, program, inputs, outputs, status, created_at) "
                       "VALUES (1, 1, 'deduction', 'def f(a): return a', '[]', '[]', 'admitted', 0)")
            db.execute("INSERT INTO buffers(task_type, task_id, added_step) VALUES ('deduction', 1, 1)")
            db.execute("INSERT INTO feedback(channel, external_id, sender, received_at, text) "
                       "VALUES ('cli', 'x', 'me', 0, '/pause')")
    info = status_json(path)
    assert FIELDS <= set(info)
    assert info["state"] == "crashed"
    assert info["step"] == 2 and info["seconds_per_step"] == 35
    assert info["solve_rates"] == {"deduction": 0.25} and info["tokens_per_second"] == 321.0
    assert info["buffer_sizes"] == {"deduction": 1}
    assert info["pending_feedback"] == 1 and info["errors_since_start"] == 1
    assert info["engine"]["name"] == "vllm" and info["last_eval"]["suite"] == "cruxeval-o"

    table = CliRunner().invoke(app, ["status", str(path)])
    assert table.exit_code == 0 and "crashed" in table.output and "vllm: importable" in table.output
