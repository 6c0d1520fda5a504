"""How credex parties connect: TLS on every port, the limits every port enforces, pooled
channels, and the peer's identity as its certificate's credex URI name states it.

Every server and client gets its options and credentials here.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from credex.config import ServerSettings
from credex.errors import CredexError, Reason, Unauthenticated, refused
from credex.metrics import Metrics
from credex.pki import DIRECTORY_NAME, PkiError
from credex.protocol.identity import CertificateIdentity, peer_identities
from credex.runtime.call_limits import CallLimits
from credex.runtime.gate import Gate, GateLimits, caller_key, connection_budget
from credex.tls import TlsIdentity

# The largest message a client accepts (a profile, a registry snapshot); what servers accept
# is ServerSettings.max_message_bytes.
MAX_TRANSPORT_BYTES = 16 * 1024 * 1024

_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_TRANSPORT_BYTES),
    ("grpc.max_send_message_length", MAX_TRANSPORT_BYTES),
    # A restarted node is reachable again within seconds, not gRPC's default two minutes.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


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


def open_channel(
    target: str, tls: TlsIdentity, *, max_receive_bytes: int | None = None
) -> grpc.aio.Channel:
    """A TLS channel to a member at `target`; its certificate must name the target's host.
    `max_receive_bytes` lowers the largest answer taken (gRPC refuses a larger one with
    RESOURCE_EXHAUSTED before holding it)."""
    options = _OPTIONS
    if max_receive_bytes is not None:
        key = "grpc.max_receive_message_length"
        options = [*(o for o in _OPTIONS if o[0] != key), (key, max_receive_bytes)]
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)


def open_directory_channel(target: str, tls: TlsIdentity) -> grpc.aio.Channel:
    """A TLS channel that only the directory's own certificate satisfies, wherever it runs."""
    options = [*_OPTIONS, ("grpc.ssl_target_name_override", DIRECTORY_NAME)]
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> CertificateIdentity:
    """Who the caller's verified certificate says it is, read from its credex URI name (never
    the common name); Unauthenticated if it showed no certificate or one without a credex
    identity (issued before identities were URI names: renew it)."""
    pems = list(context.auth_context().get("x509_pem_cert") or [])
    if len(pems) != 1:
        raise refused(Reason.UNKNOWN_SIGNER, "caller presented no member certificate")
    identity = peer_identities.identity(bytes(pems[0]))
    if identity is None:
        raise refused(
            Reason.UNKNOWN_SIGNER,
            "caller's certificate names no credex identity (renew it: `credex renew` or "
            "`credex-node renew`)",
        )
    return identity


def peer_member_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The member id in the caller's verified certificate; Unauthenticated if there is none.
    The directory's own certificate yields the directory's id."""
    return peer_identity(context).member_id


def caller_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who per-caller limits count a call against: the member its certificate names, or, for a
    caller without one, its address (an IPv6 caller by its /64)."""
    try:
        return peer_member_id(context)
    except Unauthenticated:
        return f"address {caller_key(context.peer())}"


def peer_or_unknown(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's member id for logs, or "(no certificate)" when it showed none."""
    try:
        return peer_member_id(context)
    except Unauthenticated:
        return "(no certificate)"


def require_peer(context: grpc.aio.ServicerContext[Any, Any], member_id: str) -> None:
    """Refuse unless the caller's certificate is member `member_id`'s: nobody signs as
    another."""
    peer = peer_identity(context)
    if peer.directory or peer.member_id != member_id:
        raise refused(
            Reason.PEER_MISMATCH,
            f"certificate is {peer.member_id!r} but the request is by {member_id!r}",
        )


def is_directory(context: grpc.aio.ServicerContext[Any, Any], directory_id: str) -> bool:
    """Whether the caller's certificate is the directory's own (see `require_directory`)."""
    try:
        require_directory(context, directory_id)
    except CredexError:
        return False
    return True


def require_directory(context: grpc.aio.ServicerContext[Any, Any], directory_id: str) -> None:
    """Refuse unless the caller's certificate is the directory's own (`credex:directory:…`,
    which the CA never gives a member)."""
    peer = peer_identity(context)
    if not peer.directory or peer.member_id != directory_id:
        raise refused(
            Reason.PEER_MISMATCH, f"certificate is {peer.member_id!r}, not the directory's"
        )


class ChannelPool:
    """One long-lived channel per endpoint, reused across requests; at most `MAX_CHANNELS`
    (the least recently used is closed), so endpoints that come and go (a node announcing
    new addresses) cannot grow it without bound."""

    MAX_CHANNELS = 4096

    def __init__(self, tls: TlsIdentity, *, max_receive_bytes: int | None = None) -> None:
        self._tls = tls
        self._max_receive_bytes = max_receive_bytes
        self._channels: OrderedDict[str, grpc.aio.Channel] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is not None:
            self._channels.move_to_end(target)
            return channel
        channel = self._channels[target] = open_channel(
            target, self._tls, max_receive_bytes=self._max_receive_bytes
        )
        while len(self._channels) > self.MAX_CHANNELS:
            _, oldest = self._channels.popitem(last=False)
            task = asyncio.get_running_loop().create_task(oldest.close(grace=5.0))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), OrderedDict()
        for channel in channels:
            await channel.close(None)
        await asyncio.gather(*self._closing, return_exceptions=True)
