"""Revocation and membership changes reach the nodes in bounded time: pushed at once, pulled
every sync interval, and a node out of touch for its offline grace refuses everything."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.directory import admin as directory_admin
from credex.directory.config import load_settings
from credex.directory.consent_store import ConsentStore
from credex.directory.schema import open_directory_storage
from credex.node import server as node_server
from credex.node.config import NodeConfig, load_node_config
from credex.node.server import (
    RunningNode,
    announce,
    build_service,
    signing_key_source,
    start_node,
    tls_source,
)
from credex.protocol.channels import open_channel
from credex.protocol.clock import Clock
from credex.protocol.config import ConfigError
from credex.protocol.errors import (
    REASON_KEY,
    FailedPrecondition,
    PermissionDenied,
    Reason,
    Unavailable,
)
from credex.protocol.signing import seal
from credex.protocol.tickets import node_key
from credex.sdk.link import DirectoryLink
from credex.testing.federation import Federation, enroll_requester, free_port
from credex.v1 import federation_pb2
from credex.v1.common_pb2 import Category, Purpose, Signed
from credex.v1.consent_pb2 import ConsentStatus, ConsentTicket
from credex.v1.federation_pb2 import RevocationFeed
from credex.v1.node_pb2 import NotifyRevocationsRequest
from credex.v1.node_pb2_grpc import NodeServiceStub
from tests.harness import trailer_map
from tests.integration.test_node_refusals import (
    FIN,
    LOAN,
    VOL,
    attestation_for,
    node_query,
    signed_request,
)

SCHOOL = Purpose.PURPOSE_SCHOOL_ENROLLMENT
BOUND_S = 2.0  # generous: the harness pulls every 0.2 s and pushes at once


@dataclasses.dataclass(frozen=True)
class Granted:
    """A consent S9 granted through its SDK, with each node's ticket as the directory keeps it
    (what a node is sent in a query)."""

    consent_id: str
    tickets: dict[str, Signed]

    def ticket_id(self, node_id: str) -> str:
        return str(ConsentTicket.FromString(self.tickets[node_id].body).ticket_id)


def granted_consent(
    fed: Federation, requester_id: str = "bank", categories: list[Any] | None = None
) -> Granted:
    """A consent by S9, granted at the directory; many uses, as the tests ask again and again."""
    consent_id = fed.loop.run(
        fed.subject("S9").grant(
            requester_id=requester_id, purpose=LOAN, categories=categories or [FIN], max_uses=10**6
        )
    )
    path = load_settings(fed.root / "directory").db_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT node_id, signed FROM consent_tickets WHERE consent_id = ?", (consent_id,)
        ).fetchall()
    return Granted(consent_id, {node_id: Signed.FromString(raw) for node_id, raw in rows})


def ask(
    fed: Federation,
    address: str,
    consent: Any,
    requester_id: str = "bank",
    node_id: str = "pboc",
    local_id: str = "1009",
    cats: list[Any] | None = None,
) -> str:
    """A fresh directory-signed query straight to a node; 'OK' or the refusal reason."""

    async def call() -> str:
        async with open_channel(address, fed.directory_tls) as channel:
            try:
                subject_key = node_key(fed.subject_keys["S9"], node_id).public.raw
                query = node_query(
                    fed,
                    ticket=consent.tickets[node_id],
                    requester_id=requester_id,
                    node_id=node_id,
                    local_id=local_id,
                    categories=cats or [FIN],
                    attestation=attestation_for(
                        fed, node_id=node_id, local_id=local_id, subject_key=subject_key
                    ),
                )
                await NodeServiceStub(channel).QueryRecords(signed_request(fed, query))
            except grpc.aio.AioRpcError as exc:
                return trailer_map(exc).get(REASON_KEY, exc.code().name)
        return "OK"

    return fed.loop.run(call())


def within(seconds: float, probe: Callable[[], str], expected: str) -> float:
    """How long until `probe()` returns `expected`; fails after `seconds`."""
    start = time.monotonic()
    while (result := probe()) != expected:
        assert time.monotonic() - start < seconds, f"still {result!r} after {seconds}s"
        time.sleep(0.02)
    return time.monotonic() - start


def consent_id_of(consent: Granted) -> str:
    return consent.consent_id


def revoke(fed: Federation, consent: Any) -> None:
    fed.loop.run(fed.subject("S9").revoke(consent_id_of(consent)))


def test_a_node_that_never_pulls_still_learns_revocations_and_resumptions_by_push(
    federation: Federation,
) -> None:
    """The harness's "volunteers" node does not pull during the tests: only pushes reach it."""
    consent = granted_consent(federation, categories=[VOL])
    address = federation.nodes["volunteers"].address

    def to_volunteers() -> str:
        return ask(federation, address, consent, node_id="volunteers", local_id="V-9", cats=[VOL])

    assert to_volunteers() == "OK"
    subject = federation.subject("S9")
    federation.loop.run(subject.pause(consent_id_of(consent)))
    within(BOUND_S, to_volunteers, Reason.CONSENT_PAUSED)
    federation.loop.run(subject.resume(consent_id_of(consent)))
    within(BOUND_S, to_volunteers, "OK")
    revoke(federation, consent)
    within(BOUND_S, to_volunteers, Reason.CONSENT_REVOKED)


