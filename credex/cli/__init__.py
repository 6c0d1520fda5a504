"""The command lines: `credex` (requesters, subjects, auditors), and the launchers of
`credex-node`, `credex-directory` and `credex-lab`. Each launcher names the extra to install
when a dependency is missing instead of ending in a traceback."""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

# The top-level modules the extras bring (pyproject.toml); the SDK needs none of them.
OPTIONAL_MODULES = frozenset(
    {
        "typer",
        "click",
        "rich",
        "sqlite_utils",
        "prometheus_client",
        "pythonjsonlogger",
        "grpc_health",
        "grpc_reflection",
        "matplotlib",
    }
)


def _launch(module: str, command: str, extra: str) -> NoReturn:
    try:
        app = importlib.import_module(module).app
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in OPTIONAL_MODULES:
            raise
        print(
            f"{command}: needs the '{extra}' extra ({error.name} is not installed): "
            f"pip install 'credex[{extra}]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    app()
    raise SystemExit(0)


def credex() -> NoReturn:
    _launch("credex.cli.main", "credex", "cli")


def credex_node() -> NoReturn:
    _launch("credex.node.cli", "credex-node", "server")


def credex_directory() -> NoReturn:
    _launch("credex.directory.cli", "credex-directory", "server")


def credex_lab() -> NoReturn:
    _launch("credex.lab.cli", "credex-lab", "lab")
