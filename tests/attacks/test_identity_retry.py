"""Item 10: lost replies lock members out.

The network drops the reply to a RotateKey or an Enroll after the directory acted on it. The
member, which never stored the new certificate, sends the very same request again: it must get
the very same answer, not a refusal that leaves it locked out or its member id burned. And when
a member's key is lost or stolen, the operator resets it with a fresh one-time token.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from credex.directory import admin as directory_admin
from credex.protocol import pki
from credex.protocol.channels import open_directory_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.errors import CredexError
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.sdk.enrollment import ROLES, EnrollmentFiles, enroll
from credex.v1 import enrollment_pb2, member_pb2
from credex.v1.enrollment_pb2_grpc import EnrollmentServiceStub
from credex.v1.member_pb2_grpc import MemberServiceStub
from tests.attacks.conftest import Target
from tests.attacks.identity_tools import (
    OK,
    enroll_member,
    list_members,
    outcome,
    removed_afterwards,
)


async def send_twice(address: str, tls: TlsIdentity, call: object) -> list[object]:
    """Send one request twice over one channel; the first answer is "lost" (kept only to
    compare). Each answer is the response, or (reason, code) for a refusal."""
    answers: list[object] = []
    async with open_directory_channel(address, tls) as channel:
        for _ in range(2):
            try:
                answers.append(await call(channel))  # type: ignore[operator]
            except grpc.aio.AioRpcError as exc:
                answers.append(outcome(exc))
    return answers


def test_a_lost_enrollment_reply_can_be_fetched_again(target: Target, tmp_path: Path) -> None:
    token = directory_admin.create_enrollment_token(
        target.settings, member_id="retry-enroll", role="requester"
    )
    key, tls_key = SigningKey.generate(), pki.new_tls_key()
    enrollment = enrollment_pb2.Enrollment(
        token=token,
        member_id="retry-enroll",
        role=ROLES["requester"],
        signing_key=key.public.raw,
        csr_pem=pki.create_csr(tls_key, "retry-enroll"),
        name="retry-enroll",
        issued_at=to_timestamp(time.time()),
    )
    request = enrollment_pb2.EnrollRequest(enrollment=seal(enrollment, key))
    with removed_afterwards(target, "retry-enroll"):
        first, again = asyncio.run(
            send_twice(
                target.public_address,
                TlsIdentity(target.ca_pem),
                lambda ch: EnrollmentServiceStub(ch).Enroll(request, timeout=10),
            )
        )
    assert isinstance(first, enrollment_pb2.EnrollResponse), first
    assert again == first, f"the retried enrollment got {again}"


def test_a_lost_rotation_reply_can_be_fetched_again(target: Target, tmp_path: Path) -> None:
    with removed_afterwards(target, "retry-rotate"):
        member = enroll_member(target, tmp_path, "retry-rotate")
        old_tls = member.tls()
        new_key, tls_key = SigningKey.generate(), pki.new_tls_key()
        rotation = member_pb2.KeyRotation(
            member_id="retry-rotate",
            new_signing_key=new_key.public.raw,
            csr_pem=pki.create_csr(tls_key, "retry-rotate"),
            issued_at=to_timestamp(time.time()),
        )
        request = member_pb2.RotateKeyRequest(
            rotation=seal(rotation, member.key), proof=seal(rotation, new_key)
        )
        first, again = asyncio.run(
            send_twice(
                target.address,
                old_tls,
                lambda ch: MemberServiceStub(ch).RotateKey(request, timeout=10),
            )
        )
        assert isinstance(first, member_pb2.RotateKeyResponse), first
        assert again == first, f"the retried rotation got {again}"
        # and the member, with the certificate from the retried reply, is in
        assert isinstance(again, member_pb2.RotateKeyResponse)
        new_tls = TlsIdentity(target.ca_pem, again.certificate_pem, pki.key_pem(tls_key))
        assert list_members(target, new_tls) == OK


def test_the_operator_resets_a_lost_key_with_a_fresh_token(target: Target, tmp_path: Path) -> None:
    """The member's keys are gone (or stolen): the operator revokes them and issues a token
    with which the member enrolls again, under the same id, with new keys."""
    with removed_afterwards(target, "reset-me"):
        lost = enroll_member(target, tmp_path / "lost", "reset-me")
        lost_tls = lost.tls()
        assert list_members(target, lost_tls) == OK
        token = directory_admin.reset_member_key(target.settings, "reset-me")
        # the old certificate is refused at once, whoever holds it
        assert list_members(target, lost_tls) == (
            "CERTIFICATE_REVOKED",
            grpc.StatusCode.UNAUTHENTICATED,
        )
        # the member enrolls again under its id with the token and keys made anew
        member = enroll_again(target, tmp_path / "new", "reset-me", token)
        assert list_members(target, member) == OK
        # the token works once
        try:
            enroll_again(target, tmp_path / "twice", "reset-me", token)
        except CredexError as err:
            assert err.reason == "ENROLLMENT_REFUSED"
        else:
            raise AssertionError("a reset token enrolled twice")


def enroll_again(target: Target, folder: Path, member_id: str, token: str) -> TlsIdentity:
    folder.mkdir(parents=True)
    files = EnrollmentFiles(
        folder / "tls.key", folder / "tls.crt", folder / "ca.crt", folder / "directory.pub"
    )
    asyncio.run(
        enroll(
            public_address=target.public_address,
            ca_pem=target.ca_pem,
            token=token,
            member_id=member_id,
            role="requester",
            signing_key=SigningKey.generate(),
            name=member_id,
            files=files,
        )
    )
    return TlsIdentity.load(files.ca, files.cert, files.tls_key)
