"""A node called directly, with queries built and signed here: one answer, then every refusal.

Each refusal is checked on the wire (status code, the "REASON: message" details and the
`credex-reason` trailing metadata) and as the typed exception the SDK turns it into.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.directory.config import load_settings
from credex.node.config import load_node_config
from credex.protocol import vocab
from credex.protocol.channels import open_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.errors import (
    REASON_KEY,
    CredexError,
    InvalidArgument,
    PermissionDenied,
    Reason,
    Unauthenticated,
    from_rpc_error,
)
from credex.protocol.keys import SigningKey, VerifyKey, load_public, public_path
from credex.protocol.signing import domain_tag, open_signed, seal, verify
from credex.protocol.tickets import new_ticket_id, node_key
from credex.testing.federation import Federation
from credex.v1.common_pb2 import Category as Cat
from credex.v1.common_pb2 import Purpose, Signed
from credex.v1.consent_pb2 import ConsentTicket, SubjectAttestation
from credex.v1.node_pb2 import (
    DescribeRequest,
    NodeAnswer,
    NodeQuery,
    QueryRecordsRequest,
    QueryRecordsResponse,
)
from credex.v1.node_pb2_grpc import NodeServiceStub

NODE = "pboc"
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
FIN = Cat.CATEGORY_FINANCIAL
VOL = Cat.CATEGORY_VOLUNTEERING
DAY = 86_400.0
S9_LOCAL = "1009"
S1_LOCAL = "1001"
S9_RECORDS = {"loan-3"}

# Bytes that no protobuf parser accepts: a length-delimited field 1 claiming 100 bytes.
UNDECODABLE = b"\x0a\x64only-a-few-bytes"


# --- a channel to the node, on the federation's loop ---------------------------------------


@dataclass
class Node:
    fed: Federation
    stub: Any  # a NodeServiceStub on an aio channel
    key: VerifyKey
    state_db: Path

    def query(self, request: QueryRecordsRequest) -> QueryRecordsResponse:
        async def call() -> QueryRecordsResponse:
            response: QueryRecordsResponse = await self.stub.QueryRecords(request, timeout=5)
            return response

        return self.fed.loop.run(call())

    def describe(self) -> Any:
        async def call() -> Any:
            return await self.stub.Describe(DescribeRequest(), timeout=5)

        return self.fed.loop.run(call())


@pytest.fixture(scope="module")
def node(federation: Federation) -> Iterator[Node]:
    async def connect() -> grpc.aio.Channel:
        return open_channel(federation.nodes[NODE].address, federation.directory_tls)

    channel = federation.loop.run(connect())
    config = load_node_config(federation.node_configs[NODE])
    yield Node(
        fed=federation,
        stub=NodeServiceStub(channel),
        key=load_public(public_path(config.signing_key)),
        state_db=config.state_db,
    )
    federation.loop.run(channel.close(None))


# --- building queries ------------------------------------------------------------------------


def subject_node_key(fed: Federation, subject_id: str = "S9", node_id: str = NODE) -> SigningKey:
    """The subject's key for a node, derived from its main key as its device derives it."""
    return node_key(fed.subject_keys[subject_id], node_id)


def ticket_for(
    fed: Federation,
    *,
    key: SigningKey | None = None,
    node_id: str = NODE,
    requester_id: str = "bank",
    purpose: vocab.Purpose = LOAN,
    categories: Sequence[vocab.Category] = (FIN,),
    not_before: float | None = None,
    not_after: float | None = None,
    max_uses: int = 1000,
    data_from: float | None = None,
) -> Signed:
    """A fresh ticket for this node signed by the subject's key for it (S9 unless told
    otherwise)."""
    now = fed.clock()
    ticket = ConsentTicket(
        ticket_id=new_ticket_id(),
        node_id=node_id,
        requester_id=requester_id,
        purpose=purpose,
        categories=categories,
        not_before=to_timestamp(now - 60 if not_before is None else not_before),
        not_after=to_timestamp(now + DAY if not_after is None else not_after),
        max_uses=max_uses,
    )
    if data_from is not None:
        ticket.data_from.CopyFrom(to_timestamp(data_from))
    return seal(ticket, key or subject_node_key(fed))


