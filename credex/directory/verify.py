"""Everything the directory checks on requests from requesters and subjects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from credex.directory.consent_store import ConsentStore, StoredConsent, require_active
from credex.directory.locator import Locator
from credex.directory.quotas import PurposeQuota
from credex.directory.registry import MemberInfo, Registry
from credex.directory.request_claims import RequestClaims
from credex.protocol import vocab
from credex.protocol.clock import Clock, from_timestamp
from credex.protocol.consents import check_covers, check_within_purpose, open_consent
from credex.protocol.errors import UNAUTHENTICATED_REASONS, CredexError, Reason, refused
from credex.protocol.keys import VerifyKey
from credex.protocol.signing import M, open_signed, parse
from credex.protocol.tickets import (
    MAX_TICKETS,
    check_ticket_matches,
    claimed_ticket,
    open_ticket,
    require_node_key,
)
from credex.runtime.freshness import CLOCK_SKEW_S, NonceStore, check_window
from credex.runtime.storage import Storage
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import Consent, ConsentPause, ConsentRevocation
from credex.v1.dispute_pb2 import Dispute
from credex.v1.member_pb2 import MemberRole
from credex.v1.requester_pb2 import ProfileRequest
from credex.v1.subject_pb2 import (
    AccessLogQuery,
    ConsentListQuery,
    DisputeListQuery,
    HolderListQuery,
    NodeKeyRegistration,
)

MAX_SUBJECT_REQUEST_AGE_S = 300.0
SR = TypeVar(
    "SR", ConsentRevocation, ConsentPause, ConsentListQuery, AccessLogQuery, Dispute,
    DisputeListQuery, HolderListQuery, NodeKeyRegistration,
)  # fmt: skip
SubjectMessage = (
    ConsentRevocation | ConsentPause | ConsentListQuery | AccessLogQuery | Dispute
    | DisputeListQuery | HolderListQuery | NodeKeyRegistration
)  # fmt: skip
MAX_CONSENT_LIFETIME_S = 2 * 366 * 24 * 3600.0
# Request ids requesters may choose: they are kept in audit logs and printed from there, so
# nothing that a terminal or a log reader could take for anything but an id.
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
REQUEST_ID_RULE = "request_id must be 1-128 characters of A-Z a-z 0-9 _ . : -"
# Refusals decided before a subject's signature checked out: for a message the subject signs,
# an unknown subject is an unknown signer.
SUBJECT_UNPROVEN = UNAUTHENTICATED_REASONS | {Reason.UNKNOWN_SUBJECT}


def safe_request_id(request_id: str) -> bool:
    """Whether `request_id` is one the directory takes (and may print as it is)."""
    return REQUEST_ID.fullmatch(request_id) is not None


@dataclass(frozen=True)
class RefusalFiling:
    """Where a refused request goes in the audit log."""

    proven: bool  # the sender's signature checked out before the refusal
    subject_ref: str  # the subject it is filed under, "" for nobody
    detail: str


def file_refusal(
    err: CredexError, subject_id: str, claims: str, *, signed_by_subject: bool
) -> RefusalFiling:
    """A refusal is filed under the subject its request names only once the sender's signature
    checked out; one decided before is filed under nobody, with `claims` (what the request
    says about itself, quoted) in the detail, so that nobody fills another's access log."""
    unproven = SUBJECT_UNPROVEN if signed_by_subject else UNAUTHENTICATED_REASONS
    if err.reason in unproven:
        return RefusalFiling(False, "", f"{err.message} (claimed: {claims})")
    return RefusalFiling(True, subject_id[:128], err.message)


def signer_key(member: MemberInfo, signed: Signed, now: float) -> VerifyKey:
    """The member's key that `signed` names: the current one, or a retired one still valid."""
    for key in member.keys_at(now):
        if key.key_id == signed.key_id:
            return key
    return member.key  # fails verification with a clear BAD_SIGNATURE


@dataclass(frozen=True)
class AuthorizedProfileRequest:
    request: ProfileRequest
    requester: MemberInfo
    stored: StoredConsent
    categories: tuple[vocab.Category, ...]
    # When it was authorised: the month its purpose quota was counted in.
    authorized_at: float


