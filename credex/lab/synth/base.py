"""What every synthetic agency builds on: the regions, the calendar, node specs (tables and
adapters), the subject record and the writer base.

Day offsets count from FIRST_DAY and run 0..END inclusive; DAYS and YEAR_OF index them.
"""

from __future__ import annotations

import keyword
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import count
from pathlib import Path
from random import Random
from typing import (
    Annotated,
    Any,
    Generic,
    NamedTuple,
    ParamSpec,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

P = ParamSpec("P")
T = TypeVar("T")
Row = tuple[object, ...]

REFERENCE_YEAR = 2026
MIN_AGE = 14
MAX_AGE = 35
FIRST_DAY = date(2015, 1, 1)
LAST_DAY = date(2026, 10, 31)
MAX_RECORDS_PER_CATEGORY = 10

CATEGORIES = (
    "identity",
    "volunteering",
    "financial",
    "education",
    "judicial",
    "commercial",
    "civic",
    "employment",
)


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """A pilot area of the youth credit programme, weighted by population (millions)."""

    name: str
    code: str
    population_m: float
    cities: tuple[str, ...]
    court_abbr: str  # the one-character abbreviation used in court case numbers


REGIONS: tuple[Region, ...] = (
    Region("Beijing", "CN-BJ", 21.9, ("Beijing",), "京"),
    Region("Tianjin", "CN-TJ", 13.6, ("Tianjin",), "津"),
    Region("Jiangsu", "CN-JS", 85.3, ("Nanjing", "Suzhou", "Wuxi", "Changzhou", "Xuzhou"), "苏"),
    Region("Zhejiang", "CN-ZJ", 65.8, ("Hangzhou", "Ningbo", "Wenzhou"), "浙"),
    Region("Fujian", "CN-FJ", 41.9, ("Fuzhou", "Xiamen", "Quanzhou"), "闽"),
    Region("Hubei", "CN-HB", 58.4, ("Wuhan", "Yichang", "Xiangyang"), "鄂"),
    Region("Guangdong", "CN-GD", 127.1, ("Guangzhou", "Shenzhen", "Dongguan", "Foshan"), "粤"),
    Region("Ningxia", "CN-NX", 7.3, ("Yinchuan", "Shizuishan"), "宁"),
    Region("Chengdu", "CN-SC", 21.4, ("Chengdu",), "川"),  # a city pilot in Sichuan
)
REGION_BY_NAME = {r.name: r for r in REGIONS}


# --------------------------------------------------------------------------- node specs

# The usual column types of a table's shape (see Table); foreign keys are spelt out in place.
IntegerKey = Annotated[int, "INTEGER PRIMARY KEY"]
TextKey = Annotated[str, "TEXT PRIMARY KEY"]
Integer = Annotated[int, "INTEGER NOT NULL"]
Real = Annotated[float, "REAL NOT NULL"]
Text = Annotated[str, "TEXT NOT NULL"]
TextOrNull = Annotated[str | None, "TEXT"]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a cheap dict key
class Table(Generic[P]):
    """One table of an operator's database, declared by `shape`: a TypedDict whose keys are the
    columns in order, each `Annotated[python_type, "SQL definition"]`, the two agreeing (checked
    here: INTEGER int, REAL float, TEXT str, and `| None` exactly where NULL is allowed).

    Writers add rows through `NodeWriter.adder`, by column name: the shape is the one list of
    columns, so a column added, dropped or moved there cannot leave a writer's rows misaligned.
    """

    name: str
    shape: Callable[P, Mapping[str, object]]
    indexes: tuple[str, ...] = ()
    columns: tuple[str, ...] = field(init=False)  # "name definition", the lines of CREATE TABLE
    _bind: Callable[[Callable[[Row], object]], Callable[P, None]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        hints = get_type_hints(self.shape, include_extras=True)
        names = tuple(hints)
        for name in (self.name, *names):
            if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
                raise ValueError(f"table {self.name}: {name!r} is not a plain identifier")
        if not names or not set(self.indexes) <= set(names):
            raise ValueError(f"table {self.name}: no columns, or indexes not among {names}")
        columns = tuple(_column(self.name, name, hint) for name, hint in hints.items())
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "_bind", _binder(self.name, names))

    def create_sql(self) -> str:
        return f"CREATE TABLE {self.name} (\n    " + ",\n    ".join(self.columns) + "\n)"

    def insert_sql(self) -> str:
        return f"INSERT INTO {self.name} VALUES ({', '.join('?' * len(self.columns))})"

    def index_sql(self) -> list[str]:
        return [f"CREATE INDEX idx_{self.name}_{c} ON {self.name} ({c})" for c in self.indexes]

    def appender(self, append: Callable[[Row], object]) -> Callable[P, None]:
        """A function taking one row's columns as keyword arguments, every one of them, and passing
        `append` a plain tuple of them in column order."""
        return self._bind(append)


_SQL_TYPES: dict[object, str] = {int: "INTEGER", float: "REAL", str: "TEXT"}


def _column(table: str, name: str, hint: object) -> str:
    """The `name definition` line of a shape's key, if its Python type fits its SQL definition."""
    if get_origin(hint) is not Annotated:
        raise TypeError(f"{table}.{name}: declare as Annotated[python_type, 'SQL definition']")
    python_type, definition = get_args(hint)[:2]
    options = get_args(python_type) or (python_type,)  # `str | None` -> (str, NoneType)
    types = [t for t in options if t is not type(None)]
    nullable = "NOT NULL" not in definition and "PRIMARY KEY" not in definition
    if (
        len(types) != 1
        or _SQL_TYPES.get(types[0]) != definition.split()[0]
        or (type(None) in options) != nullable
    ):
        raise TypeError(f"{table}.{name}: {python_type} does not fit {definition!r}")
    return f"{name} {definition}"


def _binder(table: str, names: tuple[str, ...]) -> Any:
    """`bind(append)` -> a function of keyword-only `names` appending them as one tuple.

    Generated like namedtuple's constructor, so that a row costs one call and arrives as an exact
    tuple, which sqlite3 binds fastest; names are identifiers (checked by Table).
    """
    params = ", ".join(names)
    source = (
        f"def bind(_append):\n"
        f"    def {table}(*, {params}):\n"
        f"        _append(({params},))\n"
        f"    return {table}\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - source built from checked identifiers only
    return namespace["bind"]


@dataclass(frozen=True)
class Adapter:
    """One `[[adapter]]` of a node config: a SELECT by `:local_id` yielding one category."""

    category: str
    sql: str


@dataclass(frozen=True)
class NodeSpec:
    """A synthetic node: who operates it, its own tables, and how credex reads them."""

    id: str
    name: str
    jurisdiction: str
    description: str
    tables: tuple[Table[...], ...]
    adapters: tuple[Adapter, ...]
    regions: tuple[str, ...] = ()  # only subjects of these regions; empty: national
    cities: tuple[str, ...] = ()  # only subjects of these cities; empty: every city
    kind: str = ""  # which writer fills its database; empty: the one named like the node

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.category for a in self.adapters))


