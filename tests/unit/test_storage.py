"""A server's storage: a unit of work commits all of its writes or none, units do not nest,
no store writes outside one, and a serving storage has every unit on disk once `durable`
returns."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from credex.directory.enrollment import TokenGrant, TokenStore
from credex.directory.locator import Locator
from credex.directory.quotas import PurposeQuota
from credex.directory.request_claims import RequestClaims
from credex.directory.schema import open_directory_storage
from credex.protocol.keys import SigningKey
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.freshness import NonceStore
from credex.runtime.storage import Connection, OutsideUnit, SqliteStorage, Storage
from credex.v1.common_pb2 import Purpose

NONCE = b"n" * 16
LOAN = Purpose.PURPOSE_LOAN_APPLICATION

# Each store's writing methods, called outside any unit of work.
WRITES: dict[str, Callable[[Connection], object]] = {
    "nonce": lambda conn: NonceStore(conn).use(NONCE, 10.0, 1.0),
    "request id": lambda conn: RequestClaims(conn).claim("r-1", "bank", 1.0),
    "quota": lambda conn: PurposeQuota(conn, {LOAN: 3}).take("bank", "S1", LOAN, 1.0),
    "locator": lambda conn: Locator(conn).add_subjects([("S1", SigningKey.generate().public, "")]),
    "audit": lambda conn: AuditLog(conn, lambda: 1.0).append(
        AuditEntry(request_id="r-1", actor="bank", action="profile", outcome="assembled")
    ),
    "token": lambda conn: TokenStore(conn).issue(
        TokenGrant("bank", "requester", "Bank", "CN", (), ()), 100.0
    ),
}


def _rows(path: Path) -> int:
    tables = (
        "nonces",
        "profile_requests",
        "purpose_use",
        "subjects",
        "audit_log",
        "enrollment_tokens",
    )
    with sqlite3.connect(path) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)


@pytest.fixture
def storage(tmp_path: Path) -> SqliteStorage:
    return open_directory_storage(tmp_path / "directory.db")


def test_sqlite_is_a_storage(storage: SqliteStorage) -> None:
    assert isinstance(storage, Storage)


@pytest.mark.parametrize("store", sorted(WRITES))
def test_no_store_writes_outside_a_unit_of_work(
    storage: SqliteStorage, tmp_path: Path, store: str
) -> None:
    with pytest.raises(OutsideUnit):
        WRITES[store](storage.connection)
    assert _rows(tmp_path / "directory.db") == 0
    with storage.unit() as conn:  # the same write inside one is made
        WRITES[store](conn)


def test_a_unit_commits_every_write_or_none(storage: SqliteStorage, tmp_path: Path) -> None:
    locator = Locator(storage.connection)
    with pytest.raises(RuntimeError), storage.unit():
        NonceStore(storage.connection).use(NONCE, 10.0, 1.0)
        locator.add_subjects([("S1", SigningKey.generate().public, "Jiangsu")])
        raise RuntimeError("a later check refused the request")
    assert _rows(tmp_path / "directory.db") == 0 and locator.subject_key("S1") is None
    with storage.unit():
        NonceStore(storage.connection).use(NONCE, 10.0, 1.0)
        locator.add_subjects([("S1", SigningKey.generate().public, "Jiangsu")])
    assert _rows(tmp_path / "directory.db") == 2 and locator.subject_key("S1") is not None


def test_units_do_not_nest(storage: SqliteStorage) -> None:
    with storage.unit(), pytest.raises(OutsideUnit, match="do not nest"), storage.unit():
        pass
    with storage.unit():  # the outer unit ended cleanly: the next one starts
        pass


def test_a_serving_storage_has_each_unit_on_disk_once_durable_returns(tmp_path: Path) -> None:
    storage = open_directory_storage(tmp_path / "directory.db", serving=True)
    try:
        with storage.unit() as conn:
            RequestClaims(conn).claim("r-1", "bank", 1.0)
        assert storage.pending
        before = storage.syncs
        asyncio.run(storage.durable())
        assert not storage.pending and storage.syncs == before + 1
        assert storage.problem() is None
    finally:
        storage.close()


def test_a_command_storage_syncs_each_commit_itself(storage: SqliteStorage) -> None:
    with storage.unit() as conn:
        RequestClaims(conn).claim("r-1", "bank", 1.0)
    assert not storage.pending and storage.commits is None
    assert storage.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