def test_pause_and_resume_at_the_directory(federation: Federation) -> None:
    consent = granted_consent(federation)
    consent_id = consent_id_of(consent)
    subject, bank = federation.subject("S9"), federation.requester("bank")
    assert federation.loop.run(subject.pause(consent_id)) == "paused"
    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(bank.get_profile(subject_id="S9", consent_id=consent_id, purpose=LOAN))
    assert err.value.reason == Reason.CONSENT_PAUSED
    assert federation.loop.run(subject.pause(consent_id)) == "paused"  # repeating is harmless
    assert federation.loop.run(subject.resume(consent_id)) == "active"
    assert federation.loop.run(
        bank.get_profile(subject_id="S9", consent_id=consent_id, purpose=LOAN)
    ).records
    revoke(federation, consent)
    with pytest.raises(FailedPrecondition) as state:
        federation.loop.run(subject.resume(consent_id))
    assert state.value.reason == Reason.CONSENT_STATE
    views = {v.consent_id: v.status for v in federation.loop.run(subject.consents())}
    assert views[consent_id] == "revoked"


def test_a_repeated_revocation_changes_and_pushes_nothing(federation: Federation) -> None:
    consent = granted_consent(federation)
    settings = load_settings(federation.root / "directory")
    store = ConsentStore(open_directory_storage(settings.db_path).connection)
    revoke(federation, consent)
    _, latest = store.changes_after("pboc", 0)
    revoke(federation, consent)
    assert store.changes_after("pboc", 0)[1] == latest


def test_changes_made_while_a_push_waits_go_with_one_push(federation: Federation) -> None:
    """The directory keeps at most one push per node under way; changes made before it is sent
    are folded into it (the feed is cumulative), not pushed one task each."""
    assert federation.recorder is not None
    granted = [granted_consent(federation, categories=[VOL]) for _ in range(3)]
    consent_ids = [g.consent_id for g in granted]
    ticket_ids = {g.ticket_id("volunteers") for g in granted}
    storage = open_directory_storage(load_settings(federation.root / "directory").db_path)
    store = ConsentStore(storage.connection)
    before = len(federation.recorder.pushed)

    async def change_all() -> None:
        seqs = []
        for consent_id in consent_ids:
            with storage.unit():
                now = federation.clock()
                seqs.append(
                    store.set_status(consent_id, ConsentStatus.CONSENT_STATUS_REVOKED, now, now)
                )
        for seq in seqs:  # three changes, one after another, before any push could start
            federation.directory.services.publisher.push(
                seq
            )  # node id -> its feed's sequence number

    try:
        federation.loop.run(change_all())
    finally:
        storage.close()

    def carrying() -> list[set[str]]:
        assert federation.recorder is not None
        feeds = [
            RevocationFeed.FromString(r.feed.body) for r in federation.recorder.pushed[before:]
        ]
        found = [{c.ticket_id for c in f.changes} & ticket_ids for f in feeds]
        return [ids for ids in found if ids]

    within(30.0, lambda: "pushed" if carrying() else "not yet", "pushed")
    assert carrying() == [ticket_ids]


