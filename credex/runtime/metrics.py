"""Prometheus metrics of one credex server, served over HTTP for scraping.

Each server keeps its own registry, so several servers in one process (the tests) stay apart.
Counters are updated as requests finish (`rpc_handler`); gauges that need the database are set
on the event loop by the health monitor's tick, never from the HTTP thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from credex.protocol.config import ConfigError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """What an operator watches: requests, latency, refusals, fan-out, audit size, expiry."""

    def __init__(self, role: str, member_id: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.info = Gauge(
            "credex_server_info", "Which member and role this server is", ["role", "member"],
            registry=r,
        )  # fmt: skip
        self.info.labels(role, member_id).set(1)
        self.requests = Counter(
            "credex_requests", "RPCs answered, by method and gRPC status code", ["method", "code"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "credex_request_duration_seconds", "Time to answer an RPC, by method", ["method"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.refusals = Counter(
            "credex_refusals", "Refused RPCs, by method and credex reason", ["method", "reason"],
            registry=r,
        )  # fmt: skip
        self.node_answers = Counter(
            "credex_node_answers", "Node answers within profiles, by node and outcome",
            ["node", "status"], registry=r,
        )  # fmt: skip
        self.pushes_in_flight = Gauge(
            "credex_pushes_in_flight",
            "Consent-change pushes to nodes under way (the directory keeps at most one per node)",
            registry=r,
        )
        self.audit_entries = Gauge("credex_audit_entries", "Entries in the audit log", registry=r)
        self.certificate_expiry = Gauge(
            "credex_certificate_expiry_timestamp_seconds",
            "When this server's TLS certificate expires (seconds since the epoch)",
            registry=r,
        )
        self.serving = Gauge(
            "credex_serving", "1 while the health service reports SERVING", registry=r
        )
        self.connections = Gauge(
            "credex_connections", "Connections open on a port (through its gate)", ["port"],
            registry=r,
        )  # fmt: skip
        self.connections_refused = Counter(
            "credex_connections_refused",
            "Connections refused at once: over the port's or one address's cap",
            ["port"], registry=r,
        )  # fmt: skip
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def gauges(
        self, *, audit_entries: Callable[[], int] | None, expires_at: Callable[[], float]
    ) -> list[Callable[[], None]]:
        """Refreshers for the gauges read from the database or the certificate, one each, to
        run on the event loop (the health tick)."""
        refresh = [lambda: self.certificate_expiry.set(expires_at())]
        if audit_entries is not None:
            refresh.append(lambda: self.audit_entries.set(audit_entries()))
        return refresh

    def observe(self, method: str, code: grpc.StatusCode, reason: str, seconds: float) -> None:
        """One finished RPC; `reason` is the credex reason of a refusal, else empty."""
        self.requests.labels(method, code.name).inc()
        self.latency.labels(method).observe(seconds)
        if reason:
            self.refusals.labels(method, reason).inc()

    def serve(self, listen: str) -> str:
        """Serve /metrics on `listen` (host:port, port 0 picks one); returns host:port bound."""
        host, _, port = listen.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"metrics address {listen!r} is not host:port") from None
        try:
            self._http = start_http_server(number, addr=host.strip("[]"), registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics_listen {listen}: {exc.strerror or exc}") from None
        return f"{host}:{self._http[0].server_port}"

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
