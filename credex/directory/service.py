"""The directory's gRPC service: verify, route, assemble, record."""

from __future__ import annotations

from typing import Any

import grpc
import sqlite_utils

from credex.directory.assembly import (
    NOTHING_DISCLOSED,
    assemble,
    disclosed,
    node_result,
    within_total,
)
from credex.directory.disputes import DisputeDesk
from credex.directory.identity import IdentityDesk
from credex.directory.locator import Locator
from credex.directory.publication import Publisher
from credex.directory.registry import Registry
from credex.directory.router import NodeCall, Router
from credex.directory.scoring import Policy
from credex.directory.verify import (
    AuthorizedProfileRequest,
    RequestVerifier,
    file_refusal,
    safe_request_id,
    signer_key,
)
from credex.directory.witness import NodeCheckpoints
from credex.protocol import vocab
from credex.protocol.clock import Clock, from_timestamp
from credex.protocol.endpoints import EndpointError, EndpointPolicy
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.keys import SigningKey
from credex.protocol.signing import digest, open_signed, parse
from credex.protocol.tickets import claimed_ticket
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.db import transaction, unreadable
from credex.runtime.handlers import RpcRuntime, rpc_handler
from credex.runtime.peers import peer_identity, peer_member_id, peer_or_unknown, require_peer
from credex.runtime.ratelimit import RateLimiter
from credex.v1 import directory_pb2 as pb
from credex.v1 import directory_pb2_grpc
from credex.v1.consent_pb2 import ConsentStatus
from credex.v1.directory_pb2 import ProfileRequest