def test_revocation_reaches_the_node_at_once(federation: Federation) -> None:
    pboc = federation.nodes["pboc"].address
    consent = granted_consent(federation)
    assert ask(federation, pboc, consent) == "OK"
    revoke(federation, consent)
    took = within(BOUND_S, lambda: ask(federation, pboc, consent), Reason.CONSENT_REVOKED)
    assert took < BOUND_S


def test_the_directory_pushes_each_revocation(federation: Federation) -> None:
    assert federation.recorder is not None  # the volunteers node
    consent = granted_consent(federation, categories=[VOL])
    ticket_id = consent.ticket_id("volunteers")
    before = len(federation.recorder.pushed)
    revoke(federation, consent)

    def pushed() -> str:
        for request in federation.recorder.pushed[before:]:  # type: ignore[union-attr]
            feed = RevocationFeed.FromString(request.feed.body)
            if any(c.ticket_id == ticket_id for c in feed.changes):
                return "pushed"
        return "not yet"

    within(BOUND_S, pushed, "pushed")


def test_a_pushed_feed_must_be_signed_by_the_directory(federation: Federation) -> None:
    consent = granted_consent(federation)
    forged = seal(
        RevocationFeed(
            after_seq=0,
            latest_seq=10**9,
            changes=[
                federation_pb2.ConsentChange(
                    seq=10**9,
                    ticket_id=consent.ticket_id("pboc"),
                    status=ConsentStatus.CONSENT_STATUS_REVOKED,
                )
            ],
            node_id="pboc",
        ),
        federation.requester_keys["bank"],
    )

    async def push() -> grpc.StatusCode:
        async with open_channel(
            federation.nodes["pboc"].address, federation.directory_tls
        ) as channel:
            try:
                await NodeServiceStub(channel).NotifyRevocations(
                    NotifyRevocationsRequest(feed=forged)
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert federation.loop.run(push()) == grpc.StatusCode.UNAUTHENTICATED
    assert ask(federation, federation.nodes["pboc"].address, consent) == "OK"


def test_without_a_push_the_node_pulls_the_revocation(federation: Federation) -> None:
    """The consent is revoked behind the directory service's back (no push): the node still
    learns it from the feed within its sync interval."""
    consent = granted_consent(federation)
    pboc = federation.nodes["pboc"].address
    assert ask(federation, pboc, consent) == "OK"
    settings = load_settings(federation.root / "directory")
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        ConsentStore(conn).set_status(
            consent_id_of(consent),
            ConsentStatus.CONSENT_STATUS_PAUSED,
            federation.clock(),
            signed_at=federation.clock(),
        )
    within(BOUND_S, lambda: ask(federation, pboc, consent), Reason.CONSENT_PAUSED)


def extra_node(fed: Federation, tmp_path: Path, **changes: Any) -> RunningNode:
    """Another pboc node server with its own state, e.g. a slower sync or a dead directory."""
    config = dataclasses.replace(
        load_node_config(fed.node_configs["pboc"]), state_db=tmp_path / "state.db", **changes
    )

    async def start() -> RunningNode:
        service = build_service(config, clock=fed.clock)
        return await start_node(
            config, clock=fed.clock, service=service, announce_to_directory=False
        )

    return fed.loop.run(start())


def test_node_that_cannot_reach_the_directory_refuses_everything(
    federation: Federation, tmp_path: Path
) -> None:
    node = extra_node(federation, tmp_path, directory_address=f"127.0.0.1:{free_port()}")
    try:
        consent = granted_consent(federation)
        assert ask(federation, node.address, consent) == Reason.REGISTRY_STALE
        # and it says why: what its last attempt met
        assert node.health is not None
        problem = federation.loop.run(node.health.check())
        assert problem is not None and "last attempt:" in problem, problem
    finally:
        federation.loop.run(node.stop(0))


def test_a_node_whose_directory_comes_up_late_syncs_within_seconds(
    federation: Federation, tmp_path: Path
) -> None:
    """A failed sync is tried again sooner than the sync interval (an hour here): a directory
    that is busy or not up when the node starts costs seconds, not an interval."""
    port = free_port()
    host, target_port = federation.address.rsplit(":", 1)

    async def relay(reader: Any, writer: Any) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))

    node = extra_node(
        federation, tmp_path, directory_address=f"127.0.0.1:{port}", sync_interval_s=3600.0
    )

    async def listen() -> asyncio.Server:
        return await asyncio.start_server(relay, "127.0.0.1", port)

    consent = granted_consent(federation)
    try:
        assert ask(federation, node.address, consent) == Reason.REGISTRY_STALE
        proxy = federation.loop.run(listen())  # the directory is reachable from now on
        try:
            within(30.0, lambda: ask(federation, node.address, consent), "OK")
        finally:
            proxy.close()
    finally:
        federation.loop.run(node.stop(0))


