"""A running credex server, the directory's or a node's, assembled and stopped one way: its gRPC
servers with their services, health and reflection, its listening ports, its metrics
endpoint, its background tasks and the closers run at the end.

Stopping drains health (NOT_SERVING), stops the servers within a grace period, closes the
ports, ends the background tasks and runs every closer in the order added, each even after
an earlier one failed; the metrics endpoint closes last.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from credex.runtime.gate import raise_descriptor_limit
from credex.runtime.health import HealthMonitor, enable_reflection
from credex.runtime.metrics import Metrics
from credex.runtime.ports import Binding, add_service, create_server
from credex.runtime.serving import run_until_stopped
from credex.runtime.settings import ServerSettings

log = logging.getLogger(__name__)

Closer = Callable[[], object]  # what it returns is awaited if awaitable, else ignored


@dataclass(kw_only=True)
class ServerApp:
    name: str  # for logs: "directory", "node pboc"
    settings: ServerSettings
    health: HealthMonitor
    metrics: Metrics
    servers: list[grpc.aio.Server] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)
    metrics_address: str = ""
    tasks: list[asyncio.Task[object]] = field(default_factory=list)
    closers: list[Closer] = field(default_factory=list)

    def add_server(
        self,
        services: Sequence[tuple[object, ServiceDescriptor]],
        *,
        ports: int = 1,
        idle_timeout_s: float | None = None,
    ) -> grpc.aio.Server:
        """A gRPC server within the settings' limits carrying `services`, health (and
        reflection when the settings ask for it); `ports`: how many this process serves."""
        raise_descriptor_limit()
        server = create_server(self.settings, ports=ports, idle_timeout_s=idle_timeout_s)
        for servicer, service in services:
            add_service(server, servicer, service)
        self.health.add_to(server)
        if self.settings.reflection:
            enable_reflection(server, [service.full_name for _, service in services])
        self.servers.append(server)
        return server

    async def start(self) -> None:
        """Serve metrics (a busy port fails before anything serves), then every server."""
        if self.settings.metrics_listen:
            self.metrics_address = self.metrics.serve(self.settings.metrics_listen)
        for server in self.servers:
            await server.start()

    def spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` in the background until the app stops."""
        self.tasks.append(asyncio.create_task(work))

    def on_close(self, closer: Closer) -> None:
        """Run `closer` (synchronous or not) when the app stops, after those added before."""
        self.closers.append(closer)

    async def stop(self, grace: float | None = None) -> None:
        await self.health.drain()
        await asyncio.gather(*(server.stop(grace) for server in self.servers))
        await self.stop_background()  # the last checkpoint covers the grace period too

    async def stop_background(self) -> None:
        """Close the ports, end the background tasks and run every closer, even after one has
        failed; the metrics endpoint last."""
        for binding in self.bindings:
            await binding.close()
        for task in self.tasks:
            task.cancel()
        for result in await asyncio.gather(*self.tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("%s: a background task had failed: %r", self.name, result)
        for close in [*self.closers, self.metrics.close]:
            try:
                done = close()
                if inspect.isawaitable(done):
                    await done
            except Exception:
                log.exception("%s: closing failed", self.name)

    async def serve_until_stopped(self, ready_file: Path | None, info: dict[str, str]) -> None:
        """Serve until SIGTERM or SIGINT (or the process it must not outlive ends), then drain
        and stop as the settings say."""
        if self.metrics_address:
            info = {**info, "metrics_address": self.metrics_address}
        await run_until_stopped(
            self.servers,
            ready_file,
            info,
            self.name,
            self.stop_background,
            drain=self.health.drain,
            grace_s=self.settings.stop_grace_s,
            drain_delay_s=self.settings.drain_delay_s,
        )