@dataclass(frozen=True)
class RequesterSpec:
    """A member that asks the directory for profiles."""

    id: str
    name: str
    jurisdiction: str


def sql(text: str) -> str:
    return text.strip("\n") + "\n"


# --------------------------------------------------------------------------- days and ids

END = (LAST_DAY - FIRST_DAY).days  # day offsets run 0..END inclusive
DAYS: tuple[str, ...] = tuple((FIRST_DAY + timedelta(days=i)).isoformat() for i in range(END + 1))
YEAR_OF: tuple[int, ...] = tuple((FIRST_DAY + timedelta(days=i)).year for i in range(END + 1))
_JAN1_BASE = 1980
_JAN1: tuple[int, ...] = tuple((date(y, 1, 1) - FIRST_DAY).days for y in range(_JAN1_BASE, 2060))


def jan1(year: int) -> int:
    """Day offset of 1 January of `year` (negative before FIRST_DAY)."""
    return _JAN1[year - _JAN1_BASE]


def random_day(rng: Random, lo: int, hi: int) -> int:
    """A uniform day offset in [lo, hi]."""
    return lo + int(rng.random() * (hi - lo + 1))


def pick(rng: Random, items: Sequence[T]) -> T:
    return items[int(rng.random() * len(items))]


def _permute(x: int, bits: int, key: int) -> int:
    """A keyed bijection on [0, 2**bits): distinct counters give distinct, random-looking ids."""
    mask = (1 << bits) - 1
    shift = bits // 2 + 1
    x = (x ^ key) & mask
    x = (x * 0x9E3779B97F4A7C15) & mask  # odd multipliers are invertible modulo 2**bits
    x ^= x >> shift
    x = (x * 0xBF58476D1CE4E5B9) & mask
    x ^= x >> shift
    return x


class Subject(NamedTuple):
    id: str
    region: str
    city: str
    birth_year: int
    reliability: float  # latent in (0, 1): higher means more hours, fewer lates and judgments


# --------------------------------------------------------------------------- node writers


class NodeWriter:
    """Writes one operator database: decides who the node knows and appends their rows."""

    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        self.spec = spec
        self.rng = Random(f"credex-lab/{seed}/node/{spec.id}")
        self._id_key = self.rng.getrandbits(64)
        self._known = 0
        # each table's integer keys, 1, 2, 3, ...: `next(self.ids[TABLE])`, cheaper than a method
        self.ids: dict[Table[...], Iterator[int]] = {t: count(1) for t in spec.tables}
        # rows not yet written, by table; flush empties each list in place, as adders append to it
        self._rows: dict[str, list[Row]] = {t.name: [] for t in spec.tables}
        self._insert = {t.name: t.insert_sql() for t in spec.tables}
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        for table in spec.tables:
            self.conn.execute(table.create_sql())

    def person(self, s: Subject) -> str | None:
        """Add the node's rows about `s` and return its local id, or None if it does not know s."""
        raise NotImplementedError

    def local_number(self, bits: int) -> int:
        """The next unique local number of this node, scrambled so it says nothing about order."""
        number = _permute(self._known, bits, self._id_key)
        self._known += 1
        return number

    def adder(self, table: Table[P]) -> Callable[P, None]:
        """Adds rows to `table` by column name (mypy checks names and types against its shape; a
        missing or unknown column raises TypeError)."""
        return table.appender(self._rows[table.name].append)

    def flush(self) -> None:
        for name, rows in self._rows.items():
            if rows:
                self.conn.executemany(self._insert[name], rows)
                rows.clear()
        self.conn.commit()

    def finish(self) -> None:
        self.flush()
        for table in self.spec.tables:
            for statement in table.index_sql():
                self.conn.execute(statement)
        self.conn.commit()
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.close()

    def close(self) -> None:
        self.conn.close()
