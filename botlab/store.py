"""One SQLite database per team run (WAL), versioned with migrations from day one.

Everything that must survive a restart lives here: committed steps, tasks and buffers, metrics, digests,
feedback, the outbox, and small cursors (IMAP UIDs, schedule times) in `kv`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from botlab.rundir import STORE_NAME

# Each entry moves the schema from version i to i + 1. Never edit a shipped entry: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE steps (
        step INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        weight_version INTEGER NOT NULL DEFAULT 0,
        timings TEXT NOT NULL DEFAULT '{}',       -- seconds per phase
        summary TEXT NOT NULL DEFAULT '{}',       -- rewards, solve rates, counts
        checkpoint TEXT                           -- path of the checkpoint written at this step, if any
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        step INTEGER NOT NULL,                    -- step that proposed it (-1: seed data)
        task_type TEXT NOT NULL,
        program TEXT NOT NULL,
        inputs TEXT NOT NULL,                     -- JSON list of input expressions
        outputs TEXT NOT NULL,                    -- JSON list of canonical output reprs
        message TEXT NOT NULL DEFAULT '',         -- induction: the proposer's hint
        status TEXT NOT NULL,                     -- invalid | rejected | admitted
        reason TEXT,                              -- machine-readable rejection reason
        learnability REAL,                        -- 1 - solve rate, when measured
        created_at REAL NOT NULL,
        fingerprint TEXT                          -- normalised program hash, for duplicate checks
    );
    CREATE INDEX tasks_by_step ON tasks(step);
    CREATE INDEX tasks_by_fingerprint ON tasks(fingerprint);
    CREATE TABLE buffers (
        task_type TEXT NOT NULL,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        added_step INTEGER NOT NULL,
        PRIMARY KEY (task_type, task_id)
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        step INTEGER NOT NULL,
        role TEXT NOT NULL,                       -- proposer | solver
        task_type TEXT NOT NULL,
        task_id INTEGER,
        prompt TEXT NOT NULL,
        completion TEXT NOT NULL,
        reward REAL NOT NULL,
        parts TEXT NOT NULL DEFAULT '{}'          -- how the reward was made
    );
    CREATE INDEX samples_by_step ON samples(step);
    CREATE TABLE metrics (
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (step, name)
    );
    CREATE TABLE digests (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        first_step INTEGER,
        last_step INTEGER,
        message_id TEXT UNIQUE,
        subject TEXT NOT NULL,
        text TEXT NOT NULL,
        html TEXT NOT NULL DEFAULT '',
        short TEXT NOT NULL DEFAULT '',
        narrative_source TEXT NOT NULL DEFAULT 'template'
    );
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,                    -- email | nostr | cli
        external_id TEXT NOT NULL,                -- Message-ID, rumor id, ...: dedupe key per channel
        sender TEXT NOT NULL,
        received_at REAL NOT NULL,
        text TEXT NOT NULL,
        digest_id INTEGER REFERENCES digests(id),
        status TEXT NOT NULL DEFAULT 'pending',   -- pending | applied | ignored
        directives TEXT NOT NULL DEFAULT '[]',
        response TEXT NOT NULL DEFAULT '',        -- what it changed, in words
        reported_in INTEGER REFERENCES digests(id),
        UNIQUE (channel, external_id)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        kind TEXT NOT NULL,                       -- digest | ack | note
        payload TEXT NOT NULL,                    -- JSON, channel specific
        dedupe_key TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        sent_at REAL,
        last_error TEXT
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        level TEXT NOT NULL,                      -- info | warning | error
        kind TEXT NOT NULL,                       -- start | stop | crash | error | ...
        message TEXT NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
RUN_DIR_PARTS = ("state", "checkpoints")  # the run dir's folders whose paths the store keeps


class StoreError(Exception):
    """The run database cannot be used as it is (newer schema, corrupt file, ...)."""


class Store:
    """A run's SQLite database. Use `with store.transaction() as db:` for writes that belong together."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives a power cut, not only a crash (a step's commit names its resume state, and the
            # previous state is deleted right after it).
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a usable botlab database ({err})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, but this botlab knows only up to {SCHEMA_VERSION}: "
                "it was written by a newer botlab. Upgrade botlab (nothing was changed in the file)."
            )
        for version in range(current, SCHEMA_VERSION):
            # One script = one transaction: a failed migration leaves the previous version intact.
            script = f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
            try:
                self.db.executescript(script)
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing writes; nested calls join the outer transaction."""
        with self._lock:
            if self.db.in_transaction:
                yield self.db
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def query(self, sql: str, args: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def scalar(self, sql: str, args: tuple | dict = ()) -> Any:
        rows = self.query(sql, args)
        return rows[0][0] if rows else None

    # --- small shared helpers ------------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        value = self.scalar("SELECT value FROM kv WHERE key = ?", (key,))
        return default if value is None else json.loads(value)

    def put(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def record_metrics(self, step: int, values: dict[str, float], at: float | None = None) -> None:
        """A step's metrics; a name recorded again for the same step replaces its value."""
        at = time.time() if at is None else at
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO metrics(step, name, value, at) VALUES (?, ?, ?, ?)",
                           [(step, name, float(value), at) for name, value in values.items()])

    def log_event(self, kind: str, message: str, level: str = "info") -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events(at, level, kind, message) VALUES (?, ?, ?, ?)", (time.time(), level, kind, message)
            )

    def last_step(self) -> int:
        """The last committed step, or 0 before the first."""
        return self.scalar("SELECT COALESCE(MAX(step), 0) FROM steps")

    # --- paths: stored relative to the run dir, so the run dir can be moved -------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def relative(self, path: Path | str) -> str:
        """How a path is stored: relative to the run dir when it lies inside it."""
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(path)

    def resolve(self, stored: str | None) -> Path | None:
        """A stored path as it is now. Old runs stored absolute paths: one that is gone is looked for at the same
        place inside this run dir (state/..., checkpoints/...), where a moved run dir has it."""
        if not stored:
            return None
        path = Path(stored)
        if not path.is_absolute():
            return self.run_dir / path
        if path.exists():
            return path
        for i, part in enumerate(path.parts):
            if part in RUN_DIR_PARTS and (self.run_dir / Path(*path.parts[i:])).exists():
                return self.run_dir / Path(*path.parts[i:])
        return path


def open_store(run_dir: Path) -> Store:
    return Store(run_dir / STORE_NAME)
