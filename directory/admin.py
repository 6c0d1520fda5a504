"""Operator actions on a directory home: create it, register members, import subjects."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from credex import pki, vocab
from credex.audit import AuditLog
from credex.backup import BackupManifest, write_backup
from credex.clock import system_clock
from credex.config import ConfigError, validate_member_id
from credex.db import open_database
from credex.keys import SigningKey, VerifyKey, write_private, write_public
from directory.config import DEFAULT_SETTINGS, SETTINGS_FILE, DirectorySettings, load_settings
from directory.consent_store import ConsentStore
from directory.enrollment import TokenGrant, TokenStore
from directory.locator import Locator
from directory.registry import STATUSES_BY_NAME, MemberInfo, Registry


def init_home(home: Path) -> DirectorySettings:
    """Create settings, signing key, the federation CA, the directory's TLS certificate and the
    database where missing; never overwrites a key."""
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
    if not settings.tls_key_path.exists() or pki.DIRECTORY_NAME not in pki.certificate_names(
        pki.load_cert(settings.tls_cert_path)
    ):
        ca = pki.CertificateAuthority.load(settings.ca_key_path, settings.ca_cert_path)
        tls_key = pki.new_tls_key()
        cert = ca.issue(
            pki.create_csr(tls_key, settings.directory_id),
            settings.directory_id,
            hosts=settings.hosts,
            days=pki.CA_DAYS,
            directory=True,
        )
        write_private(settings.tls_key_path, pki.key_pem(tls_key))
        write_public(settings.tls_cert_path, pki.cert_pem(cert))
    db = open_database(settings.db_path)
    Registry(db), Locator(db), ConsentStore(db), AuditLog(db, system_clock), TokenStore(db)
    db.conn.close()
    return settings


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
    if hosts is None:
        hosts = pki.DEFAULT_HOSTS if role == "node" else ()
    if pki.DIRECTORY_NAME in hosts:
        raise ConfigError(f"{pki.DIRECTORY_NAME!r} is reserved for the directory's certificate")
    if ttl_s <= 0:
        raise ConfigError("a token must be valid for a positive time")
    db = open_database(settings.db_path)
    try:
        if Registry(db).get(member_id) is not None:
            raise ConfigError(f"{member_id} is already a member")
        grant = TokenGrant(
            member_id=member_id,
            role=role,
            name=name or member_id,
            jurisdiction=jurisdiction,
            categories=tuple(vocab.category_name(vocab.parse_category(c)) for c in categories),
            hosts=tuple(hosts),
        )
        return TokenStore(db).issue(grant, system_clock() + ttl_s)
    finally:
        db.conn.close()


def set_endpoint(settings: DirectorySettings, member_id: str, endpoint: str) -> None:
    db = open_database(settings.db_path)
    try:
        Registry(db).set_endpoint(member_id, endpoint)
    except KeyError:
        raise ConfigError(f"no member {member_id!r}") from None
    finally:
        db.conn.close()


def set_member_status(settings: DirectorySettings, member_id: str, status: str) -> MemberInfo:
    """Suspend, reinstate or remove a member: the directory refuses it at once, nodes within
    their sync interval."""
    if status not in STATUSES_BY_NAME:
        raise ConfigError(f"status must be one of {', '.join(STATUSES_BY_NAME)}")
    db = open_database(settings.db_path)
    try:
        registry = Registry(db)
        try:
            registry.set_status(member_id, STATUSES_BY_NAME[status])
        except KeyError:
            raise ConfigError(f"no member {member_id!r}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        member = registry.get(member_id)
        assert member is not None
        return member
    finally:
        db.conn.close()


def list_members(settings: DirectorySettings) -> list[MemberInfo]:
    db = open_database(settings.db_path)
    try:
        return Registry(db).all()
    finally:
        db.conn.close()


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
    with `replace`, the previous subjects and locator entries go first."""
    db = open_database(settings.db_path)
    try:
        locator = Locator(db)
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
    finally:
        db.conn.close()


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
