"""Backups a server can be restored from elsewhere: its config, keys, certificates and a
consistent copy of each database, taken while it serves (SQLite's online backup API, so a
live WAL is never copied half-written)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from credex.config import ConfigError

MANIFEST = "backup.json"


@dataclass(frozen=True)
class BackupManifest:
    owner: str
    taken_at: str
    files: dict[str, str]  # path inside the backup → SHA-256


def copy_database(source: Path, target: Path) -> None:
    """A consistent snapshot of the live database `source` written to `target`."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {source}: {exc}") from None
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot back up {source}: {exc}") from None
    finally:
        dst.close()
        src.close()


def write_backup(
    base: Path,
    dest: Path,
    *,
    databases: Iterable[Path],
    needed: Iterable[Path] = (),
    exclude: Iterable[Path] = (),
    owner: str,
) -> BackupManifest:
    """Copy the server's folder `base` to `dest` (new or empty): `databases` through the
    backup API, every other file as it is (journals aside), `exclude` left out. Each file in
    `needed` (keys, certificates) must lie inside `base`. Writes a manifest of SHA-256s."""
    base = base.resolve()
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} is not empty: a backup goes to a new folder")
    if dest.is_relative_to(base):
        raise ConfigError(f"{dest} is inside {base}: put the backup somewhere else")
    dbs = {path.resolve() for path in databases}
    skipped = {path.resolve() for path in exclude}
    for path in (*dbs, *(p.resolve() for p in needed)):
        if not path.is_relative_to(base):
            raise ConfigError(
                f"{path} is outside {base}: keep the server's files in its folder to back it up"
            )
    journals = {
        f"{db}{suffix}" for db in (*dbs, *skipped) for suffix in ("-wal", "-shm", "-journal")
    }
    dest.mkdir(parents=True, exist_ok=True)
    copied: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        if not path.is_file() or path in skipped or str(path) in journals:
            continue
        target = dest / path.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path in dbs:
            copy_database(path, target)
        else:
            shutil.copy2(path, target)
        copied[str(target.relative_to(dest))] = _sha256(target)
    missing = [db for db in dbs if str(db.relative_to(base)) not in copied]
    if missing:
        raise ConfigError(f"database {missing[0]} does not exist")
    manifest = BackupManifest(owner, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), copied)
    (dest / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n")
    return manifest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
