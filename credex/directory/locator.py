"""Subjects and the record locator: which node knows a subject under which local id, and the
subject's key for that node (registered by the subject, attested to the node)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from credex.protocol.errors import Reason, refused
from credex.protocol.keys import VerifyKey
from credex.runtime.storage import Connection, require_unit


@dataclass(frozen=True)
class Holding:
    """One node's knowledge of a subject: its local id, and the subject's key for that node."""

    local_id: str
    node_key: VerifyKey | None


class Locator:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def clear(self) -> None:
        """Forget every subject and locator entry (before importing a new population)."""
        require_unit(self._conn)
        self._conn.execute("DELETE FROM locator")
        self._conn.execute("DELETE FROM subjects")

    def add_subjects(self, rows: Iterable[tuple[str, VerifyKey, str]]) -> int:
        """Insert or replace (subject_id, key, region) rows; returns how many. A subject whose
        main key changes loses the node keys derived from the old one: the new device
        registers its own."""
        raw_rows = [(sid, key.raw, region) for sid, key, region in rows]
        require_unit(self._conn)
        self._conn.executemany(
            "UPDATE locator SET node_key = NULL WHERE subject_id = ? AND EXISTS "
            "(SELECT 1 FROM subjects WHERE subject_id = ? AND public_key != ?)",
            [(sid, sid, raw) for sid, raw, _ in raw_rows],
        )
        cur = self._conn.executemany(
            "INSERT INTO subjects VALUES (?, ?, ?) ON CONFLICT (subject_id) DO UPDATE "
            "SET public_key = excluded.public_key, region = excluded.region",
            raw_rows,
        )
        return cur.rowcount

    def add_locations(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """Insert or replace (subject_id, node_id, local_id) rows; returns how many. The
        subject's key for the node stays."""
        require_unit(self._conn)
        cur = self._conn.executemany(
            "INSERT INTO locator (subject_id, node_id, local_id) VALUES (?, ?, ?) "
            "ON CONFLICT (subject_id, node_id) DO UPDATE SET local_id = excluded.local_id",
            [tuple(row) for row in rows],
        )
        return cur.rowcount

    def holdings(self, subject_id: str) -> dict[str, Holding]:
        """node id -> that node's local id for the subject and the subject's key for it."""
        return {
            node_id: Holding(local_id, VerifyKey(raw) if raw else None)
            for node_id, local_id, raw in self._conn.execute(
                "SELECT node_id, local_id, node_key FROM locator WHERE subject_id = ?",
                (subject_id,),
            ).fetchall()
        }

    def register_node_keys(self, subject_id: str, keys: Mapping[str, VerifyKey]) -> None:
        """Set the subject's key for each node (inside the caller's unit of work); every node
        must hold the subject's data, and no key may be registered for another subject or
        node."""
        holders = self.holdings(subject_id)
        unknown = sorted(set(keys) - set(holders))
        if unknown:
            raise refused(
                Reason.MALFORMED, f"nodes that hold none of your data: {', '.join(unknown)}"
            )
        require_unit(self._conn)
        try:
            for node_id, key in keys.items():
                self._conn.execute(
                    "UPDATE locator SET node_key = ? WHERE subject_id = ? AND node_id = ?",
                    (key.raw, subject_id, node_id),
                )
        except sqlite3.IntegrityError:
            raise refused(
                Reason.KEY_IN_USE,
                "a key in this registration is registered already; derive a key per node",
            ) from None

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
