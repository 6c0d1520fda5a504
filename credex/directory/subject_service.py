"""The subject-facing service on the directory's public port: consents, signed by subjects."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from credex.directory.assembly import NOTHING_DISCLOSED
from credex.directory.config import SubjectLimits
from credex.directory.consent_store import ConsentStore, stale_change
from credex.directory.disputes import DisputeDesk
from credex.directory.locator import Locator
from credex.directory.publication import Publisher
from credex.directory.registry import Registry
from credex.directory.verify import MAX_SUBJECT_REQUEST_AGE_S, SR, RequestVerifier, file_refusal
from credex.protocol import vocab
from credex.protocol.clock import Clock, from_timestamp, to_timestamp
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.keys import VerifyKey
from credex.protocol.signing import parse
from credex.protocol.tickets import MAX_TICKETS, require_whole_hours
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.freshness import CLOCK_SKEW_S
from credex.runtime.handlers import RpcRuntime, rpc_handler
from credex.runtime.ratelimit import RateLimiter
from credex.v1 import dispute_pb2, subject_pb2, subject_pb2_grpc
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import Consent, ConsentPause, ConsentRevocation, ConsentStatus

Context = grpc.aio.ServicerContext[Any, Any]
S = ConsentStatus
R = TypeVar("R")
# Access log pages: records per page by default and at most, and bytes at most (a page stops
# early rather than grow past it); the consents listed with the first page.
ACCESS_PAGE_SIZE = 50
MAX_ACCESS_PAGE_SIZE = 200
MAX_ACCESS_PAGE_BYTES = 1024 * 1024
ACCESS_LOG_CONSENTS = 100
# Profile requests whose node queries are in the log (authorised ones: their ids are unique).
AUTHORISED_OUTCOMES = ("assembled", NOTHING_DISCLOSED)
# How long the directory remembers an order that repeated a consent's status: as long as an
# order signed before it can still arrive fresh.
REPEAT_MEMORY_S = MAX_SUBJECT_REQUEST_AGE_S + CLOCK_SKEW_S
MAX_REPEATS_REMEMBERED = 100_000
_TRANSITIONS = {
    S.CONSENT_STATUS_ACTIVE: (S.CONSENT_STATUS_PAUSED, S.CONSENT_STATUS_REVOKED),
    S.CONSENT_STATUS_PAUSED: (S.CONSENT_STATUS_ACTIVE, S.CONSENT_STATUS_REVOKED),
}


def status_name(status: ConsentStatus.ValueType) -> str:
    return ConsentStatus.Name(status).removeprefix("CONSENT_STATUS_").lower()


def audited(
    action: str, field: str, message_type: type[Message]
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Audit a subject-service handler's refusals (counted, see RefusalRecorder); `field` is
    the request's signed message, of `message_type`."""

    def wrap(handler: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(handler)
        async def wrapper(self: SubjectService, request: Any, context: Context) -> R:
            try:
                return await handler(self, request, context)
            except CredexError as err:
                self.record_refusal(action, err, request, getattr(request, field), message_type)
                raise

        return wrapper

    return wrap


class RepeatedOrders:
    """When the subject last signed an order repeating each consent's status. A repeat writes
    nothing, yet an order signed before it must not undo it (a held-back "resume" after a
    repeated "pause"): so it is kept here, in memory, for REPEAT_MEMORY_S (after that any
    earlier order is stale anyway), for at most `max_kept` consents (the oldest forgotten
    first). A restart forgets them: an order held back across it can still apply, while fresh."""

    def __init__(self, clock: Clock, max_kept: int = MAX_REPEATS_REMEMBERED) -> None:
        self._clock = clock
        self._max_kept = max_kept
        self._signed: dict[str, float] = {}  # consent id -> signed at, oldest noted first

    def last(self, consent_id: str) -> float:
        """When the latest repeat remembered for `consent_id` was signed; 0 if none."""
        return self._signed.get(consent_id, 0.0)

    def note(self, consent_id: str, signed_at: float) -> None:
        signed_at = max(signed_at, self._signed.pop(consent_id, 0.0))
        self._signed[consent_id] = signed_at
        now = self._clock()
        while self._signed:  # oldest noted first: stop at the first still needed
            oldest = next(iter(self._signed))
            needed = self._signed[oldest] + REPEAT_MEMORY_S >= now
            if needed and len(self._signed) <= self._max_kept:
                break
            del self._signed[oldest]


class SubjectService(subject_pb2_grpc.SubjectServiceServicer):
    def __init__(
        self,
        *,
        limits: SubjectLimits,
        consents: ConsentStore,
        verifier: RequestVerifier,
        audit: AuditLog,
        clock: Clock,
        publisher: Publisher,
        disputes: DisputeDesk,
        runtime: RpcRuntime,
        locator: Locator,
        registry: Registry,
    ) -> None:
        self._locator = locator
        self._registry = registry
        self.runtime = runtime  # see rpc_handler
        self._refusals = runtime.callers.recorder  # refusals that were read, counted too
        self._publisher = publisher
        self._disputes = disputes
        self._consents = consents
        self._verifier = verifier
        self._audit = audit
        self._clock = clock
        self._limits = limits
        # Calls per subject, charged once the subject's signature checked out (nobody else
        # can spend a subject's budget) and before anything is written.
        self._limiter = RateLimiter(limits.rate_per_s, limits.burst, clock)
        self._repeats = RepeatedOrders(clock)

    def _subject_call(self, signed: Signed, message_type: type[SR], what: str) -> SR:
        """A subject's signed, fresh, unused message (RequestVerifier.subject_request), charged
        to the subject's rate; its nonce is not spent yet."""
        message = self._verifier.subject_request(signed, message_type, what)
        self._charge(message.subject_id)
        return message

    def _spent(self, signed: Signed, message_type: type[SR], what: str) -> SR:
        """Like `_subject_call`, the nonce spent: for calls that change nothing else."""
        message = self._subject_call(signed, message_type, what)
        with self.runtime.storage.unit():
            self._verifier.spend_nonce(message)
        return message

    def _charge(self, subject_id: str) -> None:
        wait = self._limiter.take(subject_id)
        if wait:
            raise refused(
                Reason.RATE_LIMITED,
                f"more than {self._limiter.rate_per_s:g} calls a second from one subject "
                f"(bursts of {self._limiter.burst:g})",
                retry_after_s=wait,
            )

    def record_refusal(
        self,
        action: str,
        err: CredexError,
        request: Any,
        signed: Signed,
        message_type: type[Message],
    ) -> None:
        """Audit a refused subject request: under the subject its signed message names once
        the signature checked out, else under nobody (the claim is quoted in the detail)."""
        try:
            claimed = parse(signed.body, message_type, what=action, strict=False)
        except CredexError:
            claimed = message_type()
        subject_id = str(getattr(claimed, "subject_id", "") or getattr(request, "subject_id", ""))
        self._file_refusal(action, err, subject_id, str(getattr(claimed, "consent_id", "")))

    def _file_refusal(
        self, action: str, err: CredexError, subject_id: str, consent_id: str
    ) -> None:
        """Audit a refusal under `subject_id` once the subject's signature checked out, else
        under nobody (the claim is quoted in the detail); counted, see RefusalRecorder."""
        filing = file_refusal(err, subject_id, repr(subject_id[:64]), signed_by_subject=True)
        self._refusals.record(
            AuditEntry(
                request_id="",
                actor=filing.subject_ref if filing.proven else "(unproven subject)",
                action=action,
                outcome=f"refused:{err.reason}",
                consent_id=consent_id[:128],
                subject_ref=filing.subject_ref,
                detail=filing.detail,
            )
        )

    @rpc_handler
    @audited("grant", "consent", Consent)
    async def GrantConsent(
        self, request: subject_pb2.GrantConsentRequest, context: Context
    ) -> subject_pb2.GrantConsentResponse:
        consent = self._verifier.consent_grant(request.consent, request.subject_id)
        # A consent granted before (a node or requester holds its signed form) is refused
        # before it costs the subject anything.
        self._consents.require_new(consent.consent_id)
        self._charge(request.subject_id)  # before the tickets' signatures: up to 64 of them
        if request.tickets:
            require_whole_hours(consent)
        tickets = self._verifier.tickets(request.subject_id, consent, list(request.tickets))
        now = self._clock()
        with self.runtime.storage.unit():  # the consent and its audit entry: both or neither
            held = self._consents.held(request.subject_id, now)
            if held >= self._limits.max_consents:
                raise refused(
                    Reason.CONSENT_LIMIT,
                    f"you hold {held} consents that are neither expired nor revoked, the most "
                    "the directory keeps; revoke one you no longer need",
                )
            self._consents.add(consent, request.consent, request.subject_id, now, tickets)
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
                    detail=f"requester={consent.requester_id} max_uses={consent.max_uses} "
                    f"tickets={','.join(sorted(tickets))}",
                )
            )
        return subject_pb2.GrantConsentResponse(
            consent_id=consent.consent_id,
            status=S.CONSENT_STATUS_ACTIVE,
            ticket_nodes=sorted(tickets),
        )

    @rpc_handler
    async def AddTickets(
        self, request: subject_pb2.AddTicketsRequest, context: Context
    ) -> subject_pb2.AddTicketsResponse:
        """More tickets for a live consent of the subject's (each signed by the subject's key
        for its node, so nobody else can add one); the same ticket again changes nothing."""
        try:
            return self._add_tickets(request)
        except CredexError as err:  # the tickets' signatures prove the subject, if any
            self._file_refusal("tickets", err, request.subject_id, request.consent_id)
            raise

    def _add_tickets(
        self, request: subject_pb2.AddTicketsRequest
    ) -> subject_pb2.AddTicketsResponse:
        now = self._clock()
        stored = self._consents.get(request.consent_id, now)
        if stored.subject_id != request.subject_id:
            raise refused(Reason.SUBJECT_MISMATCH, "not this subject's consent")
        tickets = self._verifier.tickets(request.subject_id, stored.consent, list(request.tickets))
        self._charge(request.subject_id)
        if stored.status in (S.CONSENT_STATUS_REVOKED, S.CONSENT_STATUS_EXPIRED):
            raise refused(
                Reason.CONSENT_STATE, f"a {status_name(stored.status)} consent takes no tickets"
            )
        current = self._current_tickets(request.subject_id, stored.tickets)
        # A ticket signed by a node key the subject has since replaced is served no more:
        # the subject replaces it. A current one is never replaced.
        new = {n: t for n, t in tickets.items() if n not in current}
        stale = [n for n in new if n in stored.tickets]
        seqs: dict[str, int] = {}
        with self.runtime.storage.unit():
            self._consents.add_tickets(request.consent_id, tickets, replace=stale)
            if new:
                self._audit.append(
                    AuditEntry(
                        request_id=request.consent_id,
                        actor=request.subject_id,
                        action="tickets",
                        outcome="added",
                        consent_id=request.consent_id,
                        subject_ref=request.subject_id,
                        detail=f"tickets={','.join(sorted(new))}",
                    )
                )
            if new and stored.status == S.CONSENT_STATUS_PAUSED:  # the new ones start paused
                seqs = self._consents.feed_status(request.consent_id, list(new), now)
        if seqs:
            self._publisher.push(seqs)
        return subject_pb2.AddTicketsResponse(ticket_nodes=sorted({*current, *tickets}))

    def _current_tickets(self, subject_id: str, tickets: dict[str, Signed]) -> set[str]:
        """The nodes whose ticket is signed by the subject's key registered for them now."""
        holdings = self._locator.holdings(subject_id)
        return {
            node_id
            for node_id, ticket in tickets.items()
            if (held := holdings.get(node_id)) is not None
            and held.node_key is not None
            and ticket.key_id == held.node_key.key_id
        }

    @rpc_handler
    @audited("holders", "query", subject_pb2.HolderListQuery)
    async def ListHolders(
        self, request: subject_pb2.ListHoldersRequest, context: Context
    ) -> subject_pb2.ListHoldersResponse:
        """The nodes that hold the subject's data, with the subject's key for each."""
        query = self._spent(request.query, subject_pb2.HolderListQuery, "holder query")
        return subject_pb2.ListHoldersResponse(holders=self._holders(query.subject_id))

    @rpc_handler
    @audited("node-keys", "registration", subject_pb2.NodeKeyRegistration)
    async def RegisterNodeKeys(
        self, request: subject_pb2.RegisterNodeKeysRequest, context: Context
    ) -> subject_pb2.RegisterNodeKeysResponse:
        """The subject's keys for nodes that hold their data, signed by the main key."""
        registration = self._subject_call(
            request.registration, subject_pb2.NodeKeyRegistration, "node key registration"
        )
        if len(registration.keys) > MAX_TICKETS:
            raise refused(Reason.MALFORMED, f"more than {MAX_TICKETS} keys")
        keys: dict[str, VerifyKey] = {}
        for entry in registration.keys:
            if entry.node_id in keys:
                raise refused(Reason.MALFORMED, f"two keys for {entry.node_id[:64]!r}")
            try:
                keys[entry.node_id] = VerifyKey(entry.public_key)
            except ValueError as exc:
                raise refused(Reason.MALFORMED, f"key for {entry.node_id[:64]!r}: {exc}") from None
        main = self._locator.subject_key(registration.subject_id)
        if main is not None and any(k.raw == main.raw for k in keys.values()):
            raise refused(
                Reason.MALFORMED, "a node key must not be your main key; derive one per node"
            )
        with self.runtime.storage.unit():
            self._verifier.spend_nonce(registration)
            self._locator.register_node_keys(registration.subject_id, keys)
            self._audit.append(
                AuditEntry(
                    request_id=f"keys-{registration.nonce.hex()[:32]}",
                    actor=registration.subject_id,
                    action="node-keys",
                    outcome="registered",
                    subject_ref=registration.subject_id,
                    detail=" ".join(f"{n}={k.key_id}" for n, k in sorted(keys.items())),
                )
            )
        return subject_pb2.RegisterNodeKeysResponse(holders=self._holders(registration.subject_id))

    def _holders(self, subject_id: str) -> list[subject_pb2.Holder]:
        holders = []
        for node_id, holding in sorted(self._locator.holdings(subject_id).items()):
            node = self._registry.get(node_id)
            if node is None or not node.active:
                continue
            holders.append(
                subject_pb2.Holder(
                    node_id=node_id,
                    name=node.name,
                    categories=node.categories,
                    key_id=holding.node_key.key_id if holding.node_key else "",
                )
            )
        return holders

    @rpc_handler
    @audited("consent-status", "revocation", ConsentRevocation)
    async def RevokeConsent(
        self, request: subject_pb2.RevokeConsentRequest, context: Context
    ) -> subject_pb2.RevokeConsentResponse:
        revocation = self._subject_call(request.revocation, ConsentRevocation, "revocation")
        self._change(revocation, S.CONSENT_STATUS_REVOKED)
        return subject_pb2.RevokeConsentResponse(
            consent_id=revocation.consent_id, status=S.CONSENT_STATUS_REVOKED
        )

    @rpc_handler
    @audited("consent-status", "pause", ConsentPause)
    async def PauseConsent(
        self, request: subject_pb2.PauseConsentRequest, context: Context
    ) -> subject_pb2.PauseConsentResponse:
        pause = self._subject_call(request.pause, ConsentPause, "pause")
        status = S.CONSENT_STATUS_PAUSED if pause.paused else S.CONSENT_STATUS_ACTIVE
        self._change(pause, status)
        return subject_pb2.PauseConsentResponse(consent_id=pause.consent_id, status=status)

    def _change(
        self, order: ConsentPause | ConsentRevocation, status: ConsentStatus.ValueType
    ) -> None:
        """Apply a subject's status change: the directory refuses at once, nodes hear of it by
        push once it is durable and by pull within their sync interval. The nonce, the status,
        the feed row and the audit entry are one unit of work. Repeating the current status
        writes nothing. A change signed before the last one (or before a repeat of it) is
        refused, so a held-back order cannot undo a later one."""
        with self.runtime.storage.unit():
            seqs = self._apply(order, status)
        if seqs:  # committed; the push waits for it to be durable
            self._publisher.push(seqs)

    def _apply(
        self, order: ConsentPause | ConsentRevocation, status: ConsentStatus.ValueType
    ) -> dict[str, int] | None:
        """The change's writes (inside the caller's unit of work): node id -> the sequence
        number of the change in that node's feed, or None when it repeats the current status."""
        consent_id, subject_id = order.consent_id, order.subject_id
        signed_at = from_timestamp(order.issued_at)
        stored = self._consents.get(consent_id, self._clock())
        if stored.subject_id != subject_id:
            raise refused(Reason.SUBJECT_MISMATCH, "not this subject's consent")
        if signed_at <= max(stored.last_change_signed_at, self._repeats.last(consent_id)):
            raise stale_change()
        if stored.status == status:
            self._repeats.note(consent_id, signed_at)
            return None
        allowed = _TRANSITIONS.get(stored.status, ())
        if status not in allowed:
            raise refused(
                Reason.CONSENT_STATE,
                f"a {status_name(stored.status)} consent cannot become {status_name(status)}",
            )
        self._verifier.spend_nonce(order)
        seqs = self._consents.set_status(consent_id, status, self._clock(), signed_at)
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
        return seqs

    @rpc_handler
    @audited("list-consents", "query", subject_pb2.ConsentListQuery)
    async def ListConsents(
        self, request: subject_pb2.ListConsentsRequest, context: Context
    ) -> subject_pb2.ListConsentsResponse:
        query = self._spent(request.query, subject_pb2.ConsentListQuery, "list query")
        return subject_pb2.ListConsentsResponse(consents=self._consent_states(query.subject_id))

    @rpc_handler
    @audited("access-log", "query", subject_pb2.AccessLogQuery)
    async def GetAccessLog(
        self, request: subject_pb2.GetAccessLogRequest, context: Context
    ) -> subject_pb2.GetAccessLogResponse:
        """One page of the profile requests about the subject, newest first, served or
        refused, with the nodes asked; the subject's consents come with the first page."""
        query = self._spent(request.query, subject_pb2.AccessLogQuery, "access query")
        size = min(query.page_size or ACCESS_PAGE_SIZE, MAX_ACCESS_PAGE_SIZE)
        before = _page_start(query.page_token)
        rows = list(
            self._audit.entries(
                "subject_ref = ? AND action = 'profile' AND seq < ?",
                (query.subject_id, before),
                newest_first=True,
                limit=size + 1,
            )
        )
        nodes: dict[str, list[subject_pb2.NodeAccess]] = {}
        # Node results belong to authorised requests only (their request ids are claimed, so
        # unique); a refused request may carry any id its sender chose.
        ids = [r["request_id"] for r in rows[:size] if r["outcome"] in AUTHORISED_OUTCOMES]
        if ids:
            marks = ", ".join("?" for _ in ids)
            for entry in self._audit.entries(f"action = 'query' AND link IN ({marks})", ids):
                nodes.setdefault(entry["link"], []).append(
                    subject_pb2.NodeAccess(
                        node_id=entry["node_id"],
                        status=entry["outcome"],
                        categories=entry["categories"],
                    )
                )
        response = subject_pb2.GetAccessLogResponse()
        if not query.page_token:  # the most recent consents, in at most half the page
            states = self._consent_states(query.subject_id, latest=ACCESS_LOG_CONSENTS)
            room, kept = MAX_ACCESS_PAGE_BYTES // 2, []
            for state in reversed(states):
                room -= state.ByteSize() + 8
                if room < 0:
                    break
                kept.append(state)
            response.consents.extend(reversed(kept))
        budget = MAX_ACCESS_PAGE_BYTES - response.ByteSize()
        for row in rows[:size]:
            record = subject_pb2.AccessRecord(
                request_id=row["request_id"],
                at=to_timestamp(row["at"]),
                requester_id=row["actor"],
                purpose=row["purpose"],
                consent_id=row["consent_id"],
                outcome=row["outcome"],
                categories=row["categories"],
                nodes=nodes.get(row["request_id"], []),
                count=row["count"],
            )
            budget -= record.ByteSize() + 8  # the field's tag and length
            if budget < 0 and response.records:
                break
            response.records.append(record)
        if len(response.records) < len(rows):
            response.next_page_token = str(rows[len(response.records) - 1]["seq"])
        return response

    @rpc_handler
    @audited("dispute", "dispute", dispute_pb2.Dispute)
    async def FileDispute(
        self, request: subject_pb2.FileDisputeRequest, context: Context
    ) -> subject_pb2.FileDisputeResponse:
        dispute = self._spent(request.dispute, dispute_pb2.Dispute, "dispute")
        state = await self._disputes.file(dispute)
        with self.runtime.storage.unit():
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
        return subject_pb2.FileDisputeResponse(dispute=state)

    @rpc_handler
    @audited("list-disputes", "query", subject_pb2.DisputeListQuery)
    async def ListDisputes(
        self, request: subject_pb2.ListDisputesRequest, context: Context
    ) -> subject_pb2.ListDisputesResponse:
        query = self._spent(request.query, subject_pb2.DisputeListQuery, "list query")
        return subject_pb2.ListDisputesResponse(
            disputes=self._disputes.for_subject(query.subject_id)
        )

    def _consent_states(self, subject_id: str, latest: int = -1) -> list[subject_pb2.ConsentState]:
        return [
            subject_pb2.ConsentState(
                consent=s.signed,
                status=s.status,
                uses=s.uses,
                ticket_nodes=sorted(self._current_tickets(subject_id, s.tickets)),
            )
            for s in self._consents.for_subject(subject_id, self._clock(), latest=latest)
        ]


MAX_SEQ = 2**63 - 1


def _page_start(token: str) -> int:
    """The sequence number a page starts below: the newest page starts below them all."""
    if not token:
        return MAX_SEQ
    if not token.isascii() or not token.isdigit() or len(token) > 19:
        raise refused(Reason.MALFORMED, "page_token is not one this directory gave")
    return int(token)
