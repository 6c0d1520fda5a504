"""Disputes at a node: what subjects contest, and what the operator decided. A record under an
open dispute is disclosed marked as such; a record the operator deleted is never disclosed
again (credex reads the operator's database and cannot change it, so it holds it back). A
record is (category, record id): two tables may number their rows alike. Disputes stored
before they carried a category (0) apply to the record id in every category, as they did."""

from __future__ import annotations

from dataclasses import dataclass

from credex.protocol import vocab
from credex.protocol.clock import Clock
from credex.runtime.storage import Connection, require_unit
from credex.v1.dispute_pb2 import DisputeStatus
from credex.v1.node_pb2 import DisputeNotice

D = DisputeStatus
RecordKey = tuple[int, str]  # (category, record id): what a dispute is about
ALL = [int(c) for c in vocab.ALL_CATEGORIES]
OUTCOME_NAMES = {
    "corrected": D.DISPUTE_STATUS_CORRECTED,
    "deleted": D.DISPUTE_STATUS_DELETED,
    "rejected": D.DISPUTE_STATUS_REJECTED,
}


@dataclass(frozen=True)
class NodeDispute:
    dispute_id: str
    local_subject_id: str
    record_id: str
    reason: str
    status: str
    note: str
    filed_at: float
    resolved_at: float | None
    category: str  # its name, "" for a dispute filed before disputes carried one


class NodeDisputes:
    def __init__(self, conn: Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    def receive(self, notice: DisputeNotice) -> None:
        """Record a dispute the directory handed over (again: no change)."""
        require_unit(self._conn)
        self._conn.execute(
            "INSERT OR IGNORE INTO disputes (dispute_id, local_subject_id, record_id, reason, "
            "status, filed_at, category) VALUES (?, ?, ?, ?, 'open', ?, ?)",
            (notice.dispute_id, notice.local_subject_id, notice.record_id, notice.reason,
             self._clock(), notice.category),
        )  # fmt: skip

    def for_subject(self, local_id: str) -> tuple[dict[RecordKey, str], set[RecordKey]]:
        """((category, record id) → open dispute id, records the operator deleted) for one
        subject; a dispute without a category stands for its record id in every category."""
        open_disputes: dict[RecordKey, str] = {}
        deleted: set[RecordKey] = set()
        for dispute_id, record_id, status, category in self._conn.execute(
            "SELECT dispute_id, record_id, status, category FROM disputes "
            "WHERE local_subject_id = ? ORDER BY filed_at",
            (local_id,),
        ):
            for key in ((c, record_id) for c in ([category] if category else ALL)):
                if status == "open":
                    open_disputes[key] = dispute_id
                elif status == "deleted":
                    deleted.add(key)
        return open_disputes, deleted

    def get(self, dispute_id: str) -> NodeDispute | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM disputes WHERE dispute_id = ?", (dispute_id,)
        ).fetchone()
        return _dispute(row) if row else None

    def all(self, status: str | None = None) -> list[NodeDispute]:
        sql = f"SELECT {_COLUMNS} FROM disputes"
        rows = (
            self._conn.execute(sql + " WHERE status = ? ORDER BY filed_at", (status,))
            if status
            else self._conn.execute(sql + " ORDER BY filed_at")
        )
        return [_dispute(row) for row in rows]

    def resolve(self, dispute_id: str, outcome: str, note: str) -> None:
        require_unit(self._conn)
        self._conn.execute(
            "UPDATE disputes SET status = ?, note = ?, resolved_at = ? WHERE dispute_id = ?",
            (outcome, note, self._clock(), dispute_id),
        )


_COLUMNS = (
    "dispute_id, local_subject_id, record_id, reason, status, note, filed_at, resolved_at, category"
)


def _dispute(row: tuple[object, ...]) -> NodeDispute:
    dispute_id, local_id, record_id, reason, status, note, filed, resolved, category = row
    return NodeDispute(
        dispute_id=str(dispute_id),
        local_subject_id=str(local_id),
        record_id=str(record_id),
        reason=str(reason),
        status=str(status),
        note=str(note),
        filed_at=float(filed),  # type: ignore[arg-type]
        resolved_at=None if resolved is None else float(resolved),  # type: ignore[arg-type]
        category=vocab.category_name(int(category)) if category else "",  # type: ignore[call-overload]
    )
