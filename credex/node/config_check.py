"""What a node needs of its config and the operator's database, each problem tied to the line of
the config it comes from: the adapters run read-only, take the subject only as the bound
parameter :local_id in a condition every row must meet, return the columns a record needs
(the subject's own id among them) and find the subject through an index. With a sample id,
every adapter also runs on real rows and each row is checked as the node would serve it."""

from __future__ import annotations

import difflib
import itertools
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from credex.node.adapter_sql import Token, Tying, Unsupported, code_positions, tokens
from credex.node.adapters import (
    LOCAL_ID,
    MAX_RECORDS_PER_QUERY,
    REQUIRED_COLUMNS,
    AdapterError,
    RecordSource,
    checked_rows,
    to_record,
)
from credex.node.config import SCHEMA, AdapterSpec, NodeConfig, load_node_config
from credex.protocol import vocab
from credex.protocol.config import ConfigError, load_toml
from credex.runtime.db import DatabaseError, open_readonly

ADAPTER_KEYS = frozenset({"category", "sql"})
PARAMETER = ":local_id"


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where the config says it. A problem that is not `fatal` does not stop
    the node serving (a sample id without rows to check)."""

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


def parameters(sql: str) -> list[str]:
    """The bound parameters of `sql` as written (`?`, `?1`, `:name`, `@name`, `$name`)."""
    kept = [" "] * len(sql)
    for position, ch in code_positions(sql):
        kept[position] = ch
    text = "".join(kept)
    # `$`, `:` and `@` start a parameter only where no name continues (amount$usd is a name).
    return re.findall(r"\?\d*|(?<![A-Za-z0-9_$])[:@$][A-Za-z0-9_]+", text)


def first_keyword(sql: str) -> str:
    kept = "".join(ch for _, ch in code_positions(sql)).strip()
    match = re.match(r"[A-Za-z]+", kept)
    return match.group(0).upper() if match else ""


# --------------------------------------------------------------------------- the subject


def _depths(toks: Sequence[Token]) -> list[int]:
    """Each token's nesting level: inside parentheses or CASE … END it is one deeper (the
    brackets and the CASE and END keywords themselves are at the outer level)."""
    depths, depth = [], 0
    for tok in toks:
        if tok.text == ")" or tok.word == "END":
            depth = max(0, depth - 1)
        depths.append(depth)
        if tok.text == "(" or tok.word == "CASE":
            depth += 1
    return depths


# What ends a WHERE clause at its own level.
_CLAUSE_END = frozenset(
    {"GROUP", "ORDER", "LIMIT", "HAVING", "WINDOW", "UNION", "INTERSECT", "EXCEPT", "RETURNING"}
)
COMPOUND = frozenset({"UNION", "INTERSECT", "EXCEPT"})


@dataclass(frozen=True)
class WhereClause:
    start: int  # the WHERE token
    end: int  # one past its last token
    depth: int


def _where_clauses(toks: Sequence[Token], depths: Sequence[int]) -> list[WhereClause]:
    clauses = []
    for w, tok in enumerate(toks):
        if tok.word != "WHERE":
            continue
        d, j = depths[w], w + 1
        while j < len(toks) and depths[j] >= d:
            if depths[j] == d and (toks[j].word in _CLAUSE_END or toks[j].text == ";"):
                break
            j += 1
        clauses.append(WhereClause(w, j, d))
    return clauses


def _top_level_or(toks: Sequence[Token], depths: Sequence[int], clause: WhereClause) -> bool:
    return any(
        toks[j].word == "OR" and depths[j] == clause.depth for j in range(clause.start, clause.end)
    )


def _column_before(toks: Sequence[Token], i: int) -> tuple[str, int] | None:
    """The column name written just before token `i` (`col` or `table.col`), and where it
    starts."""
    if i < 1 or toks[i - 1].kind not in ("word", "name"):
        return None
    start = i - 1
    if start >= 2 and toks[start - 1].text == "." and toks[start - 2].kind in ("word", "name"):
        start -= 2
    return toks[i - 1].text.lower(), start


def _anchor(
    toks: Sequence[Token], depths: Sequence[int], i: int, clause: WhereClause
) -> str | None:
    """The column the subject's id at token `i` is compared with, if the comparison is a
    condition every row of `clause` must meet: `col = :local_id`, `:local_id = col` or
    `col IN (:local_id)`, standing between WHERE/AND and AND/the clause's end."""
    d = clause.depth

    def equals(j: int) -> bool:
        return 0 <= j < len(toks) and (toks[j].text in ("=", "==") or toks[j].word == "IS")

    def bounded(first: int, after: int) -> bool:
        before = toks[first - 1].word in ("WHERE", "AND") and depths[first - 1] == d
        return before and (
            after >= clause.end or (toks[after].word == "AND" and depths[after] == d)
        )

    if depths[i] == d and equals(i - 1):
        left = _column_before(toks, i - 1)
        if left is not None and bounded(left[1], i + 1):
            return left[0]
    if depths[i] == d and equals(i + 1):
        right = _column_after(toks, i + 2)
        if right is not None and bounded(i, right[1]):
            return right[0]
    in_list = i >= 3 and i + 1 < len(toks) and toks[i - 1].text == "(" and toks[i + 1].text == ")"
    if depths[i] == d + 1 and in_list and toks[i - 2].word == "IN":
        left = _column_before(toks, i - 2)
        if left is not None and bounded(left[1], i + 2):
            return left[0]
    return None


