"""Matching what the directory asked with what each node says it did: every node query has the
directory's random query id in both logs."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from credex.audit import META, TABLE
from credex.db import readonly_uri

# A query the directory marked so never reached the node, or never came back: the node may
# rightly have no entry for it.
NOT_DELIVERED = {"TIMEOUT", "UNAVAILABLE"}


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


def _owner(path: Path) -> str:
    """Whose log this is, as its owner recorded it, when no entry names a node."""
    rows = _read(path, f"SELECT value FROM {META} WHERE key = 'log_id'")
    if rows and rows[0][0]:
        return rows[0][0]
    raise ValueError(f"cannot tell which node {path} belongs to: it names none")


def reconcile(directory_log: Path, node_logs: list[Path]) -> ReconcileReport:
    """Every query the directory sent to one of these nodes against that node's log, and every
    query a node logged against the directory's."""
    report = ReconcileReport()
    sent = {
        query_id: (node_id, outcome, link)
        for query_id, node_id, outcome, link in _read(
            directory_log,
            f"SELECT request_id, node_id, outcome, link FROM {TABLE} WHERE action = 'query'",
        )
    }
    report.directory_queries = len(sent)
    for path in node_logs:
        rows = _read(
            path, f"SELECT request_id, node_id, outcome FROM {TABLE} WHERE action = 'query'"
        )
        node_ids = {node for _, node, _ in rows if node}
        if len(node_ids) > 1:
            raise ValueError(f"{path} holds entries of several nodes: {sorted(node_ids)}")
        node_id = node_ids.pop() if node_ids else _owner(path)
        report.node_entries[node_id] = len(rows)
        logged = {query_id: outcome for query_id, _, outcome in rows}
        for query_id, outcome in logged.items():
            if query_id in sent:
                report.matched += 1
            else:
                report.unexplained.append(
                    Mismatch(query_id, node_id, "node-only",
                             f"the node logged {outcome} but the directory has no such query")
                )  # fmt: skip
        for query_id, (target, outcome, link) in sent.items():
            if target != node_id or query_id in logged:
                continue
            mismatch = Mismatch(
                query_id, node_id, "directory-only",
                f"the directory recorded {outcome} for request {link}; the node has no entry",
            )  # fmt: skip
            (report.explained if outcome in NOT_DELIVERED else report.unexplained).append(mismatch)
    return report
