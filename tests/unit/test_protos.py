"""The committed generated code must be exactly what `make protos` produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.commands import REPO
from tests.contract import contract_modules


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "protogen.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "credex" / "v1").iterdir()}
    committed = {p.name: p.read_bytes() for p in (REPO / "credex" / "v1").iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make protos`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `make protos`"


def test_every_enum_has_an_unspecified_zero() -> None:
    modules = contract_modules()
    assert len(modules) >= 9
    for module in modules:
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            zero = enum.values_by_number[0].name
            assert zero.endswith("_UNSPECIFIED"), (enum.name, zero)
