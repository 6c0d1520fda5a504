"""Signed envelopes: round trip, domain separation, tamper evidence, malformed input."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from credex.protocol.clock import to_timestamp
from credex.protocol.errors import InvalidArgument, Reason, Unauthenticated
from credex.protocol.keys import SigningKey
from credex.protocol.signing import (
    DEFAULT_MAX_SIGNED_BODY_BYTES,
    MAX_BODY_BYTES,
    MAX_SIGNED_BODY_BYTES,
    digest,
    domain_tag,
    max_body_bytes,
    open_signed,
    parse,
    seal,
    verify,
)
from credex.v1.common_pb2 import Category, Purpose, Record, Signed
from credex.v1.consent_pb2 import Consent, ConsentRevocation, SubjectAttestation
from credex.v1.node_pb2 import NodeAnswer
from credex.v1.subject_pb2 import ConsentListQuery
from tests.contract import contract_modules

KEY = SigningKey.from_seed(b"test-signing")
OTHER = SigningKey.from_seed(b"test-signing-other")

CONSENT = Consent(
    consent_id="c-1",
    subject_key=KEY.public.raw,
    requester_id="bank",
    purpose=Purpose.PURPOSE_LOAN_APPLICATION,
    categories=[Category.CATEGORY_FINANCIAL, Category.CATEGORY_VOLUNTEERING],
    not_before=to_timestamp(1_700_000_000),
    not_after=to_timestamp(1_700_086_400),
    max_uses=2,
)
SEALED = seal(CONSENT, KEY)

# Bytes no protobuf parser accepts: truncated length-delimited field, truncated varint,
# wire type 7 (reserved), field number 0.
UNDECODABLE = [b"\x0a\x64too short", b"\x08\xff\xff", b"\x0f", b"\x00\x01", b"\xff"]


def test_seal_open_round_trip() -> None:
    assert SEALED.key_id == KEY.key_id
    assert SEALED.body == CONSENT.SerializeToString(deterministic=True)
    assert verify(SEALED, Consent, KEY.public)
    opened = open_signed(SEALED, Consent, KEY.public, what="consent")
    assert opened == CONSENT


def test_seal_is_stable() -> None:
    """The same message under the same key seals to the same bytes (deterministic body)."""
    again = seal(Consent.FromString(SEALED.body), KEY)
    assert again == SEALED


def test_the_signature_covers_the_domain_tag_and_the_body() -> None:
    assert KEY.public.verify(SEALED.signature, domain_tag(Consent) + SEALED.body)
    assert not KEY.public.verify(SEALED.signature, SEALED.body)
    assert domain_tag(Consent) != domain_tag(ConsentRevocation)
    assert b"credex.v1.Consent" in domain_tag(Consent)


def test_signature_of_one_type_does_not_verify_as_another_with_identical_body() -> None:
    """A ConsentRevocation and a Consent share fields 1 and 2, so the revocation's bytes are
    also a valid Consent; the signature still only verifies as the type it was made for."""
    revocation = ConsentRevocation(consent_id="c-1", subject_id="S1")
    signed = seal(revocation, KEY)
    assert Consent.FromString(signed.body).consent_id == "c-1"  # same bytes, parse as both
    assert verify(signed, ConsentRevocation, KEY.public)
    assert not verify(signed, Consent, KEY.public)
    with pytest.raises(Unauthenticated) as err:
        open_signed(signed, Consent, KEY.public, what="consent")
    assert err.value.reason == Reason.BAD_SIGNATURE


def test_list_query_signature_is_not_a_revocation() -> None:
    """ConsentListQuery(subject_id=...) and ConsentRevocation(consent_id=...) both start with a
    string field 1: a subject's list query can never be replayed as a revocation."""
    query = ConsentListQuery(subject_id="c-1")
    signed = seal(query, KEY)
    assert ConsentRevocation.FromString(signed.body).consent_id == "c-1"
    assert not verify(signed, ConsentRevocation, KEY.public)


