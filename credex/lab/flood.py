"""An unauthenticated flood against a running federation, for the benchmark's "under attack"
figures: idle TCP connections that never start TLS (more than a server has descriptors, held
and reopened as the servers close them), undecodable requests on the directory's public port,
and health Watch streams. It runs as its own process, from its own loopback address, and
writes what it did as JSON when it is stopped (SIGTERM).

    python -m credex.lab.flood --source 127.0.0.2 --idle HOST:PORT ... --public HOST:PORT \\
        --ca ca.crt --out flood.json
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credex.protocol.channels import open_directory_channel
from credex.protocol.tls import TlsIdentity

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
REOPEN_BATCH = 200  # connections reopened a tick: pressure, not a CPU race on shared cores
TICK_S = 0.5


@dataclass
class FloodReport:
    idle_opened: int = 0
    idle_closed_by_server: int = 0
    idle_held_at_end: int = 0
    malformed_sent: int = 0
    malformed_answers: dict[str, int] | None = None
    watches_held: int = 0
    watches_refused: int = 0


class IdleConnections:
    """`count` connections to `address` from `source` that never send a byte."""

    def __init__(self, source: str, address: str, count: int, report: FloodReport) -> None:
        host, _, port = address.rpartition(":")
        self.target = (host, int(port))
        self.source = source
        self.count = count
        self.report = report
        self.sockets: list[socket.socket] = []

    def _open(self) -> None:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((self.source, 0))
            s.connect_ex(self.target)
        except OSError:
            s.close()
            return
        self.sockets.append(s)
        self.report.idle_opened += 1

    def tick(self) -> None:
        """Drop the connections the server closed; open more, up to `count`."""
        alive = []
        for s in self.sockets:
            try:
                closed = s.recv(1) == b""
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            if closed:
                s.close()
                self.report.idle_closed_by_server += 1
            else:
                alive.append(s)
        self.sockets = alive
        for _ in range(min(REOPEN_BATCH, self.count - len(self.sockets))):
            self._open()

    def close(self) -> None:
        self.report.idle_held_at_end += len(self.sockets)
        for s in self.sockets:
            s.close()
        self.sockets.clear()


async def malformed(public: str, ca_pem: bytes, per_s: float, report: FloodReport) -> None:
    """Undecodable requests to the subject service, `per_s` a second, on one channel."""
    answers: dict[str, int] = {}
    report.malformed_answers = answers
    channel = open_directory_channel(public, TlsIdentity(ca_pem))
    call = channel.unary_unary("/credex.v1.SubjectService/GrantConsent", None, None)
    loop = asyncio.get_running_loop()
    try:
        while True:
            started = loop.time()
            try:
                await call(os.urandom(64), timeout=5)
                answers["OK"] = answers.get("OK", 0) + 1
            except grpc.aio.AioRpcError as exc:
                answers[exc.code().name] = answers.get(exc.code().name, 0) + 1
            report.malformed_sent += 1
            await asyncio.sleep(max(0.0, 1 / per_s - (loop.time() - started)))
    finally:
        await channel.close(None)


async def watches(public: str, ca_pem: bytes, count: int, report: FloodReport) -> None:
    """`count` health Watch streams, each with a 200 KiB service name, held open."""
    channel = open_directory_channel(public, TlsIdentity(ca_pem))
    stub = health_pb2_grpc.HealthStub(channel)
    calls = []
    try:
        for i in range(count):
            call = stub.Watch(health_pb2.HealthCheckRequest(service=f"{i}" + "w" * 200_000))
            try:
                await asyncio.wait_for(call.read(), timeout=10)
                report.watches_held += 1
                calls.append(call)
            except (grpc.aio.AioRpcError, TimeoutError):
                report.watches_refused += 1
        await asyncio.Event().wait()  # hold them until stopped
    finally:
        for call in calls:
            call.cancel()
        await channel.close(None)


async def flood(
    source: str,
    idle: list[str],
    idle_count: int,
    public: str,
    ca_pem: bytes,
    malformed_per_s: float,
    watch_count: int,
) -> FloodReport:
    """Flood until SIGTERM; returns what was done."""
    report = FloodReport()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    pools = [IdleConnections(source, address, idle_count, report) for address in idle]
    tasks = [
        asyncio.create_task(malformed(public, ca_pem, malformed_per_s, report)),
        asyncio.create_task(watches(public, ca_pem, watch_count, report)),
    ]
    try:
        while not stop.is_set():
            for pool in pools:
                pool.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pool in pools:
            pool.close()
    return report


@app.command()
def main(
    public: Annotated[str, typer.Option(help="The directory's public port (host:port).")],
    ca: Annotated[Path, typer.Option(help="The federation CA certificate.")],
    out: Annotated[Path, typer.Option(help="Where to write the report (JSON) at the end.")],
    idle: Annotated[list[str], typer.Option(help="A port to hold idle connections on.")],
    source: Annotated[str, typer.Option(help="The loopback address to attack from.")] = (
        "127.0.0.2"
    ),
    idle_count: Annotated[int, typer.Option(help="Idle connections per port.")] = 4352,
    malformed_per_s: Annotated[float, typer.Option(help="Undecodable requests a second.")] = 500,
    watch_count: Annotated[int, typer.Option(help="Health Watch streams to open.")] = 48,
) -> None:
    """Flood until SIGTERM, then write the report."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report = asyncio.run(
        flood(source, idle, idle_count, public, ca.read_bytes(), malformed_per_s, watch_count)
    )
    out.write_text(json.dumps(asdict(report), indent=2) + "\n")


if __name__ == "__main__":
    app()
