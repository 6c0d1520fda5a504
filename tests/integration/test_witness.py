"""Witnessed audit checkpoints: what a witness keeps and refuses (a real database, real
signatures), and the two RPCs on real servers: a node hands the directory its checkpoints,
the directory hands every node its own, and nobody else may hand over either."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.directory import admin as directory_admin
from credex.directory.config import load_settings
from credex.node.config import load_node_config
from credex.node.server import tls_identity
from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.errors import (
    CredexError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    from_rpc_error,
)
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.signing import domain_tag, seal
from credex.protocol.tls import TlsIdentity
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.db import readonly_uri
from credex.runtime.schema import WITNESSED
from credex.runtime.storage import SqliteStorage
from credex.runtime.witness import MAX_CHECKPOINT_BYTES, CheckpointPublisher, WitnessStore
from credex.testing.federation import Federation
from credex.v1 import federation_pb2, node_pb2
from credex.v1.audit_pb2 import AuditCheckpoint
from credex.v1.common_pb2 import Signed
from credex.v1.federation_pb2_grpc import FederationServiceStub
from credex.v1.node_pb2_grpc import NodeServiceStub
from tests.harness import runtime_log, runtime_storage

OWNER = SigningKey.from_seed(b"witnessed-owner")
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def checkpoint(
    seq: int,
    *,
    log_id: str = "pboc",
    key: SigningKey = OWNER,
    head: bytes = b"h" * 32,
    at: float = NOW,
) -> Signed:
    return seal(AuditCheckpoint(log_id=log_id, seq=seq, head_hash=head, at=to_timestamp(at)), key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Witness(WitnessStore):
    """A witness store in a database of its own, each checkpoint kept in a unit of work of its
    own, as the RPC handler keeps it."""

    def __init__(self, path: Path, clock: Clock, **limits: Any) -> None:
        self.storage = runtime_storage(path)
        super().__init__(self.storage.connection, clock, **limits)

    def keep(self, signed: Signed, log_id: str, keys: Sequence[VerifyKey]) -> int:
        with self.storage.unit():
            return super().keep(signed, log_id, keys)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> WitnessStore:
    return Witness(tmp_path / "witness.db", clock, keep=3, burst=1000)


def test_newer_checkpoints_are_kept_and_the_same_one_again_is_answered_alike(
    store: WitnessStore,
) -> None:
    assert store.keep(checkpoint(5), "pboc", [OWNER.public]) == 5
    again = checkpoint(5)
    assert store.keep(again, "pboc", [OWNER.public]) == 5  # a retry after a lost reply
    assert store.keep(checkpoint(9), "pboc", [OWNER.public]) == 9
    assert store.held("pboc") == 9 and store.held("other") == 0


def test_an_older_or_a_rival_checkpoint_is_refused(store: WitnessStore) -> None:
    store.keep(checkpoint(9), "pboc", [OWNER.public])
    for seq, head in ((5, b"h" * 32), (9, b"x" * 32)):
        with pytest.raises(FailedPrecondition) as err:
            store.keep(checkpoint(seq, head=head), "pboc", [OWNER.public])
        assert err.value.reason == Reason.CHECKPOINT_STALE and "entry 9" in err.value.message


def test_only_the_newest_checkpoints_of_each_log_are_kept(
    store: WitnessStore, tmp_path: Path
) -> None:
    for seq in range(1, 8):
        store.keep(checkpoint(seq), "pboc", [OWNER.public])
    other = SigningKey.from_seed(b"other-owner")
    store.keep(checkpoint(1, log_id="other", key=other), "other", [other.public])
    conn = sqlite3.connect(readonly_uri(tmp_path / "witness.db"), uri=True)
    kept = conn.execute(f"SELECT log_id, seq FROM {WITNESSED} ORDER BY log_id, seq").fetchall()
    conn.close()
    assert kept == [("other", 1), ("pboc", 5), ("pboc", 6), ("pboc", 7)]


def _with_unknown_field() -> Signed:
    body = AuditCheckpoint(log_id="pboc", seq=3, head_hash=b"h" * 32).SerializeToString()
    body += b"\xfa\x01\x03pad"  # field 31, length-delimited: not in AuditCheckpoint
    return Signed(
        body=body, signature=OWNER.sign(domain_tag(AuditCheckpoint) + body), key_id=OWNER.key_id
    )


REFUSALS: dict[str, tuple[Any, type[CredexError], Reason]] = {
    "unsigned": (Signed(body=b"\x10\x01"), InvalidArgument, Reason.MALFORMED),
    "forged": (
        checkpoint(3, key=SigningKey.from_seed(b"x")), Unauthenticated, Reason.BAD_SIGNATURE
    ),
    "too-large": (
        checkpoint(3, log_id="p" * MAX_CHECKPOINT_BYTES),
        InvalidArgument,
        Reason.MALFORMED,
    ),
    "unknown-field": (_with_unknown_field(), InvalidArgument, Reason.MALFORMED),
    "another-log": (checkpoint(3, log_id="zhima"), PermissionDenied, Reason.PEER_MISMATCH),
    "no-seq": (checkpoint(0), InvalidArgument, Reason.MALFORMED),
    "short-head": (checkpoint(3, head=b"h" * 31), InvalidArgument, Reason.MALFORMED),
    "dated-ahead": (checkpoint(3, at=NOW + 3600), PermissionDenied, Reason.REQUEST_NOT_YET_VALID),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_what_is_not_the_owners_well_formed_checkpoint_is_refused(
    store: WitnessStore, case: str
) -> None:
    signed, error, reason = REFUSALS[case]
    with pytest.raises(error) as err:
        store.keep(signed, "pboc", [OWNER.public])
    assert err.value.reason == reason
    assert store.held("pboc") == 0 and store.held("zhima") == 0


def test_a_caller_over_its_rate_is_refused_until_it_slows_down(
    tmp_path: Path, clock: Clock
) -> None:
    store = Witness(tmp_path / "w.db", clock, rate_per_s=1.0, burst=3)
    for _ in range(3):
        store.throttle("pboc")
    with pytest.raises(ResourceExhausted) as err:
        store.throttle("pboc")
    assert err.value.reason == Reason.RATE_LIMITED and err.value.retry_after_s
    store.throttle("zhima")  # each caller has its own allowance
    clock.now += 1.0
    store.throttle("pboc")


# --- the RPCs on real servers ------------------------------------------------------------------


def call(fed: Federation, tls: TlsIdentity, method: str, request: Any, *, node: str = "") -> int:
    """One call to the directory's member port (or to `node`) under `tls`; the witnessed
    sequence number, or the typed refusal."""

    async def go() -> int:
        if node:
            channel = open_channel(fed.nodes[node].address, tls)
            stub: Any = NodeServiceStub(channel)
        else:
            channel = open_directory_channel(fed.address, tls)
            stub = FederationServiceStub(channel)
        try:
            response = await getattr(stub, method)(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            await channel.close(None)
        return int(response.witnessed_seq)

    return fed.loop.run(go())


def node_identity(fed: Federation, node_id: str) -> tuple[TlsIdentity, SigningKey, Path]:
    config = load_node_config(fed.node_configs[node_id])
    return tls_identity(config), SigningKey.load(config.signing_key), config.state_db


def head_of(db: Path) -> tuple[int, bytes]:
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        seq, head = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC").fetchone()
    finally:
        conn.close()
    return int(seq), bytes(head)


def to_directory(signed: Signed) -> federation_pb2.WitnessNodeCheckpointRequest:
    return federation_pb2.WitnessNodeCheckpointRequest(checkpoint=signed)


def to_node(signed: Signed) -> node_pb2.WitnessDirectoryCheckpointRequest:
    return node_pb2.WitnessDirectoryCheckpointRequest(checkpoint=signed)


@pytest.fixture(scope="module")
def down(federation: Federation) -> Iterator[tuple[TlsIdentity, SigningKey]]:
    """A node that is enrolled but never runs: nothing of its own hands over checkpoints."""
    tls, key, _ = node_identity(federation, "down")
    yield tls, key


def test_a_node_hands_the_directory_its_own_checkpoint(
    federation: Federation, down: tuple[TlsIdentity, SigningKey]
) -> None:
    tls, key = down
    first = checkpoint(3, log_id="down", key=key, at=federation.clock())
    assert call(federation, tls, "WitnessNodeCheckpoint", to_directory(first)) == 3
    assert call(federation, tls, "WitnessNodeCheckpoint", to_directory(first)) == 3  # retried
    newer = checkpoint(4, log_id="down", key=key, at=federation.clock())
    assert call(federation, tls, "WitnessNodeCheckpoint", to_directory(newer)) == 4
    rival = checkpoint(3, log_id="down", key=key, at=federation.clock() + 1)
    with pytest.raises(FailedPrecondition) as err:
        call(federation, tls, "WitnessNodeCheckpoint", to_directory(rival))
    assert err.value.reason == Reason.CHECKPOINT_STALE


def test_only_the_log_owner_may_hand_over_its_checkpoint(
    federation: Federation, down: tuple[TlsIdentity, SigningKey]
) -> None:
    tls, key = down
    _, pboc_key, _ = node_identity(federation, "pboc")
    now = federation.clock()
    cases: list[tuple[TlsIdentity, Signed, Reason]] = [
        # a node handing over another node's checkpoint, signed by that node or by itself
        (tls, checkpoint(9, log_id="pboc", key=pboc_key, at=now), Reason.BAD_SIGNATURE),
        (tls, checkpoint(9, log_id="pboc", key=key, at=now), Reason.PEER_MISMATCH),
        # its own log, but signed by someone else
        (tls, checkpoint(9, log_id="down", key=pboc_key, at=now), Reason.BAD_SIGNATURE),
        # a requester: it keeps no log the directory witnesses
        (federation.requester_homes["bank"].tls(),
         checkpoint(9, log_id="bank", key=federation.requester_keys["bank"], at=now),
         Reason.WRONG_ROLE),
    ]  # fmt: skip
    for identity, signed, reason in cases:
        with pytest.raises(CredexError) as err:
            call(federation, identity, "WitnessNodeCheckpoint", to_directory(signed))
        assert err.value.reason == reason, (reason, err.value)


def test_a_suspended_node_is_not_witnessed(
    federation: Federation, down: tuple[TlsIdentity, SigningKey]
) -> None:
    tls, key = down
    signed = checkpoint(99, log_id="down", key=key, at=federation.clock())
    settings = load_settings(federation.root / "directory")
    directory_admin.set_member_status(settings, "down", "suspended")
    try:
        with pytest.raises(PermissionDenied) as err:
            call(federation, tls, "WitnessNodeCheckpoint", to_directory(signed))
        assert err.value.reason == Reason.MEMBER_SUSPENDED
    finally:
        directory_admin.set_member_status(settings, "down", "active")


def test_a_caller_flooding_the_directory_with_checkpoints_is_rate_limited(
    federation: Federation,
) -> None:
    """Refused for its rate before anything else is looked at (a requester, here): at most
    burst (10) calls plus what the rate refills meanwhile reach the checks."""
    home = federation.requester_homes["bank"]
    signed = checkpoint(1, log_id="bank", key=federation.requester_keys["bank"])

    async def flood() -> list[Reason]:
        reasons: list[Reason] = []
        channel = open_directory_channel(federation.address, home.tls())
        try:
            stub = FederationServiceStub(channel)
            while Reason.RATE_LIMITED not in reasons and len(reasons) < 1000:
                try:
                    await stub.WitnessNodeCheckpoint(to_directory(signed), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    reasons.append(from_rpc_error(exc).reason)
        finally:
            await channel.close(None)
        return reasons

    reasons = federation.loop.run(flood())
    assert reasons[-1] == Reason.RATE_LIMITED
    assert set(reasons[:-1]) <= {Reason.WRONG_ROLE}  # nothing else was looked at


def witnessed_at(db: Path, log_id: str) -> int:
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        row = conn.execute(f"SELECT max(seq) FROM {WITNESSED} WHERE log_id = ?", (log_id,))
        return int(row.fetchone()[0] or 0)
    finally:
        conn.close()


def test_the_directory_hands_every_node_its_checkpoint(federation: Federation) -> None:
    """One round of the directory's own publisher: each running node then holds a copy of
    the directory's newest checkpoint."""
    directory = federation.directory

    async def round_() -> int:
        with directory.services.storage.unit():
            directory.services.audit.append(
                AuditEntry(request_id="witness-round", actor="test", action="test", outcome="ok")
            )
            directory.services.audit.checkpoint()
        await directory.services.checkpoints.publish()
        latest = directory.services.audit.latest_checkpoint()
        assert latest is not None
        return latest[0]

    seq = federation.loop.run(round_())
    for node_id in ("courts", "pboc", "volunteers"):
        db = load_node_config(federation.node_configs[node_id]).state_db
        assert witnessed_at(db, "directory") >= seq


