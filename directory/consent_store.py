"""Granted consents, their status and use counts, in the directory database."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from credex.clock import from_timestamp, to_timestamp
from credex.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied, Reason
from credex.signing import parse
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import Consent, ConsentStatus
from credex.v1.directory_pb2 import ConsentChange

S = ConsentStatus
_STATUS_TEXT = {
    S.CONSENT_STATUS_ACTIVE: "active",
    S.CONSENT_STATUS_PAUSED: "paused",
    S.CONSENT_STATUS_REVOKED: "revoked",
}
_TEXT_STATUS = {v: k for k, v in _STATUS_TEXT.items()}
_REFUSAL = {
    S.CONSENT_STATUS_REVOKED: (Reason.CONSENT_REVOKED, "consent has been revoked"),
    S.CONSENT_STATUS_PAUSED: (Reason.CONSENT_PAUSED, "consent is paused"),
    S.CONSENT_STATUS_EXPIRED: (Reason.CONSENT_EXPIRED, "consent has expired"),
}


@dataclass(frozen=True)
class StoredConsent:
    subject_id: str
    consent: Consent
    signed: Signed
    status: ConsentStatus.ValueType
    uses: int
    # When the subject signed the last status change applied: 0 before any.
    last_change_signed_at: float = 0.0


class ConsentStore:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self._conn = db.conn
        self._conn.execute(
            """CREATE TABLE IF NOT EXISTS consents (
                consent_id TEXT PRIMARY KEY,
                subject_id TEXT NOT NULL,
                requester_id TEXT NOT NULL,
                signed BLOB NOT NULL,
                status TEXT NOT NULL,
                uses INTEGER NOT NULL DEFAULT 0,
                max_uses INTEGER NOT NULL,
                not_after REAL NOT NULL,
                granted_at REAL NOT NULL,
                changed_at REAL NOT NULL,
                change_signed_at REAL NOT NULL DEFAULT 0
            )"""
        )
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(consents)")}
        if "change_signed_at" not in columns:  # a database from before ordered changes
            self._conn.execute(
                "ALTER TABLE consents ADD COLUMN change_signed_at REAL NOT NULL DEFAULT 0"
            )
        self._conn.execute("CREATE INDEX IF NOT EXISTS consents_subject ON consents (subject_id)")
        self._conn.execute(
            """CREATE TABLE IF NOT EXISTS consent_changes (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                consent_id TEXT NOT NULL,
                status TEXT NOT NULL,
                changed_at REAL NOT NULL
            )"""
        )

    def require_new(self, consent_id: str) -> None:
        """AlreadyExists(CONSENT_EXISTS) if a consent with this id was granted."""
        exists = self._conn.execute(
            "SELECT 1 FROM consents WHERE consent_id = ?", (consent_id,)
        ).fetchone()
        if exists:
            raise AlreadyExists(Reason.CONSENT_EXISTS, f"consent {consent_id} exists")

    def held(self, subject_id: str, now: float) -> int:
        """How many of the subject's consents are live: neither revoked nor expired."""
        (count,) = self._conn.execute(
            "SELECT count(*) FROM consents WHERE subject_id = ? AND status != 'revoked' "
            "AND not_after > ?",
            (subject_id, now),
        ).fetchone()
        return int(count)

    def add(self, consent: Consent, signed: Signed, subject_id: str, now: float) -> None:
        self.require_new(consent.consent_id)
        self._conn.execute(
            "INSERT INTO consents (consent_id, subject_id, requester_id, signed, status, uses, "
            "max_uses, not_after, granted_at, changed_at) "
            "VALUES (?, ?, ?, ?, 'active', 0, ?, ?, ?, ?)",
            (
                consent.consent_id,
                subject_id,
                consent.requester_id,
                signed.SerializeToString(),
                consent.max_uses,
                from_timestamp(consent.not_after),
                now,
                now,
            ),
        )

    def get(self, consent_id: str, now: float) -> StoredConsent:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM consents WHERE consent_id = ?",
            (consent_id,),
        ).fetchone()
        if row is None:
            raise NotFound(Reason.CONSENT_NOT_FOUND, f"no consent {consent_id!r}")
        return _stored(row, now)

    def for_subject(self, subject_id: str, now: float, latest: int = -1) -> list[StoredConsent]:
        """The subject's consents in the order granted; `latest`: only that many, the most
        recently granted (-1: all)."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM consents WHERE subject_id = ? "
            "ORDER BY granted_at DESC, consent_id DESC LIMIT ?",
            (subject_id, latest),
        ).fetchall()
        return [_stored(row, now) for row in reversed(rows)]

    def set_status(
        self, consent_id: str, status: ConsentStatus.ValueType, now: float, signed_at: float
    ) -> int:
        """Change a consent's status by the subject's order signed at `signed_at`, and add the
        change to the feed nodes follow; returns the change's sequence number. Refused
        (STALE_CHANGE) unless the order was signed after the last one. Call it inside the
        transaction that also audits the change (see credex.db.transaction)."""
        self._mark_signed(consent_id, signed_at)
        self._conn.execute(
            "UPDATE consents SET status = ?, changed_at = ? WHERE consent_id = ?",
            (_STATUS_TEXT[status], now, consent_id),
        )
        cur = self._conn.execute(
            "INSERT INTO consent_changes (consent_id, status, changed_at) VALUES (?, ?, ?)",
            (consent_id, _STATUS_TEXT[status], now),
        )
        return int(cur.lastrowid or 0)

    def _mark_signed(self, consent_id: str, signed_at: float) -> None:
        cur = self._conn.execute(
            "UPDATE consents SET change_signed_at = ? WHERE consent_id = ? "
            "AND change_signed_at < ?",
            (signed_at, consent_id, signed_at),
        )
        if cur.rowcount != 1:
            raise stale_change()

    def changes_after(self, seq: int, limit: int = 1000) -> tuple[list[ConsentChange], int]:
        """Up to `limit` changes after `seq`, and the latest sequence number overall."""
        rows = self._conn.execute(
            "SELECT seq, consent_id, status, changed_at FROM consent_changes WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        latest = self._conn.execute("SELECT coalesce(max(seq), 0) FROM consent_changes").fetchone()
        changes = [
            ConsentChange(
                seq=row_seq,
                consent_id=consent_id,
                status=_TEXT_STATUS[status],
                changed_at=to_timestamp(changed_at),
            )
            for row_seq, consent_id, status, changed_at in rows
        ]
        return changes, int(latest[0])

    def give_back(self, consent_id: str) -> None:
        """Return one use (a profile that disclosed nothing)."""
        self._conn.execute(
            "UPDATE consents SET uses = uses - 1 WHERE consent_id = ? AND uses > 0", (consent_id,)
        )

    def use(self, consent_id: str, now: float) -> None:
        """Count one use; refuses atomically once max_uses is reached or it is not active."""
        cur = self._conn.execute(
            "UPDATE consents SET uses = uses + 1 WHERE consent_id = ? AND status = 'active' "
            "AND uses < max_uses AND not_after > ?",
            (consent_id, now),
        )
        if cur.rowcount != 1:
            stored = self.get(consent_id, now)
            require_active(stored)
            raise PermissionDenied(
                Reason.CONSENT_USED_UP,
                f"consent used {stored.uses} of {stored.consent.max_uses} times",
            )


def stale_change() -> FailedPrecondition:
    """The refusal of a subject's order signed before the consent's last one."""
    return FailedPrecondition(
        Reason.STALE_CHANGE,
        "this change was signed before the consent's last change; sign a new one",
    )


def require_active(stored: StoredConsent) -> None:
    """Refuse a consent that is revoked, paused or expired."""
    if stored.status in _REFUSAL:
        reason, message = _REFUSAL[stored.status]
        raise PermissionDenied(reason, message)


_COLUMNS = "subject_id, signed, status, uses, not_after, change_signed_at"


def _stored(row: tuple[str, bytes, str, int, float, float], now: float) -> StoredConsent:
    subject_id, signed_bytes, status_text, uses, not_after, change_signed_at = row
    # Stored after its checks (maybe by an older version): read back as it is.
    signed = parse(signed_bytes, Signed, what="stored consent", strict=False)
    consent = parse(signed.body, Consent, what="stored consent", strict=False)
    status = _TEXT_STATUS[status_text]
    if status == S.CONSENT_STATUS_ACTIVE and now >= not_after:
        status = S.CONSENT_STATUS_EXPIRED
    return StoredConsent(
        subject_id=subject_id,
        consent=consent,
        signed=signed,
        status=status,
        uses=uses,
        last_change_signed_at=change_signed_at,
    )
