"""Group commit: many requests' SQLite commits made durable by one fsync, off the event loop.

A server's database runs in WAL mode at synchronous=NORMAL, so COMMIT writes the WAL without
waiting for the disk. Before a response leaves, `flush()` makes every commit so far durable
with one fsync of the WAL in a worker thread; concurrent requests share it. SQLite syncs the
WAL itself before each checkpoint, so frames it moves into the database file stay durable.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import sqlite_utils

from credex.db import DatabaseError


class GroupCommit:
    """Tracks commits on one connection and makes them durable in shared fsyncs."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self._conn = db.conn
        main = next(
            row[2] for row in self._conn.execute("PRAGMA database_list") if row[1] == "main"
        )
        self._wal = Path(f"{main}-wal")
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseError(f"{main}: group commit needs WAL mode, not {mode}")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._wal_entry_synced = False  # the WAL's directory entry, synced once
        self.failure: str | None = None  # a failed sync: nothing can be promised any more
        # sqlite's change counter is a C int that may wrap: only ever compare it for equality.
        self._durable_mark = self._conn.total_changes
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_mark = self._durable_mark
        self._started = 0  # syncs begun; a completed one covers every commit before it began
        self._done = 0  # the last completed
        self._syncs = 0

    @property
    def syncs(self) -> int:
        """How many fsyncs have completed (several requests' commits share one)."""
        return self._syncs

    @property
    def pending(self) -> bool:
        """Whether some commit is not yet known to be on disk."""
        return self._conn.total_changes != self._durable_mark

    async def flush(self) -> None:
        """Return once every commit made before this call is on disk. After the disk has
        failed a sync once, every flush fails: the kernel may have dropped the pages, so a
        later sync that succeeds proves nothing (the database needs an operator)."""
        if self.failure is not None:
            raise OSError(self.failure)
        now = self._conn.total_changes
        if now == self._durable_mark:
            return
        covered = self._inflight is not None and self._inflight_mark == now
        needed = self._started if covered else self._started + 1
        while self._done < needed:
            if self._inflight is None:
                self._started += 1
                self._inflight_mark = self._conn.total_changes
                self._inflight = asyncio.ensure_future(
                    self._sync(self._started, self._inflight_mark)
                )
            await asyncio.shield(self._inflight)

    async def _sync(self, generation: int, mark: int) -> None:
        try:
            await asyncio.to_thread(self._fsync)
            self._durable_mark = mark
            self._done = generation
            self._syncs += 1
        finally:
            self._inflight = None

    def _fsync(self) -> None:
        fd = os.open(self._wal, os.O_RDONLY)  # syncing covers the file, whichever descriptor
        try:
            try:
                os.fdatasync(fd)
                if not self._wal_entry_synced:
                    _sync_directory(self._wal.parent)
                    self._wal_entry_synced = True
            except OSError as exc:
                self.failure = f"syncing {self._wal} failed: {exc}"
                raise
        finally:
            os.close(fd)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