def _column_after(toks: Sequence[Token], j: int) -> tuple[str, int] | None:
    """The column name written from token `j` on (`col` or `table.col`), and where it ends."""
    if j >= len(toks) or toks[j].kind not in ("word", "name"):
        return None
    if j + 2 < len(toks) and toks[j + 1].text == "." and toks[j + 2].kind in ("word", "name"):
        return toks[j + 2].text.lower(), j + 3
    return toks[j].text.lower(), j + 1


def subject_problem(sql: str) -> str | None:
    """Why the SQL can return rows of subjects other than :local_id, as far as its text shows:
    a compound SELECT, or a :local_id that is not a condition every row must meet."""
    toks = tokens(sql)
    compound = sorted({t.word for t in toks} & COMPOUND)
    if compound:
        return (
            f"a compound SELECT ({', '.join(compound)}) can return rows of other subjects; "
            "map each SELECT as an [[adapter]] of its own"
        )
    depths = _depths(toks)
    clauses = _where_clauses(toks, depths)
    for i, tok in enumerate(toks):
        if tok.kind != "param":
            continue
        around = [c for c in clauses if c.start < i < c.end]
        if not around:
            return (
                f"{PARAMETER} appears outside a WHERE clause (a result column or a JOIN's ON "
                "taken from it would let rows of other subjects through); compare it in the "
                f"WHERE clause only, as `column = {PARAMETER}`"
            )
        if any(_top_level_or(toks, depths, c) for c in around):
            return (
                f"its WHERE clause joins the condition on {PARAMETER} with OR, so it can "
                f"return rows of other subjects; make `column = {PARAMETER}` a condition "
                "every row must meet (joined with AND)"
            )
        innermost = max(around, key=lambda c: c.start)
        if _anchor(toks, depths, i, innermost) is None:
            return (
                f"{PARAMETER} must be compared with a column (`column = {PARAMETER}`) as a "
                "condition every row must meet (joined with AND), or the query can return "
                "rows of other subjects"
            )
    return None


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
    broad = subject_problem(spec.sql)
    if broad:
        return [Problem(line, f"{what}: {broad}")]
    names = [d[0] for d in cursor.description or ()]
    columns = set(names)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return [
            Problem(
                line,
                f"{what}: column(s) {', '.join(twice)} returned more than once; name each "
                "column of a row once",
            )
        ]
    if LOCAL_ID not in columns:
        return [
            Problem(
                line,
                f"{what}: every row must say whose it is: add the column compared with "
                f"{PARAMETER} as {LOCAL_ID} (e.g. `SELECT t.customer_id AS {LOCAL_ID}, …`)",
            )
        ]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [Problem(line, f"{what}: query lacks column(s) {', '.join(missing)}")]
    try:  # as the node runs it: with SQLite's word on whose each row is
        checked_rows(conn, spec.sql, "")[1].close()
    except (sqlite3.Error, sqlite3.Warning) as exc:
        return [Problem(line, f"{what}: query fails as a subquery: {exc}")]
    return _plan_problems(conn, spec, line, what)


_SUBQUERY = (
    "SCALAR SUBQUERY",
    "CORRELATED SCALAR SUBQUERY",
    "LIST SUBQUERY",
    "CORRELATED LIST SUBQUERY",
    "MATERIALIZE",
    "CO-ROUTINE",
    "SUBQUERY",
)


