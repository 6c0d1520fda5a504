"""Issue 12 item 5: a subject (or requester) pads a signed body with unknown protobuf fields,
about 1 MB of them, so that the directory stores it and sends it to every node queried.

Every reader of a signed body refuses fields its type does not define, at any depth, and a
body larger than its type's cap, as MALFORMED naming the type and the cap."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import pytest

from credex.protocol.channels import open_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.consents import create_consent
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.protocol.tickets import create_ticket, node_key
from credex.runtime.settings import DEFAULT_MAX_MESSAGE_BYTES
from credex.testing.loop import LoopThread
from credex.v1 import requester_pb2, subject_pb2
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.consent_pb2 import Consent, ConsentTicket, SubjectAttestation
from credex.v1.node_pb2 import NodeQuery, QueryRecordsRequest
from credex.v1.node_pb2_grpc import NodeServiceStub
from tests.attacks.conftest import Target
from tests.attacks.profiles_common import (
    local_id,
    nonce,
    own_subject,
    public_stub,
    refusal,
    requester_stub,
    sign_body,
    unknown_field,
)

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
FIN = Category.CATEGORY_FINANCIAL
DAY = 86_400.0
# About 1 MB of padding, as in the report, as far as the transport lets a request through.
PADDING = DEFAULT_MAX_MESSAGE_BYTES // 2


def consent_body(key: SigningKey, requester_id: str = "bank") -> bytes:
    now = time.time()
    signed = create_consent(
        key,
        requester_id=requester_id,
        purpose=LOAN,
        categories=[FIN],
        not_before=now,
        not_after=now + 30 * DAY,
        max_uses=3,
        consent_id=f"c-padded-{uuid.uuid4().hex}",
    )
    return bytes(signed.body)


def nested_padding(body: bytes) -> bytes:
    """The consent with an unknown field inside its `not_after` timestamp (field 10)."""
    consent = Consent.FromString(body)
    inner = consent.not_after.SerializeToString() + unknown_field(99, b"hidden")
    consent.ClearField("not_after")
    return consent.SerializeToString(deterministic=True) + b"\x52" + bytes([len(inner)]) + inner


def nested_ticket_padding(body: bytes) -> bytes:
    """The ticket with an unknown field inside its `not_after` timestamp (field 9)."""
    ticket = ConsentTicket.FromString(body)
    inner = ticket.not_after.SerializeToString() + unknown_field(99, b"hidden")
    ticket.ClearField("not_after")
    return ticket.SerializeToString(deterministic=True) + b"\x4a" + bytes([len(inner)]) + inner


async def grant(target: Target, subject_id: str, key: SigningKey, body: bytes) -> Any:
    async with public_stub(target) as stub:
        request = subject_pb2.GrantConsentRequest(
            consent=sign_body(body, Consent, key), subject_id=subject_id
        )
        try:
            return await stub.GrantConsent(request, timeout=30)
        except grpc.aio.AioRpcError as err:
            return err


async def listed(target: Target, subject_id: str, key: SigningKey) -> set[str]:
    async with target.subject_client(subject_id, key) as client:
        return {c.consent_id for c in await client.consents()}


@pytest.mark.parametrize(
    ("padding", "says"),
    [
        (lambda body: body + unknown_field(1000, b"\x00" * PADDING), "credex.v1.Consent"),
        (lambda body: body + unknown_field(100, b"x"), "unknown field"),
        (nested_padding, "unknown field"),
    ],
    ids=["large-unknown-field", "one-small-unknown-field", "unknown-field-in-a-timestamp"],
)
def test_a_padded_consent_is_refused_and_never_stored(
    target: Target, loop: LoopThread, padding: Any, says: str
) -> None:
    subject_id, key = own_subject(target, 0)
    body = consent_body(key)
    padded = padding(body)
    assert Consent.FromString(padded).consent_id == Consent.FromString(body).consent_id
    answer = loop.run(grant(target, subject_id, key, padded))
    assert isinstance(answer, grpc.aio.AioRpcError), "the padded consent was granted"
    assert refusal(answer) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED")
    assert says in (answer.details() or "")
    consent_id = Consent.FromString(body).consent_id
    assert consent_id not in loop.run(listed(target, subject_id, key))
    # the same consent without padding is granted: only the padding was refused
    granted = loop.run(grant(target, subject_id, key, body))
    assert not isinstance(granted, grpc.aio.AioRpcError), granted
    assert granted.consent_id == consent_id


def test_an_oversized_consent_refusal_names_the_type_and_its_cap(
    target: Target, loop: LoopThread
) -> None:
    subject_id, key = own_subject(target, 0)
    padded = consent_body(key) + unknown_field(1000, b"\x00" * PADDING)
    answer = loop.run(grant(target, subject_id, key, padded))
    assert isinstance(answer, grpc.aio.AioRpcError), "the padded consent was granted"
    details = answer.details() or ""
    assert "credex.v1.Consent" in details and "4096 bytes" in details, details


def test_a_padded_profile_request_is_refused(target: Target, loop: LoopThread) -> None:
    """A requester pads its own signed request: refused before any consent is looked at."""
    home = target.requester_home()
    key = home.signing_key()
    now = time.time()
    request = requester_pb2.ProfileRequest(
        request_id=f"r-padded-{uuid.uuid4().hex}",
        nonce=nonce(),
        issued_at=to_timestamp(now),
        expires_at=to_timestamp(now + 60),
        requester_id=home.member_id,
        subject_id="S-nobody",
        consent_id="c-nothing",
        purpose=LOAN,
    )
    body = request.SerializeToString(deterministic=True) + unknown_field(500, b"\x01" * 65_536)

    async def send() -> grpc.aio.AioRpcError | None:
        async with requester_stub(target, home) as stub:
            try:
                await stub.GetProfile(
                    requester_pb2.GetProfileRequest(
                        request=sign_body(body, requester_pb2.ProfileRequest, key)
                    ),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as err:
                return err
        return None

    err = loop.run(send())
    assert err is not None
    assert refusal(err) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED")
    assert "credex.v1.ProfileRequest" in (err.details() or "")


def test_a_node_refuses_a_padded_ticket_even_from_the_directory(
    target: Target, loop: LoopThread
) -> None:
    """A ticket padded before the directory refused padding (or by a directory gone bad)
    reaches a node inside a correctly signed query: the node refuses it too."""
    node_id = "pboc-credit-reference"
    subject_id, main_key = own_subject(target, 0, {node_id})
    key = node_key(main_key, node_id)
    consent = Consent.FromString(consent_body(main_key))
    ticket = nested_ticket_padding(create_ticket(consent, key, node_id, [FIN]).body)
    directory_key = SigningKey.load(target.settings.key_path)
    local = local_id(target.root, subject_id, node_id)
    now = time.time()
    attestation = seal(
        SubjectAttestation(
            node_id=node_id,
            local_subject_id=local,
            subject_key=key.public.raw,  # the subject's key for this node
            issued_at=to_timestamp(now),
            expires_at=to_timestamp(now + 600),
        ),
        directory_key,
    )
    query = NodeQuery(
        request_id=f"q-padded-{uuid.uuid4().hex}",
        nonce=nonce(),
        issued_at=to_timestamp(now),
        expires_at=to_timestamp(now + 60),
        node_id=node_id,
        requester_id="bank",
        purpose=LOAN,
        local_subject_id=local,
        categories=[FIN],
        ticket=sign_body(ticket, ConsentTicket, key),
        attestation=attestation,
    )

    async def send() -> grpc.aio.AioRpcError | None:
        channel = open_channel(target.node_address(node_id), target.operator_tls())
        try:
            await NodeServiceStub(channel).QueryRecords(
                QueryRecordsRequest(query=seal(query, directory_key)), timeout=30
            )
        except grpc.aio.AioRpcError as err:
            return err
        finally:
            await channel.close(None)
        return None

    err = loop.run(send())
    assert err is not None, "the node answered a query carrying a padded ticket"
    assert refusal(err) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED")
