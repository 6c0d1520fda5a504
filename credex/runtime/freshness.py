"""Replay defence: a bounded validity window plus single-use nonces kept in the server's state."""

from __future__ import annotations

import hashlib
import sqlite3

from credex.protocol.errors import Reason, refused
from credex.runtime.storage import Connection, require_unit

MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
CLOCK_SKEW_S = 30.0


def check_window(issued_at: float, expires_at: float, now: float, *, max_lifetime_s: float) -> None:
    """Refuse a message that is not yet valid, expired, or valid for too long."""
    if expires_at <= issued_at or expires_at - issued_at > max_lifetime_s:
        raise refused(
            Reason.MALFORMED, f"validity window must be positive and at most {max_lifetime_s:g}s"
        )
    if issued_at > now + CLOCK_SKEW_S:
        raise refused(Reason.REQUEST_NOT_YET_VALID, "issued in the future")
    if now >= expires_at:
        raise refused(Reason.REQUEST_EXPIRED, "request has expired")


class NonceStore:
    """Remembers every nonce until its message expires; a second use is a replay."""

    PRUNE_EVERY = 1024

    def __init__(self, conn: Connection, table: str = "nonces") -> None:
        self._conn = conn
        self._table = table
        self._since_prune = 0

    def use(self, nonce: bytes, expires_at: float, now: float, *, scope: str = "") -> None:
        """Record `nonce` as used until `expires_at`; PermissionDenied(REPLAY) if it was used
        before. With `scope` (a subject id), nonces are kept per scope, so that one sender
        can never spend another's."""
        key = self._key(nonce, scope)
        require_unit(self._conn)
        try:
            self._conn.execute(
                f"INSERT INTO [{self._table}] (nonce, expires_at) VALUES (?, ?)",
                (key, expires_at),
            )
        except sqlite3.IntegrityError:
            raise refused(Reason.REPLAY, "nonce already used: replay refused") from None
        self._since_prune += 1
        if self._since_prune >= self.PRUNE_EVERY:
            self._since_prune = 0
            self._conn.execute(f"DELETE FROM [{self._table}] WHERE expires_at < ?", (now,))

    def check_unused(self, nonce: bytes, *, scope: str = "") -> None:
        """PermissionDenied(REPLAY) if `nonce` was used, without recording it (a read only: a
        replay is refused before any limit is charged or anything written)."""
        found = self._conn.execute(
            f"SELECT 1 FROM [{self._table}] WHERE nonce = ?", (self._key(nonce, scope),)
        ).fetchone()
        if found:
            raise refused(Reason.REPLAY, "nonce already used: replay refused")

    @staticmethod
    def _key(nonce: bytes, scope: str) -> bytes:
        if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
            raise refused(
                Reason.MALFORMED, f"nonce must be {MIN_NONCE_BYTES}-{MAX_NONCE_BYTES} bytes"
            )
        return hashlib.sha256(scope.encode() + b"\x00" + nonce).digest() if scope else nonce
