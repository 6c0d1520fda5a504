"""How many queries a node has answered under each of its tickets: the node refuses one more
than the subject allowed, whatever the directory counts."""

from __future__ import annotations

from credex.protocol.clock import from_timestamp
from credex.protocol.errors import Reason, refused
from credex.runtime.storage import Connection, require_unit
from credex.v1.consent_pb2 import ConsentTicket

PRUNE_EVERY_S = 60.0
FORGET_AFTER_S = 86_400.0  # after a ticket's end: refused as expired by then, clock skew and all


class TicketUses:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._pruned_at = 0.0

    def check(self, ticket: ConsentTicket) -> None:
        """Refuse (CONSENT_USED_UP) a ticket already answered max_uses times."""
        row = self._conn.execute(
            "SELECT uses FROM ticket_uses WHERE ticket_id = ?", (ticket.ticket_id,)
        ).fetchone()
        if row is not None and row[0] >= ticket.max_uses:
            raise refused(
                Reason.CONSENT_USED_UP,
                f"ticket answered {row[0]} of {ticket.max_uses} times",
            )

    def count(self, ticket: ConsentTicket, now: float) -> None:
        """One more answer under `ticket` (inside the unit of work that audits it);
        tickets over for a day are forgotten, at most once a minute (they are refused as
        expired anyway)."""
        require_unit(self._conn)
        self._conn.execute(
            "INSERT INTO ticket_uses VALUES (?, 1, ?) ON CONFLICT (ticket_id) "
            "DO UPDATE SET uses = uses + 1",
            (ticket.ticket_id, from_timestamp(ticket.not_after)),
        )
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            self._conn.execute(
                "DELETE FROM ticket_uses WHERE not_after < ?", (now - FORGET_AFTER_S,)
            )
