"""selfplay.warm_start: expert iteration before step 1 trains only sandbox-verified answers, once per run."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch

from botlab.agents.reviewer import fingerprint
from botlab.agents.solver import Solver
from botlab.config import SelfPlayConfig, TeamConfig
from botlab.engines import Completion, create_engine
from botlab.rundir import RESUME_KEY, WARM_START_DONE_KEY
from botlab.selfplay import warm_start
from botlab.selfplay.buffers import insert_task, row_to_triplet
from botlab.selfplay.checking import check_answers
from botlab.selfplay.checkpoints import load_resume_state
from botlab.selfplay.generation import Sample
from botlab.selfplay.learner import Learner
from botlab.selfplay.rewards import Reward
from botlab.selfplay.step import SelfPlay
from botlab.selfplay.warm_start import sft_rows, verified
from botlab.store import open_store
from botlab.tasks import Triplet
from tests.fixtures.runs import botlab, check_run_invariants, write_tiny_team

WARM_START = "  warm_start: {enabled: true, samples_per_task: 4, epochs: 1}\n"
# Tasks a 135M model sometimes gets right (the zero triplet alone it almost never does in a few tries).
EASY = [("deduction", "def f(x):\n    return x", "[1, 2, 3]"), ("deduction", "def f(s):\n    return s + s", "'ab'"),
        ("abduction", "def f(x):\n    return x", "7"), ("induction", "def f(x):\n    return x", "1")]


def sample(task: Triplet, tokens: list[int], correct: bool, mask: list[float] | None = None) -> Sample:
    completion = Completion("text", tokens, [0.0] * len(tokens), "stop")
    return Sample("solver", task.task_type, [1, 2, 3], "prompt", completion, 0.7,
                  reward=Reward(1.0 if correct else -0.5, {"correct": correct}), task=task, train_mask=mask)


def test_only_correct_distinct_answers_are_kept_and_only_sampled_tokens_are_learned():
    a = Triplet("def f(x):\n    return x", ["1"], ["1"], "", "deduction", id=1)
    b = Triplet("def f(x):\n    return -x", ["1"], ["-1"], "", "deduction", id=2)
    samples = [sample(a, [7], False), sample(a, [8], True), sample(a, [8], True), sample(a, [9], True),
               sample(a, [10], True), sample(b, [11], False), sample(b, [12, 13, 14], True, mask=[1.0, 0.0, 1.0])]
    kept = verified(samples, max_per_task=2)
    assert [s.completion.token_ids for s in kept] == [[8], [9], [12, 13, 14]]
    rows = sft_rows(kept)
    assert rows[2] == {"input_ids": [1, 2, 3, 12, 13, 14], "labels": [-100, -100, -100, 12, -100, 14]}


def recheck(sandbox, visible: int, trained: list[tuple[Triplet, str]]) -> list[bool]:
    """The fine-tuned replies parsed and checked again by the real sandbox, apart from the warm start's own check."""
    solver = Solver(SelfPlayConfig(induction_inputs=visible + 1, induction_visible=visible))
    return check_answers(sandbox, visible, [(task, solver.parse(task.task_type, reply)) for task, reply in trained])


