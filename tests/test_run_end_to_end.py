"""`botlab run` end to end on the embedded model: steps commit, checkpoints load, a clean stop resumes exactly."""

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY_TEAM = """
name: tiny
goal: "Short list functions."
storage_dir: {storage}
model: {{name: builtin:smollm2-135m, engine: {engine}, max_model_len: 1024}}
roles:
  proposer: {{max_new_tokens: 64, prime_answer: true}}
  solver: {{max_new_tokens: 32, prime_answer: true}}
selfplay:
  propose_batch: 1
  solve_batch: 1
  references: 1
  learnability_rollouts: 2
  seed_size: 2
  seed_max_rounds: 1
  induction_inputs: 3
  induction_visible: 2
train: {{steps: 10, lr: 1.0e-5, micro_batch: 4}}
schedules: {{checkpoint_every_steps: 2, keep_checkpoints: 1, digest_every: 1h}}
"""


def botlab(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "botlab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def buffer_state(db_path: Path) -> list:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT task_type, task_id, added_step FROM buffers ORDER BY task_type, task_id").fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_demo_team_runs_checkpoints_and_resumes(tmp_path, builtin_model_dir):
    team = tmp_path / "tiny.yaml"
    team.write_text(textwrap.dedent(TINY_TEAM.format(storage=tmp_path / "runs", engine="transformers")))
    first = botlab("run", str(team), "--steps", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = tmp_path / "runs" / "tiny"
    db_path = run_dir / "botlab.sqlite"
    db = sqlite3.connect(db_path)
    steps = db.execute("SELECT step, summary, timings, checkpoint FROM steps ORDER BY step").fetchall()
    assert [s[0] for s in steps] == [1]
    summary = json.loads(steps[-1][1])
    assert {"rewards", "solve_rates", "valid_rate", "format_rate"} <= set(summary)
    assert {"propose", "validate", "review", "learnability", "solve", "learn"} <= set(json.loads(steps[-1][2]))
    assert db.execute("SELECT COUNT(*) FROM samples WHERE step = 1").fetchone()[0] >= 2
    checkpoint = Path(steps[-1][3])
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
