"""Reading TOML config files with errors that name the file and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

MEMBER_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class ConfigError(Exception):
    """A config file is missing, unparsable or has a wrong value."""


def validate_member_id(value: str, where: str) -> str:
    """Member ids appear in certificates, file names and logs: keep them plain (and never a
    path such as `.` or `..`)."""
    if not value or len(value) > 64 or not set(value) <= MEMBER_ID_CHARS or value.startswith("."):
        raise ConfigError(
            f"{where}: id {value!r} must be 1-64 of a-z 0-9 - _ . and not start with a dot"
        )
    return value


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def require_str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def resolve(base: Path, value: str) -> Path:
    """A path from a config file, relative to that file's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def address(
    table: dict[str, Any], key: str, default: str, where: str, *, optional: bool = False
) -> str:
    """A host:port to listen on (port 0 picks a free one); "" only where `optional`."""
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be a string host:port")
    if value == "" and optional:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where}: '{key}' must be host:port, not {value!r}")
    return value


def flag(table: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false")
    return value