def attestation_for(
    fed: Federation,
    *,
    node_id: str = NODE,
    local_id: str = S9_LOCAL,
    subject_key: bytes | None = None,
    issued_at: float | None = None,
    ttl: float = 3600.0,
    key: SigningKey | None = None,
) -> Signed:
    now = fed.clock() if issued_at is None else issued_at
    return seal(
        SubjectAttestation(
            node_id=node_id,
            local_subject_id=local_id,
            subject_key=subject_node_key(fed).public.raw if subject_key is None else subject_key,
            issued_at=to_timestamp(now),
            expires_at=to_timestamp(now + ttl),
        ),
        key or fed.directory_key,
    )


def node_query(
    fed: Federation,
    *,
    ticket: Signed | None = None,
    attestation: Signed | None = None,
    node_id: str = NODE,
    local_id: str = S9_LOCAL,
    categories: Sequence[vocab.Category] = (FIN,),
    requester_id: str = "bank",
    purpose: vocab.Purpose = LOAN,
    issued_at: float | None = None,
    lifetime: float = 60.0,
    nonce: bytes | None = None,
    request_id: str | None = None,
) -> NodeQuery:
    issued = fed.clock() if issued_at is None else issued_at
    return NodeQuery(
        request_id=request_id or f"r-test-{os.urandom(8).hex()}",
        nonce=os.urandom(16) if nonce is None else nonce,
        issued_at=to_timestamp(issued),
        expires_at=to_timestamp(issued + lifetime),
        node_id=node_id,
        requester_id=requester_id,
        purpose=purpose,
        local_subject_id=local_id,
        categories=categories,
        ticket=ticket if ticket is not None else ticket_for(fed),
        attestation=attestation if attestation is not None else attestation_for(fed),
    )


def signed_request(
    fed: Federation, query: NodeQuery, key: SigningKey | None = None
) -> QueryRecordsRequest:
    return QueryRecordsRequest(query=seal(query, key or fed.directory_key))


