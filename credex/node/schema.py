"""The node's state database (`state_db`): its schema, version by version. The records the
node serves are the agency's own database, never written by credex."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from credex.runtime.schema import Migration, runtime_tables
from credex.runtime.storage import SqliteStorage


def _v1(conn: sqlite3.Connection) -> None:
    """The state as of numbered migrations, and the upgrades of older databases."""
    runtime_tables(conn)
    # where the directory's feeds and snapshots have brought us
    conn.execute(
        "CREATE TABLE IF NOT EXISTS directory_sync "
        "(id INTEGER PRIMARY KEY CHECK (id = 1), synced_seq INTEGER NOT NULL, "
        "last_sync REAL NOT NULL)"
    )
    conn.execute("INSERT OR IGNORE INTO directory_sync VALUES (1, 0, 0)")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    if "ticket_status" not in tables:  # before tickets: a feed of consent ids, now gone
        conn.execute("DROP TABLE IF EXISTS revoked_consents")
        conn.execute("UPDATE directory_sync SET synced_seq = 0")
        conn.execute(
            "CREATE TABLE ticket_status "
            "(ticket_id TEXT PRIMARY KEY, status INTEGER NOT NULL, seq INTEGER NOT NULL)"
        )
    # disputes handed to this node, until its operator resolves them
    conn.execute(
        """CREATE TABLE IF NOT EXISTS disputes (
            dispute_id TEXT PRIMARY KEY,
            local_subject_id TEXT NOT NULL,
            record_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            status TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            filed_at REAL NOT NULL,
            resolved_at REAL
        )"""
    )
    if "category" not in {row[1] for row in conn.execute("PRAGMA table_info(disputes)")}:
        conn.execute("ALTER TABLE disputes ADD COLUMN category INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS disputes_subject ON disputes (local_subject_id)")
    # answers given per consent ticket
    conn.execute(
        "CREATE TABLE IF NOT EXISTS ticket_uses (ticket_id TEXT PRIMARY KEY, "
        "uses INTEGER NOT NULL, not_after REAL NOT NULL) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS ticket_uses_not_after ON ticket_uses (not_after)")


MIGRATIONS = [Migration(1, "the node's state as of numbered migrations", _v1)]


def open_node_storage(path: Path, *, serving: bool = False) -> SqliteStorage:
    """The node state database, its schema brought up to date (`serving`: see SqliteStorage)."""
    return SqliteStorage.open(path, MIGRATIONS, what="node state database", serving=serving)
