"""Data-parallel learning under torchrun (gloo, CPU): two ranks make the single-process update, and a launched
`botlab run` has one daemon (rank 0), commits every step once and survives a killed rank."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from tests.fixtures.distributed_update import TRAIN
from tests.fixtures.runs import REPO, check_run_invariants, read_kv, wait_for_phase, write_tiny_team

pytestmark = pytest.mark.slow

TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", "2"]
ENV = os.environ | {"OMP_NUM_THREADS": "1"}  # two ranks on a 2-core machine


def run(args: list[str], timeout: int = 1800) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def single_update(tmp_path_factory, builtin_model_dir) -> dict:
    out = tmp_path_factory.mktemp("single") / "single.pt"
    run([sys.executable, "-m", "tests.fixtures.distributed_update", str(out)])
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_ranks_make_the_single_process_update(tmp_path, single_update, sharding):
    run(TORCHRUN + ["-m", "tests.fixtures.distributed_update", str(tmp_path / "ranks.pt"), sharding])
    single = single_update
    ranks = torch.load(tmp_path / "ranks.pt", weights_only=False)
    assert ranks["sharded"] is (sharding == "fsdp")

    # The same gradient (float rounding apart): each loss divided by the whole batch's tokens, summed over ranks.
    for name, gradient in single["gradient"].items():
        torch.testing.assert_close(ranks["gradient"][name], gradient, rtol=1e-4, atol=1e-8, msg=name)
    assert sum(float(g.abs().sum()) for g in single["gradient"].values()) > 0
    # Hence the same weights: AdamW's first step moves each weight by about lr, the ranks agree to 5% of it (measured:
    # one float32 rounding step, 0.6% of lr).
    assert ranks["weights"].keys() == single["weights"].keys()
    for name, weight in single["weights"].items():
        torch.testing.assert_close(ranks["weights"][name], weight, rtol=0, atol=TRAIN.lr / 20, msg=name)
    for key in ("loss", "entropy"):
        assert ranks["stats"][key] == pytest.approx(single["stats"][key], rel=1e-5), key
    # A float32 sum over 135M squares, in another order when sharded (measured: 1.2e-5 apart with FSDP).
    assert ranks["stats"]["grad_norm"] == pytest.approx(single["stats"]["grad_norm"], rel=1e-4)
    assert ranks["stats"]["trained_sequences"] == single["stats"]["trained_sequences"] == 7
    assert ranks["stats"]["trained_tokens"] == single["stats"]["trained_tokens"]
    if sharding == "fsdp":
        check_resume_from_sharded(ranks, single)


def check_resume_from_sharded(sharded: dict, single: dict) -> None:
    """A sharded run's resume state (gathered on rank 0: whole weights, optimizer state by parameter name) resumes a
    single-process learner exactly: its own optimizer state then matches the single-process run's."""
    from botlab.config import ModelConfig
    from botlab.models import builtin_model_dir
    from botlab.selfplay.learner import Learner

    learner = Learner(builtin_model_dir(), ModelConfig(), TRAIN)
    learner.load_trainable_state(sharded["weights"])
    learner.load_state_dict({"optimizer": sharded["optimizer"], "rng": learner.state_dict()["rng"]})
    mine = learner.state_dict()["optimizer"]
    assert sorted(mine["state"]) == sorted(single["optimizer"]["state"])  # by index again, the optimizer's own form
    for index, moments in single["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(mine["state"][index][key], moments[key], rtol=1e-3, atol=1e-9)
        assert float(mine["state"][index]["step"]) == float(moments["step"]) == 1.0


def launch(team: Path, *args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(TORCHRUN + ["-m", "botlab.cli", "run", str(team), *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO, env=ENV)


def ranks_of(launcher: subprocess.Popen) -> dict[int, psutil.Process]:
    """The launch's worker processes by rank (torchrun's own children)."""
    workers = {}
    for child in psutil.Process(launcher.pid).children():
        rank = child.environ().get("RANK")
        if rank is not None:
            workers[int(rank)] = child
    return workers


def optimizer_updates(db_path: Path) -> set[float]:
    state = torch.load(db_path.parent / read_kv(db_path, "resume_state") / "learner.pt", weights_only=False)
    return {float(s["step"]) for s in state["optimizer"]["state"].values()}


def daemon_starts(db_path: Path) -> list[str]:
    db = sqlite3.connect(db_path)
    try:
        return [m for (m,) in db.execute("SELECT message FROM events WHERE kind = 'start' ORDER BY id")]
    finally:
        db.close()


def test_launched_run_has_one_daemon_and_resumes_after_a_killed_rank(tmp_path, builtin_model_dir):
    team = write_tiny_team(tmp_path, steps=2)
    # An entropy bonus gives every rollout a gradient: each step updates (zero advantages alone would skip it).
    text = team.read_text()
    team.write_text(text.replace("micro_batch: 4}", "micro_batch: 4, entropy_coef: 0.001}"))
    assert team.read_text() != text
    run_dir = tmp_path / "runs" / "tiny"
    db_path = run_dir / "botlab.sqlite"
    log = tmp_path / "launch.log"

    # Step 1: rank 0 is the daemon, rank 1 trains its share. SIGTERM to rank 0: it finishes the step, then stops
    # rank 1, and both exit 0.
    first = launch(team, log=log)
    wait_for_phase(first, db_path, "step 1/2: propose", timeout=1200)
    workers = ranks_of(first)
    assert sorted(workers) == [0, 1]
    assert (run_dir / "daemon.lock").read_text() == str(workers[0].pid)  # rank 0 holds the lock, rank 1 does not
    workers[0].send_signal(signal.SIGTERM)
    assert first.wait(timeout=1800) == 0, log.read_text()[-4000:]
    output = log.read_text()
    assert "already running" not in output
    assert len(daemon_starts(db_path)) == 1
    assert "rank 1 INFO botlab.selfplay.distributed: step 1: trained this rank's share" in output, output[-3000:]
    assert "rank 0 stopped after step 1" in output, output[-3000:]
    assert check_run_invariants(run_dir)["steps"] == 1
    assert optimizer_updates(db_path) == {1.0}

    # Step 2: SIGKILL rank 1 during the update; the launch fails and nothing half-done is committed.
    second = launch(team, log=log)
    wait_for_phase(second, db_path, "step 2/2: learn", timeout=1200)
    workers = ranks_of(second)
    workers[1].send_signal(signal.SIGKILL)
    assert second.wait(timeout=600) != 0
    committed = check_run_invariants(run_dir, after_crash=True)["steps"]
    assert committed in (1, 2)  # 2 only if rank 0 had the summed gradient before rank 1 died

    # The whole launch again: it resumes after the last committed step; no step is lost or applied twice.
    third = launch(team, log=log)
    assert third.wait(timeout=1800) == 0, log.read_text()[-4000:]
    output = log.read_text()
    assert f"resuming after step {committed}" in output, output[-3000:]
    assert f"following rank 0 after step {committed} from " in output, output[-3000:]
    assert check_run_invariants(run_dir)["steps"] == 2
    assert optimizer_updates(db_path) == {2.0}
    assert len(daemon_starts(db_path)) == 3


def test_sharded_run_with_vllm_syncs_saves_and_resumes(tmp_path, builtin_model_dir):
    """The flagship's layout on CPU: train.sharding: fsdp under torchrun with vLLM in rank 0 (its worker a process
    apart from the launch). No rank holds the whole weights, yet rank 0's engine is synced every step, the step-2
    checkpoint is whole, and a second launch resumes after step 1 with every rank placing its own slice."""
    team = write_tiny_team(tmp_path, steps=2, engine="vllm")
    text = team.read_text()
    team.write_text(text.replace("micro_batch: 4}", "micro_batch: 4, entropy_coef: 0.001, sharding: fsdp}"))
    assert team.read_text() != text
    run_dir = tmp_path / "runs" / "tiny"
    db_path = run_dir / "botlab.sqlite"
    log = tmp_path / "launch.log"

    assert launch(team, "--steps", "1", log=log).wait(timeout=1800) == 0, log.read_text()[-4000:]
    assert launch(team, log=log).wait(timeout=1800) == 0, log.read_text()[-4000:]
    output = log.read_text()
    assert "following rank 0 after step 1 from " in output, output[-3000:]
    assert "engine: vllm" in output, output[-3000:]
    assert "step 2: trained this rank's share" in output, output[-3000:]
    assert check_run_invariants(run_dir)["steps"] == 2
    assert optimizer_updates(db_path) == {2.0}
    # The checkpoint holds whole weights that transformers loads as they are.
    from transformers import AutoModelForCausalLM

    checkpoint = max((run_dir / "checkpoints").glob("step-*"))
    loaded = AutoModelForCausalLM.from_pretrained(checkpoint)
    resumed = torch.load(db_path.parent / read_kv(db_path, "resume_state") / "weights.pt", weights_only=True)
    name = "model.layers.0.mlp.down_proj.weight"
    assert resumed[name].shape == loaded.state_dict()[name].shape  # whole, not one rank's slice
    torch.testing.assert_close(loaded.state_dict()[name].float(), resumed[name].bfloat16().float())
