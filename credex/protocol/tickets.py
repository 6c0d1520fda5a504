"""Per-node subject keys and consent tickets: what keeps two nodes from sharing any value about
a person that they could join their logs on.

A subject's device derives one Ed25519 key per node from its main key (`node_key`), registers
the public halves with the directory, and signs one `ConsentTicket` per node with that node's
key when it grants a consent. The directory keeps the consent; each node receives only its
ticket and the directory's attestation of which key belongs to its local id for the subject.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credex.protocol import vocab
from credex.protocol.clock import from_timestamp
from credex.protocol.errors import Reason, refused
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.signing import open_signed, parse, seal
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import Consent, ConsentTicket

# HKDF-SHA256 salt for per-node subject keys; the info is the node id in UTF-8.
NODE_KEY_SALT = b"credex-node-key-v1"
TICKET_ID_PREFIX = "t-"
MAX_TICKETS = 64  # per consent, and keys per registration: no subject's data is at more nodes
# Ticket and consent times are whole hours, so that the times two nodes see are shared with
# everyone who granted a consent in the same hour, not a fingerprint of one grant.
TIME_GRAIN_S = 3600.0


def node_key(main: SigningKey, node_id: str) -> SigningKey:
    """The subject's key for `node_id`: the Ed25519 key whose 32-byte seed is
    HKDF-SHA256(ikm = the main key's 32-byte seed, salt = NODE_KEY_SALT, info = node id)."""
    seed = main.private_seed()
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=NODE_KEY_SALT, info=node_id.encode()
    ).derive(seed)
    return SigningKey(Ed25519PrivateKey.from_private_bytes(derived))


class SubjectKeys:
    """A subject's main key and the per-node keys derived from it (each derived once)."""

    def __init__(self, main: SigningKey) -> None:
        self.main = main
        self._nodes: dict[str, SigningKey] = {}

    def for_node(self, node_id: str) -> SigningKey:
        key = self._nodes.get(node_id)
        if key is None:
            key = self._nodes[node_id] = node_key(self.main, node_id)
        return key


def coarse_window(not_before: float, not_after: float) -> tuple[float, float]:
    """[not_before, not_after] widened to whole hours (TIME_GRAIN_S)."""
    start = math.floor(not_before / TIME_GRAIN_S) * TIME_GRAIN_S
    end = math.ceil(not_after / TIME_GRAIN_S) * TIME_GRAIN_S
    return start, max(end, start + TIME_GRAIN_S)


def require_whole_hours(consent: Consent) -> None:
    """Refuse a consent whose validity does not start and end on whole hours (UTC): its
    tickets copy those times to every node, where exact times would be one grant's
    fingerprint."""
    for name in ("not_before", "not_after"):
        stamp = getattr(consent, name)
        if stamp.nanos or stamp.seconds % int(TIME_GRAIN_S):
            raise refused(
                Reason.MALFORMED,
                f"a consent with tickets must start and end on whole hours (UTC); {name} does not",
            )


def new_ticket_id() -> str:
    return TICKET_ID_PREFIX + os.urandom(16).hex()


def create_ticket(
    consent: Consent, key: SigningKey, node_id: str, categories: Iterable[vocab.Category]
) -> Signed:
    """One node's ticket for `consent`, for the `categories` it serves, signed by `key` (the
    subject's key for that node)."""
    ticket = ConsentTicket(
        ticket_id=new_ticket_id(),
        node_id=node_id,
        requester_id=consent.requester_id,
        purpose=consent.purpose,
        categories=sorted(set(categories)),
        not_before=consent.not_before,
        not_after=consent.not_after,
        max_uses=consent.max_uses,
    )
    if consent.HasField("data_from"):
        ticket.data_from.CopyFrom(consent.data_from)
    if consent.HasField("data_to"):
        ticket.data_to.CopyFrom(consent.data_to)
    return seal(ticket, key)