class RequestVerifier:
    def __init__(
        self,
        *,
        registry: Registry,
        locator: Locator,
        consents: ConsentStore,
        quotas: PurposeQuota,
        nonces: NonceStore,
        subject_nonces: NonceStore,
        storage: Storage,
        clock: Clock,
        max_request_lifetime_s: float,
        claims: RequestClaims,
    ) -> None:
        self._claims = claims
        self._registry = registry
        self._quotas = quotas
        self._storage = storage
        self._locator = locator
        self._consents = consents
        self._nonces = nonces
        self._subject_nonces = subject_nonces
        self._clock = clock
        self._max_lifetime = max_request_lifetime_s

    # --- requesters -----------------------------------------------------------------

    def requester(self, signed: Signed) -> MemberInfo:
        member = self._registry.by_key_id(signed.key_id, self._clock())
        if member is None:
            raise refused(Reason.UNKNOWN_REQUESTER, "request signed by an unknown key")
        if member.role != MemberRole.MEMBER_ROLE_REQUESTER:
            raise refused(Reason.WRONG_ROLE, f"{member.member_id} is not a requester")
        if not member.active:
            raise refused(Reason.MEMBER_SUSPENDED, f"{member.member_id} is {member.status_name}")
        return member

    def profile_request(self, signed: Signed, *, peer: str) -> AuthorizedProfileRequest:
        """Signature (by the member whose certificate `peer` names), freshness, nonce, request
        id, subject, consent state and coverage; counts one use. The nonce, the claim on the
        request id, the quota and the use are written in one unit of work: all or none."""
        now = self._clock()
        requester = self.requester(signed)
        request = open_signed(
            signed, ProfileRequest, signer_key(requester, signed, now), what="profile request"
        )
        if peer != requester.member_id:
            raise refused(
                Reason.PEER_MISMATCH,
                f"certificate is {peer!r} but the request is signed by {requester.member_id!r}",
            )
        if request.requester_id != requester.member_id:
            raise refused(
                Reason.UNKNOWN_SIGNER,
                f"request names {request.requester_id!r} but is signed by {requester.member_id}",
            )
        if not safe_request_id(request.request_id):
            raise refused(Reason.MALFORMED, REQUEST_ID_RULE)
        expires_at = from_timestamp(request.expires_at)
        check_window(
            from_timestamp(request.issued_at), expires_at, now, max_lifetime_s=self._max_lifetime
        )
        with self._storage.unit():
            self._nonces.use(request.nonce, expires_at, now)
            self._claims.claim(request.request_id, requester.member_id, now)
            if self._locator.subject_key(request.subject_id) is None:
                raise refused(Reason.UNKNOWN_SUBJECT, f"no subject {request.subject_id!r}")
            stored = self._consents.get(request.consent_id, now)
            if stored.subject_id != request.subject_id:
                raise refused(Reason.SUBJECT_MISMATCH, "consent is for another subject")
            require_active(stored)
            categories = tuple(request.categories) or tuple(stored.consent.categories)
            if len(set(categories)) != len(categories):
                raise refused(Reason.MALFORMED, "categories repeated")
            check_covers(
                stored.consent,
                requester_id=requester.member_id,
                purpose=request.purpose,
                categories=categories,
                now=now,
            )
            check_within_purpose(stored.consent)
            self._quotas.take(requester.member_id, request.subject_id, request.purpose, now)
            self._consents.use(stored.consent.consent_id, now)
        return AuthorizedProfileRequest(
            request=request,
            requester=requester,
            stored=stored,
            categories=categories,
            authorized_at=now,
        )

    def give_back(self, authorized: AuthorizedProfileRequest) -> None:
        """Undo the consent use and the quota unit of an authorised request that disclosed
        nothing (no node's answer could be delivered). Its nonce and request id stay spent.
        Call inside the unit of work that audits the request."""
        request = authorized.request
        self._quotas.give_back(
            authorized.requester.member_id,
            request.subject_id,
            request.purpose,
            authorized.authorized_at,
        )
        self._consents.give_back(request.consent_id)

    # --- subjects ---------------------------------------------------------------------

    def _subject_key(self, subject_id: str) -> VerifyKey:
        key = self._locator.subject_key(subject_id)
        if key is None:
            raise refused(Reason.UNKNOWN_SUBJECT, f"no subject {subject_id!r}")
        return key

    def _subject_signed(
        self, signed: Signed, message_type: type[M], subject_id: str, what: str
    ) -> M:
        return open_signed(signed, message_type, self._subject_key(subject_id), what=what)

    def consent_grant(self, signed: Signed, subject_id: str) -> Consent:
        """A consent signed by the registered key of `subject_id`, for a known requester,
        within its purpose, and not already over."""
        now = self._clock()
        registered = self._subject_key(subject_id)
        consent = open_consent(signed)
        if registered.raw != consent.subject_key:
            raise refused(
                Reason.BAD_SIGNATURE, "consent is not signed by the subject's registered key"
            )
        requester = self._registry.get(consent.requester_id)
        if (
            requester is None
            or requester.role != MemberRole.MEMBER_ROLE_REQUESTER
            or not requester.active
        ):
            raise refused(Reason.REQUESTER_NOT_FOUND, f"no requester {consent.requester_id!r}")
        check_within_purpose(consent)
        not_before, not_after = (
            from_timestamp(consent.not_before),
            from_timestamp(consent.not_after),
        )
        if not_after <= now:
            raise refused(Reason.CONSENT_EXPIRED, "consent is already expired")
        if not_after - not_before > MAX_CONSENT_LIFETIME_S:
            raise refused(Reason.MALFORMED, "a consent may last at most two years")
        return consent

    def tickets(
        self, subject_id: str, consent: Consent, signed_tickets: list[Signed]
    ) -> dict[str, tuple[str, Signed]]:
        """node id -> (ticket id, signed ticket) for tickets that are shares of `consent`, each
        signed by the subject's key registered for a node that holds the subject's data and
        serves the ticket's categories; at most one per node."""
        if len(signed_tickets) > MAX_TICKETS:
            raise refused(Reason.MALFORMED, f"more than {MAX_TICKETS} tickets")
        holdings = self._locator.holdings(subject_id)
        found: dict[str, tuple[str, Signed]] = {}
        for signed in signed_tickets:
            node_id = claimed_ticket(signed).node_id
            holding = holdings.get(node_id)
            node = self._registry.get(node_id)
            if holding is None or node is None or node.role != MemberRole.MEMBER_ROLE_NODE:
                raise refused(
                    Reason.MALFORMED,
                    f"a ticket for {node_id[:64]!r}, which holds none of your data",
                )
            if node_id in found:
                raise refused(Reason.MALFORMED, f"two tickets for {node_id}")
            key = require_node_key(holding.node_key, node_id)
            if signed.key_id != key.key_id:
                raise refused(
                    Reason.BAD_SIGNATURE,
                    f"the ticket for {node_id} is not signed by your key registered for it",
                )
            ticket = open_ticket(signed, key)
            check_ticket_matches(ticket, consent, node.categories)
            found[node_id] = (ticket.ticket_id, signed)
        return found

    def subject_request(self, signed: Signed, message_type: type[SR], what: str) -> SR:
        """A recent message signed by the registered key of the subject it names, whose nonce
        was not used (revocations, pauses, consent lists, access logs and disputes all carry
        subject_id, issued_at and a nonce). Nothing is written: the caller spends the nonce
        (`spend_nonce`) with the writes the message makes."""
        claimed = parse(signed.body, message_type, what=what)
        message = self._subject_signed(signed, message_type, claimed.subject_id, what)
        self._fresh_subject_message(from_timestamp(message.issued_at))
        self._subject_nonces.check_unused(message.nonce, scope=message.subject_id)
        return message

    def spend_nonce(self, message: SubjectMessage) -> None:
        """Record the nonce of a message `subject_request` took, until the message is no longer
        fresh: from now on it is a replay (REPLAY if it was spent meanwhile)."""
        fresh_until = from_timestamp(message.issued_at) + MAX_SUBJECT_REQUEST_AGE_S + CLOCK_SKEW_S
        self._subject_nonces.use(
            message.nonce, fresh_until, self._clock(), scope=message.subject_id
        )

    def _fresh_subject_message(self, issued_at: float) -> None:
        now = self._clock()
        if abs(now - issued_at) > MAX_SUBJECT_REQUEST_AGE_S + CLOCK_SKEW_S:
            raise refused(Reason.REQUEST_EXPIRED, "signed request is stale or from the future")