def trailers(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    metadata: Any = err.trailing_metadata() or ()
    return [(str(key), str(value)) for key, value in metadata]


# --- checking refusals -----------------------------------------------------------------------

_CODE_OF = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def audit_rows(node: Node, after_seq: int = 0) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{node.state_db}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM audit_log WHERE seq > ? ORDER BY seq", (after_seq,)
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def last_seq(node: Node) -> int:
    rows = audit_rows(node)
    return rows[-1]["seq"] if rows else 0


def assert_refused(
    node: Node,
    request: QueryRecordsRequest,
    error: type[CredexError],
    reason: Reason,
) -> grpc.aio.AioRpcError:
    """The node refuses `request` with `error`'s status and `reason`, and audits the refusal."""
    before = last_seq(node)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        node.query(request)
    err = info.value
    assert err.code() == _CODE_OF[error], (err.code(), err.details())
    assert (err.details() or "").startswith(f"{reason}: "), err.details()
    metadata = trailers(err)
    assert (REASON_KEY, str(reason)) in metadata, metadata
    typed = from_rpc_error(err)
    assert type(typed) is error
    assert typed.reason == reason
    new = audit_rows(node, before)
    assert [r["outcome"] for r in new] == [f"refused:{reason}"], new
    assert new[0]["node_id"] == NODE
    assert new[0]["disclosed_digest"] == ""
    return err


# --- the positive control --------------------------------------------------------------------


def test_well_formed_query_is_answered_with_the_subjects_records_signed_by_the_node(
    node: Node,
) -> None:
    fed = node.fed
    ticket = ticket_for(fed)
    query = node_query(fed, ticket=ticket)
    request = signed_request(fed, query)
    before = last_seq(node)

    response = node.query(request)

    answer_signed = response.answer
    assert answer_signed.key_id == node.key.key_id == node.describe().key_id
    assert verify(answer_signed, NodeAnswer, node.key)
    assert not verify(answer_signed, NodeAnswer, fed.directory_key.public)
    answer = open_signed(answer_signed, NodeAnswer, node.key, what="answer")
    assert answer.request_id == query.request_id
    assert answer.node_id == NODE
    assert answer.query_digest == hashlib.sha256(request.query.body).digest()
    assert {r.record_id for r in answer.records} == S9_RECORDS
    (record,) = answer.records
    assert record.category == FIN
    assert record.kind == "loan_default"
    assert record.value == 800.0
    assert record.unit == "CNY"
    assert dict(record.attributes) == {"state": "default"}

    rows = audit_rows(node, before)
    assert len(rows) == 1
    row = rows[0]
    assert row["outcome"] == "disclosed"
    assert row["request_id"] == query.request_id
    assert row["actor"] == "bank"
    assert row["subject_ref"] == S9_LOCAL
    # the node's own ticket id: never a consent id another node also sees
    assert row["consent_id"] == ConsentTicket.FromString(ticket.body).ticket_id
    assert row["categories"] == '["financial"]'
    assert row["disclosed_digest"] == hashlib.sha256(answer_signed.body).hexdigest()


def test_each_subject_gets_only_its_own_records(node: Node) -> None:
    fed = node.fed
    s1_key = subject_node_key(fed, "S1")
    query = node_query(
        fed,
        ticket=ticket_for(fed, key=s1_key),
        attestation=attestation_for(fed, local_id=S1_LOCAL, subject_key=s1_key.public.raw),
        local_id=S1_LOCAL,
    )
    answer = NodeAnswer.FromString(node.query(signed_request(fed, query)).answer.body)
    assert {r.record_id for r in answer.records} == {"loan-1", "loan-2"}


def test_consent_data_range_limits_what_is_disclosed(node: Node) -> None:
    fed = node.fed
    s1_key = subject_node_key(fed, "S1")
    # 2024-01-01: loan-1 (2023-05-01) falls outside
    ticket = ticket_for(fed, key=s1_key, data_from=1_704_067_200.0)
    query = node_query(
        fed,
        ticket=ticket,
        attestation=attestation_for(fed, local_id=S1_LOCAL, subject_key=s1_key.public.raw),
        local_id=S1_LOCAL,
    )
    answer = NodeAnswer.FromString(node.query(signed_request(fed, query)).answer.body)
    assert {r.record_id for r in answer.records} == {"loan-2"}


# --- the directory's signature ---------------------------------------------------------------


def test_query_signed_by_another_key_is_refused(node: Node) -> None:
    fed = node.fed
    request = signed_request(fed, node_query(fed), key=SigningKey.generate())
    assert_refused(node, request, Unauthenticated, Reason.BAD_SIGNATURE)


def test_query_signed_by_a_requester_key_is_refused(node: Node) -> None:
    fed = node.fed
    request = signed_request(fed, node_query(fed), key=fed.requester_keys["bank"])
    assert_refused(node, request, Unauthenticated, Reason.BAD_SIGNATURE)


def test_forged_signature_under_the_directory_key_id_is_refused(node: Node) -> None:
    fed = node.fed
    forger = SigningKey.generate()
    query = node_query(fed)
    body = query.SerializeToString(deterministic=True)
    forged = Signed(
        body=body,
        signature=forger.sign(domain_tag(NodeQuery) + body),
        key_id=fed.directory_key.key_id,
    )
    assert_refused(node, QueryRecordsRequest(query=forged), Unauthenticated, Reason.BAD_SIGNATURE)


def test_body_altered_after_signing_is_refused(node: Node) -> None:
    fed = node.fed
    request = signed_request(fed, node_query(fed))
    altered = NodeQuery.FromString(request.query.body)
    altered.local_subject_id = S1_LOCAL
    request.query.body = altered.SerializeToString(deterministic=True)
    assert_refused(node, request, Unauthenticated, Reason.BAD_SIGNATURE)


def test_signature_of_another_message_type_is_refused(node: Node) -> None:
    """The directory's signature on an attestation never passes for a query, same bytes or not."""
    fed = node.fed
    query_body = node_query(fed).SerializeToString(deterministic=True)
    as_attestation = Signed(
        body=query_body,
        signature=fed.directory_key.sign(domain_tag(SubjectAttestation) + query_body),
        key_id=fed.directory_key.key_id,
    )
    assert_refused(
        node, QueryRecordsRequest(query=as_attestation), Unauthenticated, Reason.BAD_SIGNATURE
    )


# --- replay and time window ------------------------------------------------------------------


def test_replayed_query_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed)
    request = signed_request(fed, query)
    answer = NodeAnswer.FromString(node.query(request).answer.body)
    assert {r.record_id for r in answer.records} == S9_RECORDS
    before = last_seq(node)
    assert_refused(node, request, PermissionDenied, Reason.REPLAY)
    (row,) = audit_rows(node, before)
    # filed under the caller the certificate proves; what the query claims goes in the detail
    assert (row["request_id"], row["actor"]) == (query.request_id, "directory")
    assert "claimed requester 'bank'" in row["detail"]


