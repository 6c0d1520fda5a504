"""Where a server keeps its own state: one interface, with SQLite as the one backend today.

The rules every store and every request handler keeps:

- A store (the locator, consents, nonces, the audit log, …) is built over the `Connection` its
  server's storage hands out. It creates no tables (the numbered migrations do) and opens no
  transaction.
- Every write happens inside a unit of work, `with storage.unit() as conn:`, which commits all
  of its writes or none. A store's writing methods refuse to run outside one
  (`require_unit`). A request makes one unit per step that must be whole: a profile makes two,
  one authorising it before any node discloses and one recording what the nodes answered.
- `await storage.durable()` returns once every unit committed so far is on disk. rpc_handler
  awaits it before any answer leaves, so nothing a reply reports is lost.

A second backend implements `Storage` and hands out connections with the same DB-API calls.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, Self

import sqlite_utils

from credex.runtime.db import open_database, transaction, unreadable
from credex.runtime.group_commit import GroupCommit
from credex.runtime.schema import Migration, migrate


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The DB-API calls stores make on the connection their storage hands out."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class OutsideUnit(RuntimeError):
    """A store was asked to write outside a unit of work: a bug in the caller."""


def require_unit(conn: Connection) -> None:
    """Refuse a write outside a unit of work (a write there would commit alone)."""
    if not conn.in_transaction:
        raise OutsideUnit("a store writes only inside a unit of work (storage.unit())")


class Storage(ABC):
    """A server's durable state behind one backend."""

    @property
    @abstractmethod
    def connection(self) -> Connection:
        """The connection stores are built over."""

    @abstractmethod
    def unit(self) -> AbstractContextManager[Connection]:
        """One unit of work: every write inside it commits together, or none if it raises.
        Units do not nest."""

    @abstractmethod
    async def durable(self) -> None:
        """Return once every unit committed so far is on disk; OSError once the disk has
        failed (nothing can be promised any more)."""

    @property
    @abstractmethod
    def failure(self) -> str | None:
        """Why writes can no longer be made durable, if the disk failed them."""

    @abstractmethod
    def problem(self) -> str | None:
        """Why the state cannot be used right now (the disk failed, the database is gone or
        corrupt), for health checks."""

    @abstractmethod
    def close(self) -> None:
        """Let the backend go (when the server or command stops)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteStorage(Storage):
    """One SQLite database in WAL mode, one connection, one writer. A serving storage shares
    one fsync among many requests' commits (group commit); a command's storage syncs each
    commit itself (synchronous=FULL)."""

    def __init__(self, db: sqlite_utils.Database, *, serving: bool) -> None:
        self._db = db
        self._conn = db.conn
        self.commits = GroupCommit(db) if serving else None  # see credex.runtime.group_commit

    @classmethod
    def open(
        cls, path: Path, migrations: Sequence[Migration], *, what: str, serving: bool = False
    ) -> SqliteStorage:
        """Open (creating) a credex-owned database and bring its schema up to date."""
        db = open_database(path)
        try:
            migrate(db, migrations, what=f"{what} {path}")
            return cls(db, serving=serving)
        except BaseException:
            db.conn.close()
            raise

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @property
    def database(self) -> sqlite_utils.Database:
        """The sqlite-utils view of the database, for commands that read it."""
        return self._db

    def unit(self) -> AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: the one writer holds the database for the unit."""
        if self._conn.in_transaction:
            raise OutsideUnit("units of work do not nest")
        return transaction(self._db)

    async def durable(self) -> None:
        if self.commits is not None:
            await self.commits.flush()

    @property
    def failure(self) -> str | None:
        return self.commits.failure if self.commits is not None else None

    @property
    def syncs(self) -> int:
        """How many shared fsyncs have completed."""
        return self.commits.syncs if self.commits is not None else 0

    @property
    def pending(self) -> bool:
        """Whether some committed unit is not yet known to be on disk."""
        return self.commits is not None and self.commits.pending

    def problem(self) -> str | None:
        if self.failure is not None:
            return self.failure
        return unreadable(self._conn)

    def close(self) -> None:
        if self.commits is not None:
            self.commits.close()
        self._conn.close()
