"""The example systemd units in docs/deploy/ run real commands with settings credex knows, and
give a drain the time it needs."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from credex.directory import config as directory_config
from credex.directory.cli import app as directory_app
from credex.node import config as node_config
from credex.node.cli import app as node_app
from credex.protocol.config import environment_overrides
from credex.runtime.settings import ServerSettings
from tests.commands import BIN, REPO

DEPLOY = REPO / "docs" / "deploy"
UNITS = {
    "credex-node.service": ("credex-node", node_app, node_config.ENV_PREFIX, node_config.SCHEMA),
    "credex-directory.service": (
        "credex-directory", directory_app, directory_config.ENV_PREFIX, directory_config.SCHEMA,
    ),
}  # fmt: skip


def read_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / name).read_text())
    return unit


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_runs_a_real_command(name: str) -> None:
    program, app, _, _ = UNITS[name]
    unit = read_unit(name)
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert Path(argv[0]).name == program
    command = typer.main.get_command(app)
    assert argv[1] in command.commands  # type: ignore[attr-defined]
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    defaults = ServerSettings("x:1")
    assert int(unit["Service"]["TimeoutStopSec"]) > defaults.stop_grace_s + defaults.drain_delay_s
    # Enough descriptors for the connection caps sized from it, with room to spare.
    assert int(unit["Service"]["LimitNOFILE"]) >= 65536


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_environment_names_real_settings(name: str) -> None:
    _, _, prefix, schema = UNITS[name]
    text = (DEPLOY / name).read_text()
    env = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in text.splitlines()
        if line.startswith("Environment=")
    )
    assert env
    data: dict[str, object] = {}
    assert sorted(environment_overrides(data, prefix, schema, env)) == sorted(env)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_accepts_the_unit(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the parsing checks above still ran")
    program = UNITS[name][0]
    text = (DEPLOY / name).read_text().replace(f"/opt/credex/bin/{program}", str(BIN / program))
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("User=", "Group=")))
    unit = tmp_path / name
    unit.write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in result.stderr.splitlines() if name in line]
    assert result.returncode == 0 and problems == [], result.stderr
