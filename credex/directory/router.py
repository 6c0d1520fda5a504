"""Fan-out: one directory-signed query per node, all at once, each under its own deadline."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import grpc

from credex.directory.registry import MemberInfo
from credex.protocol import vocab
from credex.protocol.channels import ChannelPool
from credex.protocol.clock import Clock, to_timestamp
from credex.protocol.errors import (
    REASON_KEY,
    CredexError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.runtime.logs import REQUEST_ID_KEY
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import SubjectAttestation
from credex.v1.node_pb2 import NodeQuery, QueryRecordsRequest, QueryRecordsResponse
from credex.v1.node_pb2_grpc import NodeServiceStub
from credex.v1.requester_pb2 import NodeStatus

QUERY_LIFETIME_S = 60.0
ATTESTATION_CACHE_SIZE = 100_000
# Room around a node's signed answer in its reply (envelope, signature, key id): the channels
# to nodes take answers up to the cap plus this, and gRPC refuses anything larger unread.
ANSWER_ENVELOPE_BYTES = 64 * 1024

# What a node's failure (as credex.protocol.errors reads it) means for its part of a profile;
# anything else (INTERNAL, a dropped call) counts as the node being unavailable.
_NODE_STATUS: dict[type[CredexError], NodeStatus.ValueType] = {
    DeadlineExceeded: NodeStatus.NODE_STATUS_TIMEOUT,
    Unavailable: NodeStatus.NODE_STATUS_UNAVAILABLE,
    NotFound: NodeStatus.NODE_STATUS_NOT_FOUND,
    PermissionDenied: NodeStatus.NODE_STATUS_DENIED,
    Unauthenticated: NodeStatus.NODE_STATUS_DENIED,
    InvalidArgument: NodeStatus.NODE_STATUS_DENIED,
    FailedPrecondition: NodeStatus.NODE_STATUS_DENIED,
    ResourceExhausted: NodeStatus.NODE_STATUS_DENIED,
}


@dataclass(frozen=True)
class NodeCall:
    """What one node is asked: its own local id for the subject and the categories it serves,
    under its own ticket signed by the subject's key for it."""

    node: MemberInfo
    local_id: str
    categories: tuple[vocab.Category, ...]
    node_key: bytes
    ticket: Signed


@dataclass(frozen=True)
class NodeReply:
    call: NodeCall
    query_id: str
    query: Signed
    status: NodeStatus.ValueType
    detail: str
    response: QueryRecordsResponse | None
    elapsed_ms: float


class Router:
    def __init__(
        self,
        *,
        key: SigningKey,
        channels: ChannelPool,
        clock: Clock,
        deadline_s: float,
        attestation_ttl_s: float,
        max_answer_bytes: int,
    ) -> None:
        """`channels` should take at most `max_answer_bytes` + ANSWER_ENVELOPE_BYTES a reply."""
        self._key = key
        self._max_answer_bytes = max_answer_bytes
        self._clock = clock
        self._deadline_s = deadline_s
        self._attestation_ttl_s = attestation_ttl_s
        self._channels = channels
        self._attestations: OrderedDict[tuple[str, str, bytes], tuple[Signed, float, float]] = (
            OrderedDict()
        )

    async def close(self) -> None:
        await self._channels.close()

    def attestation(self, node_id: str, local_id: str, subject_key: bytes) -> Signed:
        """The directory's signed binding of a subject key to a node's local id, cached."""
        now = self._clock()
        cache_key = (node_id, local_id, subject_key)
        cached = self._attestations.get(cache_key)
        if cached is not None:
            signed, issued_at, expires_at = cached
            if issued_at <= now and expires_at - now > self._attestation_ttl_s / 4:
                self._attestations.move_to_end(cache_key)
                return signed
        expires_at = now + self._attestation_ttl_s
        signed = seal(
            SubjectAttestation(
                node_id=node_id,
                local_subject_id=local_id,
                subject_key=subject_key,
                issued_at=to_timestamp(now),
                expires_at=to_timestamp(expires_at),
            ),
            self._key,
        )
        self._attestations[cache_key] = (signed, now, expires_at)
        if len(self._attestations) > ATTESTATION_CACHE_SIZE:
            self._attestations.popitem(last=False)
        return signed

    def build_query(
        self, call: NodeCall, *, requester_id: str, purpose: vocab.Purpose
    ) -> tuple[str, Signed]:
        """A fresh, directory-signed query with its own random id, carrying the node's ticket
        and the attestation of the key that signed it: nothing another node receives."""
        now = self._clock()
        query_id = f"q-{uuid.uuid4().hex}"
        query = NodeQuery(
            request_id=query_id,
            nonce=os.urandom(16),
            issued_at=to_timestamp(now),
            expires_at=to_timestamp(now + QUERY_LIFETIME_S),
            node_id=call.node.member_id,
            requester_id=requester_id,
            purpose=purpose,
            local_subject_id=call.local_id,
            categories=call.categories,
            attestation=self.attestation(call.node.member_id, call.local_id, call.node_key),
            ticket=call.ticket,
        )
        return query_id, seal(query, self._key)

    async def fan_out(self, queries: list[tuple[NodeCall, str, Signed]]) -> list[NodeReply]:
        """Send every query at once; each reply is back within the deadline, or marked."""
        return list(await asyncio.gather(*(self._send(*q) for q in queries)))

    async def _send(self, call: NodeCall, query_id: str, query: Signed) -> NodeReply:
        start = time.perf_counter()

        def reply(
            status: NodeStatus.ValueType, detail: str, response: QueryRecordsResponse | None = None
        ) -> NodeReply:
            elapsed = (time.perf_counter() - start) * 1000
            return NodeReply(call, query_id, query, status, detail, response, elapsed)

        if not call.node.endpoint:
            return reply(NodeStatus.NODE_STATUS_UNAVAILABLE, "node has no registered endpoint")
        try:
            channel = self._channels.get(call.node.endpoint)
        except CredexError as err:  # an endpoint the directory does not dial
            return reply(NodeStatus.NODE_STATUS_UNAVAILABLE, err.message)
        stub = NodeServiceStub(channel)
        try:
            response = await stub.QueryRecords(
                QueryRecordsRequest(query=query),
                timeout=self._deadline_s,
                # The node logs under its own query id, never the profile's request id: that
                # would be one value in every asked node's log (the directory's log maps them).
                metadata=((REQUEST_ID_KEY, query_id),),
            )
        except grpc.aio.AioRpcError as exc:
            if _too_large(exc):
                return reply(NodeStatus.NODE_STATUS_TOO_LARGE, self._too_large_detail())
            failure = from_rpc_error(exc)
            status = _NODE_STATUS.get(type(failure), NodeStatus.NODE_STATUS_UNAVAILABLE)
            return reply(status, f"{failure.code.name}: {exc.details() or ''}".strip())
        if len(response.answer.body) > self._max_answer_bytes:
            return reply(NodeStatus.NODE_STATUS_TOO_LARGE, self._too_large_detail())
        return reply(NodeStatus.NODE_STATUS_OK, "", response)

    def _too_large_detail(self) -> str:
        return f"answer larger than {self._max_answer_bytes} bytes, this directory's cap"


def _too_large(exc: grpc.aio.AioRpcError) -> bool:
    """Whether gRPC itself refused the reply for its size (our receive limit, or the node's
    send limit); a node's own refusals carry a credex reason instead."""
    metadata: Any = exc.trailing_metadata() or ()
    return (
        exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and not any(key == REASON_KEY for key, _ in metadata)
        and "larger than max" in (exc.details() or "")
    )
