"""How often a requester may obtain a subject's profile for one purpose: at most N per calendar
month (UTC), per the directory's `[purpose_limits]`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from credex.protocol import vocab
from credex.protocol.errors import Reason, refused
from credex.runtime.storage import Connection, require_unit


def month_of(now: float) -> tuple[str, float]:
    """('2026-11', seconds until the next month starts)."""
    moment = datetime.fromtimestamp(now, UTC)
    nxt = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return moment.strftime("%Y-%m"), nxt.timestamp() - now


class PurposeQuota:
    def __init__(self, conn: Connection, limits: Mapping[vocab.Purpose, int]) -> None:
        self._conn = conn
        self._limits = dict(limits)

    def take(self, requester_id: str, subject_id: str, purpose: vocab.Purpose, now: float) -> None:
        """Count one profile; ResourceExhausted(PURPOSE_LIMIT) once this month's ceiling is hit.
        Call inside the unit of work that also counts the consent use."""
        require_unit(self._conn)
        limit = self._limits.get(purpose)
        if limit is None:
            return
        month, until_next = month_of(now)
        row = self._conn.execute(
            "SELECT uses FROM purpose_use WHERE requester_id = ? AND subject_id = ? "
            "AND purpose = ? AND month = ?",
            (requester_id, subject_id, int(purpose), month),
        ).fetchone()
        used = row[0] if row else 0
        if used >= limit:
            raise refused(
                Reason.PURPOSE_LIMIT,
                f"{used} of {limit} {vocab.purpose_name(purpose)} profiles this month",
                retry_after_s=until_next,
            )
        self._conn.execute(
            "INSERT INTO purpose_use VALUES (?, ?, ?, ?, 1) ON CONFLICT DO UPDATE "
            "SET uses = uses + 1",
            (requester_id, subject_id, int(purpose), month),
        )

    def give_back(
        self, requester_id: str, subject_id: str, purpose: vocab.Purpose, taken_at: float
    ) -> None:
        """Return the unit `take` counted at `taken_at` (a profile that disclosed nothing)."""
        if self._limits.get(purpose) is None:
            return
        require_unit(self._conn)
        month, _ = month_of(taken_at)
        self._conn.execute(
            "UPDATE purpose_use SET uses = uses - 1 WHERE requester_id = ? AND subject_id = ? "
            "AND purpose = ? AND month = ? AND uses > 0",
            (requester_id, subject_id, int(purpose), month),
        )
