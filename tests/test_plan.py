"""`botlab plan`: parameter counts against transformers and published figures, the shipped GPU team files fit their
stated hardware, impossible plans are refused (by `plan` and, before loading anything, by `run`), and the learner's
estimate agrees with the memory a real update takes on CPU."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import torch
from typer.testing import CliRunner

from botlab.cli import app
from botlab.config import LoraConfig
from botlab.plan import KNOWN_ARCHITECTURES, Architecture, find_architecture, find_hardware, make_plan
from botlab.teamfile import load_team

REPO = Path(__file__).resolve().parent.parent
GPU_TEAMS = ["azr-coder-7b.yaml", "azr-coder-3b-1gpu.yaml", "qwen-0.5b-1gpu.yaml"]


def write(tmp_path: Path, text: str, name: str = "team.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def plan_cli(*args: str):
    return CliRunner().invoke(app, ["plan", *map(str, args)])


# --- counting ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(KNOWN_ARCHITECTURES))
def test_parameter_count_matches_the_transformers_model(key):
    """The formula counts what transformers builds from the same config (on the meta device: no memory)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    table = KNOWN_ARCHITECTURES[key]
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in table.items() if k != "model_type"}))
    arch = Architecture.from_config(table, "table", key)
    assert arch.params == sum(p.numel() for p in model.parameters())


def test_embedded_model_count_matches_its_weights(builtin_model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = find_architecture("builtin:smollm2-135m")
    assert arch.source == str(builtin_model_dir / "config.json")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(builtin_model_dir))
    assert arch.params == sum(p.numel() for p in model.parameters())


