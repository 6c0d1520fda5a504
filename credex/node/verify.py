"""Everything a node checks before it reads a single record for a query."""

from __future__ import annotations

from dataclasses import dataclass

from credex.node.directory_sync import DirectorySync
from credex.node.ticket_uses import TicketUses
from credex.protocol import vocab
from credex.protocol.clock import Clock, from_timestamp
from credex.protocol.consents import check_covers, check_within_purpose
from credex.protocol.errors import Reason, refused
from credex.protocol.keys import VerifyKey
from credex.protocol.signing import digest, open_signed
from credex.protocol.tickets import open_ticket
from credex.runtime.freshness import CLOCK_SKEW_S, NonceStore, check_window
from credex.v1.consent_pb2 import ConsentTicket, SubjectAttestation
from credex.v1.node_pb2 import NodeQuery, QueryRecordsRequest

MAX_QUERY_LIFETIME_S = 120.0
MAX_ATTESTATION_LIFETIME_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class VerifiedQuery:
    query: NodeQuery
    ticket: ConsentTicket
    digest: bytes


class QueryVerifier:
    """Checks, in order: directory signature, addressee, time window, nonce, the directory's
    attestation of the local id and the subject's key for this node, the subject's signature on
    this node's ticket with that key, that the ticket is for this node and covers this
    requester, purpose and every category (and stays within what its purpose allows), that it
    is neither revoked, paused nor used up, and that this node serves every category."""

    def __init__(
        self,
        *,
        node_id: str,
        directory_key: VerifyKey,
        served: frozenset[vocab.Category],
        nonces: NonceStore,
        sync: DirectorySync,
        uses: TicketUses,
        clock: Clock,
    ) -> None:
        self._sync = sync
        self._uses = uses
        self._node_id = node_id
        self._directory_key = directory_key
        self._served = served
        self._nonces = nonces
        self._clock = clock

    def verify(self, request: QueryRecordsRequest) -> VerifiedQuery:
        now = self._clock()
        query = open_signed(request.query, NodeQuery, self._directory_key, what="directory query")
        if query.node_id != self._node_id:
            raise refused(Reason.WRONG_NODE, f"query is for node {query.node_id!r}")
        expires_at = from_timestamp(query.expires_at)
        check_window(
            from_timestamp(query.issued_at), expires_at, now, max_lifetime_s=MAX_QUERY_LIFETIME_S
        )
        self._nonces.use(query.nonce, expires_at, now)

        attestation = open_signed(
            query.attestation,
            SubjectAttestation,
            self._directory_key,
            what="attestation",
            cache=True,
        )
        if attestation.node_id != self._node_id or (
            attestation.local_subject_id != query.local_subject_id
        ):
            raise refused(
                Reason.ATTESTATION_MISMATCH, "local id is not the one attested for this node"
            )
        issued, expires = (
            from_timestamp(attestation.issued_at),
            from_timestamp(attestation.expires_at),
        )
        if expires - issued > MAX_ATTESTATION_LIFETIME_S:
            raise refused(Reason.MALFORMED, "attestation is valid for too long")
        if not issued - CLOCK_SKEW_S <= now < expires:
            raise refused(Reason.ATTESTATION_EXPIRED, "attestation is not valid now")

        if not query.ticket.body:
            raise refused(Reason.MALFORMED, "query carries no ticket")
        try:
            subject_key = VerifyKey(attestation.subject_key)
        except ValueError as exc:
            raise refused(Reason.MALFORMED, f"attested subject key: {exc}") from None
        ticket = open_ticket(query.ticket, subject_key)
        if ticket.node_id != self._node_id:
            raise refused(Reason.WRONG_NODE, f"ticket is for node {ticket.node_id!r}")
        categories = list(query.categories)
        if not categories or len(set(categories)) != len(categories):
            raise refused(Reason.MALFORMED, "query categories empty or repeated")
        check_covers(
            ticket,
            requester_id=query.requester_id,
            purpose=query.purpose,
            categories=categories,
            now=now,
        )
        check_within_purpose(ticket)
        self._sync.check(query.requester_id, ticket.ticket_id)
        self._uses.check(ticket)
        unserved = [c for c in categories if c not in self._served]
        if unserved:
            raise refused(
                Reason.CATEGORY_NOT_SERVED,
                f"this node does not serve {', '.join(vocab.category_names(unserved))}",
            )
        return VerifiedQuery(query=query, ticket=ticket, digest=digest(request.query))