def test_nonce_reused_in_a_new_query_is_refused(node: Node) -> None:
    fed = node.fed
    nonce = os.urandom(16)
    node.query(signed_request(fed, node_query(fed, nonce=nonce)))
    again = signed_request(fed, node_query(fed, nonce=nonce))
    assert_refused(node, again, PermissionDenied, Reason.REPLAY)


def test_expired_query_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, issued_at=fed.clock() - 100, lifetime=60)
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.REQUEST_EXPIRED)


def test_query_becomes_expired_when_the_node_clock_passes_its_end(node: Node) -> None:
    fed = node.fed
    request = signed_request(fed, node_query(fed, lifetime=60))
    with fed.clock_moved(61):
        assert_refused(node, request, PermissionDenied, Reason.REQUEST_EXPIRED)


def test_query_issued_in_the_future_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, issued_at=fed.clock() + 600, lifetime=60)
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.REQUEST_NOT_YET_VALID)


def test_query_valid_for_too_long_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, lifetime=3600)
    assert_refused(node, signed_request(fed, query), InvalidArgument, Reason.MALFORMED)


def test_query_that_ends_before_it_starts_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, lifetime=-10)
    assert_refused(node, signed_request(fed, query), InvalidArgument, Reason.MALFORMED)


@pytest.mark.parametrize("size", [0, 8, 15, 65])
def test_nonce_of_wrong_size_is_refused(node: Node, size: int) -> None:
    fed = node.fed
    query = node_query(fed, nonce=os.urandom(size))
    assert_refused(node, signed_request(fed, query), InvalidArgument, Reason.MALFORMED)


# --- addressee and attestation ---------------------------------------------------------------


def test_query_addressed_to_another_node_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(
        fed, node_id="volunteers", attestation=attestation_for(fed, node_id="volunteers")
    )
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.WRONG_NODE)


def test_attestation_for_another_local_id_is_refused(node: Node) -> None:
    """S9's consent and attestation (local id 1009) used to read local id 1001 (S1)."""
    fed = node.fed
    query = node_query(fed, local_id=S1_LOCAL, attestation=attestation_for(fed, local_id=S9_LOCAL))
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.ATTESTATION_MISMATCH)


def test_attestation_for_another_node_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, attestation=attestation_for(fed, node_id="volunteers"))
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.ATTESTATION_MISMATCH)


def test_attestation_not_signed_by_the_directory_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, attestation=attestation_for(fed, key=SigningKey.generate()))
    assert_refused(node, signed_request(fed, query), Unauthenticated, Reason.BAD_SIGNATURE)


def test_expired_attestation_is_refused(node: Node) -> None:
    fed = node.fed
    stale = attestation_for(fed, issued_at=fed.clock() - 2 * 3600, ttl=3600)
    query = node_query(fed, attestation=stale)
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.ATTESTATION_EXPIRED)


def test_attestation_issued_in_the_future_is_refused(node: Node) -> None:
    fed = node.fed
    early = attestation_for(fed, issued_at=fed.clock() + 600)
    query = node_query(fed, attestation=early)
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.ATTESTATION_EXPIRED)


