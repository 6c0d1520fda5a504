"""Every signing key a member has held, each with the time until which its signatures count,
so that what a member signed before a key rotation still verifies afterwards (and what a
retired key signed after its period does not)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import Message

from credex.protocol.clock import from_timestamp
from credex.protocol.keys import VerifyKey
from credex.protocol.signing import verify
from credex.v1.common_pb2 import Signed
from credex.v1.member_pb2 import Member


@dataclass(frozen=True)
class KeyPeriod:
    key: VerifyKey
    # Signatures made at or after this time do not count (None: the current key).
    until: float | None = None


@dataclass(frozen=True)
class KeyCheck:
    """What checking one signature against a history found: which key (its place in the
    history, oldest first) and, if it fails, why; `unknown`: no key of the history signed."""

    index: int = -1
    problem: str = ""
    unknown: bool = False


class KeyHistory:
    """A member's keys, oldest first (retired keys by the end of their period, then current)."""

    def __init__(self, periods: Sequence[KeyPeriod]) -> None:
        self.periods = tuple(
            sorted(periods, key=lambda p: (p.until is None, p.until if p.until else 0.0))
        )

    @classmethod
    def single(cls, key: VerifyKey) -> KeyHistory:
        return cls([KeyPeriod(key)])

    @classmethod
    def of_member(cls, member: Member) -> KeyHistory:
        """A registry entry's keys: its current key and its retired ones with their periods.
        ValueError if a key is not a valid Ed25519 public key."""
        return cls(
            [
                KeyPeriod(VerifyKey(member.public_key)),
                *(
                    KeyPeriod(VerifyKey(r.public_key), from_timestamp(r.valid_until))
                    for r in member.retired_keys
                ),
            ]
        )

    @property
    def current(self) -> VerifyKey:
        """The key in use now (the last period; a history always has one)."""
        return self.periods[-1].key

    def period_of(self, key_id: str) -> KeyPeriod | None:
        """The period of the key with `key_id`, if it is one of these."""
        return next((p for p in self.periods if p.key.key_id == key_id), None)

    def keys_at(self, now: float) -> list[VerifyKey]:
        """The keys whose signatures count at `now`: the current one first."""
        return [p.key for p in reversed(self.periods) if p.until is None or now < p.until]

    def merged(self, other: KeyHistory) -> KeyHistory:
        known = {p.key.key_id for p in self.periods}
        return KeyHistory([*self.periods, *(p for p in other.periods if p.key.key_id not in known)])

    def check(self, signed: Signed, message_type: type[Message], at: float) -> KeyCheck:
        """Whether `signed` is a signature by one of these keys made within its period (`at`
        is the signing time the message itself states)."""
        for index, period in enumerate(self.periods):
            if period.key.key_id != signed.key_id:
                continue
            if period.until is not None and at >= period.until:
                return KeyCheck(
                    index,
                    f"signed by key {signed.key_id} at {_iso(at)}, after that key was retired "
                    f"(it counted until {_iso(period.until)})",
                )
            if not verify(signed, message_type, period.key):
                return KeyCheck(
                    index, f"not signed by the owner: the signature by key {signed.key_id} fails"
                )
            return KeyCheck(index)
        return KeyCheck(
            problem=f"not signed by the owner: key {signed.key_id[:32]!r} is not one of the "
            "owner's keys given (after a key rotation, give its key history with --registry)",
            unknown=True,
        )


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
