"""The directory's database: its schema, version by version."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from credex.protocol.pki import DEFAULT_HOSTS
from credex.runtime.schema import AUDIT_LOG, Migration, runtime_tables
from credex.runtime.storage import SqliteStorage

PROFILE_REQUESTS = "profile_requests"


def _v1(conn: sqlite3.Connection) -> None:
    """The directory as of numbered migrations, and the upgrades of older databases."""
    runtime_tables(conn, nonce_tables=("nonces", "subject_nonces"))
    _members(conn)
    _subjects(conn)
    _consents(conn)
    _certificates(conn)
    # one-time enrollment tokens
    conn.execute(
        """CREATE TABLE IF NOT EXISTS enrollment_tokens (
            token_hash TEXT PRIMARY KEY,
            grant_json TEXT NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
        )"""
    )
    # monthly uses per requester, subject and purpose
    conn.execute(
        """CREATE TABLE IF NOT EXISTS purpose_use (
            requester_id TEXT NOT NULL,
            subject_id TEXT NOT NULL,
            purpose INTEGER NOT NULL,
            month TEXT NOT NULL,
            uses INTEGER NOT NULL,
            PRIMARY KEY (requester_id, subject_id, purpose, month)
        ) WITHOUT ROWID"""
    )
    _request_claims(conn)
    _disputes(conn)


def _members(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS members (
            member_id TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            name TEXT NOT NULL,
            jurisdiction TEXT NOT NULL,
            categories TEXT NOT NULL,
            public_key BLOB NOT NULL,
            key_id TEXT NOT NULL UNIQUE,
            endpoint TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'active'
        )"""
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(members)")}
    if "status" not in columns:  # a database from before member status existed
        conn.execute("ALTER TABLE members ADD COLUMN status TEXT NOT NULL DEFAULT 'active'")
    if "hosts" not in columns:  # a database from before granted hosts were kept
        conn.execute("ALTER TABLE members ADD COLUMN hosts TEXT")
        _fill_granted_hosts(conn)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS registry_version "
        "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
    )
    conn.execute("INSERT OR IGNORE INTO registry_version VALUES (1, 1)")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS retired_keys (
            key_id TEXT PRIMARY KEY,
            member_id TEXT NOT NULL,
            public_key BLOB NOT NULL,
            valid_until REAL NOT NULL
        )"""
    )


def _fill_granted_hosts(conn: sqlite3.Connection) -> None:
    """Hosts for members enrolled before they were kept: those of the token each member
    redeemed, else the defaults tokens had (a node: localhost, 127.0.0.1)."""
    granted: dict[str, list[str]] = {}
    has_tokens = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'enrollment_tokens'"
    ).fetchone()
    if has_tokens:
        for (grant_json,) in conn.execute(
            "SELECT grant_json FROM enrollment_tokens WHERE used_at IS NOT NULL"
        ):
            grant = json.loads(grant_json)
            granted[str(grant.get("member_id"))] = list(grant.get("hosts", []))
    for member_id, role in conn.execute(
        "SELECT member_id, role FROM members WHERE hosts IS NULL"
    ).fetchall():
        hosts = granted.get(member_id, list(DEFAULT_HOSTS) if role == "node" else [])
        conn.execute(
            "UPDATE members SET hosts = ? WHERE member_id = ?", (json.dumps(hosts), member_id)
        )


def _subjects(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS subjects (
            subject_id TEXT PRIMARY KEY,
            public_key BLOB NOT NULL,
            region TEXT NOT NULL DEFAULT ''
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS locator (
            subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
            node_id TEXT NOT NULL,
            local_id TEXT NOT NULL,
            node_key BLOB,
            PRIMARY KEY (subject_id, node_id)
        ) WITHOUT ROWID"""
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(locator)")}
    if "node_key" not in columns:  # a database from before per-node keys
        conn.execute("ALTER TABLE locator ADD COLUMN node_key BLOB")
    conn.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS locator_node_key ON locator (node_key) "
        "WHERE node_key IS NOT NULL"
    )


