"""Members' certificates and keys at the directory: issuing (for enrollment), renewing,
rotating, and refusing revoked certificates on every call.

Certificates are short-lived (`cert_lifetime_s`, a day by default); running members renew
them with their signing key before they expire. A certificate names exactly the host names
the operator granted the member. Each answer is stored under its request's digest, so a
member whose reply was lost sends the same request again and gets the same answer.
"""

from __future__ import annotations

from typing import Any

import grpc
from cryptography import x509

from credex.directory import config
from credex.directory.certificates import MAX_LIVE_CERTIFICATES, CertificateLog, request_digest
from credex.directory.registry import MemberInfo, Registry
from credex.protocol.clock import Clock, from_timestamp, to_timestamp
from credex.protocol.errors import Reason, refused
from credex.protocol.identity import serial_hex
from credex.protocol.keys import VerifyKey
from credex.protocol.pki import CertificateAuthority, PkiError, cert_pem
from credex.protocol.revocation import refuse_revoked
from credex.protocol.signing import open_signed, parse, verify
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.peers import peer_identity, require_peer
from credex.runtime.storage import Storage
from credex.v1 import enrollment_pb2, member_pb2

Context = grpc.aio.ServicerContext[Any, Any]
# How far a signed rotation or renewal may be from the directory's clock.
REQUEST_MAX_AGE_S = 300.0
# How long a rotated-away key (and the certificate that went with it) keeps working unless the
# settings say otherwise: enough for requests and answers in flight, and for retrying a
# rotation whose reply was lost.
KEY_OVERLAP_S = config.KEY_OVERLAP_S