# --- the subject's ticket --------------------------------------------------------------------


def test_tampered_ticket_is_refused(node: Node) -> None:
    fed = node.fed
    ticket = ticket_for(fed, categories=[VOL])
    stretched = ConsentTicket.FromString(ticket.body)
    stretched.categories[:] = [FIN, VOL]
    ticket.body = stretched.SerializeToString(deterministic=True)
    query = node_query(fed, ticket=ticket)
    assert_refused(node, signed_request(fed, query), Unauthenticated, Reason.BAD_SIGNATURE)


def test_ticket_under_the_attested_key_id_but_signed_by_another_key_is_refused(
    node: Node,
) -> None:
    fed = node.fed
    forged = ticket_for(fed, key=SigningKey.generate())
    forged.key_id = subject_node_key(fed).key_id
    query = node_query(fed, ticket=forged)
    assert_refused(node, signed_request(fed, query), Unauthenticated, Reason.BAD_SIGNATURE)


def test_ticket_of_another_key_is_refused(node: Node) -> None:
    """A ticket valid in itself, but by a key the attestation does not bind to local id 1009:
    S1's key for this node, and S9's main key (a node never serves under the main key)."""
    fed = node.fed
    for key in (subject_node_key(fed, "S1"), fed.subject_keys["S9"], SigningKey.generate()):
        query = node_query(fed, ticket=ticket_for(fed, key=key))
        assert_refused(
            node, signed_request(fed, query), PermissionDenied, Reason.ATTESTATION_MISMATCH
        )


def test_ticket_signed_with_the_subjects_key_for_another_node_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, ticket=ticket_for(fed, key=subject_node_key(fed, node_id="volunteers")))
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.ATTESTATION_MISMATCH)


def test_ticket_for_another_node_is_refused(node: Node) -> None:
    """Signed by the right key, but naming another node: a ticket is good at one node only."""
    fed = node.fed
    query = node_query(fed, ticket=ticket_for(fed, node_id="volunteers"))
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.WRONG_NODE)


def test_ticket_without_subject_signature_is_refused(node: Node) -> None:
    fed = node.fed
    ticket = ticket_for(fed)
    ticket.signature = b""
    query = node_query(fed, ticket=ticket)
    assert_refused(node, signed_request(fed, query), InvalidArgument, Reason.MALFORMED)


def test_query_without_a_ticket_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed)
    query.ClearField("ticket")
    assert_refused(node, signed_request(fed, query), InvalidArgument, Reason.MALFORMED)


def test_expired_ticket_is_refused(node: Node) -> None:
    fed = node.fed
    now = fed.clock()
    ticket = ticket_for(fed, not_before=now - 2 * DAY, not_after=now - DAY)
    query = node_query(fed, ticket=ticket)
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.CONSENT_EXPIRED)


def test_ticket_not_yet_valid_is_refused(node: Node) -> None:
    fed = node.fed
    now = fed.clock()
    ticket = ticket_for(fed, not_before=now + DAY, not_after=now + 2 * DAY)
    query = node_query(fed, ticket=ticket)
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.CONSENT_NOT_YET_VALID)


def test_ticket_for_another_requester_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, ticket=ticket_for(fed, requester_id="school"), requester_id="bank")
    assert_refused(
        node, signed_request(fed, query), PermissionDenied, Reason.CONSENT_WRONG_REQUESTER
    )


def test_ticket_for_another_purpose_is_refused(node: Node) -> None:
    fed = node.fed
    ticket = ticket_for(fed, purpose=Purpose.PURPOSE_RESEARCH)
    query = node_query(fed, ticket=ticket, purpose=LOAN)
    assert_refused(node, signed_request(fed, query), PermissionDenied, Reason.CONSENT_WRONG_PURPOSE)


def test_ticket_exceeding_its_purpose_is_refused_by_the_node_too(node: Node) -> None:
    """Even if a directory forwarded it, a ticket wider than its purpose is not served."""
    fed = node.fed
    ticket = ticket_for(fed, categories=[FIN, Cat.CATEGORY_EDUCATION])
    query = node_query(fed, ticket=ticket, categories=[FIN])
    assert_refused(
        node, signed_request(fed, query), PermissionDenied, Reason.CONSENT_EXCEEDS_PURPOSE
    )