def test_node_out_of_touch_for_its_grace_refuses_then_recovers(
    federation: Federation, tmp_path: Path
) -> None:
    node = extra_node(federation, tmp_path, sync_interval_s=3600.0, offline_grace_s=5.0)
    consent = granted_consent(federation)
    try:
        assert ask(federation, node.address, consent) == "OK"
        with federation.clock_moved(6.0):
            assert ask(federation, node.address, consent) == Reason.REGISTRY_STALE
    finally:
        federation.loop.run(node.stop(0))


def test_a_restarted_node_works_from_its_cached_snapshot(
    federation: Federation, tmp_path: Path
) -> None:
    first = extra_node(federation, tmp_path)
    federation.loop.run(first.stop(0))
    cache = (tmp_path / "state.db").with_name("state.registry")
    assert cache.exists()
    # Directory unreachable now: the verified snapshot on disk still names the requesters.
    second = extra_node(federation, tmp_path, directory_address=f"127.0.0.1:{free_port()}")
    consent = granted_consent(federation)
    try:
        assert ask(federation, second.address, consent) == "OK"
    finally:
        federation.loop.run(second.stop(0))
    # A tampered cache is not believed.
    cache.write_bytes(cache.read_bytes()[:-3] + b"xyz")
    third = extra_node(federation, tmp_path, directory_address=f"127.0.0.1:{free_port()}")
    try:
        assert ask(federation, third.address, consent) == Reason.MEMBER_SUSPENDED
    finally:
        federation.loop.run(third.stop(0))


def test_suspended_requester_is_refused_at_once_and_by_nodes_soon(
    federation: Federation,
) -> None:
    settings = load_settings(federation.root / "directory")
    consent = granted_consent(federation, requester_id="school")
    consent_id = consent_id_of(consent)
    pboc = federation.nodes["pboc"].address
    school = federation.requester("school")
    assert ask(federation, pboc, consent, requester_id="school") == "OK"
    directory_admin.set_member_status(settings, "school", "suspended")
    try:
        with pytest.raises(PermissionDenied) as err:
            federation.loop.run(
                school.get_profile(subject_id="S9", consent_id=consent_id, purpose=LOAN)
            )
        assert err.value.reason == Reason.MEMBER_SUSPENDED
        within(
            BOUND_S,
            lambda: ask(federation, pboc, consent, requester_id="school"),
            Reason.MEMBER_SUSPENDED,
        )
    finally:
        directory_admin.set_member_status(settings, "school", "active")
    within(BOUND_S, lambda: ask(federation, pboc, consent, requester_id="school"), "OK")
    profile = federation.loop.run(
        school.get_profile(subject_id="S9", consent_id=consent_id, purpose=LOAN)
    )
    assert profile.records


def test_removal_is_final(federation: Federation) -> None:
    settings = load_settings(federation.root / "directory")
    federation.loop.run(
        enroll_requester(settings, federation.root / "more", "gone", federation.directory)
    )
    assert directory_admin.set_member_status(settings, "gone", "removed").status_name == "removed"
    with pytest.raises(ConfigError, match="final"):
        directory_admin.set_member_status(settings, "gone", "active")
    with pytest.raises(ConfigError, match="already a member"):
        directory_admin.create_enrollment_token(settings, member_id="gone", role="requester")