def test_nobody_but_the_directory_may_hand_a_node_a_checkpoint(federation: Federation) -> None:
    node_tls, node_key, _ = node_identity(federation, "courts")
    now = federation.clock()
    genuine = checkpoint(10**9, log_id="directory", key=federation.directory_key, at=now)
    cases: list[tuple[TlsIdentity, Signed, Reason]] = [
        (node_tls, genuine, Reason.PEER_MISMATCH),  # another member relaying it
        (federation.directory_tls,
         checkpoint(10**9, log_id="directory", key=node_key, at=now), Reason.BAD_SIGNATURE),
        (federation.directory_tls,
         checkpoint(10**9, log_id="courts", key=federation.directory_key, at=now),
         Reason.PEER_MISMATCH),
    ]  # fmt: skip
    for identity, signed, reason in cases:
        with pytest.raises(CredexError) as err:
            call(federation, identity, "WitnessDirectoryCheckpoint", to_node(signed), node="courts")
        assert err.value.reason == reason, (reason, err.value)


# --- the owner's side: handing over checkpoints --------------------------------------------------


def test_the_owner_hands_over_each_new_checkpoint_once_and_says_when_its_log_went_back(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A publisher whose witness is a real store in another database (called directly, as the
    RPC handler would): a new checkpoint goes over once; a log restored from an older backup
    is refused by the witness, and the owner's operator is told once per checkpoint."""
    witness = Witness(tmp_path / "witness.db", clock)
    calls: list[int] = []

    async def send(signed: Signed, deadline_s: float) -> int:
        calls.append(1)
        return witness.keep(signed, "pboc", [OWNER.public])

    def publisher_for(db: Path) -> tuple[AuditLog, CheckpointPublisher, SqliteStorage]:
        log, storage = runtime_log(db, clock, log_id="pboc", key=OWNER)
        return log, CheckpointPublisher(log, lambda: {"directory": send}, storage), storage

    log, publisher, storage = publisher_for(tmp_path / "pboc.db")
    with storage.unit():
        for i in range(3):
            log.append(AuditEntry(request_id=f"q-{i}", actor="d", action="query", outcome="ok"))
        log.checkpoint()
    assert asyncio.run(publisher.publish()) == 1 and witness.held("pboc") == 3
    assert asyncio.run(publisher.publish()) == 0 and len(calls) == 1  # nothing new to hand over

    restored, publisher, storage = publisher_for(tmp_path / "restored.db")  # a 2-entry backup
    with storage.unit():
        for i in range(2):
            restored.append(
                AuditEntry(request_id=f"q-{i}", actor="d", action="query", outcome="ok")
            )
        restored.checkpoint()
    with caplog.at_level(logging.ERROR, logger="credex.runtime.witness"):
        assert asyncio.run(publisher.publish()) == 0
        assert asyncio.run(publisher.publish()) == 0
    complaints = [r for r in caplog.records if "entries it saw are gone" in r.getMessage()]
    assert len(complaints) == 1 and witness.held("pboc") == 3
