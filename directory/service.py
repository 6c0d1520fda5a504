"""The directory's gRPC service: verify, route, assemble, record."""

from __future__ import annotations

from typing import Any

import grpc

from credex import vocab
from credex.audit import AuditEntry, AuditLog
from credex.clock import Clock, from_timestamp
from credex.errors import (
    CredexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    rpc_errors,
)
from credex.keys import SigningKey
from credex.ratelimit import RateLimiter
from credex.signing import open_signed, parse
from credex.transport import peer_member_id, require_peer
from credex.v1 import directory_pb2 as pb
from credex.v1 import directory_pb2_grpc
from credex.v1.consent_pb2 import ConsentStatus
from credex.v1.directory_pb2 import ProfileRequest
from directory.assembly import assemble, node_result
from directory.locator import Locator
from directory.publication import Publisher
from directory.registry import Registry
from directory.router import NodeCall, Router
from directory.verify import AuthorizedProfileRequest, RequestVerifier

Context = grpc.aio.ServicerContext[Any, Any]
S = ConsentStatus
ANNOUNCE_MAX_AGE_S = 300.0


def check_endpoint(endpoint: str) -> None:
    host, sep, port = endpoint.rpartition(":")
    if (
        not sep
        or not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or len(endpoint) > 256
    ):
        raise InvalidArgument(Reason.MALFORMED, f"endpoint {endpoint[:80]!r} is not host:port")


class DirectoryService(directory_pb2_grpc.DirectoryServiceServicer):
    def __init__(
        self,
        *,
        key: SigningKey,
        registry: Registry,
        locator: Locator,
        verifier: RequestVerifier,
        router: Router,
        audit: AuditLog,
        clock: Clock,
        limiter: RateLimiter,
        publisher: Publisher,
    ) -> None:
        self._key = key
        self._limiter = limiter
        self._publisher = publisher
        self._registry = registry
        self._locator = locator
        self._verifier = verifier
        self._router = router
        self._audit = audit
        self._clock = clock

    @rpc_errors
    async def Announce(self, request: pb.AnnounceRequest, context: Context) -> pb.AnnounceResponse:
        """A node's new address, signed by the node and sent with its own certificate."""
        claimed = parse(request.announcement.body, pb.NodeAnnouncement, what="announcement")
        node = self._registry.get(claimed.node_id)
        if node is None or node.role != pb.MemberRole.MEMBER_ROLE_NODE:
            raise NotFound(Reason.UNKNOWN_SIGNER, f"no node {claimed.node_id!r}")
        if not node.active:
            raise PermissionDenied(
                Reason.MEMBER_SUSPENDED, f"{node.member_id} is {node.status_name}"
            )
        announcement = open_signed(
            request.announcement, pb.NodeAnnouncement, node.key, what="announcement"
        )
        require_peer(context, node.member_id)
        if abs(self._clock() - from_timestamp(announcement.issued_at)) > ANNOUNCE_MAX_AGE_S:
            raise PermissionDenied(Reason.REQUEST_EXPIRED, "announcement is stale")
        check_endpoint(announcement.endpoint)
        self._registry.set_endpoint(node.member_id, announcement.endpoint)
        return pb.AnnounceResponse()

    @rpc_errors
    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Context
    ) -> pb.ListMembersResponse:
        return pb.ListMembersResponse(
            members=[m.to_proto() for m in self._registry.all()],
            directory_public_key=self._key.public.raw,
        )

    @rpc_errors
    async def GetRegistry(
        self, request: pb.GetRegistryRequest, context: Context
    ) -> pb.GetRegistryResponse:
        peer_member_id(context)
        return self._publisher.registry(request.known_version)

    @rpc_errors
    async def GetRevocations(
        self, request: pb.GetRevocationsRequest, context: Context
    ) -> pb.GetRevocationsResponse:
        peer_member_id(context)
        return pb.GetRevocationsResponse(feed=self._publisher.feed(request.after_seq))

    @rpc_errors
    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        try:
            peer = peer_member_id(context)
            wait = self._limiter.take(peer)
            if wait:
                raise ResourceExhausted(
                    Reason.RATE_LIMITED,
                    f"more than {self._limiter.rate_per_s:g} profile requests a second",
                    retry_after_s=wait,
                )
            authorized = self._verifier.profile_request(request.request, peer=peer)
        except CredexError as err:
            self._audit_refusal(request, err)
            raise
        calls = self._plan(authorized)
        req = authorized.request
        queries = [
            (
                call,
                *self._router.build_query(
                    call,
                    requester_id=req.requester_id,
                    purpose=req.purpose,
                    consent=authorized.stored.signed,
                    subject_key=authorized.stored.consent.subject_key,
                ),
            )
            for call in calls
        ]
        replies = await self._router.fan_out(queries)
        results = [node_result(reply) for reply in replies]
        profile = assemble(authorized, results, self._key, self._clock())
        self._audit.append(
            AuditEntry(
                request_id=req.request_id,
                actor=req.requester_id,
                action="profile",
                outcome="assembled",
                purpose=vocab.purpose_name(req.purpose),
                consent_id=req.consent_id,
                subject_ref=req.subject_id,
                categories=vocab.category_names(authorized.categories),
                detail=" ".join(
                    f"{r.node_id}={pb.NodeStatus.Name(r.status).removeprefix('NODE_STATUS_')}"
                    f"({r.query_id})"
                    for r in results
                ),
            )
        )
        return pb.GetProfileResponse(profile=profile)

    def _plan(self, authorized: AuthorizedProfileRequest) -> list[NodeCall]:
        """The nodes that know this subject and serve some asked category."""
        wanted = set(authorized.categories)
        calls = []
        for node_id, local_id in sorted(
            self._locator.locate(authorized.request.subject_id).items()
        ):
            node = self._registry.get(node_id)
            if node is None or not node.active:
                continue
            categories = tuple(c for c in node.categories if c in wanted)
            if categories:
                calls.append(NodeCall(node=node, local_id=local_id, categories=categories))
        return calls

    def _audit_refusal(self, request: pb.GetProfileRequest, err: CredexError) -> None:
        try:
            claimed = parse(request.request.body, ProfileRequest, what="profile request")
        except CredexError:
            claimed = ProfileRequest()
        self._audit.append(
            AuditEntry(
                request_id=claimed.request_id[:128],
                actor=claimed.requester_id[:128],
                action="profile",
                outcome=f"refused:{err.reason}",
                consent_id=claimed.consent_id[:128],
                subject_ref=claimed.subject_id[:128],
                detail=err.message,
            )
        )
