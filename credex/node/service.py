"""The node's gRPC service: verify, read through adapters, sign, record."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import Counter

from credex.node.adapters import AdapterError, AdapterLeak, RecordSource
from credex.node.config import NodeConfig
from credex.node.directory_sync import DirectorySync
from credex.node.disputes import NodeDisputes
from credex.node.ticket_uses import TicketUses
from credex.node.verify import QueryVerifier, VerifiedQuery
from credex.node.witness import DirectoryCheckpoints
from credex.protocol import vocab
from credex.protocol.clock import Clock, from_timestamp, to_timestamp
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.signing import digest, open_signed, parse, seal
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.handlers import RpcRuntime, rpc_handler
from credex.runtime.peers import is_directory, peer_or_unknown, require_directory
from credex.runtime.ratelimit import RateLimiter
from credex.runtime.witness import CheckpointPublisher
from credex.sdk.link import DirectoryLink
from credex.v1 import node_pb2, node_pb2_grpc
from credex.v1.common_pb2 import Record
from credex.v1.node_pb2 import NodeAnswer, NodeQuery, QueryRecordsRequest, QueryRecordsResponse

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)
# What the requester learns when the node cannot read its records: nothing of the records.
ADAPTER_FAILED = "the node could not read its records for this query"


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
        runtime: RpcRuntime,
        witness: DirectoryCheckpoints,
        checkpoints: CheckpointPublisher,
        uses: TicketUses,
        directory: DirectoryLink,
    ) -> None:
        self._uses = uses
        self.directory = directory  # the node's one link to the directory (see start_node)
        self.runtime = runtime  # see rpc_handler
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
        self._witness = witness  # the directory's checkpoints, kept here
        self.checkpoints = checkpoints  # ours, handed to the directory (see start_node)
        self._withheld = Counter(
            "credex_adapter_rows_withheld",
            "Rows an adapter returned for another subject than the one asked about: never "
            "disclosed; any makes the node stop answering until the adapter is fixed",
            ["category"],
            registry=runtime.metrics.registry,
        )

    def health_problem(self) -> str | None:
        """Why this node should not be sent queries now: the disk failed to sync its state,
        its records are unreadable, an adapter returned other subjects' rows, or its registry
        snapshot is too old to check requesters and revocations against."""
        return (
            self.runtime.storage.failure
            or self._source.unreadable()
            or self._source.leak
            or self.sync.stale()
        )

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
            raise refused(Reason.WRONG_NODE, "dispute is for another node")
        if not self._holds(notice):
            raise refused(
                Reason.NO_RECORDS,
                f"this node holds no record {notice.record_id[:256]!r} in "
                f"{vocab.category_name(notice.category)} about the subject",
            )
        with self.runtime.storage.unit():
            self.disputes.receive(notice)
            self.audit.append(
                AuditEntry(
                    request_id=notice.dispute_id,
                    actor="directory",
                    action="dispute",
                    outcome="received",
                    subject_ref=notice.local_subject_id,
                    node_id=self._config.node_id,
                    categories=[vocab.category_name(notice.category)],
                    detail=f"record {notice.record_id}",
                )
            )
        return node_pb2.ReceiveDisputeResponse()

    def _holds(self, notice: node_pb2.DisputeNotice) -> bool:
        """Whether the adapters return the disputed record (category, record id) about the
        subject now, and the operator has not deleted it: a subject disputes only their own."""
        if notice.category not in self._source.categories:
            return False
        records = self._fetch(notice.dispute_id, notice.local_subject_id, [notice.category])
        _, deleted = self.disputes.for_subject(notice.local_subject_id)
        key = (notice.category, notice.record_id)
        return key not in deleted and any((r.category, r.record_id) == key for r in records)

    @rpc_handler
    async def WitnessDirectoryCheckpoint(
        self, request: node_pb2.WitnessDirectoryCheckpointRequest, context: Context
    ) -> node_pb2.WitnessDirectoryCheckpointResponse:
        """Keep the directory's newest audit checkpoint as a witness copy."""
        with self.runtime.storage.unit():
            return self._witness.accept(request, context)

    @rpc_handler
    async def QueryRecords(
        self, request: QueryRecordsRequest, context: Context
    ) -> QueryRecordsResponse:
        # One unit of work per query: its nonce and the audit entry of its answer or refusal.
        failure: CredexError | None = None
        counted: AuditEntry | None = None  # a refusal to count, after the unit
        with self.runtime.storage.unit():
            try:
                require_directory(context, self._config.directory_id)
                wait = self._limiter.take(self._config.directory_id)
                if wait:
                    raise refused(
                        Reason.RATE_LIMITED,
                        f"more than {self._limiter.rate_per_s:g} queries a second",
                        retry_after_s=wait,
                    )
                verified = self._verifier.verify(request)
            except CredexError as err:
                failure = err
                claimed = _claimed_query(request)
                peer = peer_or_unknown(context)
                entry = AuditEntry(
                    request_id=claimed.request_id[:128],
                    actor=peer,
                    action="query",
                    outcome=f"refused:{err.reason}",
                    purpose=vocab.purpose_name(claimed.purpose) if claimed.purpose else "",
                    categories=vocab.category_names(claimed.categories[:16]),
                    node_id=self._config.node_id,
                    subject_ref=claimed.local_subject_id[:128],
                    detail=f"{err.message} (claimed requester {claimed.requester_id[:64]!r})",
                    query_digest=digest(request.query).hex() if request.query.body else "",
                )
                # The directory's refused queries are logged one by one (reconcile matches them);
                # anyone else's are counted, so a certificate holder's rate never becomes writes.
                if is_directory(context, self._config.directory_id):
                    self.audit.append(entry)
                else:
                    counted = entry
            else:
                try:
                    response = self._answer(verified)
                except CredexError as err:  # the nonce stays used; the failure is audited
                    failure = err
                    self.audit.append(
                        AuditEntry(
                            request_id=verified.query.request_id,
                            actor=verified.query.requester_id,
                            action="query",
                            outcome=f"failed:{err.reason}",
                            purpose=vocab.purpose_name(verified.query.purpose),
                            consent_id=verified.ticket.ticket_id,
                            subject_ref=verified.query.local_subject_id,
                            categories=vocab.category_names(verified.query.categories),
                            node_id=self._config.node_id,
                            detail=err.message,
                        )
                    )
        if counted is not None:
            self.runtime.callers.recorder.record(counted)
        if failure is not None:
            raise failure
        return response

    def _fetch(
        self,
        request_id: str,
        local_id: str,
        categories: Iterable[vocab.Category],
        data_from: float | None = None,
        data_to: float | None = None,
    ) -> list[Record]:
        """The subject's records; a failure is logged in full for the operator (under the
        query's or dispute's id) and reaches the caller only as ADAPTER_FAILED."""
        try:
            return self._source.fetch(local_id, categories, data_from=data_from, data_to=data_to)
        except AdapterLeak as leak:
            for found in leak.found:
                self._withheld.labels(vocab.category_name(found.category)).inc(found.rows)
            log.error(
                "%s: %s; the node answers no query until the adapter is fixed and the node "
                "restarted",
                request_id,
                leak,
            )
        except AdapterError as exc:
            log.error("%s: adapter failed: %s", request_id, exc)
        except sqlite3.Error as exc:
            log.error("%s: reading the records database failed: %s", request_id, exc)
        raise refused(Reason.ADAPTER_FAILED, ADAPTER_FAILED)

    def _answer(self, verified: VerifiedQuery) -> QueryRecordsResponse:
        query, ticket = verified.query, verified.ticket
        data_from = from_timestamp(ticket.data_from) if ticket.HasField("data_from") else None
        data_to = from_timestamp(ticket.data_to) if ticket.HasField("data_to") else None
        records = self._fetch(
            query.request_id, query.local_subject_id, query.categories, data_from, data_to
        )
        disputed, deleted = self.disputes.for_subject(query.local_subject_id)
        records = [r for r in records if (r.category, r.record_id) not in deleted]
        for record in records:
            record.disputed_by = disputed.get((record.category, record.record_id), "")
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
                consent_id=ticket.ticket_id,  # this node's ticket: no id another node sees
                subject_ref=query.local_subject_id,
                categories=vocab.category_names(query.categories),
                node_id=self._config.node_id,
                detail=f"{len(records)} records",
                disclosed_digest=digest(signed).hex(),
                query_digest=verified.digest.hex(),
            )
        )
        self._uses.count(ticket, self._clock())
        return QueryRecordsResponse(answer=signed)


def _claimed_query(request: QueryRecordsRequest) -> NodeQuery:
    """What a refused query claims to be, for the log; empty when it does not even parse."""
    try:
        return parse(request.query.body, NodeQuery, what="query")
    except CredexError:
        return NodeQuery()
