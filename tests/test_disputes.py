"""Disputes: the subject contests a record, the node that holds it decides, the subject sees
the outcome, and profiles show records under dispute as such."""

from __future__ import annotations

from typing import Any

import pytest

from credex.config import ConfigError
from credex.errors import NotFound, PermissionDenied, Reason, Unauthenticated
from credex.v1.common_pb2 import Category, Purpose
from nodes.admin import list_disputes, resolve_dispute
from nodes.config import load_node_config
from tests.harness import Federation

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
SCHOOL = Purpose.PURPOSE_SCHOOL_ENROLLMENT
DEGREE = "XJ-1-bachelor"


def financial_profile(fed: Federation, subject: str = "S1") -> Any:
    consent_id = fed.loop.run(
        fed.subject(subject).grant(
            requester_id="bank", purpose=LOAN, categories=[Category.CATEGORY_FINANCIAL]
        )
    )
    return fed.loop.run(
        fed.requester("bank").get_profile(subject_id=subject, consent_id=consent_id, purpose=LOAN)
    )


def education_profile(fed: Federation) -> Any:
    consent_id = fed.loop.run(
        fed.subject("S1").grant(
            requester_id="school", purpose=SCHOOL, categories=[Category.CATEGORY_EDUCATION]
        )
    )
    return fed.loop.run(
        fed.requester("school").get_profile(subject_id="S1", consent_id=consent_id, purpose=SCHOOL)
    )


def test_dispute_from_filing_to_deletion(federation: Federation) -> None:
    education = load_node_config(federation.node_configs["education"])
    subject = federation.subject("S1")
    before = {r.record_id: r.disputed_by for r in education_profile(federation).records}
    assert before == {DEGREE: ""}

    filed = federation.loop.run(
        subject.file_dispute(node_id="education", record_id=DEGREE, reason="not my degree")
    )
    assert filed.status == "open"
    at_node = [d for d in list_disputes(education) if d.dispute_id == filed.dispute_id]
    assert [(d.local_subject_id, d.record_id, d.status) for d in at_node] == [
        ("XJ-1", DEGREE, "open")  # the node's own id for S1, never the global one
    ]
    marked = {r.record_id: r.disputed_by for r in education_profile(federation).records}
    assert marked == {DEGREE: filed.dispute_id}

    state = federation.loop.run(
        resolve_dispute(education, filed.dispute_id, "deleted", "entered for the wrong person")
    )
    assert state.resolution == "entered for the wrong person"
    views = {d.dispute_id: d for d in federation.loop.run(subject.disputes())}
    assert views[filed.dispute_id].status == "deleted"
    assert views[filed.dispute_id].resolved_at is not None
    assert education_profile(federation).records == []
    with pytest.raises(ConfigError, match="already deleted"):
        federation.loop.run(resolve_dispute(education, filed.dispute_id, "rejected", "no"))


def test_a_rejected_dispute_needs_a_reason_and_the_record_stays(federation: Federation) -> None:
    pboc = load_node_config(federation.node_configs["pboc"])
    subject = federation.subject("S9")
    filed = federation.loop.run(
        subject.file_dispute(node_id="pboc", record_id="loan-3", reason="I paid it back")
    )
    with pytest.raises(ConfigError, match="why"):
        federation.loop.run(resolve_dispute(pboc, filed.dispute_id, "rejected", ""))
    federation.loop.run(
        resolve_dispute(pboc, filed.dispute_id, "rejected", "court ruling (2022) stands")
    )
    views = {d.dispute_id: d for d in federation.loop.run(subject.disputes())}
    assert (views[filed.dispute_id].status, views[filed.dispute_id].resolution) == (
        "rejected", "court ruling (2022) stands",
    )  # fmt: skip
    records = {r.record_id: r for r in financial_profile(federation, "S9").records}
    assert "loan-3" in records and records["loan-3"].disputed_by == ""


def test_dispute_refusals(federation: Federation) -> None:
    subject = federation.subject("S2")  # known to the volunteers node only
    with pytest.raises(NotFound) as err:
        federation.loop.run(subject.file_dispute(node_id="pboc", record_id="x", reason="?"))
    assert err.value.reason == Reason.NO_RECORDS
    impostor = federation.subject("S1", key=federation.subject_keys["S2"])
    with pytest.raises(Unauthenticated):
        federation.loop.run(impostor.file_dispute(node_id="pboc", record_id="x", reason="?"))


def test_a_node_cannot_decide_another_nodes_dispute(federation: Federation) -> None:
    subject = federation.subject("S1")
    filed = federation.loop.run(
        subject.file_dispute(node_id="courts", record_id="(2021)Su01-77", reason="appealed")
    )
    courts = load_node_config(federation.node_configs["courts"])
    pboc = load_node_config(federation.node_configs["pboc"])
    # pboc's operator copies the dispute into its own state, then tries to decide it
    import sqlite3

    src = sqlite3.connect(courts.state_db)
    row = src.execute(
        "SELECT dispute_id, local_subject_id, record_id, reason, status, note, filed_at "
        "FROM disputes WHERE dispute_id = ?",
        (filed.dispute_id,),
    ).fetchone()
    src.close()
    dst = sqlite3.connect(pboc.state_db)
    with dst:
        dst.execute(
            "INSERT INTO disputes (dispute_id, local_subject_id, record_id, reason, status, "
            "note, filed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )
    dst.close()
    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(resolve_dispute(pboc, filed.dispute_id, "deleted", "not ours"))
    assert err.value.reason == Reason.PEER_MISMATCH
    views = {d.dispute_id: d.status for d in federation.loop.run(subject.disputes())}
    assert views[filed.dispute_id] == "open"
