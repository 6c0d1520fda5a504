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
    at_least,
    burst,
    environment_overrides,
    example_settings,
    load_toml,
    positive,
    read_settings,
    resolve,
    setting,
    settings_keys,
    text,
)
from credex.protocol.endpoints import EndpointError, EndpointPolicy
from credex.protocol.pki import MEMBER_CERT_LIFETIME_S
from credex.runtime.settings import ServerSettings, load_server

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
PURPOSE_LIMITS: dict[str, int] = {
    "loan-application": 30,
    "school-enrollment": 30,
    "employment-screening": 30,
    "promotion": 30,
    "public-service": 60,
    "research": 1000,
    "subject-access": 1000,
}


def _hosts(
    table: dict[str, Any], key: str, default: tuple[str, ...], where: str
) -> tuple[str, ...]:
    hosts = table.get(key, list(default))
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{where}: '{key}' must be a list of host names or addresses")
    return tuple(hosts)


def _strings(
    table: dict[str, Any], key: str, default: tuple[str, ...], where: str
) -> tuple[str, ...]:
    value = table.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: '{key}' must be a list of strings")
    return tuple(value)


def _cert_lifetime(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = positive(table, key, default, where)
    if not MIN_CERT_LIFETIME_S <= value <= MAX_CERT_LIFETIME_S:
        raise ConfigError(
            f"{where}: '{key}' must be between {MIN_CERT_LIFETIME_S:g} and {MAX_CERT_LIFETIME_S:g}"
        )
    return value


def _per_subject(table: dict[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
        raise ConfigError(f"{where}: '{key}' must be a whole number from 1 to 10000")
    return value


@dataclass(frozen=True)
class DirectoryServerSettings(ServerSettings):
    """The directory's [server] table: `listen` is the member port (mutual TLS: requesters and
    nodes), `public_listen` the public port (TLS: subjects and enrollment)."""

    public_listen: str = setting(
        DEFAULT_PUBLIC_LISTEN, address, "Subjects and enrollment, over TLS: the public port."
    )
    public_idle_timeout_s: float = setting(
        15.0,
        positive,
        "Subjects and enrollment hold no certificate: an idle connection on the public port "
        "is closed after this long.",
    )


@dataclass(frozen=True)
class DisputeLimits:
    """How many disputes one subject may file ([disputes] in directory.toml)."""

    per_hour: int = setting(
        5,
        _per_subject,
        "Disputes one subject may file in any hour (refused ones count: each makes a node read "
        "its records), and how many of a subject's disputes may wait for a node's decision at "
        "once.",
        key="per_subject_per_hour",
    )
    max_open: int = setting(10, _per_subject, key="max_open_per_subject")


@dataclass(frozen=True)
class SubjectLimits:
    """What one subject may do at the directory ([subjects] in directory.toml)."""

    rate_per_s: float = setting(
        1.0,
        positive,
        "Calls each subject may make (every call signed by the subject: grants, pauses, "
        "revocations, lists, access logs, disputes), a second on average with a burst they may "
        "save up; and how many consents one subject may hold that are neither expired nor "
        "revoked.",
    )
    burst: int = setting(20, at_least(1))
    max_consents: int = setting(200, at_least(1))


@dataclass(frozen=True)
class DirectorySettings:
    """directory.toml. Each setting is declared once (credex.protocol.config.setting): the
    parser, the keys environment variables may set and the file `init` writes come from it."""

    home: Path
    directory_id: str = setting(
        "directory",
        text,
        "The directory's own id: in its certificate, its signatures and every member's config.",
        key="id",
    )
    hosts: tuple[str, ...] = setting(
        ("localhost", "127.0.0.1"),
        _hosts,
        "Host names and addresses the directory's TLS certificate is valid for.",
    )
    node_deadline_s: float = setting(
        2.0,
        positive,
        "Per-node deadline for one query, in seconds: a slow or dead node costs at most this.",
    )
    max_request_lifetime_s: float = setting(
        300.0, positive, "Longest validity window accepted on a signed profile request, in seconds."
    )
    attestation_ttl_s: float = setting(
        3600.0, positive, "How long a signed subject attestation stays valid, in seconds."
    )
    policy: str = setting(
        "",
        text,
        "The scoring policy file (relative to this folder); empty: the shipped national baseline.",
    )
    checkpoint_interval_s: float = setting(
        10.0,
        positive,
        "How often the directory signs a checkpoint of its audit log (and always when it stops).",
    )
    requester_rate_per_s: float = setting(
        50.0,
        positive,
        "Profile requests a second each requester may send, and the burst it may save up.",
    )
    requester_burst: float = setting(100.0, burst)
    max_node_answer_bytes: int = setting(
        DEFAULT_MAX_NODE_ANSWER_BYTES,
        at_least(4096),
        "The most one node's signed answer may take of a profile (bytes): a larger one is "
        "marked TOO_LARGE and not delivered. And the most all answers of one profile may take "
        "together.",
    )
    max_profile_bytes: int = setting(DEFAULT_MAX_PROFILE_BYTES, at_least(64 * 1024))
    cert_lifetime_s: float = setting(
        MEMBER_CERT_LIFETIME_S,
        _cert_lifetime,
        "How long a member certificate is valid, in seconds; running members renew theirs "
        "with their signing key well before it ends (nodes by themselves, requesters when they "
        "next run).",
    )
    key_overlap_s: float = setting(
        KEY_OVERLAP_S,
        positive,
        "How long a rotated-away signing key, and the certificate that went with it, keep working.",
    )
    endpoint_networks: tuple[str, ...] = setting(
        (),
        _strings,
        "Where nodes may be reached: announced endpoints are host:port with a DNS name or an "
        "IP address, never link-local, unspecified or multicast. Non-empty lists allow only "
        'addresses in these networks (e.g. ["10.20.0.0/16"]) and names in these domains (e.g. '
        '["nodes.example"]); with networks but no domains, names are refused.',
    )
    endpoint_domains: tuple[str, ...] = setting((), _strings)
    purpose_limits: Mapping[vocab.Purpose, int] = field(default_factory=dict)
    server: DirectoryServerSettings = field(
        default_factory=lambda: DirectoryServerSettings(DEFAULT_LISTEN)
    )
    disputes: DisputeLimits = field(default_factory=DisputeLimits)
    subjects: SubjectLimits = field(default_factory=SubjectLimits)

    @property
    def endpoints(self) -> EndpointPolicy:
        """Where nodes may be reached (checked when the settings are read)."""
        return EndpointPolicy.parse(list(self.endpoint_networks), list(self.endpoint_domains))

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


# The settings directory.toml (and CREDEX_DIRECTORY_<TABLE>_<KEY> variables) may give.
SCHEMA: dict[str, frozenset[str]] = {
    "directory": settings_keys(DirectorySettings),
    "server": settings_keys(DirectoryServerSettings),
    "purpose_limits": frozenset(vocab.purpose_name(p) for p in vocab.ALL_PURPOSES),
    "disputes": settings_keys(DisputeLimits),
    "subjects": settings_keys(SubjectLimits),
}


def settings_file(
    directory: Mapping[str, Any] | None = None, purpose_limits: Mapping[str, int] | None = None
) -> str:
    """The commented directory.toml `init` writes: every setting at its default, or at the
    value `directory` gives for it, and the monthly purpose limits."""
    limits = {**PURPOSE_LIMITS, **(purpose_limits or {})}
    return (
        "# credex directory settings\n[directory]\n"
        + example_settings(DirectorySettings, directory)
        + "\n[server]\n"
        + example_settings(DirectoryServerSettings, {"listen": DEFAULT_LISTEN})
        + "\n[disputes]\n"
        + example_settings(DisputeLimits)
        + "\n[subjects]\n"
        + example_settings(SubjectLimits)
        + "\n# Profiles a requester may obtain about one subject for one purpose per calendar"
        " month (UTC).\n[purpose_limits]\n"
        + "".join(f"{name} = {value}\n" for name, value in limits.items())
    )


DEFAULT_SETTINGS = settings_file()


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
    where = f"{path} [directory]"
    disputes = read_settings(DisputeLimits, data.get("disputes", {}), f"{path} [disputes]")
    subjects = read_settings(SubjectLimits, data.get("subjects", {}), f"{path} [subjects]")
    settings = DirectorySettings(
        home=home,
        **read_settings(DirectorySettings, data.get("directory", {}), where),
        purpose_limits=_purpose_limits(data.get("purpose_limits", {}), f"{path} [purpose_limits]"),
        server=load_server(DirectoryServerSettings, data, path, DEFAULT_LISTEN),
        disputes=DisputeLimits(**disputes),
        subjects=SubjectLimits(**subjects),
    )
    if settings.max_profile_bytes > PROFILE_BYTES_CEILING:
        raise ConfigError(
            f"{where}: 'max_profile_bytes' must be at most {PROFILE_BYTES_CEILING} "
            "(a profile travels as one message)"
        )
    if settings.max_node_answer_bytes > settings.max_profile_bytes:
        raise ConfigError(f"{where}: 'max_node_answer_bytes' must not exceed 'max_profile_bytes'")
    try:
        settings.endpoints  # noqa: B018 - parsed here, so that a bad network fails at load
    except EndpointError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return settings


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