class IdentityDesk:
    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        registry: Registry,
        certificates: CertificateLog,
        audit: AuditLog,
        storage: Storage,
        clock: Clock,
        cert_lifetime_s: float,
        key_overlap_s: float = KEY_OVERLAP_S,
    ) -> None:
        self._ca = ca
        self._registry = registry
        self.certificates = certificates
        self._audit = audit
        self._storage = storage
        self._clock = clock
        self.cert_lifetime_s = cert_lifetime_s
        self.key_overlap_s = key_overlap_s

    def issue(self, csr_pem: bytes, member_id: str, hosts: tuple[str, ...]) -> x509.Certificate:
        """A certificate for `member_id` naming exactly `hosts`, recorded (commit it with the
        change it belongs to); a bad CSR is INVALID_ARGUMENT."""
        live = self.certificates.live(member_id, self._clock())
        if len(live) >= MAX_LIVE_CERTIFICATES:
            raise refused(
                Reason.RATE_LIMITED,
                f"{member_id} holds {len(live)} unexpired certificates already",
                retry_after_s=max(1.0, live[0] - self._clock()),
            )
        try:
            cert = self._ca.issue(csr_pem, member_id, hosts=hosts, lifetime_s=self.cert_lifetime_s)
        except PkiError as exc:
            raise refused(Reason.MALFORMED, str(exc)) from None
        self.certificates.record(cert, member_id, self._clock())
        return cert

    def check_peer(self, context: Context) -> None:
        """Refuse a caller whose certificate is revoked (called by `rpc_handler` before
        every call on the member port)."""
        peer = peer_identity(context)
        now = self._clock()
        refuse_revoked(peer, self.certificates.revocation(peer.serial, now), now)

    def stored(self, signed: Any, message_type: type[Any], response_type: type[Any]) -> Any:
        """The answer already given to exactly this signed request, or None."""
        found = self.certificates.reply(request_digest(signed, message_type))
        return response_type.FromString(found[1]) if found else None

    def remember(self, signed: Any, message_type: type[Any], member_id: str, response: Any) -> Any:
        self.certificates.remember(
            request_digest(signed, message_type),
            member_id,
            response.SerializeToString(),
            self._clock(),
        )
        return response

    # --- renewal ---------------------------------------------------------------------------

    def renew(
        self, request: enrollment_pb2.RenewCertificateRequest
    ) -> enrollment_pb2.RenewCertificateResponse:
        """A new certificate for an active member, authorised by its current signing key."""
        claimed = parse(request.renewal.body, enrollment_pb2.CertificateRenewal, what="renewal")
        member = self._registry.get(claimed.member_id)
        if member is None:
            raise refused(Reason.UNKNOWN_SIGNER, f"no member {claimed.member_id!r}")
        # the current key only: a rotated-away or reset key renews nothing
        renewal = open_signed(
            request.renewal, enrollment_pb2.CertificateRenewal, member.key, what="renewal"
        )
        if not member.active:
            raise refused(Reason.MEMBER_SUSPENDED, f"{member.member_id} is {member.status_name}")
        done = self.stored(
            request.renewal,
            enrollment_pb2.CertificateRenewal,
            enrollment_pb2.RenewCertificateResponse,
        )
        if done is not None:
            return done  # type: ignore[no-any-return]
        self._fresh(renewal.issued_at, "renewal")
        with self._storage.unit():
            cert = self.issue(renewal.csr_pem, member.member_id, member.hosts)
            self._audit.append(
                AuditEntry(
                    request_id=f"renew-{serial_hex(cert)}",
                    actor=member.member_id,
                    action="renew-certificate",
                    outcome="issued",
                    detail=f"serial={serial_hex(cert)}",
                )
            )
            return self.remember(  # type: ignore[no-any-return]
                request.renewal,
                enrollment_pb2.CertificateRenewal,
                member.member_id,
                enrollment_pb2.RenewCertificateResponse(certificate_pem=cert_pem(cert)),
            )

    # --- rotation --------------------------------------------------------------------------

    def rotate(
        self, request: member_pb2.RotateKeyRequest, context: Context
    ) -> member_pb2.RotateKeyResponse:
        """A new signing key and certificate for the caller. The old key, and certificates
        issued before, keep working for the overlap so requests in flight are not lost and a
        lost reply can be fetched again with the same request."""
        claimed = parse(request.rotation.body, member_pb2.KeyRotation, what="key rotation")
        member = self._registry.get(claimed.member_id)
        if member is None or not member.active:
            raise refused(Reason.UNKNOWN_SIGNER, f"{claimed.member_id!r} is not active")
        done = self.stored(request.rotation, member_pb2.KeyRotation, member_pb2.RotateKeyResponse)
        if done is not None:  # exactly this request was answered: the member lost the reply
            require_peer(context, member.member_id)
            if request.proof.body != request.rotation.body:
                raise refused(Reason.BAD_SIGNATURE, "no proof of holding the new key")
            return done  # type: ignore[no-any-return]
        rotation = open_signed(
            request.rotation, member_pb2.KeyRotation, member.key, what="key rotation"
        )
        require_peer(context, member.member_id)
        now = self._clock()
        self._fresh(rotation.issued_at, "key rotation")
        try:
            new_key = VerifyKey(rotation.new_signing_key)
        except ValueError as exc:
            raise refused(Reason.MALFORMED, f"new signing key: {exc}") from None
        if request.proof.body != request.rotation.body or not verify(
            request.proof, member_pb2.KeyRotation, new_key
        ):
            raise refused(Reason.BAD_SIGNATURE, "no proof of holding the new key")
        if self._registry.key_in_use(new_key.key_id):
            raise refused(Reason.KEY_IN_USE, "that key was used before; make a new one")
        valid_until = now + self.key_overlap_s
        with self._storage.unit():
            cert = self.issue(rotation.csr_pem, member.member_id, member.hosts)
            self._registry.rotate(member.member_id, new_key, valid_until)
            # the certificates that went with the old key lapse with it
            self.certificates.revoke(
                member.member_id,
                at=valid_until,
                reason="rotated",
                now=now,
                keep=serial_hex(cert),
            )
            self._audit.append(
                AuditEntry(
                    request_id=f"rotate-{new_key.key_id}",
                    actor=member.member_id,
                    action="rotate-key",
                    outcome="rotated",
                    detail=f"old={member.key.key_id} new={new_key.key_id} "
                    f"overlap={self.key_overlap_s:g}s",
                )
            )
            return self.remember(  # type: ignore[no-any-return]
                request.rotation,
                member_pb2.KeyRotation,
                member.member_id,
                member_pb2.RotateKeyResponse(
                    certificate_pem=cert_pem(cert), old_key_valid_until=to_timestamp(valid_until)
                ),
            )

    def reset_key(self, member: MemberInfo, new_key: VerifyKey) -> None:
        """Install `new_key` for a member whose key the operator reset (its old key and
        certificates were revoked then): no overlap, the key it replaces is nobody's."""
        now = self._clock()
        self._registry.rotate(member.member_id, new_key, now)
        self.certificates.changed()

    def _fresh(self, issued_at: Any, what: str) -> None:
        if abs(self._clock() - from_timestamp(issued_at)) > REQUEST_MAX_AGE_S:
            raise refused(Reason.REQUEST_EXPIRED, f"{what} is stale")
