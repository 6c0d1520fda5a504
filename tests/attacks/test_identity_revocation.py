"""Item 9: revoked certificates keep working.

A suspended or removed member, or whoever holds a rotated-away certificate, still completes the
TLS handshake (certificates used to last a year, and there is no revocation list). Certificates
must be short-lived, renewed by running members with their signing key, and their revoked
serials published in the directory-signed registry: the directory refuses them on every call
at once, every node within one sync interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from credex.directory import admin as directory_admin
from credex.protocol import pki
from credex.protocol.channels import open_directory_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.sdk.rotation import KeyFiles, rotate_key
from credex.v1 import enrollment_pb2
from credex.v1.enrollment_pb2_grpc import EnrollmentServiceStub
from tests.attacks.conftest import Target
from tests.attacks.identity_tools import (
    OK,
    Member,
    describe_node,
    enroll_member,
    list_members,
    outcome,
    poll,
    registry_snapshot,
    removed_afterwards,
)

DAY_S = 86_400.0
# A suspended or removed member's certificate is refused as such.
SUSPENDED = ("MEMBER_SUSPENDED", grpc.StatusCode.PERMISSION_DENIED)


def serial_of(tls: TlsIdentity) -> str:
    assert tls.cert_pem is not None
    return format(x509.load_pem_x509_certificate(tls.cert_pem).serial_number, "x")


def revoked_serials(target: Target) -> dict[str, float]:
    snapshot = registry_snapshot(target)
    return {
        r.serial: r.revoked_at.seconds + r.revoked_at.nanos / 1e9
        for r in snapshot.revoked_certificates
    }


def test_certificates_are_short_lived(target: Target, tmp_path: Path) -> None:
    with removed_afterwards(target, "short-lived"):
        member = enroll_member(target, tmp_path, "short-lived")
    cert = pki.load_cert(member.files.cert)
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert lifetime <= dt.timedelta(seconds=DAY_S + 60), f"certificate valid for {lifetime}"


@pytest.mark.parametrize("status", ["suspended", "removed"])
def test_a_suspended_or_removed_member_is_refused_on_every_call(
    target: Target, tmp_path: Path, status: str
) -> None:
    member_id = f"revoked-{status}"
    with removed_afterwards(target, member_id):
        member = enroll_member(target, tmp_path, member_id)
        tls = member.tls()
        assert list_members(target, tls) == OK
        directory_admin.set_member_status(target.settings, member_id, status)
        # the directory refuses the certificate itself, from its own records, at once
        assert list_members(target, tls) == SUSPENDED
        # the signed registry lists its serial for the nodes ...
        assert serial_of(tls) in revoked_serials(target)
        # ... and a node refuses it too once it has synced (nodes serve only the directory,
        # but a revoked certificate is refused before anything else is looked at)
        node_id = target.node_ids[0]
        poll(lambda: describe_node(target, node_id, tls) == SUSPENDED, f"{node_id} refuses it")


def test_a_rotated_away_certificate_is_revoked(target: Target, tmp_path: Path) -> None:
    with removed_afterwards(target, "rotated-away"):
        member = enroll_member(target, tmp_path, "rotated-away")
        old = member.tls()
        files = member.files
        before = time.time()
        valid_until = asyncio.run(
            rotate_key(
                directory_address=target.address,
                member_id=member.member_id,
                current_key=member.key,
                tls=old,
                files=KeyFiles(tmp_path / "signing.key", files.tls_key, files.cert),
            )
        )
        new = member.tls()
        revoked = revoked_serials(target)
    # the old certificate lapses with the old key (after the overlap); the new one stands
    assert serial_of(old) in revoked
    assert before <= revoked[serial_of(old)] <= valid_until + 1
    assert serial_of(new) not in revoked


def renewal_request(
    member_id: str, key: object, tls_key: object
) -> enrollment_pb2.RenewCertificateRequest:
    renewal = enrollment_pb2.CertificateRenewal(
        member_id=member_id,
        csr_pem=pki.create_csr(tls_key, member_id),  # type: ignore[arg-type]
        issued_at=to_timestamp(time.time()),
    )
    return enrollment_pb2.RenewCertificateRequest(renewal=seal(renewal, key))  # type: ignore[arg-type]


def renew(
    target: Target, request: enrollment_pb2.RenewCertificateRequest
) -> tuple[str, grpc.StatusCode]:
    """Renewal on the public port: no certificate needed, the signing key is the proof."""

    async def call() -> tuple[str, grpc.StatusCode]:
        async with open_directory_channel(target.public_address, TlsIdentity(target.ca_pem)) as ch:
            try:
                await EnrollmentServiceStub(ch).RenewCertificate(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                return outcome(exc)
        return OK

    return asyncio.run(call())


def test_a_removed_member_cannot_renew_and_a_member_with_an_expired_certificate_can(
    target: Target, tmp_path: Path
) -> None:
    with removed_afterwards(target, "renewer", "renewer-gone"):
        member: Member = enroll_member(target, tmp_path / "a", "renewer")
        gone = enroll_member(target, tmp_path / "b", "renewer-gone")
        # renewal needs no certificate (an expired one, after days switched off, is no use):
        # the member's current signing key is the proof
        assert renew(target, renewal_request("renewer", member.key, pki.new_tls_key())) == OK
        # a key that is not the member's current one renews nothing
        stranger = pki.new_tls_key()
        assert renew(target, renewal_request("renewer", gone.key, stranger))[1] == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        directory_admin.set_member_status(target.settings, "renewer-gone", "removed")
        assert renew(target, renewal_request("renewer-gone", gone.key, pki.new_tls_key())) == (
            "MEMBER_SUSPENDED",
            grpc.StatusCode.PERMISSION_DENIED,
        )
