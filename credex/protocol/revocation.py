"""Refusing a revoked certificate, the same way at the directory and at every node."""

from __future__ import annotations

from credex.protocol.errors import Reason, refused
from credex.protocol.identity import CertificateIdentity

# Why a certificate is listed because of its member's status (not the certificate itself).
MEMBER_STATUSES = frozenset({"suspended", "removed"})
_SAID = {"rotated": "rotated away", "reset": "revoked by a key reset", "replaced": "replaced"}


def refuse_revoked(
    peer: CertificateIdentity, revocation: tuple[float, str] | None, now: float
) -> None:
    """Raise if `revocation` (from when, why; None: not listed) applies at `now`: a suspended
    or removed member's certificate as MEMBER_SUSPENDED, any other as CERTIFICATE_REVOKED."""
    if revocation is None or now < revocation[0]:
        return
    why = revocation[1]
    if why in MEMBER_STATUSES:
        raise refused(
            Reason.MEMBER_SUSPENDED, f"{peer.member_id!r} is {why}: its certificate is refused"
        )
    raise refused(
        Reason.CERTIFICATE_REVOKED,
        f"certificate {peer.serial} of {peer.member_id!r} is {_SAID.get(why, 'revoked')}",
    )
