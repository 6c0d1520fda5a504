"""Replacing a member's signing key and TLS certificate without downtime: the new keys are made
here, the directory certifies them, and the old key keeps verifying for an overlap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from credex.protocol.clock import Clock, from_timestamp, system_clock, to_timestamp
from credex.protocol.keys import SigningKey, write_private, write_public
from credex.protocol.pki import create_csr, key_pem, new_tls_key
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.sdk.enrollment import check_certificate
from credex.sdk.link import DirectoryLink
from credex.v1 import member_pb2

ROTATE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class KeyFiles:
    signing_key: Path
    tls_key: Path
    cert: Path


async def rotate_key(
    *,
    directory_address: str,
    member_id: str,
    current_key: SigningKey,
    tls: TlsIdentity,
    files: KeyFiles,
    clock: Clock = system_clock,
) -> float:
    """Rotate; on success the new key and certificate replace the files (a running node picks
    them up by itself). Returns the time until which the old key still verifies."""
    new_key = SigningKey.generate()
    tls_key = new_tls_key()
    rotation = member_pb2.KeyRotation(
        member_id=member_id,
        new_signing_key=new_key.public.raw,
        csr_pem=create_csr(tls_key, member_id),
        issued_at=to_timestamp(clock()),
    )
    request = member_pb2.RotateKeyRequest(
        rotation=seal(rotation, current_key), proof=seal(rotation, new_key)
    )
    async with DirectoryLink(directory_address, tls) as link:
        # a lost reply is fetched again with the very same request (within the key overlap)
        response = await link.call(
            link.members.RotateKey, request, deadline_s=ROTATE_TIMEOUT_S, until_answered=True
        )
    check_certificate(response.certificate_pem, tls.ca_pem, member_id, tls_key.public_key())
    # Certificate and TLS key first, the signing key last: a reader sees a consistent pair.
    write_private(files.tls_key, key_pem(tls_key))
    write_public(files.cert, response.certificate_pem)
    new_key.save(files.signing_key, overwrite=True)
    return from_timestamp(response.old_key_valid_until)
