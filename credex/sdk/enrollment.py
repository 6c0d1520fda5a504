"""Joining the federation from the member's side: keys are made here, only public halves and a
certificate signing request travel, and the answer is checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from credex.protocol.clock import Clock, system_clock, to_timestamp
from credex.protocol.identity import certificate_identity
from credex.protocol.keys import SigningKey, VerifyKey, save_public, write_private, write_public
from credex.protocol.pki import PkiError, create_csr, key_pem, new_tls_key
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.sdk.link import DirectoryLink
from credex.v1 import enrollment_pb2, member_pb2

ROLES = {
    "node": member_pb2.MemberRole.MEMBER_ROLE_NODE,
    "requester": member_pb2.MemberRole.MEMBER_ROLE_REQUESTER,
}
ENROLL_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class EnrollmentFiles:
    """Where enrollment writes what it obtains."""

    tls_key: Path
    cert: Path
    ca: Path
    directory_key: Path


async def enroll(
    *,
    public_address: str,
    ca_pem: bytes,
    token: str,
    member_id: str,
    role: str,
    signing_key: SigningKey,
    name: str,
    files: EnrollmentFiles,
    clock: Clock = system_clock,
) -> enrollment_pb2.EnrollResponse:
    """Create a TLS key and CSR, enroll with the one-time token (sending the same request
    again if the reply is lost), verify and store the result."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    tls_key = new_tls_key()
    enrollment = enrollment_pb2.Enrollment(
        token=token,
        member_id=member_id,
        role=ROLES[role],
        signing_key=signing_key.public.raw,
        csr_pem=create_csr(tls_key, member_id),
        name=name,
        issued_at=to_timestamp(clock()),
    )
    request = enrollment_pb2.EnrollRequest(enrollment=seal(enrollment, signing_key))
    async with DirectoryLink(public_address, TlsIdentity(ca_pem)) as link:
        # a lost reply is fetched again with the very same request
        response = await link.call(
            link.enrollment.Enroll, request, deadline_s=ENROLL_TIMEOUT_S, until_answered=True
        )
    check_certificate(response.certificate_pem, ca_pem, member_id, tls_key.public_key())
    write_private(files.tls_key, key_pem(tls_key))
    write_public(files.cert, response.certificate_pem)
    write_public(files.ca, ca_pem)
    save_public(VerifyKey(response.directory_public_key), files.directory_key)
    return response


def check_certificate(cert_pem: bytes, ca_pem: bytes, member_id: str, public_key: object) -> None:
    """Refuse a certificate not issued by the CA, not for `member_id` or not for our key."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"the directory returned an unusable certificate: {exc}") from None
    identity = certificate_identity(cert)
    if identity is None or identity.directory or identity.member_id != member_id:
        raise PkiError("the directory returned a certificate for another member")
    if cert.public_key() != public_key:
        raise PkiError("the directory returned a certificate for another key")
