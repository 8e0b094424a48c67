"""Seed files (selfplay.seed_file, `botlab seed`): read with clear errors, admitted through the real sandbox and
reviewer into both program buffers, written by the real model through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from botlab.config import TeamConfig
from botlab.selfplay.seed_file import SeedFileError, read_seed_file, write_seed_file
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store
from botlab.teamfile import TeamFileError, load_team

GOOD = {"program": "def f(xs):\n    return [x * 2 for x in xs if x % 2]", "input": "[1, 2, 3]"}


def lines(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


@pytest.mark.parametrize("text, where", [
    (lines(GOOD, "{not json"), ":2: not JSON"),
    (lines(GOOD, {"program": "def f(a):\n    return a"}), ":2: missing or non-string field(s): input"),
    (lines([1, 2]), ":1: missing or non-string field(s): program, input"),
    (lines({"program": " ", "input": "1"}), ":1: missing or non-string field(s): program"),
])
def test_a_bad_line_is_named(tmp_path, text, where):
    path = tmp_path / "seed.jsonl"
    path.write_text(text)
    with pytest.raises(SeedFileError) as err:
        read_seed_file(path)
    assert str(err.value).startswith(f"{path}{where}")


def test_written_tasks_read_back(tmp_path):
    path = tmp_path / "deep" / "seed.jsonl"
    tasks = read_seed_file(_file(tmp_path, lines(GOOD, "", GOOD | {"input": "[5]"})))
    write_seed_file(path, tasks)
    again = read_seed_file(path)
    assert [(t.program, t.inputs) for t in again] == [(GOOD["program"], ["[1, 2, 3]"]), (GOOD["program"], ["[5]"])]
    assert not path.with_name("seed.jsonl.partial").exists()


def test_seed_file_tasks_are_checked_like_proposals(tmp_path, sandbox):
    rows = [
        GOOD,
        GOOD | {"program": GOOD["program"] + "  # the same again"},  # same program, same input
        GOOD | {"input": "[7, 9]"},  # same program, a new input: a task of its own (inputs_per_program 2)
        {"program": "def f(a):\n    return a", "input": "3"},  # the zero triplet's program, a new input: identity
        {"program": "def f(a):\n    return open('/etc/passwd').read()", "input": "1"},  # refused by the gate
        {"program": "def f(a, b):\n    return a + b", "input": "'Hello world'"},  # fails for its input
        {"program": "def f(s):\n    return s[::-1].upper()", "input": "'abc'"},
    ]
    team = TeamConfig(name="seedfile", storage_dir=tmp_path, selfplay={"heldout_size": 0},
                      roles={"reviewer": {"inputs_per_program": 2}})
    with open_store(team.run_dir) as store:
        play = SelfPlay(team, store, None, sandbox, learner=None)
        play.ensure_zero_triplets()
        outcomes = play.seed_from_file(read_seed_file(_file(tmp_path, lines(*rows))))
        sizes = play.buffers.sizes()
        buffered = {(t.program, t.inputs[0], t.outputs[0]) for t in play.buffers.tasks("abduction")}
    assert outcomes == {"admitted": 3, "exact_duplicate": 1, "identity": 1, "forbidden_call": 1, "exception": 1}
    assert sizes == {"deduction": 4, "abduction": 4, "induction": 1}  # the zero triplets and the 3 admitted
    # The outputs are the sandbox's.
    assert (GOOD["program"], "[7, 9]", "[14, 18]") in buffered and ("def f(s):\n    return s[::-1].upper()", "'abc'",
                                                                   "'CBA'") in buffered


def test_a_missing_seed_file_is_a_team_file_error(tmp_path):
    team = tmp_path / "team.yaml"
    team.write_text("name: t\nselfplay:\n  seed_file: seeds/none.jsonl\n")
    with pytest.raises(TeamFileError) as err:
        load_team(team)
    [problem] = err.value.problems
    assert problem.path == "selfplay.seed_file" and "seeds/none.jsonl is not a file" in problem.message


@pytest.mark.slow
def test_botlab_seed_writes_what_the_untrained_model_admits(tmp_path):
    team = tmp_path / "team.yaml"
    team.write_text(
        "name: seeder\nmodel: {name: 'builtin:smollm2-135m', engine: transformers, max_model_len: 1024}\n"
        "roles:\n  proposer: {temperature: 0.7, max_new_tokens: 64, prime_answer: true}\n"
        "selfplay: {propose_batch: 3, references: 1, seed_call_inputs: true}\n")
    out = tmp_path / "seeds" / "seed.jsonl"
    result = subprocess.run([sys.executable, "-m", "botlab.cli", "seed", str(team), "--out", str(out), "--rounds", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "seed round 1/1" in result.stdout and f"to {out}" in result.stdout
    tasks = read_seed_file(out)  # an empty file is a fine outcome for one round; its lines must read back
    assert f"wrote {len(tasks)} tasks" in result.stdout
    assert all(t.program != "def f(a):\n    return a" for t in tasks)
    assert len({(t.program, t.inputs[0]) for t in tasks}) == len(tasks)  # each task once, not once per buffer
    assert not list(tmp_path.glob("**/botlab.sqlite"))  # the scratch run dir is gone


def _file(tmp_path, text: str):
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    return path
