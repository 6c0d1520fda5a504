"""A node's config file (TOML): identity, databases, keys and category adapters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credex.protocol import vocab
from credex.protocol.config import (
    ConfigError,
    burst,
    environment_overrides,
    example_settings,
    load_toml,
    positive,
    read_settings,
    require_str,
    resolve,
    setting,
    settings_keys,
    text,
    toml_value,
    validate_member_id,
)
from credex.runtime.settings import SERVER_KEYS, ServerSettings, load_server

ENV_PREFIX = "CREDEX_NODE"
DEFAULT_LISTEN = "127.0.0.1:7101"


def _required(table: dict[str, Any], key: str, default: str, where: str) -> str:
    return require_str(table, key, where) if not default else text(table, key, default, where)


@dataclass(frozen=True)
class NodeTable:
    """The [node] table as written: each key declared once, with its default, its comment in
    the files credex writes, and its reader. Paths are relative to the config file."""

    id: str = setting(
        "", _required, "Your member id in the federation, as the directory operator registered it."
    )
    name: str = setting("", text)
    jurisdiction: str = setting("CN", text)
    records_db: str = setting(
        "", _required, "Your own database. credex opens it read-only and never writes to it."
    )
    state_db: str = setting(
        "credex-node.db",
        text,
        "credex's own state (nonces, audit log, registry snapshot): a separate file it may write.",
    )
    signing_key: str = setting(
        "node.key", text, "Key files, created by `credex-node init` (the TLS ones when you enroll)."
    )
    tls_key: str = setting("tls.key", text)
    tls_cert: str = setting("tls.crt", text)
    ca_cert: str = setting("ca.crt", text)
    directory_id: str = setting(
        "directory",
        text,
        "The directory: its id, its members' address (host:port) and its public key.",
    )
    directory_address: str = setting("", text)
    directory_key: str = setting("directory.pub", text)
    directory_public_address: str = setting(
        "",
        text,
        "The directory's public address (host:port): the node renews its day-long certificate "
        'there, which works even after it has expired. "": renew on directory_address while '
        "still valid.",
    )
    sync_interval_s: float = setting(
        5.0,
        positive,
        "How often to pull the registry and revocations (seconds), and how long to keep "
        "answering when the directory cannot be reached.",
    )
    offline_grace_s: float = setting(120.0, positive)
    checkpoint_interval_s: float = setting(
        10.0, positive, "How often to sign a checkpoint of the audit log (also always on stop)."
    )


@dataclass(frozen=True)
class LimitsTable:
    """The [limits] table: what the directory may ask of this node."""

    directory_rate_per_s: float = setting(
        1000.0, positive, "Queries a second the directory may send, and the burst above that rate."
    )
    directory_burst: float = setting(2000.0, burst)


# The settings a config file (and CREDEX_NODE_<TABLE>_<KEY> variables) may give.
SCHEMA: dict[str, frozenset[str]] = {
    "node": settings_keys(NodeTable),
    "server": SERVER_KEYS,
    "limits": settings_keys(LimitsTable),
}


@dataclass(frozen=True)
class AdapterSpec:
    """One parameterized SELECT over the operator's tables yielding records of one category."""

    category: vocab.Category
    sql: str


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    node_id: str
    name: str
    jurisdiction: str
    records_db: Path
    state_db: Path
    signing_key: Path
    directory_key: Path
    tls_key: Path
    tls_cert: Path
    ca_cert: Path
    directory_id: str
    directory_address: str
    adapters: tuple[AdapterSpec, ...]
    # The directory's public port: certificate renewal there needs no certificate, so a node
    # whose certificate expired (switched off for a day) renews by itself. "": renew on the
    # member port, with the current certificate.
    directory_public_address: str = ""
    # Queries a second the directory may send ([limits] directory_rate_per_s), and the burst.
    rate_per_s: float = 1000.0
    burst: float = 2000.0
    # How often to pull the registry and revocations; how long to serve without hearing back.
    sync_interval_s: float = 5.0
    offline_grace_s: float = 120.0
    # How often the node signs a checkpoint of its audit log (and always when it stops).
    checkpoint_interval_s: float = 10.0
    server: ServerSettings = field(default_factory=lambda: ServerSettings(DEFAULT_LISTEN))

    @property
    def registry_cache(self) -> Path:
        """Where the last verified registry snapshot is kept between runs."""
        return self.state_db.with_name(self.state_db.stem + ".registry")

    @property
    def categories(self) -> tuple[vocab.Category, ...]:
        return tuple(sorted({a.category for a in self.adapters}))


