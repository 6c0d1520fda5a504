"""Tamper-evident audit logs: an append-only hash chain of every request, answer and refusal,
with checkpoints of the chain head signed by the log's owner.

Entry n's hash is SHA-256(hash of entry n-1 || canonical JSON of entry n): the values of
FIELDS in order, then `count` only where an entry stands for more than one event (so entries
written before counts existed hash as they did). Verification walks the chain and reports the
first entry that was changed, deleted, inserted or reordered; the signed checkpoints also
expose a chain rewritten from some point on, or cut short.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from credex.clock import Clock, to_timestamp
from credex.db import readonly_uri, transaction
from credex.errors import CredexError, bounded
from credex.keys import SigningKey, VerifyKey
from credex.signing import parse, seal, verify
from credex.v1.audit_pb2 import AuditCheckpoint
from credex.v1.common_pb2 import Signed

GENESIS = hashlib.sha256(b"credex-audit-v1").digest()
log_errors = logging.getLogger(__name__)
TABLE = "audit_log"
CHECKPOINTS = "audit_checkpoints"
META = "audit_meta"
# The chained fields, in the order they are hashed.
FIELDS = (
    "seq",
    "at",
    "request_id",
    "link",
    "actor",
    "action",
    "outcome",
    "purpose",
    "consent_id",
    "subject_ref",
    "categories",
    "node_id",
    "detail",
    "disclosed_digest",
)


@dataclass(frozen=True)
class AuditEntry:
    request_id: str
    actor: str
    action: str
    outcome: str
    purpose: str = ""
    consent_id: str = ""
    subject_ref: str = ""
    categories: Iterable[str] = field(default_factory=tuple)
    node_id: str = ""
    detail: str = ""
    disclosed_digest: str = ""
    # Another entry's request id this one belongs to (a node query's profile request).
    link: str = ""
    # How many like events this entry stands for (repeated refusals are written as one).
    count: int = 1


def entry_hash(prev: bytes, row: dict[str, Any]) -> bytes:
    values = [row[f] for f in FIELDS]
    count = row.get("count", 1)
    if count != 1:
        values.append(count)
    canonical = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(prev + canonical.encode()).digest()


def _create(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
    if columns and "hash" not in columns:  # a log from before the chain: keep it aside
        conn.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_unchained")
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
            seq INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            request_id TEXT NOT NULL,
            link TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            purpose TEXT NOT NULL,
            consent_id TEXT NOT NULL,
            subject_ref TEXT NOT NULL,
            categories TEXT NOT NULL,
            node_id TEXT NOT NULL,
            detail TEXT NOT NULL,
            disclosed_digest TEXT NOT NULL,
            hash BLOB NOT NULL,
            count INTEGER NOT NULL DEFAULT 1
        )"""
    )
    if "count" not in {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}:
        conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN count INTEGER NOT NULL DEFAULT 1")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_request ON {TABLE} (request_id)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_subject ON {TABLE} (subject_ref, action)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_link ON {TABLE} (link)")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (seq INTEGER PRIMARY KEY, signed BLOB NOT NULL)"
    )
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


