"""The directory's home folder: settings, signing key and database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credex.protocol import vocab
from credex.protocol.channels import MAX_TRANSPORT_BYTES
from credex.protocol.config import (
    ConfigError,
    address,
    environment_overrides,
    load_toml,
    positive,
    resolve,
    whole,
)
from credex.protocol.endpoints import EndpointError, EndpointPolicy
from credex.protocol.pki import MEMBER_CERT_LIFETIME_S
from credex.runtime.settings import SERVER_KEYS, SERVER_LIMITS_TOML, ServerSettings, load_server

SETTINGS_FILE = "directory.toml"
DEFAULT_MAX_NODE_ANSWER_BYTES = 1024 * 1024
DEFAULT_MAX_PROFILE_BYTES = 4 * 1024 * 1024
# What a profile's answers may take together at most: a profile must fit in one message.
PROFILE_BYTES_CEILING = MAX_TRANSPORT_BYTES - 256 * 1024
ENV_PREFIX = "CREDEX_DIRECTORY"
RESERVED_ENV = frozenset({"CREDEX_DIRECTORY_HOME"})  # the command line's --home
DEFAULT_LISTEN = "127.0.0.1:7100"
KEY_OVERLAP_S = 600.0
# A certificate must outlive a renewal round (nodes renew in its last third) and should not
# outlive a week: revocation lists carry a revoked certificate until it expires.
MIN_CERT_LIFETIME_S = 10.0
MAX_CERT_LIFETIME_S = 7 * 86_400.0
DEFAULT_PUBLIC_LISTEN = "127.0.0.1:7099"
# The settings directory.toml (and CREDEX_DIRECTORY_<TABLE>_<KEY> variables) may give.
SCHEMA: dict[str, frozenset[str]] = {
    "directory": frozenset(
        {
            "id",
            "hosts",
            "node_deadline_s",
            "max_request_lifetime_s",
            "attestation_ttl_s",
            "policy",
            "checkpoint_interval_s",
            "requester_rate_per_s",
            "requester_burst",
            "max_node_answer_bytes",
            "max_profile_bytes",
            "cert_lifetime_s",
            "key_overlap_s",
            "endpoint_networks",
            "endpoint_domains",
        }
    ),
    "server": SERVER_KEYS | {"public_listen", "public_idle_timeout_s"},
    "purpose_limits": frozenset(vocab.purpose_name(p) for p in vocab.ALL_PURPOSES),
    "disputes": frozenset({"per_subject_per_hour", "max_open_per_subject"}),
    "subjects": frozenset({"rate_per_s", "burst", "max_consents"}),
}
DEFAULT_SETTINGS = (
    """\
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
# The most one node's signed answer may take of a profile (bytes): a larger one is marked
# TOO_LARGE and not delivered. And the most all answers of one profile may take together.
max_node_answer_bytes = 1048576
max_profile_bytes = 4194304
# How long a member certificate is valid, in seconds; running members renew theirs with
# their signing key well before it ends (nodes by themselves, requesters when they next run).
cert_lifetime_s = 86400.0
# How long a rotated-away signing key, and the certificate that went with it, keep working.
key_overlap_s = 600.0
# Where nodes may be reached: announced endpoints are host:port with a DNS name or an IP
# address, never link-local, unspecified or multicast. Non-empty lists allow only addresses
# in these networks (e.g. ["10.20.0.0/16"]) and names in these domains (e.g. ["nodes.example"]);
# with networks but no domains, names are refused.
endpoint_networks = []
endpoint_domains = []

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
# Logs on stderr: "text" or "json" (one event per line), and the least level written.
log_format = "text"
log_level = "info"
# On SIGTERM: keep answering this long while health says NOT_SERVING (for load balancers),
# then give calls in flight this long to finish.
drain_delay_s = 0.0
stop_grace_s = 10.0
"""
    + SERVER_LIMITS_TOML
    + """\
# Subjects and enrollment hold no certificate: an idle connection on the public port is
# closed after this long.
public_idle_timeout_s = 15.0

# Disputes one subject may file in any hour (refused ones count: each makes a node read its
# records), and how many of a subject's disputes may wait for a node's decision at once.
[disputes]
per_subject_per_hour = 5
max_open_per_subject = 10

# Calls each subject may make (every call signed by the subject: grants, pauses, revocations,
# lists, access logs, disputes), a second on average with a burst they may save up; and how
# many consents one subject may hold that are neither expired nor revoked.
[subjects]
rate_per_s = 1.0
burst = 20
max_consents = 200

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
)


@dataclass(frozen=True)
class DisputeLimits:
    """How many disputes one subject may file ([disputes] in directory.toml)."""

    per_hour: int = 5
    max_open: int = 10


@dataclass(frozen=True)
class SubjectLimits:
    """What one subject may do at the directory ([subjects] in directory.toml): signed calls
    a second and their burst, and live (neither expired nor revoked) consents held at once."""

    rate_per_s: float = 1.0
    burst: int = 20
    max_consents: int = 200


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
    max_node_answer_bytes: int = DEFAULT_MAX_NODE_ANSWER_BYTES
    max_profile_bytes: int = DEFAULT_MAX_PROFILE_BYTES
    purpose_limits: Mapping[vocab.Purpose, int] = field(default_factory=dict)
    server: ServerSettings = field(default_factory=lambda: ServerSettings(DEFAULT_LISTEN))
    public_listen: str = DEFAULT_PUBLIC_LISTEN
    # Subjects and enrollment hold no certificate: an idle connection on the public port is
    # closed after this long (the member port uses [server] idle_timeout_s).
    public_idle_timeout_s: float = 15.0
    disputes: DisputeLimits = field(default_factory=lambda: DisputeLimits())
    subjects: SubjectLimits = field(default_factory=lambda: SubjectLimits())
    cert_lifetime_s: float = MEMBER_CERT_LIFETIME_S
    key_overlap_s: float = KEY_OVERLAP_S
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)

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


