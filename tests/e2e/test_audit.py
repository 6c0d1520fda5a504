"""Tamper-evident audit logs: every way of changing a real log is found, an intact log of
100,000 entries verifies, and the servers' own logs chain and reconcile."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from credex.protocol.clock import to_timestamp
from credex.protocol.key_history import KeyHistory, KeyPeriod
from credex.protocol.keys import SigningKey
from credex.protocol.registry_view import member_keys
from credex.protocol.signing import seal
from credex.runtime.audit import FIELDS, GENESIS, AuditEntry, AuditLog, entry_hash, verify_log
from credex.runtime.reconcile import reconcile
from credex.runtime.witness import WitnessStore
from credex.v1.audit_pb2 import AuditCheckpoint
from credex.v1.common_pb2 import Signed
from credex.v1.member_pb2 import Member, RegistrySnapshot, RetiredKey
from tests.harness import runtime_log, runtime_storage

BIN = Path(sys.executable).parent
OWNER = SigningKey.from_seed(b"audit-owner")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def make_log(path: Path, entries: int = 20, checkpoint_every: int = 5) -> None:
    log, storage = runtime_log(path, Clock(), log_id="pboc", key=OWNER)
    with storage.unit():
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
    storage.close()


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
    first, one = runtime_log(path, Clock(), log_id="x", key=OWNER)
    second, other = runtime_log(path, Clock(), log_id="x", key=OWNER)
    appenders = [(first, one), (second, other)]
    for i in range(10):
        log, storage = appenders[i % 2]
        with storage.unit():
            log.append(AuditEntry(request_id=f"r{i}", actor="a", action="b", outcome="c"))
    with one.unit():
        first.checkpoint()
    report = verify_log(path, OWNER.public)
    assert report.ok and report.entries == 10


def test_reconcile_finds_what_a_silent_node_never_logged(tmp_path: Path) -> None:
    directory, storage = runtime_log(tmp_path / "directory.db", Clock(), log_id="directory")
    with storage.unit():
        for query_id, outcome in (("q-1", "OK"), ("q-2", "TIMEOUT")):
            entry = AuditEntry(request_id=query_id, link="r-1", actor="bank", action="query",
                               outcome=outcome, node_id="pboc")  # fmt: skip
            directory.append(entry)
    runtime_log(tmp_path / "pboc.db", Clock(), log_id="pboc")  # no entries at all
    report = reconcile(tmp_path / "directory.db", [tmp_path / "pboc.db"])
    assert not report.ok
    assert [(m.query_id, m.kind) for m in report.unexplained] == [("q-1", "directory-only")]
    assert [m.query_id for m in report.explained] == ["q-2"]  # a timeout may never arrive


# --- witnesses ---------------------------------------------------------------------------------


def witness_of(log: Path, witness: Path, *, upto: int | None = None) -> None:
    """Hand every checkpoint of `log` (up to entry `upto`) to a witness database, as the
    owner's server does at each interval."""
    storage = runtime_storage(witness)
    store = WitnessStore(storage.connection, lambda: 1_900_000_000.0, burst=10_000)
    conn = sqlite3.connect(log)
    for seq, blob in conn.execute("SELECT seq, signed FROM audit_checkpoints ORDER BY seq"):
        if upto is None or seq <= upto:
            signed = Signed()
            signed.ParseFromString(blob)
            with storage.unit():
                store.keep(signed, "pboc", [OWNER.public])
    conn.close()
    storage.close()


