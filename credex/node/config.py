"""A node's config file (TOML): identity, databases, keys and category adapters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credex.protocol import vocab
from credex.protocol.config import (
    ConfigError,
    environment_overrides,
    load_toml,
    positive,
    require_str,
    resolve,
    validate_member_id,
)
from credex.runtime.settings import SERVER_KEYS, ServerSettings, load_server

ENV_PREFIX = "CREDEX_NODE"
DEFAULT_LISTEN = "127.0.0.1:7101"
# The settings a config file (and CREDEX_NODE_<TABLE>_<KEY> variables) may give.
SCHEMA: dict[str, frozenset[str]] = {
    "node": frozenset(
        {
            "id",
            "name",
            "jurisdiction",
            "records_db",
            "state_db",
            "signing_key",
            "directory_key",
            "tls_key",
            "tls_cert",
            "ca_cert",
            "directory_id",
            "directory_address",
            "directory_public_address",
            "sync_interval_s",
            "offline_grace_s",
            "checkpoint_interval_s",
        }
    ),
    "server": SERVER_KEYS,
    "limits": frozenset({"directory_rate_per_s", "directory_burst"}),
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
    limits = data.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError(f"{path}: [limits] must be a table")
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
    return NodeConfig(
        path=path,
        node_id=validate_member_id(require_str(node, "id", where), where),
        name=str(node.get("name", "")) or require_str(node, "id", where),
        jurisdiction=str(node.get("jurisdiction", "CN")),
        records_db=resolve(base, require_str(node, "records_db", where)),
        state_db=resolve(base, str(node.get("state_db", "credex-node.db"))),
        signing_key=resolve(base, str(node.get("signing_key", "node.key"))),
        directory_key=resolve(base, str(node.get("directory_key", "directory.pub"))),
        tls_key=resolve(base, str(node.get("tls_key", "tls.key"))),
        tls_cert=resolve(base, str(node.get("tls_cert", "tls.crt"))),
        ca_cert=resolve(base, str(node.get("ca_cert", "ca.crt"))),
        directory_id=str(node.get("directory_id", "directory")),
        directory_address=str(node.get("directory_address", "")),
        directory_public_address=str(node.get("directory_public_address", "")),
        adapters=tuple(adapters),
        rate_per_s=positive(limits, "directory_rate_per_s", 1000.0, f"{path} [limits]"),
        burst=max(1.0, positive(limits, "directory_burst", 2000.0, f"{path} [limits]")),
        sync_interval_s=positive(node, "sync_interval_s", 5.0, where),
        offline_grace_s=positive(node, "offline_grace_s", 120.0, where),
        checkpoint_interval_s=positive(node, "checkpoint_interval_s", 10.0, where),
        server=load_server(ServerSettings, data, path, DEFAULT_LISTEN),
    )
