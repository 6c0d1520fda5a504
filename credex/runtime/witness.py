"""Audit checkpoints witnessed outside the log's own database.

A log's owner signs checkpoints of its chain head beside the log; someone who can write the
database can also rewrite the chain and delete those checkpoints. So every checkpoint interval
each server hands its newest checkpoint to a witness (a node to the directory, the directory to
every node), which verifies it against the owner's key and keeps it. `credex audit verify LOG
--witness WITNESS_DB` then checks the log against those copies.

What a witness stores is bounded: only the log's owner may hand over its checkpoints, each
must cover more entries than the last one kept, calls are rate-limited per caller, and the
newest KEEP_PER_LOG checkpoints of each log are kept (the newest alone covers every entry
before it; older ones only narrow down where a rewrite began).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from credex.protocol.clock import Clock, from_timestamp
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.keys import VerifyKey
from credex.protocol.signing import open_signed
from credex.runtime.audit import AuditLog, checkpoint_now
from credex.runtime.ratelimit import RateLimiter
from credex.runtime.schema import WITNESSED
from credex.runtime.storage import Connection, Storage, require_unit
from credex.v1.audit_pb2 import AuditCheckpoint
from credex.v1.common_pb2 import Signed

log = logging.getLogger(__name__)

# Checkpoints kept per witnessed log (the oldest go first).
KEEP_PER_LOG = 10_000
# Checkpoints a second one caller may hand over, and the burst it may save up.
RATE_PER_S = 1.0
BURST = 10.0
# A signed AuditCheckpoint is about 100 bytes; anything much larger is not one (stricter
# than the cap credex.protocol.signing puts on every AuditCheckpoint body).
MAX_CHECKPOINT_BYTES = 512
# How far in the future a checkpoint's own time may be (clock skew between servers).
MAX_FUTURE_S = 300.0
# How long handing a checkpoint to one witness may take.
SEND_TIMEOUT_S = 5.0
# At shutdown the last checkpoint is handed over within this, or left to the next start.
FINAL_TIMEOUT_S = 2.0
MAX_SEQ = 2**63 - 1  # SQLite integers are signed 64-bit


class WitnessStore:
    """Other logs' checkpoints this server keeps as their witness, in its own database."""

    def __init__(
        self,
        conn: Connection,
        clock: Clock,
        *,
        keep: int = KEEP_PER_LOG,
        rate_per_s: float = RATE_PER_S,
        burst: float = BURST,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._keep = keep
        self._limiter = RateLimiter(rate_per_s, burst, clock)

    def throttle(self, caller: str) -> None:
        """Refuse a caller over its rate (before anything of its request is read)."""
        wait = self._limiter.take(caller)
        if wait:
            raise refused(
                Reason.RATE_LIMITED,
                f"more than {self._limiter.rate_per_s:g} checkpoints a second",
                retry_after_s=wait,
            )

    def held(self, log_id: str) -> int:
        """The newest sequence number of `log_id`'s log witnessed here (0: none)."""
        row = self._conn.execute(
            f"SELECT max(seq) FROM {WITNESSED} WHERE log_id = ?", (log_id,)
        ).fetchone()
        return int(row[0] or 0)

    def keep(self, signed: Signed, log_id: str, keys: Sequence[VerifyKey]) -> int:
        """Verify `signed` as `log_id`'s checkpoint under one of `keys` and keep it; returns
        the newest sequence number now held. The very checkpoint held already is accepted
        again (a retry after a lost reply); an older or equal other one is refused. Call
        inside a unit of work."""
        if len(signed.body) > MAX_CHECKPOINT_BYTES:
            raise refused(
                Reason.MALFORMED, f"checkpoint is larger than {MAX_CHECKPOINT_BYTES} bytes"
            )
        key = next((k for k in keys if k.key_id == signed.key_id), keys[0])
        checkpoint = open_signed(signed, AuditCheckpoint, key, what="checkpoint")
        checkpoint.DiscardUnknownFields()
        if checkpoint.SerializeToString(deterministic=True) != signed.body:
            raise refused(Reason.MALFORMED, "checkpoint carries unknown fields or is not canonical")
        if checkpoint.log_id != log_id:
            raise refused(
                Reason.PEER_MISMATCH,
                f"a checkpoint of {checkpoint.log_id[:64]!r}'s log, handed over by {log_id!r}",
            )
        if not 0 < checkpoint.seq <= MAX_SEQ or len(checkpoint.head_hash) != 32:
            raise refused(
                Reason.MALFORMED, "checkpoint needs a sequence number and a 32-byte head hash"
            )
        now = self._clock()
        if from_timestamp(checkpoint.at) > now + MAX_FUTURE_S:
            raise refused(Reason.REQUEST_NOT_YET_VALID, "checkpoint is dated ahead")
        blob = signed.SerializeToString()
        require_unit(self._conn)
        held = self.held(log_id)
        if checkpoint.seq <= held:
            same = self._conn.execute(
                f"SELECT signed FROM {WITNESSED} WHERE log_id = ? AND seq = ?",
                (log_id, checkpoint.seq),
            ).fetchone()
            if same is not None and bytes(same[0]) == blob:
                return held
            raise refused(
                Reason.CHECKPOINT_STALE,
                f"a checkpoint of entry {held} of {log_id!r}'s log is witnessed already; "
                f"one of entry {checkpoint.seq} is not newer",
            )
        self._conn.execute(
            f"INSERT INTO {WITNESSED} VALUES (?, ?, ?, ?)",
            (log_id, checkpoint.seq, blob, now),
        )
        self._conn.execute(
            f"DELETE FROM {WITNESSED} WHERE log_id = ? AND seq <= ("
            f"SELECT seq FROM {WITNESSED} WHERE log_id = ? ORDER BY seq DESC "
            "LIMIT 1 OFFSET ?)",
            (log_id, log_id, self._keep),
        )
        return int(checkpoint.seq)


# Hands a signed checkpoint to one witness; returns the newest sequence number it holds.
Send = Callable[[Signed, float], Awaitable[int]]


class CheckpointPublisher:
    """Hands the owner's newest checkpoint to each witness that does not hold it yet."""

    def __init__(
        self,
        audit: AuditLog,
        witnesses: Callable[[], Mapping[str, Send]],
        storage: Storage,
    ) -> None:
        """`witnesses`: the witnesses now, by name; `storage`: the log's (a witness must never
        hold a checkpoint of entries a crash could still lose)."""
        self._audit = audit
        self._witnesses = witnesses
        self._storage = storage
        self._acked: dict[str, int] = {}
        self._complained: dict[str, int] = {}

    async def publish(self, deadline_s: float = SEND_TIMEOUT_S) -> int:
        """One round; returns how many witnesses took the newest checkpoint."""
        latest = self._audit.latest_checkpoint()
        if latest is None:
            return 0
        seq, signed = latest
        due = {n: send for n, send in self._witnesses().items() if self._acked.get(n, 0) < seq}
        if not due:
            return 0
        await self._storage.durable()
        sent = await asyncio.gather(
            *(self._hand(name, send, seq, signed, deadline_s) for name, send in due.items())
        )
        return sum(sent)

    async def _hand(
        self, name: str, send: Send, seq: int, signed: Signed, deadline_s: float
    ) -> bool:
        try:
            held = await send(signed, deadline_s)
        except CredexError as err:
            if self._complained.get(name) == seq:  # once per checkpoint, not every round
                return False
            self._complained[name] = seq
            if err.reason == Reason.CHECKPOINT_STALE:
                log.error(
                    "witness %s holds a newer checkpoint of this log than its newest (entry %d): "
                    "entries it saw are gone from this database: %s",
                    name,
                    seq,
                    err.message,
                )
            else:
                log.warning("handing checkpoint %d to witness %s failed: %s", seq, name, err)
            return False
        self._acked[name] = max(held, self._acked.get(name, 0))
        return True

    async def run(self, interval_s: float) -> None:
        """A round every `interval_s` until cancelled; a failed round is logged and retried."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.publish()
            except Exception:
                log.exception("handing checkpoints to witnesses failed; retrying")

    async def publish_final(self) -> None:
        """At shutdown: sign the last checkpoint and hand it over, briefly and best effort."""
        try:
            checkpoint_now(self._audit, self._storage)
            await self.publish(FINAL_TIMEOUT_S)
        except Exception:
            log.exception("handing the last checkpoint to witnesses failed")
