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
          "resume_state", "last_checkpoint", "curriculum", "recent_feedback", "checked_at"}


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


def test_a_moved_run_dir_still_finds_its_state(tmp_path):
    """Paths are stored relative to the run dir: after moving it, status (and a resume, which reads the same
    resolved path in daemon._build) find the resume state and the checkpoint; an old absolute value still works."""
    import shutil

    from botlab.rundir import RESUME_KEY

    path = team_file(tmp_path)
    old_run = load_team(path).run_dir
    with open_store(old_run) as store:
        state, checkpoint = old_run / "state" / "step-000002", old_run / "checkpoints" / "step-000002"
        for folder in (state, checkpoint):
            folder.mkdir(parents=True)
        assert store.relative(state) == "state/step-000002"
        store.put(RESUME_KEY, store.relative(state))
        with store.transaction() as db:
            db.execute("INSERT INTO steps(step, started_at, finished_at, checkpoint) VALUES (2, 0, 1, ?)",
                       (store.relative(checkpoint),))
            db.execute("INSERT INTO steps(step, started_at, finished_at, checkpoint) VALUES (1, 0, 1, ?)",
                       (str(old_run / "checkpoints" / "step-000001"),))  # written by an older botlab
    shutil.move(tmp_path / "runs", tmp_path / "elsewhere")
    path.write_text(path.read_text().replace(str(tmp_path / "runs"), str(tmp_path / "elsewhere")))
    new_run = load_team(path).run_dir
    info = status_json(path)
    assert info["resume_state"] == {"path": str(new_run / "state" / "step-000002"), "present": True}
    assert info["last_checkpoint"] == {"path": str(new_run / "checkpoints" / "step-000002"), "present": True}
    with open_store(new_run) as store:
        assert store.resolve(store.get(RESUME_KEY)).is_dir()
        # An absolute path of the old place is found at the same place under the moved run dir.
        assert store.resolve(str(old_run / "state" / "step-000002")) == new_run / "state" / "step-000002"
        assert store.resolve(str(old_run / "checkpoints" / "step-000001")) == old_run / "checkpoints" / "step-000001"
        # ...and one outside the run dir is kept as it is.
        assert store.relative(tmp_path / "x") == str(tmp_path / "x")


def test_status_shows_the_curriculum_and_what_each_feedback_changed(tmp_path, monkeypatch):
    from botlab import cli
    from botlab.reporting.feedback import apply_pending, record
    from botlab.notifiers.replies import Incoming

    path = team_file(tmp_path)
    with open_store(load_team(path).run_dir) as store:
        for n, text in enumerate(["/weights induction=0.5", "deduction is too easy", "make it more interesting"]):
            record(store, Incoming(channel="email", external_id=f"<{n}@x>", sender="h@x.test", text=text))
        apply_pending(store)
    info = status_json(path)
    assert info["curriculum"]["task_weights"]["induction"] == 0.5
    assert [(f["text"], f["status"]) for f in info["recent_feedback"]] == [
        ("/weights induction=0.5", "applied"), ("deduction is too easy", "applied"),
        ("make it more interesting", "question")]
    assert info["recent_feedback"][1]["response"] == "deduction difficulty +0 -> +1"
    monkeypatch.setattr(cli.console, "width", 250)  # one line per row
    table = CliRunner().invoke(app, ["status", str(path)])
    assert table.exit_code == 0, table.output
    assert "weights deduction 1, abduction 1, induction 0.5; difficulty +0; deduction difficulty +1" in table.output
    assert '"deduction is too easy" -> deduction difficulty +0 -> +1' in table.output
    assert '"make it more interesting" -> question: I did not understand' in table.output


def test_status_shows_held_out_scores_against_their_start(tmp_path):
    from botlab.evaluation import EvalResult, record

    path = team_file(tmp_path)
    with open_store(load_team(path).run_dir) as store:
        record(store, EvalResult("heldout/deduction", 0.125, 0.05, 32, 1, 1.0), step=0)
        record(store, EvalResult("heldout/deduction", 0.25, 0.1, 32, 1, 1.0), step=10)
    info = status_json(path)
    assert info["held_out"]["heldout/deduction"] | {} == {"score": 0.25, "ci95": 0.1, "problems": 32, "step": 10,
                                                         "start_score": 0.125, "start_step": 0}
    table = CliRunner().invoke(app, ["status", str(path)]).output  # the cell wraps at the table's width
    assert "heldout/deduction 0.250 ± 0.100 (n=32, step 10); 0.125" in table and "at step 0" in table
