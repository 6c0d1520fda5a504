"""The member registry as every party reads it from the directory's signed snapshot: who is a
member in which role and status, each member's keys with their periods, and the revoked
certificates. Nodes, requesters and auditors all read it here, one way.

A snapshot speaks for the moment it was last known current. A key it calls current still
verifies signatures made up to `key_overlap_s` after that moment (a rotation after it leaves
the key valid that long); for a signature made later, fetch the registry again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from credex.protocol.clock import from_timestamp
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.key_history import KeyHistory, KeyPeriod
from credex.protocol.keys import VerifyKey
from credex.protocol.signing import open_signed
from credex.v1.common_pb2 import Signed
from credex.v1.member_pb2 import Member, MemberRole, MemberStatus, RegistrySnapshot


@dataclass(frozen=True)
class MemberView:
    member_id: str
    role: MemberRole.ValueType
    status: MemberStatus.ValueType
    endpoint: str
    keys: KeyHistory

    @property
    def active(self) -> bool:
        return self.status == MemberStatus.MEMBER_STATUS_ACTIVE


class RegistryView:
    """One snapshot, read; `known_current_at` is when its holder last learned that it is
    still the directory's current version (its issue time until told otherwise)."""

    def __init__(self, snapshot: RegistrySnapshot, known_current_at: float | None = None) -> None:
        self.version = snapshot.version
        self.issued_at = from_timestamp(snapshot.issued_at)
        self.directory_id = snapshot.directory_id
        self.key_overlap_s = max(0.0, snapshot.key_overlap_s)
        self.known_current_at = self.issued_at if known_current_at is None else known_current_at
        self._members = {m.member_id: _member(m) for m in snapshot.members}
        # serial -> (from when it is refused, why), as credex.protocol.revocation takes it
        self.revoked: dict[str, tuple[float, str]] = {
            r.serial: (from_timestamp(r.revoked_at), r.reason or "revoked")
            for r in snapshot.revoked_certificates
        }

    @classmethod
    def open(
        cls, signed: Signed, directory_key: VerifyKey, known_current_at: float | None = None
    ) -> RegistryView:
        """The view of a snapshot signed by the directory; CredexError if it is not, or if a
        member's key in it is not an Ed25519 public key."""
        snapshot = open_signed(signed, RegistrySnapshot, directory_key, what="registry snapshot")
        return cls(snapshot, known_current_at)

    def get(self, member_id: str) -> MemberView | None:
        return self._members.get(member_id)

    def members(self) -> Iterable[MemberView]:
        return self._members.values()

    def active_ids(self, role: MemberRole.ValueType) -> frozenset[str]:
        return frozenset(m.member_id for m in self._members.values() if m.active and m.role == role)

    def vouches_until(self, period: KeyPeriod) -> float:
        """Signatures by `period`'s key made before this time count, as far as this view
        knows: a retired key's end, or for the current key the overlap after the view was
        last known current."""
        if period.until is not None:
            return period.until
        return self.known_current_at + self.key_overlap_s


def member_keys(signed: Signed, directory_key: VerifyKey, member_id: str) -> KeyHistory:
    """A member's key history from a directory-signed snapshot (for checking what it signed
    in the past, e.g. its audit log). ValueError if the snapshot does not verify or names no
    such member."""
    try:
        view = RegistryView.open(signed, directory_key)
    except CredexError as err:
        raise ValueError(f"registry snapshot: {err.message}") from None
    member = view.get(member_id)
    if member is None:
        raise ValueError(f"the registry snapshot names no member {member_id!r}")
    return member.keys


def _member(member: Member) -> MemberView:
    try:
        keys = KeyHistory.of_member(member)
    except ValueError as exc:
        raise refused(
            Reason.MALFORMED, f"registry snapshot: a key of {member.member_id[:64]!r}: {exc}"
        ) from None
    return MemberView(member.member_id, member.role, member.status, member.endpoint, keys)