@pytest.mark.slow
def test_a_round_fine_tunes_the_learner_on_sandbox_verified_answers_only(tmp_path, builtin_model_dir, sandbox):
    team = TeamConfig(name="warm", storage_dir=tmp_path, model={"name": str(builtin_model_dir), "max_model_len": 512},
                      roles={"solver": {"max_new_tokens": 32, "prime_answer": True, "temperature": 0.7}},
                      selfplay={"induction_inputs": 3, "induction_visible": 2,
                                "warm_start": {"enabled": True, "samples_per_task": 6, "epochs": 1, "lr": 5e-5}})
    learner = Learner(builtin_model_dir, team.model, team.train)
    engine, _ = create_engine(team.model.model_copy(update={"engine": "transformers"}), builtin_model_dir,
                              learner.shareable_model())
    before = {n: p.detach().clone() for n, p in learner.shareable_model().named_parameters()}
    with open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, engine, sandbox, learner)
        selfplay.ensure_zero_triplets()
        programs = [(program, [arg] * (3 if task_type == "induction" else 1)) for task_type, program, arg in EASY]
        programs.append(("def f(x):\n    return [x, x]", ["[1]"]))  # the held-out one
        checks = sandbox.validate_many(programs)
        with store.transaction() as db:
            for (task_type, _, _), (program, inputs), check in zip(EASY, programs, checks):
                task = Triplet(program, inputs, check.outputs, "", task_type)
                selfplay.buffers.add(db, task_type, insert_task(db, 0, task, "admitted", None, fingerprint(program)), 0)
            held = insert_task(db, 0, Triplet(*programs[-1], checks[-1].outputs, "", "deduction"), "heldout", None)
        report = warm_start.run_round(selfplay, 1, team.selfplay.warm_start, on_phase=lambda p: None)
        values = warm_start.save(selfplay, [report])
        assert store.get(RESUME_KEY) == "state/step-000000" and store.get(WARM_START_DONE_KEY) is True
    engine.close()

    assert sum(report.sampled.values()) == 6 * (3 + len(EASY))  # the three zero triplets and the easy tasks
    assert 0 < len(report.trained) and sum(report.correct.values()) < sum(report.sampled.values())
    assert held not in {s.task.id for s in report.trained}
    assert all(recheck(sandbox, 2, [(s.task, s.text) for s in report.trained]))
    # SFTTrainer trained the learner's own module, in place
    after = dict(learner.shareable_model().named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)
    assert report.fine_tune["updates"] >= 1 and values["warm_start/trained"] == len(report.trained)
    # saved as step 0's resume state: a restart before step 1 goes on from the warm-started weights
    restored = Learner(builtin_model_dir, team.model, team.train)
    load_resume_state(team.run_dir / "state" / "step-000000", restored)
    assert all(torch.equal(p, after[n]) for n, p in restored.shareable_model().named_parameters())
    assert (team.run_dir / "checkpoints" / "step-000000" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_run_warm_starts_once_and_never_sees_held_out_tasks(tmp_path, builtin_model_dir, sandbox):
    team = write_tiny_team(tmp_path)
    text = team.read_text().replace("selfplay:\n", "selfplay:\n" + WARM_START, 1)
    team.write_text(text.replace("keep_checkpoints: 1", "keep_checkpoints: 2"))
    first = botlab("run", str(team), "--steps", "1")
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert "warm start round 1" in output
    run_dir = tmp_path / "runs" / "tiny"
    db = sqlite3.connect(run_dir / "botlab.sqlite")
    db.row_factory = sqlite3.Row
    metrics = {r["name"]: r["value"] for r in db.execute("SELECT name, value FROM metrics WHERE step = 0")}
    assert len(db.execute("SELECT message FROM events WHERE kind = 'warm_start'").fetchall()) == 1
    assert json.loads(db.execute("SELECT value FROM kv WHERE key = 'warm_start_done'").fetchone()[0]) is True
    seeded = db.execute("SELECT COUNT(*) FROM buffers WHERE added_step <= 0").fetchone()[0]
    assert metrics["warm_start/sampled"] == 4 * seeded

    # What was fine-tuned: buffered tasks only, every answer correct when the real sandbox checks it again.
    trained = [json.loads(line) for line in (run_dir / "warm_start" / "round-1.jsonl").read_text().splitlines()]
    assert metrics["warm_start/trained"] == len(trained)
    tasks = {r["id"]: r for r in db.execute("SELECT * FROM tasks")}
    assert all(tasks[t["task_id"]]["status"] == "admitted" for t in trained)
    assert all(recheck(sandbox, 2, [(row_to_triplet(tasks[t["task_id"]], t["task_type"]), t["reply"])
                                    for t in trained]))
    held = [r for r in tasks.values() if r["status"] == "heldout"]
    assert not [r for r in held if r["task_type"] != "induction" and any(r["program"] in t["prompt"] for t in trained)]
    db.close()
    # written only when something was fine-tuned (the tiny team's seed set is often too hard for any correct answer)
    assert (run_dir / "checkpoints" / "step-000000" / "model.safetensors").is_file() == bool(trained)
    check_run_invariants(run_dir)

    # A resume neither seeds nor warm-starts again: it goes on from step 1's weights.
    mtime = (run_dir / "warm_start" / "round-1.jsonl").stat().st_mtime_ns
    second = botlab("run", str(team), "--steps", "1")
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert "resuming after step 1" in output
    assert "warm start" not in output and "seed round" not in output
    assert (run_dir / "warm_start" / "round-1.jsonl").stat().st_mtime_ns == mtime
    db = sqlite3.connect(run_dir / "botlab.sqlite")
    assert db.execute("SELECT COUNT(*) FROM events WHERE kind = 'warm_start'").fetchone()[0] == 1
    db.close()
    assert check_run_invariants(run_dir)["steps"] == 2