def load_settings(home: Path, environ: Mapping[str, str] | None = None) -> DirectorySettings:
    """Read `home/directory.toml`, with CREDEX_DIRECTORY_<TABLE>_<KEY> environment variables
    on top; a missing home or file is a ConfigError telling what to run."""
    path = home / SETTINGS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{home} is not a directory home (no {SETTINGS_FILE}); "
            f"run `credex-directory init --home {home}`"
        )
    data = load_toml(path)
    applied = environment_overrides(data, ENV_PREFIX, SCHEMA, environ, reserved=RESERVED_ENV)
    try:
        return _settings(home, path, data)
    except ConfigError as exc:
        if not applied:
            raise
        raise ConfigError(f"{exc} (environment: {', '.join(applied)})") from None


def _settings(home: Path, path: Path, data: dict[str, Any]) -> DirectorySettings:
    table = data.get("directory", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [directory] must be a table")
    where = f"{path} [directory]"
    hosts = table.get("hosts", ["localhost", "127.0.0.1"])
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{where}: 'hosts' must be a list of host names or addresses")
    max_profile_bytes = whole(
        table, "max_profile_bytes", DEFAULT_MAX_PROFILE_BYTES, where, minimum=64 * 1024
    )
    if max_profile_bytes > PROFILE_BYTES_CEILING:
        raise ConfigError(
            f"{where}: 'max_profile_bytes' must be at most {PROFILE_BYTES_CEILING} "
            "(a profile travels as one message)"
        )
    max_node_answer_bytes = whole(
        table, "max_node_answer_bytes", DEFAULT_MAX_NODE_ANSWER_BYTES, where, minimum=4096
    )
    if max_node_answer_bytes > max_profile_bytes:
        raise ConfigError(f"{where}: 'max_node_answer_bytes' must not exceed 'max_profile_bytes'")
    return DirectorySettings(
        home=home,
        max_node_answer_bytes=max_node_answer_bytes,
        max_profile_bytes=max_profile_bytes,
        directory_id=str(table.get("id", "directory")),
        hosts=tuple(hosts),
        node_deadline_s=positive(table, "node_deadline_s", 2.0, where),
        max_request_lifetime_s=positive(table, "max_request_lifetime_s", 300.0, where),
        attestation_ttl_s=positive(table, "attestation_ttl_s", 3600.0, where),
        requester_rate_per_s=positive(table, "requester_rate_per_s", 50.0, where),
        checkpoint_interval_s=positive(table, "checkpoint_interval_s", 10.0, where),
        policy=str(table.get("policy", "")),
        requester_burst=max(1.0, positive(table, "requester_burst", 100.0, where)),
        cert_lifetime_s=bounded(
            table,
            "cert_lifetime_s",
            MEMBER_CERT_LIFETIME_S,
            MIN_CERT_LIFETIME_S,
            MAX_CERT_LIFETIME_S,
            where,
        ),
        key_overlap_s=positive(table, "key_overlap_s", KEY_OVERLAP_S, where),
        endpoints=_endpoint_policy(table, where),
        purpose_limits=_purpose_limits(data.get("purpose_limits", {}), f"{path} [purpose_limits]"),
        server=load_server(data, path, DEFAULT_LISTEN),
        public_listen=address(
            data.get("server", {}), "public_listen", DEFAULT_PUBLIC_LISTEN, f"{path} [server]"
        ),
        public_idle_timeout_s=positive(
            data.get("server", {}), "public_idle_timeout_s", 15.0, f"{path} [server]"
        ),
        disputes=_dispute_limits(data.get("disputes", {}), f"{path} [disputes]"),
        subjects=_subject_limits(data.get("subjects", {}), f"{path} [subjects]"),
    )


def _subject_limits(table: object, where: str) -> SubjectLimits:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    defaults = SubjectLimits()
    return SubjectLimits(
        rate_per_s=positive(table, "rate_per_s", defaults.rate_per_s, where),
        burst=whole(table, "burst", defaults.burst, where, minimum=1),
        max_consents=whole(table, "max_consents", defaults.max_consents, where, minimum=1),
    )


def _dispute_limits(table: object, where: str) -> DisputeLimits:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    values = {}
    for key, default in (("per_subject_per_hour", 5), ("max_open_per_subject", 10)):
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
            raise ConfigError(f"{where}: '{key}' must be a whole number from 1 to 10000")
        values[key] = value
    return DisputeLimits(
        per_hour=values["per_subject_per_hour"], max_open=values["max_open_per_subject"]
    )


def bounded(
    table: dict[str, Any], key: str, default: float, low: float, high: float, where: str
) -> float:
    value = positive(table, key, default, where)
    if not low <= value <= high:
        raise ConfigError(f"{where}: '{key}' must be between {low:g} and {high:g}")
    return value


def _endpoint_policy(table: dict[str, Any], where: str) -> EndpointPolicy:
    lists = {}
    for key in ("endpoint_networks", "endpoint_domains"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: '{key}' must be a list of strings")
        lists[key] = value
    try:
        return EndpointPolicy.parse(lists["endpoint_networks"], lists["endpoint_domains"])
    except EndpointError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
