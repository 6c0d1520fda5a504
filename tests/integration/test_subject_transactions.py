"""Each handler's writes are one transaction: a consent's status change, its feed row, its
nonce and its audit entry; a grant and its audit entry; a dispute's resolution and its audit
entry. A failure part-way (here the audit insert fails, as a full disk would make it) leaves no
half-written change behind (nothing unaudited), and a status change is pushed to nodes only
once it is committed.

The failure is real: a SQLite trigger in the directory's own database aborts the insert."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from credex.directory.config import load_settings
from credex.node.admin import list_disputes, resolve_dispute
from credex.node.config import load_node_config
from credex.protocol.errors import Internal
from credex.testing.federation import Federation
from credex.v1.common_pb2 import Category, Purpose

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
VOL = Category.CATEGORY_VOLUNTEERING


@contextmanager
def failing_audit(fed: Federation, when: str) -> Iterator[None]:
    """Every audit insert at the directory matching `when` (SQL over NEW) fails meanwhile."""
    path = load_settings(fed.root / "directory").db_path
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TRIGGER injected_audit_failure BEFORE INSERT ON audit_log "
        f"WHEN {when} BEGIN SELECT RAISE(ABORT, 'injected: the disk is full'); END"
    )
    try:
        yield
    finally:
        conn.execute("DROP TRIGGER injected_audit_failure")
        conn.close()


def feed_latest(fed: Federation) -> int:
    conn = sqlite3.connect(load_settings(fed.root / "directory").db_path)
    try:
        return int(conn.execute("SELECT count(*) FROM ticket_changes").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("order", ["pause", "revoke"])
def test_a_status_change_whose_audit_entry_fails_is_not_made(
    federation: Federation, order: str
) -> None:
    subject = federation.subject("S9")
    consent_id = federation.loop.run(
        subject.grant(requester_id="bank", purpose=LOAN, categories=[VOL])
    )
    assert federation.recorder is not None
    pushed, latest = len(federation.recorder.pushed), feed_latest(federation)
    failing = failing_audit(federation, "NEW.action = 'consent-status'")
    with failing, pytest.raises(Internal):
        if order == "pause":
            federation.loop.run(subject.pause(consent_id))
        else:
            federation.loop.run(subject.revoke(consent_id))
    views = {c.consent_id: c.status for c in federation.loop.run(subject.consents())}
    assert views[consent_id] == "active"
    assert feed_latest(federation) == latest  # no feed row
    assert len(federation.recorder.pushed) == pushed  # nothing uncommitted was pushed
    # the same order, signed anew, goes through once the disk is back
    if order == "pause":
        assert federation.loop.run(subject.pause(consent_id)) == "paused"
    else:
        assert federation.loop.run(subject.revoke(consent_id)) == "revoked"
    assert feed_latest(federation) == latest + 1


def test_a_grant_whose_audit_entry_fails_is_not_stored(federation: Federation) -> None:
    subject = federation.subject("S9")
    before = {c.consent_id for c in federation.loop.run(subject.consents())}
    with failing_audit(federation, "NEW.action = 'grant'"), pytest.raises(Internal):
        federation.loop.run(subject.grant(requester_id="bank", purpose=LOAN, categories=[VOL]))
    assert {c.consent_id for c in federation.loop.run(subject.consents())} == before


def test_a_resolution_whose_audit_entry_fails_is_not_recorded(federation: Federation) -> None:
    volunteers = load_node_config(federation.node_configs["volunteers"])
    subject = federation.subject("S9")
    filed = federation.loop.run(
        subject.file_dispute(
            node_id="volunteers", category="volunteering", record_id="svc-3", reason="not me"
        )
    )
    failing = failing_audit(federation, "NEW.action = 'dispute' AND NEW.outcome != 'filed'")
    with failing, pytest.raises(Internal):
        federation.loop.run(
            resolve_dispute(volunteers, filed.dispute_id, "rejected", "the hours stand")
        )
    views = {d.dispute_id: d.status for d in federation.loop.run(subject.disputes())}
    assert views[filed.dispute_id] == "open"
    # the node, told of a failure, decides again; the directory takes it this time
    state = federation.loop.run(
        resolve_dispute(volunteers, filed.dispute_id, "rejected", "the hours stand")
    )
    assert state.resolution == "the hours stand"
    assert {d.dispute_id: d.status for d in list_disputes(volunteers)}[filed.dispute_id] == (
        "rejected"
    )