def recompute(path: Path, change: Callable[[list[dict[str, Any]]], None], drop_from: int) -> None:
    """Change entries, recompute the whole chain, delete the owner's checkpoints from
    `drop_from` on: what someone with write access to the database can do."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
    change(rows)
    prev = GENESIS
    with conn:
        conn.execute("DELETE FROM audit_log")
        for seq, row in enumerate(rows, 1):
            row["seq"], row["hash"] = seq, entry_hash(prev, {**row, "seq": seq})
            prev = row["hash"]
            conn.execute(
                f"INSERT INTO audit_log ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
        conn.execute("DELETE FROM audit_checkpoints WHERE seq >= ?", (drop_from,))
    conn.close()


@pytest.fixture
def witnessed(log: Path, tmp_path: Path) -> Path:
    witness = tmp_path / "directory.db"
    witness_of(log, witness)
    return witness


def test_an_untouched_log_matches_its_witness(log: Path, witnessed: Path) -> None:
    report = verify_log(log, OWNER.public, witnesses=[witnessed])
    assert report.ok, report.problem
    assert (report.witnessed, report.checkpoints_verified, report.log_id) == (4, 4, "pboc")


def test_a_chain_rewritten_with_its_checkpoints_is_caught_by_the_witness(
    log: Path, witnessed: Path
) -> None:
    def change(rows: list[dict[str, Any]]) -> None:
        rows[6]["outcome"] = "refused"

    recompute(log, change, drop_from=7)
    alone = verify_log(log, OWNER.public)
    assert alone.ok and any("--witness" in note for note in alone.notes)  # the limit, stated
    report = verify_log(log, OWNER.public, witnesses=[witnessed])
    assert not report.ok and report.verdict == "TAMPERED"
    assert report.first_bad_seq == 10 and "somewhere in 6-10" in report.problem
    assert str(witnessed) in report.problem


def test_entries_the_witness_saw_that_are_gone_are_caught(log: Path, witnessed: Path) -> None:
    def cut(rows: list[dict[str, Any]]) -> None:
        del rows[12:]

    recompute(log, cut, drop_from=13)
    report = verify_log(log, OWNER.public, witnesses=[witnessed])
    assert not report.ok and report.first_bad_seq == 13
    assert "only 12 are left" in report.problem


def test_entries_after_the_last_witnessed_checkpoint_are_not_covered(
    log: Path, tmp_path: Path
) -> None:
    """The stated limit: what the witness has not seen yet, it cannot vouch for."""
    witness = tmp_path / "w.db"
    witness_of(log, witness, upto=15)

    def change(rows: list[dict[str, Any]]) -> None:
        rows[17]["outcome"] = "refused"

    recompute(log, change, drop_from=18)
    report = verify_log(log, OWNER.public, witnesses=[witness])
    assert report.ok and any("entries 16-20 are after" in note for note in report.notes)


def test_witness_problems_are_unverified_not_tampered(
    log: Path, witnessed: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.db"
    runtime_storage(empty).close()
    forged = tmp_path / "forged.db"
    witness_of(log, forged)
    mallory = SigningKey.from_seed(b"mallory")
    tamper(forged, "DELETE FROM witnessed_checkpoints")
    conn = sqlite3.connect(forged)
    with conn:
        conn.execute(
            "INSERT INTO witnessed_checkpoints VALUES ('pboc', 5, ?, 0)",
            (seal(AuditCheckpoint(log_id="pboc", seq=5, head_hash=b"x" * 32), mallory)
             .SerializeToString(),),
        )  # fmt: skip
    conn.close()
    cases = {
        empty: "holds no checkpoint of 'pboc'",
        log: "is the log itself",
        tmp_path / "nope.db": "does not exist",
        forged: "not signed by the owner",
    }
    for witness, words in cases.items():
        report = verify_log(log, OWNER.public, witnesses=[witness])
        assert not report.ok and report.verdict == "UNVERIFIED", witness
        assert words in report.problem, report.problem
    tamper(log, "DELETE FROM audit_meta")  # whose log it is, erased to dodge the witness
    report = verify_log(log, OWNER.public, witnesses=[witnessed])
    assert not report.ok and "does not say whose log" in report.problem


# --- a key rotation ------------------------------------------------------------------------------

NEW_KEY = SigningKey.from_seed(b"audit-owner-rotated")


def rotated_log(path: Path) -> float:
    """A log whose owner rotated its key after entry 10 (checkpoints every 5 entries); returns
    when the old key stopped counting."""
    clock = Clock()
    current = [OWNER]
    _, storage = runtime_log(path, clock, log_id="pboc")
    log = AuditLog(storage.connection, clock, log_id="pboc", key=lambda: current[0])
    retired_at = 0.0
    for i in range(1, 21):
        with storage.unit():
            log.append(AuditEntry(request_id=f"q-{i}", actor="bank", action="query", outcome="ok"))
            if i % 5 == 0:
                log.checkpoint()
        if i == 10:
            current[0] = NEW_KEY
            retired_at = clock.now + 600
    storage.close()
    return retired_at


def history(retired_at: float) -> KeyHistory:
    return KeyHistory([KeyPeriod(NEW_KEY.public), KeyPeriod(OWNER.public, retired_at)])


def test_a_log_spanning_a_rotation_verifies_with_each_key_for_its_period(tmp_path: Path) -> None:
    path = tmp_path / "rotated.db"
    retired_at = rotated_log(path)
    report = verify_log(path, keys=history(retired_at))
    assert report.ok and report.checkpoints_verified == 4, report.problem
    current_only = verify_log(path, NEW_KEY.public)
    assert not current_only.ok and current_only.verdict == "UNVERIFIED"
    assert "--registry" in current_only.problem and current_only.first_bad_seq == 5


def test_the_retired_key_cannot_sign_after_its_period_or_after_its_successor(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rotated.db"
    retired_at = rotated_log(path)
    conn = sqlite3.connect(path)
    head = conn.execute("SELECT hash FROM audit_log WHERE seq = 20").fetchone()[0]
    conn.close()
    for at, words in ((retired_at + 1, "after that key was retired"), (retired_at - 1, "replaced")):
        late = seal(
            AuditCheckpoint(log_id="pboc", seq=20, head_hash=head, at=to_timestamp(at)), OWNER
        )
        tamper(path, f"UPDATE audit_checkpoints SET signed = x'{late.SerializeToString().hex()}' "
                     "WHERE seq = 20")  # fmt: skip
        report = verify_log(path, keys=history(retired_at))
        assert not report.ok and report.verdict == "TAMPERED" and report.first_bad_seq == 20
        assert words in report.problem, report.problem


def registry_snapshot(directory: SigningKey, retired_at: float) -> Signed:
    return seal(
        RegistrySnapshot(
            version=3,
            directory_id="directory",
            members=[
                Member(
                    member_id="pboc",
                    public_key=NEW_KEY.public.raw,
                    retired_keys=[
                        RetiredKey(
                            public_key=OWNER.public.raw, valid_until=to_timestamp(retired_at)
                        )
                    ],
                )
            ],
        ),
        directory,
    )


def test_the_key_history_comes_from_a_directory_signed_registry(tmp_path: Path) -> None:
    directory = SigningKey.from_seed(b"directory")
    signed = registry_snapshot(directory, 1_900_000_000.0)
    keys = member_keys(signed, directory.public, "pboc")
    assert [(p.key.key_id, p.until) for p in keys.periods] == [
        (OWNER.key_id, 1_900_000_000.0),
        (NEW_KEY.key_id, None),
    ]
    with pytest.raises(ValueError, match="signature"):
        member_keys(signed, OWNER.public, "pboc")
    with pytest.raises(ValueError, match="no member 'zhima'"):
        member_keys(signed, directory.public, "zhima")


def test_cli_verify_with_a_registry_and_its_refusals(tmp_path: Path) -> None:
    path = tmp_path / "rotated.db"
    retired_at = rotated_log(path)
    directory = SigningKey.from_seed(b"directory")
    registry = tmp_path / "node.registry"
    registry.write_bytes(registry_snapshot(directory, retired_at).SerializeToString())
    directory_pub = tmp_path / "directory.pub"
    directory_pub.write_bytes(directory.public.to_pem())
    ok = cli("audit", "verify", str(path), "--registry", str(registry),
             "--directory-key", str(directory_pub))  # fmt: skip
    assert ok.returncode == 0 and "4 signatures verified" in ok.stdout, ok.stderr
    garbage = tmp_path / "garbage.registry"
    garbage.write_bytes(b"\xff\xff")
    other_pub = tmp_path / "other.pub"
    other_pub.write_bytes(OWNER.public.to_pem())
    refusals = [
        (["--registry", str(registry)], "needs --directory-key"),
        (["--directory-key", str(directory_pub)], "give one"),
        (["--registry", str(tmp_path / "none"), "--directory-key", str(directory_pub)],
         "cannot read registry snapshot"),
        (["--registry", str(garbage), "--directory-key", str(directory_pub)], "does not decode"),
        (["--registry", str(registry), "--directory-key", str(other_pub)], "signature"),
    ]  # fmt: skip
    for args, words in refusals:
        bad = cli("audit", "verify", str(path), *args)
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr


# --- digests of what was asked and answered ------------------------------------------------------


def test_query_digests_are_chained_without_changing_older_entries(tmp_path: Path) -> None:
    row: dict[str, Any] = {f: "" for f in FIELDS} | {"seq": 1, "at": 1.0, "count": 1}
    old_style = hashlib.sha256(
        GENESIS + json.dumps([row[f] for f in FIELDS], separators=(",", ":")).encode()
    ).digest()
    assert entry_hash(GENESIS, row) == old_style  # no query digest: hashed as before
    assert entry_hash(GENESIS, {**row, "query_digest": "ab"}) != old_style
    path = tmp_path / "state.db"
    log, storage = runtime_log(path, Clock(), log_id="pboc")
    with storage.unit():
        log.append(
            AuditEntry(request_id="q-1", actor="d", action="query", outcome="disclosed",
                       query_digest="aa" * 32)
        )  # fmt: skip
    storage.close()
    assert verify_log(path).ok
    tamper(path, "UPDATE audit_log SET query_digest = 'bb' WHERE seq = 1")
    report = verify_log(path)
    assert not report.ok and report.first_bad_seq == 1


def query_logs(
    tmp_path: Path,
    sent: list[tuple[str, str, str, str]],
    logged: list[tuple[str, str, str, str]],
) -> tuple[Path, Path]:
    """A directory log of (query id, outcome, query digest, answer digest) sent to pboc and
    pboc's log of (query id, outcome, query digest, answer digest)."""
    directory, storage = runtime_log(tmp_path / "directory.db", Clock(), log_id="directory")
    with storage.unit():
        for query_id, outcome, asked, answered in sent:
            directory.append(AuditEntry(request_id=query_id, link="r-1", actor="bank",
                                        action="query", outcome=outcome, node_id="pboc",
                                        query_digest=asked, disclosed_digest=answered))  # fmt: skip
    node, storage = runtime_log(tmp_path / "pboc.db", Clock(), log_id="pboc")
    with storage.unit():
        for query_id, outcome, asked, answered in logged:
            node.append(AuditEntry(request_id=query_id, actor="bank", action="query",
                                   outcome=outcome, node_id="pboc", query_digest=asked,
                                   disclosed_digest=answered))  # fmt: skip
    return tmp_path / "directory.db", tmp_path / "pboc.db"


