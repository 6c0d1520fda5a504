"""The README documents every command that exists."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from credex.cli.main import app as credex_app
from credex.directory.cli import app as directory_app
from credex.lab.cli import app as lab_app
from credex.node.cli import app as node_app
from tests.commands import REPO

README = (REPO / "README.md").read_text()


def command_paths(prog: str, app: typer.Typer) -> list[str]:
    def walk(prefix: str, command: Any) -> list[str]:
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            return [
                p for name, sub in command.commands.items() for p in walk(f"{prefix} {name}", sub)
            ]
        return [prefix]

    return walk(prog, typer.main.get_command(app))


ALL = [
    path
    for prog, app in (
        ("credex", credex_app),
        ("credex-node", node_app),
        ("credex-directory", directory_app),
        ("credex-lab", lab_app),
    )
    for path in command_paths(prog, app)
]


def test_there_are_commands_to_check() -> None:
    assert "credex consent grant" in ALL and "credex-lab demo" in ALL
    assert len(ALL) >= 18


@pytest.mark.parametrize("path", ALL)
def test_command_is_documented(path: str) -> None:
    assert f"`{path}" in README, f"README does not document `{path}`"


def test_two_commands_come_first() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
