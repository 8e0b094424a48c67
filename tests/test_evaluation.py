"""Held-out evaluation: data checks, answers verified in the real sandbox, and the CLI on the embedded model."""

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botlab.agents.solver import Solver
from botlab.cli import app
from botlab.config import SelfPlayConfig
from botlab.evaluation import EvalError, _check, load_problems
from botlab.store import open_store

PROBLEMS = [
    {"code": "def f(s):\n    return s[::-1] + 'x'", "input": "'abc'", "output": "'cbax'"},
    {"code": "def f(a, b):\n    return [x * b for x in a]", "input": "[1, 2], 3", "output": "[3, 6]"},
]


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "crux.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PROBLEMS) + "\n")
    return path


def test_data_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PROBLEMS[0]) + "\n{not json\n")
    with pytest.raises(EvalError, match=r"bad.jsonl:2: not JSON"):
        load_problems("cruxeval-o", bad, None)
    bad.write_text(json.dumps({"code": "def f(): pass", "input": "1"}) + "\n")
    with pytest.raises(EvalError, match=r"bad.jsonl:1: missing or non-string field\(s\): output"):
        load_problems("cruxeval-o", bad, None)
    with pytest.raises(EvalError, match="--data FILE is required for cruxeval-i"):
        load_problems("cruxeval-i", None, None)
    with pytest.raises(EvalError, match="unknown suite 'mmlu'"):
        load_problems("mmlu", None, None)


def test_output_and_input_prediction_are_checked_by_value(sandbox, data_file):
    solver = Solver(SelfPlayConfig())
    [p1, p2] = load_problems("cruxeval-o", data_file, None)
    answers = ["```output\n'cbax'\n```", "```output\n'abc'\n```", "no block at all"]
    assert _check("cruxeval-o", solver, sandbox, p1, answers) == [True, False, False]
    assert _check("cruxeval-o", solver, sandbox, p2, ["```output\n[3,6]\n```"]) == [True]
    assert _check("cruxeval-i", solver, sandbox, p2, ["```input\n[1, 2], 3\n```", "```input\n[1.0, 2], 3\n```",
                                                      "```input\n[1], 3\n```"]) == [True, True, False]


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(sandbox):
    problems = load_problems("humaneval", None, 5)
    solver = Solver(SelfPlayConfig())
    for problem in problems:
        right = f"```python\n{problem['prompt']}{problem['canonical_solution']}\n```"
        wrong = f"```python\n{problem['prompt']}    return None\n```"
        assert _check("humaneval", solver, sandbox, problem, [right, wrong]) == [True, False], problem["task_id"]


@pytest.mark.slow
def test_eval_command_on_the_embedded_model(tmp_path, data_file, builtin_model_dir):
    team = tmp_path / "team.yaml"
    team.write_text(f"name: ev\nstorage_dir: {tmp_path}\nmodel: {{engine: transformers}}\n"
                    "roles: {solver: {max_new_tokens: 24}}\n")
    with open_store(tmp_path / "ev"):  # a run dir whose store exists: the result is recorded there
        pass
    result = CliRunner().invoke(app, ["eval", str(team), "--suite", "cruxeval-o", "--data", str(data_file),
                                      "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["problems"] == 2 and 0.0 <= info["score"] <= 1.0 and info["engine"] == "transformers"
    # Self-play never sees eval programs: nothing of the eval lands in tasks, buffers or samples.
    db = sqlite3.connect(tmp_path / "ev" / "botlab.sqlite")
    assert [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("tasks", "buffers", "samples")] == [0, 0, 0]
    assert db.execute("SELECT COUNT(*) FROM metrics WHERE name = 'eval/cruxeval-o'").fetchone()[0] == 1
    db.close()
