"""The refusal recorder: a flood of one kind of refusal costs at most two audit entries a
window, the first is written at once, counts survive into the hash chain, memory is bounded."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from credex.runtime.audit import AuditEntry, AuditLog, verify_log
from credex.runtime.refusals import FIRST_WRITES_BURST, OVERFLOW_ACTOR, RefusalRecorder
from credex.runtime.storage import SqliteStorage
from tests.harness import runtime_storage


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def refusal(n: int = 0, *, actor: str = "bank", subject: str = "S1") -> AuditEntry:
    return AuditEntry(
        request_id=f"r-{n}",
        actor=actor,
        action="profile",
        outcome="refused:CONSENT_USED_UP",
        purpose="loan-application",
        consent_id="c-1",
        subject_ref=subject,
        categories=("financial",),
        detail="consent used 1 of 1 times",
    )


def rows(path: Path) -> list[tuple[str, str, int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT request_id, actor, count, detail FROM audit_log ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


Setup = tuple[Path, Clock, AuditLog, SqliteStorage]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    path = tmp_path / "state.db"
    clock = Clock()
    storage = runtime_storage(path)
    return path, clock, AuditLog(storage.connection, clock), storage


def test_the_first_refusal_is_written_at_once_and_the_rest_counted(
    setup: Setup,
) -> None:
    path, clock, audit, storage = setup
    recorder = RefusalRecorder(audit, clock, storage=storage, window_s=60)
    written = [recorder.record(refusal(i)) for i in range(500)]
    assert written == [True] + [False] * 499
    assert [(r[0], r[2]) for r in rows(path)] == [("r-0", 1)]
    assert recorder.pending == 499
    clock.now += 30
    assert recorder.flush() == 0  # the window is still open
    clock.now += 30
    assert recorder.flush() == 1
    entries = rows(path)
    assert [(r[1], r[2]) for r in entries] == [("bank", 1), ("bank", 499)]
    # request ids varied: blanked; the shared detail is kept after the summary
    assert entries[1][0] == ""
    assert entries[1][3].startswith("499 more refusals like this, ")
    assert entries[1][3].endswith(": consent used 1 of 1 times")
    assert recorder.pending == 0
    report = verify_log(path)
    assert report.ok, report.problem  # the count is in the chain


def test_a_new_window_writes_its_first_refusal_again(setup: Setup) -> None:
    path, clock, audit, storage = setup
    recorder = RefusalRecorder(audit, clock, storage=storage, window_s=10)
    recorder.record(refusal(1))
    recorder.record(refusal(2))
    clock.now += 11
    assert recorder.record(refusal(3))  # closes the old window (its count) and opens a new one
    assert [(r[0], r[2]) for r in rows(path)] == [("r-1", 1), ("r-2", 1), ("r-3", 1)]


def test_kinds_are_counted_apart(setup: Setup) -> None:
    path, clock, audit, storage = setup
    recorder = RefusalRecorder(audit, clock, storage=storage, window_s=10)
    for i in range(3):
        recorder.record(refusal(i, actor="bank"))
        recorder.record(refusal(i, actor="school"))
        recorder.record(refusal(i, subject="S2"))
    assert len(rows(path)) == 3
    clock.now += 10
    assert recorder.flush() == 3
    assert sorted(r[2] for r in rows(path)) == [1, 1, 1, 2, 2, 2]


def test_a_crash_loses_only_the_counts_of_open_windows(tmp_path: Path) -> None:
    """Nothing written before the crash is lost; the first refusal of each kind never is."""
    path = tmp_path / "state.db"
    clock = Clock()
    storage = runtime_storage(path)
    recorder = RefusalRecorder(AuditLog(storage.connection, clock), clock, storage=storage)
    for i in range(10):
        recorder.record(refusal(i))
    storage.close()  # the process dies: the recorder's memory is gone
    assert [(r[0], r[2]) for r in rows(path)] == [("r-0", 1)]


def test_kinds_past_the_cap_are_counted_under_one_overflow_kind(
    setup: Setup,
) -> None:
    """Callers rotating addresses make a new kind each: past `max_keys` they are counted
    together, so memory and writes stay bounded whatever the number of addresses."""
    path, clock, audit, storage = setup
    recorder = RefusalRecorder(audit, clock, storage=storage, window_s=60, max_keys=4)
    for subject in range(4):
        recorder.record(refusal(subject=f"S{subject}"))
        recorder.record(refusal(subject=f"S{subject}"))
    assert recorder.pending == 4
    for n in range(500):
        recorder.record(refusal(actor=f"address 10.0.{n // 250}.{n % 250}", subject=""))
    assert len(recorder._windows) == 5  # the four kinds held and one overflow kind
    assert len(rows(path)) == 4 + 1  # the first of each, written at once
    assert rows(path)[-1][1] == OVERFLOW_ACTOR
    asyncio.run(recorder.close())
    assert sum(r[2] for r in rows(path)) == 8 + 500


def test_first_refusals_past_their_rate_are_counted_not_written(
    setup: Setup,
) -> None:
    path, clock, audit, storage = setup
    recorder = RefusalRecorder(audit, clock, storage=storage, window_s=60)
    for n in range(FIRST_WRITES_BURST + 50):
        recorder.record(refusal(actor=f"address 10.1.{n // 250}.{n % 250}", subject=""))
    assert len(rows(path)) == FIRST_WRITES_BURST
    asyncio.run(recorder.close())
    assert sum(r[2] for r in rows(path)) == FIRST_WRITES_BURST + 50


def test_close_writes_every_count_and_makes_it_durable(
    setup: Setup,
) -> None:
    path, clock, audit, storage = setup
    flushed = []

    class Watched(SqliteStorage):
        async def durable(self) -> None:
            flushed.append(True)

    watched = Watched(storage.database, serving=False)
    recorder = RefusalRecorder(audit, clock, storage=watched, window_s=3600)
    for i in range(5):
        recorder.record(refusal(i))
    asyncio.run(recorder.close())
    assert [r[2] for r in rows(path)] == [1, 4]
    assert flushed == [True]


def test_the_background_task_writes_closed_windows(setup: Setup) -> None:
    path, clock, audit, storage = setup
    recorder = RefusalRecorder(audit, clock, storage=storage, window_s=5)
    recorder.record(refusal(1))
    recorder.record(refusal(2))
    clock.now += 5

    async def run_until_written() -> int:
        task = asyncio.create_task(recorder.run(interval_s=0.01))
        try:
            for _ in range(2000):  # generous: a busy machine may be slow to schedule the task
                if recorder.pending == 0:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        return recorder.pending

    assert asyncio.run(run_until_written()) == 0
    assert [r[2] for r in rows(path)] == [1, 1]


def test_nonsense_settings_are_refused(setup: Setup) -> None:
    _, clock, audit, storage = setup
    with pytest.raises(ValueError):
        RefusalRecorder(audit, clock, storage=storage, window_s=0)
    with pytest.raises(ValueError):
        RefusalRecorder(audit, clock, storage=storage, max_keys=0)
