"""The connection gate in front of every credex port: it caps connections per server and per
peer address before a single byte reaches gRPC (which can cap only the total), and relays each
admitted connection to the gRPC server listening on loopback.

gRPC then sees every caller as a loopback address; `caller_key` maps that back to the
caller's own address, for per-caller limits. An IPv6 caller is counted by its /64, the
block one subscriber usually holds. Each admitted connection costs three descriptors (the
caller's, ours to gRPC, gRPC's end of it): `connection_budget` sizes the cap accordingly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from credex.runtime.metrics import Metrics

log = logging.getLogger(__name__)

# Descriptors kept free for everything else a server opens: databases, its own outgoing
# channels (the directory: one or two per node), the metrics endpoint, log files, certificate
# reloads: a quarter of the limit, and at least this many.
RESERVED_DESCRIPTORS = 128
DESCRIPTORS_PER_CONNECTION = 3
MIN_CONNECTIONS = 16
# Every gate's connections towards gRPC, by our local port: the caller (host, port) each is for.
_CALLERS: dict[int, tuple[str, int]] = {}


def raise_descriptor_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit (as servers do); returns
    the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the descriptor limit from %d", soft)
    return int(soft)


def connection_budget(ports: int) -> int:
    """How many gated connections each of `ports` may hold so that a flood of them never
    takes the descriptors the server needs for its own work."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    usable = max(0, int(soft) - max(RESERVED_DESCRIPTORS, int(soft) // 4))
    return max(MIN_CONNECTIONS, usable // (DESCRIPTORS_PER_CONNECTION * max(1, ports)))


def peer_key(host: str) -> str:
    """What a caller is counted as: its IPv4 address, or the /64 of its IPv6 address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _parse_peer(grpc_peer: str) -> tuple[str, int] | None:
    """(host, port) from gRPC's peer string (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`), if it is one."""
    kind, _, rest = grpc_peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    rest = rest.replace("%5B", "[").replace("%5D", "]")
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _caller(grpc_peer: str) -> tuple[str, int] | None:
    parsed = _parse_peer(grpc_peer)
    if parsed is not None and parsed[0] == "127.0.0.1" and parsed[1] in _CALLERS:
        return _CALLERS[parsed[1]]  # through a gate: the caller behind it
    return parsed


def caller_key(grpc_peer: str) -> str:
    """What per-address limits count a call's caller as (see `peer_key`)."""
    caller = _caller(grpc_peer)
    return peer_key(caller[0]) if caller is not None else grpc_peer


def format_peer(host: str, port: int) -> str:
    """A caller's address in gRPC's own peer format (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`)."""
    if ":" in host:
        return f"ipv6:[{host}]:{port}"
    return f"ipv4:{host}:{port}"


@dataclass(frozen=True)
class GateLimits:
    max_connections: int
    max_per_peer: int


class _Relay(asyncio.Protocol):
    """One side of a relayed connection; writes what it reads to its partner, and stops
    reading while the partner cannot keep up."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.partner: _Relay | None = None
        self.on_lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        partner = self.partner
        if partner is not None and partner.transport is not None:
            partner.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost closes the partner

    def connection_lost(self, exc: Exception | None) -> None:
        partner, self.partner = self.partner, None
        if partner is not None and partner.transport is not None:
            partner.partner = None
            partner.transport.close()  # after flushing what it still has to send
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost()

    def pause_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.resume_reading()


ACCEPT_BATCH = 256  # connections taken per wake-up before other work gets a turn
OUT_OF_DESCRIPTORS_PAUSE_S = 0.1
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with a reset, keep no state


class Gate:
    """Accepts callers on a public address, admits at most `max_connections` in all and
    `max_per_peer` from one address, and relays each to the gRPC server on loopback. A
    refused connection is closed the moment it is accepted, so a flood holds no descriptor."""

    def __init__(self, name: str, limits: GateLimits, metrics: Metrics | None = None) -> None:
        self.name = name
        self.limits = limits
        self._metrics = metrics
        self._counts: dict[str, int] = {}
        self._total = 0
        self._sock: socket.socket | None = None
        self._inner_port = 0
        self.refused = 0
        self._short = 0  # accept() failures for want of descriptors
        self._relays: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return self._total

    async def start(self, listen: str, inner_port: int) -> int:
        """Listen on `listen` (host:port, port 0 picks one); returns the bound port."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        self._inner_port = inner_port
        loop = asyncio.get_running_loop()
        family, type_, proto, _, address = (
            await loop.getaddrinfo(
                host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        )[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        loop.add_reader(sock.fileno(), self._accept)
        return int(sock.getsockname()[1])

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:  # wait a moment rather than spin
                    self._short += 1
                    if self._short & (self._short - 1) == 0:
                        log.warning("%s: cannot accept: %s (%d times)", self.name, exc, self._short)
                    loop.remove_reader(sock.fileno())
                    loop.call_later(OUT_OF_DESCRIPTORS_PAUSE_S, self._resume)
                    return
                continue  # the caller gave up already (ECONNABORTED and the like)
            key = peer_key(str(peer[0]))
            if not self.admit(key):
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()
                continue
            conn.setblocking(False)
            task = loop.create_task(self._relay(conn, key, (str(peer[0]), int(peer[1]))))
            self._relays.add(task)  # until connected; then the transports hold the relay
            task.add_done_callback(self._relays.discard)

    def _resume(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept)

    async def _relay(self, conn: socket.socket, key: str, caller: tuple[str, int]) -> None:
        """Connect the admitted caller to gRPC and relay both ways until either side closes."""
        loop = asyncio.get_running_loop()
        released = False
        local_port = 0

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.release(key)
                _CALLERS.pop(local_port, None)

        try:
            inner_transport, inner = await loop.create_connection(
                _Relay, "127.0.0.1", self._inner_port
            )
        except OSError as exc:
            log.warning("%s: cannot reach the gRPC server: %s", self.name, exc)
            conn.close()
            release()
            return
        assert isinstance(inner, _Relay)
        inner.on_lost = release  # gRPC may close its side before the caller's is wired
        local_port = int(inner_transport.get_extra_info("sockname")[1])
        _CALLERS[local_port] = caller
        try:
            _, outer = await loop.connect_accepted_socket(_Relay, conn)
        except OSError:
            inner_transport.close()
            conn.close()
            return
        assert isinstance(outer, _Relay)
        outer.on_lost = release
        if inner_transport.is_closing():  # gRPC closed it meanwhile: nothing to relay
            assert outer.transport is not None
            outer.transport.close()
            return
        inner.partner, outer.partner = outer, inner

    def admit(self, key: str) -> bool:
        if self._total >= self.limits.max_connections or (
            self._counts.get(key, 0) >= self.limits.max_per_peer
        ):
            self.refused += 1
            if self._metrics is not None:
                self._metrics.connections_refused.labels(self.name).inc()
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8…: logs stay bounded
                log.warning(
                    "%s: refused a connection from %s (%d connections, %d from it; "
                    "%d refused so far)",
                    self.name,
                    key,
                    self._total,
                    self._counts.get(key, 0),
                    self.refused,
                )
            return False
        self._total += 1
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._metrics is not None:
            self._metrics.connections.labels(self.name).set(self._total)
        return True

    def release(self, key: str) -> None:
        self._total -= 1
        if self._metrics is not None:
            self._metrics.connections.labels(self.name).set(self._total)
        left = self._counts.get(key, 1) - 1
        if left > 0:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)

    async def close(self) -> None:
        """Stop accepting (connections already relayed end with the gRPC server)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
