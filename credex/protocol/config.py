"""Reading TOML config files with errors that name the file and the key."""

from __future__ import annotations

import json
import math
import os
import textwrap
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

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


def choice(
    table: dict[str, Any], key: str, default: str, allowed: tuple[str, ...], where: str
) -> str:
    value = table.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(allowed)}")
    return str(value)


def environment_overrides(
    data: dict[str, Any],
    prefix: str,
    schema: Mapping[str, Collection[str]],
    environ: Mapping[str, str] | None = None,
    reserved: Collection[str] = (),
) -> list[str]:
    """Apply `PREFIX_TABLE_KEY=value` variables (e.g. CREDEX_NODE_SERVER_LISTEN) onto the
    config's tables, for keys `schema` knows; returns the variables applied. A value is read
    as TOML (5, 2.5, true, "text") and otherwise taken as plain text. `reserved` names
    belong to the command line (e.g. CREDEX_DIRECTORY_HOME) and are left alone."""
    environ = os.environ if environ is None else environ
    applied = []
    tables = sorted(schema, key=len, reverse=True)  # purpose_limits before a shorter prefix
    for name in sorted(environ):
        if not name.startswith(f"{prefix}_") or name in reserved:
            continue
        rest = name.removeprefix(f"{prefix}_")
        table = next((t for t in tables if rest.startswith(f"{t.upper()}_")), None)
        key = rest.removeprefix(f"{table.upper()}_").lower() if table else ""
        if table is not None and key not in schema[table]:
            key = key.replace("_", "-")  # purpose names are written with hyphens
        if table is None or key not in schema[table]:
            known = ", ".join(f"{prefix}_{t.upper()}_…" for t in schema)
            raise ConfigError(f"environment variable {name} names no setting (known: {known})")
        section = data.setdefault(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{table}] must be a table to take {name}")
        section[key] = _env_value(environ[name])
        applied.append(name)
    return applied


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def positive(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{where}: '{key}' must be a positive, finite number")
    return float(value)


def non_negative(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{where}: '{key}' must be a finite number, zero or more")
    return float(value)


def whole(table: dict[str, Any], key: str, default: int, where: str, *, minimum: int = 0) -> int:
    """A whole number of at least `minimum` (counts and sizes)."""
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}: '{key}' must be a whole number, at least {minimum}")
    return value


# --- settings declared once ----------------------------------------------------------------
# A settings dataclass declares each key once, as a field made by `setting`: its default, the
# comment the example file writes above it, and how it is read. The parser (`read_settings`),
# the keys environment variables may name (`settings_keys`) and the example file
# (`example_settings`) all come from those fields.

T = TypeVar("T")
Reader = Callable[[dict[str, Any], str, Any, str], Any]  # (table, key, default, where) -> value


@dataclass(frozen=True)
class Setting:
    read: Reader
    doc: str  # "" when the comment of the field above covers this one too
    key: str  # the TOML key; "" when it is the field's name


def setting(default: T, read: Reader, doc: str = "", *, key: str = "") -> T:
    """A dataclass field that is a setting (see the note above)."""
    return field(default=default, metadata={"setting": Setting(read, doc, key)})


def _settings_of(cls: type[Any]) -> list[tuple[Field[Any], Setting]]:
    return [(f, f.metadata["setting"]) for f in fields(cls) if "setting" in f.metadata]


def settings_keys(cls: type[Any]) -> frozenset[str]:
    """The TOML keys of `cls`'s settings."""
    return frozenset(s.key or f.name for f, s in _settings_of(cls))


def read_settings(
    cls: type[Any], table: object, where: str, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every setting of `cls` read from `table` (a missing key takes its default, or the
    one in `defaults`), by field name; ConfigError naming `where` and the key if one is
    wrong."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    defaults = defaults or {}
    return {
        f.name: s.read(table, s.key or f.name, defaults.get(f.name, f.default), where)
        for f, s in _settings_of(cls)
    }


def example_settings(cls: type[Any], defaults: Mapping[str, Any] | None = None) -> str:
    """The settings of `cls` as commented TOML lines, each at its default."""
    defaults = defaults or {}
    lines: list[str] = []
    for f, s in _settings_of(cls):
        if s.doc:
            lines += [f"# {line}" for line in textwrap.wrap(s.doc, 94)]
        lines.append(f"{s.key or f.name} = {toml_value(defaults.get(f.name, f.default))}")
    return "\n".join(lines) + "\n"


def toml_value(value: object) -> str:
    """`value` as TOML: booleans, numbers, strings, lists of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def at_least(minimum: int) -> Reader:
    """A whole number of at least `minimum`."""
    return lambda table, key, default, where: whole(table, key, default, where, minimum=minimum)


def one_of(*allowed: str) -> Reader:
    return lambda table, key, default, where: choice(table, key, default, allowed, where)


def text(table: dict[str, Any], key: str, default: str, where: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be a string")
    return value


def optional_address(table: dict[str, Any], key: str, default: str, where: str) -> str:
    return address(table, key, default, where, optional=True)


def burst(table: dict[str, Any], key: str, default: float, where: str) -> float:
    """A token bucket's burst: positive, and never below one call."""
    return max(1.0, positive(table, key, default, where))