def test_category_outside_the_ticket_is_refused(node: Node) -> None:
    fed = node.fed
    query = node_query(fed, ticket=ticket_for(fed, categories=[VOL]), categories=[FIN])
    assert_refused(
        node, signed_request(fed, query), PermissionDenied, Reason.CATEGORY_NOT_CONSENTED
    )


def test_category_the_node_does_not_serve_is_refused(node: Node) -> None:
    fed = node.fed
    ticket = ticket_for(fed, categories=[FIN, VOL])
    for categories in ([VOL], [FIN, VOL]):
        query = node_query(fed, ticket=ticket, categories=categories)
        assert_refused(
            node, signed_request(fed, query), InvalidArgument, Reason.CATEGORY_NOT_SERVED
        )


def test_ticket_used_up_is_refused_by_the_node_whatever_the_directory_counts(node: Node) -> None:
    """The node counts its own answers under a ticket: a directory asking once more than the
    subject allowed is refused, with fresh queries each time."""
    fed = node.fed
    ticket = ticket_for(fed, max_uses=2)
    for _ in range(2):
        node.query(signed_request(fed, node_query(fed, ticket=ticket)))
    again = signed_request(fed, node_query(fed, ticket=ticket))
    assert_refused(node, again, PermissionDenied, Reason.CONSENT_USED_UP)


def granted_ticket(fed: Federation, consent_id: str) -> Signed:
    """This node's ticket of a consent the subject granted, as the directory keeps it."""
    path = load_settings(fed.root / "directory").db_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        (raw,) = conn.execute(
            "SELECT signed FROM consent_tickets WHERE consent_id = ? AND node_id = ?",
            (consent_id, NODE),
        ).fetchone()
    return Signed.FromString(raw)


def test_paused_and_revoked_tickets_are_refused_at_the_node_from_its_own_feed(node: Node) -> None:
    """The subject pauses, resumes and revokes through the directory; the node learns it
    under its own ticket id from its own feed and refuses (and serves) queries accordingly."""
    fed = node.fed
    subject = fed.subject("S9")
    consent_id = fed.loop.run(
        subject.grant(requester_id="bank", purpose=LOAN, categories=[FIN], max_uses=100)
    )
    ticket = granted_ticket(fed, consent_id)
    sync = fed.node_services[NODE].sync

    def ask() -> QueryRecordsRequest:
        return signed_request(fed, node_query(fed, ticket=ticket))

    assert {r.record_id for r in NodeAnswer.FromString(node.query(ask()).answer.body).records}
    fed.loop.run(subject.pause(consent_id))
    fed.loop.run(sync.sync_once())
    assert_refused(node, ask(), PermissionDenied, Reason.CONSENT_PAUSED)
    fed.loop.run(subject.resume(consent_id))
    fed.loop.run(sync.sync_once())
    assert NodeAnswer.FromString(node.query(ask()).answer.body).records
    fed.loop.run(subject.revoke(consent_id))
    fed.loop.run(sync.sync_once())
    assert_refused(node, ask(), PermissionDenied, Reason.CONSENT_REVOKED)


@pytest.mark.parametrize("categories", [[], [FIN, FIN]], ids=["empty", "repeated"])
def test_query_categories_empty_or_repeated_are_refused(
    node: Node, categories: list[vocab.Category]
) -> None:
    fed = node.fed
    query = node_query(fed, categories=categories)
    assert_refused(node, signed_request(fed, query), InvalidArgument, Reason.MALFORMED)


# --- malformed input -------------------------------------------------------------------------


def test_empty_request_is_refused(node: Node) -> None:
    assert_refused(node, QueryRecordsRequest(), InvalidArgument, Reason.MALFORMED)


def test_unsigned_query_is_refused(node: Node) -> None:
    fed = node.fed
    body = node_query(fed).SerializeToString(deterministic=True)
    request = QueryRecordsRequest(query=Signed(body=body, key_id=fed.directory_key.key_id))
    assert_refused(node, request, InvalidArgument, Reason.MALFORMED)


