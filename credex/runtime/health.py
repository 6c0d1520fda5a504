"""The standard gRPC health service (grpc.health.v1), kept truthful by a periodic probe, and
server reflection where the operator enables it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in grpc-stubs
from grpc_reflection.v1alpha import reflection

from credex.runtime.gate import caller_key
from credex.runtime.metrics import Metrics

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Probe = Callable[[], str | None]  # a reason not to serve, or None


class _CappedHealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    """The standard health service with a cap on Watch streams (each holds a call, a
    connection and memory for as long as the caller likes): at most `max_watches` at once,
    and a quarter of them (at least one) from one caller address."""

    def __init__(self, max_watches: int) -> None:
        super().__init__()
        self._max = max_watches
        self._per_caller = max(1, max_watches // 4)
        self._watching: dict[str, int] = {}

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        caller = caller_key(context.peer())
        if sum(self._watching.values()) >= self._max or (
            self._watching.get(caller, 0) >= self._per_caller
        ):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {self._max} health watches at once ({self._per_caller} per address)",
            )
        self._watching[caller] = self._watching.get(caller, 0) + 1
        try:
            await super().Watch(request, context)
        finally:
            left = self._watching[caller] - 1
            if left:
                self._watching[caller] = left
            else:
                del self._watching[caller]


class HealthMonitor:
    """Sets every service's health from `probe` each tick, and refreshes `metrics` gauges."""

    def __init__(
        self,
        services: Sequence[str],
        probe: Probe,
        *,
        interval_s: float,
        metrics: Metrics | None = None,
        refresh: Sequence[Callable[[], None]] = (),
        max_watches: int = 16,
    ) -> None:
        self.servicer = _CappedHealthServicer(max_watches)
        self._services = ("", *services)
        self._probe = probe
        self._interval_s = interval_s
        self._metrics = metrics
        self._refresh = refresh
        self.problem: str | None = None
        self._draining = False

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def check(self) -> str | None:
        """Probe now and publish the result; returns the reason not to serve, if any."""
        try:
            problem = self._probe()
        except Exception as exc:  # a probe that breaks is itself a reason not to serve
            problem = f"health probe failed: {exc}"
        if self._draining:
            problem = "draining"
        if problem != self.problem:
            if problem is None:
                log.info("serving")
            elif self._draining:
                log.info("draining: health is NOT_SERVING from now on")
            else:
                log.warning("not serving: %s", problem)
        self.problem = problem
        if not self._draining:
            for service in self._services:
                await self.servicer.set(service, SERVING if problem is None else NOT_SERVING)
        if self._metrics is not None:
            self._metrics.serving.set(0 if problem else 1)
        for refresh in self._refresh:
            try:
                refresh()
            except Exception:  # a gauge that cannot be read now must not stop the checks
                log.exception("refreshing a metric failed")
        return problem

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")
            await asyncio.sleep(self._interval_s)

    async def drain(self) -> None:
        """NOT_SERVING from now on, whatever the probe says: load balancers stop sending."""
        self._draining = True
        await self.servicer.enter_graceful_shutdown()
        await self.check()


def enable_reflection(server: grpc.aio.Server, services: Sequence[str]) -> None:
    """Let generic gRPC clients (grpcurl, grpc_cli) list and call `services`."""
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
