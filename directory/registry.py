"""The member registry: nodes and requesters with their keys, categories and endpoints."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from credex import vocab
from credex.keys import VerifyKey
from credex.v1.directory_pb2 import MemberRole

ROLE_NAMES = {MemberRole.MEMBER_ROLE_NODE: "node", MemberRole.MEMBER_ROLE_REQUESTER: "requester"}
ROLES_BY_NAME = {v: k for k, v in ROLE_NAMES.items()}


@dataclass(frozen=True)
class MemberInfo:
    member_id: str
    role: MemberRole.ValueType
    name: str
    jurisdiction: str
    categories: tuple[vocab.Category, ...]
    key: VerifyKey
    endpoint: str = ""

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[self.role]


class Registry:
    """Members in the directory database, cached in memory and reloaded when the file changes."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self._conn = db.conn
        self._conn.execute(
            """CREATE TABLE IF NOT EXISTS members (
                member_id TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                name TEXT NOT NULL,
                jurisdiction TEXT NOT NULL,
                categories TEXT NOT NULL,
                public_key BLOB NOT NULL,
                key_id TEXT NOT NULL UNIQUE,
                endpoint TEXT NOT NULL
            )"""
        )
        self._version = -1
        self._by_id: dict[str, MemberInfo] = {}
        self._by_key: dict[str, MemberInfo] = {}

    def _fresh(self) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return
        members = [_from_row(row) for row in self._conn.execute("SELECT * FROM members")]
        self._by_id = {m.member_id: m for m in members}
        self._by_key = {m.key.key_id: m for m in members}
        self._version = version

    def put(self, member: MemberInfo) -> None:
        """Add a member or update its entry; a key already held by another member is refused
        (never silently taken over)."""
        try:
            self._conn.execute(
                "INSERT INTO members VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (member_id) DO "
                "UPDATE SET role = excluded.role, name = excluded.name, "
                "jurisdiction = excluded.jurisdiction, categories = excluded.categories, "
                "public_key = excluded.public_key, key_id = excluded.key_id, "
                "endpoint = excluded.endpoint",
                (
                    member.member_id,
                    member.role_name,
                    member.name,
                    member.jurisdiction,
                    json.dumps(vocab.category_names(member.categories)),
                    member.key.raw,
                    member.key.key_id,
                    member.endpoint,
                ),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"another member already uses key {member.key.key_id}") from None
        self._version = -1

    def set_endpoint(self, member_id: str, endpoint: str) -> None:
        cur = self._conn.execute(
            "UPDATE members SET endpoint = ? WHERE member_id = ?", (endpoint, member_id)
        )
        if cur.rowcount != 1:
            raise KeyError(member_id)
        self._version = -1

    def get(self, member_id: str) -> MemberInfo | None:
        self._fresh()
        return self._by_id.get(member_id)

    def by_key_id(self, key_id: str) -> MemberInfo | None:
        self._fresh()
        return self._by_key.get(key_id)

    def all(self) -> list[MemberInfo]:
        self._fresh()
        return sorted(self._by_id.values(), key=lambda m: (m.role, m.member_id))

    def nodes(self) -> Iterable[MemberInfo]:
        return (m for m in self.all() if m.role == MemberRole.MEMBER_ROLE_NODE)


def _from_row(row: tuple[object, ...]) -> MemberInfo:
    member_id, role, name, jurisdiction, categories, public_key, _key_id, endpoint = row
    return MemberInfo(
        member_id=str(member_id),
        role=ROLES_BY_NAME[str(role)],
        name=str(name),
        jurisdiction=str(jurisdiction),
        categories=tuple(vocab.parse_category(c) for c in json.loads(str(categories))),
        key=VerifyKey(public_key),  # type: ignore[arg-type]
        endpoint=str(endpoint),
    )
