"""The registry as every party reads it: what the directory writes into its signed snapshot
is what a node, a requester and an auditor read back, keys with their periods included, and a
snapshot vouches for a current key only up to the overlap after it was last known current."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from credex.directory.registry import MemberInfo, Registry
from credex.directory.schema import open_directory_storage
from credex.protocol.errors import CredexError, Reason
from credex.protocol.keys import SigningKey
from credex.protocol.registry_view import RegistryView, member_keys
from credex.protocol.signing import seal
from credex.v1.common_pb2 import Category
from credex.v1.member_pb2 import MemberRole, MemberStatus

DIRECTORY = SigningKey.from_seed(b"directory")
NOW = 1_900_000_000.0
OVERLAP = 600.0


def _member(member_id: str, role: MemberRole.ValueType, key: SigningKey) -> MemberInfo:
    return MemberInfo(
        member_id=member_id,
        role=role,
        name=member_id,
        jurisdiction="CN",
        categories=(Category.CATEGORY_FINANCIAL,),
        key=key.public,
    )


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    storage = open_directory_storage(tmp_path / "directory.db")
    registry = Registry(storage.connection)
    with storage.unit():
        registry.put(_member("bank", MemberRole.MEMBER_ROLE_REQUESTER, SigningKey.generate()))
        registry.put(_member("lender", MemberRole.MEMBER_ROLE_REQUESTER, SigningKey.generate()))
        registry.put(_member("pboc", MemberRole.MEMBER_ROLE_NODE, SigningKey.generate()))
        registry.set_status("lender", MemberStatus.MEMBER_STATUS_SUSPENDED)
        registry.rotate("pboc", SigningKey.generate().public, NOW + OVERLAP)
    return registry


def _view(registry: Registry, known_current_at: float | None = None) -> RegistryView:
    snapshot = registry.snapshot("directory", NOW, key_overlap_s=OVERLAP)
    return RegistryView.open(seal(snapshot, DIRECTORY), DIRECTORY.public, known_current_at)


def test_the_snapshot_is_read_back_as_the_directory_holds_it(registry: Registry) -> None:
    view = _view(registry)
    assert view.version == registry.version and view.issued_at == NOW
    assert view.active_ids(MemberRole.MEMBER_ROLE_REQUESTER) == {"bank"}
    assert view.active_ids(MemberRole.MEMBER_ROLE_NODE) == {"pboc"}
    pboc = registry.get("pboc")
    read = view.get("pboc")
    assert pboc is not None and read is not None
    for moment in (NOW, NOW + OVERLAP - 1, NOW + OVERLAP):
        assert [k.key_id for k in read.keys.keys_at(moment)] == [
            k.key_id for k in pboc.keys_at(moment)
        ]
    assert len(pboc.keys_at(NOW)) == 2 and len(pboc.keys_at(NOW + OVERLAP)) == 1
    assert view.get("nobody") is None


def test_a_current_key_is_vouched_for_up_to_the_overlap_after_the_view_was_current(
    registry: Registry,
) -> None:
    view = _view(registry)
    pboc = view.get("pboc")
    assert pboc is not None
    current = pboc.keys.period_of(pboc.keys.current.key_id)
    retired = next(p for p in pboc.keys.periods if p.until is not None)
    assert current is not None and current.until is None
    assert view.vouches_until(current) == NOW + OVERLAP
    assert view.vouches_until(retired) == NOW + OVERLAP  # the rotation's own end
    later = _view(registry, known_current_at=NOW + 3600)
    assert later.vouches_until(current) == NOW + 3600 + OVERLAP
    assert pboc.keys.period_of("0" * 32) is None


def test_a_snapshot_without_an_overlap_vouches_for_no_time_after_it(registry: Registry) -> None:
    snapshot = registry.snapshot("directory", NOW)
    view = RegistryView.open(seal(snapshot, DIRECTORY), DIRECTORY.public)
    bank = view.get("bank")
    assert bank is not None
    assert view.vouches_until(bank.keys.periods[-1]) == NOW


def test_a_snapshot_not_signed_by_the_directory_or_with_a_bad_key_is_refused(
    registry: Registry,
) -> None:
    snapshot = registry.snapshot("directory", NOW, key_overlap_s=OVERLAP)
    with pytest.raises(CredexError) as forged:
        RegistryView.open(seal(snapshot, SigningKey.generate()), DIRECTORY.public)
    assert forged.value.reason == Reason.BAD_SIGNATURE
    next(m for m in snapshot.members if m.member_id == "bank").public_key = b"\x01" * 5
    with pytest.raises(CredexError) as malformed:
        RegistryView.open(seal(snapshot, DIRECTORY), DIRECTORY.public)
    assert malformed.value.reason == Reason.MALFORMED
    assert "a key of 'bank'" in malformed.value.message


def test_an_auditor_reads_a_members_key_history_from_the_snapshot(registry: Registry) -> None:
    signed = seal(registry.snapshot("directory", NOW, key_overlap_s=OVERLAP), DIRECTORY)
    pboc = registry.get("pboc")
    assert pboc is not None
    keys = member_keys(signed, DIRECTORY.public, "pboc")
    assert [(p.key.key_id, p.until) for p in keys.periods] == [
        (pboc.retired[0][0].key_id, NOW + OVERLAP),
        (pboc.key.key_id, None),
    ]
    with pytest.raises(ValueError, match="no member 'zhima'"):
        member_keys(signed, DIRECTORY.public, "zhima")
    assert replace(pboc, retired=()).keys_at(NOW) == [pboc.key]
