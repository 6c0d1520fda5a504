"""Disputes at the directory: a subject contests a record, the directory hands the dispute to
the node that holds it (under the node's own id for the subject) and records the outcome the
node reports. The node takes it only for a record it holds about that subject; nothing is
filed otherwise. Each subject may try a few times an hour (every attempt makes a node read
its records) and have a bounded number of disputes open. A dispute id is claimed before the
node is asked, so that two filings of one id at once reach the node once."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass

import grpc

from credex.directory.config import DisputeLimits
from credex.directory.locator import Locator
from credex.directory.registry import Registry
from credex.protocol import vocab
from credex.protocol.channels import ChannelPool
from credex.protocol.clock import Clock, to_timestamp
from credex.protocol.errors import NotFound, Reason, from_rpc_error, refused
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.runtime.storage import Storage, require_unit
from credex.v1 import dispute_pb2
from credex.v1.node_pb2 import DisputeNotice, ReceiveDisputeRequest
from credex.v1.node_pb2_grpc import NodeServiceStub

D = dispute_pb2.DisputeStatus
STATUS_TEXT = {
    D.DISPUTE_STATUS_OPEN: "open",
    D.DISPUTE_STATUS_CORRECTED: "corrected",
    D.DISPUTE_STATUS_DELETED: "deleted",
    D.DISPUTE_STATUS_REJECTED: "rejected",
}
TEXT_STATUS = {v: k for k, v in STATUS_TEXT.items()}
OUTCOMES = (D.DISPUTE_STATUS_CORRECTED, D.DISPUTE_STATUS_DELETED, D.DISPUTE_STATUS_REJECTED)
DELIVERY_TIMEOUT_S = 5.0
MAX_REASON_CHARS = 2000
WINDOW_S = 3600.0  # disputes per subject are counted over the last hour


def new_dispute_id() -> str:
    return f"d-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class StoredDispute:
    subject_id: str
    state: dispute_pb2.DisputeState


class DisputeDesk:
    def __init__(
        self,
        *,
        storage: Storage,
        locator: Locator,
        registry: Registry,
        channels: ChannelPool,
        key: SigningKey,
        clock: Clock,
        limits: DisputeLimits | None = None,
    ) -> None:
        self._storage = storage
        self._conn = storage.connection
        self._limits = limits or DisputeLimits()
        self._locator = locator
        self._registry = registry
        self._channels = channels
        self._key = key
        self._clock = clock
        self._filing: set[str] = set()  # dispute ids being handed to their node now

    async def file(self, dispute: dispute_pb2.Dispute) -> dispute_pb2.DisputeState:
        """Hand the dispute to its node, then record it; a node that cannot be reached means
        nothing was filed (the subject may try again)."""
        if not 0 < len(dispute.dispute_id) <= 128 or not 0 < len(dispute.record_id) <= 256:
            raise refused(Reason.MALFORMED, "dispute needs an id and a record id")
        if not dispute.reason.strip() or len(dispute.reason) > MAX_REASON_CHARS:
            raise refused(
                Reason.MALFORMED, f"give a reason of at most {MAX_REASON_CHARS} characters"
            )
        if dispute.category not in vocab.ALL_CATEGORIES:
            raise refused(Reason.MALFORMED, "say which category the record was disclosed under")
        if dispute.dispute_id in self._filing or self.get(dispute.dispute_id) is not None:
            raise refused(Reason.DISPUTE_EXISTS, f"dispute {dispute.dispute_id} exists")
        self._filing.add(dispute.dispute_id)
        try:
            return await self._file(dispute)
        finally:
            self._filing.discard(dispute.dispute_id)

    async def _file(self, dispute: dispute_pb2.Dispute) -> dispute_pb2.DisputeState:
        with self._storage.unit():  # counted whether or not the node takes it
            self._attempt(dispute.subject_id)
        local_id = self._locator.locate(dispute.subject_id).get(dispute.node_id)
        node = self._registry.get(dispute.node_id)
        if local_id is None or node is None:
            raise refused(Reason.NO_RECORDS, f"{dispute.node_id!r} holds nothing about you")
        if not node.active or not node.endpoint:
            raise refused(Reason.UNAVAILABLE, f"{node.member_id} cannot take disputes now")
        now = self._clock()
        notice = DisputeNotice(
            dispute_id=dispute.dispute_id,
            node_id=node.member_id,
            local_subject_id=local_id,
            record_id=dispute.record_id,
            reason=dispute.reason,
            issued_at=to_timestamp(now),
            category=dispute.category,
        )
        stub = NodeServiceStub(self._channels.get(node.endpoint))
        try:
            await stub.ReceiveDispute(
                ReceiveDisputeRequest(notice=seal(notice, self._key)), timeout=DELIVERY_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            err = from_rpc_error(exc)
            if isinstance(err, NotFound):
                raise refused(
                    Reason.NO_RECORDS,
                    f"{node.member_id} holds no record {dispute.record_id!r} in "
                    f"{vocab.category_name(dispute.category)} about you",
                ) from None
            raise refused(
                Reason.UNAVAILABLE, f"{node.member_id} did not take the dispute: {err.code.name}"
            ) from None
        try:
            with self._storage.unit():
                self._conn.execute(
                    "INSERT INTO disputes (dispute_id, subject_id, node_id, record_id, reason, "
                    "status, filed_at, category) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
                    (dispute.dispute_id, dispute.subject_id, node.member_id, dispute.record_id,
                     dispute.reason, now, dispute.category),
                )  # fmt: skip
        except sqlite3.IntegrityError:  # filed meanwhile by another process on this database
            raise refused(Reason.DISPUTE_EXISTS, f"dispute {dispute.dispute_id} exists") from None
        stored = self.get(dispute.dispute_id)
        assert stored is not None
        return stored.state

    def _attempt(self, subject_id: str) -> None:
        """Count one attempt of `subject_id` to file a dispute; RESOURCE_EXHAUSTED (with when
        to try again) past the hourly limit or with too many disputes open."""
        require_unit(self._conn)
        now = self._clock()
        since = now - WINDOW_S
        self._conn.execute("DELETE FROM dispute_attempts WHERE at <= ?", (since,))
        count, oldest = self._conn.execute(
            "SELECT count(*), min(at) FROM dispute_attempts WHERE subject_id = ? AND at > ?",
            (subject_id, since),
        ).fetchone()
        if count >= self._limits.per_hour:
            raise refused(
                Reason.DISPUTE_LIMIT,
                f"at most {self._limits.per_hour} disputes an hour",
                retry_after_s=max(1.0, float(oldest) + WINDOW_S - now),
            )
        (open_now,) = self._conn.execute(
            "SELECT count(*) FROM disputes WHERE subject_id = ? AND status = 'open'",
            (subject_id,),
        ).fetchone()
        if open_now >= self._limits.max_open:
            raise refused(
                Reason.DISPUTE_LIMIT,
                f"{open_now} of your disputes wait for a decision; at most "
                f"{self._limits.max_open} may be open at once",
                retry_after_s=WINDOW_S,
            )
        self._conn.execute(
            "INSERT INTO dispute_attempts (subject_id, at) VALUES (?, ?)", (subject_id, now)
        )

    def resolve(self, resolution: dispute_pb2.DisputeResolution) -> dispute_pb2.DisputeState:
        """Record a node's decision about a dispute on one of its own records (inside the
        caller's unit of work)."""
        require_unit(self._conn)
        stored = self.get(resolution.dispute_id)
        if stored is None:
            raise refused(Reason.DISPUTE_NOT_FOUND, f"no dispute {resolution.dispute_id!r}")
        if stored.state.node_id != resolution.node_id:
            raise refused(Reason.PEER_MISMATCH, "the dispute is about another node")
        if stored.state.status != D.DISPUTE_STATUS_OPEN:
            raise refused(Reason.DISPUTE_RESOLVED, "the dispute was already resolved")
        if resolution.status not in OUTCOMES:
            raise refused(Reason.MALFORMED, "outcome: corrected, deleted or rejected")
        self._conn.execute(
            "UPDATE disputes SET status = ?, resolution = ?, resolved_at = ? WHERE dispute_id = ?",
            (
                STATUS_TEXT[resolution.status],
                resolution.note[:MAX_REASON_CHARS],
                self._clock(),
                resolution.dispute_id,
            ),
        )
        updated = self.get(resolution.dispute_id)
        assert updated is not None
        return updated.state

    def get(self, dispute_id: str) -> StoredDispute | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM disputes WHERE dispute_id = ?", (dispute_id,)
        ).fetchone()
        return _stored(row) if row else None

    def for_subject(self, subject_id: str) -> list[dispute_pb2.DisputeState]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM disputes WHERE subject_id = ? ORDER BY filed_at",
            (subject_id,),
        ).fetchall()
        return [_stored(row).state for row in rows]


_COLUMNS = (
    "dispute_id, subject_id, node_id, record_id, reason, status, resolution, filed_at, "
    "resolved_at, category"
)


def _stored(row: tuple[object, ...]) -> StoredDispute:
    (dispute_id, subject_id, node_id, record_id, reason, status, resolution, filed, resolved,
     category) = row  # fmt: skip
    state = dispute_pb2.DisputeState(
        dispute_id=str(dispute_id),
        node_id=str(node_id),
        record_id=str(record_id),
        reason=str(reason),
        status=TEXT_STATUS[str(status)],
        resolution=str(resolution),
        filed_at=to_timestamp(float(filed)),  # type: ignore[arg-type]
        category=int(category),  # type: ignore[call-overload]
    )
    if resolved is not None:
        state.resolved_at.CopyFrom(to_timestamp(float(resolved)))  # type: ignore[arg-type]
    return StoredDispute(subject_id=str(subject_id), state=state)