def test_attestation_signature_is_not_a_consent() -> None:
    attestation = SubjectAttestation(node_id="pboc", local_subject_id="1001")
    signed = seal(attestation, KEY)
    assert not verify(signed, Consent, KEY.public)
    assert verify(signed, SubjectAttestation, KEY.public)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipping_any_byte_of_body_or_signature_fails(data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(["body", "signature"]))
    original = getattr(SEALED, target)
    index = data.draw(st.integers(0, len(original) - 1))
    mask = data.draw(st.integers(1, 255))
    flipped = bytearray(original)
    flipped[index] ^= mask
    tampered = Signed()
    tampered.CopyFrom(SEALED)
    setattr(tampered, target, bytes(flipped))

    assert not verify(tampered, Consent, KEY.public)
    with pytest.raises((Unauthenticated, InvalidArgument)) as err:
        open_signed(tampered, Consent, KEY.public, what="consent")
    assert type(err.value) is Unauthenticated
    assert err.value.reason == Reason.BAD_SIGNATURE


@settings(max_examples=50, deadline=None)
@given(extra=st.binary(min_size=1, max_size=16))
def test_appending_bytes_to_the_body_fails(extra: bytes) -> None:
    tampered = Signed(body=SEALED.body + extra, signature=SEALED.signature, key_id=SEALED.key_id)
    assert not verify(tampered, Consent, KEY.public)


def test_wrong_key_id_fails() -> None:
    relabelled = Signed(body=SEALED.body, signature=SEALED.signature, key_id=OTHER.key_id)
    assert not verify(relabelled, Consent, KEY.public)
    with pytest.raises(Unauthenticated) as err:
        open_signed(relabelled, Consent, KEY.public, what="consent")
    assert err.value.reason == Reason.BAD_SIGNATURE


def test_another_key_fails() -> None:
    assert not verify(SEALED, Consent, OTHER.public)
    forged = seal(CONSENT, OTHER)
    forged.key_id = KEY.key_id
    with pytest.raises(Unauthenticated) as err:
        open_signed(forged, Consent, KEY.public, what="consent")
    assert err.value.reason == Reason.BAD_SIGNATURE


@pytest.mark.parametrize("garbage", UNDECODABLE)
def test_parse_of_garbage_is_malformed(garbage: bytes) -> None:
    with pytest.raises(DecodeError):
        Consent.FromString(garbage)  # the premise: protobuf itself rejects these bytes
    with pytest.raises(InvalidArgument) as err:
        parse(garbage, Consent, what="consent")
    assert err.value.reason == Reason.MALFORMED
    assert "consent" in err.value.message


@pytest.mark.parametrize("garbage", UNDECODABLE)
def test_open_of_signed_garbage_is_malformed(garbage: bytes) -> None:
    """A valid signature over bytes that do not decode is still refused, as MALFORMED."""
    signed = Signed(
        body=garbage, signature=KEY.sign(domain_tag(Consent) + garbage), key_id=KEY.key_id
    )
    assert verify(signed, Consent, KEY.public)
    with pytest.raises(InvalidArgument) as err:
        open_signed(signed, Consent, KEY.public, what="consent")
    assert err.value.reason == Reason.MALFORMED


def test_unsigned_or_empty_envelope_is_malformed() -> None:
    for envelope in (
        Signed(),
        Signed(body=SEALED.body, key_id=SEALED.key_id),
        Signed(signature=SEALED.signature, key_id=SEALED.key_id),
    ):
        with pytest.raises(InvalidArgument) as err:
            open_signed(envelope, Consent, KEY.public, what="consent")
        assert err.value.reason == Reason.MALFORMED


def test_oversized_body_is_malformed_before_verification() -> None:
    big = Signed(body=b"\x00" * (MAX_BODY_BYTES + 1), signature=b"s" * 64, key_id=KEY.key_id)
    with pytest.raises(InvalidArgument) as err:
        open_signed(big, Consent, KEY.public, what="consent")
    assert err.value.reason == Reason.MALFORMED


def test_digest_is_over_the_body() -> None:
    import hashlib

    assert digest(SEALED) == hashlib.sha256(SEALED.body).digest()
    assert digest(seal(CONSENT, OTHER)) == digest(SEALED)  # same body, same digest
    changed = Consent()
    changed.CopyFrom(CONSENT)
    changed.max_uses = 3
    assert digest(seal(changed, KEY)) != digest(SEALED)


