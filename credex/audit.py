"""Append-only record of every request a party handled, with its outcome.

Both the directory and every node write one; the request id links their entries.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlite_utils

from credex.clock import Clock
from credex.errors import bounded


@dataclass(frozen=True)
class AuditEntry:
    request_id: str
    actor: str
    action: str
    outcome: str
    purpose: str = ""
    consent_id: str = ""
    subject_ref: str = ""
    categories: Iterable[str] = field(default_factory=tuple)
    node_id: str = ""
    detail: str = ""
    disclosed_digest: str = ""


class AuditLog:
    """The `audit_log` table of a credex-owned database."""

    TABLE = "audit_log"

    def __init__(self, db: sqlite_utils.Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        db.conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.TABLE} (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                at REAL NOT NULL,
                request_id TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                outcome TEXT NOT NULL,
                purpose TEXT NOT NULL,
                consent_id TEXT NOT NULL,
                subject_ref TEXT NOT NULL,
                categories TEXT NOT NULL,
                node_id TEXT NOT NULL,
                detail TEXT NOT NULL,
                disclosed_digest TEXT NOT NULL
            )"""
        )
        db.conn.execute(
            f"CREATE INDEX IF NOT EXISTS {self.TABLE}_request ON {self.TABLE} (request_id)"
        )

    def append(self, entry: AuditEntry) -> None:
        row = {k: bounded(v) if isinstance(v, str) else v for k, v in asdict(entry).items()}
        row["categories"] = json.dumps(sorted(bounded(c, 64) for c in entry.categories))
        row["at"] = self._clock()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._db.conn.execute(
            f"INSERT INTO {self.TABLE} ({cols}) VALUES ({marks})", tuple(row.values())
        )

    def entries(self) -> Iterator[dict[str, Any]]:
        for row in self._db.query(f"SELECT * FROM {self.TABLE} ORDER BY seq"):
            row["categories"] = json.loads(row["categories"])
            yield row
