"""Held-out evaluation: data checks, answers verified in the real sandbox, and the CLI on the embedded model."""

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botlab.agents.solver import Solver
from botlab.cli import app
from botlab.config import SelfPlayConfig
from botlab.evaluation import EvalError, _humaneval_program, answer_kinds, load_problems
from botlab.selfplay.buffers import insert_task
from botlab.selfplay.checking import check_answers
from botlab.store import open_store
from botlab.tasks import Triplet

REPO = Path(__file__).resolve().parents[1]

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
    with pytest.raises(EvalError, match="read from the run's store"):
        load_problems("heldout", None, None)


def test_output_and_input_prediction_are_checked_by_value(sandbox, data_file):
    solver = Solver(SelfPlayConfig())
    [p1, p2] = load_problems("cruxeval-o", data_file, None)

    def check(problem, task_type, answers):
        task = Triplet(problem["code"], [problem["input"]], [problem["output"]], task_type=task_type)
        return check_answers(sandbox, 5, [(task, solver.parse(task_type, a)) for a in answers])

    answers = ["```output\n'cbax'\n```", "```output\n'abc'\n```", "no block at all"]
    assert check(p1, "deduction", answers) == [True, False, False]
    assert check(p2, "deduction", ["```python\nassert f([1, 2], 3) == [3,6]\n```"]) == [True]
    assert check(p2, "abduction", ["```input\n[1, 2], 3\n```", "```input\n[1.0, 2], 3\n```",
                                   "```input\n[1], 3\n```"]) == [True, True, False]


def test_answer_kinds_count_what_kind_of_value_each_answer_was(sandbox, data_file):
    """A string problem answered with a number and with the right string, a list problem with a wrong list and with
    no readable answer: the table says so, and its right answers are the sandbox's verdicts."""
    solver = Solver(SelfPlayConfig())
    [p1, p2] = [Triplet(p["code"], [p["input"]], [p["output"]]) for p in load_problems("cruxeval-o", data_file, None)]
    items = [(task, solver.parse("deduction", f"```output\n{answer}\n```"))
             for task, answer in [(p1, "3"), (p1, "'cbax'"), (p2, "[3, 5]")]]
    items.append((p2, solver.parse("deduction", "I think it is three")))
    correct = check_answers(sandbox, 5, items)
    assert correct == [False, True, False, False]
    assert answer_kinds(items, correct) == {"gold": {"str": [2, 1, 1], "list": [2, 1, 0]},
                                            "answered": {"number": 1, "str": 1, "list": 1, "unreadable": 1}}


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(sandbox):
    for problem in load_problems("humaneval", None, 5):
        right = f"```python\n{problem['prompt']}{problem['canonical_solution']}\n```"
        wrong = f"```python\n{problem['prompt']}    return None\n```"
        results = sandbox.validate_many([(_humaneval_program(problem, t), [""]) for t in (right, wrong)])
        assert [r.valid for r in results] == [True, False], problem["task_id"]


def test_bad_suites_and_files_are_refused_before_a_model_loads(tmp_path, data_file):
    team = tmp_path / "team.yaml"
    team.write_text(f"name: ev\nstorage_dir: {tmp_path}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(team), "--suite", "mmlu"])
    assert result.exit_code == 2 and "unknown suite 'mmlu'" in result.output
    result = runner.invoke(app, ["eval", str(team), "--suite", "heldout"])
    assert result.exit_code == 2 and "needs a run" in result.output
    result = runner.invoke(app, ["eval", str(team), "--suite", "cruxeval-i"])
    assert result.exit_code == 2 and "--data FILE is required" in result.output
    result = runner.invoke(app, ["eval", str(team), "--suite", "humaneval", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such folder" in result.output


@pytest.mark.slow
def test_eval_command_runs_every_suite_on_the_demo_team(tmp_path, data_file, sandbox, builtin_model_dir):
    """The demo team (primed answers, engine auto) through the CLI: one model load, all four suites."""
    team_text = ((REPO / "teams" / "demo-cpu.yaml").read_text().replace("storage_dir: ../runs", f"storage_dir: {tmp_path}")
                 .replace("seed_file: seeds/", f"seed_file: {REPO / 'teams' / 'seeds'}/"))
    team = tmp_path / "demo.yaml"
    team.write_text(team_text)
    run_dir = tmp_path / "demo-cpu"
    with open_store(run_dir) as store:  # a run whose held-out split has two deduction tasks and one abduction task
        with store.transaction() as db:
            for task_type, (code, arg) in [("deduction", ("def f(x):\n    return x + 1", "3")),
                                           ("deduction", ("def f(s):\n    return s * 2", "'ab'")),
                                           ("abduction", ("def f(x):\n    return x - 1", "5"))]:
                [check] = sandbox.validate_many([(code, [arg])])
                insert_task(db, -1, Triplet(code, [arg], check.outputs, task_type=task_type), "heldout", None)
    result = CliRunner().invoke(app, ["eval", str(team), "--suite", "heldout", "--suite", "humaneval",
                                      "--suite", "cruxeval-o", "--suite", "cruxeval-i", "--data", str(data_file),
                                      "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert info["engine"].startswith(("vllm", "transformers"))
    by_suite = {r["suite"]: r for r in info["results"]}
    assert set(by_suite) == {"heldout/deduction", "heldout/abduction", "humaneval", "cruxeval-o", "cruxeval-i"}
    expected_n = {"heldout/deduction": 2, "heldout/abduction": 1, "humaneval": 2, "cruxeval-o": 2, "cruxeval-i": 2}
    for suite, r in by_suite.items():
        n = expected_n[suite]
        assert r["problems"] == n, suite
        # pass@1 of greedy answers: a whole number of correct problems out of n, each checked in the sandbox
        assert 0.0 <= r["score"] <= 1.0 and abs(r["score"] * n - round(r["score"] * n)) < 1e-9, (suite, r)
    # output prediction also says what kind of value each answer was, against its problem's output
    for suite, gold in [("cruxeval-o", {"str", "list"}), ("heldout/deduction", {"number", "str"})]:
        kinds = by_suite[suite]["kinds"]
        assert set(kinds["gold"]) == gold and sum(kinds["answered"].values()) == 2
        assert sum(right for _, _, right in kinds["gold"].values()) == round(by_suite[suite]["score"] * 2)
    assert by_suite["cruxeval-i"]["kinds"] == by_suite["humaneval"]["kinds"] == {}
    # Recorded in the run's history; nothing of the eval lands in tasks (beyond the split), buffers or samples.
    db = sqlite3.connect(run_dir / "botlab.sqlite")
    assert [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("tasks", "buffers", "samples")] == [3, 0, 0]
    names = {n for (n,) in db.execute("SELECT name FROM metrics")}
    assert {"eval/heldout/deduction", "eval_ci95/heldout/deduction", "eval/humaneval", "eval/cruxeval-o"} <= names
    db.close()
