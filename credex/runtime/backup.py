"""Backups a server can be restored from elsewhere: its config, keys, certificates and a
consistent copy of each database, taken while it serves (SQLite's online backup API, so a
live WAL is never copied half-written)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from credex.protocol.config import ConfigError
from credex.runtime.db import PRIVATE_FILE, PRIVATE_FOLDER, create_private, readonly_uri

MANIFEST = "backup.json"


@dataclass(frozen=True)
class BackupManifest:
    owner: str
    taken_at: str
    files: dict[str, str]  # path inside the backup → SHA-256


def copy_database(source: Path, target: Path) -> None:
    """A consistent snapshot of the live database `source` written to `target`."""
    try:
        src = sqlite3.connect(readonly_uri(source), uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {source}: {exc}") from None
    create_private(target)
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
    `needed` (keys, certificates) must lie inside `base`. Files are matched by what they
    really are, so a link to an excluded or a database file is treated as that file; linked
    folders are not followed. Writes a manifest of SHA-256s. A backup holds keys and personal
    data: its folders are 0700 and its files 0600, whatever the originals were."""
    base = Path(os.path.abspath(base))
    dest = Path(os.path.abspath(dest))
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} is not empty: a backup goes to a new folder")
    if dest.resolve().is_relative_to(base.resolve()):
        raise ConfigError(f"{dest} is inside {base}: put the backup somewhere else")
    for path in (*databases, *needed):
        if not Path(os.path.abspath(path)).is_relative_to(base):
            raise ConfigError(
                f"{path} is outside {base}: keep the server's files in its folder to back it up"
            )
    dbs = {path.resolve() for path in databases}
    skipped = {path.resolve() for path in exclude}
    journals = {
        Path(f"{db}{suffix}") for db in (*dbs, *skipped) for suffix in ("-wal", "-shm", "-journal")
    }
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, PRIVATE_FOLDER)
    copied: dict[str, str] = {}
    found: set[Path] = set()
    for path in sorted(base.rglob("*")):
        real = path.resolve()
        if not path.is_file() or real in skipped or real in journals:
            continue
        target = dest / path.relative_to(base)
        _private_folders(dest, target.parent)
        if real in dbs:
            copy_database(real, target)
            found.add(real)
        else:
            shutil.copy2(real, target)
            os.chmod(target, PRIVATE_FILE)
        copied[str(target.relative_to(dest))] = _sha256(target)
    missing = sorted(dbs - found)
    if missing:
        raise ConfigError(f"database {missing[0]} does not exist")
    manifest = BackupManifest(owner, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), copied)
    create_private(dest / MANIFEST)
    (dest / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n")
    return manifest


def _private_folders(dest: Path, folder: Path) -> None:
    """Create `folder` and every folder between it and `dest`, each 0700."""
    for part in reversed([folder, *folder.parents]):
        if part.is_relative_to(dest) and part != dest and not part.is_dir():
            part.mkdir(mode=PRIVATE_FOLDER)
            os.chmod(part, PRIVATE_FOLDER)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
