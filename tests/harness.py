"""Helpers for assertions in tests: a failed call's trailers, a database with only the
runtime's tables. The federation, its clock and its loop are credex.testing's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import sqlite_utils

from credex.runtime.schema import Migration, open_migrated, runtime_tables


def trailer_map(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """A failed call's trailing metadata as text: the reason, the retry hint."""
    metadata: Any = err.trailing_metadata() or ()
    return {str(key): str(value) for key, value in metadata}


def runtime_database(path: Path) -> sqlite_utils.Database:
    """A database with only what both servers keep (audit log, nonces, witnessed
    checkpoints), for tests of those parts alone."""
    return open_migrated(path, [Migration(1, "runtime tables", runtime_tables)], what="test db")