Context = grpc.aio.ServicerContext[Any, Any]
S = ConsentStatus
ANNOUNCE_MAX_AGE_S = 300.0
MAX_SEQ = 2**63 - 1  # SQLite integers are signed 64-bit


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
        db: sqlite_utils.Database,
        limiter: RateLimiter,
        publisher: Publisher,
        identity: IdentityDesk,
        endpoints: EndpointPolicy,
        directory_id: str,
        policy: Policy,
        disputes: DisputeDesk,
        runtime: RpcRuntime,
        witness: NodeCheckpoints,
        max_profile_bytes: int,
    ) -> None:
        self.runtime = runtime  # see rpc_handler
        self._witness = witness  # nodes' audit checkpoints, kept here
        self._refusals = runtime.callers.recorder  # refusals that were read, counted too
        self._max_profile_bytes = max_profile_bytes
        self._identity = identity
        self._endpoints = endpoints
        self._disputes = disputes
        self._policy = policy
        self._directory_id = directory_id
        self._key = key
        self._db = db
        self._limiter = limiter
        self._publisher = publisher
        self._registry = registry
        self._locator = locator
        self._verifier = verifier
        self._router = router
        self._audit = audit
        self._clock = clock

    def health_problem(self) -> str | None:
        """Why the directory should not be sent requests now: its database is unusable or
        the disk failed to sync it."""
        if self.runtime.commits.failure is not None:
            return self.runtime.commits.failure
        problem = unreadable(self._db.conn)
        return f"directory database unusable: {problem}" if problem else None

    @rpc_handler
    async def Announce(self, request: pb.AnnounceRequest, context: Context) -> pb.AnnounceResponse:
        """A node's new address, signed by the node and sent with its own certificate."""
        claimed = parse(request.announcement.body, pb.NodeAnnouncement, what="announcement")
        node = self._registry.get(claimed.node_id)
        if node is None or node.role != pb.MemberRole.MEMBER_ROLE_NODE:
            raise refused(Reason.UNKNOWN_SIGNER, f"no node {claimed.node_id!r}")
        if not node.active:
            raise refused(Reason.MEMBER_SUSPENDED, f"{node.member_id} is {node.status_name}")
        announcement = open_signed(
            request.announcement,
            pb.NodeAnnouncement,
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
        self._registry.set_endpoint(node.member_id, announcement.endpoint)
        return pb.AnnounceResponse()

    @rpc_handler
    async def RotateKey(
        self, request: pb.RotateKeyRequest, context: Context
    ) -> pb.RotateKeyResponse:
        """A new signing key and certificate for the caller (see IdentityDesk.rotate)."""
        return self._identity.rotate(request, context)

    @rpc_handler
    async def ResolveDispute(
        self, request: pb.ResolveDisputeRequest, context: Context
    ) -> pb.ResolveDisputeResponse:
        """A node's decision about a dispute on one of its records, signed by that node."""
        claimed = parse(request.resolution.body, pb.DisputeResolution, what="resolution")
        node = self._registry.get(claimed.node_id)
        if node is None or node.role != pb.MemberRole.MEMBER_ROLE_NODE or not node.active:
            raise refused(Reason.UNKNOWN_SIGNER, f"{claimed.node_id!r} is not an active node")
        resolution = open_signed(
            request.resolution,
            pb.DisputeResolution,
            signer_key(node, request.resolution, self._clock()),
            what="resolution",
        )
        require_peer(context, node.member_id)
        with transaction(self._db):  # the decision and its audit entry: both or neither
            state = self._disputes.resolve(resolution)
            self._audit.append(
                AuditEntry(
                    request_id=resolution.dispute_id,
                    actor=node.member_id,
                    action="dispute",
                    outcome=pb.DisputeStatus.Name(state.status)
                    .removeprefix("DISPUTE_STATUS_")
                    .lower(),
                    node_id=node.member_id,
                    detail=resolution.note,
                )
            )
        return pb.ResolveDisputeResponse(dispute=state)

    @rpc_handler
    async def WitnessNodeCheckpoint(
        self, request: pb.WitnessNodeCheckpointRequest, context: Context
    ) -> pb.WitnessNodeCheckpointResponse:
        """Keep the calling node's newest audit checkpoint as a witness copy."""
        return self._witness.accept(request, context)

    @rpc_handler
    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Context
    ) -> pb.ListMembersResponse:
        self._active_peer(context)
        return pb.ListMembersResponse(
            members=[m.to_proto() for m in self._registry.all()],
            directory_public_key=self._key.public.raw,
        )

    @rpc_handler
    async def GetRegistry(
        self, request: pb.GetRegistryRequest, context: Context
    ) -> pb.GetRegistryResponse:
        self._active_peer(context)
        return self._publisher.registry(request.known_version)

    @rpc_handler
    async def GetRevocations(
        self, request: pb.GetRevocationsRequest, context: Context
    ) -> pb.GetRevocationsResponse:
        peer = self._active_peer(context)
        node = self._registry.get(peer)
        if node is None or node.role != pb.MemberRole.MEMBER_ROLE_NODE:
            raise refused(Reason.WRONG_ROLE, "only nodes follow a feed, each its own tickets'")
        if request.after_seq > MAX_SEQ:
            raise refused(Reason.MALFORMED, "after_seq is beyond any sequence number")
        return pb.GetRevocationsResponse(feed=self._publisher.feed(peer, request.after_seq))

    @rpc_handler
    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        try:
            peer = peer_member_id(context)
            wait = self._limiter.take(peer)
            if wait:
                raise refused(
                    Reason.RATE_LIMITED,
                    f"more than {self._limiter.rate_per_s:g} profile requests a second",
                    retry_after_s=wait,
                )
            authorized = self._verifier.profile_request(request.request, peer=peer)
        except CredexError as err:
            self._audit_refusal(request, err, context)
            raise
        # The nonce, the quota and the consent's use are on disk before any node discloses.
        await self.runtime.commits.flush()
        calls = self._plan(authorized)
        req = authorized.request
        queries = [
            (
                call,
                *self._router.build_query(call, requester_id=req.requester_id, purpose=req.purpose),
            )
            for call in calls
        ]
        replies = await self._router.fan_out(queries)
        now = self._clock()
        results = [node_result(reply, now) for reply in replies]
        within_total(results, self._max_profile_bytes)
        for result in results:
            self.runtime.metrics.node_answers.labels(
                result.node_id, pb.NodeStatus.Name(result.status).removeprefix("NODE_STATUS_")
            ).inc()
        profile = assemble(authorized, results, self._key, self._clock(), self._policy)
        delivered = disclosed(results)
        with transaction(self._db):  # every entry of this request in one durable commit
            if not delivered:  # nothing reached the requester: the use and quota unit return
                self._verifier.give_back(authorized)
            # One entry per node query, linked to the profile request, with the digests of the
            # query sent and of the node's verified answer (reconcile compares both).
            for reply, result in zip(replies, results, strict=True):
                self._audit.append(
                    AuditEntry(
                        request_id=result.query_id,
                        link=req.request_id,
                        actor=req.requester_id,
                        action="query",
                        outcome=pb.NodeStatus.Name(result.status).removeprefix("NODE_STATUS_"),
                        purpose=vocab.purpose_name(req.purpose),
                        consent_id=req.consent_id,
                        categories=vocab.category_names(result.categories),
                        node_id=result.node_id,
                        detail=result.detail,
                        disclosed_digest=digest(result.answer).hex() if result.answer.body else "",
                        query_digest=digest(reply.query).hex(),
                    )
                )
            self._audit.append(
                AuditEntry(
                    request_id=req.request_id,
                    actor=req.requester_id,
                    action="profile",
                    outcome="assembled" if delivered else NOTHING_DISCLOSED,
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

    def _active_peer(self, context: Context) -> str:
        """The caller, who must be a member in good standing (a valid certificate is not
        enough once a member is suspended or removed) or the directory's own operator."""
        identity = peer_identity(context)
        peer = identity.member_id
        if identity.directory and peer == self._directory_id:
            return peer
        member = self._registry.get(peer)
        if member is None or not member.active:
            status = member.status_name if member else "not a member"
            raise refused(Reason.MEMBER_SUSPENDED, f"{peer!r} is {status}")
        return peer

    def _plan(self, authorized: AuthorizedProfileRequest) -> list[NodeCall]:
        """The nodes that know this subject, hold a ticket of the consent for some asked
        category, and are attested the key that signed it. A node without a ticket is not
        asked: the subject gave it no permission of its own."""
        wanted = set(authorized.categories)
        tickets = authorized.stored.tickets
        calls = []
        for node_id, holding in sorted(
            self._locator.holdings(authorized.request.subject_id).items()
        ):
            node = self._registry.get(node_id)
            ticket = tickets.get(node_id)
            if node is None or not node.active or ticket is None or holding.node_key is None:
                continue
            if ticket.key_id != holding.node_key.key_id:
                continue  # signed by a key the subject has since replaced: no longer served
            granted = set(claimed_ticket(ticket).categories)
            categories = tuple(c for c in node.categories if c in wanted and c in granted)
            if categories:
                calls.append(
                    NodeCall(
                        node=node,
                        local_id=holding.local_id,
                        categories=categories,
                        node_key=holding.node_key.raw,
                        ticket=ticket,
                    )
                )
        return calls

    def _audit_refusal(
        self, request: pb.GetProfileRequest, err: CredexError, context: Context
    ) -> None:
        """Log a refused profile request under the caller its certificate proves; what the
        request claims is filed under the subject only once its signature checked out.
        Repeated refusals are counted, not written one by one (see RefusalRecorder)."""
        try:
            claimed = parse(
                request.request.body, ProfileRequest, what="profile request", strict=False
            )
        except CredexError:
            claimed = ProfileRequest()
        peer = peer_or_unknown(context)
        filing = file_refusal(
            err,
            claimed.subject_id,
            f"requester {claimed.requester_id[:64]!r}, subject {claimed.subject_id[:64]!r}",
            signed_by_subject=False,
        )
        self._refusals.record(
            AuditEntry(
                # a request id outside the safe alphabet is never filed as it is
                request_id=claimed.request_id if safe_request_id(claimed.request_id) else "",
                actor=peer,
                action="profile",
                outcome=f"refused:{err.reason}",
                purpose=vocab.purpose_name(claimed.purpose) if claimed.purpose else "",
                categories=vocab.category_names(claimed.categories[:16]),
                consent_id=claimed.consent_id[:128],
                subject_ref=filing.subject_ref,
                detail=filing.detail,
            )
        )
