"""Granted consents, their tickets, status and use counts, and each node's feed of changes to
its tickets, in the directory database."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

from credex.protocol.clock import from_timestamp, to_timestamp
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.signing import parse
from credex.runtime.storage import Connection, require_unit
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import Consent, ConsentStatus
from credex.v1.federation_pb2 import ConsentChange

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
    # node id -> that node's signed ticket (a consent from before tickets has none).
    tickets: dict[str, Signed] = field(default_factory=dict)


class ConsentStore:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # Each node's own feed, numbered from 1 per node: no sequence number is shared by
        # two nodes' feeds. (The single feed of consent ids before tickets is gone with them.)

    def require_new(self, consent_id: str) -> None:
        """AlreadyExists(CONSENT_EXISTS) if a consent with this id was granted."""
        exists = self._conn.execute(
            "SELECT 1 FROM consents WHERE consent_id = ?", (consent_id,)
        ).fetchone()
        if exists:
            raise refused(Reason.CONSENT_EXISTS, f"consent {consent_id} exists")

    def held(self, subject_id: str, now: float) -> int:
        """How many of the subject's consents are live: neither revoked nor expired."""
        (count,) = self._conn.execute(
            "SELECT count(*) FROM consents WHERE subject_id = ? AND status != 'revoked' "
            "AND not_after > ?",
            (subject_id, now),
        ).fetchone()
        return int(count)

    def add(
        self,
        consent: Consent,
        signed: Signed,
        subject_id: str,
        now: float,
        tickets: dict[str, tuple[str, Signed]],
    ) -> None:
        """Record a granted consent with its tickets (node id -> (ticket id, signed ticket))."""
        require_unit(self._conn)
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
        self.add_tickets(consent.consent_id, tickets)

    def add_tickets(
        self,
        consent_id: str,
        tickets: dict[str, tuple[str, Signed]],
        replace: Collection[str] = (),
    ) -> None:
        """Keep each node's ticket of a consent (inside the caller's unit of work). A node's
        ticket is replaced only for the nodes in `replace`; any other one the store holds
        already is refused, unless it is the very same."""
        require_unit(self._conn)
        for node_id in replace:
            self._conn.execute(
                "DELETE FROM consent_tickets WHERE consent_id = ? AND node_id = ?",
                (consent_id, node_id),
            )
        for node_id, (ticket_id, signed) in tickets.items():
            row = self._conn.execute(
                "SELECT signed FROM consent_tickets WHERE consent_id = ? AND node_id = ?",
                (consent_id, node_id),
            ).fetchone()
            if row is not None:
                if bytes(row[0]) == signed.SerializeToString():
                    continue
                raise refused(
                    Reason.CONSENT_EXISTS, f"consent {consent_id} has a ticket for {node_id}"
                )
            taken = self._conn.execute(
                "SELECT 1 FROM consent_tickets WHERE ticket_id = ?", (ticket_id,)
            ).fetchone()
            if taken:
                raise refused(Reason.CONSENT_EXISTS, f"ticket {ticket_id} exists")
            self._conn.execute(
                "INSERT INTO consent_tickets VALUES (?, ?, ?, ?)",
                (consent_id, node_id, ticket_id, signed.SerializeToString()),
            )

    def tickets(self, consent_id: str) -> dict[str, Signed]:
        """node id -> its signed ticket of the consent."""
        return {
            node_id: parse(bytes(raw), Signed, what="stored ticket", strict=False)
            for node_id, raw in self._conn.execute(
                "SELECT node_id, signed FROM consent_tickets WHERE consent_id = ?", (consent_id,)
            ).fetchall()
        }

    def get(self, consent_id: str, now: float) -> StoredConsent:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM consents WHERE consent_id = ?",
            (consent_id,),
        ).fetchone()
        if row is None:
            raise refused(Reason.CONSENT_NOT_FOUND, f"no consent {consent_id!r}")
        return _stored(row, now, self.tickets(consent_id))

    def for_subject(self, subject_id: str, now: float, latest: int = -1) -> list[StoredConsent]:
        """The subject's consents in the order granted; `latest`: only that many, the most
        recently granted (-1: all)."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM consents WHERE subject_id = ? "
            "ORDER BY granted_at DESC, consent_id DESC LIMIT ?",
            (subject_id, latest),
        ).fetchall()
        tickets: dict[str, dict[str, Signed]] = {row[6]: {} for row in rows}
        # the tickets of all of them in one query (a subject may hold many consents)
        for consent_id, node_id, raw in self._conn.execute(
            "SELECT consent_id, node_id, signed FROM consent_tickets WHERE consent_id IN "
            "(SELECT consent_id FROM consents WHERE subject_id = ?)",
            (subject_id,),
        ):
            if consent_id in tickets:
                tickets[consent_id][node_id] = parse(
                    bytes(raw), Signed, what="stored ticket", strict=False
                )
        return [_stored(row, now, tickets[row[6]]) for row in reversed(rows)]

    def set_status(
        self, consent_id: str, status: ConsentStatus.ValueType, now: float, signed_at: float
    ) -> dict[str, int]:
        """Change a consent's status by the subject's order signed at `signed_at`, and add the
        change of each of its tickets to its node's feed; returns node id -> the change's
        sequence number in that node's feed. Refused (STALE_CHANGE) unless the order was
        signed after the last one. Call it inside the unit of work that also audits the change
        (see credex.runtime.storage)."""
        require_unit(self._conn)
        self._mark_signed(consent_id, signed_at)
        self._conn.execute(
            "UPDATE consents SET status = ?, changed_at = ? WHERE consent_id = ?",
            (_STATUS_TEXT[status], now, consent_id),
        )
        return self.feed_status(consent_id, None, now)

    def feed_status(self, consent_id: str, nodes: list[str] | None, now: float) -> dict[str, int]:
        """Add the consent's current status for its tickets at `nodes` (None: all) to those
        nodes' feeds; node id -> sequence number (inside the caller's unit of work)."""
        require_unit(self._conn)
        (status_text,) = self._conn.execute(
            "SELECT status FROM consents WHERE consent_id = ?", (consent_id,)
        ).fetchone()
        seqs: dict[str, int] = {}
        for node_id, ticket_id in self._conn.execute(
            "SELECT node_id, ticket_id FROM consent_tickets WHERE consent_id = ?", (consent_id,)
        ).fetchall():
            if nodes is not None and node_id not in nodes:
                continue
            (seq,) = self._conn.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM ticket_changes WHERE node_id = ?",
                (node_id,),
            ).fetchone()
            self._conn.execute(
                "INSERT INTO ticket_changes VALUES (?, ?, ?, ?, ?)",
                # whole seconds: the moment is all two nodes' feeds share (see docs/security.md)
                (node_id, seq, ticket_id, status_text, float(math.floor(now))),
            )
            seqs[node_id] = int(seq)
        return seqs

    def _mark_signed(self, consent_id: str, signed_at: float) -> None:
        cur = self._conn.execute(
            "UPDATE consents SET change_signed_at = ? WHERE consent_id = ? "
            "AND change_signed_at < ?",
            (signed_at, consent_id, signed_at),
        )
        if cur.rowcount != 1:
            raise stale_change()

    def changes_after(
        self, node_id: str, seq: int, limit: int = 1000
    ) -> tuple[list[ConsentChange], int]:
        """Up to `limit` changes to `node_id`'s tickets after `seq` in its feed, and the latest
        sequence number of its feed."""
        rows = self._conn.execute(
            "SELECT seq, ticket_id, status, changed_at FROM ticket_changes "
            "WHERE node_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (node_id, seq, limit),
        ).fetchall()
        latest = self._conn.execute(
            "SELECT coalesce(max(seq), 0) FROM ticket_changes WHERE node_id = ?", (node_id,)
        ).fetchone()
        changes = [
            ConsentChange(
                seq=row_seq,
                ticket_id=ticket_id,
                status=_TEXT_STATUS[status],
                changed_at=to_timestamp(changed_at),
            )
            for row_seq, ticket_id, status, changed_at in rows
        ]
        return changes, int(latest[0])

    def give_back(self, consent_id: str) -> None:
        """Return one use (a profile that disclosed nothing)."""
        require_unit(self._conn)
        self._conn.execute(
            "UPDATE consents SET uses = uses - 1 WHERE consent_id = ? AND uses > 0", (consent_id,)
        )

    def use(self, consent_id: str, now: float) -> None:
        """Count one use; refuses atomically once max_uses is reached or it is not active."""
        require_unit(self._conn)
        cur = self._conn.execute(
            "UPDATE consents SET uses = uses + 1 WHERE consent_id = ? AND status = 'active' "
            "AND uses < max_uses AND not_after > ?",
            (consent_id, now),
        )
        if cur.rowcount != 1:
            stored = self.get(consent_id, now)
            require_active(stored)
            raise refused(
                Reason.CONSENT_USED_UP,
                f"consent used {stored.uses} of {stored.consent.max_uses} times",
            )


def stale_change() -> CredexError:
    """The refusal of a subject's order signed before the consent's last one."""
    return refused(
        Reason.STALE_CHANGE,
        "this change was signed before the consent's last change; sign a new one",
    )


def require_active(stored: StoredConsent) -> None:
    """Refuse a consent that is revoked, paused or expired."""
    if stored.status in _REFUSAL:
        reason, message = _REFUSAL[stored.status]
        raise refused(reason, message)


_COLUMNS = "subject_id, signed, status, uses, not_after, change_signed_at, consent_id"


def _stored(
    row: tuple[str, bytes, str, int, float, float, str], now: float, tickets: dict[str, Signed]
) -> StoredConsent:
    subject_id, signed_bytes, status_text, uses, not_after, change_signed_at, _ = row
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
        tickets=tickets,
    )
