"""Numbered migrations: a database reaches the newest version one whole migration at a time,
is migrated once, and one newer than the code is refused untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from credex.directory.schema import open_directory_storage
from credex.node.schema import MIGRATIONS as NODE_MIGRATIONS
from credex.node.schema import open_node_storage
from credex.runtime.db import DatabaseError, open_database
from credex.runtime.schema import Migration, migrate, schema_version


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_each_server_creates_its_whole_schema_at_its_newest_version(tmp_path: Path) -> None:
    node = open_node_storage(tmp_path / "state.db")
    assert schema_version(node.database) == len(NODE_MIGRATIONS)
    assert {"audit_log", "nonces", "ticket_status", "ticket_uses", "disputes"} <= _tables(
        tmp_path / "state.db"
    )
    directory = open_directory_storage(tmp_path / "directory.db")
    assert schema_version(directory.database) == 1
    assert {"members", "consents", "consent_tickets", "subject_nonces", "profile_requests"} <= (
        _tables(tmp_path / "directory.db")
    )


def test_a_database_newer_than_the_code_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    with pytest.raises(DatabaseError, match="schema version 7, newer than this credex knows"):
        open_node_storage(path)
    assert _tables(path) == set()


def test_migrations_apply_in_order_once_and_a_failed_one_leaves_the_version(
    tmp_path: Path,
) -> None:
    applied: list[int] = []

    def step(version: int, fail: bool = False) -> Migration:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(f"CREATE TABLE t{version} (x INTEGER)")
            applied.append(version)
            if fail:
                raise RuntimeError("the disk filled up")

        return Migration(version, f"table {version}", apply)

    db = open_database(tmp_path / "x.db")
    assert migrate(db, [step(1), step(2)], what="x") == 2
    assert migrate(db, [step(1), step(2)], what="x") == 2  # nothing left to do
    assert applied == [1, 2]
    with pytest.raises(RuntimeError):
        migrate(db, [step(1), step(2), step(3, fail=True)], what="x")
    assert schema_version(db) == 2 and "t3" not in _tables(tmp_path / "x.db")
    with pytest.raises(ValueError, match="numbered"):
        migrate(db, [step(1), step(3)], what="x")
