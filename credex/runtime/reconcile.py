"""Matching what the directory asked with what each node says it did: every node query has the
directory's random query id in both logs, and both sides record digests of what was asked
and what was answered, which must agree.

The directory records, for each node query, the digest of the signed query it sent and of the
node-signed answer it verified; the node records the digest of the signed query it verified
(or refused) and of the answer it signed. So an answered query whose entry a node deleted and
replaced with a refusal under the same id, or whose answer it logged differently, does not
match, however whole the node's chain is.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from credex.runtime.db import readonly_uri
from credex.runtime.schema import AUDIT_LOG, AUDIT_META

# A query the directory marked so never reached the node, or never came back: the node may
# rightly have no entry for it, or any.
NOT_DELIVERED = {"TIMEOUT", "UNAVAILABLE"}
# Node outcomes of a query it answered with a signed answer.
ANSWERED = {"disclosed", "no_records"}


@dataclass(frozen=True)
class Mismatch:
    query_id: str
    node_id: str
    kind: str
    detail: str


@dataclass
class ReconcileReport:
    directory_queries: int = 0
    node_entries: dict[str, int] = field(default_factory=dict)
    matched: int = 0
    explained: list[Mismatch] = field(default_factory=list)
    unexplained: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unexplained


@dataclass(frozen=True)
class _Sent:
    """A node query as the directory logged it."""

    node_id: str
    outcome: str
    link: str
    query_digest: str
    answer_digest: str


@dataclass(frozen=True)
class _Logged:
    """A node's entry about a query."""

    outcome: str
    query_digest: str
    answer_digest: str

    @property
    def answered(self) -> bool:
        return self.outcome in ANSWERED


def _read(path: Path, sql: str) -> list[tuple[str, ...]]:
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
        try:
            return [tuple(str(v) for v in row) for row in conn.execute(sql)]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ValueError(f"{path} is not an audit log: {exc}") from None


def _digest_column(path: Path) -> str:
    """The query digest column, or '' for a log written before it existed."""
    columns = {row[1] for row in _read(path, f"PRAGMA table_info({AUDIT_LOG})")}
    return "query_digest" if "query_digest" in columns else "''"


def _owner(path: Path) -> str:
    """Whose log this is, as its owner recorded it, when no entry names a node."""
    rows = _read(path, f"SELECT value FROM {AUDIT_META} WHERE key = 'log_id'")
    if rows and rows[0][0]:
        return rows[0][0]
    raise ValueError(f"cannot tell which node {path} belongs to: it names none")


def reconcile(directory_log: Path, node_logs: list[Path]) -> ReconcileReport:
    """Every query the directory sent to one of these nodes against that node's log, and every
    query a node logged against the directory's."""
    report = ReconcileReport()
    sent = {
        query_id: _Sent(node_id, outcome, link, query_digest, answer_digest)
        for query_id, node_id, outcome, link, query_digest, answer_digest in _read(
            directory_log,
            f"SELECT request_id, node_id, outcome, link, {_digest_column(directory_log)}, "
            f"disclosed_digest FROM {AUDIT_LOG} WHERE action = 'query'",
        )
    }
    report.directory_queries = len(sent)
    for path in node_logs:
        rows = _read(
            path,
            f"SELECT request_id, node_id, outcome, {_digest_column(path)}, disclosed_digest "
            f"FROM {AUDIT_LOG} WHERE action = 'query' ORDER BY seq",
        )
        node_ids = {row[1] for row in rows if row[1]}
        if len(node_ids) > 1:
            raise ValueError(f"{path} holds entries of several nodes: {sorted(node_ids)}")
        node_id = node_ids.pop() if node_ids else _owner(path)
        report.node_entries[node_id] = len(rows)
        logged: dict[str, list[_Logged]] = {}
        for query_id, _, outcome, query_digest, answer_digest in rows:
            logged.setdefault(query_id, []).append(_Logged(outcome, query_digest, answer_digest))
        for query_id, entries in logged.items():
            if query_id in sent:
                continue
            mismatch = Mismatch(
                query_id, node_id, "node-only",
                f"the node logged {entries[0].outcome} but the directory has no such query",
            )  # fmt: skip
            # Refusing a query the directory never sent (someone else's, or garbage) is what a
            # node should do; having answered one is not.
            unexplained = any(e.answered for e in entries)
            (report.unexplained if unexplained else report.explained).append(mismatch)
        for query_id, query in sent.items():
            if query.node_id != node_id:
                continue
            problem = _compare(query, logged.get(query_id, []))
            if problem is None:
                report.matched += 1
                continue
            kind, detail = problem
            mismatch = Mismatch(query_id, node_id, kind, detail)
            explained = kind == "directory-only" and query.outcome in NOT_DELIVERED
            (report.explained if explained else report.unexplained).append(mismatch)
    return report


def _compare(query: _Sent, entries: list[_Logged]) -> tuple[str, str] | None:
    """Why the node's entries about one query disagree with the directory's, or None."""
    if not entries:
        return (
            "directory-only",
            f"the directory recorded {query.outcome} for request {query.link}; "
            "the node has no entry",
        )
    if query.outcome in NOT_DELIVERED:
        return None  # the node may have answered after the directory gave up, or refused
    answers = [e for e in entries if e.answered]
    if query.query_digest:  # a node answers only the very query the directory signed
        for entry in answers:
            if entry.query_digest and entry.query_digest != query.query_digest:
                return (
                    "query-mismatch",
                    f"the node logged answering query {entry.query_digest[:16]}…, "
                    f"the directory sent {query.query_digest[:16]}…",
                )
    if len(answers) > 1:
        return "answered-twice", f"the node logged {len(answers)} answers to one query"
    if query.answer_digest:  # the directory verified a node-signed answer
        if not answers:
            outcomes = ", ".join(sorted({e.outcome for e in entries}))
            return (
                "answer-missing",
                f"the directory holds the node's signed answer ({query.outcome}), "
                f"but the node logged only {outcomes}",
            )
        if answers[0].answer_digest != query.answer_digest:
            return (
                "answer-mismatch",
                f"the node logged answer {answers[0].answer_digest[:16]}…, the directory "
                f"received {query.answer_digest[:16]}…",
            )
        return None
    if query.outcome == "DENIED" and answers:
        return (
            "answer-unrecorded",
            "the node logged that it answered, the directory recorded a refusal (DENIED)",
        )
    return None
