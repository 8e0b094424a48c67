"""selfplay.rare_kind_bonus: an admitted proposal whose kind of output its buffer lacks earns more, computed from the
buffer a step finds (real store, real sandbox for the seed tasks)."""

from __future__ import annotations

import pytest

from botlab.config import TeamConfig
from botlab.selfplay.generation import Sample
from botlab.selfplay.proposals import Proposal
from botlab.selfplay.step import SelfPlay
from botlab.store import open_store
from botlab.tasks import Triplet


def proposal(task_type: str, output: str, admitted: bool = True) -> Proposal:
    sample = Sample("proposer", task_type, [], "", None, 0.0)
    return Proposal(sample, True, None, Triplet("def f(a):\n    return a", ["1"], [output], "", task_type),
                    valid=True, admitted=admitted)


@pytest.mark.parametrize("bonus", [0.0, 0.4])
def test_a_kind_the_buffer_lacks_earns_the_whole_bonus(tmp_path, sandbox, bonus):
    team = TeamConfig(name="rare", storage_dir=tmp_path, selfplay={"heldout_size": 0, "rare_kind_bonus": bonus})
    with open_store(team.run_dir) as store:
        play = SelfPlay(team, store, None, sandbox, learner=None)
        play.ensure_zero_triplets()  # one string task per program buffer: the zero triplet's 'Hello world'
        numbers = ["a * 2", "sum(range(a))", "len(str(a)) + a % 3"]  # three number tasks, in both program buffers
        assert play.seed_from_file([Triplet(f"def f(a):\n    return {body}", ["5"], [], "", "deduction")
                                    for body in numbers])["admitted"] == 3
        assert play.buffers.kind_shares("deduction") == {"str": 0.25, "number": 0.75}
        shares = {t: play.buffers.kind_shares(t) for t in ("deduction", "abduction")} if bonus else {}
        bonuses = [play._rarity_bonus(p, shares) for p in [
            proposal("deduction", "[1, 2]"), proposal("deduction", "'ab'"), proposal("deduction", "7"),
            proposal("deduction", "[1, 2]", admitted=False), proposal("induction", "[1, 2]")]]
    # a list (none buffered), a string (a quarter), a number (three quarters), a rejected list, an induction task
    assert bonuses == pytest.approx([bonus, 0.75 * bonus, 0.25 * bonus, 0.0, 0.0])
