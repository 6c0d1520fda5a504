"""Keeping a member's certificate fresh. Certificates are short-lived (a day by default): a
member makes a new TLS key, asks the directory for a certificate with its signing key, and
stores both, in the last third of the current certificate's life, or at once when it has
expired or predates URI identities (renewal on the public port needs no certificate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from credex.protocol.clock import Clock, system_clock, to_timestamp
from credex.protocol.keys import SigningKey, write_private, write_public
from credex.protocol.pki import create_csr, key_pem, new_tls_key
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.sdk.enrollment import check_certificate
from credex.sdk.link import DirectoryLink
from credex.v1 import enrollment_pb2

RENEW_TIMEOUT_S = 15.0
# Renew once less than this share of a certificate's lifetime is left.
RENEW_WHEN_LEFT = 1 / 3


def renew_at(tls: TlsIdentity) -> float:
    """When `tls`'s certificate should be renewed (seconds since the epoch): in the last
    third of its life; at once if it names no credex identity (issued before URI names)."""
    if tls.identity is None:
        return 0.0
    start, end = tls.valid_from, tls.expires_at
    return end - (end - start) * RENEW_WHEN_LEFT


@dataclass(frozen=True)
class CertificateRenewal:
    """What renewing one member's certificate takes."""

    member_id: str
    # Where the directory serves RenewCertificate: its public port (no certificate needed,
    # so an expired one is renewed too) or its member port.
    address: str
    signing_key: Callable[[], SigningKey]
    tls: Callable[[], TlsIdentity]
    tls_key_path: Path
    cert_path: Path
    # Whether `address` is the member port, where the current certificate is shown.
    member_port: bool = False

    async def renew(self, *, clock: Clock = system_clock) -> TlsIdentity:
        """A new TLS key and certificate, checked and written over the old ones."""
        current = self.tls()
        tls_key = new_tls_key()
        renewal = enrollment_pb2.CertificateRenewal(
            member_id=self.member_id,
            csr_pem=create_csr(tls_key, self.member_id),
            issued_at=to_timestamp(clock()),
        )
        request = enrollment_pb2.RenewCertificateRequest(renewal=seal(renewal, self.signing_key()))
        channel_tls = current if self.member_port else TlsIdentity(current.ca_pem)
        async with DirectoryLink(self.address, channel_tls) as link:
            response = await link.call(
                link.enrollment.RenewCertificate,
                request,
                deadline_s=RENEW_TIMEOUT_S,
                until_answered=True,
            )
        check_certificate(
            response.certificate_pem, current.ca_pem, self.member_id, tls_key.public_key()
        )
        write_private(self.tls_key_path, key_pem(tls_key))
        write_public(self.cert_path, response.certificate_pem)
        return TlsIdentity(current.ca_pem, response.certificate_pem, key_pem(tls_key))

    async def renew_if_due(self, *, clock: Clock = system_clock) -> TlsIdentity | None:
        """The renewed identity if renewal was due, else None."""
        if clock() < renew_at(self.tls()):
            return None
        return await self.renew(clock=clock)
