"""Config files and the environment variables that override them (CREDEX_NODE_<TABLE>_<KEY>,
CREDEX_DIRECTORY_<TABLE>_<KEY>), for ports, paths, limits and deadlines."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from credex.directory import admin as directory_admin
from credex.directory.config import load_settings
from credex.node.config import load_node_config
from credex.protocol import vocab
from credex.protocol.config import ConfigError
from tests.commands import BIN


@pytest.fixture
def node_config(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nid = "agency"\nrecords_db = "records.db"\n\n'
        '[server]\nlisten = "127.0.0.1:7101"\n\n'
        '[[adapter]]\ncategory = "financial"\n'
        "sql = \"SELECT 1 AS record_id, 'k' AS kind, 1 AS value, '' AS unit, 0 AS occurred_at, "
        '1 AS local_id WHERE :local_id = 1"\n'
    )
    return path


def test_defaults_without_environment(node_config: Path) -> None:
    config = load_node_config(node_config, environ={})
    assert config.server.listen == "127.0.0.1:7101" and config.server.metrics_listen == ""
    assert config.server.log_format == "text" and config.server.stop_grace_s == 10.0
    assert config.rate_per_s == 1000.0


def test_environment_overrides_every_table(node_config: Path) -> None:
    config = load_node_config(
        node_config,
        environ={
            "CREDEX_NODE_SERVER_LISTEN": "0.0.0.0:9000",
            "CREDEX_NODE_SERVER_REFLECTION": "true",
            "CREDEX_NODE_SERVER_LOG_FORMAT": "json",
            "CREDEX_NODE_SERVER_STOP_GRACE_S": "2.5",
            "CREDEX_NODE_LIMITS_DIRECTORY_RATE_PER_S": "5",
            "CREDEX_NODE_NODE_DIRECTORY_ADDRESS": "10.0.0.1:7100",
            "CREDEX_NODE_NODE_STATE_DB": "/var/lib/credex/state.db",
            "OTHER_VARIABLE": "ignored",
        },
    )
    assert config.server.listen == "0.0.0.0:9000" and config.server.reflection is True
    assert config.server.log_format == "json" and config.server.stop_grace_s == 2.5
    assert config.rate_per_s == 5.0
    assert config.directory_address == "10.0.0.1:7100"
    assert config.state_db == Path("/var/lib/credex/state.db")


def test_a_misspelt_variable_is_an_error(node_config: Path) -> None:
    with pytest.raises(ConfigError, match="CREDEX_NODE_SERVER_LISTN names no setting"):
        load_node_config(node_config, environ={"CREDEX_NODE_SERVER_LISTN": "x:1"})


def test_a_bad_value_names_the_variable(node_config: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_node_config(node_config, environ={"CREDEX_NODE_SERVER_LISTEN": "nowhere"})
    assert "'listen' must be host:port" in str(err.value)
    assert "environment: CREDEX_NODE_SERVER_LISTEN" in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("log_format", '"xml"', "'log_format' must be one of text, json"),
        ("log_level", '"loud"', "'log_level' must be one of"),
        ("stop_grace_s", "0", "'stop_grace_s' must be a positive, finite number"),
        ("reflection", '"yes"', "'reflection' must be true or false"),
        ("metrics_listen", '"9464"', "'metrics_listen' must be host:port"),
        ("health_interval_s", "nan", "'health_interval_s' must be a positive, finite number"),
        ("stop_grace_s", "inf", "'stop_grace_s' must be a positive, finite number"),
        ("drain_delay_s", "-1", "'drain_delay_s' must be a finite number, zero or more"),
        ("refusal_window_s", "0", "'refusal_window_s' must be a positive, finite number"),
        ("refusal_max_keys", "0", "'refusal_max_keys' must be a whole number, at least 1"),
        ("refusal_max_keys", "2.5", "'refusal_max_keys' must be a whole number"),
    ],
)
def test_server_table_values_are_checked(
    node_config: Path, key: str, value: str, message: str
) -> None:
    node_config.write_text(
        node_config.read_text().replace("[server]\n", f"[server]\n{key} = {value}\n")
    )
    with pytest.raises(ConfigError, match=message):
        load_node_config(node_config, environ={})


def test_directory_settings_take_the_environment_too(tmp_path: Path) -> None:
    home = tmp_path / "directory"
    directory_admin.init_home(home)
    settings = load_settings(
        home,
        environ={
            "CREDEX_DIRECTORY_SERVER_PUBLIC_LISTEN": "0.0.0.0:443",
            "CREDEX_DIRECTORY_SERVER_METRICS_LISTEN": "127.0.0.1:9464",
            "CREDEX_DIRECTORY_DIRECTORY_NODE_DEADLINE_S": "0.5",
            "CREDEX_DIRECTORY_PURPOSE_LIMITS_LOAN_APPLICATION": "3",
        },
    )
    assert settings.server.public_listen == "0.0.0.0:443"
    assert settings.server.metrics_listen == "127.0.0.1:9464"
    assert settings.node_deadline_s == 0.5
    assert settings.purpose_limits[vocab.parse_purpose("loan-application")] == 3
    with pytest.raises(ConfigError, match="CREDEX_DIRECTORY_PURPOSE_LIMITS_GOSSIP"):
        load_settings(home, environ={"CREDEX_DIRECTORY_PURPOSE_LIMITS_GOSSIP": "1"})


def test_serve_refuses_a_bad_override_with_a_message(node_config: Path) -> None:
    env = {**os.environ, "CREDEX_NODE_SERVER_LOG_LEVEL": "shout"}
    result = subprocess.run(
        [str(BIN / "credex-node"), "serve", str(node_config)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "log_level" in result.stderr and "CREDEX_NODE_SERVER_LOG_LEVEL" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_home_variable_of_the_command_line_is_not_a_setting(tmp_path: Path) -> None:
    home = tmp_path / "directory"
    directory_admin.init_home(home)
    assert load_settings(home, environ={"CREDEX_DIRECTORY_HOME": str(home)}).home == home
    env = {**os.environ, "CREDEX_DIRECTORY_HOME": str(home)}
    listed = subprocess.run(
        [str(BIN / "credex-directory"), "members", "--json"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr


def test_profile_size_caps_have_defaults_and_are_checked(tmp_path: Path) -> None:
    home = tmp_path / "directory"
    directory_admin.init_home(home)
    settings = load_settings(home, environ={})
    assert (settings.max_node_answer_bytes, settings.max_profile_bytes) == (1 << 20, 4 << 20)
    assert (settings.server.refusal_window_s, settings.server.refusal_max_keys) == (60.0, 10_000)
    prefix = "CREDEX_DIRECTORY_DIRECTORY_"
    for name, value, message in (
        ("MAX_PROFILE_BYTES", "1073741824", "a profile travels as one message"),
        ("MAX_NODE_ANSWER_BYTES", "8388608", "must not exceed 'max_profile_bytes'"),
        ("MAX_NODE_ANSWER_BYTES", "10", "at least 4096"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(home, environ={prefix + name: value})


def test_subject_limits_have_defaults_and_are_checked(tmp_path: Path) -> None:
    home = tmp_path / "directory"
    directory_admin.init_home(home)
    limits = load_settings(home, environ={}).subjects
    assert (limits.rate_per_s, limits.burst, limits.max_consents) == (1.0, 20, 200)
    prefix = "CREDEX_DIRECTORY_SUBJECTS_"
    changed = load_settings(
        home,
        environ={prefix + "RATE_PER_S": "0.5", prefix + "BURST": "5", prefix + "MAX_CONSENTS": "9"},
    ).subjects
    assert (changed.rate_per_s, changed.burst, changed.max_consents) == (0.5, 5, 9)
    for name, value, message in (
        ("RATE_PER_S", "0", "'rate_per_s' must be a positive"),
        ("BURST", "0", "'burst' must be a whole number, at least 1"),
        ("MAX_CONSENTS", "2.5", "'max_consents' must be a whole number"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(home, environ={prefix + name: value})
