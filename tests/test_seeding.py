"""Seed rounds: inputs from calls of f the model writes (selfplay.seed_call_inputs), and one seed set for deduction
and abduction. Real store, real sandbox; the calls come from the real embedded model."""

from __future__ import annotations

from collections import Counter

import pytest

from botlab.config import SamplingConfig, SelfPlayConfig, TeamConfig
from botlab.engines import Completion
from botlab.selfplay.buffers import Buffers
from botlab.selfplay.generation import Sample
from botlab.selfplay.proposals import Proposal, read_proposal
from botlab.selfplay.records import store_proposal
from botlab.selfplay.seeding import SeedBudget, inputs_from_calls
from botlab.selfplay.step import SelfPlay
from botlab.store import Store, open_store
from botlab.tasks import Triplet

F = "```"


def proposal(task_type: str, program: str, admitted: bool = True) -> Proposal:
    sample = Sample("proposer", task_type, [1], "", Completion("", [], [], "stop"), 0.7)
    p = Proposal(sample, True, None, Triplet(program, ["2"], ["3"], "", task_type), valid=True, admitted=admitted)
    return p


@pytest.mark.parametrize("task_types, shared, expect", [
    (["deduction", "abduction", "induction"], True, {"deduction": 1, "abduction": 1, "induction": 0}),
    (["deduction", "abduction", "induction"], False, {"deduction": 1, "abduction": 0, "induction": 0}),
    (["deduction", "induction"], True, {"deduction": 1, "abduction": 0, "induction": 0}),
])
def test_a_seed_task_starts_both_program_buffers(tmp_path, task_types, shared, expect):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig(task_types=task_types))
    with store.transaction() as db:
        store_proposal(db, buffers, -1, proposal("deduction", "def f(a):\n    return a + 1"), shared_seed=shared)
        store_proposal(db, buffers, -1, proposal("deduction", "def f(a):\n    return a * 3", admitted=False),
                       shared_seed=shared)
    assert buffers.sizes() == expect
    # One program and one input, two questions about it: each buffer holds a task row of its own type.
    rows = store.query("SELECT t.task_type, b.task_type AS buffer, t.program FROM buffers b JOIN tasks t ON t.id = "
                       "b.task_id")
    assert all(r["task_type"] == r["buffer"] and r["program"].endswith("a + 1") for r in rows)


def test_buffered_inputs_are_keyed_by_program(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig())
    with store.transaction() as db:
        for program, arguments in [("def f(a):\n    return a + 1", "[1,2]"), ("def f(a):\n  return a + 1  # same", "3"),
                                   ("def f(a):\n    return a * 3", "3")]:
            p = proposal("abduction", program)
            p.triplet.inputs = [arguments]
            store_proposal(db, buffers, 1, p)
    inputs = buffers.program_inputs("abduction")
    assert sorted(len(keys) for keys in inputs.values()) == [1, 2]
    assert buffers.program_inputs("deduction") == {}


@pytest.mark.slow
def test_a_program_that_failed_for_its_input_gets_one_from_the_models_calls(tmp_path, transformers_engine, sandbox):
    team = TeamConfig(name="seed", storage_dir=tmp_path, selfplay={"seed_call_inputs": True},
                      roles={"proposer": {"temperature": 0, "max_new_tokens": 128}})
    with open_store(team.run_dir) as store:
        play = SelfPlay(team, store, transformers_engine, sandbox, learner=None)
        messages = play.proposer.messages("deduction", [])
        prompt = ("deduction", messages, [])

        def read(text: str) -> Proposal:
            ids = transformers_engine.tokenizer.encode(text, add_special_tokens=False)
            sample = Sample("proposer", "deduction", [1], "", Completion(text, ids, [-1.0] * len(ids), "stop"), 0.0)
            return read_proposal(play.proposer, prompt, None, sample)

        wrong_input = read(f"{F}python\ndef f(a, b):\n    return a * b + 1\n{F}\n{F}input\n'Hello world'\n{F}")
        no_input = read(f"{F}python\ndef g(n):\n    return n * 3 + 1\n{F}\nand then")
        fine = read(f"{F}python\ndef f(a):\n    return a - 1\n{F}\n{F}input\n5\n{F}")
        broken = read(f"{F}python\ndef f(a):\n    return a +\n{F}\n{F}input\n5\n{F}")
        proposals = [wrong_input, no_input, fine, broken]
        play._validate(proposals)
        assert [p.reason for p in proposals] == ["exception", "no_input_block", None, "syntax_error"]

        greedy = SamplingConfig(temperature=0, max_new_tokens=128)
        mended = inputs_from_calls(play.proposer, play.generator, sandbox, proposals, greedy)

    assert mended == 2, [(p.reason, p.detail) for p in proposals]
    for p, program in [(wrong_input, "def f(a, b)"), (no_input, "def f(n)")]:
        assert p.valid and p.reason is None and p.triplet.program.startswith(program)
        assert p.triplet.inputs[0] != "'Hello world'"
        # The output is the sandbox's, for the new input.
        [check] = sandbox.validate_many([(p.triplet.program, p.triplet.inputs)])
        assert check.valid and check.outputs == p.triplet.outputs
    assert fine.triplet.inputs == ["5"] and fine.detail == ""  # a valid proposal is left as it was
    assert not broken.valid  # a program that does not parse has no calls to ask for


def test_seeding_ends_after_rounds_in_a_row_that_admitted_nothing():
    budget = SeedBudget(SelfPlayConfig(seed_max_rounds=10, seed_patience=3))
    nothing, one, held_out = Counter({"exact_duplicate": 4}), Counter({"admitted": 1}), Counter({"heldout": 1})
    for outcomes in (one, nothing, nothing, held_out, nothing, nothing):  # the held-out split is progress too
        budget.record(outcomes)
        assert budget.stop_reason() is None
    budget.record(nothing)
    assert budget.stop_reason() == "3 rounds in a row admitted nothing" and budget.rounds == 7


def test_seeding_ends_after_seed_max_rounds():
    budget = SeedBudget(SelfPlayConfig(seed_max_rounds=2, seed_patience=3))
    budget.record(Counter({"admitted": 2}))
    assert budget.stop_reason() is None
    budget.record(Counter({"admitted": 1}))
    assert budget.stop_reason() == "2 rounds"
