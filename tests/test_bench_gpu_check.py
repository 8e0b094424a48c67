"""The GPU check's Python part (bench/gpu_check.py), run on CPU: its logprob check tells synced weights from stale
ones on the real vLLM engine, and its whole run (steps, sync cycle, report) works end to end on a tiny model."""

from __future__ import annotations

import textwrap

import pytest
import torch

from botlab.bench.gpu_check import check_engine_matches, main, perturb
from tests.fixtures.engines import perturbed

pytestmark = pytest.mark.slow


def test_the_check_accepts_synced_weights_and_catches_stale_ones(vllm_engine, engine_learner):
    with perturbed(engine_learner, vllm_engine, scale=0.05):
        assert check_engine_matches(vllm_engine, engine_learner).ok
    # The learner moves on without a sync: the engine's logprobs no longer fit.
    saved = {name: p.detach().clone() for name, p in engine_learner.named_parameters()}
    try:
        perturb(engine_learner, scale=0.05)
        gap = check_engine_matches(vllm_engine, engine_learner)
        assert not gap.ok, gap
    finally:
        with torch.no_grad():
            for name, p in engine_learner.named_parameters():
                p.copy_(saved[name])


def test_a_whole_check_runs_and_says_what_failed(tmp_path, tiny_llama_dir, capsys):
    team = tmp_path / "team.yaml"
    team.write_text(textwrap.dedent(f"""
        name: gpu-check
        storage_dir: {tmp_path / "runs"}
        model: {{name: "{tiny_llama_dir}", engine: transformers, max_model_len: 512, sleep_mode: true}}
        roles: {{proposer: {{max_new_tokens: 16}}, solver: {{max_new_tokens: 16}}}}
        selfplay: {{task_types: [deduction], propose_batch: 1, solve_batch: 1, references: 1,
                   learnability_rollouts: 2}}
        executor: {{workers: 2}}
    """))
    # Everything holds on CPU but sleep, which --require-sleep demands: exit 1, naming only that.
    # A random model's logprobs are nearly flat: it needs bigger noise than a trained one to show a stale sync.
    assert main([str(team), "--steps", "2", "--require-sleep", "--perturb", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "step 1: " in out and "step 2: " in out and "reload " in out
    failed = [line for line in out.splitlines() if line.startswith("FAILED: ")]
    assert failed == ["FAILED: the engine cannot sleep (model.sleep_mode off, or no sleep mode here)"]
    assert out.rstrip().endswith("gpu check: FAILED")
