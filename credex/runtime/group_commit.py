"""Group commit: many requests' SQLite commits made durable by one fsync, off the event loop.

A server's database runs in WAL mode at synchronous=NORMAL, so COMMIT writes the WAL without
waiting for the disk. Before a response leaves, `flush()` makes every commit so far durable
with one fsync of the WAL in a worker thread; concurrent requests share it. SQLite syncs the
WAL itself before each checkpoint, so frames it moves into the database file stay durable.

The WAL stays open on a descriptor of our own from the start: a flush never needs a new
descriptor, so a server whose descriptors are taken by a flood of connections still commits.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import sqlite_utils

from credex.runtime.db import DatabaseError


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
        self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # SQLite opens the WAL
        self._fd: int | None = None
        self._open_wal()
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

    def _open_wal(self) -> None:
        """Hold the WAL SQLite has open on a descriptor of our own: syncing covers the file,
        whichever descriptor, and SQLite keeps that file while our connection is open."""
        fd = os.open(self._wal, os.O_RDONLY)
        try:
            _sync_directory(self._wal.parent)  # the WAL's directory entry, once
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _fsync(self) -> None:
        if self._fd is None:
            raise OSError(f"{self._wal} is closed: the server has stopped")
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self.failure = f"syncing {self._wal} failed: {exc}"
            raise

    def close(self) -> None:
        """Give the WAL's descriptor back (when the server stops)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