def test_garbage_body_signed_by_the_directory_is_refused(node: Node) -> None:
    fed = node.fed
    garbage = Signed(
        body=UNDECODABLE,
        signature=fed.directory_key.sign(domain_tag(NodeQuery) + UNDECODABLE),
        key_id=fed.directory_key.key_id,
    )
    assert_refused(node, QueryRecordsRequest(query=garbage), InvalidArgument, Reason.MALFORMED)


def test_garbage_body_and_signature_are_refused(node: Node) -> None:
    fed = node.fed
    garbage = Signed(body=os.urandom(200), signature=os.urandom(64), key_id="x" * 32)
    assert_refused(node, QueryRecordsRequest(query=garbage), Unauthenticated, Reason.BAD_SIGNATURE)
    garbage.key_id = fed.directory_key.key_id
    assert_refused(node, QueryRecordsRequest(query=garbage), Unauthenticated, Reason.BAD_SIGNATURE)


def test_garbage_ticket_inside_a_signed_query_is_refused(node: Node) -> None:
    """Undecodable ticket bytes: refused unread under another signature, MALFORMED when even
    the attested key signed them."""
    fed = node.fed
    key = subject_node_key(fed)
    unsigned = Signed(body=UNDECODABLE, signature=os.urandom(64), key_id=key.key_id)
    query = node_query(fed, ticket=unsigned)
    assert_refused(node, signed_request(fed, query), Unauthenticated, Reason.BAD_SIGNATURE)
    signed = Signed(
        body=UNDECODABLE,
        signature=key.sign(domain_tag(ConsentTicket) + UNDECODABLE),
        key_id=key.key_id,
    )
    query = node_query(fed, ticket=signed)
    assert_refused(node, signed_request(fed, query), InvalidArgument, Reason.MALFORMED)


def test_undecodable_request_bytes_get_invalid_argument(node: Node) -> None:
    """Bytes that are not a QueryRecordsRequest at all: a clear INVALID_ARGUMENT MALFORMED like
    any other malformed input, not an UNKNOWN status naming a Python exception class."""
    fed = node.fed

    async def call() -> grpc.aio.AioRpcError:
        async with open_channel(fed.nodes[NODE].address, fed.directory_tls) as channel:
            raw = channel.unary_unary(
                "/credex.v1.NodeService/QueryRecords",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(UNDECODABLE, timeout=5)
            return info.value

    err = fed.loop.run(call())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert (err.details() or "").startswith(f"{Reason.MALFORMED}: ")
    assert (REASON_KEY, str(Reason.MALFORMED)) in trailers(err)


def test_node_still_answers_after_refusals(node: Node) -> None:
    """Refusals leave no damage: a fresh, well-formed query is answered."""
    fed = node.fed
    answer = NodeAnswer.FromString(node.query(signed_request(fed, node_query(fed))).answer.body)
    assert {r.record_id for r in answer.records} == S9_RECORDS


def test_undecodable_requests_are_audited_too(node: Node) -> None:
    """Refused before any handler could read it, the request still leaves an audit entry:
    counted with the others like it (credex.runtime.refusals), written when its window closes
    (here: when the node's counts are flushed, as they are on a timer and at shutdown)."""
    fed = node.fed
    before = last_seq(node)

    async def call() -> None:
        async with open_channel(fed.nodes[NODE].address, fed.directory_tls) as channel:
            raw = channel.unary_unary("/credex.v1.NodeService/QueryRecords", None, None)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError):
                    await raw(UNDECODABLE, timeout=5)

    async def flush() -> None:
        fed.node_services[NODE].runtime.callers.recorder.flush(everything=True)

    fed.loop.run(call())
    fed.loop.run(flush())
    rows = [
        r
        for r in audit_rows(node, before)
        if (r["action"], r["outcome"], r["actor"])
        == ("QueryRecords", f"refused:{Reason.MALFORMED}", "directory")
    ]
    assert rows and sum(r["count"] for r in rows) >= 3
