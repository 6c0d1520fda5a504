"""Subjects and the record locator: which node knows a subject under which local id."""

from __future__ import annotations

from collections.abc import Iterable

import sqlite_utils

from credex.db import transaction
from credex.keys import VerifyKey


class Locator:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self._db = db
        self._conn = db.conn
        self._conn.execute(
            """CREATE TABLE IF NOT EXISTS subjects (
                subject_id TEXT PRIMARY KEY,
                public_key BLOB NOT NULL,
                region TEXT NOT NULL DEFAULT ''
            ) WITHOUT ROWID"""
        )
        self._conn.execute(
            """CREATE TABLE IF NOT EXISTS locator (
                subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
                node_id TEXT NOT NULL,
                local_id TEXT NOT NULL,
                PRIMARY KEY (subject_id, node_id)
            ) WITHOUT ROWID"""
        )

    def clear(self) -> None:
        """Forget every subject and locator entry (before importing a new population)."""
        with transaction(self._db) as conn:
            conn.execute("DELETE FROM locator")
            conn.execute("DELETE FROM subjects")

    def add_subjects(self, rows: Iterable[tuple[str, VerifyKey, str]]) -> int:
        """Insert or replace (subject_id, key, region) rows; returns how many."""
        with transaction(self._db) as conn:
            cur = conn.executemany(
                "INSERT OR REPLACE INTO subjects VALUES (?, ?, ?)",
                ((sid, key.raw, region) for sid, key, region in rows),
            )
        return cur.rowcount

    def add_locations(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """Insert or replace (subject_id, node_id, local_id) rows; returns how many."""
        with transaction(self._db) as conn:
            cur = conn.executemany("INSERT OR REPLACE INTO locator VALUES (?, ?, ?)", rows)
        return cur.rowcount

    def subject_key(self, subject_id: str) -> VerifyKey | None:
        row = self._conn.execute(
            "SELECT public_key FROM subjects WHERE subject_id = ?", (subject_id,)
        ).fetchone()
        return VerifyKey(row[0]) if row else None

    def locate(self, subject_id: str) -> dict[str, str]:
        """node id → that node's local id for the subject."""
        return dict(
            self._conn.execute(
                "SELECT node_id, local_id FROM locator WHERE subject_id = ?", (subject_id,)
            ).fetchall()
        )
