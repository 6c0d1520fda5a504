"""Every certificate the federation CA issued, which of them servers refuse, and the answers to
identity requests already served.

A certificate is refused (listed in the signed registry snapshot until it expires) once it is
explicitly revoked (rotated away, when its key's overlap ends; reset by the operator; a
replaced directory certificate) or while its member is suspended or removed. The stored
answers make Enroll, RotateKey and RenewCertificate safe to retry: the same signed request,
sent again because its reply was lost, gets the same answer.
"""

from __future__ import annotations

import hashlib
import math

from cryptography import x509

from credex.protocol.clock import from_timestamp, to_timestamp
from credex.protocol.identity import serial_hex
from credex.protocol.signing import domain_tag
from credex.runtime.storage import Connection, require_unit
from credex.v1 import member_pb2
from credex.v1.common_pb2 import Signed

# How long the answer to an identity request is kept for a retry of that request.
REPLY_KEEP_S = 7 * 86_400.0
# Certificates one member may hold at once (unexpired, not revoked): renewing in a loop
# cannot fill the database, and a member needs two at most during a renewal.
MAX_LIVE_CERTIFICATES = 16


def request_digest(signed: Signed, message_type: type[object]) -> str:
    """What identifies one signed identity request: its type, exact body and signature."""
    tag = domain_tag(message_type)  # type: ignore[arg-type]
    return hashlib.sha256(tag + signed.body + b"\0" + signed.signature).hexdigest()


def revocation_of(revoked: member_pb2.RevokedCertificate) -> tuple[float, str]:
    """(refused from, why) of a listed certificate."""
    return from_timestamp(revoked.revoked_at), revoked.reason


class CertificateLog:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._data_version = -1
        self._revoked: dict[str, tuple[float, str]] = {}

    # --- issued certificates ------------------------------------------------------------

    def record(self, cert: x509.Certificate, member_id: str, now: float) -> None:
        require_unit(self._conn)
        self._conn.execute(
            "INSERT INTO certificates (serial, member_id, issued_at, not_after) "
            "VALUES (?, ?, ?, ?)",
            (serial_hex(cert), member_id, now, cert.not_valid_after_utc.timestamp()),
        )

    def live(self, member_id: str, now: float) -> list[float]:
        """When each of the member's usable certificates expires, soonest first."""
        return [
            float(row[0])
            for row in self._conn.execute(
                "SELECT not_after FROM certificates WHERE member_id = ? AND not_after > ? "
                "AND (revoked_at IS NULL OR revoked_at > ?) ORDER BY not_after",
                (member_id, now, now),
            )
        ]

    def revoke(
        self,
        member_id: str,
        *,
        at: float,
        reason: str,
        now: float,
        keep: str = "",
        serial: str = "",
        not_after: float = math.inf,
    ) -> None:
        """Refuse the member's unexpired certificates from `at` on (all but `keep`). With
        `serial`, that one certificate (recorded or not, e.g. issued before this log) until
        `not_after`."""
        require_unit(self._conn)
        if serial:
            self._conn.execute(
                "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (serial) "
                "DO UPDATE SET revoked_at = MIN(COALESCE(revoked_at, excluded.revoked_at), "
                "excluded.revoked_at), reason = excluded.reason",
                (serial, member_id, now, min(not_after, 1e12), at, reason),
            )
        else:
            self._conn.execute(
                "UPDATE certificates SET revoked_at = ?, reason = ? WHERE member_id = ? "
                "AND serial != ? AND not_after > ? AND (revoked_at IS NULL OR revoked_at > ?)",
                (at, reason, member_id, keep, now, at),
            )
        self._data_version = -1

    def revoked(self, now: float) -> list[member_pb2.RevokedCertificate]:
        """Every unexpired certificate servers refuse now or later, for the signed registry:
        explicitly revoked ones, and those of members not active (refused since the epoch)."""
        rows = self._conn.execute(
            "SELECT c.serial, c.member_id, "
            "CASE WHEN m.status IS NOT NULL AND m.status != 'active' THEN 0 "
            "ELSE c.revoked_at END AS revoked_from, c.not_after, "
            "CASE WHEN m.status IS NOT NULL AND m.status != 'active' THEN m.status "
            "ELSE c.reason END AS why "
            "FROM certificates c LEFT JOIN members m ON m.member_id = c.member_id "
            "WHERE c.not_after > ? AND (c.revoked_at IS NOT NULL "
            "OR (m.status IS NOT NULL AND m.status != 'active')) ORDER BY c.serial",
            (now,),
        )
        return [
            member_pb2.RevokedCertificate(
                serial=str(serial),
                member_id=str(member_id),
                revoked_at=to_timestamp(float(revoked_from)),
                not_after=to_timestamp(float(not_after)),
                reason=str(why),
            )
            for serial, member_id, revoked_from, not_after, why in rows
        ]

    def revocation(self, serial: str, now: float) -> tuple[float, str] | None:
        """From when, and why, the certificate with `serial` is refused (None: it is not).
        Read from memory, reloaded when another process (an operator command) changed the
        database."""
        data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:
            self._revoked = {r.serial: revocation_of(r) for r in self.revoked(now)}
            self._data_version = data_version
        return self._revoked.get(serial)

    def changed(self) -> None:
        """This connection changed something revocations depend on (a member's status or
        key): reload before the next check."""
        self._data_version = -1

    # --- answers to identity requests ----------------------------------------------------

    def reply(self, digest: str) -> tuple[str, bytes] | None:
        """(member id, serialized response) of a request answered before."""
        row = self._conn.execute(
            "SELECT member_id, response FROM identity_replies WHERE digest = ?", (digest,)
        ).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    def remember(self, digest: str, member_id: str, response: bytes, now: float) -> None:
        require_unit(self._conn)
        self._conn.execute("DELETE FROM identity_replies WHERE at < ?", (now - REPLY_KEEP_S,))
        self._conn.execute(
            "INSERT INTO identity_replies VALUES (?, ?, ?, ?)", (digest, member_id, response, now)
        )
