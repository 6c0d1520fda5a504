"""The directory's refusals, seen through the client SDK as typed credex errors, and what a
requester can check on a profile without trusting the directory."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from credex.node.config import load_node_config
from credex.protocol import vocab
from credex.protocol.channels import open_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.errors import (
    REASON_KEY,
    AlreadyExists,
    CredexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProfileVerificationError,
    Reason,
    Unauthenticated,
    from_rpc_error,
)
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.signing import domain_tag, open_signed, seal, verify
from credex.protocol.tls import TlsIdentity
from credex.sdk.client import RequesterClient
from credex.testing.federation import Federation
from credex.v1 import requester_pb2, subject_pb2
from credex.v1.common_pb2 import Category as Cat
from credex.v1.common_pb2 import Purpose
from credex.v1.consent_pb2 import ConsentRevocation
from credex.v1.node_pb2 import NodeAnswer
from credex.v1.requester_pb2_grpc import RequesterServiceStub
from credex.v1.subject_pb2_grpc import SubjectServiceStub

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
SCHOOL = Purpose.PURPOSE_SCHOOL_ENROLLMENT
FIN = Cat.CATEGORY_FINANCIAL
VOL = Cat.CATEGORY_VOLUNTEERING
JUD = Cat.CATEGORY_JUDICIAL
EDU = Cat.CATEGORY_EDUCATION
DAY = 86_400.0


def run(fed: Federation, coro: Any) -> Any:
    return fed.loop.run(coro)


def grant(
    fed: Federation,
    subject: str = "S1",
    *,
    requester_id: str = "bank",
    purpose: vocab.Purpose = LOAN,
    categories: Sequence[vocab.Category] = (FIN, VOL, JUD),
    max_uses: int = 5,
    valid_days: float = 30.0,
) -> str:
    client = fed.subject(subject)
    return str(
        run(
            fed,
            client.grant(
                requester_id=requester_id,
                purpose=purpose,
                categories=categories,
                max_uses=max_uses,
                valid_days=valid_days,
            ),
        )
    )


def refused(fed: Federation, coro: Any, error: type[CredexError], reason: Reason) -> CredexError:
    with pytest.raises(CredexError) as info:
        run(fed, coro)
    assert type(info.value) is error, info.value
    assert info.value.reason == reason, info.value
    return info.value


def unverified(fed: Federation, coro: Any) -> ProfileVerificationError:
    """The SDK refuses what it cannot verify, as its own error: no server refused anything."""
    with pytest.raises(ProfileVerificationError) as info:
        run(fed, coro)
    assert not isinstance(info.value, CredexError)
    return info.value


@pytest.fixture(scope="module")
def stub(federation: Federation) -> Iterator[Any]:
    """Raw stubs on the directory, for what the SDK would not send: the member port as the
    bank, the public port as anyone."""

    async def open_channels() -> tuple[grpc.aio.Channel, grpc.aio.Channel]:
        return (
            open_channel(federation.address, federation.requester_homes["bank"].tls()),
            open_channel(federation.public_address, TlsIdentity(federation.ca_pem)),
        )

    members, public = run(federation, open_channels())
    yield SimpleNamespace(
        GetProfile=RequesterServiceStub(members).GetProfile,
        RevokeConsent=SubjectServiceStub(public).RevokeConsent,
    )
    run(federation, members.close(None))
    run(federation, public.close(None))


def trailers(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    metadata: Any = err.trailing_metadata() or ()
    return [(str(key), str(value)) for key, value in metadata]


async def typed(method: Any, request: Any) -> Any:
    """Call a raw stub method, raising the typed credex error the SDK would raise."""
    try:
        return await method(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


def get_profile_raw(fed: Federation, stub: Any, request: Any) -> Any:
    async def call() -> Any:
        return await stub.GetProfile(request, timeout=10)

    return run(fed, call())


# --- consent grants --------------------------------------------------------------------------


def test_consent_beyond_its_purpose_is_refused_at_grant(federation: Federation) -> None:
    subject = federation.subject("S1")
    refused(
        federation,
        subject.grant(requester_id="bank", purpose=LOAN, categories=[FIN, EDU]),
        PermissionDenied,
        Reason.CONSENT_EXCEEDS_PURPOSE,
    )


def test_consent_signed_with_an_unregistered_key_is_refused(federation: Federation) -> None:
    impostor = federation.subject("S1", key=SigningKey.generate())
    refused(
        federation,
        impostor.grant(requester_id="bank", purpose=LOAN, categories=[FIN]),
        Unauthenticated,
        Reason.BAD_SIGNATURE,
    )


def test_consent_signed_with_another_subjects_key_is_refused(federation: Federation) -> None:
    impostor = federation.subject("S1", key=federation.subject_keys["S2"])
    refused(
        federation,
        impostor.grant(requester_id="bank", purpose=LOAN, categories=[FIN]),
        Unauthenticated,
        Reason.BAD_SIGNATURE,
    )


def test_consent_for_an_unknown_requester_is_refused(federation: Federation) -> None:
    subject = federation.subject("S1")
    refused(
        federation,
        subject.grant(requester_id="loan-shark", purpose=LOAN, categories=[FIN]),
        NotFound,
        Reason.REQUESTER_NOT_FOUND,
    )


def test_consent_for_a_node_as_requester_is_refused(federation: Federation) -> None:
    subject = federation.subject("S1")
    refused(
        federation,
        subject.grant(requester_id="pboc", purpose=LOAN, categories=[FIN]),
        NotFound,
        Reason.REQUESTER_NOT_FOUND,
    )


def test_consent_of_an_unknown_subject_is_refused(federation: Federation) -> None:
    stranger = federation.subject("S404", key=SigningKey.generate())
    refused(
        federation,
        stranger.grant(requester_id="bank", purpose=LOAN, categories=[FIN]),
        NotFound,
        Reason.UNKNOWN_SUBJECT,
    )


def test_same_consent_id_granted_twice_is_refused(federation: Federation) -> None:
    subject = federation.subject("S1")
    consent_id = f"c-twice-{uuid.uuid4().hex}"
    granted = run(
        federation,
        subject.grant(requester_id="bank", purpose=LOAN, categories=[FIN], consent_id=consent_id),
    )
    assert granted == consent_id
    refused(
        federation,
        subject.grant(requester_id="bank", purpose=LOAN, categories=[VOL], consent_id=consent_id),
        AlreadyExists,
        Reason.CONSENT_EXISTS,
    )
    views = [v for v in run(federation, subject.consents()) if v.consent_id == consent_id]
    assert len(views) == 1
    assert views[0].categories == ["financial"]


def test_consent_id_of_another_subject_cannot_be_overwritten(federation: Federation) -> None:
    consent_id = f"c-taken-{uuid.uuid4().hex}"
    s1, s2 = federation.subject("S1"), federation.subject("S2")
    run(
        federation,
        s1.grant(requester_id="bank", purpose=LOAN, categories=[FIN], consent_id=consent_id),
    )
    refused(
        federation,
        s2.grant(requester_id="bank", purpose=LOAN, categories=[VOL], consent_id=consent_id),
        AlreadyExists,
        Reason.CONSENT_EXISTS,
    )
    assert consent_id in {v.consent_id for v in run(federation, s1.consents())}
    assert consent_id not in {v.consent_id for v in run(federation, s2.consents())}


# --- profile requests ------------------------------------------------------------------------


def test_expired_consent_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, valid_days=1)
    bank = federation.requester("bank")
    with federation.clock_moved(2 * DAY):
        refused(
            federation,
            bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN),
            PermissionDenied,
            Reason.CONSENT_EXPIRED,
        )
        views = {v.consent_id: v for v in run(federation, federation.subject("S1").consents())}
        assert views[consent_id].status == "expired"
        assert views[consent_id].uses == 0


def test_consent_used_up(federation: Federation) -> None:
    consent_id = grant(federation, categories=[FIN], max_uses=1)
    bank = federation.requester("bank")
    profile = run(
        federation, bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    )
    assert {r.record_id for r in profile.records} == {"loan-1", "loan-2"}
    refused(
        federation,
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN),
        PermissionDenied,
        Reason.CONSENT_USED_UP,
    )


def test_consent_used_by_another_requester_is_refused(federation: Federation) -> None:
    consent_id = grant(federation)
    school = federation.requester("school")
    refused(
        federation,
        school.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN),
        PermissionDenied,
        Reason.CONSENT_WRONG_REQUESTER,
    )


def test_consent_used_for_another_purpose_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, categories=[VOL])
    bank = federation.requester("bank")
    refused(
        federation,
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=SCHOOL),
        PermissionDenied,
        Reason.CONSENT_WRONG_PURPOSE,
    )


def test_consent_of_another_subject_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, "S2", categories=[VOL])
    bank = federation.requester("bank")
    refused(
        federation,
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN),
        PermissionDenied,
        Reason.SUBJECT_MISMATCH,
    )


def test_unknown_consent_is_refused(federation: Federation) -> None:
    bank = federation.requester("bank")
    refused(
        federation,
        bank.get_profile(subject_id="S1", consent_id=f"c-nope-{uuid.uuid4().hex}", purpose=LOAN),
        NotFound,
        Reason.CONSENT_NOT_FOUND,
    )


def test_refused_requests_do_not_count_as_uses(federation: Federation) -> None:
    consent_id = grant(federation, categories=[FIN], max_uses=1)
    school, bank = federation.requester("school"), federation.requester("bank")
    refused(
        federation,
        school.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN),
        PermissionDenied,
        Reason.CONSENT_WRONG_REQUESTER,
    )
    refused(
        federation,
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN, categories=[VOL]),
        PermissionDenied,
        Reason.CATEGORY_NOT_CONSENTED,
    )
    profile = run(
        federation, bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    )
    assert [n.node_id for n in profile.nodes] == ["pboc"]


def test_replayed_profile_request_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, categories=[FIN])
    bank = federation.requester("bank")
    request = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    first = run(federation, bank.send_profile_request(request))
    assert [n.status for n in first.nodes] == ["OK"]
    refused(federation, bank.send_profile_request(request), PermissionDenied, Reason.REPLAY)
    views = {v.consent_id: v for v in run(federation, federation.subject("S1").consents())}
    assert views[consent_id].uses == 1


def test_profile_request_from_the_future_or_expired_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, categories=[FIN])
    bank = federation.requester("bank")
    early = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    with federation.clock_moved(-3600):
        refused(
            federation,
            bank.send_profile_request(early),
            PermissionDenied,
            Reason.REQUEST_NOT_YET_VALID,
        )
    late = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    with federation.clock_moved(3600):
        refused(
            federation, bank.send_profile_request(late), PermissionDenied, Reason.REQUEST_EXPIRED
        )


def hand_made_request(
    fed: Federation, *, consent_id: str, requester_id: str, key: SigningKey
) -> requester_pb2.GetProfileRequest:
    now = fed.clock()
    request = requester_pb2.ProfileRequest(
        request_id=f"r-{uuid.uuid4().hex}",
        nonce=os.urandom(16),
        issued_at=to_timestamp(now),
        expires_at=to_timestamp(now + 60),
        requester_id=requester_id,
        subject_id="S1",
        consent_id=consent_id,
        purpose=LOAN,
    )
    return requester_pb2.GetProfileRequest(request=seal(request, key))


def test_request_signed_by_one_requester_naming_another_is_refused(
    federation: Federation,
) -> None:
    consent_id = grant(federation, requester_id="school", purpose=SCHOOL, categories=[VOL])
    bank = federation.requester("bank")
    request = hand_made_request(
        federation,
        consent_id=consent_id,
        requester_id="school",
        key=federation.requester_keys["bank"],
    )
    refused(federation, bank.send_profile_request(request), Unauthenticated, Reason.UNKNOWN_SIGNER)


def test_request_signed_by_a_node_key_is_refused(federation: Federation) -> None:
    consent_id = grant(federation)
    node_key = SigningKey.load(load_node_config(federation.node_configs["pboc"]).signing_key)
    bank = federation.requester("bank")
    request = hand_made_request(
        federation, consent_id=consent_id, requester_id="pboc", key=node_key
    )
    refused(federation, bank.send_profile_request(request), PermissionDenied, Reason.WRONG_ROLE)


def test_profile_request_with_altered_body_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, categories=[FIN])
    bank = federation.requester("bank")
    request = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    body = requester_pb2.ProfileRequest.FromString(request.request.body)
    body.subject_id = "S2"
    request.request.body = body.SerializeToString(deterministic=True)
    refused(federation, bank.send_profile_request(request), Unauthenticated, Reason.BAD_SIGNATURE)


def test_undecodable_profile_request_is_malformed(federation: Federation) -> None:
    bank = federation.requester("bank")
    garbage = b"\x0a\x64short"
    request = requester_pb2.GetProfileRequest()
    request.request.body = garbage
    request.request.key_id = federation.requester_keys["bank"].key_id
    request.request.signature = federation.requester_keys["bank"].sign(
        domain_tag(requester_pb2.ProfileRequest) + garbage
    )
    refused(federation, bank.send_profile_request(request), InvalidArgument, Reason.MALFORMED)


def test_undecodable_request_bytes_get_invalid_argument(federation: Federation) -> None:
    """Bytes that are not a GetProfileRequest at all: a clear INVALID_ARGUMENT, like any other
    malformed input, not an UNKNOWN status that names a Python exception class."""

    async def call() -> grpc.aio.AioRpcError:
        async with open_channel(
            federation.address, federation.requester_homes["bank"].tls()
        ) as channel:
            raw = channel.unary_unary(
                "/credex.v1.RequesterService/GetProfile",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\x0a\x64short", timeout=5)
            return info.value

    err = run(federation, call())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert (err.details() or "").startswith(f"{Reason.MALFORMED}: ")
    assert (REASON_KEY, str(Reason.MALFORMED)) in trailers(err)


# --- revocations -----------------------------------------------------------------------------


def test_revocation_signed_by_another_key_is_refused(federation: Federation) -> None:
    consent_id = grant(federation)
    impostor = federation.subject("S1", key=SigningKey.generate())
    refused(federation, impostor.revoke(consent_id), Unauthenticated, Reason.BAD_SIGNATURE)
    # The consent is still usable.
    bank = federation.requester("bank")
    profile = run(
        federation,
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN, categories=[FIN]),
    )
    assert [n.status for n in profile.nodes] == ["OK"], [
        (n.status, n.detail, n.elapsed_ms) for n in profile.nodes
    ]


def test_revoking_another_subjects_consent_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, "S1")
    other = federation.subject("S2")
    refused(federation, other.revoke(consent_id), PermissionDenied, Reason.SUBJECT_MISMATCH)
    views = {v.consent_id: v for v in run(federation, federation.subject("S1").consents())}
    assert views[consent_id].status == "active"


def test_revoking_an_unknown_consent_is_refused(federation: Federation) -> None:
    subject = federation.subject("S1")
    refused(
        federation, subject.revoke(f"c-nope-{uuid.uuid4().hex}"), NotFound, Reason.CONSENT_NOT_FOUND
    )


def test_stale_revocation_is_refused(federation: Federation, stub: Any) -> None:
    """A revocation signed an hour ago (replayed, or held back) is refused as stale."""
    consent_id = grant(federation)
    revocation = ConsentRevocation(
        consent_id=consent_id,
        subject_id="S1",
        issued_at=to_timestamp(federation.clock() - 3600),
        nonce=os.urandom(16),
    )
    request = subject_pb2.RevokeConsentRequest(
        revocation=seal(revocation, federation.subject_keys["S1"])
    )
    refused(
        federation, typed(stub.RevokeConsent, request), PermissionDenied, Reason.REQUEST_EXPIRED
    )
    views = {v.consent_id: v for v in run(federation, federation.subject("S1").consents())}
    assert views[consent_id].status == "active"


def test_consent_list_of_another_subject_is_refused(federation: Federation) -> None:
    impostor = federation.subject("S1", key=federation.subject_keys["S2"])
    refused(federation, impostor.consents(), Unauthenticated, Reason.BAD_SIGNATURE)


# --- what a requester can check on its own ---------------------------------------------------


def test_profile_node_answers_verify_with_the_registered_node_keys(
    federation: Federation, stub: Any
) -> None:
    consent_id = grant(federation)
    bank = federation.requester("bank")
    request = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    response = get_profile_raw(federation, stub, request)

    members = run(federation, bank.members())
    directory_key = VerifyKey(members.directory_public_key)
    assert directory_key == federation.directory_key.public
    keys = {m.member_id: VerifyKey(m.public_key) for m in members.members}
    for m in members.members:
        assert m.key_id == keys[m.member_id].key_id

    profile = open_signed(response.profile, requester_pb2.Profile, directory_key, what="profile")
    assert (
        profile.request_id
        == requester_pb2.ProfileRequest.FromString(request.request.body).request_id
    )
    ok = [r for r in profile.nodes if r.status == requester_pb2.NodeStatus.NODE_STATUS_OK]
    assert sorted(r.node_id for r in ok) == ["courts", "pboc", "volunteers"], [
        (r.node_id, r.status, r.detail) for r in profile.nodes
    ]
    for result in ok:
        answer = open_signed(result.answer, NodeAnswer, keys[result.node_id], what="answer")
        assert answer.request_id == result.query_id
        assert answer.request_id != profile.request_id  # nodes never see the requester id
        assert answer.node_id == result.node_id
        assert answer.records
        assert {r.category for r in answer.records} <= set(result.categories)
        for other_id, other_key in keys.items():
            if other_id != result.node_id:
                assert not verify(result.answer, NodeAnswer, other_key)
        assert not verify(result.answer, NodeAnswer, directory_key)


def _fresh_profile(fed: Federation, stub: Any) -> tuple[RequesterClient, Any]:
    consent_id = grant(fed)
    bank = fed.requester("bank")
    request = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    return bank, get_profile_raw(fed, stub, request).profile


def test_profile_with_altered_directory_signature_is_rejected(
    federation: Federation, stub: Any
) -> None:
    bank, signed = _fresh_profile(federation, stub)
    verified = run(federation, bank.verify_profile(signed))
    assert {r.node_id for r in verified.records} == {"courts", "pboc", "volunteers"}, [
        (n.node_id, n.status, n.detail) for n in verified.nodes
    ]

    sig = bytearray(signed.signature)
    sig[5] ^= 0x01
    bad_sig = type(signed)(body=signed.body, signature=bytes(sig), key_id=signed.key_id)
    unverified(federation, bank.verify_profile(bad_sig))

    body = bytearray(signed.body)
    body[len(body) // 2] ^= 0x01
    bad_body = type(signed)(body=bytes(body), signature=signed.signature, key_id=signed.key_id)
    unverified(federation, bank.verify_profile(bad_body))


def test_records_altered_by_the_directory_are_rejected(federation: Federation, stub: Any) -> None:
    """Even with a valid directory signature, changed node records do not verify."""
    bank, signed = _fresh_profile(federation, stub)
    profile = requester_pb2.Profile.FromString(signed.body)
    pboc = next(r for r in profile.nodes if r.node_id == "pboc")
    answer = NodeAnswer.FromString(pboc.answer.body)
    answer.records[0].value = 0.0
    pboc.answer.body = answer.SerializeToString(deterministic=True)
    resealed = seal(profile, federation.directory_key)
    unverified(federation, bank.verify_profile(resealed))


def test_answer_relabelled_as_another_node_is_rejected(federation: Federation, stub: Any) -> None:
    bank, signed = _fresh_profile(federation, stub)
    profile = requester_pb2.Profile.FromString(signed.body)
    by_id = {r.node_id: r for r in profile.nodes}
    by_id["courts"].answer.CopyFrom(by_id["pboc"].answer)
    resealed = seal(profile, federation.directory_key)
    unverified(federation, bank.verify_profile(resealed))


def test_answer_moved_from_another_request_is_rejected(federation: Federation, stub: Any) -> None:
    bank, first = _fresh_profile(federation, stub)
    _, second = _fresh_profile(federation, stub)
    old = {r.node_id: r for r in requester_pb2.Profile.FromString(first.body).nodes}
    profile = requester_pb2.Profile.FromString(second.body)
    for result in profile.nodes:
        result.answer.CopyFrom(old[result.node_id].answer)
    resealed = seal(profile, federation.directory_key)
    unverified(federation, bank.verify_profile(resealed))


def test_profile_replayed_for_another_request_is_rejected(
    federation: Federation, stub: Any
) -> None:
    """A genuine, directory-signed profile still fails when it answers another request."""
    consent_id = grant(federation)
    bank = federation.requester("bank")
    first = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    old_profile = get_profile_raw(federation, stub, first).profile
    second = requester_pb2.ProfileRequest.FromString(
        bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN).request.body
    )
    verified = run(
        federation,
        bank.verify_profile(
            old_profile, requester_pb2.ProfileRequest.FromString(first.request.body)
        ),
    )
    assert (
        verified.request_id
        == requester_pb2.ProfileRequest.FromString(first.request.body).request_id
    )
    unverified(federation, bank.verify_profile(old_profile, second))


# --- the directory's audit log ---------------------------------------------------------------


def test_directory_audits_refusals(federation: Federation) -> None:
    """The first refusal of a kind (caller, outcome, subject) is written at once with what it
    claims; repeats within the window are counted in memory, not written one by one."""
    consent_id = grant(federation, "S2", categories=[VOL])
    school = federation.requester("school")
    request_ids = []
    for _ in range(3):
        request = school.profile_request(subject_id="S2", consent_id=consent_id, purpose=LOAN)
        request_ids.append(requester_pb2.ProfileRequest.FromString(request.request.body).request_id)
        refused(
            federation,
            school.send_profile_request(request),
            PermissionDenied,
            Reason.CONSENT_WRONG_REQUESTER,
        )
    db = federation.root / "directory" / "directory.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT request_id, actor, action, outcome, consent_id, subject_ref, count "
            "FROM audit_log WHERE actor = 'school' AND subject_ref = 'S2'"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [
        (
            request_ids[0],
            "school",
            "profile",
            "refused:CONSENT_WRONG_REQUESTER",
            consent_id,
            "S2",
            1,
        )
    ]


@pytest.mark.parametrize(
    ("purpose", "categories"),
    [(99, []), (LOAN, [99]), (LOAN, [FIN, 42])],
    ids=["unknown-purpose", "unknown-category", "one-unknown-category"],
)
def test_enum_values_this_version_does_not_know_are_malformed(
    federation: Federation, purpose: int, categories: list[int]
) -> None:
    consent_id = grant(federation)
    bank = federation.requester("bank")
    request = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    body = requester_pb2.ProfileRequest.FromString(request.request.body)
    body.purpose = purpose  # type: ignore[assignment]
    body.categories[:] = categories  # type: ignore[assignment]
    resigned = requester_pb2.GetProfileRequest(
        request=seal(body, federation.requester_keys["bank"])
    )
    refused(federation, bank.send_profile_request(resigned), InvalidArgument, Reason.MALFORMED)


def test_subject_refusals_are_audited_under_the_subject_only_once_proven(
    federation: Federation, stub: Any
) -> None:
    consent_id = grant(federation, "S9", categories=[VOL])
    revocation = ConsentRevocation(
        consent_id=consent_id,
        subject_id="S9",
        issued_at=to_timestamp(federation.clock()),
        nonce=os.urandom(16),
    )
    forged = subject_pb2.RevokeConsentRequest(revocation=seal(revocation, SigningKey.generate()))
    refused(federation, typed(stub.RevokeConsent, forged), Unauthenticated, Reason.BAD_SIGNATURE)
    genuine = subject_pb2.RevokeConsentRequest(
        revocation=seal(revocation, federation.subject_keys["S9"])
    )
    run(federation, typed(stub.RevokeConsent, genuine))
    refused(federation, typed(stub.RevokeConsent, genuine), PermissionDenied, Reason.REPLAY)
    db = federation.root / "directory" / "directory.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT actor, outcome, subject_ref FROM audit_log "
            "WHERE action = 'consent-status' AND (consent_id = ? OR subject_ref = 'S9') "
            "AND outcome LIKE 'refused:%' ORDER BY seq",
            (consent_id,),
        ).fetchall()
    finally:
        conn.close()
    # the forgery is never filed under S9 (as the first of its kind it is written under
    # nobody; if an earlier forgery opened the window, it is only counted); the replay of
    # S9's genuine message is
    assert ("S9", "refused:REPLAY", "S9") in rows
    assert all(row[2] == "" for row in rows if row[1] == "refused:BAD_SIGNATURE")
