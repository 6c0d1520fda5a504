"""Memory pinning through the health service: without a certificate, on the directory's public
port, an attacker opens many grpc.health.v1 Watch streams carrying huge messages. Every service
on every port obeys one small message limit, and Watch streams are capped."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.tls import TlsIdentity
from credex.runtime.settings import DEFAULT_MAX_MESSAGE_BYTES
from tests.attacks.conftest import Target, rss_bytes

MiB = 1024 * 1024
STREAMS = 48


async def watch(stub: health_pb2_grpc.HealthStub, service: str) -> grpc.StatusCode | None:
    """Open a Watch stream; None while it stays open (it got its first answer), else its
    status."""
    call = stub.Watch(health_pb2.HealthCheckRequest(service=service))
    try:
        await asyncio.wait_for(call.read(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return None


def test_huge_health_messages_and_many_watch_streams_pin_no_memory(target: Target) -> None:
    pid = target.pid("directory")
    before = rss_bytes(pid)

    async def attack() -> tuple[grpc.StatusCode | None, list[grpc.StatusCode | None], int]:
        channel = open_directory_channel(target.public_address, TlsIdentity(target.ca_pem))
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            huge = await watch(stub, "x" * (8 * MiB))
            # Just under the limit: each stream that is let in holds one such message.
            name = "y" * (DEFAULT_MAX_MESSAGE_BYTES - 64)
            outcomes = await asyncio.gather(*(watch(stub, f"{i}{name}") for i in range(STREAMS)))
            grown = rss_bytes(pid) - before
            return huge, outcomes, grown
        finally:
            await channel.close(None)

    huge, outcomes, grown = asyncio.run(attack())
    assert huge == grpc.StatusCode.RESOURCE_EXHAUSTED  # refused before it was read
    held = outcomes.count(None)
    assert 1 <= held <= 16, outcomes
    assert all(o in (None, grpc.StatusCode.RESOURCE_EXHAUSTED) for o in outcomes), outcomes
    assert grown < 64 * MiB, f"resident memory grew by {grown / MiB:.0f} MiB"


def test_a_node_refuses_huge_messages_on_every_service(target: Target) -> None:
    """The node's port carries the health service beside NodeService: the same limit holds
    there for any certificate holder."""
    node = target.node_ids[0]

    async def attack() -> grpc.StatusCode:
        channel = open_channel(target.node_address(node), target.operator_tls())
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                await stub.Check(health_pb2.HealthCheckRequest(service="z" * (4 * MiB)), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
        finally:
            await channel.close(None)

    assert asyncio.run(attack()) == grpc.StatusCode.RESOURCE_EXHAUSTED
