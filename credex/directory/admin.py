"""Operator actions on a directory home: create it, register members, import subjects."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from credex.directory.certificates import CertificateLog
from credex.directory.config import (
    DEFAULT_SETTINGS,
    SETTINGS_FILE,
    DirectorySettings,
    load_settings,
)
from credex.directory.enrollment import TokenGrant, TokenStore
from credex.directory.locator import Locator
from credex.directory.registry import STATUSES_BY_NAME, MemberInfo, Registry
from credex.directory.schema import open_directory_storage
from credex.protocol import pki, vocab
from credex.protocol.clock import system_clock
from credex.protocol.config import ConfigError, validate_member_id
from credex.protocol.endpoints import EndpointError
from credex.protocol.identity import certificate_identity, is_directory_name, serial_hex
from credex.protocol.keys import SigningKey, VerifyKey, write_private, write_public
from credex.runtime.backup import BackupManifest, write_backup


def init_home(home: Path) -> DirectorySettings:
    """Create settings, signing key, the federation CA and the database where missing (never
    overwriting a signing or CA key), and the directory's TLS certificate where missing or of
    an older form."""
    home.mkdir(parents=True, exist_ok=True)
    settings_path = home / SETTINGS_FILE
    if not settings_path.exists():
        settings_path.write_text(DEFAULT_SETTINGS)
    settings = load_settings(home)
    if not settings.key_path.exists():
        SigningKey.generate().save(settings.key_path)
    if not settings.ca_key_path.exists():
        ca_key, ca_cert = pki.create_ca()
        write_private(settings.ca_key_path, pki.key_pem(ca_key))
        write_public(settings.ca_cert_path, pki.cert_pem(ca_cert))
    open_directory_storage(settings.db_path).close()  # its schema, before it first serves
    ensure_directory_certificate(settings)
    return settings


def ensure_directory_certificate(settings: DirectorySettings) -> bool:
    """Issue the directory's own TLS certificate if it is missing or not of the current form
    (the reserved name DIRECTORY_NAME and the identity `credex:directory:<id>`); the one it
    replaces is revoked. Returns whether a certificate was issued."""
    current = pki.load_cert(settings.tls_cert_path) if settings.tls_cert_path.exists() else None
    if current is not None and settings.tls_key_path.exists():
        identity = certificate_identity(current)
        if (
            identity is not None
            and identity.directory
            and identity.member_id == settings.directory_id
            and pki.DIRECTORY_NAME in pki.certificate_names(current)
        ):
            return False
    ca = pki.CertificateAuthority.load(settings.ca_key_path, settings.ca_cert_path)
    tls_key = pki.new_tls_key()
    cert = ca.issue(
        pki.create_csr(tls_key, settings.directory_id),
        settings.directory_id,
        hosts=settings.hosts,
        lifetime_s=pki.CA_DAYS * 86_400.0,
        directory=True,
    )
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        certificates = CertificateLog(conn)
        now = system_clock()
        certificates.record(cert, settings.directory_id, now)
        if current is not None:
            certificates.revoke(
                settings.directory_id,
                at=now,
                reason="replaced",
                now=now,
                serial=serial_hex(current),
                not_after=current.not_valid_after_utc.timestamp(),
            )
            Registry(conn).touch()
    write_private(settings.tls_key_path, pki.key_pem(tls_key))
    write_public(settings.tls_cert_path, pki.cert_pem(cert))
    return True


def reserved_name_holders(settings: DirectorySettings) -> list[str]:
    """Members that older versions enrolled under a spelling of the directory's TLS name (as
    their id, or a node's host name). Their older certificates could pose as the directory
    until they expire; if there are any, the federation needs a new CA."""
    with open_directory_storage(settings.db_path) as storage:
        conn = storage.connection
        found = {m.member_id for m in Registry(conn).all() if is_directory_name(m.member_id)}
        for (grant_json,) in conn.execute(
            "SELECT grant_json FROM enrollment_tokens WHERE used_at IS NOT NULL"
        ):
            grant = json.loads(grant_json)
            if any(is_directory_name(str(h)) for h in grant.get("hosts", [])):
                found.add(str(grant.get("member_id")))
        return sorted(found)


MAX_NAME_CHARS = 200


def create_enrollment_token(
    settings: DirectorySettings,
    *,
    member_id: str,
    role: str,
    name: str = "",
    jurisdiction: str = "CN",
    categories: Iterable[str] = (),
    hosts: Iterable[str] | None = None,
    ttl_s: float = 24 * 3600.0,
) -> str:
    """A one-time token the member redeems with `credex-node init` / `credex init`. A node's
    certificate names `hosts` (default localhost, 127.0.0.1); a requester's names none: it
    only ever connects out."""
    validate_member_id(member_id, "member id")
    if len(name) > MAX_NAME_CHARS or len(jurisdiction) > 32:
        raise ConfigError(f"name at most {MAX_NAME_CHARS} characters, jurisdiction at most 32")
    if member_id == settings.directory_id:
        raise ConfigError(f"{member_id!r} is the directory's own id")
    if is_directory_name(member_id):
        raise ConfigError(f"{member_id!r} is reserved for the directory's certificate")
    if hosts is None:
        hosts = pki.DEFAULT_HOSTS if role == "node" else ()
    try:
        hosts = pki.check_hosts(hosts)
    except pki.PkiError as exc:
        raise ConfigError(str(exc)) from None
    if ttl_s <= 0:
        raise ConfigError("a token must be valid for a positive time")
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        if Registry(conn).get(member_id) is not None:
            raise ConfigError(f"{member_id} is already a member")
        grant = TokenGrant(
            member_id=member_id,
            role=role,
            name=name or member_id,
            jurisdiction=jurisdiction,
            categories=tuple(vocab.category_name(vocab.parse_category(c)) for c in categories),
            hosts=tuple(hosts),
        )
        return TokenStore(conn).issue(grant, system_clock() + ttl_s)


def reset_member_key(
    settings: DirectorySettings, member_id: str, *, ttl_s: float = 24 * 3600.0
) -> str:
    """For a member whose keys are lost or stolen (or whose enrollment reply never arrived):
    its signing key stops verifying and its certificates are refused at once, and the
    one-time token returned lets it enroll again under the same id, role, categories and host
    names with keys made anew (`credex init --reset` / `credex-node init --reset`)."""
    if ttl_s <= 0:
        raise ConfigError("a token must be valid for a positive time")
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        registry = Registry(conn)
        member = registry.get(member_id)
        if member is None:
            raise ConfigError(f"no member {member_id!r}")
        if member.status_name == "removed":
            raise ConfigError(f"{member_id} was removed; removal is final")
        now = system_clock()
        # the key in its place is one nobody holds, until the member enrolls again
        registry.rotate(member_id, SigningKey.generate().public, now)
        CertificateLog(conn).revoke(member_id, at=now, reason="reset", now=now)
        grant = TokenGrant(
            member_id=member_id,
            role=member.role_name,
            name=member.name,
            jurisdiction=member.jurisdiction,
            categories=tuple(vocab.category_names(member.categories)),
            hosts=member.hosts,
            reset=True,
        )
        return TokenStore(conn).issue(grant, now + ttl_s)


def set_endpoint(settings: DirectorySettings, member_id: str, endpoint: str) -> None:
    """Where a node is reached ("" for nowhere); only an endpoint the directory may dial."""
    if endpoint:
        try:
            settings.endpoints.check(endpoint)
        except EndpointError as exc:
            raise ConfigError(str(exc)) from None
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        try:
            Registry(conn).set_endpoint(member_id, endpoint)
        except KeyError:
            raise ConfigError(f"no member {member_id!r}") from None


def set_member_status(settings: DirectorySettings, member_id: str, status: str) -> MemberInfo:
    """Suspend, reinstate or remove a member: the directory refuses it at once, nodes within
    their sync interval."""
    if status not in STATUSES_BY_NAME:
        raise ConfigError(f"status must be one of {', '.join(STATUSES_BY_NAME)}")
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        registry = Registry(conn)
        try:
            registry.set_status(member_id, STATUSES_BY_NAME[status])
        except KeyError:
            raise ConfigError(f"no member {member_id!r}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        member = registry.get(member_id)
        assert member is not None
        return member


def list_members(settings: DirectorySettings) -> list[MemberInfo]:
    with open_directory_storage(settings.db_path) as storage:
        return Registry(storage.connection).all()


def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
            for line, row in enumerate(reader, 2):
                if any(not row.get(c) for c in columns):
                    raise ConfigError(f"{path}:{line}: empty {', '.join(columns)} value")
                yield row
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None


def import_subjects(
    settings: DirectorySettings,
    subjects_csv: Path,
    locator_csv: Path | None = None,
    *,
    replace: bool = False,
) -> tuple[int, int]:
    """Load subjects (subject_id, public_key hex, region) and locator rows from CSV files;
    with `replace`, the previous subjects and locator entries go first. One unit of work:
    a file with a bad row changes nothing."""
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        locator = Locator(conn)
        if replace:
            locator.clear()

        def subjects() -> Iterator[tuple[str, VerifyKey, str]]:
            for row in _csv_rows(subjects_csv, ("subject_id", "public_key")):
                try:
                    key = VerifyKey.from_hex(row["public_key"])
                except ValueError as exc:
                    raise ConfigError(
                        f"{subjects_csv}: subject {row['subject_id']}: {exc}"
                    ) from None
                yield row["subject_id"], key, row.get("region", "")

        n_subjects = locator.add_subjects(subjects())
        n_locations = 0
        if locator_csv is not None:
            n_locations = locator.add_locations(
                (r["subject_id"], r["node_id"], r["local_id"])
                for r in _csv_rows(locator_csv, ("subject_id", "node_id", "local_id"))
            )
        return n_subjects, n_locations


def backup_directory(settings: DirectorySettings, dest: Path) -> BackupManifest:
    """Everything needed to run this directory elsewhere, taken while it serves: its home
    with settings, keys, the CA, certificates and a consistent copy of its database."""
    return write_backup(
        settings.home,
        dest,
        databases=[settings.db_path],
        needed=[settings.key_path, settings.ca_key_path, settings.tls_key_path],
        owner=settings.directory_id,
    )
