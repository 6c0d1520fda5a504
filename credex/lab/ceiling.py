"""The benchmark's ceiling: the same processes and RPC pattern as a profile request (a directory
that fans one request out to every node in parallel and answers once all have) with no
signatures, no consent checks and no database: the most Python gRPC does on this machine.

    python -m credex.lab.ceiling node --listen 127.0.0.1:0 --ready-file F [--tls CA CERT KEY]
    python -m credex.lab.ceiling directory --node HOST:PORT ... --listen ... --ready-file F \
        [--tls ...]

Payload sizes match credex's own (a signed query in, a signed answer of a few records out), so
the difference to credex is the work credex does, not the bytes it moves.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from credex.cli.shared import Listen, ReadyFile
from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.tls import TlsIdentity
from credex.runtime.serving import run_until_stopped

SERVICE = "credex.bench.Bare"
QUERY = f"/{SERVICE}/Query"
PROFILE = f"/{SERVICE}/Profile"
ANSWER_BYTES = 1_500  # about a node's signed answer with a few records
QUERY_BYTES = 600  # about a signed node query with its consent and attestation
REQUEST_BYTES = 400  # about a signed profile request

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

Tls = Annotated[
    tuple[Path, Path, Path] | None,
    typer.Option(help="CA certificate, certificate and key: serve and call over mutual TLS."),
]


def _identity(tls: tuple[Path, Path, Path] | None) -> TlsIdentity | None:
    return None if tls is None else TlsIdentity.load(*tls)


def _bind(server: grpc.aio.Server, listen: str, identity: TlsIdentity | None) -> int:
    if identity is None:
        return server.add_insecure_port(listen)
    return server.add_secure_port(listen, identity.server_credentials(require_client_auth=True))


def _unary(handler: Any) -> grpc.RpcMethodHandler[bytes, bytes]:
    return grpc.unary_unary_rpc_method_handler(handler)  # bytes in, bytes out


async def _serve(
    method: str, handler: Any, listen: str, ready_file: Path | None, identity: TlsIdentity | None
) -> None:
    """Serve one bytes-in, bytes-out method until stopped."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])  # bare: no credex limits
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {method: _unary(handler)}),)
    )
    port = _bind(server, listen, identity)
    await server.start()
    address = f"{listen.rsplit(':', 1)[0]}:{port}"
    await run_until_stopped([server], ready_file, {"address": address}, f"ceiling {method}")


async def _serve_node(listen: str, ready_file: Path | None, identity: TlsIdentity | None) -> None:
    answer = os.urandom(ANSWER_BYTES)

    async def query(request: bytes, context: Any) -> bytes:
        return answer

    await _serve("Query", query, listen, ready_file, identity)


async def _serve_directory(
    listen: str, ready_file: Path | None, identity: TlsIdentity | None, nodes: list[str]
) -> None:
    channels = [
        grpc.aio.insecure_channel(n) if identity is None else open_channel(n, identity)
        for n in nodes
    ]
    calls = [channel.unary_unary(QUERY, None, None) for channel in channels]
    query = os.urandom(QUERY_BYTES)

    async def profile(request: bytes, context: Any) -> bytes:
        answers = await asyncio.gather(*(call(query, timeout=2.0) for call in calls))
        return b"".join(answers)

    await _serve("Profile", profile, listen, ready_file, identity)


@app.command()
def node(listen: Listen = "127.0.0.1:0", ready_file: ReadyFile = None, tls: Tls = None) -> None:
    """A bare node: answers every query with a fixed payload."""
    asyncio.run(_serve_node(listen, ready_file, _identity(tls)))


@app.command()
def directory(
    node: Annotated[list[str], typer.Option("--node", help="A bare node's address.")],
    listen: Listen = "127.0.0.1:0",
    ready_file: ReadyFile = None,
    tls: Tls = None,
) -> None:
    """A bare directory: fans each request out to every node and joins the answers."""
    asyncio.run(_serve_directory(listen, ready_file, _identity(tls), node))


def ceiling_channel(address: str, identity: TlsIdentity | None) -> grpc.aio.Channel:
    """The load generator's channel to a bare directory."""
    if identity is None:
        return grpc.aio.insecure_channel(address)
    return open_directory_channel(address, identity)


if __name__ == "__main__":
    app()
