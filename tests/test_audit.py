"""Tamper-evident audit logs: every way of changing a real log is found, an intact log of
100,000 entries verifies, and the servers' own logs chain and reconcile."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from credex.audit import GENESIS, AuditEntry, AuditLog, entry_hash, verify_log
from credex.db import open_database, transaction
from credex.keys import SigningKey
from credex.signing import seal
from credex.v1.audit_pb2 import AuditCheckpoint

BIN = Path(sys.executable).parent
OWNER = SigningKey.from_seed(b"audit-owner")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def make_log(path: Path, entries: int = 20, checkpoint_every: int = 5) -> None:
    db = open_database(path)
    log = AuditLog(db, Clock(), log_id="pboc", key=lambda: OWNER)
    with transaction(db):
        for i in range(1, entries + 1):
            log.append(
                AuditEntry(
                    request_id=f"q-{i}", actor="bank", action="query", outcome="disclosed",
                    purpose="loan-application", consent_id="c-1", subject_ref=f"L{i % 7}",
                    categories=["financial"], node_id="pboc", detail=f"{i % 3} records",
                    count=3 if i == 9 else 1,
                )
            )  # fmt: skip
            if i % checkpoint_every == 0:
                log.checkpoint()
    db.conn.close()


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for sql in statements:
            conn.execute(sql)
    conn.close()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    make_log(path)
    return path


def test_an_untouched_log_verifies_with_the_owners_key(log: Path) -> None:
    report = verify_log(log, OWNER.public)
    assert report.ok, report.problem
    assert (report.entries, report.checkpoints, report.checkpoints_verified) == (20, 4, 4)


CASES: dict[str, tuple[list[str], int, str]] = {
    "changed": (["UPDATE audit_log SET outcome = 'refused' WHERE seq = 7"], 7, "was changed"),
    "changed-last": (["UPDATE audit_log SET detail = 'x' WHERE seq = 20"], 20, "changed or"),
    "deleted": (["DELETE FROM audit_log WHERE seq = 7"], 7, "missing (deleted)"),
    "count-lowered": (["UPDATE audit_log SET count = 1 WHERE seq = 9"], 9, "was changed"),
    "deleted-at-end": (["DELETE FROM audit_log WHERE seq > 17"], 18, "deleted at the end"),
    "inserted": (
        [
            "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 7",
            "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1007",
            "INSERT INTO audit_log SELECT 7, at, 'q-forged', link, actor, action, outcome, "
            "purpose, consent_id, subject_ref, categories, node_id, detail, disclosed_digest, "
            "hash, count, query_digest FROM audit_log WHERE seq = 6",
        ],
        7,
        "was inserted",
    ),
    "reordered": (
        [
            "UPDATE audit_log SET seq = -1 WHERE seq = 7",
            "UPDATE audit_log SET seq = 7 WHERE seq = 8",
            "UPDATE audit_log SET seq = 8 WHERE seq = -1",
        ],
        7,
        "was reordered",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_kind_of_tampering_is_found_at_the_first_bad_entry(log: Path, case: str) -> None:
    statements, seq, words = CASES[case]
    tamper(log, *statements)
    report = verify_log(log, OWNER.public)
    assert not report.ok
    assert report.first_bad_seq == seq, report.problem
    assert words in report.problem


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoints(log: Path) -> None:
    """Whoever recomputes every hash after changing entry 7 still cannot re-sign checkpoints."""
    conn = sqlite3.connect(log)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
    rows[6]["outcome"] = "refused"
    prev = GENESIS
    with conn:
        for row in rows:
            digest = entry_hash(prev, row)
            conn.execute("UPDATE audit_log SET outcome = ?, hash = ? WHERE seq = ?",
                         (row["outcome"], digest, row["seq"]))  # fmt: skip
            prev = digest
    conn.close()
    report = verify_log(log, OWNER.public)
    assert not report.ok and report.first_bad_seq == 10
    assert "rewritten" in report.problem


def test_deleting_every_checkpoint_is_pointed_out(log: Path) -> None:
    tamper(log, "DELETE FROM audit_checkpoints")
    report = verify_log(log, OWNER.public)
    assert any("no signed checkpoint" in note for note in report.notes)


def test_a_forged_checkpoint_is_refused(log: Path) -> None:
    conn = sqlite3.connect(log)
    head = conn.execute("SELECT hash FROM audit_log WHERE seq = 20").fetchone()[0]
    forged = seal(
        AuditCheckpoint(log_id="pboc", seq=20, head_hash=head), SigningKey.from_seed(b"mallory")
    )
    with conn:
        conn.execute("UPDATE audit_checkpoints SET signed = ? WHERE seq = 20",
                     (forged.SerializeToString(),))  # fmt: skip
    conn.close()
    report = verify_log(log, OWNER.public)
    assert not report.ok and "not signed by the owner" in report.problem
    assert verify_log(log).ok  # without the key only the chain is checked, and it is intact


def test_one_hundred_thousand_entries_verify(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    make_log(path, entries=100_000, checkpoint_every=10_000)
    started = time.perf_counter()
    report = verify_log(path, OWNER.public)
    took = time.perf_counter() - started
    assert report.ok, report.problem
    assert (report.entries, report.checkpoints_verified) == (100_000, 10)
    print(f"verified 100,000 entries in {took:.2f}s")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "credex"), *args], capture_output=True, text=True, timeout=60)


def test_cli_verify_exit_codes(log: Path, tmp_path: Path) -> None:
    pub = tmp_path / "owner.pub"
    pub.write_bytes(OWNER.public.to_pem())
    ok = cli("audit", "verify", str(log), "--key", str(pub))
    assert ok.returncode == 0 and "20 entries chain" in ok.stdout and "4 signatures" in ok.stdout
    tamper(log, "DELETE FROM audit_log WHERE seq = 3")
    bad = cli("audit", "verify", str(log), "--key", str(pub))
    assert bad.returncode == 1 and "entry 3 is missing" in bad.stderr
    missing = cli("audit", "verify", str(tmp_path / "nope.db"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_appends_from_two_connections_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first = AuditLog(open_database(path), Clock(), log_id="x", key=lambda: OWNER)
    second = AuditLog(open_database(path), Clock(), log_id="x", key=lambda: OWNER)
    appenders: list[Callable[[AuditEntry], int]] = [first.append, second.append]
    for i in range(10):
        appenders[i % 2](AuditEntry(request_id=f"r{i}", actor="a", action="b", outcome="c"))
    first.checkpoint()
    report = verify_log(path, OWNER.public)
    assert report.ok and report.entries == 10


def test_reconcile_finds_what_a_silent_node_never_logged(tmp_path: Path) -> None:
    from credex.reconcile import reconcile

    directory = AuditLog(open_database(tmp_path / "directory.db"), Clock(), log_id="directory")
    for query_id, outcome in (("q-1", "OK"), ("q-2", "TIMEOUT")):
        directory.append(AuditEntry(request_id=query_id, link="r-1", actor="bank",
                                    action="query", outcome=outcome, node_id="pboc"))  # fmt: skip
    AuditLog(open_database(tmp_path / "pboc.db"), Clock(), log_id="pboc")  # no entries at all
    report = reconcile(tmp_path / "directory.db", [tmp_path / "pboc.db"])
    assert not report.ok
    assert [(m.query_id, m.kind) for m in report.unexplained] == [("q-1", "directory-only")]
    assert [m.query_id for m in report.explained] == ["q-2"]  # a timeout may never arrive