def load_node_config(path: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """The config at `path`, with CREDEX_NODE_<TABLE>_<KEY> environment variables on top."""
    data = load_toml(path)
    applied = environment_overrides(data, ENV_PREFIX, SCHEMA, environ)
    try:
        return _node_config(path, data)
    except ConfigError as exc:
        if not applied:
            raise
        raise ConfigError(f"{exc} (environment: {', '.join(applied)})") from None


def _node_config(path: Path, data: dict[str, Any]) -> NodeConfig:
    base = path.resolve().parent
    node = data.get("node")
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: missing [node] table")
    where = f"{path} [node]"
    adapters_raw = data.get("adapter", [])
    if not isinstance(adapters_raw, list) or not adapters_raw:
        raise ConfigError(f"{path}: at least one [[adapter]] is required")
    adapters = []
    for i, raw in enumerate(adapters_raw, 1):
        awhere = f"{path} [[adapter]] #{i}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{awhere}: must be a table")
        try:
            category = vocab.parse_category(require_str(raw, "category", awhere))
        except ValueError as exc:
            raise ConfigError(f"{awhere}: {exc}") from None
        sql = require_str(raw, "sql", awhere)
        if ":local_id" not in sql:
            raise ConfigError(f"{awhere}: sql must select by the :local_id parameter")
        adapters.append(AdapterSpec(category=category, sql=sql))
    table = NodeTable(**read_settings(NodeTable, node, where))
    limits = LimitsTable(**read_settings(LimitsTable, data.get("limits", {}), f"{path} [limits]"))
    return NodeConfig(
        path=path,
        node_id=validate_member_id(table.id, where),
        name=table.name or table.id,
        jurisdiction=table.jurisdiction,
        records_db=resolve(base, table.records_db),
        state_db=resolve(base, table.state_db),
        signing_key=resolve(base, table.signing_key),
        directory_key=resolve(base, table.directory_key),
        tls_key=resolve(base, table.tls_key),
        tls_cert=resolve(base, table.tls_cert),
        ca_cert=resolve(base, table.ca_cert),
        directory_id=table.directory_id,
        directory_address=table.directory_address,
        directory_public_address=table.directory_public_address,
        adapters=tuple(adapters),
        rate_per_s=limits.directory_rate_per_s,
        burst=limits.directory_burst,
        sync_interval_s=table.sync_interval_s,
        offline_grace_s=table.offline_grace_s,
        checkpoint_interval_s=table.checkpoint_interval_s,
        server=load_server(ServerSettings, data, path, DEFAULT_LISTEN),
    )


def config_text(
    node: Mapping[str, Any],
    adapters: Sequence[tuple[str, str]],
    *,
    server: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
) -> str:
    """A node config file: [node] (every key, at its default or the value `node` gives),
    [server] and [limits] when given, and one [[adapter]] per (category, SQL)."""
    out = "[node]\n" + example_settings(NodeTable, node)
    if server is not None:
        listen = {"listen": DEFAULT_LISTEN, **server}
        out += "\n[server]\n" + example_settings(ServerSettings, listen)
    if limits is not None:
        out += "\n[limits]\n" + example_settings(LimitsTable, limits)
    return out + "".join("\n" + adapter_text(category, sql) for category, sql in adapters)


def adapter_text(category: str, sql: str) -> str:
    """One [[adapter]] table."""
    if '"""' in sql or "\\" in sql:
        raise ConfigError(f"adapter SQL cannot hold triple quotes or backslashes: {sql[:60]!r}")
    return f'[[adapter]]\ncategory = {toml_value(category)}\nsql = """\n{sql.strip()}\n"""\n'
