"""Adapters: read an operator's own tables as credex Records through configured SQL.

Every row an adapter returns says whose it is (its `local_id` column), and SQLite says whether
that is the subject asked about, with the column's own `=` (its collation and type affinity:
'r-7' is R-7 in a NOCASE column, '007' is 7 in an INTEGER one). A row of anyone else is never
disclosed: the node withholds it, and because an adapter that
returns one is wrong in a way no one can bound (its other columns may be as wrong as its
WHERE clause), the source stops answering altogether until the operator fixes the adapter and
restarts (`leak` says why; the node reports it on its health)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlite_utils

from credex.node.adapter_sql import statement_body
from credex.node.config import AdapterSpec
from credex.protocol import vocab
from credex.protocol.clock import from_timestamp, to_timestamp
from credex.runtime.db import unreadable
from credex.v1.common_pb2 import Record

LOCAL_ID = "local_id"
REQUIRED_COLUMNS = (LOCAL_ID, "record_id", "kind", "value", "unit", "occurred_at")
MAX_RECORDS_PER_QUERY = 10_000


class AdapterError(Exception):
    """An adapter produced a row credex cannot turn into a record. The message may quote the
    row: it is for the operator's log, never for the requester."""


@dataclass(frozen=True)
class ForeignRows:
    """Rows one adapter returned for subjects other than the one asked about (withheld)."""

    adapter: int  # its position among the config's [[adapter]] entries, from 1
    category: vocab.Category
    rows: int


class AdapterLeak(AdapterError):
    """Adapters returned rows of other subjects; none of them left the node."""

    def __init__(self, found: list[ForeignRows]) -> None:
        self.found = found
        where = ", ".join(
            f"{f.rows} from adapter #{f.adapter} ({vocab.category_name(f.category)})" for f in found
        )
        super().__init__(f"rows of other subjects withheld: {where}")


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


def same_subject(value: object, local_id: str) -> bool:
    """Whether a row's `local_id` value names the subject asked about as Python sees it: the
    same text, or the same integer written in decimal. Anything else, NULL included, is
    somebody else (unless SQLite says otherwise: see `subject_checked`)."""
    if isinstance(value, str):
        return value == local_id
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) == local_id
    return False


def subject_checked(sql: str) -> str:
    """The adapter's SELECT with one more column at the end: whether SQLite finds the row's
    `local_id` equal to :local_id, compared as that column compares (the result columns of a
    subquery keep their collation and affinity)."""
    return f"SELECT *, {LOCAL_ID} = :local_id FROM (\n{statement_body(sql)}\n)"


def checked_rows(
    conn: sqlite3.Connection, sql: str, local_id: str
) -> tuple[list[str], Generator[tuple[dict[str, object], bool], None, None]]:
    """The adapter's column names, and each row it returns for `local_id` with whether it is
    that subject's: SQLite's `=` for the column, or the same text or decimal integer."""
    cursor = conn.execute(subject_checked(sql), {"local_id": local_id})
    names = [d[0] for d in cursor.description or ()][:-1]

    def rows() -> Generator[tuple[dict[str, object], bool], None, None]:
        try:
            for *values, same in cursor:
                row = dict(zip(names, values, strict=True))
                yield row, same == 1 or same_subject(row.get(LOCAL_ID), local_id)
        finally:
            cursor.close()

    return names, rows()


class RecordSource:
    """The operator's database seen through the node's adapters; read-only."""

    def __init__(self, db: sqlite_utils.Database, adapters: Iterable[AdapterSpec]) -> None:
        self._conn = db.conn
        self._by_category: dict[vocab.Category, list[tuple[int, AdapterSpec]]] = {}
        for position, spec in enumerate(adapters, 1):
            self._by_category.setdefault(spec.category, []).append((position, spec))
        # Why this source no longer answers (an adapter returned other subjects' rows).
        self.leak: str | None = None

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
        """Records about `local_id` in `categories`, occurring within [data_from, data_to).
        AdapterLeak if any row was someone else's (then nothing is returned, now or later);
        AdapterError if a row cannot be read as a record."""
        if self.leak is not None:
            raise AdapterError(self.leak)
        records: list[Record] = []
        foreign: list[ForeignRows] = []
        read = 0
        for category in categories:
            seen: set[str] = set()
            for position, spec in self._by_category.get(category, ()):
                others = 0
                _, rows = checked_rows(self._conn, spec.sql, local_id)
                for row, own in rows:
                    read += 1
                    if read > MAX_RECORDS_PER_QUERY:
                        break
                    if not own:
                        others += 1
                        continue
                    record = to_record(category, row)
                    if record.record_id in seen:
                        raise AdapterError(
                            f"adapter #{position}: record id {record.record_id!r} is returned "
                            f"twice in {vocab.category_name(category)}"
                        )
                    seen.add(record.record_id)
                    when = from_timestamp(record.occurred_at)
                    if data_from is not None and when < data_from:
                        continue
                    if data_to is not None and when >= data_to:
                        continue
                    records.append(record)
                rows.close()
                if others:
                    foreign.append(ForeignRows(position, category, others))
        if foreign:
            leak = AdapterLeak(foreign)
            self.leak = (
                f"{leak}; the node answers no query until the adapter is fixed (check it with "
                "`credex-node check-config CONFIG --sample-id ID`) and the node restarted"
            )
            raise leak
        if read > MAX_RECORDS_PER_QUERY:
            raise AdapterError(f"more than {MAX_RECORDS_PER_QUERY} records")
        return records


def to_record(category: vocab.Category, row: dict[str, object]) -> Record:
    """The record a row stands for; AdapterError naming what is wrong with it."""
    record_id = row["record_id"]
    if not isinstance(record_id, str | int) or isinstance(record_id, bool) or record_id == "":
        raise AdapterError(f"record_id {record_id!r} is not a text or an integer")
    try:
        value = float(row["value"]) if row["value"] is not None else 0.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AdapterError(f"record {record_id!r}: value is not a number") from None
    if not math.isfinite(value):
        raise AdapterError(f"record {record_id!r}: value {value} is not finite")
    kind = row["kind"]
    if not isinstance(kind, str) or not kind:
        raise AdapterError(f"record {record_id!r}: kind {kind!r} is not a text")
    try:
        occurred_at = to_timestamp(parse_time(row["occurred_at"]))
    except (ValueError, OverflowError):  # seconds beyond what a timestamp can hold
        raise AdapterError(
            f"record {record_id!r}: occurred_at {row['occurred_at']!r} is out of range"
        ) from None
    return Record(
        record_id=str(record_id),
        category=category,
        kind=kind,
        value=value,
        unit=str(row["unit"] or ""),
        occurred_at=occurred_at,
        attributes={
            k: str(v) for k, v in row.items() if k not in REQUIRED_COLUMNS and v is not None
        },
    )