def _plan_problems(
    conn: sqlite3.Connection, spec: AdapterSpec, line: int | None, what: str
) -> list[Problem]:
    """Every table the SELECT names, in every scope, is tied to the subject
    (credex.node.adapter_sql), and per EXPLAIN QUERY PLAN each is found through a search on a
    column so tied: none is read in full, no lookup combines indexes with OR. Otherwise the
    query can return (or carry in a row's columns) other subjects' data, or is slow."""
    try:
        tying = Tying(conn, spec.sql)
    except Unsupported as exc:
        return [
            Problem(
                line,
                f"{what}: cannot tell that every row is the subject's, so it may return rows "
                f"of other subjects: {exc}",
            )
        ]
    steps = conn.execute(f"EXPLAIN QUERY PLAN {spec.sql}", {"local_id": ""}).fetchall()
    details = [str(row[3]) for row in steps]
    subqueries = {d.split()[-1] for d in details if d.startswith(_SUBQUERY)}
    derived = {r.alias for r in tying.refs if r.table is None and r.body is not None}
    tables = {r.alias for r in tying.refs if r.table is not None}
    scanned: list[str] = []
    unknown: list[str] = []
    unkeyed: dict[str, set[str]] = {}
    searched = False
    for text in details:
        words = text.split()
        if words[:2] in (["SCAN", "TABLE"], ["SEARCH", "TABLE"]):  # SQLite before 3.36
            words = [words[0], words[4] if words[3:4] == ["AS"] else words[2], *words[3:]]
        if text.startswith("MULTI-INDEX OR"):
            scanned.append("rows found by OR")
        elif words[0] == "SCAN" and text != "SCAN CONSTANT ROW":
            name = words[1].lower()
            if name in tables or not (name in subqueries or name in derived or name[0] == "("):
                scanned.append(words[1])
        elif words[0] == "SEARCH":
            searched = True
            name = words[1].lower()
            refs = [i for i, r in enumerate(tying.refs) if r.alias == name and r.table]
            if "AUTOMATIC" in text:
                scanned.append(words[1])
            elif not refs:
                if name not in derived:
                    unknown.append(words[1])
            else:
                by = _searched_by(text)
                for ref in refs:
                    columns = tying.search_columns(ref)
                    if not by & columns:
                        unkeyed.setdefault(words[1], set()).update(columns)
    untied = tying.untied()
    if untied:
        names = ", ".join(
            r.name if r.table is None or r.name.lower() == r.table else f"{r.name} ({r.table})"
            for r in untied
        )
        return [
            Problem(
                line,
                f"{what}: can return rows of other subjects: {names} "
                f"{'is' if len(untied) == 1 else 'are'} not found through the subject; find "
                f"every table through a column compared with {PARAMETER}, a column of the same "
                "type equal to one (`JOIN t AS b ON b.stu = a.stu`), or the key of a row so "
                "found (`JOIN payments AS p ON p.loan_id = l.loan_id`), in conditions every row "
                "meets (joined with AND)",
            )
        ]
    if scanned:
        problem = f"reads every row of {', '.join(dict.fromkeys(scanned))}"
    elif unknown:
        problem = f"reads {', '.join(dict.fromkeys(unknown))}, which the SELECT does not name"
    elif not searched:
        problem = "reads no table through an index"
    elif unkeyed:
        tied = sorted(set().union(*unkeyed.values()))
        problem = (
            f"finds rows of {', '.join(sorted(unkeyed))} by other columns than "
            f"{', '.join(tied) or 'the one compared with ' + PARAMETER}"
        )
    else:
        return []
    return [
        Problem(
            line,
            f"{what}: the lookup by {PARAMETER} uses no index ({problem}); it would be slow and "
            "may carry other subjects' data: create an index on the column compared with "
            f"{PARAMETER} (and on join columns), and use JOINs rather than subqueries",
        )
    ]


def _searched_by(detail: str) -> set[str]:
    """The columns a SEARCH step of the plan finds rows by equality on, lower-case: `c` of
    `USING INDEX i (c=? AND d>?)`, `rowid` of `USING INTEGER PRIMARY KEY (rowid=?)`."""
    start, end = detail.find(" ("), detail.rfind(")")
    if start == -1 or end < start:
        return set()
    terms = detail[start + 2 : end].split(" AND ")
    return {m.group(1).lower() for t in terms if (m := re.fullmatch(r"([A-Za-z0-9_]+)=\?", t))}


def adapter_problems(
    conn: sqlite3.Connection, adapters: Sequence[AdapterSpec], lines: ConfigLines | None = None
) -> list[Problem]:
    lines = lines or ConfigLines()
    return [
        problem
        for index, spec in enumerate(adapters)
        for problem in check_adapter(conn, spec, lines.adapter(index))
    ]


