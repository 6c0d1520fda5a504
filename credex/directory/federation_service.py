"""What nodes tell and ask the directory on the member port: where they listen, the changes to
their own tickets, their decisions on disputes, and their audit checkpoints to witness. Each
is signed by the node and sent with its own certificate."""

from __future__ import annotations

from typing import Any

import grpc

from credex.directory.disputes import DisputeDesk
from credex.directory.member_service import active_peer
from credex.directory.publication import Publisher
from credex.directory.registry import Registry
from credex.directory.verify import signer_key
from credex.directory.witness import NodeCheckpoints
from credex.protocol.clock import Clock, from_timestamp
from credex.protocol.endpoints import EndpointError, EndpointPolicy
from credex.protocol.errors import Reason, refused
from credex.protocol.signing import open_signed, parse
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.handlers import RpcRuntime, rpc_handler
from credex.runtime.peers import require_peer
from credex.v1 import dispute_pb2, federation_pb2, federation_pb2_grpc, member_pb2

Context = grpc.aio.ServicerContext[Any, Any]
ANNOUNCE_MAX_AGE_S = 300.0
MAX_SEQ = 2**63 - 1  # SQLite integers are signed 64-bit


class FederationService(federation_pb2_grpc.FederationServiceServicer):
    def __init__(
        self,
        *,
        runtime: RpcRuntime,
        registry: Registry,
        publisher: Publisher,
        disputes: DisputeDesk,
        witness: NodeCheckpoints,
        endpoints: EndpointPolicy,
        audit: AuditLog,
        clock: Clock,
        directory_id: str,
    ) -> None:
        self.runtime = runtime  # see rpc_handler
        self._registry = registry
        self._publisher = publisher
        self._disputes = disputes
        self._witness = witness  # nodes' audit checkpoints, kept here
        self._endpoints = endpoints
        self._audit = audit
        self._clock = clock
        self._directory_id = directory_id

    @rpc_handler
    async def Announce(
        self, request: federation_pb2.AnnounceRequest, context: Context
    ) -> federation_pb2.AnnounceResponse:
        """A node's new address, signed by the node and sent with its own certificate."""
        claimed = parse(
            request.announcement.body, federation_pb2.NodeAnnouncement, what="announcement"
        )
        node = self._registry.get(claimed.node_id)
        if node is None or node.role != member_pb2.MemberRole.MEMBER_ROLE_NODE:
            raise refused(Reason.UNKNOWN_SIGNER, f"no node {claimed.node_id!r}")
        if not node.active:
            raise refused(Reason.MEMBER_SUSPENDED, f"{node.member_id} is {node.status_name}")
        announcement = open_signed(
            request.announcement,
            federation_pb2.NodeAnnouncement,
            signer_key(node, request.announcement, self._clock()),
            what="announcement",
        )
        require_peer(context, node.member_id)
        if abs(self._clock() - from_timestamp(announcement.issued_at)) > ANNOUNCE_MAX_AGE_S:
            raise refused(Reason.REQUEST_EXPIRED, "announcement is stale")
        try:
            self._endpoints.check(announcement.endpoint)
        except EndpointError as exc:
            raise refused(Reason.ENDPOINT_REFUSED, str(exc)) from None
        with self.runtime.storage.unit():
            self._registry.set_endpoint(node.member_id, announcement.endpoint)
        return federation_pb2.AnnounceResponse()

    @rpc_handler
    async def GetRevocations(
        self, request: federation_pb2.GetRevocationsRequest, context: Context
    ) -> federation_pb2.GetRevocationsResponse:
        peer = active_peer(context, self._registry, self._directory_id)
        node = self._registry.get(peer)
        if node is None or node.role != member_pb2.MemberRole.MEMBER_ROLE_NODE:
            raise refused(Reason.WRONG_ROLE, "only nodes follow a feed, each its own tickets'")
        if request.after_seq > MAX_SEQ:
            raise refused(Reason.MALFORMED, "after_seq is beyond any sequence number")
        return federation_pb2.GetRevocationsResponse(
            feed=self._publisher.feed(peer, request.after_seq)
        )

    @rpc_handler
    async def ResolveDispute(
        self, request: federation_pb2.ResolveDisputeRequest, context: Context
    ) -> federation_pb2.ResolveDisputeResponse:
        """A node's decision about a dispute on one of its records, signed by that node."""
        claimed = parse(request.resolution.body, dispute_pb2.DisputeResolution, what="resolution")
        node = self._registry.get(claimed.node_id)
        if node is None or node.role != member_pb2.MemberRole.MEMBER_ROLE_NODE or not node.active:
            raise refused(Reason.UNKNOWN_SIGNER, f"{claimed.node_id!r} is not an active node")
        resolution = open_signed(
            request.resolution,
            dispute_pb2.DisputeResolution,
            signer_key(node, request.resolution, self._clock()),
            what="resolution",
        )
        require_peer(context, node.member_id)
        with self.runtime.storage.unit():  # the decision and its audit entry: both or neither
            state = self._disputes.resolve(resolution)
            self._audit.append(
                AuditEntry(
                    request_id=resolution.dispute_id,
                    actor=node.member_id,
                    action="dispute",
                    outcome=dispute_pb2.DisputeStatus.Name(state.status)
                    .removeprefix("DISPUTE_STATUS_")
                    .lower(),
                    node_id=node.member_id,
                    detail=resolution.note,
                )
            )
        return federation_pb2.ResolveDisputeResponse(dispute=state)

    @rpc_handler
    async def WitnessNodeCheckpoint(
        self, request: federation_pb2.WitnessNodeCheckpointRequest, context: Context
    ) -> federation_pb2.WitnessNodeCheckpointResponse:
        """Keep the calling node's newest audit checkpoint as a witness copy."""
        with self.runtime.storage.unit():
            return self._witness.accept(request, context)
