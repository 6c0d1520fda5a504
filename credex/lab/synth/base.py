"""What every synthetic agency builds on: the regions, the calendar, node specs (tables and
adapters), the subject record and the writer base.

Day offsets count from FIRST_DAY and run 0..END inclusive; DAYS and YEAR_OF index them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import NamedTuple

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


@dataclass(frozen=True)
class Table:
    """One table of an operator's database: column definitions and the columns to index."""

    name: str
    columns: tuple[str, ...]
    indexes: tuple[str, ...] = ()

    def create_sql(self) -> str:
        return f"CREATE TABLE {self.name} (\n    " + ",\n    ".join(self.columns) + "\n)"

    def insert_sql(self) -> str:
        return f"INSERT INTO {self.name} VALUES ({', '.join('?' * len(self.columns))})"

    def index_sql(self) -> list[str]:
        return [f"CREATE INDEX idx_{self.name}_{c} ON {self.name} ({c})" for c in self.indexes]


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
    tables: tuple[Table, ...]
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


def pick(rng: Random, items: Sequence[str]) -> str:
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

Row = tuple[object, ...]


class NodeWriter:
    """Writes one operator database: decides who the node knows and appends their rows."""

    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        self.spec = spec
        self.rng = Random(f"credex-lab/{seed}/node/{spec.id}")
        self._id_key = self.rng.getrandbits(64)
        self._known = 0
        self._ids: dict[str, int] = {t.name: 0 for t in spec.tables}
        self.rows: dict[str, list[Row]] = {t.name: [] for t in spec.tables}
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

    def next_id(self, table: str) -> int:
        self._ids[table] += 1
        return self._ids[table]

    def flush(self) -> None:
        for name, rows in self.rows.items():
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
