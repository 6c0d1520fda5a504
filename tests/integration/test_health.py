"""The standard health service tells the truth, and reflection lets a generic client list and
call the services: on real servers, over the same TLS as everything else."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.identity import DIRECTORY_NAME
from credex.protocol.tls import TlsIdentity
from credex.runtime.db import open_readonly, unreadable
from credex.runtime.health import HealthMonitor
from credex.runtime.metrics import Metrics
from credex.runtime.storage import SqliteStorage
from credex.testing.federation import Federation, start_federation
from credex.testing.loop import LoopThread
from tests.harness import trailer_map

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, loop: LoopThread) -> Iterator[Federation]:
    federation = start_federation(
        Path(tmp_path_factory.mktemp("health")), loop, deadline_s=2.0, server="reflection = true"
    )
    yield federation
    federation.stop()


def health(fed: Federation, channel: Callable[[], grpc.aio.Channel], service: str) -> Any:
    async def check() -> Any:
        opened = channel()
        try:
            stub = health_pb2_grpc.HealthStub(opened)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return reply.status
        finally:
            await opened.close(None)

    return fed.loop.run(check())


def node_status(fed: Federation, node_id: str, service: str = "") -> Any:
    address = fed.nodes[node_id].address
    return health(fed, lambda: open_channel(address, fed.directory_tls), service)


def public_status(fed: Federation, service: str = "") -> Any:
    anonymous = TlsIdentity(fed.ca_pem)
    return health(fed, lambda: open_directory_channel(fed.public_address, anonymous), service)


def recheck(fed: Federation, node_id: str) -> str | None:
    health = fed.nodes[node_id].health
    assert health is not None
    return fed.loop.run(health.check())


def test_every_server_reports_serving(fed: Federation) -> None:
    assert node_status(fed, "pboc") == SERVING
    assert node_status(fed, "pboc", "credex.v1.NodeService") == SERVING
    assert public_status(fed) == SERVING
    assert public_status(fed, "credex.v1.SubjectService") == SERVING


def test_an_unknown_service_is_not_found(fed: Federation) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        node_status(fed, "pboc", "credex.v1.NoSuchService")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_needs_a_federation_certificate_on_a_node(fed: Federation) -> None:
    async def anonymous() -> None:
        channel = open_channel(fed.nodes["pboc"].address, TlsIdentity(fed.ca_pem))
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        finally:
            await channel.close(None)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        fed.loop.run(anonymous())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


def test_an_unreadable_records_database_is_not_serving(fed: Federation) -> None:
    records = fed.node_configs["courts"].parent / "records.db"
    kept = records.with_name("kept.db")
    shutil.copy(records, kept)
    try:
        records.write_bytes(b"this is not a database" * 300)
        assert "records database unreadable" in (recheck(fed, "courts") or "")
        assert node_status(fed, "courts") == NOT_SERVING
        assert node_status(fed, "courts", "credex.v1.NodeService") == NOT_SERVING
    finally:
        shutil.copy(kept, records)
    assert recheck(fed, "courts") is None
    assert node_status(fed, "courts") == SERVING


def test_a_stale_registry_is_not_serving(fed: Federation) -> None:
    with fed.clock_moved(3600):  # no sync can have happened in the last hour
        assert "no word from the directory" in (recheck(fed, "education") or "")
        assert node_status(fed, "education") == NOT_SERVING
    assert recheck(fed, "education") is None
    assert node_status(fed, "education") == SERVING


def test_metrics_follow_the_health_status(fed: Federation) -> None:
    metrics = fed.nodes["pboc"].metrics
    assert metrics is not None
    recheck(fed, "pboc")
    assert metrics.registry.get_sample_value("credex_serving") == 1.0


def test_reflection_lists_and_calls_the_services(fed: Federation) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=fed.ca_pem)
    options = [("grpc.ssl_target_name_override", DIRECTORY_NAME)]
    with grpc.secure_channel(fed.public_address, credentials, options=options) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"credex.v1.SubjectService", "credex.v1.EnrollmentService"} <= services
        assert "grpc.health.v1.Health" in services
        member_port = {"credex.v1.MemberService", "credex.v1.RequesterService"}
        assert not member_port & services  # those are on the member port
        assert "credex.v1.FederationService" not in services
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("credex.v1.SubjectService").methods_by_name["ListConsents"]
        request_class = message_factory.GetMessageClass(method.input_type)
        call = channel.unary_unary(
            f"/credex.v1.SubjectService/{method.name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            call(request_class(), timeout=5)  # a generic client reaches the real handler
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "UNKNOWN_SUBJECT" in (err.value.details() or "")


def test_reflection_is_off_unless_enabled(federation: Federation) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=federation.ca_pem)
    options = [("grpc.ssl_target_name_override", DIRECTORY_NAME)]
    with grpc.secure_channel(federation.public_address, credentials, options=options) as channel:
        with pytest.raises(grpc.RpcError) as err:
            list(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_draining_turns_not_serving_and_stays_so(fed: Federation) -> None:
    node = fed.nodes["volunteers"]
    assert node.health is not None
    fed.loop.run(node.health.drain())
    assert node_status(fed, "volunteers") == NOT_SERVING
    assert recheck(fed, "volunteers") == "draining"
    assert node_status(fed, "volunteers") == NOT_SERVING


def test_a_failing_gauge_does_not_stop_the_health_checks() -> None:
    calls = {"probe": 0}

    def probe() -> str | None:
        calls["probe"] += 1
        return None

    def broken_gauge() -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    async def ticks() -> tuple[str | None, int]:
        metrics = Metrics("node", "n")
        monitor = HealthMonitor(
            ["credex.v1.NodeService"], probe, interval_s=0.01, metrics=metrics,
            refresh=[broken_gauge],
        )  # fmt: skip
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()
        assert metrics.registry.get_sample_value("credex_serving") == 1.0
        return monitor.problem, calls["probe"]

    problem, probes = asyncio.run(ticks())
    assert problem is None and probes > 3


def test_a_writer_holding_the_records_lock_is_not_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    reader = open_readonly(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("INSERT INTO t VALUES (1)")
    assert unreadable(reader.conn) is None
    writer.execute("COMMIT")
    path.write_bytes(b"junk" * 1000)
    assert unreadable(reader.conn) is not None


def test_after_a_failed_disk_sync_every_call_is_unavailable_not_internal(fed: Federation) -> None:
    """A disk that failed a sync cannot be trusted with anything (see credex.runtime.group_commit):
    callers get UNAVAILABLE with a reason, never INTERNAL or a traceback."""
    from credex.protocol.errors import REASON_KEY, Reason
    from credex.v1.node_pb2 import DescribeRequest
    from credex.v1.node_pb2_grpc import NodeServiceStub

    storage = fed.node_services["courts"].runtime.storage
    assert isinstance(storage, SqliteStorage) and storage.commits is not None
    commits = storage.commits
    commits.failure = "syncing state.db-wal failed: [Errno 5] Input/output error (simulated)"

    async def describe() -> grpc.aio.AioRpcError:
        async with open_channel(fed.nodes["courts"].address, fed.directory_tls) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await NodeServiceStub(channel).Describe(DescribeRequest(), timeout=5)
            return err.value

    try:
        err = fed.loop.run(describe())
    finally:
        commits.failure = None
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    assert trailer_map(err).get(REASON_KEY) == str(Reason.UNAVAILABLE)
