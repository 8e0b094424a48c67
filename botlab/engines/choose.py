"""Pick the rollout engine a team asks for (`model.engine`), and say which one and why."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from botlab.config import ModelConfig
from botlab.engines.base import Engine, EngineError

log = logging.getLogger(__name__)


def create_engine(
    model_cfg: ModelConfig, model_dir: Path, learner_model: torch.nn.Module | None = None
) -> tuple[Engine, str]:
    """The engine for `model_cfg.engine`, and one line saying which engine it is and why it was chosen.

    The transformers engine generates with `learner_model` itself when given (else loads `model_dir`); the vLLM
    engine always loads `model_dir`, and the server engine pushes `model_dir`'s weights to its servers, so push a
    learner that differs from it with `engine.load_weights`.
    """
    choice = model_cfg.engine
    if choice == "server":
        from botlab.engines.server_engine import ServerEngine

        engine = ServerEngine(model_cfg, model_dir)
        why = (f"server: model.engine is 'server' ({len(engine.urls)} vLLM server(s): {', '.join(engine.urls)}; "
               f"dtype {engine.dtype}; weights pushed through {engine.weights_root})")
        log.info("rollout engine %s", why)
        return engine, why
    vllm_version, import_error = _vllm_import() if choice != "transformers" else (None, None)
    if choice == "vllm" and import_error:
        raise EngineError(
            f"model.engine is 'vllm' but `import vllm` fails ({import_error}); install it (scripts/setup.sh, or "
            "`pip install vllm` on a GPU host) or set model.engine: auto|transformers"
        )
    if choice == "transformers" or (choice == "auto" and import_error):
        from botlab.engines.transformers_engine import TransformersEngine

        engine = TransformersEngine(model_cfg, model_dir, learner_model)
        if choice == "transformers":
            why = "transformers: model.engine is 'transformers'"
        else:
            why = f"transformers: model.engine is 'auto' and `import vllm` fails ({import_error})"
        if engine.shares_learner:
            why += "; shares the learner's module, so weight updates are free"
    else:
        from botlab.engines.vllm_engine import VLLMEngine

        engine = VLLMEngine(model_cfg, model_dir)
        reason = "model.engine is 'vllm'" if choice == "vllm" else "model.engine is 'auto' and `import vllm` works"
        why = f"vllm: {reason} (vLLM {vllm_version}, {_device_kind()}, in-process, dtype {engine.dtype})"
        if model_cfg.tensor_parallel_size > 1:
            why += f"; {model_cfg.tensor_parallel_size} tensor-parallel workers, synced through shared memory"
    if model_cfg.sleep_mode and not engine.can_sleep:
        where = "the transformers engine" if engine.name == "transformers" else f"vLLM on the {_device_kind()}"
        why += f"; model.sleep_mode is ignored: {where} has no sleep mode"
    log.info("rollout engine %s", why)
    return engine, why


def _vllm_import() -> tuple[str | None, str | None]:
    """(version, None) when vLLM imports, else (None, the first line of the error)."""
    try:
        import vllm
    except Exception as exc:  # a broken install raises more than ImportError (e.g. torchvision's missing operators)
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        return None, f"{type(exc).__name__}: {first_line}"
    return getattr(vllm, "__version__", "?"), None


def _device_kind() -> str:
    from vllm.platforms import current_platform

    return "CPU backend" if current_platform.is_cpu() else f"{current_platform.device_name} backend"
