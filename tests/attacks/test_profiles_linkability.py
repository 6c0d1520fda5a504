"""Two agencies compare notes: can they tell which of their local ids are the same person?

Before per-node tickets, every node asked in a profile received the same subject-signed consent
(the same consent id, subject key and signature bytes), so two nodes joining their audit logs on
the consent id linked their local ids. Here two nodes (`volunteers` and `pboc`) hold data about
the same people; the people grant, use, pause, resume and revoke consents and dispute a record,
many profiles over. Then everything each node holds and was sent is gathered: every table of its
state database (audit log, ticket states from its feed, ticket uses, nonces, disputes), and
every query, feed push and dispute notice it received, decoded to the last signed field, with
the calls' metadata (the request id its server log is written under). The
two collections may share no value except timestamps, counts and what is public to every member
(member ids, names and keys, the vocabulary of purposes, categories and outcomes).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from credex.node.config import load_node_config
from credex.protocol import vocab
from credex.protocol.consents import create_consent
from credex.protocol.keys import SigningKey
from credex.testing.federation import Federation, start_federation
from credex.testing.loop import LoopThread
from credex.v1.audit_pb2 import AuditCheckpoint
from credex.v1.common_pb2 import Category, Purpose, Signed
from credex.v1.consent_pb2 import Consent, ConsentStatus, ConsentTicket, SubjectAttestation
from credex.v1.federation_pb2 import RevocationFeed
from credex.v1.node_pb2 import DisputeNotice, NodeQuery

A, B = "volunteers", "pboc"
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
FIN, VOL = Category.CATEGORY_FINANCIAL, Category.CATEGORY_VOLUNTEERING
# Eight people known to both nodes, each under the node's own local id; S1 and S9 have records.
PEOPLE = {
    "S1": {A: "V-1", B: "1001"},
    "S9": {A: "V-9", B: "1009"},
    **{f"S{n}": {A: f"V-{n}", B: f"{1000 + n}"} for n in range(2, 8)},
}
# Tables about the node's own operation, not about anyone: the directory's audit checkpoints
# it witnesses (the same directory log head reaches every node, on a timer, about no one), its
# sync progress and its log's name.
NOT_ABOUT_PEOPLE = {"witnessed_checkpoints", "directory_sync", "audit_meta"}
# Integers below this are counts, enum numbers and per-node sequence numbers; larger ones
# could be identifiers.
SMALL_INT = 1000
# What a signed body inside a received message is, by (message type, field).
SIGNED_BODIES: dict[tuple[str, str], type[Message]] = {
    ("credex.v1.QueryRecordsRequest", "query"): NodeQuery,
    ("credex.v1.NodeQuery", "attestation"): SubjectAttestation,
    ("credex.v1.NodeQuery", "ticket"): ConsentTicket,
    ("credex.v1.NotifyRevocationsRequest", "feed"): RevocationFeed,
    ("credex.v1.ReceiveDisputeRequest", "notice"): DisputeNotice,
    ("credex.v1.WitnessDirectoryCheckpointRequest", "checkpoint"): AuditCheckpoint,
}


def message_values(message: Message) -> Iterator[object]:
    """Every value in `message`, at any depth; signed bodies are decoded and walked too, and
    timestamps left out."""
    if isinstance(message, Timestamp):
        return
    for field, value in message.ListFields():
        items = value if field.is_repeated else [value]
        for item in items:
            if isinstance(item, Signed):
                yield from (item.body, item.signature, item.key_id)
                body_type = SIGNED_BODIES.get((message.DESCRIPTOR.full_name, field.name))
                if body_type is not None:
                    yield from message_values(body_type.FromString(item.body))
            elif isinstance(item, Message):
                yield from message_values(item)
            else:
                yield item


def table_values(db: Path) -> Iterator[object]:
    """Every value of every row of every table about people in a node's state database; real
    numbers are all timestamps there and left out."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name not in NOT_ABOUT_PEOPLE and not name.startswith("sqlite_")
        ]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str) and value.startswith("["):  # a JSON list column
                        yield from re.findall(r'"([^"]*)"', value)
                    yield value


def atoms(values: Iterable[object]) -> set[object]:
    """The values that could identify something: strings and bytes, and integers that are not
    small counts (bools and floats are left out: flags and timestamps)."""
    found: set[object] = set()
    for value in values:
        if isinstance(value, (bool, float)) or value is None:
            continue
        if isinstance(value, int):
            if abs(value) >= SMALL_INT:
                found.add(value)
        elif isinstance(value, (bytes, memoryview)):
            if len(value):
                found.add(bytes(value))
        elif isinstance(value, str) and value:
            found.add(value)
    return found