def test_cached_verification_still_refuses_every_forgery() -> None:
    """A signature once verified is remembered; nothing else rides on that memory."""
    owner, other = SigningKey.generate(), SigningKey.generate()
    signed = seal(Consent(consent_id="c-cached", requester_id="bank"), owner)
    assert verify(signed, Consent, owner.public, cache=True)
    assert verify(signed, Consent, owner.public, cache=True)  # from the cache
    # another key, another type, another body, another signature: each checked, each refused
    impostor = Signed(body=signed.body, signature=signed.signature, key_id=other.key_id)
    assert not verify(impostor, Consent, other.public, cache=True)
    assert not verify(signed, SubjectAttestation, owner.public, cache=True)
    altered = Signed(body=signed.body + b"\x00", signature=signed.signature, key_id=owner.key_id)
    assert not verify(altered, Consent, owner.public, cache=True)
    flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    bad = Signed(body=signed.body, signature=flipped, key_id=owner.key_id)
    assert not verify(bad, Consent, owner.public, cache=True)
    assert not verify(bad, Consent, owner.public, cache=True)  # failures are never cached
    with pytest.raises(Unauthenticated):
        open_signed(bad, Consent, owner.public, what="consent", cache=True)


def test_verified_cache_is_bounded() -> None:
    from credex.protocol import signing

    cache = signing._VerifiedCache(3)
    for i in range(5):
        cache.add(bytes([i]))
    assert bytes([0]) not in cache and bytes([1]) not in cache
    assert all(bytes([i]) in cache for i in (2, 3, 4))


def resigned(body: bytes, message_type: type = Consent, key: SigningKey = KEY) -> Signed:
    return Signed(body=body, signature=key.sign(domain_tag(message_type) + body), key_id=key.key_id)


@pytest.mark.parametrize(
    "padding",
    [
        b"\xa2\x06\x03pad",  # field 100, length-delimited
        b"\xa0\x06\x01",  # field 100, varint
        b"\xfd\x06\x00\x00\x00\x00",  # field 111, fixed32
        b"\x52\x05\x08\x01\xa0\x06\x01",  # not_after (a Timestamp) holding field 100
    ],
    ids=["length-delimited", "varint", "fixed32", "nested"],
)
def test_a_signed_body_with_an_unknown_field_is_malformed(padding: bytes) -> None:
    """The signature is genuine and the bytes decode: only the extra field is wrong."""
    signed = resigned(SEALED.body + padding)
    assert verify(signed, Consent, KEY.public)
    with pytest.raises(InvalidArgument) as err:
        open_signed(signed, Consent, KEY.public, what="consent")
    assert err.value.reason == Reason.MALFORMED
    assert "unknown field (field 1" in err.value.message


def test_an_unknown_field_deep_inside_is_named_where_it_is() -> None:
    record = Record(record_id="r-1").SerializeToString() + b"\xa2\x06\x01x"
    body = NodeAnswer(request_id="q").SerializeToString() + b"\x2a" + bytes([len(record)])
    with pytest.raises(InvalidArgument) as err:
        parse(body + record, NodeAnswer, what="answer")
    assert "field 100 in credex.v1.Record" in err.value.message


def test_a_body_over_its_types_cap_is_refused_before_its_signature_is_checked() -> None:
    cap = max_body_bytes(Consent)
    assert cap == 4096
    big = Signed(body=b"\x00" * (cap + 1), signature=b"s" * 64, key_id=KEY.key_id)
    with pytest.raises(InvalidArgument) as err:
        open_signed(big, Consent, KEY.public, what="consent")
    assert err.value.message == (
        f"consent is {cap + 1} bytes; a credex.v1.Consent may be at most 4096 bytes"
    )
    # the same bytes as a larger type pass the size check and fail only their signature
    with pytest.raises(Unauthenticated):
        open_signed(big, NodeAnswer, KEY.public, what="answer")


def test_every_signed_type_has_a_cap_and_unlisted_types_get_the_default() -> None:
    names = {
        m.full_name
        for module in contract_modules()
        for m in module.DESCRIPTOR.message_types_by_name.values()
    }
    assert {"credex.v1.Consent", "credex.v1.ProfileRequest", "credex.v1.NodeAnswer"} <= names
    assert set(MAX_SIGNED_BODY_BYTES) - {"credex.v1.Signed"} <= names  # no stale row
    assert max_body_bytes(ConsentListQuery) == 1024
    assert max_body_bytes(Record) == DEFAULT_MAX_SIGNED_BODY_BYTES  # not a signed type
    assert max(MAX_SIGNED_BODY_BYTES.values()) <= MAX_BODY_BYTES + 4096


def test_lenient_parse_reads_back_what_was_stored_before_the_checks() -> None:
    body = SEALED.body + b"\xa2\x06\x03pad"
    with pytest.raises(InvalidArgument):
        parse(body, Consent, what="consent")
    assert parse(body, Consent, what="stored consent", strict=False).consent_id == "c-1"