RECONCILE: dict[str, tuple[list[tuple[str, str, str, str]], list[tuple[str, str, str, str]], str]]
RECONCILE = {
    "matched": ([("q-1", "OK", "Q1", "A1")], [("q-1", "disclosed", "Q1", "A1")], ""),
    "old-logs": ([("q-1", "OK", "", "A1")], [("q-1", "disclosed", "", "A1")], ""),
    "planted-refusal": (
        [("q-1", "OK", "Q1", "A1")], [("q-1", "refused:REPLAY", "Q1", "")], "answer-missing"
    ),
    "other-answer": (
        [("q-1", "OK", "Q1", "A1")], [("q-1", "disclosed", "Q1", "A2")], "answer-mismatch"
    ),
    "other-query": (
        [("q-1", "OK", "Q1", "A1")], [("q-1", "disclosed", "Q2", "A1")], "query-mismatch"
    ),
    "answered-twice": (
        [("q-1", "OK", "Q1", "A1")],
        [("q-1", "disclosed", "Q1", "A1"), ("q-1", "disclosed", "Q1", "A2")],
        "answered-twice",
    ),
    "denied-but-answered": (
        [("q-1", "DENIED", "Q1", "")], [("q-1", "disclosed", "Q1", "A1")], "answer-unrecorded"
    ),
    "replay-refused-too": (
        [("q-1", "OK", "Q1", "A1")],
        [("q-1", "disclosed", "Q1", "A1"), ("q-1", "refused:REPLAY", "Q1", "")],
        "",
    ),
    "late-answer": ([("q-1", "TIMEOUT", "Q1", "")], [("q-1", "disclosed", "Q1", "A1")], ""),
    "answered-unsent": ([], [("q-9", "disclosed", "Q9", "A9")], "node-only"),
}  # fmt: skip


@pytest.mark.parametrize("case", RECONCILE)
def test_reconcile_compares_what_was_asked_and_answered(tmp_path: Path, case: str) -> None:
    sent, logged, kind = RECONCILE[case]
    directory, node = query_logs(tmp_path, sent, logged)
    report = reconcile(directory, [node])
    assert [m.kind for m in report.unexplained] == ([kind] if kind else []), report.unexplained
    assert report.matched == (0 if kind or not sent else 1)


def test_a_refusal_of_a_query_the_directory_never_sent_is_explained(tmp_path: Path) -> None:
    directory, node = query_logs(tmp_path, [], [("q-forged", "refused:BAD_SIGNATURE", "", "")])
    report = reconcile(directory, [node])
    assert report.ok and [m.query_id for m in report.explained] == ["q-forged"]