def test_suspended_node_is_no_longer_queried_or_heard(federation: Federation) -> None:
    settings = load_settings(federation.root / "directory")
    consent_id = federation.loop.run(
        federation.subject("S1").grant(
            requester_id="school",
            purpose=SCHOOL,
            categories=[Category.CATEGORY_VOLUNTEERING, Category.CATEGORY_EDUCATION],
            max_uses=10,
        )
    )
    school = federation.requester("school")

    def sources() -> set[str]:
        profile = federation.loop.run(
            school.get_profile(subject_id="S1", consent_id=consent_id, purpose=SCHOOL)
        )
        return {n.node_id for n in profile.nodes}

    assert sources() == {"education", "volunteers"}
    directory_admin.set_member_status(settings, "education", "suspended")
    try:
        assert sources() == {"volunteers"}  # at once: the directory stops asking it
        with pytest.raises(PermissionDenied) as err:
            announce_as(federation, "education")
        assert err.value.reason == Reason.MEMBER_SUSPENDED
    finally:
        directory_admin.set_member_status(settings, "education", "active")
    assert sources() == {"education", "volunteers"}


def announce_as(fed: Federation, node_id: str) -> None:
    """Announce `node_id` as the node itself would (its key and certificate)."""
    config = load_node_config(fed.node_configs[node_id])
    fed.loop.run(announce_from(config, "127.0.0.1:1", fed.clock))


async def announce_from(config: NodeConfig, endpoint: str, clock: Clock) -> None:
    """Announce `endpoint` as the node of `config` would, over a link of its own."""
    async with DirectoryLink(config.directory_address, tls_source(config)) as link:
        await announce(config, signing_key_source(config), link, endpoint, clock)


async def _forward(reader: Any, writer: Any) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def test_a_node_started_before_its_directory_waits_for_it(
    federation: Federation, tmp_path: Path
) -> None:
    """The directory's address answers only after a second (as when it starts late or is
    busy): the node retries its first announcement instead of exiting, then serves."""
    port = free_port()
    host, target_port = federation.address.rsplit(":", 1)

    async def relay(reader: Any, writer: Any) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))

    async def scenario() -> tuple[float, RunningNode]:
        config = dataclasses.replace(
            load_node_config(federation.node_configs["pboc"]),
            state_db=tmp_path / "state.db",
            directory_address=f"127.0.0.1:{port}",
        )
        started = time.monotonic()
        node_task = asyncio.create_task(
            start_node(config, clock=federation.clock, service=build_service(config))
        )
        await asyncio.sleep(1.0)
        assert not node_task.done()
        proxy = await asyncio.start_server(relay, "127.0.0.1", port)
        try:
            node = await asyncio.wait_for(node_task, 20.0)
        finally:
            proxy.close()
        return time.monotonic() - started, node

    took, node = federation.loop.run(scenario())
    try:
        assert 1.0 <= took < 20.0
        consent = granted_consent(federation)
        assert ask(federation, node.address, consent) == "OK"
    finally:
        federation.loop.run(node.stop(0))
        # The extra node announced itself as pboc: point the directory back at the real one.
        config = load_node_config(federation.node_configs["pboc"])
        federation.loop.run(
            announce_from(config, federation.nodes["pboc"].address, federation.clock)
        )


def test_a_node_whose_directory_never_answers_gives_up(
    federation: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(node_server, "FIRST_ANNOUNCE_WAIT_S", 1.5)
    config = dataclasses.replace(
        load_node_config(federation.node_configs["pboc"]),
        state_db=tmp_path / "state.db",
        directory_address=f"127.0.0.1:{free_port()}",
    )
    started = time.monotonic()
    with pytest.raises(Unavailable):
        federation.loop.run(
            start_node(config, clock=federation.clock, service=build_service(config))
        )
    assert time.monotonic() - started < 10.0