class AuditLog:
    """The owner's log in a credex-owned database (one writer: the owner's server)."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        clock: Clock,
        *,
        log_id: str = "",
        key: Callable[[], SigningKey] | None = None,
    ) -> None:
        self._db = db
        self._conn = db.conn
        self._clock = clock
        self._log_id = log_id
        self._key = key
        _create(self._conn)
        if log_id:  # whose log this is, for tools that read it without knowing
            self._conn.execute(f"INSERT OR REPLACE INTO {META} VALUES ('log_id', ?)", (log_id,))
        row = self._conn.execute(
            f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        self._seq: int = int(row[0]) if row else 0
        self._head: bytes = bytes(row[1]) if row else GENESIS
        last = self._conn.execute(f"SELECT max(seq) FROM {CHECKPOINTS}").fetchone()[0]
        self._checkpointed: int = int(last or 0)

    @property
    def db(self) -> sqlite_utils.Database:
        """The database the log lives in, for callers that commit other rows with an entry."""
        return self._db

    @property
    def size(self) -> int:
        """Entries in the log (sequence numbers run 1…n without gaps)."""
        return int(self._conn.execute(f"SELECT coalesce(max(seq), 0) FROM {TABLE}").fetchone()[0])

    def append(self, entry: AuditEntry) -> int:
        """Chain and store one entry; committed when this returns unless the caller holds a
        transaction open (durable once the server's group commit has flushed)."""
        row: dict[str, Any] = {
            k: bounded(v) if isinstance(v, str) else v for k, v in asdict(entry).items()
        }
        row["categories"] = json.dumps(sorted(bounded(c, 64) for c in entry.categories))
        row["at"] = float(self._clock())
        if self._conn.in_transaction:
            return self._insert(row)
        with transaction(self._db):  # the head is read and extended atomically
            return self._insert(row)

    def _insert(self, row: dict[str, Any]) -> int:
        head = self._conn.execute(f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1")
        last = head.fetchone()
        seq, prev = (int(last[0]), bytes(last[1])) if last else (0, GENESIS)
        row["seq"] = seq + 1
        digest = entry_hash(prev, row)
        columns = ", ".join((*FIELDS, "count", "hash"))
        marks = ", ".join("?" for _ in range(len(FIELDS) + 2))
        self._conn.execute(
            f"INSERT INTO {TABLE} ({columns}) VALUES ({marks})",
            (*(row[f] for f in FIELDS), row["count"], digest),
        )
        self._seq, self._head = seq + 1, digest
        return self._seq

    def checkpoint(self) -> bool:
        """Sign the current head if entries were added since the last checkpoint."""
        if self._key is None:
            return False
        last = self._conn.execute(
            f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if last is None or int(last[0]) == self._checkpointed:
            return False
        self._seq, self._head = int(last[0]), bytes(last[1])
        signed = seal(
            AuditCheckpoint(
                log_id=self._log_id,
                seq=self._seq,
                head_hash=self._head,
                at=to_timestamp(self._clock()),
            ),
            self._key(),
        )
        self._conn.execute(
            f"INSERT OR REPLACE INTO {CHECKPOINTS} VALUES (?, ?)",
            (self._seq, signed.SerializeToString()),
        )
        self._checkpointed = self._seq
        return True

    def entries(
        self,
        where: str = "1",
        params: Sequence[Any] = (),
        *,
        newest_first: bool = False,
        limit: int = -1,
    ) -> Iterator[dict[str, Any]]:
        """Entries in order (or newest first), optionally filtered (`where` is SQL with ?
        placeholders) and at most `limit` of them (-1: all)."""
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT * FROM {TABLE} WHERE {where} ORDER BY seq {order} LIMIT ?"
        for row in self._db.query(sql, (*params, limit)):
            row["categories"] = json.loads(row["categories"])
            yield row


# --- verification ---------------------------------------------------------------------------


@dataclass
class VerifyReport:
    path: str
    entries: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    ok: bool = True
    first_bad_seq: int | None = None
    problem: str = ""
    notes: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> VerifyReport:
        self.ok, self.first_bad_seq, self.problem = False, seq, problem
        return self


def _rows(conn: sqlite3.Connection) -> list[tuple[dict[str, Any], bytes]]:
    cursor = conn.execute(f"SELECT * FROM {TABLE} ORDER BY seq")
    names = [d[0] for d in cursor.description]
    rows = []
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        content = {f: row[f] for f in FIELDS}
        content["count"] = row.get("count", 1)  # a log from before counts existed
        rows.append((content, bytes(row["hash"])))
    return rows


DIAGNOSIS_WINDOW = 32


def _diagnose(rows: list[tuple[dict[str, Any], bytes]], i: int, prev: bytes) -> str:
    """Why row i does not chain on from `prev`: reordered, inserted or changed. Entry hashes
    cover the sequence number, so each guess is tried with the numbers the entry may have had
    (within DIAGNOSIS_WINDOW of where it stands now)."""
    content, stored = rows[i]
    seq = content["seq"]
    low, high = max(0, i - DIAGNOSIS_WINDOW), min(len(rows), i + DIAGNOSIS_WINDOW + 1)
    before = [GENESIS] + [h for _, h in rows[low:high]]
    for s in range(low + 1, high + 1):
        if s != seq and any(entry_hash(h, {**content, "seq": s}) == stored for h in before):
            return f"entry {seq} was reordered: it was written as entry {s}"
    following = rows[i + 1] if i + 1 < len(rows) else None
    if following is None:
        return f"entry {seq}, the last, was changed or replaced"
    if entry_hash(prev, {**following[0], "seq": following[0]["seq"] - 1}) == following[1]:
        return f"entry {seq} was inserted: the entries after it were renumbered"
    if entry_hash(stored, following[0]) == following[1]:
        return f"entry {seq} was changed: its content no longer matches its hash"
    return f"entry {seq} does not chain from the entry before it"


def verify_log(path: Path, key: VerifyKey | None = None) -> VerifyReport:
    """Walk the chain of the log in `path` and check every checkpoint against it (and, given
    the owner's key, its signature)."""
    report = VerifyReport(path=str(path))
    if not path.is_file():
        return report.fail(None, f"{path} does not exist")
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
        rows = _rows(conn)
        checkpoints = [
            (seq, bytes(blob))
            for seq, blob in conn.execute(f"SELECT seq, signed FROM {CHECKPOINTS} ORDER BY seq")
        ]
        conn.close()
    except sqlite3.Error as exc:
        return report.fail(None, f"not an audit log: {exc}")
    report.entries, report.checkpoints = len(rows), len(checkpoints)
    hashes: dict[int, bytes] = {}
    prev = GENESIS
    for i, (content, stored) in enumerate(rows):
        expected_seq = i + 1
        if content["seq"] != expected_seq:
            return report.fail(
                expected_seq, f"entry {expected_seq} is missing (deleted); next is {content['seq']}"
            )
        if entry_hash(prev, content) != stored:
            return report.fail(content["seq"], _diagnose(rows, i, prev))
        hashes[content["seq"]] = stored
        prev = stored
    for seq, blob in checkpoints:
        try:
            signed = parse(blob, Signed, what="checkpoint")
            checkpoint = parse(signed.body, AuditCheckpoint, what="checkpoint")
        except CredexError:
            return report.fail(seq, f"checkpoint at entry {seq} is unreadable")
        if key is not None:
            if not verify(signed, AuditCheckpoint, key):
                return report.fail(seq, f"checkpoint at entry {seq} is not signed by the owner")
            report.checkpoints_verified += 1
        if checkpoint.seq != seq:
            return report.fail(seq, f"checkpoint filed under {seq} is for entry {checkpoint.seq}")
        if seq not in hashes:
            return report.fail(
                len(rows) + 1,
                f"the owner signed {seq} entries but only {len(rows)} are left "
                "(deleted at the end)",
            )
        if hashes[seq] != checkpoint.head_hash:
            return report.fail(
                seq, f"entries up to {seq} were rewritten: the signed checkpoint does not match"
            )
    if rows and not checkpoints:
        report.notes.append(
            "WARNING: no signed checkpoint at all, so the log cannot be proved complete or "
            "unaltered (new log, or checkpoints deleted)"
        )
    if key is None and checkpoints:
        report.notes.append("checkpoint signatures not checked: give the owner's public key")
    if checkpoints and checkpoints[-1][0] < len(rows):
        report.notes.append(
            f"entries {checkpoints[-1][0] + 1}-{len(rows)} are after the last checkpoint"
        )
    return report


def malformed_entry(method: str, err: Any, peer: str, node_id: str = "") -> AuditEntry:
    """The audit entry for a request refused before it could even be read."""
    return AuditEntry(
        request_id="",
        actor=peer,
        action=method,
        outcome=f"refused:{err.reason}",
        node_id=node_id,
        detail=err.message,
    )


async def checkpoint_every(log: AuditLog, interval_s: float) -> None:
    """Sign the head every `interval_s` while entries keep coming (until cancelled); a failed
    checkpoint is logged and tried again next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            log.checkpoint()
        except Exception:
            log_errors.exception("audit checkpoint failed; retrying in %ss", interval_s)
