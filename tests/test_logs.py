"""A run's console: botlab's progress, warnings and errors; vLLM's and transformers' logs go to logs/botlab.log.

Each check runs in a fresh interpreter, as `botlab run` does, so the logging set-up (global to a process) and
vLLM's import-time configuration are the real ones.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_library_logs_go_to_the_file_and_botlab_warnings_to_the_console(tmp_path):
    result = run_python(f"""
        import logging, warnings
        from pathlib import Path
        from botlab.logs import setup_run_logging
        from transformers.utils import logging as hf_logging

        setup_run_logging(Path({str(tmp_path)!r}))
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").warning(
            "RotaryEmbedding: Failed to load weights")
        logging.getLogger("vllm.engine").info("Initializing a V1 LLM engine with config: model=...")
        hf_logging.get_logger("transformers.modeling_utils").warning("Some weights were not initialized")
        warnings.warn("a library's UserWarning")
        logging.getLogger("botlab.daemon").warning("reporter tick failed: smtp down")
        logging.getLogger("botlab.run").info("step 1/3: valid 0.50")
        logging.getLogger("vllm.worker").error("the worker died")
        for _ in hf_logging.tqdm(range(3), desc="Writing model shards"):
            pass
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "logs" / "botlab.log").read_text()
    for line in ("RotaryEmbedding: Failed to load weights", "Initializing a V1 LLM engine with config",
                 "Some weights were not initialized", "a library's UserWarning", "reporter tick failed",
                 "step 1/3: valid 0.50", "the worker died"):
        assert line in log
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["WARNING: reporter tick failed: smtp down", "ERROR: the worker died"]


@pytest.mark.slow
def test_vllm_does_not_configure_its_own_console_logging(tmp_path):
    """Importing vLLM after botlab.engines leaves its records to botlab's handlers (vLLM itself, no model)."""
    pytest.importorskip("vllm")
    result = run_python(f"""
        import logging
        from pathlib import Path
        import botlab.engines
        from botlab.logs import setup_run_logging
        import vllm
        from vllm.logger import init_logger

        setup_run_logging(Path({str(tmp_path)!r}))
        assert logging.getLogger("vllm").handlers == [], logging.getLogger("vllm").handlers
        init_logger("vllm.model_executor.model_loader.reload.layerwise").warning(
            "%s: Failed to load weights", "RotaryEmbedding")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RotaryEmbedding: Failed to load weights" not in result.stdout + result.stderr
    assert "RotaryEmbedding: Failed to load weights" in (tmp_path / "logs" / "botlab.log").read_text()
