"""How credex parties connect: TLS on every port, message size bounds, pooled channels, and the
peer's identity as its certificate's credex URI name states it.

Every server and client gets its options and credentials here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from credex.errors import MalformedRequest, PermissionDenied, Reason, Unauthenticated
from credex.pki import DIRECTORY_NAME, PkiError
from credex.protocol.identity import CertificateIdentity, peer_identities
from credex.tls import TlsIdentity

# What the transport accepts at all; anything larger is cut off by gRPC itself.
MAX_TRANSPORT_BYTES = 16 * 1024 * 1024
# The largest request credex decodes; a larger one gets INVALID_ARGUMENT.
MAX_REQUEST_BYTES = 1024 * 1024

_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_TRANSPORT_BYTES),
    ("grpc.max_send_message_length", MAX_TRANSPORT_BYTES),
    # A restarted node is reachable again within seconds, not gRPC's default two minutes.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


def create_server() -> grpc.aio.Server:
    return grpc.aio.server(options=[*_OPTIONS, ("grpc.so_reuseport", 0)])


def _lenient(message_class: type[Message]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        if len(data) > MAX_REQUEST_BYTES:
            return MalformedRequest(f"{len(data)} bytes is more than {MAX_REQUEST_BYTES}")
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(str(exc))

    return deserialize


def add_service(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register `servicer`'s unary methods for `service`. Unlike the generated helper, a request
    that is too large or does not decode reaches the handler as MalformedRequest and gets
    INVALID_ARGUMENT instead of grpc's generic failure."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def bind(
    server: grpc.aio.Server, address: str, tls: TlsIdentity, *, require_client_auth: bool = True
) -> int:
    """Listen with TLS on `address` (port 0 picks a free one); returns the bound port.
    With `require_client_auth` only holders of a federation certificate get past the handshake."""
    port = server.add_secure_port(
        address, tls.server_credentials(require_client_auth=require_client_auth)
    )
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def bind_reloading(server: grpc.aio.Server, address: str, tls: Callable[[], TlsIdentity]) -> int:
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
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def open_channel(target: str, tls: TlsIdentity) -> grpc.aio.Channel:
    """A TLS channel to a member at `target`; its certificate must name the target's host."""
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=_OPTIONS)


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
        raise Unauthenticated(Reason.UNKNOWN_SIGNER, "caller presented no member certificate")
    identity = peer_identities.identity(bytes(pems[0]))
    if identity is None:
        raise Unauthenticated(
            Reason.UNKNOWN_SIGNER,
            "caller's certificate names no credex identity (renew it: `credex renew` or "
            "`credex-node renew`)",
        )
    return identity


def peer_member_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The member id in the caller's verified certificate; Unauthenticated if there is none.
    The directory's own certificate yields the directory's id."""
    return peer_identity(context).member_id


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
        raise PermissionDenied(
            Reason.PEER_MISMATCH,
            f"certificate is {peer.member_id!r} but the request is by {member_id!r}",
        )


def require_directory(context: grpc.aio.ServicerContext[Any, Any], directory_id: str) -> None:
    """Refuse unless the caller's certificate is the directory's own (`credex:directory:…`,
    which the CA never gives a member)."""
    peer = peer_identity(context)
    if not peer.directory or peer.member_id != directory_id:
        raise PermissionDenied(
            Reason.PEER_MISMATCH, f"certificate is {peer.member_id!r}, not the directory's"
        )


class ChannelPool:
    """One long-lived channel per endpoint, reused across requests."""

    def __init__(self, tls: TlsIdentity) -> None:
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = open_channel(target, self._tls)
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)
