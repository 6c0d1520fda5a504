"""Reading TOML config files with errors that name the file and the key."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

MEMBER_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class ConfigError(Exception):
    """A config file is missing, unparsable or has a wrong value."""


def validate_member_id(value: str, where: str) -> str:
    """Member ids appear in certificates, file names and logs: keep them plain (and never a
    path such as `.` or `..`)."""
    if not value or len(value) > 64 or not set(value) <= MEMBER_ID_CHARS or value.startswith("."):
        raise ConfigError(
            f"{where}: id {value!r} must be 1-64 of a-z 0-9 - _ . and not start with a dot"
        )
    return value


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def require_str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def resolve(base: Path, value: str) -> Path:
    """A path from a config file, relative to that file's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def address(
    table: dict[str, Any], key: str, default: str, where: str, *, optional: bool = False
) -> str:
    """A host:port to listen on (port 0 picks a free one); "" only where `optional`."""
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be a string host:port")
    if value == "" and optional:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where}: '{key}' must be host:port, not {value!r}")
    return value


def flag(table: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false")
    return value


def choice(
    table: dict[str, Any], key: str, default: str, allowed: tuple[str, ...], where: str
) -> str:
    value = table.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(allowed)}")
    return str(value)


def environment_overrides(
    data: dict[str, Any],
    prefix: str,
    schema: Mapping[str, Collection[str]],
    environ: Mapping[str, str] | None = None,
    reserved: Collection[str] = (),
) -> list[str]:
    """Apply `PREFIX_TABLE_KEY=value` variables (e.g. CREDEX_NODE_SERVER_LISTEN) onto the
    config's tables, for keys `schema` knows; returns the variables applied. A value is read
    as TOML (5, 2.5, true, "text") and otherwise taken as plain text. `reserved` names
    belong to the command line (e.g. CREDEX_DIRECTORY_HOME) and are left alone."""
    environ = os.environ if environ is None else environ
    applied = []
    tables = sorted(schema, key=len, reverse=True)  # purpose_limits before a shorter prefix
    for name in sorted(environ):
        if not name.startswith(f"{prefix}_") or name in reserved:
            continue
        rest = name.removeprefix(f"{prefix}_")
        table = next((t for t in tables if rest.startswith(f"{t.upper()}_")), None)
        key = rest.removeprefix(f"{table.upper()}_").lower() if table else ""
        if table is not None and key not in schema[table]:
            key = key.replace("_", "-")  # purpose names are written with hyphens
        if table is None or key not in schema[table]:
            known = ", ".join(f"{prefix}_{t.upper()}_…" for t in schema)
            raise ConfigError(f"environment variable {name} names no setting (known: {known})")
        section = data.setdefault(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{table}] must be a table to take {name}")
        section[key] = _env_value(environ[name])
        applied.append(name)
    return applied


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def positive(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{where}: '{key}' must be a positive, finite number")
    return float(value)


def non_negative(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{where}: '{key}' must be a finite number, zero or more")
    return float(value)


def whole(table: dict[str, Any], key: str, default: int, where: str, *, minimum: int = 0) -> int:
    """A whole number of at least `minimum` (counts and sizes)."""
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}: '{key}' must be a whole number, at least {minimum}")
    return value


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
