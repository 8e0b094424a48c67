"""The run database: survives reopening, rolls back failed transactions, refuses a newer schema."""

import sqlite3

import pytest

from botlab.store import SCHEMA_VERSION, Store, StoreError


def test_reopen_keeps_data_and_version(tmp_path):
    path = tmp_path / "run" / "botlab.sqlite"
    with Store(path) as store:
        store.put("cursor", {"uid": 7})
        store.log_event("start", "hello")
        assert store.schema_version == SCHEMA_VERSION
    with Store(path) as store:
        assert store.get("cursor") == {"uid": 7}
        assert store.scalar("SELECT message FROM events") == "hello"
        assert store.query("PRAGMA journal_mode")[0][0] == "wal"


def test_failed_transaction_writes_nothing(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        with pytest.raises(RuntimeError):
            with store.transaction() as db:
                db.execute(
                    "INSERT INTO steps(step, started_at, finished_at) VALUES (1, 0, 1)"
                )
                store.put("inside", True)  # joins the outer transaction
                raise RuntimeError("crash in the middle of a step")
        assert store.last_step() == 0
        assert store.get("inside") is None


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "db.sqlite"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, but this botlab knows only up to "
                                         rf"{SCHEMA_VERSION}: it was written by a newer botlab"):
        Store(path)
    assert path.read_bytes() == before


def test_not_a_database(tmp_path):
    path = tmp_path / "db.sqlite"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(StoreError, match="not a usable botlab database"):
        Store(path)
