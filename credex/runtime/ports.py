"""How a credex server listens: TLS on every port, and the limits every port enforces
(message sizes, handshake and idle timeouts, streams, connections, calls per caller).

Every server gets its options and credentials here; clients get theirs in
credex.protocol.channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from credex.protocol.channels import MAX_TRANSPORT_BYTES
from credex.protocol.pki import PkiError
from credex.protocol.tls import TlsIdentity
from credex.runtime.call_limits import CallLimits
from credex.runtime.gate import Gate, GateLimits, connection_budget
from credex.runtime.metrics import Metrics
from credex.runtime.settings import ServerSettings


def create_server(
    limits: ServerSettings, *, ports: int = 1, idle_timeout_s: float | None = None
) -> grpc.aio.Server:
    """A gRPC server that enforces `limits` on every service it carries (health and
    reflection included); `ports` is how many ports this process serves (for sizing the
    connection cap), `idle_timeout_s` overrides the idle timeout (the public port's)."""
    idle = idle_timeout_s if idle_timeout_s is not None else limits.idle_timeout_s
    options: list[tuple[str, int]] = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", MAX_TRANSPORT_BYTES),
        ("grpc.server_handshake_timeout_ms", round(limits.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", round(idle * 1000)),
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", max_connections(limits, ports)),
    ]
    calls = CallLimits(
        per_caller=limits.max_calls_per_caller, read_timeout_s=limits.request_read_timeout_s
    )
    return grpc.aio.server(
        options=options,
        maximum_concurrent_rpcs=limits.max_concurrent_calls,
        interceptors=[calls],
    )


def _unread(message_class: type[Message]) -> Callable[[bytes], UnreadRequest]:
    return lambda data: UnreadRequest(data, message_class)


def max_connections(limits: ServerSettings, ports: int) -> int:
    """Connections one port may hold: as configured, or what the descriptor limit allows."""
    return limits.max_connections or connection_budget(ports)


@dataclass(frozen=True)
class UnreadRequest:
    """A request's bytes, not yet parsed: `rpc_handler` first checks that the caller may still
    be answered at all (a caller refused too often is turned away before any parsing), then
    reads it; bytes that do not decode get INVALID_ARGUMENT, not gRPC's generic failure."""

    data: bytes
    message_class: type[Message]

    def read(self) -> Message:
        """The parsed request; DecodeError if the bytes are not one."""
        return self.message_class.FromString(self.data)


def add_service(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register `servicer`'s unary methods for `service`; each gets its request as an
    UnreadRequest (see there)."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_unread(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


class Binding:
    """One listening port of a gRPC server: gRPC's own, or a gate in front of it that caps
    connections per caller address (`ServerSettings.max_connections_per_peer`)."""

    def __init__(self, server: grpc.aio.Server, address: str, port: int, gate: Gate | None) -> None:
        self._server = server
        self._host = address.rpartition(":")[0]
        self._address = address
        self._port = port
        self._gate = gate

    @property
    def gate(self) -> Gate | None:
        return self._gate

    async def open(self) -> str:
        """Start taking callers (after the gRPC server started); returns host:port."""
        if self._gate is None:
            return f"{self._host}:{self._port}"
        port = await self._gate.start(self._address, self._port)
        return f"{self._host}:{port}"

    async def close(self) -> None:
        if self._gate is not None:
            await self._gate.close()


def _listen(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials,
    limits: ServerSettings,
    ports: int,
    name: str,
    metrics: Metrics | None,
) -> Binding:
    gated = limits.max_connections_per_peer > 0
    port = server.add_secure_port("127.0.0.1:0" if gated else address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    gate = (
        Gate(
            name,
            GateLimits(
                max_connections=max_connections(limits, ports),
                max_per_peer=limits.max_connections_per_peer,
            ),
            metrics,
        )
        if gated
        else None
    )
    return Binding(server, address, port, gate)


def bind(
    server: grpc.aio.Server,
    address: str,
    tls: TlsIdentity,
    limits: ServerSettings,
    *,
    require_client_auth: bool = True,
    ports: int = 1,
    name: str = "server",
    metrics: Metrics | None = None,
) -> Binding:
    """Listen with TLS on `address` (port 0 picks a free one), within `limits`. With
    `require_client_auth` only holders of a federation certificate get past the handshake."""
    credentials = tls.server_credentials(require_client_auth=require_client_auth)
    return _listen(server, address, credentials, limits, ports, name, metrics)


def bind_reloading(
    server: grpc.aio.Server,
    address: str,
    tls: Callable[[], TlsIdentity],
    limits: ServerSettings,
    *,
    ports: int = 1,
    name: str = "server",
    metrics: Metrics | None = None,
) -> Binding:
    """Like `bind` with client certificates required, but each new connection gets the
    certificate `tls()` returns now: a rotated certificate is served without a restart."""
    first = tls()
    served = [first]

    def configuration(identity: TlsIdentity) -> Any:
        if identity.key_pem is None or identity.cert_pem is None:
            raise PkiError("a server needs a certificate and its key")
        return grpc.ssl_server_certificate_configuration(
            [(identity.key_pem, identity.cert_pem)], root_certificates=identity.ca_pem
        )

    def fetch() -> Any:
        current = tls()
        if current is served[0]:
            return None
        served[0] = current
        return configuration(current)

    credentials = grpc.dynamic_ssl_server_credentials(
        configuration(first), fetch, require_client_authentication=True
    )
    return _listen(server, address, credentials, limits, ports, name, metrics)
