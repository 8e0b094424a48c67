"""Buffers in the store: uniform references, newest-first solver batches, eviction instead of freezing."""

import random

import pytest

from botlab.config import SelfPlayConfig
from botlab.selfplay.buffers import Buffers, insert_task
from botlab.store import Store
from botlab.tasks import Triplet


def fill(store, buffers, task_type, steps):
    ids = []
    with store.transaction() as db:
        for step in steps:
            t = Triplet(f"def f(a):\n    return a + {step}", [str(step)], [str(2 * step)], task_type=task_type)
            task_id = insert_task(db, step, t, "admitted", None, learnability=step / 100)
            buffers.add(db, task_type, task_id, step)
            ids.append(task_id)
    return ids


def test_full_buffer_evicts_oldest(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig(buffer_max=16))
    fill(store, buffers, "deduction", range(20))
    assert buffers.size("deduction") == 16
    kept = {t.inputs[0] for t in buffers.references("deduction", 16, random.Random(0))}
    assert kept == {str(s) for s in range(4, 20)}


def test_lowest_learnability_eviction(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig(buffer_max=16, eviction="lowest_reward"))
    fill(store, buffers, "deduction", [50, 1, 2, 3] + list(range(60, 75)))
    kept = {t.inputs[0] for t in buffers.references("deduction", 16, random.Random(0))}
    assert {"1", "2", "3"}.isdisjoint(kept) and "50" in kept


def test_solver_batch_newest_first_then_uniform(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig())
    fill(store, buffers, "abduction", [1, 2, 3, 3])
    batch = buffers.solver_batch("abduction", 3, random.Random(1))
    assert [t.inputs[0] for t in batch[:2]] == ["3", "3"]
    assert batch[2].inputs[0] in {"1", "2"}
    assert len({t.id for t in batch}) == 3


def test_small_buffer_fills_the_solver_batch_by_drawing_again(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig())
    ids = fill(store, buffers, "deduction", [1, 2])
    batch = buffers.solver_batch("deduction", 5, random.Random(0))
    assert len(batch) == 5 and {t.id for t in batch} == set(ids)
    assert buffers.solver_batch("induction", 5, random.Random(0)) == []  # an empty buffer gives nothing


def test_references_are_distinct_and_induction_draws_programs(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig())
    fill(store, buffers, "deduction", range(5))
    refs = buffers.references("deduction", 3, random.Random(2))
    assert len({r.id for r in refs}) == 3
    assert buffers.references("induction", 3, random.Random(2)) == []
    program = buffers.program_for_induction(random.Random(3))
    assert program is not None and program.program.startswith("def f(a)")
    assert program.task_type == "induction"


def test_same_seed_same_sample(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    buffers = Buffers(store, SelfPlayConfig())
    fill(store, buffers, "deduction", range(30))
    a = [t.id for t in buffers.references("deduction", 6, random.Random("0-7"))]
    b = [t.id for t in buffers.references("deduction", 6, random.Random("0-7"))]
    assert a == b


def fill_kinds(store, buffers, outputs):
    """One deduction task per output repr, the i-th added at step i."""
    with store.transaction() as db:
        for i, output in enumerate(outputs):
            t = Triplet(f"def f(a):\n    return {output}", [str(i)], [output], task_type="deduction")
            buffers.add(db, "deduction", insert_task(db, i, t, "admitted", None), i)


def test_output_kind_reads_the_repr():
    from botlab.tasks import output_kind

    kinds = {"'ab'": "str", '"it\'s"': "str", "[1]": "list", "(1, 'a')": "tuple", "{}": "dict", "{'a': 1}": "dict",
             "{1, 2}": "set", "True": "bool", "None": "none", "-3": "number", "2.5": "number", "inf": "number",
             "set()": "other", "": "other"}
    assert {text: output_kind(text) for text in kinds} == kinds


def test_draw_by_output_kind_gives_a_rare_kind_its_share(tmp_path):
    """One string task among nine number tasks is drawn far more often by output kind than uniformly."""
    outputs = ["'ab'"] + [str(n) for n in range(9)]
    shares = {}
    for draw in ("uniform", "by_output_kind"):
        store = Store(tmp_path / f"{draw}.sqlite")
        buffers = Buffers(store, SelfPlayConfig(draw=draw))
        fill_kinds(store, buffers, outputs)
        rng = random.Random(0)
        refs = [t for _ in range(300) for t in buffers.references("deduction", 2, rng)]
        assert all(len({t.id for t in buffers.references("deduction", 2, rng)}) == 2 for _ in range(20))
        batches = [buffers.solver_batch("deduction", 4, rng) for _ in range(300)]
        assert all(b[0].outputs == ["8"] for b in batches)  # the newest task first, whatever the draw
        batch = [t for b in batches for t in b]
        shares[draw] = [sum(t.outputs[0] == "'ab'" for t in ts) / len(ts) for ts in (refs, batch)]
    # two distinct references: uniformly the string task is in 1 pair in 5 (a share of 0.1 of the references); by
    # kind in 3 in 4 (0.375: the first draw is a string 1 time in 2, else the second is)
    assert shares["uniform"][0] == pytest.approx(0.1, abs=0.04)
    assert shares["by_output_kind"][0] == pytest.approx(0.375, abs=0.06)
    # the newest task, then 3 distinct of the other 9: uniformly the string task is in 1 batch in 3 (0.083 of the
    # batch's tasks), by kind in 7 in 8 (0.22)
    assert shares["uniform"][1] == pytest.approx(0.083, abs=0.03)
    assert shares["by_output_kind"][1] == pytest.approx(0.22, abs=0.04)
