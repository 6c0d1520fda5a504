"""Per-node subject keys and consent tickets: the derivation a client in another language must
reproduce, the directory's checks on tickets and node keys, each node's own feed, migrating a
consent from before tickets, and the consent a profile carries as proof."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.directory.config import load_settings
from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.consents import create_consent
from credex.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ProfileVerificationError,
    Reason,
    Unauthenticated,
    from_rpc_error,
)
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.signing import parse, seal
from credex.protocol.tickets import (
    MAX_TICKETS,
    NODE_KEY_SALT,
    TIME_GRAIN_S,
    SubjectKeys,
    check_ticket_matches,
    coarse_window,
    create_ticket,
    node_key,
    tickets_for,
)
from credex.protocol.tls import TlsIdentity
from credex.sdk.client import SubjectClient
from credex.sdk.link import DirectoryLink
from credex.testing.federation import Federation
from credex.v1 import federation_pb2, requester_pb2, subject_pb2
from credex.v1.common_pb2 import Category as Cat
from credex.v1.common_pb2 import Purpose
from credex.v1.consent_pb2 import Consent, ConsentTicket
from credex.v1.federation_pb2_grpc import FederationServiceStub
from credex.v1.node_pb2 import NotifyRevocationsRequest
from credex.v1.node_pb2_grpc import NodeServiceStub
from credex.v1.subject_pb2_grpc import SubjectServiceStub

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
FIN, VOL, JUD = Cat.CATEGORY_FINANCIAL, Cat.CATEGORY_VOLUNTEERING, Cat.CATEGORY_JUDICIAL
DAY = 86_400.0


# --- the derivation and the ticket rules, without servers -------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869, written out here: what docs/wire.md tells another implementation to do."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_node_key_is_the_documented_hkdf_of_the_main_seed() -> None:
    main = SigningKey.from_seed(b"a subject")
    seed = hkdf_sha256(main.private_seed(), NODE_KEY_SALT, b"pboc")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    expected = SigningKey(Ed25519PrivateKey.from_private_bytes(seed))
    assert node_key(main, "pboc").public == expected.public


def test_node_keys_differ_per_node_and_from_the_main_key_and_are_reproducible() -> None:
    main = SigningKey.generate()
    keys = {node_key(main, n).public.raw for n in ("pboc", "volunteers", "courts")}
    assert len(keys) == 3 and main.public.raw not in keys
    again = SubjectKeys(SigningKey(main._key))  # the same secret on another run of the device
    assert again.for_node("pboc").public == node_key(main, "pboc").public


def test_consent_times_are_widened_to_whole_hours() -> None:
    start, end = coarse_window(10 * TIME_GRAIN_S + 5.5, 20 * TIME_GRAIN_S + 1)
    assert (start, end) == (10 * TIME_GRAIN_S, 21 * TIME_GRAIN_S)
    assert coarse_window(7200.0, 7200.0) == (7200.0, 10800.0)


def a_consent(key: SigningKey, **kwargs: Any) -> Consent:
    fields: dict[str, Any] = {
        "requester_id": "bank",
        "purpose": LOAN,
        "categories": [FIN, VOL],
        "not_before": 3600.0,
        "not_after": 7200.0,
        "max_uses": 2,
    }
    fields.update(kwargs)
    return parse(create_consent(key, **fields).body, Consent, what="consent")


def test_each_node_gets_a_ticket_of_its_own_for_only_the_categories_it_serves() -> None:
    main = SigningKey.generate()
    consent = a_consent(main, data_from=1000.0)
    served = {"pboc": [FIN], "volunteers": [VOL, Cat.CATEGORY_CIVIC], "courts": [JUD]}
    tickets = tickets_for(consent, SubjectKeys(main), served)
    opened = {t.key_id: ConsentTicket.FromString(t.body) for t in tickets}
    assert {t.node_id for t in opened.values()} == {"pboc", "volunteers"}  # courts: nothing asked
    by_node = {t.node_id: t for t in opened.values()}
    assert list(by_node["pboc"].categories) == [FIN]
    assert list(by_node["volunteers"].categories) == [VOL]
    assert {k for k in opened} == {node_key(main, n).key_id for n in ("pboc", "volunteers")}
    assert len({t.ticket_id for t in opened.values()}) == 2
    for ticket in opened.values():
        assert consent.consent_id not in ticket.SerializeToString().decode("latin-1")
        check_ticket_matches(ticket, consent, served[ticket.node_id])


@pytest.mark.parametrize(
    "change",
    [
        {"requester_id": "school"},
        {"purpose": Purpose.PURPOSE_RESEARCH},
        {"not_after": 10_800.0},
        {"max_uses": 9},
        {"data_to": 5.0},
    ],
    ids=["requester", "purpose", "times", "uses", "data range"],
)
def test_a_ticket_that_differs_from_its_consent_is_refused(change: dict[str, Any]) -> None:
    main = SigningKey.generate()
    consent = a_consent(main)
    other = a_consent(main, **change)
    ticket = ConsentTicket.FromString(create_ticket(other, main, "pboc", [FIN]).body)
    with pytest.raises(InvalidArgument) as info:
        check_ticket_matches(ticket, consent, [FIN])
    assert info.value.reason == Reason.MALFORMED


def test_a_ticket_wider_than_its_consent_or_node_is_refused() -> None:
    main = SigningKey.generate()
    consent = a_consent(main, categories=[FIN])
    ticket = ConsentTicket.FromString(create_ticket(consent, main, "pboc", [FIN, VOL]).body)
    with pytest.raises(InvalidArgument, match="volunteering"):
        check_ticket_matches(ticket, consent, [FIN, VOL])
    narrow = ConsentTicket.FromString(create_ticket(consent, main, "pboc", [FIN]).body)
    with pytest.raises(InvalidArgument, match="financial"):
        check_ticket_matches(narrow, consent, [VOL])


# --- the directory's checks, on a real federation ---------------------------------------------


@pytest.fixture(scope="module")
def subject_stub(federation: Federation) -> Iterator[Any]:
    async def connect() -> grpc.aio.Channel:
        return open_directory_channel(federation.public_address, TlsIdentity(federation.ca_pem))

    channel = federation.loop.run(connect())
    yield SubjectServiceStub(channel)
    federation.loop.run(channel.close(None))


def call(fed: Federation, method: Any, request: Any) -> Any:
    async def go() -> Any:
        try:
            return await method(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    return fed.loop.run(go())


def consent_for(fed: Federation, subject_id: str, **kwargs: Any) -> tuple[Any, Consent]:
    now = fed.clock()
    start, end = coarse_window(now, now + DAY)
    fields: dict[str, Any] = {
        "requester_id": "bank",
        "purpose": LOAN,
        "categories": [FIN, VOL],
        "not_before": start,
        "not_after": end,
        "max_uses": 3,
    }
    fields.update(kwargs)
    signed = create_consent(fed.subject_keys[subject_id], **fields)
    return signed, parse(signed.body, Consent, what="consent")


def registered(fed: Federation, subject_id: str) -> SubjectClient:
    """A subject client whose keys for every holding node are registered."""
    client = fed.subject(subject_id)
    fed.loop.run(client._registered_holders())
    return client


def test_grant_with_a_ticket_signed_by_an_unregistered_key_is_refused(
    federation: Federation, subject_stub: Any
) -> None:
    fed = federation
    registered(fed, "S1")
    signed, consent = consent_for(fed, "S1")
    stray = create_ticket(consent, SigningKey.generate(), "pboc", [FIN])
    with pytest.raises(Unauthenticated) as info:
        call(fed, subject_stub.GrantConsent, subject_pb2.GrantConsentRequest(
            consent=signed, subject_id="S1", tickets=[stray]
        ))  # fmt: skip
    assert info.value.reason == Reason.BAD_SIGNATURE


def test_grant_with_a_ticket_for_a_node_without_the_subjects_data_is_refused(
    federation: Federation, subject_stub: Any
) -> None:
    fed = federation
    registered(fed, "S2")  # known to volunteers only
    signed, consent = consent_for(fed, "S2")
    ticket = create_ticket(consent, node_key(fed.subject_keys["S2"], "pboc"), "pboc", [FIN])
    with pytest.raises(InvalidArgument, match="holds none of your data"):
        call(fed, subject_stub.GrantConsent, subject_pb2.GrantConsentRequest(
            consent=signed, subject_id="S2", tickets=[ticket]
        ))  # fmt: skip


def test_grant_with_a_ticket_that_does_not_match_the_consent_is_refused(
    federation: Federation, subject_stub: Any
) -> None:
    fed = federation
    registered(fed, "S1")
    signed, _ = consent_for(fed, "S1")
    _, other = consent_for(fed, "S1", requester_id="school")
    ticket = create_ticket(other, node_key(fed.subject_keys["S1"], "pboc"), "pboc", [FIN])
    with pytest.raises(InvalidArgument, match="does not match its consent"):
        call(fed, subject_stub.GrantConsent, subject_pb2.GrantConsentRequest(
            consent=signed, subject_id="S1", tickets=[ticket]
        ))  # fmt: skip


def test_a_grant_with_tickets_at_exact_times_is_refused(
    federation: Federation, subject_stub: Any
) -> None:
    """Tickets copy the consent's times to every node: to one that is not whole hours, the
    times would be a fingerprint of the grant, so the directory refuses it."""
    fed = federation
    registered(fed, "S1")
    now = fed.clock()
    signed, consent = consent_for(fed, "S1", not_before=now - 61.5, not_after=now + DAY)
    ticket = create_ticket(consent, node_key(fed.subject_keys["S1"], "pboc"), "pboc", [FIN])
    with pytest.raises(InvalidArgument, match="whole hours"):
        call(fed, subject_stub.GrantConsent, subject_pb2.GrantConsentRequest(
            consent=signed, subject_id="S1", tickets=[ticket]
        ))  # fmt: skip


def test_two_tickets_for_one_node_are_refused(federation: Federation, subject_stub: Any) -> None:
    fed = federation
    registered(fed, "S1")
    signed, consent = consent_for(fed, "S1")
    key = node_key(fed.subject_keys["S1"], "pboc")
    twice = [create_ticket(consent, key, "pboc", [FIN]) for _ in range(2)]
    with pytest.raises(InvalidArgument, match="two tickets"):
        call(fed, subject_stub.GrantConsent, subject_pb2.GrantConsentRequest(
            consent=signed, subject_id="S1", tickets=twice
        ))  # fmt: skip


def registration(fed: Federation, subject_id: str, keys: dict[str, bytes]) -> Any:
    message = subject_pb2.NodeKeyRegistration(
        subject_id=subject_id,
        issued_at=to_timestamp(fed.clock()),
        nonce=os.urandom(16),
        keys=[subject_pb2.NodeKey(node_id=n, public_key=k) for n, k in keys.items()],
    )
    return subject_pb2.RegisterNodeKeysRequest(
        registration=seal(message, fed.subject_keys[subject_id])
    )


def test_node_key_registrations_that_must_fail(federation: Federation, subject_stub: Any) -> None:
    fed = federation
    s1_pboc = node_key(fed.subject_keys["S1"], "pboc").public.raw
    registered(fed, "S1")
    # another subject's key: a key is one subject's for one node
    with pytest.raises(AlreadyExists):
        call(fed, subject_stub.RegisterNodeKeys, registration(fed, "S9", {"pboc": s1_pboc}))
    # a node that holds none of the subject's data
    with pytest.raises(InvalidArgument, match="hold none of your data"):
        call(fed, subject_stub.RegisterNodeKeys, registration(
            fed, "S2", {"pboc": SigningKey.generate().public.raw}
        ))  # fmt: skip
    # the main key itself
    main = fed.subject_keys["S2"].public.raw
    with pytest.raises(InvalidArgument, match="main key"):
        call(fed, subject_stub.RegisterNodeKeys, registration(fed, "S2", {"volunteers": main}))
    # not 32 bytes
    with pytest.raises(InvalidArgument):
        call(fed, subject_stub.RegisterNodeKeys, registration(fed, "S2", {"volunteers": b"x"}))
    # signed by someone else than the subject
    request = registration(fed, "S2", {"volunteers": SigningKey.generate().public.raw})
    request.registration.CopyFrom(
        seal(
            subject_pb2.NodeKeyRegistration.FromString(request.registration.body),
            fed.subject_keys["S1"],
        )
    )
    with pytest.raises(Unauthenticated):
        call(fed, subject_stub.RegisterNodeKeys, request)
    # sent again
    fine = registration(fed, "S2", {"volunteers": node_key(fed.subject_keys["S2"], "volunteers")
                                    .public.raw})  # fmt: skip
    call(fed, subject_stub.RegisterNodeKeys, fine)
    with pytest.raises(PermissionDenied) as info:
        call(fed, subject_stub.RegisterNodeKeys, fine)
    assert info.value.reason == Reason.REPLAY


def test_the_subject_learns_which_nodes_hold_their_data(federation: Federation) -> None:
    fed = federation
    client = registered(fed, "S1")
    holders = fed.loop.run(client.holders())
    assert {h.node_id for h in holders} == {"volunteers", "pboc", "courts", "education"}
    assert all(h.key_registered for h in holders)
    pboc = next(h for h in holders if h.node_id == "pboc")
    assert pboc.categories == ["financial"]
    stranger = fed.subject("S1", key=SigningKey.generate())
    with pytest.raises(Unauthenticated):
        fed.loop.run(stranger.holders())


def test_only_nodes_follow_a_feed_and_only_their_own(federation: Federation) -> None:
    fed = federation
    bank = fed.requester_homes["bank"]

    async def as_bank() -> Any:
        channel = open_channel(fed.address, bank.tls())
        try:
            return await FederationServiceStub(channel).GetRevocations(
                federation_pb2.GetRevocationsRequest(), timeout=10
            )
        finally:
            await channel.close(None)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        fed.loop.run(as_bank())
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # a feed signed by the directory for volunteers, pushed to pboc: refused
    publisher_feed = seal(
        federation_pb2.RevocationFeed(after_seq=0, latest_seq=0, node_id="volunteers"),
        fed.directory_key,
    )

    async def push_to_pboc() -> Any:
        channel = open_channel(fed.nodes["pboc"].address, fed.directory_tls)
        try:
            return await NodeServiceStub(channel).NotifyRevocations(
                NotifyRevocationsRequest(feed=publisher_feed), timeout=10
            )
        finally:
            await channel.close(None)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        fed.loop.run(push_to_pboc())
    assert from_rpc_error(info.value).reason == Reason.WRONG_NODE


def test_each_nodes_feed_numbers_its_own_changes_from_one(federation: Federation) -> None:
    fed = federation
    subject = fed.subject("S1")
    consent_id = fed.loop.run(
        subject.grant(requester_id="bank", purpose=LOAN, categories=[FIN, VOL])
    )
    fed.loop.run(subject.revoke(consent_id))
    path = load_settings(fed.root / "directory").db_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tickets = dict(conn.execute(
            "SELECT node_id, ticket_id FROM consent_tickets WHERE consent_id = ?", (consent_id,)
        ).fetchall())  # fmt: skip
        rows = conn.execute(
            "SELECT node_id, seq, ticket_id, status FROM ticket_changes WHERE ticket_id IN "
            f"({', '.join('?' for _ in tickets)})",
            list(tickets.values()),
        ).fetchall()
        for node_id in tickets:
            seqs = [r[0] for r in conn.execute(
                "SELECT seq FROM ticket_changes WHERE node_id = ? ORDER BY seq", (node_id,)
            )]  # fmt: skip
            assert seqs == list(range(1, len(seqs) + 1))
    assert set(tickets) == {"volunteers", "pboc"}
    assert {(r[0], r[2], r[3]) for r in rows} == {(n, t, "revoked") for n, t in tickets.items()}


def test_a_consent_from_before_tickets_is_served_once_the_subject_adds_them(
    federation: Federation, subject_stub: Any
) -> None:
    fed = federation
    client = registered(fed, "S1")
    signed, consent = consent_for(fed, "S1", categories=[FIN])
    granted = call(fed, subject_stub.GrantConsent, subject_pb2.GrantConsentRequest(
        consent=signed, subject_id="S1"
    ))  # fmt: skip
    assert list(granted.ticket_nodes) == []
    bank = fed.requester("bank")
    before = fed.loop.run(
        bank.get_profile(subject_id="S1", consent_id=consent.consent_id, purpose=LOAN)
    )
    assert before.nodes == []  # no node has a ticket: none is asked
    assert fed.loop.run(client.add_tickets(consent.consent_id)) == ["pboc"]
    assert fed.loop.run(client.add_tickets(consent.consent_id)) == ["pboc"]  # nothing to add
    after = fed.loop.run(
        bank.get_profile(subject_id="S1", consent_id=consent.consent_id, purpose=LOAN)
    )
    assert [(n.node_id, n.status) for n in after.nodes] == [("pboc", "OK")]
    views = {v.consent_id: v for v in fed.loop.run(client.consents())}
    assert views[consent.consent_id].ticket_nodes == ["pboc"]


def test_more_tickets_than_a_consent_takes_are_refused(
    federation: Federation, subject_stub: Any
) -> None:
    fed = federation
    registered(fed, "S1")
    signed, consent = consent_for(fed, "S1")
    key = node_key(fed.subject_keys["S1"], "pboc")
    many = [create_ticket(consent, key, "pboc", [FIN])] * (MAX_TICKETS + 1)
    with pytest.raises(InvalidArgument, match=f"more than {MAX_TICKETS} tickets"):
        call(fed, subject_stub.GrantConsent, subject_pb2.GrantConsentRequest(
            consent=signed, subject_id="S1", tickets=many
        ))  # fmt: skip


def test_a_revoked_consent_takes_no_tickets(federation: Federation, subject_stub: Any) -> None:
    fed = federation
    client = registered(fed, "S1")
    signed, consent = consent_for(fed, "S1", categories=[FIN])
    call(
        fed,
        subject_stub.GrantConsent,
        subject_pb2.GrantConsentRequest(consent=signed, subject_id="S1"),
    )
    fed.loop.run(client.revoke(consent.consent_id))
    ticket = create_ticket(consent, node_key(fed.subject_keys["S1"], "pboc"), "pboc", [FIN])
    with pytest.raises(FailedPrecondition) as info:
        call(fed, subject_stub.AddTickets, subject_pb2.AddTicketsRequest(
            subject_id="S1", consent_id=consent.consent_id, tickets=[ticket]
        ))  # fmt: skip
    assert info.value.reason == Reason.CONSENT_STATE


def test_nobody_but_the_subject_adds_a_ticket(federation: Federation, subject_stub: Any) -> None:
    fed = federation
    registered(fed, "S1")
    signed, consent = consent_for(fed, "S1", categories=[FIN])
    call(
        fed,
        subject_stub.GrantConsent,
        subject_pb2.GrantConsentRequest(consent=signed, subject_id="S1"),
    )
    forged = create_ticket(consent, SigningKey.generate(), "pboc", [FIN])
    with pytest.raises(Unauthenticated):
        call(fed, subject_stub.AddTickets, subject_pb2.AddTicketsRequest(
            subject_id="S1", consent_id=consent.consent_id, tickets=[forged]
        ))  # fmt: skip
    s9_ticket = create_ticket(consent, node_key(fed.subject_keys["S9"], "pboc"), "pboc", [FIN])
    with pytest.raises(PermissionDenied) as info:
        call(fed, subject_stub.AddTickets, subject_pb2.AddTicketsRequest(
            subject_id="S9", consent_id=consent.consent_id, tickets=[s9_ticket]
        ))  # fmt: skip
    assert info.value.reason == Reason.SUBJECT_MISMATCH


def test_a_new_main_key_clears_the_old_node_keys_and_the_new_device_replaces_the_tickets(
    federation: Federation,
) -> None:
    """The operator re-binds S2 to a new key (a lost device): the node keys derived from the
    old one are cleared and its tickets served no more; the new device registers its own keys
    and replaces the tickets of the consents it keeps."""
    from credex.directory import admin as directory_admin

    fed = federation
    settings = load_settings(fed.root / "directory")
    old = fed.subject_keys["S2"]
    consent_id = fed.loop.run(
        registered(fed, "S2").grant(requester_id="bank", purpose=LOAN, categories=[VOL], max_uses=5)
    )
    new = SigningKey.generate()
    subjects = fed.root / "rekey.csv"
    bank = fed.requester("bank")

    def profile_nodes() -> list[tuple[str, str]]:
        profile = fed.loop.run(
            bank.get_profile(subject_id="S2", consent_id=consent_id, purpose=LOAN)
        )
        return [(n.node_id, n.status) for n in profile.nodes]

    assert profile_nodes() == [("volunteers", "NOT_FOUND")]
    subjects.write_text(f"subject_id,region,public_key\nS2,Jiangsu,{new.public.raw.hex()}\n")
    try:
        directory_admin.import_subjects(settings, subjects, None)
        device = fed.subject("S2", key=new)
        holders = fed.loop.run(device.holders())
        assert [(h.node_id, h.key_registered) for h in holders] == [("volunteers", False)]
        assert profile_nodes() == []  # the old ticket's key is nobody's now
        assert fed.loop.run(device.add_tickets(consent_id)) == ["volunteers"]
        assert profile_nodes() == [("volunteers", "NOT_FOUND")]
    finally:
        subjects.write_text(f"subject_id,region,public_key\nS2,Jiangsu,{old.public.raw.hex()}\n")
        directory_admin.import_subjects(settings, subjects, None)


def test_a_profile_carries_the_subjects_consent_and_the_requester_checks_it(
    federation: Federation,
) -> None:
    fed = federation
    consent_id = fed.loop.run(
        fed.subject("S1").grant(requester_id="bank", purpose=LOAN, categories=[FIN])
    )
    bank = fed.requester("bank")
    request = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)

    async def get_profile() -> requester_pb2.GetProfileResponse:  # the raw answer, unverified
        return await bank._link.call(bank._link.requesters.GetProfile, request)

    response = fed.loop.run(get_profile())
    profile = requester_pb2.Profile.FromString(response.profile.body)
    consent = Consent.FromString(profile.consent.body)
    assert consent.consent_id == consent_id
    assert VerifyKey(consent.subject_key) == fed.subject_keys["S1"].public
    # nothing of the nodes' tickets: no ticket id or node key reaches the requester
    assert b"t-" not in profile.consent.body
    # a profile whose consent is not the subject's, signed by the directory, is not believed
    other, _ = consent_for(fed, "S1", categories=[FIN])
    for bad in (
        requester_pb2.Profile(),
        seal(Consent.FromString(other.body), SigningKey.generate()),
    ):
        forged = requester_pb2.Profile.FromString(response.profile.body)
        if isinstance(bad, requester_pb2.Profile):
            forged.ClearField("consent")
        else:
            forged.consent.CopyFrom(bad)
        with pytest.raises(ProfileVerificationError):
            fed.loop.run(bank.verify_profile(seal(forged, fed.directory_key)))


# --- databases from before tickets --------------------------------------------------------------


def test_a_directory_database_from_before_tickets_is_migrated(tmp_path: Path) -> None:
    """Its consents stay (with no tickets: the subject adds them), the single feed of consent
    ids goes, and the locator gains the subject's key per node."""
    from credex.directory.consent_store import ConsentStore
    from credex.directory.locator import Locator
    from credex.directory.schema import open_directory_storage

    path = tmp_path / "directory.db"
    main = SigningKey.generate()
    signed = create_consent(
        main, requester_id="bank", purpose=LOAN, categories=[FIN], not_before=0.0,
        not_after=4e9, max_uses=1, consent_id="c-old",
    )  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE subjects (subject_id TEXT PRIMARY KEY, public_key BLOB NOT NULL,
                region TEXT NOT NULL DEFAULT '') WITHOUT ROWID;
            CREATE TABLE locator (subject_id TEXT NOT NULL, node_id TEXT NOT NULL,
                local_id TEXT NOT NULL, PRIMARY KEY (subject_id, node_id)) WITHOUT ROWID;
            CREATE TABLE consents (consent_id TEXT PRIMARY KEY, subject_id TEXT NOT NULL,
                requester_id TEXT NOT NULL, signed BLOB NOT NULL, status TEXT NOT NULL,
                uses INTEGER NOT NULL DEFAULT 0, max_uses INTEGER NOT NULL,
                not_after REAL NOT NULL, granted_at REAL NOT NULL, changed_at REAL NOT NULL,
                change_signed_at REAL NOT NULL DEFAULT 0);
            CREATE TABLE consent_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                consent_id TEXT NOT NULL, status TEXT NOT NULL, changed_at REAL NOT NULL);
            INSERT INTO consent_changes (consent_id, status, changed_at)
                VALUES ('c-0', 'revoked', 1);
            """
        )
        conn.execute("INSERT INTO subjects VALUES ('S1', ?, 'Jiangsu')", (main.public.raw,))
        conn.execute("INSERT INTO locator VALUES ('S1', 'pboc', '1001')")
        conn.execute(
            "INSERT INTO consents VALUES ('c-old', 'S1', 'bank', ?, 'active', 0, 1, 4e9, 0, 0, 0)",
            (signed.SerializeToString(),),
        )
    storage = open_directory_storage(path)
    locator, store = Locator(storage.connection), ConsentStore(storage.connection)
    assert locator.holdings("S1")["pboc"].local_id == "1001"
    assert locator.holdings("S1")["pboc"].node_key is None
    old = store.get("c-old", 10.0)
    assert old.consent.consent_id == "c-old" and old.tickets == {}
    assert store.changes_after("pboc", 0) == ([], 0)
    tables = {r[0] for r in storage.connection.execute("SELECT name FROM sqlite_master")}
    assert "consent_changes" not in tables and "ticket_changes" in tables
    key = node_key(main, "pboc").public
    with storage.unit():
        locator.register_node_keys("S1", {"pboc": key})
    assert locator.holdings("S1")["pboc"].node_key == key


def test_a_node_database_from_before_tickets_follows_its_new_feed_from_the_start(
    tmp_path: Path,
) -> None:
    """The old feed's consent ids and position mean nothing under per-node numbering: the node
    starts its own feed at 0 and keeps nothing of the old one."""
    from credex.node.directory_sync import DirectorySync, SyncSettings
    from credex.node.schema import open_node_storage

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE revoked_consents (consent_id TEXT PRIMARY KEY, status INTEGER NOT NULL,
                seq INTEGER NOT NULL);
            INSERT INTO revoked_consents VALUES ('c-1', 3, 57);
            CREATE TABLE directory_sync (id INTEGER PRIMARY KEY CHECK (id = 1),
                synced_seq INTEGER NOT NULL, last_sync REAL NOT NULL);
            INSERT INTO directory_sync VALUES (1, 57, 100);
            """
        )

    def sync() -> DirectorySync:
        return DirectorySync(
            storage=open_node_storage(path),
            cache_path=tmp_path / "registry",
            directory_key=SigningKey.generate().public,
            link=DirectoryLink("127.0.0.1:1", TlsIdentity(b"")),  # never dialled here
            settings=SyncSettings(1.0, 60.0),
            clock=lambda: 100.0,
            node_id="pboc",
        )

    assert sync().synced_seq == 0
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        conn.execute("UPDATE directory_sync SET synced_seq = 3")
    assert "revoked_consents" not in tables and "ticket_status" in tables
    assert sync().synced_seq == 3  # migrated once: progress on the new feed is kept


def test_the_sync_loop_outlives_an_unexpected_error(tmp_path: Path) -> None:
    """A failure that is no refusal (a disk error, a bug) is logged and tried again: a sync
    loop that stopped would leave the node to go stale with nothing said."""
    import asyncio

    from credex.node.directory_sync import DirectorySync, SyncSettings
    from credex.node.schema import open_node_storage

    sync = DirectorySync(
        storage=open_node_storage(tmp_path / "state.db"),
        cache_path=tmp_path / "registry",
        directory_key=SigningKey.generate().public,
        link=DirectoryLink("127.0.0.1:1", TlsIdentity(b"")),  # never dialled here
        settings=SyncSettings(0.01, 60.0),
        clock=lambda: 100.0,
        node_id="pboc",
    )
    seen: list[str] = []

    async def flaky() -> None:
        seen.append(sync.last_error)
        if len(seen) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        if len(seen) == 3:
            raise asyncio.CancelledError  # ends the test
        sync.last_error = ""

    sync.sync_once = flaky  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(sync.run())
    assert seen == ["", "OperationalError('disk I/O error')", ""]
