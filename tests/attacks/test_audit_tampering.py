"""Audit logs under attack (issue 12, items 19-21), against real server processes.

A federation of its own (a directory and two nodes, checkpoints every 0.3 s) serves profiles,
one node rotates its key half-way, and every server is stopped. The attacks then work on copies
of the stopped servers' database files, as an operator with access to the disk would, and the
real `credex audit verify` and `credex audit reconcile` judge them:

- 19: an operator alters entry 7 of a log, recomputes the chain from there and deletes the
  checkpoints from there (or cuts entries off the end): the witness's copies of the owner's
  checkpoints (the directory for a node's log, every node for the directory's) expose it.
- 20: a node operator deletes the entry of a query it answered and plants a refusal under the
  same query id: the digests of the answer no longer match the directory's.
- 21: after `credex-node rotate-key` the log verifies with the owner's key history, and a
  checkpoint signed with the retired key after its period is refused.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from credex.lab import federation
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.runtime.audit import GENESIS, entry_hash
from credex.runtime.db import readonly_uri
from credex.v1.audit_pb2 import AuditCheckpoint
from credex.v1.common_pb2 import Category, Purpose, Signed
from tests.attacks.conftest import SEED, Target
from tests.commands import cli

PROFILES_BEFORE_ROTATION = 10
PROFILES_AFTER_ROTATION = 10
WITNESS_WAIT_S = 60.0
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
CATEGORIES = [Category.CATEGORY_FINANCIAL, Category.CATEGORY_VOLUNTEERING]
FAST = {
    "CREDEX_DIRECTORY_DIRECTORY_CHECKPOINT_INTERVAL_S": "0.3",
    "CREDEX_NODE_NODE_CHECKPOINT_INTERVAL_S": "0.3",
    "CREDEX_NODE_NODE_SYNC_INTERVAL_S": "0.5",
}


@dataclass
class Stopped:
    """The stopped federation's files, as an auditor (or an attacker at the disk) finds them."""

    root: Path
    node_ids: list[str]
    rotated: str  # the node that rotated its key half-way
    old_key: SigningKey  # its key before the rotation
    old_key_valid_until: float

    @property
    def directory_db(self) -> Path:
        return self.root / "directory" / "directory.db"

    @property
    def directory_pub(self) -> Path:
        return self.root / "directory" / "directory.pub"

    def node_dir(self, node_id: str) -> Path:
        return self.root / "nodes" / node_id

    def node_db(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "credex-node.db"

    def node_pub(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "node.pub"

    def registry(self, node_id: str) -> Path:
        """The directory-signed registry snapshot the node keeps beside its database."""
        return self.node_dir(node_id) / "credex-node.registry"

    @property
    def steady(self) -> str:
        """A node that kept its key."""
        return next(n for n in self.node_ids if n != self.rotated)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        return list(conn.execute(sql, params))
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def log_size(db: Path) -> int:
    found = rows(db, "SELECT coalesce(max(seq), 0) FROM audit_log")
    return int(found[0][0]) if found else 0


def witnessed(db: Path, log_id: str) -> int:
    """The newest sequence number of `log_id`'s log that the witness in `db` holds."""
    found = rows(
        db, "SELECT coalesce(max(seq), 0) FROM witnessed_checkpoints WHERE log_id = ?", (log_id,)
    )
    return int(found[0][0]) if found else 0


def wait_until_witnessed(fed: Stopped) -> None:
    """Poll until the directory holds each node's newest checkpoint and every node holds the
    directory's; gives up quietly after WITNESS_WAIT_S (the checks below then fail)."""
    deadline = time.monotonic() + WITNESS_WAIT_S
    while time.monotonic() < deadline:
        pairs = [(fed.directory_db, n, fed.node_db(n)) for n in fed.node_ids] + [
            (fed.node_db(n), "directory", fed.directory_db) for n in fed.node_ids
        ]
        if all(witnessed(w, log_id) >= log_size(db) > 0 for w, log_id, db in pairs):
            return
        time.sleep(0.2)


async def serve_profiles(target: Target, count: int, consent_id: str, subject_id: str) -> None:
    async with target.requester_client() as client:
        for _ in range(count):
            profile = await client.get_profile(
                subject_id=subject_id, consent_id=consent_id, purpose=LOAN
            )
            assert profile.records


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    root = Path(tmp_path_factory.mktemp("audited")) / "fed"
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAST.items():
            env.setenv(name, value)
        fed = federation.start(root, subjects=60, seed=SEED, nodes=2, tied=True)
    try:
        target = Target(fed)
        node_ids = target.node_ids
        subject_id, key = target.subject(set(node_ids))

        async def consent() -> str:
            async with target.subject_client(subject_id, key) as client:
                return await client.grant(
                    requester_id="bank", purpose=LOAN, categories=CATEGORIES, max_uses=25
                )

        consent_id = asyncio.run(consent())
        asyncio.run(serve_profiles(target, PROFILES_BEFORE_ROTATION, consent_id, subject_id))
        rotated = node_ids[0]
        config = next(n.config for n in fed.manifest.nodes if n.id == rotated)
        old_key = SigningKey.load(root / "nodes" / rotated / "node.key")
        out = cli(
            "credex-node", "rotate-key", str(config), "--directory", fed.directory_address, "--json"
        ).stdout
        valid_until = float(json.loads(out)["old_key_valid_until"])
        asyncio.run(federation.wait_for_registry(root))  # every node's cache has the new key
        asyncio.run(serve_profiles(target, PROFILES_AFTER_ROTATION, consent_id, subject_id))
        result = Stopped(root, node_ids, rotated, old_key, valid_until)
        wait_until_witnessed(result)
    finally:
        fed.stop()
    yield result


def copy_db(source: Path, dest: Path) -> Path:
    """A consistent copy of a stopped server's database (its WAL included)."""
    src = sqlite3.connect(readonly_uri(source), uri=True)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return dest


def rewrite(db: Path, change: Callable[[list[dict[str, Any]]], int]) -> None:
    """What a careful attacker does: change the entries (`change` edits the list in place and
    returns the first sequence number it touched), recompute every hash so the chain is
    whole again, and delete the owner's checkpoints from the first changed entry on."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    entries = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
    first = change(entries)
    prev = GENESIS
    with conn:
        conn.execute("DELETE FROM audit_log")
        for seq, entry in enumerate(entries, 1):
            entry["seq"] = seq
            entry["hash"] = prev = entry_hash(prev, entry)
            columns = list(entry)
            conn.execute(
                f"INSERT INTO audit_log ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                [entry[c] for c in columns],
            )
        conn.execute("DELETE FROM audit_checkpoints WHERE seq >= ?", (first,))
    conn.close()


def alter_entry_7(entries: list[dict[str, Any]]) -> int:
    entries[6]["outcome"] = "refused:REPLAY"
    entries[6]["detail"] = "nothing disclosed"
    return 7


def verify(*args: str) -> Any:
    return cli("credex", "audit", "verify", *args, ok=False)


# --- item 19: checkpoints witnessed outside the log's own database ---------------------------


def test_untouched_logs_verify_against_their_witnesses(stopped: Stopped) -> None:
    """No false alarm: each node's log against the directory's copies, the directory's
    against every node's."""
    node = stopped.steady
    ok = verify(str(stopped.node_db(node)), "--key", str(stopped.node_pub(node)),
                "--witness", str(stopped.directory_db), "--json")  # fmt: skip
    assert ok.returncode == 0, ok.stderr + ok.stdout
    report = json.loads(ok.stdout)
    assert report["ok"] and report["witnessed"] >= 2
    nodes = [a for n in stopped.node_ids for a in ("--witness", str(stopped.node_db(n)))]
    ok = verify(str(stopped.directory_db), "--key", str(stopped.directory_pub), *nodes, "--json")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert json.loads(ok.stdout)["witnessed"] >= 2 * len(stopped.node_ids)


def test_a_node_log_rewritten_from_entry_7_is_caught_by_the_directorys_copy(
    stopped: Stopped, tmp_path: Path
) -> None:
    node = stopped.steady
    db = copy_db(stopped.node_db(node), tmp_path / "node.db")
    assert log_size(db) >= 17
    rewrite(db, alter_entry_7)
    bad = verify(str(db), "--key", str(stopped.node_pub(node)),
                 "--witness", str(stopped.directory_db), "--json")  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert not report["ok"] and "witness" in report["problem"]
    assert 7 <= report["first_bad_seq"] <= log_size(db)
    text = verify(str(db), "--key", str(stopped.node_pub(node)),
                  "--witness", str(stopped.directory_db))  # fmt: skip
    assert text.returncode == 1 and "TAMPERED" in text.stderr and "Traceback" not in text.stderr


def test_the_directory_log_rewritten_from_entry_7_is_caught_by_every_nodes_copy(
    stopped: Stopped, tmp_path: Path
) -> None:
    db = copy_db(stopped.directory_db, tmp_path / "directory.db")
    rewrite(db, alter_entry_7)
    for node in stopped.node_ids:
        bad = verify(str(db), "--key", str(stopped.directory_pub),
                     "--witness", str(stopped.node_db(node)), "--json")  # fmt: skip
        assert bad.returncode == 1, bad.stdout + bad.stderr
        report = json.loads(bad.stdout)
        assert not report["ok"] and report["first_bad_seq"] >= 7
        assert node in report["problem"] or "witness" in report["problem"]


def test_entries_cut_off_the_end_with_their_checkpoints_are_caught(
    stopped: Stopped, tmp_path: Path
) -> None:
    node = stopped.steady
    db = copy_db(stopped.node_db(node), tmp_path / "node.db")
    keep = log_size(db) // 2

    def cut(entries: list[dict[str, Any]]) -> int:
        del entries[keep:]
        return keep + 1

    rewrite(db, cut)
    bad = verify(str(db), "--key", str(stopped.node_pub(node)),
                 "--witness", str(stopped.directory_db), "--json")  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert report["first_bad_seq"] == keep + 1 and "witness" in report["problem"]


# --- item 20: reconcile compares what was asked and answered --------------------------------


def test_a_planted_refusal_does_not_mask_a_deleted_answer(stopped: Stopped, tmp_path: Path) -> None:
    node = stopped.steady
    directory = copy_db(stopped.directory_db, tmp_path / "directory.db")
    db = copy_db(stopped.node_db(node), tmp_path / "node.db")
    honest = cli("credex", "audit", "reconcile", str(directory), str(db), "--json", ok=False)
    assert honest.returncode == 0, honest.stdout + honest.stderr
    answered = rows(
        db, "SELECT request_id FROM audit_log WHERE action = 'query' AND outcome = 'disclosed' "
        "ORDER BY seq LIMIT 1 OFFSET 3",
    )[0][0]  # fmt: skip

    def plant(entries: list[dict[str, Any]]) -> int:
        i = next(i for i, e in enumerate(entries) if e["request_id"] == answered)
        entries[i].update(
            outcome="refused:REPLAY", detail="nonce already used", disclosed_digest="",
            consent_id="", categories="[]", subject_ref="",
        )  # fmt: skip
        return i + 1

    rewrite(db, plant)
    assert verify(str(db), "--key", str(stopped.node_pub(node))).returncode == 0  # chain whole
    bad = cli("credex", "audit", "reconcile", str(directory), str(db), "--json", ok=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert [m["query_id"] for m in report["unexplained"]] == [answered]


# --- item 21: a key rotation is not tampering -------------------------------------------------


def test_a_log_spanning_a_key_rotation_verifies_with_the_key_history(stopped: Stopped) -> None:
    node = stopped.rotated
    db = stopped.node_db(node)
    signers = {_key_id(blob) for (blob,) in rows(db, "SELECT signed FROM audit_checkpoints")}
    assert stopped.old_key.key_id in signers and len(signers) == 2  # the rotation is mid-log
    ok = verify(str(db), "--registry", str(stopped.registry(node)),
                "--directory-key", str(stopped.directory_pub),
                "--witness", str(stopped.directory_db), "--json")  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["checkpoints_verified"] == report["checkpoints"] >= 2
    current_only = verify(str(db), "--key", str(stopped.node_pub(node)))
    assert current_only.returncode == 1 and "TAMPERED" not in current_only.stderr
    assert "--registry" in current_only.stderr


def test_a_checkpoint_signed_with_the_retired_key_after_its_period_is_refused(
    stopped: Stopped, tmp_path: Path
) -> None:
    """Someone holding the retired key rewrites the log and signs a checkpoint with it, dated
    after the key stopped counting: refused, even though the signature itself is good."""
    node = stopped.rotated
    db = copy_db(stopped.node_db(node), tmp_path / "node.db")
    rewrite(db, alter_entry_7)
    size = log_size(db)
    head = rows(db, "SELECT hash FROM audit_log WHERE seq = ?", (size,))[0][0]
    checkpoint = AuditCheckpoint(log_id=node, seq=size, head_hash=head)
    checkpoint.at.FromSeconds(int(stopped.old_key_valid_until) + 60)
    forged = seal(checkpoint, stopped.old_key)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT OR REPLACE INTO audit_checkpoints VALUES (?, ?)",
                     (size, forged.SerializeToString()))  # fmt: skip
    conn.close()
    bad = verify(str(db), "--registry", str(stopped.registry(node)),
                 "--directory-key", str(stopped.directory_pub), "--json")  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert report["first_bad_seq"] == size and "retired" in report["problem"]


def _key_id(blob: bytes) -> str:
    signed = Signed()
    signed.ParseFromString(blob)
    return signed.key_id
