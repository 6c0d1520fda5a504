"""Group commit: commits made before flush() are synced, concurrent flushes share one sync."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
from pathlib import Path

import pytest

from credex.runtime.db import DatabaseError, open_database, transaction
from credex.runtime.group_commit import GroupCommit


def committer(tmp_path: Path) -> tuple[GroupCommit, object]:
    db = open_database(tmp_path / "state.db")
    db.conn.execute("CREATE TABLE t (x INTEGER)")
    commits = GroupCommit(db)
    return commits, db


def test_runs_the_database_without_a_sync_per_commit(tmp_path: Path) -> None:
    db = open_database(tmp_path / "state.db")
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL by default
    GroupCommit(db)
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: flush() syncs


def test_nothing_to_flush_costs_no_sync(tmp_path: Path) -> None:
    commits, _ = committer(tmp_path)
    assert not commits.pending
    asyncio.run(commits.flush())
    assert commits.syncs == 0


def test_a_commit_is_pending_until_flushed(tmp_path: Path) -> None:
    commits, db = committer(tmp_path)
    with transaction(db):  # type: ignore[arg-type]
        db.conn.execute("INSERT INTO t VALUES (1)")  # type: ignore[attr-defined]
    assert commits.pending
    asyncio.run(commits.flush())
    assert not commits.pending and commits.syncs == 1
    asyncio.run(commits.flush())
    assert commits.syncs == 1


def test_concurrent_requests_share_syncs(tmp_path: Path) -> None:
    commits, db = committer(tmp_path)

    async def request(i: int) -> None:
        db.conn.execute("INSERT INTO t VALUES (?)", (i,))  # type: ignore[attr-defined]
        await commits.flush()
        assert commits.syncs >= 1

    async def burst() -> None:
        await asyncio.gather(*(request(i) for i in range(32)))

    asyncio.run(burst())
    # The first request's sync is under way while the other 31 commit; one more covers them.
    assert commits.syncs == 2
    assert not commits.pending


def test_a_flush_waits_for_a_sync_begun_after_its_commit(tmp_path: Path) -> None:
    commits, db = committer(tmp_path)
    order: list[str] = []

    async def first() -> None:
        db.conn.execute("INSERT INTO t VALUES (1)")  # type: ignore[attr-defined]
        await commits.flush()
        order.append("first")

    async def second() -> None:
        await asyncio.sleep(0)  # commits while the first request's sync is in flight
        db.conn.execute("INSERT INTO t VALUES (2)")  # type: ignore[attr-defined]
        await commits.flush()
        order.append("second")
        assert not commits.pending

    async def both() -> None:
        await asyncio.gather(first(), second())

    asyncio.run(both())
    assert order == ["first", "second"] and commits.syncs == 2


def test_a_flush_needs_no_new_descriptor(tmp_path: Path) -> None:
    """With every descriptor taken (as by a flood of idle connections), commits still become
    durable: the WAL is synced through the descriptor opened at start."""
    commits, db = committer(tmp_path)
    db.conn.execute("INSERT INTO t VALUES (1)")  # type: ignore[attr-defined]
    loop = asyncio.new_event_loop()  # the server's loop and worker threads exist before it
    loop.run_until_complete(asyncio.to_thread(int))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    try:
        with pytest.raises(OSError) as full:
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        assert full.value.errno == errno.EMFILE
        loop.run_until_complete(commits.flush())
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        loop.close()
    assert not commits.pending and commits.syncs == 1 and commits.failure is None


def test_a_failed_disk_sync_fails_every_later_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After fdatasync reports an error the kernel may have dropped the pages, so a later
    sync that succeeds proves nothing. (The failing disk is simulated: none can be had here.)"""
    commits, db = committer(tmp_path)
    db.conn.execute("INSERT INTO t VALUES (1)")  # type: ignore[attr-defined]

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)  # the os module group_commit syncs with
    with pytest.raises(OSError, match="Input/output error"):
        asyncio.run(commits.flush())
    monkeypatch.undo()  # the disk "recovers"
    assert commits.failure is not None and "Input/output error" in commits.failure
    with pytest.raises(OSError, match=r"syncing .* failed"):
        asyncio.run(commits.flush())
    assert commits.syncs == 0


def test_group_commit_needs_wal_mode(tmp_path: Path) -> None:
    db = open_database(tmp_path / "state.db")
    db.conn.execute("PRAGMA journal_mode=DELETE")
    with pytest.raises(DatabaseError, match="needs WAL mode"):
        GroupCommit(db)
