"""The [server] table every credex server reads: ports, limits, logs and drain."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self, TypeVar

from credex.protocol.config import (
    address,
    at_least,
    flag,
    non_negative,
    one_of,
    optional_address,
    positive,
    read_settings,
    setting,
    settings_keys,
    whole,
)

# The largest message any credex service accepts, unless [server] max_message_bytes says.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
S = TypeVar("S", bound="ServerSettings")


@dataclass(frozen=True)
class ServerSettings:
    """The [server] table every credex server reads (the directory adds its public port:
    DirectoryServerSettings). Each field is declared once: its default, its comment in the
    example files and how it is read (credex.protocol.config.setting)."""

    listen: str = setting("", address, "Where the server listens (host:port; port 0 picks one).")
    metrics_listen: str = setting(
        "", optional_address, 'Prometheus metrics endpoint as host:port; "" serves none.'
    )
    reflection: bool = setting(
        False,
        flag,
        "gRPC server reflection, so generic clients (grpcurl, grpc_cli) can list and call "
        "services; health checks are always served.",
    )
    health_interval_s: float = setting(
        2.0, positive, "How often the health status is re-checked, in seconds."
    )
    log_format: str = setting(
        "text",
        one_of(*LOG_FORMATS),
        'Logs on stderr: "text" or "json" (one event per line), and the least level written.',
    )
    log_level: str = setting("info", one_of(*LOG_LEVELS))
    # On SIGTERM, how long to keep serving while health says NOT_SERVING, so that load
    # balancers stop sending before calls are refused; then how long calls in flight may take.
    drain_delay_s: float = setting(
        0.0,
        non_negative,
        "On SIGTERM: keep answering this long while health says NOT_SERVING (for load "
        "balancers), then give calls in flight this long to finish.",
    )
    stop_grace_s: float = setting(10.0, positive)
    handshake_timeout_s: float = setting(
        5.0,
        positive,
        "Limits every port enforces (docs/security.md): a connection must finish its TLS "
        "handshake within handshake_timeout_s and is closed after idle_timeout_s without a "
        "call; at most max_connections per port (0: sized from the descriptor limit) and "
        "max_connections_per_peer from one address, an IPv6 /64 (0: no per-address cap, for a "
        "server behind a proxy that hides callers).",
    )
    idle_timeout_s: float = setting(300.0, positive)
    max_connections: int = setting(0, whole)
    max_connections_per_peer: int = setting(64, whole)
    max_message_bytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES,
        at_least(4096),
        "The largest message any service accepts, calls in progress at once (each may hold "
        "up to one message), streams on one connection, and health Watch streams open at once.",
    )
    max_concurrent_calls: int = setting(256, at_least(1))
    max_streams_per_connection: int = setting(100, at_least(1))
    max_health_watches: int = setting(16, whole)
    max_calls_per_caller: int = setting(
        64,
        at_least(1),
        "Calls in progress from one caller (a member, or an address), and how soon after a "
        "call starts its request must have arrived: a caller cannot hold the server's call "
        "slots.",
    )
    request_read_timeout_s: float = setting(10.0, positive)
    refusals_per_s: float = setting(
        1.0,
        positive,
        "Refusals one caller (a member, or an address without a certificate) may cause a "
        "second, and in a burst; past that its calls are refused unread (no parsing, no "
        "signature check, no disk write) until it slows down.",
    )
    refusal_burst: int = setting(30, at_least(1))
    refusal_window_s: float = setting(
        60.0,
        positive,
        "Repeated refusals (same caller, action, outcome, subject and node) within this many "
        "seconds are written as one audit entry with their count (the first at once); at most "
        "this many kinds are held in memory between writes.",
    )
    refusal_max_keys: int = setting(10_000, at_least(1))

    def with_listen(self, listen: str, where: str) -> Self:
        """These settings listening on `listen` instead (a command-line override)."""
        return replace(self, listen=address({"listen": listen}, "listen", "", where))


SERVER_KEYS = settings_keys(ServerSettings)


def load_server(cls: type[S], data: dict[str, Any], path: Path, default_listen: str) -> S:
    """The [server] table of the config at `path` as `cls` (ServerSettings or a subclass)."""
    table = data.get("server", {})
    return cls(**read_settings(cls, table, f"{path} [server]", {"listen": default_listen}))