def tickets_for(
    consent: Consent, keys: SubjectKeys, served: Mapping[str, Iterable[vocab.Category]]
) -> list[Signed]:
    """A ticket for every node in `served` (node id -> the categories it serves) that serves
    some category of `consent`; none for the others."""
    wanted = set(consent.categories)
    tickets = []
    for node_id in sorted(served):
        categories = wanted.intersection(served[node_id])
        if categories:
            tickets.append(create_ticket(consent, keys.for_node(node_id), node_id, categories))
    return tickets


def claimed_ticket(signed: Signed) -> ConsentTicket:
    """A ticket's body before its signature is checked: only to find the key to check it with."""
    return parse(signed.body, ConsentTicket, what="ticket")


def open_ticket(signed: Signed, key: VerifyKey) -> ConsentTicket:
    """A ticket signed by `key`, of a shape an honest subject could have meant. A ticket signed
    by another key is ATTESTATION_MISMATCH (it is not the attested subject's); a bad signature
    by that key is BAD_SIGNATURE."""
    if signed.key_id != key.key_id:
        raise refused(
            Reason.ATTESTATION_MISMATCH, "ticket is not signed by the subject's key for this node"
        )
    ticket = open_signed(signed, ConsentTicket, key, what="ticket", cache=True)
    validate_ticket(ticket)
    return ticket


def validate_ticket(ticket: ConsentTicket) -> None:
    """Reject tickets no honest subject could have meant."""
    tid = ticket.ticket_id
    if not (
        tid.startswith(TICKET_ID_PREFIX)
        and len(tid) == len(TICKET_ID_PREFIX) + 32
        and all(c in "0123456789abcdef" for c in tid[len(TICKET_ID_PREFIX) :])
    ):
        raise refused(Reason.MALFORMED, "ticket id is not t- and 32 lowercase hex digits")
    if not ticket.node_id or not ticket.requester_id:
        raise refused(Reason.MALFORMED, "ticket names no node or no requester")
    if ticket.purpose not in vocab.PURPOSE_CATEGORIES:
        raise refused(Reason.MALFORMED, "ticket purpose missing or unknown")
    cats = list(ticket.categories)
    if not cats or len(set(cats)) != len(cats) or any(c not in vocab.ALL_CATEGORIES for c in cats):
        raise refused(Reason.MALFORMED, "ticket categories empty, repeated or unknown")
    if from_timestamp(ticket.not_after) <= from_timestamp(ticket.not_before):
        raise refused(Reason.MALFORMED, "ticket ends before it starts")
    if ticket.max_uses < 1:
        raise refused(Reason.MALFORMED, "ticket max_uses must be at least 1")


def check_ticket_matches(
    ticket: ConsentTicket, consent: Consent, served: Iterable[vocab.Category]
) -> None:
    """The directory's check that a ticket is a share of `consent` for a node serving `served`:
    the same requester, purpose, times, data range and uses, and only categories of both."""
    same = (
        ticket.requester_id == consent.requester_id
        and ticket.purpose == consent.purpose
        and ticket.not_before == consent.not_before
        and ticket.not_after == consent.not_after
        and ticket.max_uses == consent.max_uses
        and ticket.HasField("data_from") == consent.HasField("data_from")
        and ticket.data_from == consent.data_from
        and ticket.HasField("data_to") == consent.HasField("data_to")
        and ticket.data_to == consent.data_to
    )
    if not same:
        raise refused(
            Reason.MALFORMED,
            f"ticket {ticket.ticket_id} for {ticket.node_id} does not match its consent "
            "(requester, purpose, times, data range and max_uses must be the consent's)",
        )
    outside = set(ticket.categories) - (set(consent.categories) & set(served))
    if outside:
        raise refused(
            Reason.MALFORMED,
            f"ticket for {ticket.node_id} names {', '.join(vocab.category_names(outside))}, "
            "which the consent does not grant or the node does not serve",
        )


def require_node_key(key: VerifyKey | None, node_id: str) -> VerifyKey:
    """The subject's registered key for `node_id`; a ticket for a node without one cannot be
    checked (UNAUTHENTICATED, so the subject registers one first)."""
    if key is None:
        raise refused(
            Reason.UNKNOWN_SIGNER,
            f"no key of the subject is registered for {node_id}; register one (RegisterNodeKeys)",
        )
    return key