def public_values(fed: Federation) -> set[object]:
    """What every member may know: the registry (ids, names, keys, endpoints), the directory's
    identity, and the vocabulary nodes write into their logs."""
    public: set[object] = {"directory", fed.directory_key.public.raw, fed.directory_key.key_id}
    public |= atoms(message_values(fed.loop.run(fed.requester("bank").members())))
    public |= set(vocab.category_names(vocab.ALL_CATEGORIES))
    public |= {vocab.purpose_name(p) for p in vocab.PURPOSE_CATEGORIES}
    public |= {ConsentStatus.Name(s) for s in ConsentStatus.values()}
    # The log's own words: actions, outcomes and record counts every node writes alike.
    public |= {"query", "dispute", "received", "disclosed", "no_records"}
    return public


def shared(a: set[object], b: set[object], public: set[object]) -> set[object]:
    """Values both nodes hold that are not public and not a record count."""
    return {v for v in a & b if v not in public and not re.fullmatch(r"\d+ records", str(v))}


def node_collection(fed: Federation, node_id: str) -> set[object]:
    recorder = fed.recorders[node_id]
    received = [*recorder.received, *recorder.pushed, *recorder.notices]
    # the calls' metadata too (the request id a node logs under), but for gRPC's user agent
    headers = [v for call in recorder.metadata for k, v in call if k != "user-agent"]
    state_db = load_node_config(fed.node_configs[node_id]).state_db
    return atoms(
        [*(v for m in received for v in message_values(m)), *headers, *table_values(state_db)]
    )


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, loop: LoopThread) -> Iterator[Federation]:
    root = Path(tmp_path_factory.mktemp("linkability"))
    fed = start_federation(root, loop, deadline_s=5.0, locator=PEOPLE, recorded=(A, B))
    try:
        yield fed
    finally:
        fed.stop()


def use_the_exchange(fed: Federation) -> int:
    """Each person grants consents, profiles are obtained under them, one is paused, resumed
    and revoked, and S1 disputes a record; returns how many profiles were assembled."""
    bank = fed.requester("bank")
    profiles = 0
    for subject_id in PEOPLE:
        subject = fed.subject(subject_id)
        kept = fed.loop.run(
            subject.grant(requester_id="bank", purpose=LOAN, categories=[FIN, VOL], max_uses=3)
        )
        changed = fed.loop.run(
            subject.grant(requester_id="bank", purpose=LOAN, categories=[FIN, VOL], max_uses=2)
        )
        for consent_id in (kept, kept, kept, changed):
            profile = fed.loop.run(
                bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)
            )
            assert {n.node_id for n in profile.nodes} == {A, B}
            assert all(n.status in ("OK", "NOT_FOUND") for n in profile.nodes), profile.nodes
            profiles += 1
        fed.loop.run(subject.pause(changed))
        fed.loop.run(subject.resume(changed))
        fed.loop.run(subject.revoke(changed))
    s1 = fed.subject("S1")
    fed.loop.run(
        s1.file_dispute(node_id=B, category="financial", record_id="loan-1", reason="not mine")
    )
    for node_id in (A, B):  # every change is in each node's own feed by now
        fed.loop.run(fed.node_services[node_id].sync.sync_once())
    return profiles


def test_two_nodes_share_no_value_about_the_people_they_both_know(compared: Federation) -> None:
    profiles = use_the_exchange(compared)
    assert profiles == 4 * len(PEOPLE)
    a, b = node_collection(compared, A), node_collection(compared, B)
    recorders = compared.recorders
    # the test saw what it claims to compare: queries, pushes of the feed and the dispute
    assert len(recorders[A].received) == len(recorders[B].received) == profiles
    assert any(k == "x-request-id" for call in recorders[A].metadata for k, _ in call)
    assert recorders[A].pushed and recorders[B].pushed
    assert recorders[B].notices
    assert len(a) > 10 * len(PEOPLE) and len(b) > 10 * len(PEOPLE)
    common = shared(a, b, public_values(compared))
    assert not common, f"{len(common)} values both nodes hold: {sorted(map(repr, common))[:20]}"


def test_the_comparison_finds_a_consent_both_nodes_were_sent() -> None:
    """The same comparison on what two nodes were sent before tickets: each query carried the
    one subject-signed consent (in NodeQuery's field 10, now reserved)."""
    consent = create_consent(
        SigningKey.generate(),
        requester_id="bank",
        purpose=LOAN,
        categories=[FIN, VOL],
        not_before=0.0,
        not_after=3600.0,
        max_uses=1,
    )
    assert "consent" not in NodeQuery.DESCRIPTOR.fields_by_name

    def received(node_id: str, local_id: str) -> set[object]:
        query = NodeQuery(node_id=node_id, local_subject_id=local_id, requester_id="bank")
        sent_consent = [consent.body, consent.signature, consent.key_id]
        return atoms(
            [
                *message_values(query),
                *sent_consent,
                *message_values(Consent.FromString(consent.body)),
            ]
        )

    common = shared(received(A, "V-1"), received(B, "1001"), {"bank", A, B})
    assert Consent.FromString(consent.body).consent_id in common
    assert consent.signature in common
