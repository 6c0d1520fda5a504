"""The member registry never lets one member's key be taken over by another entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from credex.directory.registry import MemberInfo, Registry
from credex.directory.schema import open_directory_storage
from credex.protocol.keys import SigningKey
from credex.runtime.storage import OutsideUnit
from credex.v1.common_pb2 import Category
from credex.v1.member_pb2 import MemberRole


def member(member_id: str, key: SigningKey, endpoint: str = "") -> MemberInfo:
    return MemberInfo(
        member_id=member_id,
        role=MemberRole.MEMBER_ROLE_REQUESTER,
        name=member_id,
        jurisdiction="CN",
        categories=(Category.CATEGORY_FINANCIAL,),
        key=key.public,
        endpoint=endpoint,
    )


def test_key_of_another_member_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    storage = open_directory_storage(tmp_path / "d.db")
    registry = Registry(storage.connection)
    key = SigningKey.generate()
    with storage.unit():
        registry.put(member("bank", key))
    with pytest.raises(ValueError, match="already uses key"), storage.unit():
        registry.put(member("school", key))
    assert [m.member_id for m in registry.all()] == ["bank"]
    assert registry.by_key_id(key.key_id) is not None
    assert registry.by_key_id(key.key_id).member_id == "bank"  # type: ignore[union-attr]


def test_updating_a_member_keeps_one_entry(tmp_path: Path) -> None:
    storage = open_directory_storage(tmp_path / "d.db")
    registry = Registry(storage.connection)
    old, new = SigningKey.generate(), SigningKey.generate()
    with storage.unit():
        registry.put(member("bank", old))
        registry.put(member("bank", new, endpoint="127.0.0.1:1"))
    assert [(m.member_id, m.key.key_id, m.endpoint) for m in registry.all()] == [
        ("bank", new.key_id, "127.0.0.1:1")
    ]
    assert registry.by_key_id(old.key_id) is None


def test_changes_by_another_connection_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    storage = open_directory_storage(path)
    reader, writer = Registry(open_directory_storage(path).connection), Registry(storage.connection)
    assert reader.get("bank") is None
    with storage.unit():
        writer.put(member("bank", SigningKey.generate()))
    assert reader.get("bank") is not None


def test_a_change_outside_a_unit_of_work_is_refused_unwritten(tmp_path: Path) -> None:
    storage = open_directory_storage(tmp_path / "d.db")
    registry = Registry(storage.connection)
    with pytest.raises(OutsideUnit):
        registry.put(member("bank", SigningKey.generate()))
    assert registry.all() == []
