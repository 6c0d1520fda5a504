"""The directory's gRPC service: verify, route, assemble, record."""

from __future__ import annotations

from typing import Any

import grpc

from credex import vocab
from credex.audit import AuditEntry, AuditLog
from credex.clock import Clock
from credex.errors import CredexError, PermissionDenied, Reason, rpc_errors
from credex.keys import SigningKey
from credex.signing import parse
from credex.v1 import directory_pb2 as pb
from credex.v1 import directory_pb2_grpc
from credex.v1.consent_pb2 import ConsentStatus
from credex.v1.directory_pb2 import ProfileRequest
from directory.assembly import assemble, node_result
from directory.consent_store import ConsentStore
from directory.locator import Locator
from directory.registry import Registry
from directory.router import NodeCall, Router
from directory.verify import AuthorizedProfileRequest, RequestVerifier

Context = grpc.aio.ServicerContext[Any, Any]
S = ConsentStatus


class DirectoryService(directory_pb2_grpc.DirectoryServiceServicer):
    def __init__(
        self,
        *,
        key: SigningKey,
        registry: Registry,
        locator: Locator,
        consents: ConsentStore,
        verifier: RequestVerifier,
        router: Router,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self._key = key
        self._registry = registry
        self._locator = locator
        self._consents = consents
        self._verifier = verifier
        self._router = router
        self._audit = audit
        self._clock = clock

    @rpc_errors
    async def GrantConsent(
        self, request: pb.GrantConsentRequest, context: Context
    ) -> pb.GrantConsentResponse:
        consent = self._verifier.consent_grant(request.consent, request.subject_id)
        self._consents.add(consent, request.consent, request.subject_id, self._clock())
        self._audit.append(
            AuditEntry(
                request_id=consent.consent_id,
                actor=request.subject_id,
                action="grant",
                outcome="granted",
                purpose=vocab.purpose_name(consent.purpose),
                consent_id=consent.consent_id,
                subject_ref=request.subject_id,
                categories=vocab.category_names(consent.categories),
                detail=f"requester={consent.requester_id} max_uses={consent.max_uses}",
            )
        )
        return pb.GrantConsentResponse(
            consent_id=consent.consent_id, status=S.CONSENT_STATUS_ACTIVE
        )

    @rpc_errors
    async def RevokeConsent(
        self, request: pb.RevokeConsentRequest, context: Context
    ) -> pb.RevokeConsentResponse:
        revocation = self._verifier.revocation(request.revocation)
        now = self._clock()
        stored = self._consents.get(revocation.consent_id, now)
        if stored.subject_id != revocation.subject_id:
            raise PermissionDenied(Reason.SUBJECT_MISMATCH, "not this subject's consent")
        self._consents.set_status(revocation.consent_id, S.CONSENT_STATUS_REVOKED, now)
        self._audit.append(
            AuditEntry(
                request_id=revocation.consent_id,
                actor=revocation.subject_id,
                action="revoke",
                outcome="revoked",
                consent_id=revocation.consent_id,
                subject_ref=revocation.subject_id,
            )
        )
        return pb.RevokeConsentResponse(
            consent_id=revocation.consent_id, status=S.CONSENT_STATUS_REVOKED
        )

    @rpc_errors
    async def ListConsents(
        self, request: pb.ListConsentsRequest, context: Context
    ) -> pb.ListConsentsResponse:
        query = self._verifier.consent_list_query(request.query)
        return pb.ListConsentsResponse(
            consents=[
                pb.ConsentState(consent=s.signed, status=s.status, uses=s.uses)
                for s in self._consents.for_subject(query.subject_id, self._clock())
            ]
        )

    @rpc_errors
    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Context
    ) -> pb.ListMembersResponse:
        return pb.ListMembersResponse(
            members=[
                pb.Member(
                    member_id=m.member_id,
                    role=m.role,
                    name=m.name,
                    jurisdiction=m.jurisdiction,
                    categories=m.categories,
                    public_key=m.key.raw,
                    key_id=m.key.key_id,
                    endpoint=m.endpoint,
                )
                for m in self._registry.all()
            ],
            directory_public_key=self._key.public.raw,
        )

    @rpc_errors
    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        try:
            authorized = self._verifier.profile_request(request.request)
        except CredexError as err:
            self._audit_refusal(request, err)
            raise
        calls = self._plan(authorized)
        req = authorized.request
        queries = [
            (
                call,
                self._router.build_query(
                    call,
                    request_id=req.request_id,
                    requester_id=req.requester_id,
                    purpose=req.purpose,
                    consent=authorized.stored.signed,
                    subject_key=authorized.stored.consent.subject_key,
                ),
            )
            for call in calls
        ]
        replies = await self._router.fan_out(queries)
        results = [node_result(reply, req.request_id) for reply in replies]
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
            if node is None:
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
