"""The node's gRPC service: verify, read through adapters, sign, record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from credex import vocab
from credex.audit import AuditEntry, AuditLog, malformed_entry
from credex.clock import Clock, from_timestamp, to_timestamp
from credex.db import transaction
from credex.errors import (
    CredexError,
    Internal,
    PermissionDenied,
    Reason,
    ResourceExhausted,
)
from credex.group_commit import GroupCommit
from credex.handlers import rpc_handler
from credex.keys import SigningKey, VerifyKey
from credex.metrics import Metrics
from credex.ratelimit import RateLimiter
from credex.signing import digest, open_signed, parse, seal
from credex.transport import peer_or_unknown, require_directory
from credex.v1 import node_pb2, node_pb2_grpc
from credex.v1.node_pb2 import NodeAnswer, NodeQuery, QueryRecordsRequest, QueryRecordsResponse
from nodes.adapters import AdapterError, RecordSource
from nodes.config import NodeConfig
from nodes.directory_sync import DirectorySync
from nodes.disputes import NodeDisputes
from nodes.verify import QueryVerifier, VerifiedQuery

Context = grpc.aio.ServicerContext[Any, Any]


class NodeService(node_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        *,
        config: NodeConfig,
        key: Callable[[], SigningKey],
        verifier: QueryVerifier,
        sync: DirectorySync,
        disputes: NodeDisputes,
        directory_key: VerifyKey,
        source: RecordSource,
        audit: AuditLog,
        clock: Clock,
        commits: GroupCommit,
        metrics: Metrics,
    ) -> None:
        self.commits = commits  # see rpc_handler: flushed before every reply
        self.metrics = metrics  # see rpc_handler: every answer counted
        self.check_peer = sync.check_peer  # see rpc_handler: revoked certificates refused
        self._config = config
        self._key = key
        self._verifier = verifier
        self.sync = sync
        self.disputes = disputes
        self._directory_key = directory_key
        self._source = source
        self.audit = audit
        self._clock = clock
        self._limiter = RateLimiter(config.rate_per_s, config.burst, clock)

    def health_problem(self) -> str | None:
        """Why this node should not be sent queries now: the disk failed to sync its state,
        its records are unreadable, or its registry snapshot is too old to check requesters
        and revocations against."""
        return self.commits.failure or self._source.unreadable() or self.sync.stale()

    def record_malformed(self, method: str, err: CredexError, context: Context) -> None:
        """Audit a request refused before it could be read (called by `rpc_handler`)."""
        peer = peer_or_unknown(context)
        self.audit.append(malformed_entry(method, err, peer, self._config.node_id))

    @rpc_handler
    async def Describe(
        self, request: node_pb2.DescribeRequest, context: Context
    ) -> node_pb2.DescribeResponse:
        require_directory(context, self._config.directory_id)
        return node_pb2.DescribeResponse(
            node_id=self._config.node_id,
            name=self._config.name,
            jurisdiction=self._config.jurisdiction,
            categories=sorted(self._source.categories),
            key_id=self._key().key_id,
            registry_version=self.sync.version,
        )

    @rpc_handler
    async def NotifyRevocations(
        self, request: node_pb2.NotifyRevocationsRequest, context: Context
    ) -> node_pb2.NotifyRevocationsResponse:
        require_directory(context, self._config.directory_id)
        return node_pb2.NotifyRevocationsResponse(synced_seq=self.sync.apply_feed(request.feed))

    @rpc_handler
    async def ReceiveDispute(
        self, request: node_pb2.ReceiveDisputeRequest, context: Context
    ) -> node_pb2.ReceiveDisputeResponse:
        """A subject's dispute about one of our records, handed over by the directory."""
        require_directory(context, self._config.directory_id)
        notice = open_signed(
            request.notice, node_pb2.DisputeNotice, self._directory_key, what="dispute notice"
        )
        if notice.node_id != self._config.node_id:
            raise PermissionDenied(Reason.WRONG_NODE, "dispute is for another node")
        self.disputes.receive(notice)
        self.audit.append(
            AuditEntry(
                request_id=notice.dispute_id,
                actor="directory",
                action="dispute",
                outcome="received",
                subject_ref=notice.local_subject_id,
                node_id=self._config.node_id,
                detail=f"record {notice.record_id}",
            )
        )
        return node_pb2.ReceiveDisputeResponse()

    @rpc_handler
    async def QueryRecords(
        self, request: QueryRecordsRequest, context: Context
    ) -> QueryRecordsResponse:
        # One durable commit per query: its nonce and the audit entry of its answer or refusal.
        refused: CredexError | None = None
        with transaction(self.audit.db):
            try:
                require_directory(context, self._config.directory_id)
                wait = self._limiter.take(self._config.directory_id)
                if wait:
                    raise ResourceExhausted(
                        Reason.RATE_LIMITED,
                        f"more than {self._limiter.rate_per_s:g} queries a second",
                        retry_after_s=wait,
                    )
                verified = self._verifier.verify(request)
            except CredexError as err:
                refused = err
                claimed = _claimed_query(request)
                peer = peer_or_unknown(context)
                self.audit.append(
                    AuditEntry(
                        request_id=claimed.request_id[:128],
                        actor=peer,
                        action="query",
                        outcome=f"refused:{err.reason}",
                        purpose=vocab.purpose_name(claimed.purpose) if claimed.purpose else "",
                        categories=vocab.category_names(claimed.categories[:16]),
                        node_id=self._config.node_id,
                        subject_ref=claimed.local_subject_id[:128],
                        detail=f"{err.message} (claimed requester {claimed.requester_id[:64]!r})",
                    )
                )
            else:
                response = self._answer(verified)
        if refused is not None:
            raise refused
        return response

    def _answer(self, verified: VerifiedQuery) -> QueryRecordsResponse:
        query, consent = verified.query, verified.consent
        data_from = from_timestamp(consent.data_from) if consent.HasField("data_from") else None
        data_to = from_timestamp(consent.data_to) if consent.HasField("data_to") else None
        try:
            records = self._source.fetch(
                query.local_subject_id, query.categories, data_from=data_from, data_to=data_to
            )
        except AdapterError as exc:
            raise Internal(Reason.INTERNAL, f"adapter failed: {exc}") from exc
        disputed, deleted = self.disputes.for_subject(query.local_subject_id)
        records = [r for r in records if r.record_id not in deleted]
        for record in records:
            record.disputed_by = disputed.get(record.record_id, "")
        answer = NodeAnswer(
            request_id=query.request_id,
            node_id=self._config.node_id,
            query_digest=verified.digest,
            answered_at=to_timestamp(self._clock()),
            records=records,
        )
        signed = seal(answer, self._key())
        self.audit.append(
            AuditEntry(
                request_id=query.request_id,
                actor=query.requester_id,
                action="query",
                outcome="disclosed" if records else "no_records",
                purpose=vocab.purpose_name(query.purpose),
                consent_id=consent.consent_id,
                subject_ref=query.local_subject_id,
                categories=vocab.category_names(query.categories),
                node_id=self._config.node_id,
                detail=f"{len(records)} records",
                disclosed_digest=digest(signed).hex(),
            )
        )
        return QueryRecordsResponse(answer=signed)


def _claimed_query(request: QueryRecordsRequest) -> NodeQuery:
    """What a refused query claims to be, for the log; empty when it does not even parse."""
    try:
        return parse(request.query.body, NodeQuery, what="query")
    except CredexError:
        return NodeQuery()
