"""Operator actions on a directory home: create it, register members, import subjects."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from credex import vocab
from credex.audit import AuditLog
from credex.clock import system_clock
from credex.config import ConfigError
from credex.db import open_database
from credex.keys import SigningKey, VerifyKey
from directory.config import DEFAULT_SETTINGS, SETTINGS_FILE, DirectorySettings, load_settings
from directory.consent_store import ConsentStore
from directory.locator import Locator
from directory.registry import ROLES_BY_NAME, MemberInfo, Registry


def init_home(home: Path) -> DirectorySettings:
    """Create settings, signing key and database where missing; never overwrites a key."""
    home.mkdir(parents=True, exist_ok=True)
    settings_path = home / SETTINGS_FILE
    if not settings_path.exists():
        settings_path.write_text(DEFAULT_SETTINGS)
    settings = load_settings(home)
    if not settings.key_path.exists():
        SigningKey.generate().save(settings.key_path)
    db = open_database(settings.db_path)
    Registry(db), Locator(db), ConsentStore(db), AuditLog(db, system_clock)
    db.conn.close()
    return settings


def add_member(
    settings: DirectorySettings,
    *,
    member_id: str,
    role: str,
    public_key: VerifyKey,
    name: str = "",
    jurisdiction: str = "CN",
    categories: Iterable[str] = (),
    endpoint: str = "",
) -> MemberInfo:
    if role not in ROLES_BY_NAME:
        raise ConfigError(f"role must be one of {', '.join(ROLES_BY_NAME)}, not {role!r}")
    cats = tuple(sorted({vocab.parse_category(c) for c in categories}))
    if role == "node" and not cats:
        raise ConfigError("a node member needs at least one category")
    member = MemberInfo(
        member_id=member_id,
        role=ROLES_BY_NAME[role],
        name=name or member_id,
        jurisdiction=jurisdiction,
        categories=cats,
        key=public_key,
        endpoint=endpoint,
    )
    db = open_database(settings.db_path)
    try:
        Registry(db).put(member)
    finally:
        db.conn.close()
    return member


def set_endpoint(settings: DirectorySettings, member_id: str, endpoint: str) -> None:
    db = open_database(settings.db_path)
    try:
        Registry(db).set_endpoint(member_id, endpoint)
    except KeyError:
        raise ConfigError(f"no member {member_id!r}") from None
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
    settings: DirectorySettings, subjects_csv: Path, locator_csv: Path | None = None
) -> tuple[int, int]:
    """Load subjects (subject_id, public_key hex, region) and locator rows from CSV files."""
    db = open_database(settings.db_path)
    try:
        locator = Locator(db)

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
