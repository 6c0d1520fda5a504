"""SQLite through sqlite-utils: WAL, one writer per database, explicit transactions."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import sqlite_utils

log = logging.getLogger(__name__)

# credex's own state (audit log, nonces, consents, disputes) is readable by its owner only.
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
# The files SQLite keeps beside a database; the WAL holds recent writes in clear.
SIDE_FILES = ("-wal", "-shm", "-journal")


class DatabaseError(Exception):
    """A database file is missing or unusable."""


def tighten(path: Path) -> bool:
    """Make an existing file readable and writable by its owner only; says whether it was open
    to others, with a log line when it was."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not current & 0o077:
        return False
    os.chmod(path, PRIVATE_FILE)
    log.warning("tightened %s from %04o to 0600: only its owner may read it", path, current)
    return True


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (then tighten it): SQLite gives the
    -wal and -shm files it creates later the database file's own mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        tighten(path)
    else:
        os.close(fd)


def open_database(path: Path) -> sqlite_utils.Database:
    """Open (creating) a credex-owned database in WAL mode; statements commit at once unless a
    `transaction` is open. The database and its side files are private to the owner (0600),
    tightened if an older version left them readable to others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        create_private(path)
        for suffix in SIDE_FILES:
            tighten(Path(f"{path}{suffix}"))
    except OSError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc.strerror or exc}") from exc
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed write survives power loss, so nothing acknowledged is ever lost.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from exc
    return sqlite_utils.Database(conn)


READ_BUSY_TIMEOUT_MS = 250
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED: another writer holds it; it is readable


def readonly_uri(path: Path) -> str:
    """A SQLite URI opening `path` read-only, whatever characters its name holds."""
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def open_readonly(path: Path) -> sqlite_utils.Database:
    """Open someone else's database so that credex cannot change it."""
    if not path.is_file():
        raise DatabaseError(f"database {path} does not exist")
    try:
        conn = sqlite3.connect(
            readonly_uri(path),
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA query_only=ON")
        # The operator's application may be writing: wait briefly for its lock, well within
        # the directory's per-node deadline.
        conn.execute(f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path} read-only: {exc}") from exc
    return sqlite_utils.Database(conn)


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def unreadable(conn: sqlite3.Connection) -> str | None:
    """Why the database behind `conn` cannot be read right now (gone, replaced, corrupt)."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) in _BUSY_CODES:
            return None
        return str(exc)
    return None
