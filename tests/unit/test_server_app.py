"""The server application both servers run on: what it starts, and that stopping drains
health, stops its server, ends its background tasks and runs every closer in order, even
after one fails, with the metrics endpoint closed last."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credex.runtime.app import ServerApp
from credex.runtime.health import HealthMonitor
from credex.runtime.metrics import Metrics
from credex.runtime.settings import ServerSettings


def _scrape(address: str) -> bytes:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        body: bytes = answer.read()
        return body


def _app() -> ServerApp:
    metrics = Metrics("node", "app-test")
    settings = ServerSettings(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    health = HealthMonitor(["credex.v1.NodeService"], lambda: None, interval_s=60.0)
    return ServerApp(name="app test", settings=settings, health=health, metrics=metrics)


def test_stopping_runs_every_closer_in_order_and_ends_everything() -> None:
    async def scenario() -> None:
        app = _app()
        server = app.add_server([])
        port = server.add_insecure_port("127.0.0.1:0")
        await app.health.check()
        await app.start()
        assert app.metrics_address
        assert b"credex_server_info" in await asyncio.to_thread(_scrape, app.metrics_address)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="credex.v1.NodeService"), timeout=10
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

        ran: list[str] = []
        forever = asyncio.Event()
        app.spawn(forever.wait())

        async def first() -> None:
            ran.append("first")

        def broken() -> None:
            ran.append("broken")
            raise OSError("disk gone")

        app.on_close(first)
        app.on_close(broken)
        app.on_close(lambda: ran.append("last"))
        await app.stop(0)

        assert ran == ["first", "broken", "last"]
        assert all(task.done() for task in app.tasks)
        assert app.health.problem == "draining"
        with pytest.raises(OSError):  # the metrics endpoint is closed
            await asyncio.to_thread(_scrape, app.metrics_address)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as stopped:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
            assert stopped.value.code() in {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            }

    asyncio.run(scenario())
