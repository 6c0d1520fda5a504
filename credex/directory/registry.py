"""The member registry: nodes and requesters with their keys, categories, endpoints and
status, and a version number that moves with every change (for the signed snapshot)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from credex.protocol import vocab
from credex.protocol.clock import to_timestamp
from credex.protocol.key_history import KeyHistory, KeyPeriod
from credex.protocol.keys import VerifyKey
from credex.runtime.storage import Connection, require_unit
from credex.v1 import member_pb2
from credex.v1.member_pb2 import MemberRole, MemberStatus

ROLE_NAMES = {MemberRole.MEMBER_ROLE_NODE: "node", MemberRole.MEMBER_ROLE_REQUESTER: "requester"}
ROLES_BY_NAME = {v: k for k, v in ROLE_NAMES.items()}
STATUS_NAMES = {
    MemberStatus.MEMBER_STATUS_ACTIVE: "active",
    MemberStatus.MEMBER_STATUS_SUSPENDED: "suspended",
    MemberStatus.MEMBER_STATUS_REMOVED: "removed",
}
STATUSES_BY_NAME = {v: k for k, v in STATUS_NAMES.items()}


@dataclass(frozen=True)
class MemberInfo:
    member_id: str
    role: MemberRole.ValueType
    name: str
    jurisdiction: str
    categories: tuple[vocab.Category, ...]
    key: VerifyKey
    endpoint: str = ""
    status: MemberStatus.ValueType = MemberStatus.MEMBER_STATUS_ACTIVE
    # Keys replaced by rotation, each with the time until which it still verifies.
    retired: tuple[tuple[VerifyKey, float], ...] = ()
    # The host names the operator granted (a node's certificate names exactly these; a
    # requester's none), kept for every certificate the member is issued later.
    hosts: tuple[str, ...] = ()

    @functools.cached_property
    def key_history(self) -> KeyHistory:
        return KeyHistory(
            [KeyPeriod(self.key), *(KeyPeriod(k, until) for k, until in self.retired)]
        )

    def keys_at(self, now: float) -> list[VerifyKey]:
        """The keys whose signatures count at `now`: the current one first."""
        return self.key_history.keys_at(now)

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[self.role]

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    @property
    def active(self) -> bool:
        return self.status == MemberStatus.MEMBER_STATUS_ACTIVE

    def to_proto(self) -> member_pb2.Member:
        return member_pb2.Member(
            member_id=self.member_id,
            role=self.role,
            name=self.name,
            jurisdiction=self.jurisdiction,
            categories=self.categories,
            public_key=self.key.raw,
            key_id=self.key.key_id,
            endpoint=self.endpoint,
            status=self.status,
            retired_keys=[
                member_pb2.RetiredKey(public_key=key.raw, valid_until=to_timestamp(until))
                for key, until in self.retired
            ],
        )


class Registry:
    """Members in the directory's state, cached in memory and reloaded when the file changes."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._data_version = -1
        self._by_id: dict[str, MemberInfo] = {}
        self._by_key: dict[str, MemberInfo] = {}
        self._retired: dict[str, tuple[MemberInfo, float]] = {}

    def _fresh(self) -> None:
        data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version == self._data_version:
            return
        retired: dict[str, list[tuple[VerifyKey, float]]] = {}
        for member_id, public_key, until in self._conn.execute(
            "SELECT member_id, public_key, valid_until FROM retired_keys ORDER BY valid_until"
        ):
            retired.setdefault(member_id, []).append((VerifyKey(public_key), until))
        members = [
            _from_row(row, tuple(retired.get(str(row[0]), ())))
            for row in self._conn.execute(f"SELECT {_COLUMNS} FROM members")
        ]
        self._by_id = {m.member_id: m for m in members}
        self._by_key = {m.key.key_id: m for m in members}
        self._retired = {key.key_id: (m, until) for m in members for key, until in m.retired}
        self._data_version = data_version

    def _changed(self) -> None:
        require_unit(self._conn)
        self._conn.execute("UPDATE registry_version SET version = version + 1")
        self._data_version = -1

    def touch(self) -> None:
        """A new version for a change outside the members table (revoked certificates), so
        nodes fetch the snapshot again."""
        self._changed()

    @property
    def version(self) -> int:
        return int(self._conn.execute("SELECT version FROM registry_version").fetchone()[0])

    def put(self, member: MemberInfo) -> None:
        """Add a member or update its entry; a key already held by another member is refused
        (never silently taken over)."""
        require_unit(self._conn)
        try:
            self._conn.execute(
                f"INSERT INTO members ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (member_id) DO UPDATE SET role = excluded.role, "
                "name = excluded.name, jurisdiction = excluded.jurisdiction, "
                "categories = excluded.categories, public_key = excluded.public_key, "
                "key_id = excluded.key_id, endpoint = excluded.endpoint, "
                "status = excluded.status, hosts = excluded.hosts",
                (
                    member.member_id,
                    member.role_name,
                    member.name,
                    member.jurisdiction,
                    json.dumps(vocab.category_names(member.categories)),
                    member.key.raw,
                    member.key.key_id,
                    member.endpoint,
                    member.status_name,
                    json.dumps(list(member.hosts)),
                ),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"another member already uses key {member.key.key_id}") from None
        self._changed()

    def _update(self, member_id: str, column: str, value: str) -> None:
        require_unit(self._conn)
        cur = self._conn.execute(
            f"UPDATE members SET {column} = ? WHERE member_id = ?", (value, member_id)
        )
        if cur.rowcount != 1:
            raise KeyError(member_id)
        self._changed()

    def set_endpoint(self, member_id: str, endpoint: str) -> None:
        if self.get(member_id) is not None and self._by_id[member_id].endpoint == endpoint:
            return  # a periodic re-announcement changes nothing
        self._update(member_id, "endpoint", endpoint)

    def set_status(self, member_id: str, status: MemberStatus.ValueType) -> None:
        current = self.get(member_id)
        if current is None:
            raise KeyError(member_id)
        if current.status == MemberStatus.MEMBER_STATUS_REMOVED:
            raise ValueError(f"{member_id} was removed; removal is final")
        self._update(member_id, "status", STATUS_NAMES[status])

    def get(self, member_id: str) -> MemberInfo | None:
        self._fresh()
        return self._by_id.get(member_id)

    def by_key_id(self, key_id: str, now: float | None = None) -> MemberInfo | None:
        """The member whose current key this is; with `now`, also one whose retired key it is
        and still verifies at `now`."""
        self._fresh()
        member = self._by_key.get(key_id)
        if member is None and now is not None and key_id in self._retired:
            member, until = self._retired[key_id]
            if now >= until:
                return None
        return member

    def key_in_use(self, key_id: str) -> bool:
        """Whether any member holds or ever rotated away from this key: keys are not reused."""
        self._fresh()
        return key_id in self._by_key or key_id in self._retired

    def rotate(self, member_id: str, new_key: VerifyKey, old_valid_until: float) -> None:
        """Make `new_key` current; the old key keeps verifying until `old_valid_until`."""
        member = self.get(member_id)
        if member is None:
            raise KeyError(member_id)
        if self.key_in_use(new_key.key_id):
            raise ValueError(f"key {new_key.key_id} is already in use")
        require_unit(self._conn)  # with the certificate issued with it, if any
        self._conn.execute(
            "INSERT INTO retired_keys VALUES (?, ?, ?, ?)",
            (member.key.key_id, member_id, member.key.raw, old_valid_until),
        )
        self._conn.execute(
            "UPDATE members SET public_key = ?, key_id = ? WHERE member_id = ?",
            (new_key.raw, new_key.key_id, member_id),
        )
        self._changed()

    def all(self) -> list[MemberInfo]:
        self._fresh()
        return sorted(self._by_id.values(), key=lambda m: (m.role, m.member_id))

    def nodes(self) -> Iterable[MemberInfo]:
        return (m for m in self.all() if m.role == MemberRole.MEMBER_ROLE_NODE)

    def snapshot(
        self,
        directory_id: str,
        now: float,
        revoked: Iterable[member_pb2.RevokedCertificate] = (),
        *,
        key_overlap_s: float = 0.0,
    ) -> member_pb2.RegistrySnapshot:
        return member_pb2.RegistrySnapshot(
            version=self.version,
            issued_at=to_timestamp(now),
            directory_id=directory_id,
            members=[m.to_proto() for m in self.all()],
            key_overlap_s=key_overlap_s,
            revoked_certificates=revoked,
        )


_COLUMNS = (
    "member_id, role, name, jurisdiction, categories, public_key, key_id, endpoint, status, hosts"
)


def _from_row(
    row: tuple[object, ...], retired: tuple[tuple[VerifyKey, float], ...] = ()
) -> MemberInfo:
    member_id, role, name, jurisdiction, categories, public_key, _key, endpoint, status, hosts = row
    return MemberInfo(
        member_id=str(member_id),
        role=ROLES_BY_NAME[str(role)],
        name=str(name),
        jurisdiction=str(jurisdiction),
        categories=tuple(vocab.parse_category(c) for c in json.loads(str(categories))),
        key=VerifyKey(public_key),  # type: ignore[arg-type]
        endpoint=str(endpoint),
        status=STATUSES_BY_NAME[str(status)],
        retired=retired,
        hosts=tuple(json.loads(str(hosts))) if hosts is not None else (),
    )
