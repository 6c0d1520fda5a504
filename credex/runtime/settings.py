"""The [server] table every credex server reads: ports, limits, logs and drain."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from credex.protocol.config import (
    ConfigError,
    address,
    choice,
    flag,
    non_negative,
    positive,
    whole,
)

# The largest message any credex service accepts, unless [server] max_message_bytes says.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServerSettings:
    """The [server] table every credex server reads (the directory adds public_listen)."""

    listen: str
    metrics_listen: str = ""  # Prometheus endpoint; "" serves none
    reflection: bool = False
    health_interval_s: float = 2.0
    log_format: str = "text"
    log_level: str = "info"
    stop_grace_s: float = 10.0  # how long calls in flight may take to finish on SIGTERM
    # On SIGTERM, how long to keep serving while health says NOT_SERVING, so that load
    # balancers stop sending before calls are refused.
    drain_delay_s: float = 0.0
    # Limits on every port (docs/security.md): a connection must finish its TLS and HTTP/2
    # handshake within handshake_timeout_s; one without calls for idle_timeout_s is closed.
    handshake_timeout_s: float = 5.0
    idle_timeout_s: float = 300.0
    # Connections per port (0: sized from the descriptor limit) and from one address (an
    # IPv6 /64); 0 per peer turns the per-address cap off, for servers behind a proxy that
    # hides the callers' addresses.
    max_connections: int = 0
    max_connections_per_peer: int = 64
    # The largest message any service accepts, calls in progress at once (each may hold up
    # to one message), streams on one connection, and health Watch streams open at once.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_calls: int = 256
    max_streams_per_connection: int = 100
    max_health_watches: int = 16
    # Calls in progress from one caller (a member, or an address), and how soon after a call
    # starts its request must have arrived: a caller cannot hold the server's call slots.
    max_calls_per_caller: int = 64
    request_read_timeout_s: float = 10.0
    # Refusals one caller (a member, or an address without a certificate) may cause a
    # second, and in a burst; past that its calls are refused unread, with no disk write.
    refusals_per_s: float = 1.0
    refusal_burst: int = 30
    # Repeated refusals (same caller, action, outcome, subject and node) within this many
    # seconds are written as one audit entry with a count; at most this many kinds are held
    # in memory between writes (see credex.runtime.refusals).
    refusal_window_s: float = 60.0
    refusal_max_keys: int = 10_000

    def with_listen(self, listen: str, where: str) -> ServerSettings:
        """These settings listening on `listen` instead (a command-line override)."""
        return replace(self, listen=address({"listen": listen}, "listen", "", where))


SERVER_KEYS = frozenset(f.name for f in fields(ServerSettings))


# The limits' part of the [server] table, as both servers' example settings write it.
SERVER_LIMITS_TOML = """\
# Limits every port enforces (docs/security.md): a connection must finish its TLS handshake
# within handshake_timeout_s and is closed after idle_timeout_s without a call; at most
# max_connections per port (0: sized from the descriptor limit) and max_connections_per_peer
# from one address (0: no per-address cap, for a server behind a proxy that hides callers).
handshake_timeout_s = 5.0
idle_timeout_s = 300.0
max_connections = 0
max_connections_per_peer = 64
# The largest message any service accepts, calls in progress at once, streams on one
# connection, and health Watch streams open at once.
max_message_bytes = 262144
max_concurrent_calls = 256
max_streams_per_connection = 100
max_health_watches = 16
# Calls in progress from one caller (a member, or an address), and how soon after a call
# starts its request must have arrived.
max_calls_per_caller = 64
request_read_timeout_s = 10.0
# Refusals one caller may cause a second, and in a burst; past that its calls are refused
# unread (no parsing, no signature check, no disk write) until it slows down.
refusals_per_s = 1.0
refusal_burst = 30
# Repeated refusals (same caller, outcome, subject) within this many seconds are written as
# one audit entry with their count (the first at once); at most this many kinds held between
# writes.
refusal_window_s = 60.0
refusal_max_keys = 10000
"""


def load_server(data: dict[str, Any], path: Path, default_listen: str) -> ServerSettings:
    table = data.get("server", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [server] must be a table")
    where = f"{path} [server]"
    return ServerSettings(
        listen=address(table, "listen", default_listen, where),
        metrics_listen=address(table, "metrics_listen", "", where, optional=True),
        reflection=flag(table, "reflection", False, where),
        health_interval_s=positive(table, "health_interval_s", 2.0, where),
        log_format=choice(table, "log_format", "text", LOG_FORMATS, where),
        log_level=choice(table, "log_level", "info", LOG_LEVELS, where),
        stop_grace_s=positive(table, "stop_grace_s", 10.0, where),
        drain_delay_s=non_negative(table, "drain_delay_s", 0.0, where),
        handshake_timeout_s=positive(table, "handshake_timeout_s", 5.0, where),
        idle_timeout_s=positive(table, "idle_timeout_s", 300.0, where),
        max_connections=whole(table, "max_connections", 0, where),
        max_connections_per_peer=whole(table, "max_connections_per_peer", 64, where),
        max_message_bytes=whole(
            table, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES, where, minimum=4096
        ),
        max_concurrent_calls=whole(table, "max_concurrent_calls", 256, where, minimum=1),
        max_streams_per_connection=whole(
            table, "max_streams_per_connection", 100, where, minimum=1
        ),
        max_health_watches=whole(table, "max_health_watches", 16, where),
        max_calls_per_caller=whole(table, "max_calls_per_caller", 64, where, minimum=1),
        request_read_timeout_s=positive(table, "request_read_timeout_s", 10.0, where),
        refusals_per_s=positive(table, "refusals_per_s", 1.0, where),
        refusal_burst=whole(table, "refusal_burst", 30, where, minimum=1),
        refusal_window_s=positive(table, "refusal_window_s", 60.0, where),
        refusal_max_keys=whole(table, "refusal_max_keys", 10_000, where, minimum=1),
    )
