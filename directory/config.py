"""The directory's home folder: settings, signing key and database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from credex import vocab
from credex.config import ConfigError, address, flag, load_toml, resolve

SETTINGS_FILE = "directory.toml"
DEFAULT_SETTINGS = """\
# credex directory settings
[directory]
id = "directory"
# Host names and addresses the directory's TLS certificate is valid for.
hosts = ["localhost", "127.0.0.1"]
# Per-node deadline for one query, in seconds: a slow or dead node costs at most this.
node_deadline_s = 2.0
# Longest validity window accepted on a signed profile request, in seconds.
max_request_lifetime_s = 300.0
# How long a signed subject attestation stays valid, in seconds.
attestation_ttl_s = 3600.0
# The scoring policy file (relative to this folder); empty: the shipped national baseline.
policy = ""
# How often the directory signs a checkpoint of its audit log (and always when it stops).
checkpoint_interval_s = 10.0
# Profile requests a second each requester may send, and the burst it may save up.
requester_rate_per_s = 50.0
requester_burst = 100

[server]
# Members (requesters and nodes) over mutual TLS; subjects and enrollment over TLS.
listen = "127.0.0.1:7100"
public_listen = "127.0.0.1:7099"
# Prometheus metrics endpoint as host:port; "" serves none.
metrics_listen = ""
# gRPC server reflection, so generic clients (grpcurl, grpc_cli) can list and call services.
reflection = false
# How often the health status is re-checked, in seconds.
health_interval_s = 2.0

# Profiles a requester may obtain about one subject for one purpose per calendar month (UTC).
[purpose_limits]
loan-application = 30
school-enrollment = 30
employment-screening = 30
promotion = 30
public-service = 60
research = 1000
subject-access = 1000
"""


@dataclass(frozen=True)
class DirectorySettings:
    home: Path
    directory_id: str = "directory"
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    node_deadline_s: float = 2.0
    max_request_lifetime_s: float = 300.0
    attestation_ttl_s: float = 3600.0
    requester_rate_per_s: float = 50.0
    requester_burst: float = 100.0
    checkpoint_interval_s: float = 10.0
    policy: str = ""
    purpose_limits: Mapping[vocab.Purpose, int] = field(default_factory=dict)
    listen: str = "127.0.0.1:7100"
    public_listen: str = "127.0.0.1:7099"
    metrics_listen: str = ""
    reflection: bool = False
    health_interval_s: float = 2.0

    @property
    def key_path(self) -> Path:
        return self.home / "directory.key"

    @property
    def public_key_path(self) -> Path:
        return self.home / "directory.pub"

    @property
    def db_path(self) -> Path:
        return self.home / "directory.db"

    @property
    def policy_path(self) -> Path:
        if not self.policy:
            return Path(__file__).parent / "policies" / "national-baseline.toml"
        return resolve(self.home, self.policy)

    @property
    def ca_key_path(self) -> Path:
        return self.home / "ca.key"

    @property
    def ca_cert_path(self) -> Path:
        return self.home / "ca.crt"

    @property
    def tls_key_path(self) -> Path:
        return self.home / "tls.key"

    @property
    def tls_cert_path(self) -> Path:
        return self.home / "tls.crt"


def _positive(table: dict[str, object], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}: '{key}' must be a positive number of seconds")
    return float(value)


def load_settings(home: Path) -> DirectorySettings:
    """Read `home/directory.toml`; a missing home or file is a ConfigError telling what to run."""
    path = home / SETTINGS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{home} is not a directory home (no {SETTINGS_FILE}); "
            f"run `credex-directory init --home {home}`"
        )
    data = load_toml(path)
    table = data.get("directory", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [directory] must be a table")
    where = f"{path} [directory]"
    server = data.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"{path}: [server] must be a table")
    swhere = f"{path} [server]"
    hosts = table.get("hosts", ["localhost", "127.0.0.1"])
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{where}: 'hosts' must be a list of host names or addresses")
    return DirectorySettings(
        home=home,
        directory_id=str(table.get("id", "directory")),
        hosts=tuple(hosts),
        node_deadline_s=_positive(table, "node_deadline_s", 2.0, where),
        max_request_lifetime_s=_positive(table, "max_request_lifetime_s", 300.0, where),
        attestation_ttl_s=_positive(table, "attestation_ttl_s", 3600.0, where),
        requester_rate_per_s=_positive(table, "requester_rate_per_s", 50.0, where),
        checkpoint_interval_s=_positive(table, "checkpoint_interval_s", 10.0, where),
        policy=str(table.get("policy", "")),
        requester_burst=max(1.0, _positive(table, "requester_burst", 100.0, where)),
        purpose_limits=_purpose_limits(data.get("purpose_limits", {}), f"{path} [purpose_limits]"),
        listen=address(server, "listen", "127.0.0.1:7100", swhere),
        public_listen=address(server, "public_listen", "127.0.0.1:7099", swhere),
        metrics_listen=address(server, "metrics_listen", "", swhere, optional=True),
        reflection=flag(server, "reflection", False, swhere),
        health_interval_s=_positive(server, "health_interval_s", 2.0, swhere),
    )


def _purpose_limits(table: object, where: str) -> dict[vocab.Purpose, int]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table of purpose = profiles per month")
    limits: dict[vocab.Purpose, int] = {}
    for name, value in table.items():
        try:
            purpose = vocab.parse_purpose(name)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: {name} must be a whole number of profiles")
        limits[purpose] = value
    return limits
