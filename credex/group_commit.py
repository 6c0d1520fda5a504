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


class GroupCommit:
    """Tracks commits on one connection and makes them durable in shared fsyncs."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self._conn = db.conn
        main = next(
            row[2] for row in self._conn.execute("PRAGMA database_list") if row[1] == "main"
        )
        self._wal = Path(f"{main}-wal")
        self._conn.execute("PRAGMA synchronous=NORMAL")
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
        """Return once every commit made before this call is on disk."""
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
            os.fdatasync(fd)
        finally:
            os.close(fd)