# Occurrence times a record may plausibly carry (a year of 19 or 22 is a typo, not a fact).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(2200, 1, 1, tzinfo=UTC).timestamp()
MAX_PROBLEMS_PER_ADAPTER = 5


def row_problems(category: vocab.Category, row: dict[str, object]) -> list[str]:
    """What is wrong with one of the subject's rows, as the node would serve it."""
    found = [f"column {name} is a blob" for name, v in row.items() if isinstance(v, bytes)]
    value = row.get("value")
    if value is not None and not isinstance(value, int | float):
        found.append(f"record {row.get('record_id')!r}: value {value!r} is not a number")
    if row.get("unit") is not None and not isinstance(row.get("unit"), str):
        found.append(f"record {row.get('record_id')!r}: unit {row.get('unit')!r} is not text")
    try:
        record = to_record(category, row)
    except AdapterError as exc:
        return [*found, str(exc)]
    when = record.occurred_at.seconds
    if not EARLIEST <= when < LATEST:
        found.append(
            f"record {record.record_id!r}: occurred_at {row.get('occurred_at')!r} is not "
            "between 1900 and 2200"
        )
    return found


def sample_problems(
    conn: sqlite3.Connection,
    adapters: Sequence[AdapterSpec],
    sample_id: str,
    lines: ConfigLines | None = None,
) -> list[Problem]:
    """Run every adapter for a real subject's id and check each row it returns (whose it is,
    types, dates, finite values) and that no record id repeats within a category."""
    lines = lines or ConfigLines()
    problems: list[Problem] = []
    seen: dict[vocab.Category, set[str]] = {}
    total = 0
    for index, spec in enumerate(adapters):
        what = f"adapter for {vocab.category_name(spec.category)} with {PARAMETER} = {sample_id!r}"
        try:
            _, checked = checked_rows(conn, spec.sql, sample_id)
            rows = list(itertools.islice(checked, MAX_RECORDS_PER_QUERY + 1))
            checked.close()
        except (sqlite3.Error, sqlite3.Warning) as exc:
            problems.append(Problem(lines.adapter(index), f"{what}: query fails: {exc}"))
            continue
        found: list[str] = []
        if len(rows) > MAX_RECORDS_PER_QUERY:
            found.append(f"returns more than {MAX_RECORDS_PER_QUERY} rows")
        ids = seen.setdefault(spec.category, set())
        foreign: list[dict[str, object]] = []
        for row, own in rows[:MAX_RECORDS_PER_QUERY]:
            if not own:
                foreign.append(row)
                continue
            found += row_problems(spec.category, row)
            record_id = str(row.get("record_id"))
            if record_id in ids:
                found.append(f"record id {record_id!r} is returned twice in the category")
            ids.add(record_id)
        total += len(rows)
        if foreign:
            found.insert(
                0,
                f"returns {len(foreign)} row(s) of another subject (the first: {LOCAL_ID} "
                f"{foreign[0].get(LOCAL_ID)!r}, record {foreign[0].get('record_id')!r}): the "
                "query selects more than the subject's rows",
            )
        unique = list(dict.fromkeys(found))
        if len(unique) > MAX_PROBLEMS_PER_ADAPTER:
            more = len(unique) - MAX_PROBLEMS_PER_ADAPTER
            unique = [*unique[:MAX_PROBLEMS_PER_ADAPTER], f"and {more} more problems"]
        problems += [Problem(lines.adapter(index), f"{what}: {message}") for message in unique]
    if not total:
        problems.append(
            Problem(
                None,
                f"no adapter returned a row for {sample_id!r}: give the id of a subject who "
                "has records, so that real rows are checked",
                fatal=False,
            )
        )
    return problems


def check_config(path: Path, sample_id: str | None = None) -> list[Problem]:
    """Every problem of the config at `path` and of the database it maps; with `sample_id`,
    also of the rows every adapter returns for that subject."""
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
        problems += adapter_problems(db.conn, config.adapters, lines)
        if sample_id is not None and not any(p.fatal for p in problems):
            problems += sample_problems(db.conn, config.adapters, sample_id, lines)
        return problems
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
    problem that stops the node serving and returns the others."""
    lines = config_lines(config.path.read_text()) if config.path.is_file() else ConfigLines()
    db = open_readonly(config.records_db)
    problems = adapter_problems(db.conn, config.adapters, lines)
    try:
        require_serviceable(problems, config.path)
    except ConfigError:
        db.conn.close()
        raise
    return RecordSource(db, config.adapters), problems
