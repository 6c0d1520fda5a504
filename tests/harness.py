"""Helpers for assertions in tests: a failed call's trailers, a database with only the
runtime's tables. The federation, its clock and its loop are credex.testing's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from credex.protocol.clock import Clock
from credex.protocol.keys import SigningKey
from credex.runtime.audit import AuditLog
from credex.runtime.schema import Migration, runtime_tables
from credex.runtime.storage import SqliteStorage


def trailer_map(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """A failed call's trailing metadata as text: the reason, the retry hint."""
    metadata: Any = err.trailing_metadata() or ()
    return {str(key): str(value) for key, value in metadata}


def runtime_storage(path: Path) -> SqliteStorage:
    """A database with only what both servers keep (audit log, nonces, witnessed
    checkpoints), for tests of those parts alone."""
    return SqliteStorage.open(
        path, [Migration(1, "runtime tables", runtime_tables)], what="test database"
    )


def runtime_log(
    path: Path, clock: Clock, *, log_id: str = "", key: SigningKey | None = None
) -> tuple[AuditLog, SqliteStorage]:
    """An audit log alone in its own database (its owner recorded if `log_id`), and the
    storage whose units its writes go in."""
    storage = runtime_storage(path)
    log = AuditLog(storage.connection, clock, log_id=log_id, key=(lambda: key) if key else None)
    if log_id:
        with storage.unit():
            log.own()
    return log, storage