def test_lora_count_matches_peft():
    from peft import LoraConfig as PeftLora, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=True)
    lora = LoraConfig(r=4)
    model = get_peft_model(LlamaForCausalLM(LlamaConfig(**config)),
                           PeftLora(r=lora.r, target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert Architecture.from_config(config, "test", "tiny").lora_params(lora.r, lora.target_modules) == trainable


def test_7b_numbers_agree_with_published_figures(tmp_path):
    """Qwen2.5-Coder-7B: 7.61 B parameters, 6.53 B without embeddings; ~15.2 GB of bf16 weights; full fine-tuning
    holds 16 bytes a parameter (fp32 weights, gradients, two AdamW moments): ~122 GB."""
    team = load_team(write(tmp_path, "name: t\nmodel: {name: Qwen/Qwen2.5-Coder-7B, tensor_parallel_size: 1}\n"))
    plan = make_plan(team, "1x200GB")
    assert plan.arch.params == pytest.approx(7.61e9, rel=0.01)
    assert plan.arch.params - plan.arch.embedding_params == pytest.approx(6.53e9, rel=0.01)
    assert "published config" in plan.arch.source
    parts = {p.name.split(" (")[0]: p.bytes for p in plan.parts}
    assert parts["  policy weights bfloat16"] == pytest.approx(15.2e9, rel=0.02)
    learner_state = sum(p.bytes for p in plan.parts
                        if p.name.startswith(("learner: master", "learner: gradients", "learner: AdamW")))
    assert learner_state == pytest.approx(122e9, rel=0.02)


@pytest.mark.parametrize("key, published", [("qwen2.5-coder-0.5b", 0.49e9), ("qwen2.5-coder-1.5b", 1.54e9),
                                            ("qwen2.5-coder-3b", 3.09e9), ("qwen2.5-coder-14b", 14.7e9)])
def test_table_sizes_agree_with_published_figures(key, published):
    assert Architecture.from_config(KNOWN_ARCHITECTURES[key], "table", key).params == pytest.approx(published, rel=0.01)


def test_fsdp_shards_the_learner_and_ddp_replicates_it(tmp_path):
    def state(sharding: str) -> int:
        team = load_team(write(tmp_path, f"""
            name: t
            model: {{name: Qwen/Qwen2.5-Coder-7B, gpus: 4x80GB}}
            train: {{sharding: {sharding}}}
        """))
        return sum(p.bytes for p in make_plan(team).parts if p.name.startswith(("learner: master", "learner: AdamW")))

    assert state("fsdp") * 4 == pytest.approx(state("none"), rel=1e-6)
    assert state("ddp") == state("none")


# --- the shipped files and the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GPU_TEAMS)
def test_shipped_gpu_team_files_validate_and_fit_their_stated_hardware(name):
    path = REPO / "teams" / name
    assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 0
    team = load_team(path)
    assert team.model.gpus is not None and team.schedules.eval_every_steps > 0
    assert "cruxeval-o" not in team.schedules.eval_suites or team.schedules.eval_data is not None
    result = plan_cli(path)
    assert result.exit_code == 0, result.output
    assert "fits: yes" in result.output and "(model.gpus)" in result.output
    plan = json.loads(plan_cli(path, "--json").output)
    assert plan["fits"] and plan["hardware"]["source"] == "model.gpus"
    assert max(plan["peak_bytes"].values()) <= plan["hardware"]["device_bytes"]


def test_7b_full_fine_tuning_on_one_24gb_gpu_is_refused_naming_what_to_change(tmp_path):
    """No single setting fits a 7B next to its vLLM copy in 24 GB: the plan names the set of changes that does."""
    result = plan_cli(write(tmp_path, "name: t\nmodel: {name: Qwen/Qwen2.5-Coder-7B}\n"), "--gpus", "1x24GB")
    assert result.exit_code == 2
    assert "1 GPU of 24 GiB (--gpus)" in result.output
    assert "learner: master weights fp32                                   28.37" in result.output
    assert "fits: NO" in result.output
    fix = result.output.split("to make it fit: ")[1]
    assert "turn on model.lora" in fix and "model.sleep_mode: true" in fix
    share = re.search(r"raise model.gpu_memory_utilization to ([0-9.]+)", fix).group(1)
    gpus = re.search(r"use \d+ GPUs with FSDP \(model.gpus: (\d+x24GB), train.sharding: fsdp\)", fix).group(1)
    fixed = write(tmp_path, f"""
        name: t
        model: {{name: Qwen/Qwen2.5-Coder-7B, sleep_mode: true, gpu_memory_utilization: {share},
                 lora: {{enabled: true}}}}
        train: {{gradient_checkpointing: true, sharding: fsdp}}
    """, "fixed.yaml")
    assert plan_cli(fixed, "--gpus", gpus).exit_code == 0
    assert plan_cli(fixed, "--gpus", "1x24GB").exit_code == 2


def test_what_fits_nowhere_says_to_change_the_model(tmp_path):
    result = plan_cli(write(tmp_path, "name: t\nmodel: {name: Qwen/Qwen2.5-Coder-14B}\n"), "--gpus", "1x8GB")
    assert result.exit_code == 2
    assert "nothing in the team file makes Qwen/Qwen2.5-Coder-14B fit on 1 GPU of 8 GiB (--gpus): choose a " \
           "smaller model.name or bigger GPUs" in result.output


def test_the_7b_file_on_one_gpu_cannot_run_its_tensor_parallel_engine():
    result = plan_cli(REPO / "teams" / "azr-coder-7b.yaml", "--gpus", "1x80GB")
    assert result.exit_code == 2
    assert "problem: model.tensor_parallel_size 2 needs 2 GPUs; there is 1" in result.output


def test_a_suggested_change_makes_the_plan_fit(tmp_path):
    """3B full fine-tuning on 24 GB does not fit; the plan names LoRA and FSDP over more GPUs, and each does fit."""
    base = """
        name: t
        model: {{name: Qwen/Qwen2.5-Coder-3B, max_model_len: 4096, sleep_mode: true, gpus: {gpus},
                 lora: {{enabled: {lora}}}}}
        train: {{gradient_checkpointing: true, micro_batch: 1, sharding: {sharding}}}
    """
    path = write(tmp_path, base.format(gpus="1x24GB", lora="false", sharding="none"))
    result = plan_cli(path)
    assert result.exit_code == 2
    assert "turn on model.lora" in result.output
    assert "use 4 GPUs with FSDP (model.gpus: 4x24GB, train.sharding: fsdp)" in result.output
    assert plan_cli(write(tmp_path, base.format(gpus="1x24GB", lora="true", sharding="none"))).exit_code == 0
    assert plan_cli(write(tmp_path, base.format(gpus="4x24GB", lora="false", sharding="fsdp"))).exit_code == 0


def test_vllm_share_too_small_for_one_sequence_is_a_problem(tmp_path):
    path = write(tmp_path, """
        name: t
        model: {name: Qwen/Qwen2.5-Coder-7B, gpus: 1x80GB, gpu_memory_utilization: 0.15, lora: {enabled: true}}
    """)
    result = plan_cli(path)
    assert result.exit_code == 2
    assert "cannot hold one sequence of max_model_len 2048" in result.output
    assert "raise model.gpu_memory_utilization to" in result.output


@pytest.mark.parametrize("bad", ["4x", "80GB", "4x80", "0x80GB", "4x0GB", "four by eighty"])
def test_bad_gpus_option_is_a_clear_error(bad):
    result = plan_cli(REPO / "teams" / "qwen-0.5b-1gpu.yaml", "--gpus", bad)
    assert result.exit_code == 2
    assert f"--gpus: {bad!r} is not a GPU count and size: write COUNTxSIZE" in result.output
    assert "Traceback" not in result.output


def test_bad_model_gpus_in_the_team_file_names_the_field(tmp_path):
    path = write(tmp_path, "name: t\nmodel:\n  name: Qwen/Qwen2.5-Coder-7B\n  gpus: 80GB\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "team.yaml:4: model.gpus: '80GB' is not a GPU count and size" in result.output.replace("\n", "")


def test_tensor_parallel_beyond_the_stated_gpus_is_refused(tmp_path):
    path = write(tmp_path, "name: t\nmodel: {name: x/y, gpus: 1x80GB, tensor_parallel_size: 2}\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "tensor_parallel_size 2 needs at least that many GPUs" in result.output


def test_unknown_model_without_config_names_model_name(tmp_path):
    path = write(tmp_path, "name: t\nmodel: {name: someone/unknown-model, gpus: 1x80GB}\n")
    result = plan_cli(path)
    assert result.exit_code == 2
    assert "model.name 'someone/unknown-model'" in result.output and "nothing to count" in result.output


def test_without_gpus_it_plans_for_this_machines_ram(tmp_path, builtin_model_dir):
    if torch.cuda.is_available():
        pytest.skip("torch sees GPUs here")
    team = load_team(write(tmp_path, "name: t\nmodel: {engine: transformers}\n"))
    hardware = find_hardware(team)
    assert not hardware.gpu and hardware.memory == psutil.virtual_memory().total
    result = plan_cli(tmp_path / "team.yaml", "--json")
    plan = json.loads(result.output)
    assert plan["hardware"]["gpu"] is False and "this machine's RAM" in plan["hardware"]["source"]


# --- botlab run -------------------------------------------------------------------------------------------------------


def run_too_big(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """`botlab run` of a 7B on one 24 GB GPU. The 7B is not on this machine: a run that got as far as loading would
    fail on it, after creating its run dir."""
    team = write(tmp_path, """
        name: too-big
        storage_dir: runs
        model: {name: Qwen/Qwen2.5-Coder-7B, gpus: 1x24GB}
    """)
    command = [sys.executable, "-m", "botlab.cli", "run", str(team), "--steps", "1", *options]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)


def test_run_refuses_a_plan_that_cannot_fit_before_loading_anything(tmp_path):
    refused = run_too_big(tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "fits: NO" in refused.stderr and "botlab run refuses a plan that does not fit" in refused.stderr
    assert not (tmp_path / "runs").exists()  # no lock, no store, no log: nothing was started


@pytest.mark.slow
def test_run_with_ignore_plan_goes_on_to_load_the_model(tmp_path):
    """The escape hatch (and the proof that the refusal above happens before the daemon starts)."""
    forced = run_too_big(tmp_path, "--ignore-plan")
    assert forced.returncode == 1  # past the plan: the model loader says the model is not downloaded
    assert "not in the Hugging Face cache" in forced.stdout + forced.stderr
    assert (tmp_path / "runs" / "too-big").is_dir()


def test_run_refuses_fsdp_outside_a_launch_and_with_lora(tmp_path, monkeypatch):
    """train.sharding: fsdp shards over the ranks of a launch: one process would hold what the plan sized in shards,
    so a plain `botlab run` says how to launch it and starts nothing; LoRA with fsdp is refused under a launch too."""
    team = write(tmp_path, """
        name: sharded
        storage_dir: runs
        model: {engine: transformers}
        train: {sharding: fsdp}
    """)
    command = [sys.executable, "-m", "botlab.cli", "run", str(team), "--steps", "1", "--ignore-plan"]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert refused.returncode == 1
    assert "train.sharding is fsdp, which shards the learner over the ranks of a launch" in refused.stdout
    assert "torchrun --nproc-per-node N -m botlab.cli run" in refused.stdout
    assert not (tmp_path / "runs").exists()

    from botlab.selfplay.distributed import launch_problem

    monkeypatch.setenv("WORLD_SIZE", "2")
    sharded = load_team(team)
    assert launch_problem(sharded) is None
    sharded.model.lora.enabled = True
    assert "train.sharding is fsdp with model.lora on" in launch_problem(sharded)


# --- the estimate against a measured update ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("lora, train", [("", ""), ("", ", gradient_checkpointing: true"),
                                         (", lora: {enabled: true}", ""),
                                         (", lora: {enabled: true, quantize: 4bit}", "")],
                         ids=["full", "full-checkpointing", "lora", "qlora"])
def test_learner_estimate_agrees_with_a_measured_update_on_cpu(tmp_path, builtin_model_dir, lora, train):
    """Two real train_steps of the embedded model on full-length rollouts, in a fresh process: peak RSS minus the RSS
    after imports, against the plan's learner parts while training. The LoRA case loads the frozen base in
    model.dtype (bf16), QLoRA in 4-bit NF4, the adapters in fp32, as the plan counts them."""
    lora_keys = lora
    team_file = write(tmp_path, f"""
        name: peak
        model: {{name: "builtin:smollm2-135m", engine: transformers, max_model_len: 256{lora_keys}}}
        roles: {{proposer: {{max_new_tokens: 128}}, solver: {{max_new_tokens: 128}}}}
        train: {{micro_batch: 2{train}}}
    """)
    plan = make_plan(load_team(team_file))
    planned = sum(p.bytes for p in plan.parts if p.name.startswith("learner") and "training" in p.phases)
    run = subprocess.run([sys.executable, "-m", "tests.fixtures.learner_peak", str(team_file)], capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])["learner_bytes"]
    print(f"{lora or 'full'}{train}: planned {planned / 2**30:.2f} GiB, measured {measured / 2**30:.2f} GiB "
          f"(ratio {planned / measured:.2f})")
    assert 0.5 * measured <= planned <= 2 * measured
