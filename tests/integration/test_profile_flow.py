"""The whole flow on a real loopback federation: grant, profile, refusals, revoke."""

from __future__ import annotations

import time

import pytest
from google.protobuf.message import DecodeError, Message

from credex.protocol import vocab
from credex.protocol.errors import NotFound, PermissionDenied, Reason, Unauthenticated
from credex.testing.federation import Federation
from credex.v1.common_pb2 import Category as Cat
from credex.v1.common_pb2 import Purpose, Signed
from credex.v1.consent_pb2 import ConsentTicket, SubjectAttestation
from credex.v1.node_pb2 import NodeQuery

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
LOAN_CATS = [Cat.CATEGORY_FINANCIAL, Cat.CATEGORY_VOLUNTEERING, Cat.CATEGORY_JUDICIAL]


def grant(fed: Federation, subject: str = "S1", **kwargs: object) -> str:
    args: dict[str, object] = {
        "requester_id": "bank",
        "purpose": LOAN,
        "categories": LOAN_CATS,
        "max_uses": 5,
    }
    args.update(kwargs)
    client = fed.subject(subject)
    return fed.loop.run(client.grant(**args))  # type: ignore[arg-type]


def test_profile_assembled_from_every_node_holding_the_subject(federation: Federation) -> None:
    consent_id = grant(federation)
    bank = federation.requester("bank")
    profile = federation.loop.run(
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    )
    statuses = {n.node_id: n.status for n in profile.nodes}
    # education holds S1 but is outside the consent, so it is not asked at all.
    assert statuses == {"courts": "OK", "pboc": "OK", "volunteers": "OK"}
    by_cat = profile.by_category()
    assert sorted(by_cat) == ["financial", "judicial", "volunteering"]
    assert {r.record_id for r in by_cat["financial"]} == {"loan-1", "loan-2"}
    assert {r.node_id for r in by_cat["volunteering"]} == {"volunteers"}
    hours = sorted(r.value for r in by_cat["volunteering"])
    assert hours == [4.0, 12.5]
    assert by_cat["volunteering"][0].attributes["organisation"] in {"Red Cross", "Library"}
    # Records of another subject held by the same node never appear.
    assert all(r.record_id != "svc-3" for r in profile.records)


def test_subset_of_categories(federation: Federation) -> None:
    consent_id = grant(federation)
    bank = federation.requester("bank")
    profile = federation.loop.run(
        bank.get_profile(
            subject_id="S1",
            consent_id=consent_id,
            purpose=LOAN,
            categories=[Cat.CATEGORY_FINANCIAL],
        )
    )
    assert [n.node_id for n in profile.nodes] == ["pboc"]
    assert {r.category for r in profile.records} == {"financial"}


def test_category_outside_consent_is_refused(federation: Federation) -> None:
    consent_id = grant(federation, categories=[Cat.CATEGORY_FINANCIAL])
    bank = federation.requester("bank")
    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(
            bank.get_profile(
                subject_id="S1",
                consent_id=consent_id,
                purpose=LOAN,
                categories=[Cat.CATEGORY_VOLUNTEERING],
            )
        )
    assert err.value.reason == Reason.CATEGORY_NOT_CONSENTED


def test_answers_and_refusals_leave_only_synced_writes(federation: Federation) -> None:
    """The directory commits without a sync per statement; each reply waits for one."""
    commits = federation.directory.services.storage
    consent_id = grant(federation)
    bank = federation.requester("bank")
    before = commits.syncs
    federation.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    assert not commits.pending and commits.syncs > before
    before = commits.syncs
    with pytest.raises(NotFound):
        federation.loop.run(bank.get_profile(subject_id="nobody", consent_id="x", purpose=LOAN))
    assert not commits.pending and commits.syncs > before  # the refusal's audit entry


def test_revoked_consent_is_refused(federation: Federation) -> None:
    consent_id = grant(federation)
    bank = federation.requester("bank")
    federation.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    subject = federation.subject("S1")
    assert federation.loop.run(subject.revoke(consent_id)) == "revoked"
    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    assert err.value.reason == Reason.CONSENT_REVOKED
    views = {v.consent_id: v for v in federation.loop.run(subject.consents())}
    assert views[consent_id].status == "revoked"
    assert views[consent_id].uses == 1


def test_faulty_nodes_get_their_status_and_the_rest_still_arrives(federation: Federation) -> None:
    consent_id = grant(federation, subject="S9")
    bank = federation.requester("bank")
    start = time.monotonic()
    profile = federation.loop.run(
        bank.get_profile(subject_id="S9", consent_id=consent_id, purpose=LOAN)
    )
    elapsed = time.monotonic() - start
    statuses = {n.node_id: n.status for n in profile.nodes}
    assert statuses == {
        "down": "UNAVAILABLE",
        "forger": "INVALID_SIGNATURE",
        "pboc": "OK",
        "slow": "TIMEOUT",
        "volunteers": "OK",
    }
    assert elapsed < federation.deadline_s + 0.7, elapsed
    assert {r.node_id for r in profile.records} == {"pboc", "volunteers"}


def test_unknown_subject_is_refused(federation: Federation) -> None:
    consent_id = grant(federation)
    bank = federation.requester("bank")
    with pytest.raises(NotFound) as err:
        federation.loop.run(
            bank.get_profile(subject_id="S404", consent_id=consent_id, purpose=LOAN)
        )
    assert err.value.reason == Reason.UNKNOWN_SUBJECT


def test_unknown_requester_is_refused(federation: Federation) -> None:
    from credex.protocol.keys import SigningKey

    consent_id = grant(federation)
    stranger = federation.requester("bank", key=SigningKey.generate())
    with pytest.raises(Unauthenticated) as err:
        federation.loop.run(
            stranger.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
        )
    assert err.value.reason == Reason.UNKNOWN_REQUESTER


def test_vocab_round_trip() -> None:
    for c in vocab.ALL_CATEGORIES:
        assert vocab.parse_category(vocab.category_name(c)) == c


def _strings(message: Message) -> list[str]:
    """Every string value anywhere in `message`, nested messages and Signed bodies included."""
    found: list[str] = []
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        for v in values:
            if isinstance(v, str):
                found.append(v)
            elif isinstance(v, Message):
                found.extend(_strings(v))
    if isinstance(message, Signed):
        for kind in (NodeQuery, ConsentTicket, SubjectAttestation):
            try:
                inner = kind.FromString(message.body)
            except DecodeError:
                continue
            found.extend(_strings(inner))
    return found


def test_nodes_never_see_the_global_subject_id(federation: Federation) -> None:
    assert federation.recorder is not None
    consent_id = grant(federation)
    before = len(federation.recorder.received)
    bank = federation.requester("bank")
    profile = federation.loop.run(
        bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
    )
    received = federation.recorder.received[before:]
    assert len(received) == 1
    query = NodeQuery.FromString(received[0].query.body)
    assert query.local_subject_id == "V-1"
    # the directory's own query id, not the requester's request id
    assert query.request_id.startswith("q-") and query.request_id != profile.request_id
    strings = _strings(received[0])
    assert "V-1" in strings and "bank" in strings  # the walk does reach the nested messages
    assert not [s for s in strings if "S1" in s]
