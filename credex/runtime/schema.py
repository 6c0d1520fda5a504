"""Database schemas as numbered migrations. Each server lists its own (credex.node.schema,
credex.directory.schema) and brings its database up to date when it opens it; the version
reached is SQLite's `PRAGMA user_version`. Stores take a database that has its schema and
create no tables themselves (credex.runtime.storage opens it).

Each migration runs in one transaction with the version it reaches, so a database is at
one version or the next, never between; a process that finds the work done by another
skips it. A database newer than this code is refused rather than written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlite_utils

from credex.runtime.db import DatabaseError, transaction

AUDIT_LOG = "audit_log"
AUDIT_CHECKPOINTS = "audit_checkpoints"
AUDIT_META = "audit_meta"
WITNESSED = "witnessed_checkpoints"


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration], *, what: str) -> int:
    """Apply every migration after the database's version, each in its own transaction;
    returns the version reached. DatabaseError for a database newer than `migrations`."""
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise ValueError("migrations are numbered 1, 2, 3 … in order")
    newest = len(migrations)
    found = schema_version(db)
    if found > newest:
        raise DatabaseError(
            f"{what} has schema version {found}, newer than this credex knows ({newest}): "
            "run the credex version that wrote it, or a newer one"
        )
    for migration in migrations[found:]:
        with transaction(db) as conn:
            if schema_version(db) >= migration.version:
                continue  # another process got here first
            migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {migration.version}")
    return newest


def runtime_tables(conn: sqlite3.Connection, nonce_tables: Iterable[str] = ("nonces",)) -> None:
    """What both servers keep: the audit log with its checkpoints and owner, single-use nonces,
    and the other side's checkpoints they witness (as of schema version 1, with the upgrades
    of databases made before numbered migrations)."""
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({AUDIT_LOG})")}
    if columns and "hash" not in columns:  # a log from before the chain: keep it aside
        conn.execute(f"ALTER TABLE {AUDIT_LOG} RENAME TO {AUDIT_LOG}_unchained")
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {AUDIT_LOG} (
            seq INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            request_id TEXT NOT NULL,
            link TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            purpose TEXT NOT NULL,
            consent_id TEXT NOT NULL,
            subject_ref TEXT NOT NULL,
            categories TEXT NOT NULL,
            node_id TEXT NOT NULL,
            detail TEXT NOT NULL,
            disclosed_digest TEXT NOT NULL,
            hash BLOB NOT NULL,
            count INTEGER NOT NULL DEFAULT 1,
            query_digest TEXT NOT NULL DEFAULT ''
        )"""
    )
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({AUDIT_LOG})")}
    if "count" not in columns:
        conn.execute(f"ALTER TABLE {AUDIT_LOG} ADD COLUMN count INTEGER NOT NULL DEFAULT 1")
    if "query_digest" not in columns:
        conn.execute(f"ALTER TABLE {AUDIT_LOG} ADD COLUMN query_digest TEXT NOT NULL DEFAULT ''")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {AUDIT_LOG}_request ON {AUDIT_LOG} (request_id)")
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {AUDIT_LOG}_subject ON {AUDIT_LOG} (subject_ref, action)"
    )
    conn.execute(f"CREATE INDEX IF NOT EXISTS {AUDIT_LOG}_link ON {AUDIT_LOG} (link)")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {AUDIT_CHECKPOINTS} "
        "(seq INTEGER PRIMARY KEY, signed BLOB NOT NULL)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {AUDIT_META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    )
    for table in nonce_tables:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS [{table}] "
            "(nonce BLOB PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS [{table}_expires] ON [{table}] (expires_at)")
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {WITNESSED} (
            log_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            signed BLOB NOT NULL,
            received_at REAL NOT NULL,
            PRIMARY KEY (log_id, seq)
        )"""
    )
