"""The subject-facing service on the directory's public port: consents, signed by subjects."""

from __future__ import annotations

from typing import Any

import grpc

from credex import vocab
from credex.audit import AuditEntry, AuditLog, malformed_entry
from credex.clock import Clock, to_timestamp
from credex.errors import CredexError, FailedPrecondition, PermissionDenied, Reason
from credex.group_commit import GroupCommit
from credex.handlers import rpc_handler
from credex.metrics import Metrics
from credex.ratelimit import RateLimiter
from credex.transport import peer_or_unknown
from credex.v1 import directory_pb2 as pb
from credex.v1 import directory_pb2_grpc
from credex.v1.consent_pb2 import ConsentPause, ConsentRevocation, ConsentStatus
from directory.consent_store import ConsentStore
from directory.disputes import DisputeDesk
from directory.publication import Publisher
from directory.verify import RequestVerifier

Context = grpc.aio.ServicerContext[Any, Any]
S = ConsentStatus
_TRANSITIONS = {
    S.CONSENT_STATUS_ACTIVE: (S.CONSENT_STATUS_PAUSED, S.CONSENT_STATUS_REVOKED),
    S.CONSENT_STATUS_PAUSED: (S.CONSENT_STATUS_ACTIVE, S.CONSENT_STATUS_REVOKED),
}


def status_name(status: ConsentStatus.ValueType) -> str:
    return ConsentStatus.Name(status).removeprefix("CONSENT_STATUS_").lower()


