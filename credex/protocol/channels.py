"""How a credex party dials another: TLS, the largest answer taken, reconnect
backoff, and one pooled channel per endpoint."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import grpc

from credex.protocol.pki import DIRECTORY_NAME
from credex.protocol.tls import TlsIdentity

# The largest message a client accepts (a profile, a registry snapshot); what servers accept
# is ServerSettings.max_message_bytes.
MAX_TRANSPORT_BYTES = 16 * 1024 * 1024


_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_TRANSPORT_BYTES),
    ("grpc.max_send_message_length", MAX_TRANSPORT_BYTES),
    # A restarted node is reachable again within seconds, not gRPC's default two minutes.
    # Not grpc.min_reconnect_backoff_ms: C-core also takes it as the time one connection
    # attempt (TCP, TLS, HTTP/2 settings) may take, so a small value fails calls whenever a
    # handshake is slow (a busy server, a long path); its default is 20 s.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


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
