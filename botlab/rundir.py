"""What a run directory (STORAGE_DIR/NAME) holds that several modules must agree on: the store's file name, the
daemon's lock, and the keys of the store's key-value table that the daemon writes and others read.

Kept free of heavy imports: `botlab status` and the reporter read these without loading torch.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

STORE_NAME = "botlab.sqlite"
LOCK_NAME = "daemon.lock"

# --- keys of the store's kv table (values are JSON) -------------------------------------------------------------------
DAEMON_STATE_KEY = "daemon_state"  # "running" while a daemon works, "stopped" after a clean stop; unset: never ran
DAEMON_PAUSED_KEY = "daemon_paused"  # true while feedback holds the loop paused
PHASE_KEY = "phase"  # what the daemon is doing, e.g. "step 3/10: solve"
STARTED_AT_KEY = "started_at"  # when the current (or last) daemon started; status counts errors since then
ENGINE_KEY = "engine"  # {"name", "why"}: the rollout engine the daemon chose, and why
SEEDING_DONE_KEY = "seeding_done"  # the seed set was gathered; a resumed run never seeds again
WARM_START_DONE_KEY = "warm_start_done"  # selfplay.warm_start ran (its weights are step 0's resume state)
RESUME_KEY = "resume_state"  # the learner state of the last committed step, relative to the run dir (older: absolute)
RUN_LAST_STEP_KEY = "run_last_step"  # the step the current `botlab run` stops after (its --steps)
LAST_EVAL_KEY = "last_eval"  # the newest evaluation result per suite
NEXT_DIGEST_KEY = "next_digest_at"  # when the reporter's schedule sends the next digest (botlab/reporting/service.py)
# {recipient hex: {"npub", "relays", "checked_at"}}: each Nostr recipient's DM relays (NIP-17 kind 10050), [] = none
NOSTR_DM_RELAYS_KEY = "nostr/dm_relays"


class AlreadyRunning(Exception):
    pass


class DaemonLock:
    """One daemon per run dir: an exclusive lock on run_dir/daemon.lock, released by the OS if we die. The file
    holds the daemon's pid."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_NAME
        self.handle = None

    def __enter__(self) -> "DaemonLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            pid = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise AlreadyRunning(f"another botlab (pid {pid}) is already running this team in {self.path.parent}")
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def daemon_alive(run_dir: Path) -> bool:
    """True while some process holds the run's daemon lock."""
    lock_path = run_dir / LOCK_NAME
    if not lock_path.exists():
        return False
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
