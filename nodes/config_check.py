"""What a node needs of its config and the operator's database, each problem tied to the line of
the config it comes from: the adapters run read-only, take the subject only as the bound
parameter :local_id, return the columns a record needs and find the subject through an index."""

from __future__ import annotations

import difflib
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from credex import vocab
from credex.config import ConfigError, load_toml
from credex.db import DatabaseError, open_readonly
from nodes.adapters import REQUIRED_COLUMNS, RecordSource
from nodes.config import SCHEMA, AdapterSpec, NodeConfig, load_node_config

ADAPTER_KEYS = frozenset({"category", "sql"})
PARAMETER = ":local_id"


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where the config says it. A problem that is not `fatal` lets the node
    serve, badly (a lookup that reads every row)."""

    line: int | None
    message: str
    fatal: bool = True

    def render(self, path: Path) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line else f"{path}: {self.message}"


@dataclass
class ConfigLines:
    """Line numbers (1-based) of the keys a problem can come from."""

    headers: dict[str, int] = field(default_factory=dict)
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    adapters: list[dict[str, int]] = field(default_factory=list)

    @property
    def node(self) -> dict[str, int]:
        return self.tables.get("node", {})

    def adapter(self, index: int, key: str = "sql") -> int | None:
        if index >= len(self.adapters):
            return None
        lines = self.adapters[index]
        return lines.get(key, lines["header"])


_TABLE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def config_lines(text: str) -> ConfigLines:
    """Where each table's keys and each [[adapter]]'s keys are (TOML parsers keep no
    positions)."""
    lines = ConfigLines()
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        if header := _TABLE.match(line):
            table = header.group(2)
            if header.group(1) == "[[" and table == "adapter":
                lines.adapters.append({"header": number})
            else:
                lines.headers.setdefault(table, number)
            continue
        if key := _KEY.match(line):
            if table == "adapter" and lines.adapters:
                lines.adapters[-1].setdefault(key.group(1), number)
            elif table != "adapter":
                lines.tables.setdefault(table, {}).setdefault(key.group(1), number)
    return lines


# --------------------------------------------------------------------------- SQL text


def _code(sql: str) -> Iterator[tuple[int, str]]:
    """(position, character) of the SQL outside string literals, quoted names and comments."""
    i, n = 0, len(sql)
    closers = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < n:
        ch = sql[i]
        if ch in closers:
            end = sql.find(closers[ch], i + 1)
            while end != -1 and ch != "[" and sql.startswith(closers[ch] * 2, end):
                end = sql.find(closers[ch], end + 2)  # '' inside '...' is a quote
            i = n if end == -1 else end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
        else:
            yield i, ch
            i += 1


def parameters(sql: str) -> list[str]:
    """The bound parameters of `sql` as written (`?`, `?1`, `:name`, `@name`, `$name`)."""
    kept = [" "] * len(sql)
    for position, ch in _code(sql):
        kept[position] = ch
    text = "".join(kept)
    # `$`, `:` and `@` start a parameter only where no name continues (amount$usd is a name).
    return re.findall(r"\?\d*|(?<![A-Za-z0-9_$])[:@$][A-Za-z0-9_]+", text)


def first_keyword(sql: str) -> str:
    kept = "".join(ch for _, ch in _code(sql)).strip()
    match = re.match(r"[A-Za-z]+", kept)
    return match.group(0).upper() if match else ""


# --------------------------------------------------------------------------- checks


def check_adapter(conn: sqlite3.Connection, spec: AdapterSpec, line: int | None) -> list[Problem]:
    """Everything about one adapter that can be known without a subject."""
    what = f"adapter for {vocab.category_name(spec.category)}"
    keyword = first_keyword(spec.sql)
    if keyword not in ("SELECT", "WITH"):
        return [Problem(line, f"{what}: only a SELECT may be mapped, not {keyword or 'this'}")]
    found = parameters(spec.sql)
    others = sorted(set(found) - {PARAMETER})
    if others:
        return [
            Problem(
                line,
                f"{what}: the subject is passed only as the bound parameter {PARAMETER}; "
                f"remove {', '.join(others)}",
            )
        ]
    if PARAMETER not in found:
        return [
            Problem(
                line,
                f"{what}: {PARAMETER} must be a bound parameter (not inside quotes or a comment)",
            )
        ]
    try:
        cursor = conn.execute(spec.sql, {"local_id": ""})
        cursor.fetchall()
    except (sqlite3.Error, sqlite3.Warning) as exc:
        return [Problem(line, f"{what}: query fails: {exc}")]
    columns = {d[0] for d in cursor.description or ()}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [Problem(line, f"{what}: query lacks column(s) {', '.join(missing)}")]
    return _plan_problems(conn, spec, line, what)


_COMPARED = re.compile(
    r"(?:[A-Za-z_][A-Za-z0-9_]*\.)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:==?|\bIN\s*\()\s*:local_id\b"
    r"|:local_id\s*==?\s*(?:[A-Za-z_][A-Za-z0-9_]*\.)?([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


def compared_columns(sql: str) -> set[str]:
    """The columns `sql` compares with :local_id (outside strings and comments)."""
    code = "".join(ch for _, ch in _code(sql))
    return {(a or b).lower() for a, b in _COMPARED.findall(code)}


def _plan_problems(
    conn: sqlite3.Connection, spec: AdapterSpec, line: int | None, what: str
) -> list[Problem]:
    """Per EXPLAIN QUERY PLAN: no table is read in full, and an index finds the rows by the
    column compared with :local_id."""
    steps = [
        str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {spec.sql}", {"local_id": ""})
    ]
    subqueries = {s.split()[1] for s in steps if s.startswith(("MATERIALIZE ", "CO-ROUTINE "))}
    scanned = [
        name
        for s in steps
        if s.startswith("SCAN ") and s != "SCAN CONSTANT ROW"
        for name in [s.split()[1]]
        if name not in subqueries and not name.startswith("(")
    ]
    scanned += [s.split()[1] for s in steps if "AUTOMATIC" in s and s.startswith("SEARCH ")]
    searches = [s.lower() for s in steps if s.startswith("SEARCH ")]
    columns = compared_columns(spec.sql)
    keyed = any(
        f"({column}=?" in step or f" {column}=?" in step or "(rowid=?)" in step
        for step in searches
        for column in columns
    )
    if scanned:
        detail = f"reads every row of {', '.join(dict.fromkeys(scanned))}"
    elif not searches:
        detail = "reads no table through an index"
    elif columns and not keyed:
        detail = f"no index on {', '.join(sorted(columns))}"
    else:
        return []
    return [
        Problem(
            line,
            f"{what}: the lookup by {PARAMETER} uses no index ({detail}); "
            "create an index on the column compared with :local_id (and on join columns)",
            fatal=False,
        )
    ]


def adapter_problems(
    conn: sqlite3.Connection, adapters: Sequence[AdapterSpec], lines: ConfigLines | None = None
) -> list[Problem]:
    lines = lines or ConfigLines()
    return [
        problem
        for index, spec in enumerate(adapters)
        for problem in check_adapter(conn, spec, lines.adapter(index))
    ]


def check_config(path: Path) -> list[Problem]:
    """Every problem of the config at `path` and of the database it maps."""
    try:
        text = path.read_text()
    except OSError as exc:
        return [Problem(None, f"cannot read: {exc.strerror}")]
    lines = config_lines(text)
    try:
        config = load_node_config(path)
    except ConfigError as exc:
        return [Problem(_line_of(str(exc), lines), str(exc).removeprefix(f"{path}").lstrip(": "))]
    problems = unknown_settings(load_toml(path), lines)
    records_line = lines.node.get("records_db")
    if config.records_db.resolve() == config.state_db.resolve():
        problems.append(
            Problem(
                lines.node.get("state_db", records_line),
                "state_db must not be the operator's database: credex writes only its own file",
            )
        )
    try:
        db = open_readonly(config.records_db)
    except DatabaseError as exc:
        return [*problems, Problem(records_line, str(exc))]
    try:
        return problems + adapter_problems(db.conn, config.adapters, lines)
    finally:
        db.conn.close()


def unknown_settings(data: dict[str, object], lines: ConfigLines) -> list[Problem]:
    """Tables and keys the node does not know: a misspelt setting would silently keep its
    default."""
    problems = []
    for table, value in data.items():
        if table == "adapter":
            for index, adapter in enumerate(value if isinstance(value, list) else []):
                for key in sorted(set(adapter) - ADAPTER_KEYS) if isinstance(adapter, dict) else ():
                    problems.append(
                        Problem(
                            lines.adapter(index, key), f"unknown setting {key!r} in [[adapter]]"
                        )
                    )
            continue
        if table not in SCHEMA:
            problems.append(Problem(lines.headers.get(table), f"unknown table [{table}]"))
            continue
        for key in sorted(value) if isinstance(value, dict) else ():
            if key not in SCHEMA[table]:
                near = difflib.get_close_matches(key, SCHEMA[table], n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                line = lines.tables.get(table, {}).get(key)
                problems.append(Problem(line, f"unknown setting {key!r} in [{table}]{hint}"))
    return problems


def _line_of(message: str, lines: ConfigLines) -> int | None:
    toml = re.search(r"\(at line (\d+)", message)
    if toml:
        return int(toml.group(1))
    adapter = re.search(r"\[\[adapter\]\] #(\d+)", message)
    if adapter:
        return lines.adapter(int(adapter.group(1)) - 1, "header")
    key = re.search(r"'([A-Za-z0-9_]+)'", message)
    if key:
        return lines.node.get(key.group(1))
    return None


def require_serviceable(problems: Sequence[Problem], path: Path) -> None:
    """ConfigError naming every problem that stops a node serving."""
    fatal = [p for p in problems if p.fatal]
    if fatal:
        raise ConfigError("\n".join(p.render(path) for p in fatal))


def open_source(config: NodeConfig) -> tuple[RecordSource, list[Problem]]:
    """The operator's database through the adapters, read-only; raises ConfigError on any
    problem that stops the node serving and returns the others (slow lookups)."""
    lines = config_lines(config.path.read_text()) if config.path.is_file() else ConfigLines()
    db = open_readonly(config.records_db)
    problems = adapter_problems(db.conn, config.adapters, lines)
    try:
        require_serviceable(problems, config.path)
    except ConfigError:
        db.conn.close()
        raise
    return RecordSource(db, config.adapters), problems