def _consents(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consents (
            consent_id TEXT PRIMARY KEY,
            subject_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            signed BLOB NOT NULL,
            status TEXT NOT NULL,
            uses INTEGER NOT NULL DEFAULT 0,
            max_uses INTEGER NOT NULL,
            not_after REAL NOT NULL,
            granted_at REAL NOT NULL,
            changed_at REAL NOT NULL,
            change_signed_at REAL NOT NULL DEFAULT 0
        )"""
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(consents)")}
    if "change_signed_at" not in columns:  # a database from before ordered changes
        conn.execute("ALTER TABLE consents ADD COLUMN change_signed_at REAL NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS consents_subject ON consents (subject_id)")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consent_tickets (
            consent_id TEXT NOT NULL REFERENCES consents(consent_id),
            node_id TEXT NOT NULL,
            ticket_id TEXT NOT NULL UNIQUE,
            signed BLOB NOT NULL,
            PRIMARY KEY (consent_id, node_id)
        ) WITHOUT ROWID"""
    )
    # Each node's own feed, numbered from 1 per node: no sequence number is shared by two
    # nodes' feeds. (The single feed of consent ids before tickets is gone with them.)
    conn.execute("DROP TABLE IF EXISTS consent_changes")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS ticket_changes (
            node_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ticket_id TEXT NOT NULL,
            status TEXT NOT NULL,
            changed_at REAL NOT NULL,
            PRIMARY KEY (node_id, seq)
        ) WITHOUT ROWID"""
    )


def _certificates(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS certificates (
            serial TEXT PRIMARY KEY,
            member_id TEXT NOT NULL,
            issued_at REAL NOT NULL,
            not_after REAL NOT NULL,
            revoked_at REAL,
            reason TEXT NOT NULL DEFAULT ''
        )"""
    )
    conn.execute("CREATE INDEX IF NOT EXISTS certificates_member ON certificates (member_id)")
    # answers to Enroll, RotateKey and RenewCertificate, for a request sent again
    conn.execute(
        """CREATE TABLE IF NOT EXISTS identity_replies (
            digest TEXT PRIMARY KEY,
            member_id TEXT NOT NULL,
            response BLOB NOT NULL,
            at REAL NOT NULL
        )"""
    )


def _request_claims(conn: sqlite3.Connection) -> None:
    existed = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (PROFILE_REQUESTS,)
    ).fetchone()
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {PROFILE_REQUESTS} (
            request_id TEXT PRIMARY KEY,
            requester_id TEXT NOT NULL,
            claimed_at REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    if not existed:  # a directory from before claims: the ids it served stay taken
        conn.execute(
            f"INSERT OR IGNORE INTO {PROFILE_REQUESTS} SELECT request_id, actor, at "
            f"FROM {AUDIT_LOG} WHERE action = 'profile' AND outcome = 'assembled'"
        )


def _disputes(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS disputes (
            dispute_id TEXT PRIMARY KEY,
            subject_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            record_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            status TEXT NOT NULL,
            resolution TEXT NOT NULL DEFAULT '',
            filed_at REAL NOT NULL,
            resolved_at REAL
        )"""
    )
    if "category" not in {row[1] for row in conn.execute("PRAGMA table_info(disputes)")}:
        conn.execute("ALTER TABLE disputes ADD COLUMN category INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS disputes_subject ON disputes (subject_id)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS dispute_attempts (subject_id TEXT NOT NULL, at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS dispute_attempts_subject ON dispute_attempts (subject_id, at)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS dispute_attempts_at ON dispute_attempts (at)")


MIGRATIONS = [Migration(1, "the directory as of numbered migrations", _v1)]


def open_directory_storage(path: Path, *, serving: bool = False) -> SqliteStorage:
    """The directory database, its schema brought up to date (`serving`: see SqliteStorage)."""
    return SqliteStorage.open(path, MIGRATIONS, what="directory database", serving=serving)
