"""A subject, proving itself with its own key, reads who obtained its profile and why."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from credex.protocol.channels import open_directory_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.errors import PermissionDenied, Reason, Unauthenticated
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.sdk.client import SubjectClient
from credex.testing.federation import Federation
from credex.v1 import requester_pb2, subject_pb2
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.subject_pb2_grpc import SubjectServiceStub

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
VOL = Category.CATEGORY_VOLUNTEERING


def test_subject_sees_every_request_about_it_served_or_refused(federation: Federation) -> None:
    subject = federation.subject("S2")
    before = len(federation.loop.run(subject.access_log()).records)
    consent_id = federation.loop.run(
        subject.grant(
            requester_id="bank", purpose=LOAN, categories=[Category.CATEGORY_VOLUNTEERING],
            max_uses=3,
        )
    )  # fmt: skip
    bank = federation.requester("bank")
    profile = federation.loop.run(
        bank.get_profile(subject_id="S2", consent_id=consent_id, purpose=LOAN)
    )
    with pytest.raises(PermissionDenied):
        federation.loop.run(
            bank.get_profile(
                subject_id="S2", consent_id=consent_id, purpose=LOAN,
                categories=[Category.CATEGORY_FINANCIAL],
            )
        )  # fmt: skip

    log = federation.loop.run(subject.access_log())
    assert len(log.records) == before + 2
    records = log.records[1::-1]  # newest first: the two requests above, in the order sent
    assert [(r.requester_id, r.purpose, r.consent_id, r.outcome) for r in records] == [
        ("bank", "loan-application", consent_id, "assembled"),
        ("bank", "loan-application", consent_id, "refused:CATEGORY_NOT_CONSENTED"),
    ]
    assert records[0].request_id == profile.request_id
    assert records[0].nodes == {"volunteers": "NOT_FOUND"}  # asked, held nothing
    assert records[0].categories == ["volunteering"]
    assert records[0].at <= federation.clock()
    mine = {c.consent_id: c for c in log.consents}
    assert (mine[consent_id].status, mine[consent_id].uses) == ("active", 1)


def test_only_the_subject_reads_its_log(federation: Federation) -> None:
    impostor = federation.subject("S2", key=federation.subject_keys["S1"])
    with pytest.raises(Unauthenticated) as err:
        federation.loop.run(impostor.access_log())
    assert err.value.reason == Reason.BAD_SIGNATURE


def test_a_stale_access_query_is_refused(federation: Federation) -> None:
    """A query signed an hour ago (held back, or replayed) is refused."""

    async def read_with_a_slow_clock() -> object:
        async with SubjectClient(
            federation.public_address, "S2", federation.subject_keys["S2"],
            ca_pem=federation.ca_pem, clock=lambda: time.time() - 3600,
        ) as client:  # fmt: skip
            return await client.access_log()

    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(read_with_a_slow_clock())
    assert err.value.reason == Reason.REQUEST_EXPIRED


def test_a_request_id_cannot_be_reused_to_borrow_another_profiles_results(
    federation: Federation,
) -> None:
    """A requester reusing the id of a served request is refused, so a subject's access log
    never shows node results of someone else's profile."""
    s1 = federation.subject("S1")
    consent_id = federation.loop.run(
        s1.grant(requester_id="bank", purpose=LOAN, categories=[Category.CATEGORY_VOLUNTEERING],
                 max_uses=3)
    )  # fmt: skip
    bank = federation.requester("bank")
    served = federation.loop.run(
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    )
    again = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    body = requester_pb2.ProfileRequest.FromString(again.request.body)
    body.request_id = served.request_id
    resigned = requester_pb2.GetProfileRequest(
        request=seal(body, federation.requester_keys["bank"])
    )
    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(bank.send_profile_request(resigned))
    assert err.value.reason == Reason.REPLAY


def _page(federation: Federation, size: int, token: str) -> subject_pb2.GetAccessLogResponse:
    """One page of S2's log, asked for with a raw stub."""
    query = subject_pb2.AccessLogQuery(
        subject_id="S2",
        issued_at=to_timestamp(federation.clock()),
        nonce=os.urandom(16),
        page_size=size,
        page_token=token,
    )

    async def call() -> subject_pb2.GetAccessLogResponse:
        channel = open_directory_channel(federation.public_address, TlsIdentity(federation.ca_pem))
        try:
            request = subject_pb2.GetAccessLogRequest(
                query=seal(query, federation.subject_keys["S2"])
            )
            return await SubjectServiceStub(channel).GetAccessLog(request, timeout=30)
        finally:
            await channel.close(None)

    return federation.loop.run(call())


def test_the_log_comes_in_pages_newest_first(federation: Federation) -> None:
    subject = federation.subject("S2")
    consent_id = federation.loop.run(
        subject.grant(requester_id="bank", purpose=LOAN, categories=[VOL], max_uses=3)
    )
    bank = federation.requester("bank")
    served = [
        federation.loop.run(bank.get_profile(subject_id="S2", consent_id=consent_id, purpose=LOAN))
        for _ in range(3)
    ]
    first = _page(federation, 2, "")
    assert [r.request_id for r in first.records] == [p.request_id for p in served[:0:-1]]
    assert first.next_page_token and first.consents
    second = _page(federation, 2, first.next_page_token)
    assert second.records[0].request_id == served[0].request_id
    assert not second.consents
    assert all(r.count == 1 for r in [*first.records, *second.records])
    # the SDK reads page after page, or stops at a limit
    log = federation.loop.run(subject.access_log(page_size=1, limit=2))
    assert [r.request_id for r in log.records] == [p.request_id for p in served[:0:-1]]
    assert log.more
    everything = federation.loop.run(subject.access_log(page_size=2))
    assert not everything.more and len(everything.records) >= 3


def test_a_page_token_the_directory_did_not_give_is_refused(federation: Federation) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        _page(federation, 2, "not-a-token")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (err.value.details() or "")
