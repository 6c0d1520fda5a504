"""Settings are declared once (credex.protocol.config.setting): the files `init` writes hold
every key, each at the default the parser gives when the key is missing."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from credex.directory.config import (
    DEFAULT_SETTINGS,
    SCHEMA,
    SETTINGS_FILE,
    DirectorySettings,
    load_settings,
    settings_file,
)
from credex.node.example_config import write_example
from credex.protocol.config import ConfigError
from credex.runtime.settings import ServerSettings


def written(home: Path, text: str) -> DirectorySettings:
    home.mkdir(exist_ok=True)
    (home / SETTINGS_FILE).write_text(text)
    return load_settings(home, environ={})


def test_the_directory_file_init_writes_is_every_default(tmp_path: Path) -> None:
    from_file = written(tmp_path / "written", DEFAULT_SETTINGS)
    from_nothing = written(tmp_path / "empty", "")
    assert dataclasses.replace(from_file, home=from_nothing.home, purpose_limits={}) == (
        dataclasses.replace(from_nothing, purpose_limits={})
    )
    assert from_file == DirectorySettings(
        home=from_file.home, purpose_limits=from_file.purpose_limits
    )


def test_the_directory_file_names_every_key_environment_variables_may_set() -> None:
    data = tomllib.loads(DEFAULT_SETTINGS)
    for table, keys in SCHEMA.items():
        assert set(data[table]) == set(keys), table


def test_a_value_given_to_the_file_is_read_back(tmp_path: Path) -> None:
    text = settings_file({"node_deadline_s": 0.5, "hosts": ("a.example",)}, {"research": 7})
    settings = written(tmp_path, text)
    assert settings.node_deadline_s == 0.5 and settings.hosts == ("a.example",)
    assert 7 in settings.purpose_limits.values()


def test_a_wrong_value_names_the_file_table_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"directory.toml \[subjects\]: 'burst'"):
        written(tmp_path, "[subjects]\nburst = 0\n")
    with pytest.raises(ConfigError, match=r"\[disputes\]: 'per_subject_per_hour'"):
        written(tmp_path, "[disputes]\nper_subject_per_hour = 0\n")
    with pytest.raises(ConfigError, match=r"\[directory\]: network 'not a network'"):
        written(tmp_path, '[directory]\nendpoint_networks = ["not a network"]\n')


def test_the_node_example_serves_the_server_defaults(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    write_example(path, node_id="pboc", records_db="records.db")
    server = tomllib.loads(path.read_text())["server"]
    expected = ServerSettings("127.0.0.1:7101", metrics_listen="127.0.0.1:9464")
    assert server == {
        f.name: list(v) if isinstance(v := getattr(expected, f.name), tuple) else v
        for f in dataclasses.fields(ServerSettings)
    }
