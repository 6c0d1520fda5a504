"""Disputes: the subject contests a record, the node that holds it decides, the subject sees
the outcome, and profiles show records under dispute as such."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.directory.config import DisputeLimits, load_settings
from credex.directory.disputes import DisputeDesk
from credex.directory.locator import Locator
from credex.directory.registry import Registry
from credex.directory.schema import open_directory_storage
from credex.node.admin import list_disputes, resolve_dispute
from credex.node.config import load_node_config
from credex.protocol.channels import ChannelPool, open_directory_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.config import ConfigError
from credex.protocol.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
)
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.testing.federation import Federation
from credex.v1 import dispute_pb2, subject_pb2
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.subject_pb2_grpc import SubjectServiceStub

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
        subject.file_dispute(
            node_id="education", category="education", record_id=DEGREE, reason="not my degree"
        )
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
        subject.file_dispute(
            node_id="pboc", category="financial", record_id="loan-3", reason="I paid it back"
        )
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
        federation.loop.run(
            subject.file_dispute(node_id="pboc", category="financial", record_id="x", reason="?")
        )
    assert err.value.reason == Reason.NO_RECORDS
    impostor = federation.subject("S1", key=federation.subject_keys["S2"])
    with pytest.raises(Unauthenticated):
        federation.loop.run(
            impostor.file_dispute(node_id="pboc", category="financial", record_id="x", reason="?")
        )


def test_a_node_cannot_decide_another_nodes_dispute(federation: Federation) -> None:
    subject = federation.subject("S1")
    filed = federation.loop.run(
        subject.file_dispute(
            node_id="courts", category="judicial", record_id="(2021)Su01-77", reason="appealed"
        )
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


def test_a_subject_disputes_only_a_record_the_node_holds_about_them(
    federation: Federation,
) -> None:
    """S9 contests S1's loan, and S1 its degree under the wrong category: the node finds no
    such record about them, the directory files nothing."""
    s9, s1 = federation.subject("S9"), federation.subject("S1")
    attempts = [
        (s9, "pboc", "financial", "loan-1"),  # S1's loan (borrower 1001), not S9's (1009)
        (s1, "education", "civic", DEGREE),  # the education node holds no civic records
        (s1, "education", "education", "XJ-9-bachelor"),  # no such record
    ]
    for subject, node, category, record in attempts:
        with pytest.raises(NotFound) as err:
            federation.loop.run(
                subject.file_dispute(node_id=node, category=category, record_id=record, reason="?")
            )
        assert err.value.reason == Reason.NO_RECORDS
    filed = {
        (d.node_id, d.category, d.record_id)
        for s in (s9, s1)
        for d in federation.loop.run(s.disputes())
    }
    assert not filed & {(node, category, record) for _, node, category, record in attempts}
    with pytest.raises(InvalidArgument):
        federation.loop.run(
            s1.file_dispute(
                node_id="education",
                category=Category.CATEGORY_UNSPECIFIED,
                record_id=DEGREE,
                reason="?",
            )
        )


def test_disputes_per_subject_are_limited(tmp_path: Path, federation: Federation) -> None:
    """A few attempts an hour per subject, refused or not, and a cap on open disputes; both
    refusals say when to try again."""
    storage = open_directory_storage(tmp_path / "directory.db")
    db = storage.connection
    now = [1_000_000.0]
    desk = DisputeDesk(
        storage=storage,
        locator=Locator(db),
        registry=Registry(db),
        channels=ChannelPool(federation.directory_tls),
        key=SigningKey.generate(),
        clock=lambda: now[0],
        limits=DisputeLimits(per_hour=3, max_open=2),
    )

    def file(n: int, subject: str = "S1") -> None:
        dispute = dispute_pb2.Dispute(
            dispute_id=f"d-{subject}-{n}",
            subject_id=subject,
            node_id="nowhere",
            record_id="r-1",
            reason="wrong",
            category=Category.CATEGORY_CIVIC,
        )
        federation.loop.run(desk.file(dispute))

    for n in range(3):
        with pytest.raises(NotFound):  # refused by the node (here: no such node), yet counted
            file(n)
    with pytest.raises(ResourceExhausted) as err:
        file(3)
    assert err.value.reason == Reason.DISPUTE_LIMIT and err.value.retry_after_s == 3600
    now[0] += 1800
    with pytest.raises(ResourceExhausted) as err:
        file(4)
    assert err.value.retry_after_s == 1800
    with pytest.raises(NotFound):
        file(0, subject="S2")  # another subject is not held back
    now[0] += 1801
    with pytest.raises(NotFound):
        file(5)  # an hour after the first attempts

    for n in range(2):
        db.execute(
            "INSERT INTO disputes (dispute_id, subject_id, node_id, record_id, reason, status,"
            " filed_at, category) VALUES (?, 'S3', 'n', ?, 'x', 'open', ?, 7)",
            (f"d-open-{n}", f"r-{n}", now[0]),
        )
    with pytest.raises(ResourceExhausted) as err:
        file(0, subject="S3")
    assert "at most 2 may be open" in err.value.message and err.value.retry_after_s
    storage.close()


def test_two_filings_of_one_dispute_id_at_once_file_it_once(federation: Federation) -> None:
    """Two FileDispute calls with the same dispute id, the second sent while the node still
    holds the first: the node is asked once, the first is filed, the second is refused as
    ALREADY_EXISTS (not INTERNAL), and the subject sees one dispute."""
    node = federation.recorder
    assert node is not None
    key = federation.subject_keys["S9"]
    dispute_id = f"d-{uuid.uuid4().hex}"

    def request() -> subject_pb2.FileDisputeRequest:
        dispute = dispute_pb2.Dispute(
            dispute_id=dispute_id,
            subject_id="S9",
            node_id="volunteers",
            record_id="svc-3",
            reason="not my hours",
            issued_at=to_timestamp(federation.clock()),
            category=Category.CATEGORY_VOLUNTEERING,
            nonce=os.urandom(16),
        )
        return subject_pb2.FileDisputeRequest(dispute=seal(dispute, key))

    async def until(done: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    async def race() -> tuple[list[Any], int]:
        channel = open_directory_channel(federation.public_address, TlsIdentity(federation.ca_pem))
        stub = SubjectServiceStub(channel)
        before = node.disputes_received
        node.disputes_open.clear()
        try:
            first = asyncio.ensure_future(stub.FileDispute(request(), timeout=60))
            await until(lambda: node.disputes_received > before, "the node never got the first")
            second = asyncio.ensure_future(stub.FileDispute(request(), timeout=60))
            # Refused at once, or (the race) handed to the node as well.
            await until(
                lambda: second.done() or node.disputes_received > before + 1,
                "the second filing neither failed nor reached the node",
            )
            node.disputes_open.set()
            results = await asyncio.gather(first, second, return_exceptions=True)
            return list(results), node.disputes_received - before
        finally:
            node.disputes_open.set()
            await channel.close(None)

    (first, second), asked = federation.loop.run(race())
    assert isinstance(first, subject_pb2.FileDisputeResponse), first
    assert first.dispute.dispute_id == dispute_id
    assert isinstance(second, grpc.aio.AioRpcError), second
    assert second.code() == grpc.StatusCode.ALREADY_EXISTS, (second.code(), second.details())
    assert "Traceback" not in (second.details() or "")
    assert asked == 1
    mine = [d for d in federation.loop.run(federation.subject("S9").disputes())]
    assert [d.status for d in mine if d.dispute_id == dispute_id] == ["open"]
    federation.loop.run(
        resolve_dispute(
            load_node_config(federation.node_configs["volunteers"]), dispute_id, "rejected",
            "hours confirmed by the organiser",
        )
    )  # fmt: skip


def test_a_dispute_id_filed_meanwhile_by_another_process_is_already_exists(
    federation: Federation,
) -> None:
    """A second directory process on the same database files the id while this one waits for
    the node: the insert that loses is ALREADY_EXISTS, not an internal error."""
    node = federation.recorder
    assert node is not None
    storage = open_directory_storage(load_settings(federation.root / "directory").db_path)
    db = storage.connection
    desk = DisputeDesk(
        storage=storage,
        locator=Locator(db),
        registry=Registry(db),
        channels=ChannelPool(federation.directory_tls),
        key=federation.directory_key,
        clock=federation.clock,
    )
    dispute = dispute_pb2.Dispute(
        dispute_id=f"d-{uuid.uuid4().hex}",
        subject_id="S9",
        node_id="volunteers",
        record_id="svc-3",
        reason="not my hours",
        category=Category.CATEGORY_VOLUNTEERING,
    )

    async def race() -> BaseException | None:
        before = node.disputes_received
        node.disputes_open.clear()
        try:
            filing = asyncio.ensure_future(desk.file(dispute))
            deadline = time.monotonic() + 30
            while node.disputes_received == before:
                assert time.monotonic() < deadline and not filing.done(), "never at the node"
                await asyncio.sleep(0.01)
            db.execute(
                "INSERT INTO disputes (dispute_id, subject_id, node_id, record_id, reason,"
                " status, filed_at, category) VALUES (?, 'S9', 'volunteers', 'svc-3', 'x',"
                " 'open', ?, ?)",
                (dispute.dispute_id, federation.clock(), dispute.category),
            )  # the other process's row
            node.disputes_open.set()
            (outcome,) = await asyncio.gather(filing, return_exceptions=True)
            return outcome if isinstance(outcome, BaseException) else None
        finally:
            node.disputes_open.set()

    try:
        refused = federation.loop.run(race())
    finally:
        storage.close()
    assert isinstance(refused, AlreadyExists), refused
    federation.loop.run(
        resolve_dispute(
            load_node_config(federation.node_configs["volunteers"]), dispute.dispute_id,
            "rejected", "hours confirmed by the organiser",
        )
    )  # fmt: skip
