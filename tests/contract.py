"""The generated modules of the wire contract, found from the files, so a new .proto file is
covered by every test that walks the contract."""

from __future__ import annotations

import importlib
from types import ModuleType

from tests.commands import REPO


def contract_modules() -> list[ModuleType]:
    """Every `credex.v1.*_pb2` module, in file order."""
    return [
        importlib.import_module(f"credex.v1.{path.stem}")
        for path in sorted((REPO / "credex" / "v1").glob("*_pb2.py"))
    ]
