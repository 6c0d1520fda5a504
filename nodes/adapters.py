"""Adapters: read an operator's own tables as credex Records through configured SQL."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime

import sqlite_utils

from credex import vocab
from credex.clock import from_timestamp, to_timestamp
from credex.db import unreadable
from credex.v1.common_pb2 import Record
from nodes.config import AdapterSpec

REQUIRED_COLUMNS = ("record_id", "kind", "value", "unit", "occurred_at")
MAX_RECORDS_PER_QUERY = 10_000


class AdapterError(Exception):
    """An adapter produced a row credex cannot turn into a record."""


def parse_time(value: object) -> float:
    """Seconds since the epoch from an ISO date/datetime text or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return datetime.combine(
                    date.fromisoformat(text), datetime.min.time(), UTC
                ).timestamp()
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    raise AdapterError(f"occurred_at {value!r} is neither ISO 8601 text nor epoch seconds")


class RecordSource:
    """The operator's database seen through the node's adapters; read-only."""

    def __init__(self, db: sqlite_utils.Database, adapters: Iterable[AdapterSpec]) -> None:
        self._conn = db.conn
        self._by_category: dict[vocab.Category, list[AdapterSpec]] = {}
        for spec in adapters:
            self._by_category.setdefault(spec.category, []).append(spec)

    @property
    def categories(self) -> frozenset[vocab.Category]:
        return frozenset(self._by_category)

    def unreadable(self) -> str | None:
        """Why the operator's database cannot be read right now, if it cannot."""
        problem = unreadable(self._conn)
        return f"records database unreadable: {problem}" if problem else None

    def fetch(
        self,
        local_id: str,
        categories: Iterable[vocab.Category],
        *,
        data_from: float | None = None,
        data_to: float | None = None,
    ) -> list[Record]:
        """Records about `local_id` in `categories`, occurring within [data_from, data_to)."""
        records: list[Record] = []
        for category in categories:
            for spec in self._by_category.get(category, ()):
                cursor = self._conn.execute(spec.sql, {"local_id": local_id})
                names = [d[0] for d in cursor.description or ()]
                for row in cursor:
                    record = _to_record(category, dict(zip(names, row, strict=True)))
                    when = from_timestamp(record.occurred_at)
                    if data_from is not None and when < data_from:
                        continue
                    if data_to is not None and when >= data_to:
                        continue
                    records.append(record)
                    if len(records) > MAX_RECORDS_PER_QUERY:
                        raise AdapterError(f"more than {MAX_RECORDS_PER_QUERY} records")
        return records


def _to_record(category: vocab.Category, row: dict[str, object]) -> Record:
    try:
        value = float(row["value"]) if row["value"] is not None else 0.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AdapterError(f"record {row['record_id']!r}: value is not a number") from None
    if not math.isfinite(value):
        raise AdapterError(f"record {row['record_id']!r}: value {value} is not finite")
    return Record(
        record_id=str(row["record_id"]),
        category=category,
        kind=str(row["kind"]),
        value=value,
        unit=str(row["unit"] or ""),
        occurred_at=to_timestamp(parse_time(row["occurred_at"])),
        attributes={
            k: str(v) for k, v in row.items() if k not in REQUIRED_COLUMNS and v is not None
        },
    )
