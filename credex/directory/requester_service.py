"""Profiles for requesters on the member port: verify the signed request and its consent,
route one query to each node that holds the subject's data, assemble and sign what they
answer, and record every step."""

from __future__ import annotations

from typing import Any

import grpc

from credex.directory.assembly import (
    NOTHING_DISCLOSED,
    assemble,
    disclosed,
    node_result,
    within_total,
)
from credex.directory.locator import Locator
from credex.directory.registry import Registry
from credex.directory.router import NodeCall, Router
from credex.directory.scoring import Policy
from credex.directory.verify import (
    AuthorizedProfileRequest,
    RequestVerifier,
    file_refusal,
    safe_request_id,
)
from credex.protocol import vocab
from credex.protocol.clock import Clock
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.keys import SigningKey
from credex.protocol.signing import digest, parse
from credex.protocol.tickets import claimed_ticket
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.handlers import RpcRuntime, rpc_handler
from credex.runtime.peers import peer_member_id, peer_or_unknown
from credex.runtime.ratelimit import RateLimiter
from credex.v1 import requester_pb2, requester_pb2_grpc
from credex.v1.requester_pb2 import ProfileRequest

Context = grpc.aio.ServicerContext[Any, Any]


class RequesterService(requester_pb2_grpc.RequesterServiceServicer):
    def __init__(
        self,
        *,
        runtime: RpcRuntime,
        key: SigningKey,
        registry: Registry,
        locator: Locator,
        verifier: RequestVerifier,
        router: Router,
        audit: AuditLog,
        clock: Clock,
        limiter: RateLimiter,
        policy: Policy,
        max_profile_bytes: int,
    ) -> None:
        self.runtime = runtime  # see rpc_handler
        self._refusals = runtime.callers.recorder  # refusals that were read, counted too
        self._max_profile_bytes = max_profile_bytes
        self._policy = policy
        self._key = key
        self._limiter = limiter
        self._registry = registry
        self._locator = locator
        self._verifier = verifier
        self._router = router
        self._audit = audit
        self._clock = clock

    @rpc_handler
    async def GetProfile(
        self, request: requester_pb2.GetProfileRequest, context: Context
    ) -> requester_pb2.GetProfileResponse:
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
        await self.runtime.storage.durable()
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
                result.node_id,
                requester_pb2.NodeStatus.Name(result.status).removeprefix("NODE_STATUS_"),
            ).inc()
        profile = assemble(authorized, results, self._key, self._clock(), self._policy)
        delivered = disclosed(results)
        with self.runtime.storage.unit():  # every entry of this request: one unit of work
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
                        outcome=requester_pb2.NodeStatus.Name(result.status).removeprefix(
                            "NODE_STATUS_"
                        ),
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
                        f"{r.node_id}={requester_pb2.NodeStatus.Name(r.status).removeprefix('NODE_STATUS_')}"
                        f"({r.query_id})"
                        for r in results
                    ),
                )
            )
        return requester_pb2.GetProfileResponse(profile=profile)

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
        self, request: requester_pb2.GetProfileRequest, err: CredexError, context: Context
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
