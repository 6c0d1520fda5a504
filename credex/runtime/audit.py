"""Tamper-evident audit logs: an append-only hash chain of every request, answer and refusal,
with checkpoints of the chain head signed by the log's owner.

Entry n's hash is SHA-256(hash of entry n-1 || canonical JSON of entry n): the values of
FIELDS in order, then `count` only where an entry stands for more than one event, then the
OPTIONAL_FIELDS that are set, as one object (so entries written before either existed hash as
they did). Verification walks the chain and reports the first entry that was changed, deleted,
inserted or reordered; the signed checkpoints also expose a chain rewritten from some point
on, or cut short, and the copies of them that a witness keeps outside the log's database
(credex.runtime.witness) expose a chain rewritten together with its own checkpoints.
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

from credex.protocol.clock import Clock, from_timestamp, to_timestamp
from credex.protocol.errors import CredexError, bounded
from credex.protocol.key_history import KeyHistory
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.signing import parse, seal
from credex.runtime.db import readonly_uri
from credex.runtime.schema import AUDIT_CHECKPOINTS, AUDIT_LOG, AUDIT_META, WITNESSED
from credex.runtime.storage import Connection, Storage, require_unit
from credex.v1.audit_pb2 import AuditCheckpoint
from credex.v1.common_pb2 import Signed

GENESIS = hashlib.sha256(b"credex-audit-v1").digest()
log_errors = logging.getLogger(__name__)
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
# Fields hashed only when set (as one JSON object after `count`), so that entries written
# before they existed keep their hashes. query_digest: SHA-256 (hex) of the signed query body
# an entry is about (a node query, at the directory and at the node).
OPTIONAL_FIELDS = ("query_digest",)


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
    # SHA-256 (hex) of the signed node query this entry is about, as sent or as received.
    query_digest: str = ""


def entry_hash(prev: bytes, row: dict[str, Any]) -> bytes:
    values = [row[f] for f in FIELDS]
    count = row.get("count", 1)
    if count != 1:
        values.append(count)
    extra = {f: row[f] for f in sorted(OPTIONAL_FIELDS) if row.get(f)}
    if extra:
        values.append(extra)
    canonical = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(prev + canonical.encode()).digest()


class AuditLog:
    """The owner's log in its server's state (one writer: the owner's server)."""

    def __init__(
        self,
        conn: Connection,
        clock: Clock,
        *,
        log_id: str = "",
        key: Callable[[], SigningKey] | None = None,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._log_id = log_id
        self._key = key
        last = self._conn.execute(f"SELECT max(seq) FROM {AUDIT_CHECKPOINTS}").fetchone()[0]
        self._checkpointed: int = int(last or 0)

    def own(self) -> None:
        """Record whose log this is, for tools that read it without knowing (inside a unit of
        work; the owner's server does so when it starts)."""
        require_unit(self._conn)
        self._conn.execute(
            f"INSERT OR REPLACE INTO {AUDIT_META} VALUES ('log_id', ?)", (self._log_id,)
        )

    @property
    def size(self) -> int:
        """Entries in the log (sequence numbers run 1…n without gaps)."""
        return int(
            self._conn.execute(f"SELECT coalesce(max(seq), 0) FROM {AUDIT_LOG}").fetchone()[0]
        )

    def append(self, entry: AuditEntry) -> int:
        """Chain and store one entry, inside the caller's unit of work (durable once the
        server's storage is)."""
        require_unit(self._conn)
        row: dict[str, Any] = {
            k: bounded(v) if isinstance(v, str) else v for k, v in asdict(entry).items()
        }
        row["categories"] = json.dumps(sorted(bounded(c, 64) for c in entry.categories))
        row["at"] = float(self._clock())
        head = self._conn.execute(f"SELECT seq, hash FROM {AUDIT_LOG} ORDER BY seq DESC LIMIT 1")
        last = head.fetchone()
        seq, prev = (int(last[0]), bytes(last[1])) if last else (0, GENESIS)
        row["seq"] = seq + 1
        digest = entry_hash(prev, row)
        columns = ", ".join((*FIELDS, "count", *OPTIONAL_FIELDS, "hash"))
        marks = ", ".join("?" for _ in range(len(FIELDS) + len(OPTIONAL_FIELDS) + 2))
        self._conn.execute(
            f"INSERT INTO {AUDIT_LOG} ({columns}) VALUES ({marks})",
            (*(row[f] for f in FIELDS), row["count"], *(row[f] for f in OPTIONAL_FIELDS), digest),
        )
        return seq + 1

    def checkpoint(self) -> bool:
        """Sign the current head if entries were added since the last checkpoint (inside the
        caller's unit of work)."""
        if self._key is None:
            return False
        last = self._conn.execute(
            f"SELECT seq, hash FROM {AUDIT_LOG} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if last is None or int(last[0]) == self._checkpointed:
            return False
        require_unit(self._conn)
        seq, head = int(last[0]), bytes(last[1])
        signed = seal(
            AuditCheckpoint(
                log_id=self._log_id, seq=seq, head_hash=head, at=to_timestamp(self._clock())
            ),
            self._key(),
        )
        self._conn.execute(
            f"INSERT OR REPLACE INTO {AUDIT_CHECKPOINTS} VALUES (?, ?)",
            (seq, signed.SerializeToString()),
        )
        self._checkpointed = seq
        return True

    def latest_checkpoint(self) -> tuple[int, Signed] | None:
        """The newest signed checkpoint and the number of entries it covers, if any."""
        row = self._conn.execute(
            f"SELECT seq, signed FROM {AUDIT_CHECKPOINTS} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), parse(bytes(row[1]), Signed, what="checkpoint")

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
        sql = f"SELECT * FROM {AUDIT_LOG} WHERE {where} ORDER BY seq {order} LIMIT ?"
        cursor = self._conn.execute(sql, (*params, limit))
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            row["categories"] = json.loads(row["categories"])
            yield row


# --- verification ---------------------------------------------------------------------------

OK = "OK"
TAMPERED = "TAMPERED"  # the log was changed: an entry, or the chain against a checkpoint
UNVERIFIED = "UNVERIFIED"  # it could not be checked as asked (no such file, key not given, …)


@dataclass
class VerifyReport:
    path: str
    log_id: str = ""
    entries: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    # Checkpoints of this log that witnesses hold and that the log still matches.
    witnessed: int = 0
    ok: bool = True
    verdict: str = OK
    first_bad_seq: int | None = None
    problem: str = ""
    notes: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str, verdict: str = TAMPERED) -> VerifyReport:
        self.ok, self.first_bad_seq, self.problem, self.verdict = False, seq, problem, verdict
        return self


def _rows(conn: sqlite3.Connection) -> list[tuple[dict[str, Any], bytes]]:
    cursor = conn.execute(f"SELECT * FROM {AUDIT_LOG} ORDER BY seq")
    names = [d[0] for d in cursor.description]
    rows = []
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        content = {f: row[f] for f in FIELDS}
        content["count"] = row.get("count", 1)  # a log from before counts existed
        for name in OPTIONAL_FIELDS:
            content[name] = row.get(name) or ""
        rows.append((content, bytes(row["hash"])))
    return rows


def log_owner(path: Path) -> str:
    """Whose log the database at `path` holds, as its owner recorded it ("" if unknown)."""
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error:
        return ""
    try:
        return _log_id(conn)
    finally:
        conn.close()


def _log_id(conn: sqlite3.Connection) -> str:
    """Whose log the database holds, as its owner recorded it ("" if it does not say)."""
    try:
        row = conn.execute(f"SELECT value FROM {AUDIT_META} WHERE key = 'log_id'").fetchone()
    except sqlite3.Error:
        return ""
    return str(row[0]) if row else ""


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


@dataclass(frozen=True)
class _Copy:
    """One checkpoint of the log: the owner's own (witness "") or a witness's copy."""

    seq: int
    blob: bytes
    witness: str = ""

    def name(self) -> str:
        if not self.witness:
            return f"the checkpoint at entry {self.seq}"
        return f"witness {self.witness}'s copy of the checkpoint at entry {self.seq}"


def _witness_copies(witness: Path, log_id: str, log_path: Path) -> list[_Copy] | str:
    """The checkpoints of `log_id` that the witness database keeps, or why there are none."""
    if not log_id:
        return f"{log_path} does not say whose log it is, so no witness copy can be matched"
    if not witness.is_file():
        return f"witness {witness} does not exist"
    if witness.resolve() == log_path.resolve():
        return f"{witness} is the log itself, not a witness"
    try:
        conn = sqlite3.connect(readonly_uri(witness), uri=True)
        try:
            owner = _log_id(conn)
            found = conn.execute(
                f"SELECT seq, signed FROM {WITNESSED} WHERE log_id = ? ORDER BY seq", (log_id,)
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{witness} keeps no witnessed checkpoints: {exc}"
    if owner == log_id:
        return f"{witness} is another copy of {log_id!r}'s own log, not a witness"
    if not found:
        return f"witness {witness} holds no checkpoint of {log_id!r}'s log"
    return [_Copy(int(seq), bytes(blob), str(witness)) for seq, blob in found]


def verify_log(
    path: Path,
    key: VerifyKey | None = None,
    *,
    keys: KeyHistory | None = None,
    witnesses: Sequence[Path] = (),
) -> VerifyReport:
    """Walk the chain of the log in `path` and check every checkpoint against it: the owner's
    own and the copies each witness database holds. Given the owner's key (`key`) or keys
    (`keys`, each for its own period), every checkpoint's signature is checked too."""
    report = VerifyReport(path=str(path))
    history = keys
    if key is not None:
        single = KeyHistory.single(key)
        history = single if history is None else history.merged(single)
    if not path.is_file():
        return report.fail(None, f"{path} does not exist", UNVERIFIED)
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
        try:
            rows = _rows(conn)
            own = [
                _Copy(int(seq), bytes(blob))
                for seq, blob in conn.execute(
                    f"SELECT seq, signed FROM {AUDIT_CHECKPOINTS} ORDER BY seq"
                )
            ]
            report.log_id = _log_id(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return report.fail(None, f"not an audit log: {exc}", UNVERIFIED)
    report.entries, report.checkpoints = len(rows), len(own)
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
    copies = list(own)
    for witness in witnesses:
        found = _witness_copies(witness, report.log_id, path)
        if isinstance(found, str):
            return report.fail(None, found, UNVERIFIED)
        copies.extend(found)
    copies.sort(key=lambda c: (c.seq, c.witness))
    if not _check_copies(report, copies, hashes, history):
        return report
    if rows and not own:
        report.notes.append(
            "WARNING: no signed checkpoint of the owner's own at all, so without a witness the "
            "log cannot be proved complete or unaltered (new log, or checkpoints deleted)"
        )
    if history is None and copies:
        report.notes.append(
            "checkpoint signatures not checked: give the owner's public key (--key) or its key "
            "history (--registry)"
        )
    if copies and copies[-1].seq < len(rows):
        report.notes.append(
            f"entries {copies[-1].seq + 1}-{len(rows)} are after the last checkpoint"
        )
    if not witnesses and rows:
        report.notes.append(
            "not compared with a witness (--witness): a chain rewritten together with its "
            "own checkpoints is caught only against a witness's copies"
        )
    return report


def _check_copies(
    report: VerifyReport,
    copies: list[_Copy],
    hashes: dict[int, bytes],
    history: KeyHistory | None,
) -> bool:
    """Check every checkpoint copy, in sequence order, against the chain; False (and the
    report failed) at the first that does not hold. A witness's copy that is unreadable or
    not the owner's is a witness problem, not proof the log was changed."""
    matched = 0  # the last entry a checkpoint proved unchanged
    newest_key, newest_key_seq = -1, 0
    for copy in copies:
        what = copy.name()
        unproven = UNVERIFIED if copy.witness else TAMPERED
        try:
            signed = parse(copy.blob, Signed, what="checkpoint")
            checkpoint = parse(signed.body, AuditCheckpoint, what="checkpoint")
        except CredexError:
            report.fail(None if copy.witness else copy.seq, f"{what} is unreadable", unproven)
            return False
        if checkpoint.seq != copy.seq or (report.log_id and checkpoint.log_id != report.log_id):
            report.fail(
                None if copy.witness else copy.seq,
                f"{what} is filed wrongly: it is log {checkpoint.log_id!r}'s checkpoint of "
                f"entry {checkpoint.seq}",
                unproven,
            )
            return False
        if history is not None:
            check = history.check(signed, AuditCheckpoint, from_timestamp(checkpoint.at))
            if check.problem:
                verdict = UNVERIFIED if check.unknown else unproven
                report.fail(
                    None if copy.witness else copy.seq, f"{what} is {check.problem}", verdict
                )
                return False
            if check.index < newest_key:
                report.fail(
                    copy.seq,
                    f"{what} is signed by key {signed.key_id}, which had been replaced by the "
                    f"key that signed the checkpoint at entry {newest_key_seq}",
                    unproven,
                )
                return False
            if check.index > newest_key:
                newest_key, newest_key_seq = check.index, copy.seq
        by = "the owner" if not copy.witness else f"witness {copy.witness} holds that the owner"
        if copy.seq not in hashes:
            report.fail(
                len(hashes) + 1,
                f"{by} signed {copy.seq} entries but only {len(hashes)} are left "
                "(deleted at the end)",
            )
            return False
        if hashes[copy.seq] != checkpoint.head_hash:
            report.fail(
                copy.seq,
                f"entries up to {copy.seq} were rewritten (somewhere in {matched + 1}-{copy.seq}): "
                f"{what} does not match",
            )
            return False
        matched = copy.seq
        if copy.witness:
            report.witnessed += 1
        elif history is not None:
            report.checkpoints_verified += 1
    return True


def checkpoint_now(log: AuditLog, storage: Storage) -> bool:
    """Sign the head now, in a unit of work of its own (see AuditLog.checkpoint)."""
    with storage.unit():
        return log.checkpoint()


async def checkpoint_every(log: AuditLog, storage: Storage, interval_s: float) -> None:
    """Sign the head every `interval_s` while entries keep coming (until cancelled); a failed
    checkpoint is logged and tried again next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            checkpoint_now(log, storage)
        except Exception:
            log_errors.exception("audit checkpoint failed; retrying in %ss", interval_s)