class SubjectService(directory_pb2_grpc.SubjectServiceServicer):
    def __init__(
        self,
        *,
        consents: ConsentStore,
        verifier: RequestVerifier,
        audit: AuditLog,
        clock: Clock,
        publisher: Publisher,
        disputes: DisputeDesk,
        commits: GroupCommit,
        refusals: RateLimiter,
        metrics: Metrics,
    ) -> None:
        self.commits = commits  # see rpc_handler: flushed before every reply
        self.refusals = refusals  # see rpc_handler: callers refused too often are turned away
        self.metrics = metrics  # see rpc_handler: every answer counted
        self._publisher = publisher
        self._disputes = disputes
        self._consents = consents
        self._verifier = verifier
        self._audit = audit
        self._clock = clock

    def record_malformed(self, method: str, err: CredexError, context: Context) -> None:
        """Audit a request refused before it could be read (called by `rpc_handler`)."""
        peer = peer_or_unknown(context)
        self._audit.append(malformed_entry(method, err, peer, ""))

    @rpc_handler
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

    @rpc_handler
    async def RevokeConsent(
        self, request: pb.RevokeConsentRequest, context: Context
    ) -> pb.RevokeConsentResponse:
        revocation = self._verifier.subject_request(
            request.revocation, ConsentRevocation, "revocation"
        )
        self._change(revocation.consent_id, revocation.subject_id, S.CONSENT_STATUS_REVOKED)
        return pb.RevokeConsentResponse(
            consent_id=revocation.consent_id, status=S.CONSENT_STATUS_REVOKED
        )

    @rpc_handler
    async def PauseConsent(
        self, request: pb.PauseConsentRequest, context: Context
    ) -> pb.PauseConsentResponse:
        pause = self._verifier.subject_request(request.pause, ConsentPause, "pause")
        status = S.CONSENT_STATUS_PAUSED if pause.paused else S.CONSENT_STATUS_ACTIVE
        self._change(pause.consent_id, pause.subject_id, status)
        return pb.PauseConsentResponse(consent_id=pause.consent_id, status=status)

    def _change(self, consent_id: str, subject_id: str, status: ConsentStatus.ValueType) -> None:
        """Apply a subject's status change; the directory refuses at once, nodes hear of it
        by push now and by pull within their sync interval. Repeating a change does nothing."""
        now = self._clock()
        stored = self._consents.get(consent_id, now)
        if stored.subject_id != subject_id:
            raise PermissionDenied(Reason.SUBJECT_MISMATCH, "not this subject's consent")
        if stored.status == status:
            return
        allowed = _TRANSITIONS.get(stored.status, ())
        if status not in allowed:
            raise FailedPrecondition(
                Reason.CONSENT_STATE,
                f"a {status_name(stored.status)} consent cannot become {status_name(status)}",
            )
        seq = self._consents.set_status(consent_id, status, now)
        self._publisher.push(seq)
        self._audit.append(
            AuditEntry(
                request_id=consent_id,
                actor=subject_id,
                action="consent-status",
                outcome=status_name(status),
                consent_id=consent_id,
                subject_ref=subject_id,
            )
        )

    @rpc_handler
    async def ListConsents(
        self, request: pb.ListConsentsRequest, context: Context
    ) -> pb.ListConsentsResponse:
        query = self._verifier.subject_request(request.query, pb.ConsentListQuery, "list query")
        return pb.ListConsentsResponse(consents=self._consent_states(query.subject_id))

    @rpc_handler
    async def GetAccessLog(
        self, request: pb.GetAccessLogRequest, context: Context
    ) -> pb.GetAccessLogResponse:
        """Every profile request about the subject, served or refused, with the nodes asked."""
        query = self._verifier.subject_request(request.query, pb.AccessLogQuery, "access query")
        requests = list(
            self._audit.entries("subject_ref = ? AND action = 'profile'", (query.subject_id,))
        )
        nodes: dict[str, list[pb.NodeAccess]] = {}
        # Node results belong to assembled profiles only (their request ids are unique); a
        # refused request may carry any id its sender chose.
        ids = [r["request_id"] for r in requests if r["outcome"] == "assembled"]
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            marks = ", ".join("?" for _ in chunk)
            for entry in self._audit.entries(f"action = 'query' AND link IN ({marks})", chunk):
                nodes.setdefault(entry["link"], []).append(
                    pb.NodeAccess(
                        node_id=entry["node_id"],
                        status=entry["outcome"],
                        categories=entry["categories"],
                    )
                )
        return pb.GetAccessLogResponse(
            records=[
                pb.AccessRecord(
                    request_id=r["request_id"],
                    at=to_timestamp(r["at"]),
                    requester_id=r["actor"],
                    purpose=r["purpose"],
                    consent_id=r["consent_id"],
                    outcome=r["outcome"],
                    categories=r["categories"],
                    nodes=nodes.get(r["request_id"], []),
                )
                for r in requests
            ],
            consents=self._consent_states(query.subject_id),
        )

    @rpc_handler
    async def FileDispute(
        self, request: pb.FileDisputeRequest, context: Context
    ) -> pb.FileDisputeResponse:
        dispute = self._verifier.subject_request(request.dispute, pb.Dispute, "dispute")
        state = await self._disputes.file(dispute)
        self._audit.append(
            AuditEntry(
                request_id=dispute.dispute_id,
                actor=dispute.subject_id,
                action="dispute",
                outcome="filed",
                subject_ref=dispute.subject_id,
                node_id=dispute.node_id,
                categories=[vocab.category_name(dispute.category)],
                detail=f"record {dispute.record_id}",
            )
        )
        return pb.FileDisputeResponse(dispute=state)

    @rpc_handler
    async def ListDisputes(
        self, request: pb.ListDisputesRequest, context: Context
    ) -> pb.ListDisputesResponse:
        query = self._verifier.subject_request(request.query, pb.DisputeListQuery, "list query")
        return pb.ListDisputesResponse(disputes=self._disputes.for_subject(query.subject_id))

    def _consent_states(self, subject_id: str) -> list[pb.ConsentState]:
        return [
            pb.ConsentState(consent=s.signed, status=s.status, uses=s.uses)
            for s in self._consents.for_subject(subject_id, self._clock())
        ]
