"""A seeded, reproducible synthetic federation: young subjects, and agency nodes that each keep
their own SQLite database, schema and identifiers, so cross-agency queries can be tested at scale.

Layout written by `generate(out)`:

    out/federation.toml                 seed, subject count, nodes, requesters (see `load_manifest`)
    out/subjects.csv                    subject_id,region,birth_year,public_key
    out/locator.csv                     subject_id,node_id,local_id (the directory's record locator)
    out/nodes/<node_id>/records.db      the operator's own database
    out/nodes/<node_id>/node.toml       the node's credex config with its adapters

Subjects and every node draw from their own `random.Random` stream, consumed in subject order, so
the same seed and count give byte-identical CSV/TOML files and identical tables, and the first N
subjects of a larger generation are the same as those of a generation of N.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import tomllib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import Any, NamedTuple, Protocol

from credex.lab.identities import subject_key

REFERENCE_YEAR = 2026
MIN_AGE = 14
MAX_AGE = 35
FIRST_DAY = date(2015, 1, 1)
LAST_DAY = date(2026, 10, 31)
MAX_SUBJECTS = 9_999_999  # subject ids are S + 7 digits
MAX_RECORDS_PER_CATEGORY = 10
CHUNK_SUBJECTS = 5_000

FEDERATION_FILE = "federation.toml"
SUBJECTS_FILE = "subjects.csv"
LOCATOR_FILE = "locator.csv"
NODES_DIR = "nodes"
RECORDS_DB = "records.db"
NODE_CONFIG = "node.toml"
_PARTIAL = ".partial"

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
_REGION_BY_NAME = {r.name: r for r in REGIONS}
_REGION_CUMULATIVE: tuple[float, ...] = tuple(
    sum(r.population_m for r in REGIONS[: i + 1]) for i in range(len(REGIONS))
)
_JIANGSU_CITY_CODES = {
    "Nanjing": 3201,
    "Wuxi": 3202,
    "Xuzhou": 3203,
    "Changzhou": 3204,
    "Suzhou": 3205,
}


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


def _sql(text: str) -> str:
    return text.strip("\n") + "\n"


NODE_SPECS: tuple[NodeSpec, ...] = (
    NodeSpec(
        id="volunteer-registry",
        name="China Volunteer Service Registry",
        jurisdiction="CN",
        description="national volunteer service registry: volunteers, service hours, star awards",
        tables=(
            Table(
                "volunteers",
                (
                    "volunteer_no TEXT PRIMARY KEY",
                    "registered_on TEXT NOT NULL",
                    "home_city TEXT NOT NULL",
                    "birth_year INTEGER NOT NULL",
                    "status TEXT NOT NULL",
                ),
            ),
            Table(
                "service_hours",
                (
                    "entry_id INTEGER PRIMARY KEY",
                    "volunteer_no TEXT NOT NULL REFERENCES volunteers (volunteer_no)",
                    "served_on TEXT NOT NULL",
                    "hours REAL NOT NULL",
                    "organisation TEXT NOT NULL",
                    "activity TEXT NOT NULL",
                ),
                ("volunteer_no",),
            ),
            Table(
                "awards",
                (
                    "award_id INTEGER PRIMARY KEY",
                    "volunteer_no TEXT NOT NULL REFERENCES volunteers (volunteer_no)",
                    "awarded_on TEXT NOT NULL",
                    "star_level INTEGER NOT NULL",
                    "title TEXT NOT NULL",
                    "hours_at_award REAL NOT NULL",
                ),
                ("volunteer_no",),
            ),
        ),
        adapters=(
            Adapter(
                "volunteering",
                _sql("""
SELECT 'hours-' || h.entry_id AS record_id, 'volunteer_hours' AS kind, h.hours AS value,
       'hours' AS unit, h.served_on AS occurred_at, h.organisation AS organisation,
       h.activity AS activity,
       v.volunteer_no AS local_id
FROM service_hours AS h JOIN volunteers AS v ON v.volunteer_no = h.volunteer_no
WHERE v.volunteer_no = :local_id
"""),
            ),
            Adapter(
                "volunteering",
                _sql("""
SELECT 'award-' || a.award_id AS record_id, 'volunteer_award' AS kind, a.star_level AS value,
       'stars' AS unit, a.awarded_on AS occurred_at, a.title AS title,
       a.volunteer_no AS local_id
FROM awards AS a
WHERE a.volunteer_no = :local_id
"""),
            ),
        ),
    ),
    NodeSpec(
        id="pboc-credit-reference",
        name="PBOC Credit Reference Center",
        jurisdiction="CN",
        description="central-bank credit reference: borrowers, loans, repayments, defaults",
        tables=(
            Table(
                "borrowers",
                (
                    "borrower_id INTEGER PRIMARY KEY",
                    "file_opened_on TEXT NOT NULL",
                    "region_code TEXT NOT NULL",
                ),
            ),
            Table(
                "loans",
                (
                    "loan_id INTEGER PRIMARY KEY",
                    "borrower_id INTEGER NOT NULL REFERENCES borrowers (borrower_id)",
                    "lender TEXT NOT NULL",
                    "product TEXT NOT NULL",
                    "principal REAL NOT NULL",
                    "currency TEXT NOT NULL",
                    "opened_on TEXT NOT NULL",
                    "status TEXT NOT NULL",
                ),
                ("borrower_id",),
            ),
            Table(
                "repayments",
                (
                    "repayment_id INTEGER PRIMARY KEY",
                    "loan_id INTEGER NOT NULL REFERENCES loans (loan_id)",
                    "due_on TEXT NOT NULL",
                    "days_late INTEGER NOT NULL",
                    "amount REAL NOT NULL",
                ),
                ("loan_id",),
            ),
            Table(
                "defaults",
                (
                    "default_id INTEGER PRIMARY KEY",
                    "loan_id INTEGER NOT NULL REFERENCES loans (loan_id)",
                    "declared_on TEXT NOT NULL",
                    "outstanding REAL NOT NULL",
                ),
                ("loan_id",),
            ),
        ),
        adapters=(
            Adapter(
                "financial",
                _sql("""
SELECT 'loan-' || l.loan_id AS record_id, 'loan_opened' AS kind, l.principal AS value,
       l.currency AS unit, l.opened_on AS occurred_at, l.lender AS lender, l.product AS product,
       l.status AS status,
       l.borrower_id AS local_id
FROM loans AS l
WHERE l.borrower_id = :local_id
"""),
            ),
            Adapter(
                "financial",
                _sql("""
SELECT 'repayment-' || r.repayment_id AS record_id,
       CASE WHEN r.days_late > 0 THEN 'loan_repaid_late' ELSE 'loan_repaid_on_time' END AS kind,
       r.days_late AS value, 'days_late' AS unit, r.due_on AS occurred_at,
       r.amount AS amount, l.lender AS lender, l.product AS product,
       l.borrower_id AS local_id
FROM repayments AS r JOIN loans AS l ON l.loan_id = r.loan_id
WHERE l.borrower_id = :local_id
"""),
            ),
            Adapter(
                "financial",
                _sql("""
SELECT 'default-' || d.default_id AS record_id, 'loan_default' AS kind, d.outstanding AS value,
       l.currency AS unit, d.declared_on AS occurred_at, l.lender AS lender, l.product AS product,
       l.borrower_id AS local_id
FROM defaults AS d JOIN loans AS l ON l.loan_id = d.loan_id
WHERE l.borrower_id = :local_id
"""),
            ),
        ),
    ),
    NodeSpec(
        id="education-ministry",
        name="Ministry of Education Student Register",
        jurisdiction="CN",
        description="national student register (xueji): enrolments and qualifications",
        tables=(
            Table(
                "students",
                (
                    "student_no TEXT PRIMARY KEY",
                    "birth_year INTEGER NOT NULL",
                    "home_city TEXT NOT NULL",
                    "registered_on TEXT NOT NULL",
                ),
            ),
            Table(
                "enrollments",
                (
                    "enrollment_id INTEGER PRIMARY KEY",
                    "student_no TEXT NOT NULL REFERENCES students (student_no)",
                    "institution TEXT NOT NULL",
                    "level TEXT NOT NULL",
                    "isced_level INTEGER NOT NULL",
                    "enrolled_on TEXT NOT NULL",
                    "status TEXT NOT NULL",
                ),
                ("student_no",),
            ),
            Table(
                "degrees",
                (
                    "degree_id INTEGER PRIMARY KEY",
                    "student_no TEXT NOT NULL REFERENCES students (student_no)",
                    "institution TEXT NOT NULL",
                    "qualification TEXT NOT NULL",
                    "awarded_on TEXT NOT NULL",
                    "final_score REAL NOT NULL",
                ),
                ("student_no",),
            ),
        ),
        adapters=(
            Adapter(
                "education",
                _sql("""
SELECT 'enrollment-' || e.enrollment_id AS record_id, 'enrollment' AS kind,
       e.isced_level AS value, 'isced_level' AS unit, e.enrolled_on AS occurred_at,
       e.institution AS institution, e.level AS level, e.status AS status,
       e.student_no AS local_id
FROM enrollments AS e
WHERE e.student_no = :local_id
"""),
            ),
            Adapter(
                "education",
                _sql("""
SELECT 'degree-' || d.degree_id AS record_id, 'degree' AS kind, d.final_score AS value,
       'percent' AS unit, d.awarded_on AS occurred_at, d.institution AS institution,
       d.qualification AS qualification,
       d.student_no AS local_id
FROM degrees AS d
WHERE d.student_no = :local_id
"""),
            ),
        ),
    ),
    NodeSpec(
        id="court-enforcement",
        name="Supreme People's Court Enforcement Information",
        jurisdiction="CN",
        description="court judgments and the list of dishonest judgment debtors",
        tables=(
            Table(
                "parties",
                (
                    "party_id TEXT PRIMARY KEY",
                    "party_type TEXT NOT NULL",
                    "birth_year INTEGER NOT NULL",
                    "home_city TEXT NOT NULL",
                ),
            ),
            Table(
                "judgments",
                (
                    "judgment_id INTEGER PRIMARY KEY",
                    "party_id TEXT NOT NULL REFERENCES parties (party_id)",
                    "case_no TEXT NOT NULL",
                    "court TEXT NOT NULL",
                    "decided_on TEXT NOT NULL",
                    "cause TEXT NOT NULL",
                    "amount REAL NOT NULL",
                ),
                ("party_id",),
            ),
            Table(
                "dishonest_debtors",
                (
                    "listing_id INTEGER PRIMARY KEY",
                    "party_id TEXT NOT NULL REFERENCES parties (party_id)",
                    "case_no TEXT NOT NULL",
                    "court TEXT NOT NULL",
                    "listed_on TEXT NOT NULL",
                    "delisted_on TEXT",
                    "obligation TEXT NOT NULL",
                    "amount_unpaid REAL NOT NULL",
                ),
                ("party_id",),
            ),
        ),
        adapters=(
            Adapter(
                "judicial",
                _sql("""
SELECT 'judgment-' || j.judgment_id AS record_id, 'judgment' AS kind, j.amount AS value,
       'CNY' AS unit, j.decided_on AS occurred_at, j.case_no AS case_no, j.court AS court,
       j.cause AS cause,
       j.party_id AS local_id
FROM judgments AS j
WHERE j.party_id = :local_id
"""),
            ),
            Adapter(
                "judicial",
                _sql("""
SELECT 'listing-' || d.listing_id AS record_id, 'dishonest_debtor' AS kind,
       d.amount_unpaid AS value, 'CNY' AS unit, d.listed_on AS occurred_at,
       d.case_no AS case_no, d.court AS court, d.obligation AS obligation,
       CASE WHEN d.delisted_on IS NULL THEN 'listed' ELSE 'delisted' END AS status,
       COALESCE(d.delisted_on, '') AS delisted_on,
       d.party_id AS local_id
FROM dishonest_debtors AS d
WHERE d.party_id = :local_id
"""),
            ),
        ),
    ),
    NodeSpec(
        id="zhima-commercial",
        name="Zhima Credit",
        jurisdiction="CN",
        description="a licensed commercial credit company: accounts and bill payment events",
        tables=(
            Table(
                "accounts",
                (
                    "uid INTEGER PRIMARY KEY",
                    "opened_on TEXT NOT NULL",
                    "city TEXT NOT NULL",
                    "verified INTEGER NOT NULL",
                ),
            ),
            Table(
                "payment_events",
                (
                    "event_id INTEGER PRIMARY KEY",
                    "uid INTEGER NOT NULL REFERENCES accounts (uid)",
                    "merchant_category TEXT NOT NULL",
                    "merchant TEXT NOT NULL",
                    "due_on TEXT NOT NULL",
                    "days_late INTEGER NOT NULL",
                    "amount REAL NOT NULL",
                ),
                ("uid",),
            ),
        ),
        adapters=(
            Adapter(
                "commercial",
                _sql("""
SELECT 'payment-' || p.event_id AS record_id, 'payment_on_time' AS kind, p.amount AS value,
       'CNY' AS unit, p.due_on AS occurred_at, p.merchant AS merchant,
       p.merchant_category AS merchant_category,
       p.uid AS local_id
FROM payment_events AS p
WHERE p.uid = :local_id AND p.days_late = 0
"""),
            ),
            Adapter(
                "commercial",
                _sql("""
SELECT 'payment-' || p.event_id AS record_id, 'payment_late' AS kind, p.days_late AS value,
       'days_late' AS unit, p.due_on AS occurred_at, p.merchant AS merchant,
       p.merchant_category AS merchant_category, p.amount AS amount,
       p.uid AS local_id
FROM payment_events AS p
WHERE p.uid = :local_id AND p.days_late > 0
"""),
            ),
        ),
    ),
    NodeSpec(
        id="jiangsu-pilot",
        name="Jiangsu Youth Credit Pilot",
        jurisdiction="CN-JS",
        description="provincial pilot: community commendations and traffic violations in Jiangsu",
        tables=(
            Table(
                "residents",
                (
                    "resident_code TEXT PRIMARY KEY",
                    "city TEXT NOT NULL",
                    "enrolled_on TEXT NOT NULL",
                ),
            ),
            Table(
                "commendations",
                (
                    "commendation_id INTEGER PRIMARY KEY",
                    "resident_code TEXT NOT NULL REFERENCES residents (resident_code)",
                    "awarded_on TEXT NOT NULL",
                    "award TEXT NOT NULL",
                    "issuer TEXT NOT NULL",
                    "points INTEGER NOT NULL",
                ),
                ("resident_code",),
            ),
            Table(
                "traffic_violations",
                (
                    "violation_id INTEGER PRIMARY KEY",
                    "resident_code TEXT NOT NULL REFERENCES residents (resident_code)",
                    "occurred_on TEXT NOT NULL",
                    "offence TEXT NOT NULL",
                    "penalty_points INTEGER NOT NULL",
                    "fine REAL NOT NULL",
                ),
                ("resident_code",),
            ),
        ),
        adapters=(
            Adapter(
                "civic",
                _sql("""
SELECT 'commendation-' || c.commendation_id AS record_id, 'commendation' AS kind,
       c.points AS value, 'points' AS unit, c.awarded_on AS occurred_at, c.award AS award,
       c.issuer AS issuer,
       c.resident_code AS local_id
FROM commendations AS c
WHERE c.resident_code = :local_id
"""),
            ),
            Adapter(
                "civic",
                _sql("""
SELECT 'violation-' || t.violation_id AS record_id, 'traffic_violation' AS kind,
       t.penalty_points AS value, 'penalty_points' AS unit, t.occurred_on AS occurred_at,
       t.offence AS offence, t.fine AS fine_cny,
       t.resident_code AS local_id
FROM traffic_violations AS t
WHERE t.resident_code = :local_id
"""),
            ),
        ),
        regions=("Jiangsu",),
    ),
    NodeSpec(
        id="guangdong-pilot",
        name="Guangdong Youth Credit Pilot",
        jurisdiction="CN-GD",
        description="provincial pilot with its own point scheme: merits and demerits in one ledger",
        tables=(
            Table(
                "citizens",
                (
                    "citizen_ref TEXT PRIMARY KEY",
                    "city TEXT NOT NULL",
                    "enrolled_on TEXT NOT NULL",
                ),
            ),
            Table(
                "credit_events",
                (
                    "event_id INTEGER PRIMARY KEY",
                    "citizen_ref TEXT NOT NULL REFERENCES citizens (citizen_ref)",
                    "event_date TEXT NOT NULL",
                    "event_type TEXT NOT NULL",
                    "score_delta INTEGER NOT NULL",
                    "department TEXT NOT NULL",
                ),
                ("citizen_ref",),
            ),
        ),
        adapters=(
            Adapter(
                "civic",
                _sql("""
SELECT 'event-' || e.event_id AS record_id,
       CASE WHEN e.score_delta >= 0 THEN 'civic_merit' ELSE 'civic_demerit' END AS kind,
       e.score_delta AS value, 'points' AS unit, e.event_date AS occurred_at,
       e.event_type AS event_type, e.department AS department,
       e.citizen_ref AS local_id
FROM credit_events AS e
WHERE e.citizen_ref = :local_id
"""),
            ),
        ),
        regions=("Guangdong",),
    ),
    NodeSpec(
        id="hrss-employment",
        name="Ministry of Human Resources and Social Security",
        jurisdiction="CN",
        description="social insurance register: employment spells with employer and wage",
        tables=(
            Table(
                "insured_persons",
                (
                    "insurance_no TEXT PRIMARY KEY",
                    "city TEXT NOT NULL",
                    "first_insured_on TEXT NOT NULL",
                ),
            ),
            Table(
                "employment_spells",
                (
                    "spell_id INTEGER PRIMARY KEY",
                    "insurance_no TEXT NOT NULL REFERENCES insured_persons (insurance_no)",
                    "employer TEXT NOT NULL",
                    "industry TEXT NOT NULL",
                    "started_on TEXT NOT NULL",
                    "ended_on TEXT",
                    "monthly_wage REAL NOT NULL",
                    "end_reason TEXT",
                ),
                ("insurance_no",),
            ),
        ),
        adapters=(
            Adapter(
                "employment",
                _sql("""
SELECT 'start-' || s.spell_id AS record_id, 'employment_started' AS kind,
       s.monthly_wage AS value, 'CNY/month' AS unit, s.started_on AS occurred_at,
       s.employer AS employer, s.industry AS industry,
       s.insurance_no AS local_id
FROM employment_spells AS s
WHERE s.insurance_no = :local_id
"""),
            ),
            Adapter(
                "employment",
                _sql("""
SELECT 'end-' || s.spell_id AS record_id, 'employment_ended' AS kind,
       ROUND((julianday(s.ended_on) - julianday(s.started_on)) / 30.44, 1) AS value,
       'months' AS unit, s.ended_on AS occurred_at, s.employer AS employer,
       s.end_reason AS end_reason,
       s.insurance_no AS local_id
FROM employment_spells AS s
WHERE s.insurance_no = :local_id AND s.ended_on IS NOT NULL
"""),
            ),
        ),
    ),
)

REQUESTER_SPECS: tuple[RequesterSpec, ...] = (
    RequesterSpec("bank", "Bank of Jiangsu", "CN-JS"),
    RequesterSpec("school", "Nanjing University", "CN-JS"),
    RequesterSpec("employer", "Huawei Technologies", "CN-GD"),
    RequesterSpec("research", "China Youth and Children Research Center", "CN"),
)

NODE_IDS: tuple[str, ...] = tuple(s.id for s in NODE_SPECS)
DEFAULT_NODES = len(NODE_SPECS)

# --------------------------------------------------------------------------- more nodes
# Larger federations add city civic offices (one per pilot city, knowing only its residents)
# and consumer lenders (national, each knowing a few per cent of adults), interleaved, after
# the eight national and provincial nodes above. Their records use the same kinds as the
# provincial pilot and the credit reference centre, so every scoring policy applies to them.

CITY_CIVIC_TABLES = (
    Table(
        "residents",
        (
            "citizen_no TEXT PRIMARY KEY",
            "district TEXT NOT NULL",
            "registered_on TEXT NOT NULL",
        ),
    ),
    Table(
        "civic_entries",
        (
            "entry_no INTEGER PRIMARY KEY",
            "citizen_no TEXT NOT NULL REFERENCES residents (citizen_no)",
            "recorded_on TEXT NOT NULL",
            "entry_kind TEXT NOT NULL",
            "points INTEGER NOT NULL",
            "detail TEXT NOT NULL",
            "office TEXT NOT NULL",
        ),
        ("citizen_no",),
    ),
)
CITY_CIVIC_ADAPTERS = (
    Adapter(
        "civic",
        _sql("""
SELECT 'entry-' || e.entry_no AS record_id, e.entry_kind AS kind, e.points AS value,
       'points' AS unit, e.recorded_on AS occurred_at, e.detail AS detail, e.office AS office,
       e.citizen_no AS local_id
FROM civic_entries AS e
WHERE e.citizen_no = :local_id
"""),
    ),
)
LENDER_TABLES = (
    Table(
        "customers",
        (
            "customer_ref TEXT PRIMARY KEY",
            "onboarded_on TEXT NOT NULL",
            "city TEXT NOT NULL",
        ),
    ),
    Table(
        "contracts",
        (
            "contract_no TEXT PRIMARY KEY",
            "customer_ref TEXT NOT NULL REFERENCES customers (customer_ref)",
            "product TEXT NOT NULL",
            "principal REAL NOT NULL",
            "signed_on TEXT NOT NULL",
            "status TEXT NOT NULL",
        ),
        ("customer_ref",),
    ),
    Table(
        "instalments",
        (
            "instalment_id INTEGER PRIMARY KEY",
            "contract_no TEXT NOT NULL REFERENCES contracts (contract_no)",
            "due_on TEXT NOT NULL",
            "paid_days_late INTEGER NOT NULL",
            "amount REAL NOT NULL",
        ),
        ("contract_no",),
    ),
)
LENDER_ADAPTERS = (
    Adapter(
        "financial",
        _sql("""
SELECT 'contract-' || c.contract_no AS record_id,
       CASE WHEN c.status = 'written_off' THEN 'loan_default' ELSE 'loan_opened' END AS kind,
       c.principal AS value, 'CNY' AS unit, c.signed_on AS occurred_at, c.product AS product,
       c.status AS status,
       c.customer_ref AS local_id
FROM contracts AS c
WHERE c.customer_ref = :local_id
"""),
    ),
    Adapter(
        "financial",
        _sql("""
SELECT 'instalment-' || i.instalment_id AS record_id,
       CASE WHEN i.paid_days_late > 0 THEN 'loan_repaid_late' ELSE 'loan_repaid_on_time' END
           AS kind,
       i.paid_days_late AS value, 'days_late' AS unit, i.due_on AS occurred_at,
       i.amount AS amount, c.product AS product,
       c.customer_ref AS local_id
FROM instalments AS i JOIN contracts AS c ON c.contract_no = i.contract_no
WHERE c.customer_ref = :local_id
"""),
    ),
)
_NAMED_LENDERS = (
    ("mashang", "Mashang Consumer Finance", "CN-CQ"),
    ("zhaolian", "Zhaolian Consumer Finance", "CN-GD"),
    ("suning-finance", "Suning Consumer Finance", "CN-JS"),
    ("hubei-finance", "Hubei Consumer Finance", "CN-HB"),
    ("xiaomi-finance", "Chongqing Xiaomi Consumer Finance", "CN-CQ"),
    ("haier-finance", "Haier Consumer Finance", "CN-SD"),
    ("ningyin-finance", "Ningbo Bank Consumer Finance", "CN-ZJ"),
    ("xingye-finance", "Xingye Consumer Finance", "CN-FJ"),
)
MAX_NODES = 100


def _city_spec(region: Region, city: str) -> NodeSpec:
    return NodeSpec(
        id=f"civic-{city.lower()}",
        name=f"{city} Civilisation Office",
        jurisdiction=region.code,
        description=f"city civic office of {city}: commendations and violations of its residents",
        tables=CITY_CIVIC_TABLES,
        adapters=CITY_CIVIC_ADAPTERS,
        regions=(region.name,),
        cities=(city,),
        kind="city-civic",
    )


def _lender_spec(n: int) -> NodeSpec:
    if n < len(_NAMED_LENDERS):
        slug, name, jurisdiction = _NAMED_LENDERS[n]
    else:
        number = n - len(_NAMED_LENDERS) + 1
        slug, name, jurisdiction = (
            f"village-bank-{number:03d}",
            f"Village and Township Bank No. {number}",
            "CN",
        )
    return NodeSpec(
        id=f"lender-{slug}",
        name=name,
        jurisdiction=jurisdiction,
        description=f"consumer lender {name}: contracts and instalments of its own customers",
        tables=LENDER_TABLES,
        adapters=LENDER_ADAPTERS,
        kind="lender",
    )


def node_specs(count: int = DEFAULT_NODES) -> tuple[NodeSpec, ...]:
    """The first `count` synthetic nodes: the eight above, then city offices and lenders."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NODES:
        raise ValueError(f"nodes must be an integer from 1 to {MAX_NODES}, got {count!r}")
    cities = [_city_spec(r, c) for r in REGIONS for c in r.cities]
    extra: list[NodeSpec] = []
    lenders = 0
    while len(NODE_SPECS) + len(extra) < count:
        if cities and len(extra) % 2 == 0:
            extra.append(cities.pop(0))
        else:
            extra.append(_lender_spec(lenders))
            lenders += 1
    return (NODE_SPECS + tuple(extra))[:count]


def node_spec(node_id: str) -> NodeSpec:
    """The spec of a synthetic node by id; KeyError names the known ids."""
    for spec in node_specs(MAX_NODES):
        if spec.id == node_id:
            return spec
    raise KeyError(
        f"unknown node {node_id!r} (known: {', '.join(NODE_IDS)}, civic-<city>, lender-…)"
    )


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class NodeEntry:
    """A node of a generated federation; `config` is the path of its node.toml."""

    id: str
    name: str
    jurisdiction: str
    categories: tuple[str, ...]
    config: Path

    @property
    def directory(self) -> Path:
        return self.config.parent


@dataclass(frozen=True)
class RequesterEntry:
    """A requester of a generated federation."""

    id: str
    name: str
    jurisdiction: str


@dataclass(frozen=True)
class Manifest:
    """What `generate` wrote into `out`, as recorded in its federation.toml."""

    out: Path
    seed: int
    subjects: int
    nodes: tuple[NodeEntry, ...]
    requesters: tuple[RequesterEntry, ...]
    # Subjects every node knows (`generate(everywhere=...)`), for full fan-out benchmarks.
    everywhere: tuple[str, ...] = ()

    @property
    def federation_toml(self) -> Path:
        return self.out / FEDERATION_FILE

    @property
    def subjects_csv(self) -> Path:
        return self.out / SUBJECTS_FILE

    @property
    def locator_csv(self) -> Path:
        return self.out / LOCATOR_FILE

    def node(self, node_id: str) -> NodeEntry:
        for entry in self.nodes:
            if entry.id == node_id:
                return entry
        raise KeyError(f"no node {node_id!r} in {self.federation_toml}")

    def requester(self, requester_id: str) -> RequesterEntry:
        for entry in self.requesters:
            if entry.id == requester_id:
                return entry
        raise KeyError(f"no requester {requester_id!r} in {self.federation_toml}")


def load_manifest(out: Path) -> Manifest:
    """Read `out/federation.toml` back; ValueError says what is missing or malformed."""
    path = Path(out) / FEDERATION_FILE
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: no federation manifest (run generate first)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from None
    seed = _get_int(data, "seed", str(path))
    subjects = _get_int(data, "subjects", str(path))
    if subjects < 1:
        raise ValueError(f"{path}: 'subjects' must be at least 1, got {subjects}")
    nodes = []
    for i, raw in enumerate(_get_tables(data, "node", str(path)), 1):
        where = f"{path} [[node]] #{i}"
        categories = raw.get("categories")
        if (
            not isinstance(categories, list)
            or not categories
            or not all(isinstance(c, str) and c in CATEGORIES for c in categories)
        ):
            raise ValueError(f"{where}: 'categories' must be a non-empty list of {CATEGORIES}")
        config = _get_str(raw, "config", where)
        if Path(config).is_absolute() or ".." in Path(config).parts:
            raise ValueError(f"{where}: 'config' must be a path inside {out}, got {config!r}")
        nodes.append(
            NodeEntry(
                id=_get_str(raw, "id", where),
                name=_get_str(raw, "name", where),
                jurisdiction=_get_str(raw, "jurisdiction", where),
                categories=tuple(categories),
                config=Path(out) / config,
            )
        )
    requesters = []
    for i, raw in enumerate(_get_tables(data, "requester", str(path)), 1):
        where = f"{path} [[requester]] #{i}"
        requesters.append(
            RequesterEntry(
                id=_get_str(raw, "id", where),
                name=_get_str(raw, "name", where),
                jurisdiction=_get_str(raw, "jurisdiction", where),
            )
        )
    everywhere = data.get("everywhere", [])
    if not isinstance(everywhere, list) or not all(isinstance(s, str) for s in everywhere):
        raise ValueError(f"{path}: 'everywhere' must be a list of subject ids")
    return Manifest(Path(out), seed, subjects, tuple(nodes), tuple(requesters), tuple(everywhere))


def _get_int(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: '{key}' must be an integer")
    return value


def _get_str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: '{key}' must be a non-empty string")
    return value


def _get_tables(data: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    tables = data.get(key)
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: at least one [[{key}]] table is required")
    return tables


# --------------------------------------------------------------------------- TOML output


def _toml_str(text: str) -> str:
    """A TOML basic string (JSON string syntax is a subset of it for these values)."""
    return json.dumps(text, ensure_ascii=False)


def node_toml(spec: NodeSpec) -> str:
    """The credex node config of a synthetic node; paths are relative to the file."""
    lines = [
        f"# credex node config for a synthetic {spec.description}",
        "",
        "[node]",
        f"id = {_toml_str(spec.id)}",
        f"name = {_toml_str(spec.name)}",
        f"jurisdiction = {_toml_str(spec.jurisdiction)}",
        f'records_db = "{RECORDS_DB}"      # the operator\'s own database; credex opens it'
        " read-only",
        'state_db = "credex-node.db"    # credex\'s own database (request log, nonces)',
        'signing_key = "node.key"       # created by `credex-node init`',
        'directory_key = "directory.pub"  # the directory\'s public key, copied in when the'
        " federation starts",
    ]
    for adapter in spec.adapters:
        if '"""' in adapter.sql or "\\" in adapter.sql:
            raise ValueError(f"{spec.id}: adapter SQL cannot hold triple quotes or backslashes")
        lines += ["", "[[adapter]]", f"category = {_toml_str(adapter.category)}"]
        lines.append(f'sql = """\n{adapter.sql}"""')
    return "\n".join(lines) + "\n"


def federation_toml(
    seed: int,
    subjects: int,
    specs: Sequence[NodeSpec] = NODE_SPECS,
    everywhere: Sequence[str] = (),
) -> str:
    """The federation manifest: seed, size, nodes with their config paths, requesters."""
    lines = [
        "# credex-lab synthetic federation written by lab.synth; paths are relative to this file",
        f"seed = {seed}",
        f"subjects = {subjects}",
    ]
    if everywhere:
        lines.append("# subjects every node knows, for full fan-out benchmarks")
        lines.append(f"everywhere = [{', '.join(_toml_str(s) for s in everywhere)}]")
    for spec in specs:
        categories = ", ".join(_toml_str(c) for c in spec.categories)
        lines += [
            "",
            "[[node]]",
            f"id = {_toml_str(spec.id)}",
            f"name = {_toml_str(spec.name)}",
            f"jurisdiction = {_toml_str(spec.jurisdiction)}",
            f"categories = [{categories}]",
            f'config = "{NODES_DIR}/{spec.id}/{NODE_CONFIG}"',
        ]
    for req in REQUESTER_SPECS:
        lines += [
            "",
            "[[requester]]",
            f"id = {_toml_str(req.id)}",
            f"name = {_toml_str(req.name)}",
            f"jurisdiction = {_toml_str(req.jurisdiction)}",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- days and ids

_END = (LAST_DAY - FIRST_DAY).days  # day offsets run 0.._END inclusive
_DAYS: tuple[str, ...] = tuple((FIRST_DAY + timedelta(days=i)).isoformat() for i in range(_END + 1))
_YEAR_OF: tuple[int, ...] = tuple((FIRST_DAY + timedelta(days=i)).year for i in range(_END + 1))
_JAN1_BASE = 1980
_JAN1: tuple[int, ...] = tuple((date(y, 1, 1) - FIRST_DAY).days for y in range(_JAN1_BASE, 2060))


def _jan1(year: int) -> int:
    """Day offset of 1 January of `year` (negative before FIRST_DAY)."""
    return _JAN1[year - _JAN1_BASE]


def _day(rng: Random, lo: int, hi: int) -> int:
    """A uniform day offset in [lo, hi]."""
    return lo + int(rng.random() * (hi - lo + 1))


def _pick(rng: Random, items: Sequence[str]) -> str:
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


class _Subject(NamedTuple):
    id: str
    region: str
    city: str
    birth_year: int
    reliability: float  # latent in (0, 1): higher means more hours, fewer lates and judgments


def _subjects(seed: int, count: int) -> Iterator[_Subject]:
    """The subject stream: region by population, age 14-35, reliability ~ Beta(2.5, 1.2)."""
    rng = Random(f"credex-lab/{seed}/subjects")
    total = _REGION_CUMULATIVE[-1]
    for n in range(1, count + 1):
        region = REGIONS[bisect_right(_REGION_CUMULATIVE, rng.random() * total)]
        city = _pick(rng, region.cities)
        age = MIN_AGE + int(rng.random() * (MAX_AGE - MIN_AGE + 1))
        yield _Subject(
            f"S{n:07d}", region.name, city, REFERENCE_YEAR - age, rng.betavariate(2.5, 1.2)
        )


# --------------------------------------------------------------------------- node writers

_Row = tuple[object, ...]


class _NodeWriter:
    """Writes one operator database: decides who the node knows and appends their rows."""

    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        self.spec = spec
        self.rng = Random(f"credex-lab/{seed}/node/{spec.id}")
        self._id_key = self.rng.getrandbits(64)
        self._known = 0
        self._ids: dict[str, int] = {t.name: 0 for t in spec.tables}
        self.rows: dict[str, list[_Row]] = {t.name: [] for t in spec.tables}
        self._insert = {t.name: t.insert_sql() for t in spec.tables}
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        for table in spec.tables:
            self.conn.execute(table.create_sql())

    def person(self, s: _Subject) -> str | None:
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


_ORGANISATIONS = (
    "Youth Volunteers Association",
    "Red Cross Society",
    "Community Service Centre",
    "Environmental Volunteers",
    "Public Library",
    "Marathon Organising Committee",
    "Elderly Care Home",
)
_ACTIVITIES = (
    "elderly_care",
    "environmental_protection",
    "community_service",
    "education_support",
    "event_support",
    "emergency_relief",
)
_STAR_HOURS = (100.0, 300.0)  # national star rating thresholds (1 and 2 stars)


class _Volunteers(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.2 + 0.6 * r:
            return None
        registered = _day(rng, max(0, _jan1(s.birth_year + 12)), _END)
        days = sorted(
            _day(rng, registered, _END) for _ in range(1 + int(rng.random() * (1 + 7 * r)))
        )
        volunteer_no = f"VOL-{self.local_number(32):08X}"
        status = "active" if days[-1] > _END - 730 else "inactive"
        self.rows["volunteers"].append(
            (volunteer_no, _DAYS[registered], s.city, s.birth_year, status)
        )
        total, stars = 0.0, 0
        for day in days:
            hours = round(1.0 + rng.random() * (4.0 + 40.0 * r), 1)
            total += hours
            organisation = f"{s.city} {_pick(rng, _ORGANISATIONS)}"
            self.rows["service_hours"].append(
                (
                    self.next_id("service_hours"),
                    volunteer_no,
                    _DAYS[day],
                    hours,
                    organisation,
                    _pick(rng, _ACTIVITIES),
                )
            )
            while stars < len(_STAR_HOURS) and total >= _STAR_HOURS[stars]:
                stars += 1
                self.rows["awards"].append(
                    (
                        self.next_id("awards"),
                        volunteer_no,
                        _DAYS[day],
                        stars,
                        f"{stars}-star volunteer",
                        round(total, 1),
                    )
                )
        return volunteer_no


_LENDERS = (
    "Industrial and Commercial Bank of China",
    "China Construction Bank",
    "Agricultural Bank of China",
    "Bank of China",
    "Bank of Jiangsu",
    "China Merchants Bank",
    "WeBank",
)
# product: (min principal, max principal, minimum age at opening)
_PRODUCTS = {
    "student_loan": (4_000, 12_000, 17),
    "credit_card": (5_000, 50_000, 18),
    "consumer_loan": (2_000, 50_000, 18),
    "car_loan": (50_000, 200_000, 22),
    "mortgage": (400_000, 3_000_000, 25),
}
_YOUNG_PRODUCTS = ("student_loan", "credit_card", "consumer_loan")
_OLDER_PRODUCTS = ("credit_card", "consumer_loan", "consumer_loan", "car_loan", "mortgage")


class _CreditReference(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        age = REFERENCE_YEAR - s.birth_year
        adult = max(0, _jan1(s.birth_year + 18))
        last_open = _END - 60
        if age < 18 or adult > last_open:
            return None
        if rng.random() >= 0.25 + 0.6 * (age - 18) / (MAX_AGE - 18):
            return None
        borrower_id = 100_000_000 + self.local_number(28)
        opened = sorted(_day(rng, adult, last_open) for _ in range(1 + int(rng.random() * 3)))
        self.rows["borrowers"].append(
            (borrower_id, _DAYS[opened[0]], _REGION_BY_NAME[s.region].code)
        )
        p_late = 0.05 + 0.5 * (1 - r) ** 2
        p_default = 0.35 * (1 - r) ** 3
        defaulted = False
        for day in opened:
            loan_id = self.next_id("loans")
            age_then = _YEAR_OF[day] - s.birth_year
            products = _YOUNG_PRODUCTS if age_then < 25 else _OLDER_PRODUCTS
            product = _pick(rng, products)
            low, high, min_age = _PRODUCTS[product]
            if age_then < min_age:
                product = "consumer_loan"
                low, high, _ = _PRODUCTS[product]
            principal = float(round(low + rng.random() * (high - low), -2))
            status = "active"
            for _ in range(1 + int(rng.random() * 2)):
                due = _day(rng, min(day + 30, _END), _END)
                late = 0
                if rng.random() < p_late:
                    late = min(180, 1 + int(rng.expovariate(1 / 20)))
                amount = round(principal * (0.02 + 0.1 * rng.random()), 2)
                self.rows["repayments"].append(
                    (self.next_id("repayments"), loan_id, _DAYS[due], late, amount)
                )
            if not defaulted and day + 90 <= _END and rng.random() < p_default:
                defaulted, status = True, "defaulted"
                declared = _day(rng, day + 90, _END)
                outstanding = round(principal * (0.2 + 0.7 * rng.random()), 2)
                self.rows["defaults"].append(
                    (self.next_id("defaults"), loan_id, _DAYS[declared], outstanding)
                )
            elif rng.random() < 0.5:
                status = "closed"
            lender = _pick(rng, _LENDERS)
            if product == "student_loan":
                lender = "China Development Bank"
            self.rows["loans"].append(
                (loan_id, borrower_id, lender, product, principal, "CNY", _DAYS[day], status)
            )
        return str(borrower_id)


_UNIVERSITIES = {
    "Beijing": ("Peking University", "Tsinghua University", "Beijing Normal University"),
    "Tianjin": ("Nankai University", "Tianjin University"),
    "Jiangsu": ("Nanjing University", "Southeast University", "Soochow University"),
    "Zhejiang": ("Zhejiang University", "Ningbo University"),
    "Fujian": ("Xiamen University", "Fuzhou University"),
    "Hubei": ("Wuhan University", "Huazhong University of Science and Technology"),
    "Guangdong": ("Sun Yat-sen University", "South China University of Technology"),
    "Ningxia": ("Ningxia University",),
    "Chengdu": ("Sichuan University", "University of Electronic Science and Technology of China"),
}
_ALL_UNIVERSITIES = tuple(u for names in _UNIVERSITIES.values() for u in names)


class _Stage(NamedTuple):
    level: str
    isced: int
    start_age: int
    years: int
    qualification: str


_PRIMARY = _Stage("primary", 1, 6, 6, "primary_school_certificate")
_JUNIOR = _Stage("junior_secondary", 2, 12, 3, "junior_secondary_certificate")
_SENIOR = _Stage("senior_secondary", 3, 15, 3, "senior_secondary_diploma")
_VOC_SECONDARY = _Stage("vocational_secondary", 3, 15, 3, "vocational_secondary_diploma")
_VOC_COLLEGE = _Stage("vocational_college", 5, 18, 3, "vocational_college_diploma")
_BACHELOR = _Stage("bachelor", 6, 18, 4, "bachelor")
_MASTER = _Stage("master", 7, 22, 3, "master")
_DOCTORATE = _Stage("doctorate", 8, 25, 4, "doctorate")


class _Education(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.9:
            return None
        plan = [_PRIMARY, _JUNIOR]
        if rng.random() < 0.45 + 0.5 * r:
            plan.append(_SENIOR)
            if rng.random() < 0.3 + 0.6 * r:
                plan.append(_BACHELOR)
                if rng.random() < 0.05 + 0.35 * r:
                    plan.append(_MASTER)
                    if rng.random() < 0.1 + 0.3 * r:
                        plan.append(_DOCTORATE)
            elif rng.random() < 0.5:
                plan.append(_VOC_COLLEGE)
        else:
            plan.append(_VOC_SECONDARY)
            if rng.random() < 0.3:
                plan.append(_VOC_COLLEGE)
        # (day, is_degree, stage, institution, status or score)
        events: list[tuple[int, bool, _Stage, str, str | float]] = []
        for stage in plan:
            enrolled = _jan1(s.birth_year + stage.start_age) + 243 + int(rng.random() * 7)
            graduated = _jan1(s.birth_year + stage.start_age + stage.years) + 176
            graduated += int(rng.random() * 14)
            institution = self._institution(rng, s, stage)
            score = round(min(100.0, 55.0 + 40.0 * r + (rng.random() - 0.5) * 12.0), 1)
            if enrolled > _END:
                break
            if enrolled >= 0:
                status = "graduated" if graduated <= _END else "enrolled"
                events.append((enrolled, False, stage, institution, status))
            if 0 <= graduated <= _END:
                events.append((graduated, True, stage, institution, score))
        if not events:  # studied before the register went digital: continuing education only
            stage = _Stage("adult_higher_education", 5, 18, 3, "adult_higher_education_diploma")
            enrolled = _day(rng, max(0, _jan1(s.birth_year + 18)), _END)
            institution = "Open University of China"
            events.append((enrolled, False, stage, institution, "enrolled"))
            if enrolled + 900 <= _END:
                score = round(min(100.0, 55.0 + 40.0 * r + (rng.random() - 0.5) * 12.0), 1)
                events[0] = (enrolled, False, stage, institution, "graduated")
                events.append((enrolled + 900, True, stage, institution, score))
        events = events[:MAX_RECORDS_PER_CATEGORY]
        first = events[0][0]
        student_no = f"XJ{_YEAR_OF[first]}{self.local_number(27):09d}"
        self.rows["students"].append((student_no, s.birth_year, s.city, _DAYS[first]))
        for day, is_degree, stage, institution, detail in events:
            if is_degree:
                self.rows["degrees"].append(
                    (
                        self.next_id("degrees"),
                        student_no,
                        institution,
                        stage.qualification,
                        _DAYS[day],
                        detail,
                    )
                )
            else:
                self.rows["enrollments"].append(
                    (
                        self.next_id("enrollments"),
                        student_no,
                        institution,
                        stage.level,
                        stage.isced,
                        _DAYS[day],
                        detail,
                    )
                )
        return student_no

    @staticmethod
    def _institution(rng: Random, s: _Subject, stage: _Stage) -> str:
        number = 1 + int(rng.random() * 40)
        if stage is _PRIMARY:
            return f"{s.city} No. {number} Primary School"
        if stage is _JUNIOR:
            return f"{s.city} No. {number} Middle School"
        if stage is _SENIOR:
            return f"{s.city} No. {number} High School"
        if stage is _VOC_SECONDARY:
            return f"{s.city} Vocational School No. {number % 8 + 1}"
        if stage is _VOC_COLLEGE:
            return f"{s.city} Vocational and Technical College"
        if rng.random() < 0.6:
            return _pick(rng, _UNIVERSITIES[s.region])
        return _pick(rng, _ALL_UNIVERSITIES)


_CAUSES = (
    ("loan_contract_dispute", 3_000, 200_000),
    ("credit_card_dispute", 2_000, 60_000),
    ("rental_dispute", 1_000, 30_000),
    ("labour_dispute", 2_000, 50_000),
    ("traffic_accident_liability", 5_000, 150_000),
)


class _Courts(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        start = max(0, _jan1(s.birth_year + 16))
        if start > _END - 30 or rng.random() >= 0.36 * (1 - r) ** 2:
            return None
        party_id = f"PTY-{self.local_number(32):08X}"
        region = _REGION_BY_NAME[s.region]
        self.rows["parties"].append((party_id, "natural_person", s.birth_year, s.city))
        count = 1 + int(rng.random() * (1 + 2 * (1 - r)))
        for day in sorted(_day(rng, start, _END) for _ in range(count)):
            cause, low, high = _CAUSES[int(rng.random() * len(_CAUSES))]
            amount = float(round(low + rng.random() * (high - low), -1))
            court_code = f"{1 + int(rng.random() * 9):02d}{1 + int(rng.random() * 12):02d}"
            court = f"{s.city} {_pick(rng, ('Intermediate', 'District'))} People's Court"
            year = _YEAR_OF[day]
            serial = 1 + int(rng.random() * 20_000)
            case_no = f"({year}){region.court_abbr}{court_code}民初{serial}号"
            self.rows["judgments"].append(
                (self.next_id("judgments"), party_id, case_no, court, _DAYS[day], cause, amount)
            )
            if day + 60 <= _END and rng.random() < 0.25 + 0.5 * (1 - r):
                listed = _day(rng, day + 60, min(_END, day + 400))
                delisted: str | None = None
                if listed + 30 <= _END and rng.random() < 0.3 + 0.5 * r:
                    delisted = _DAYS[_day(rng, listed + 30, min(_END, listed + 700))]
                enforcement_no = f"({_YEAR_OF[listed]}){region.court_abbr}{court_code}执{serial}号"
                unpaid = round(amount * (0.3 + 0.7 * rng.random()), 2)
                self.rows["dishonest_debtors"].append(
                    (
                        self.next_id("dishonest_debtors"),
                        party_id,
                        enforcement_no,
                        court,
                        _DAYS[listed],
                        delisted,
                        "pay the adjudged sum",
                        unpaid,
                    )
                )
        return party_id


_MERCHANTS = (
    ("utilities", "State Grid", 50, 400),
    ("telecom", "China Mobile", 30, 300),
    ("rent", "Ziroom", 1_500, 6_000),
    ("bike_sharing", "Hellobike", 5, 60),
    ("consumer_credit", "Huabei", 200, 5_000),
    ("ecommerce", "Taobao", 50, 2_000),
)


class _Commercial(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        adult = max(0, _jan1(s.birth_year + 18))
        if adult > _END - 30 or rng.random() >= 0.67:
            return None
        uid = 2_088_000_000_000_000 + self.local_number(36)
        opened = _day(rng, adult, _END - 30)
        self.rows["accounts"].append((uid, _DAYS[opened], s.city, int(rng.random() < 0.9)))
        p_on_time = 0.98 - 0.4 * (1 - r) ** 2
        count = 1 + int(rng.random() * MAX_RECORDS_PER_CATEGORY)
        for day in sorted(_day(rng, opened, _END) for _ in range(count)):
            category, merchant, low, high = _MERCHANTS[int(rng.random() * len(_MERCHANTS))]
            late = 0 if rng.random() < p_on_time else min(90, 1 + int(rng.expovariate(1 / 10)))
            amount = round(low + rng.random() * (high - low), 2)
            self.rows["payment_events"].append(
                (self.next_id("payment_events"), uid, category, merchant, _DAYS[day], late, amount)
            )
        return str(uid)


_COMMENDATIONS = (
    ("Good Samaritan", 10),
    ("Community Service Star", 5),
    ("Voluntary Blood Donor", 5),
    ("Model Youth", 8),
    ("Anti-fraud Informant", 3),
)
# offence: (penalty points, fine, needs a driving licence)
_OFFENCES = (
    ("e_bike_no_helmet", 0, 20.0, False),
    ("e_bike_wrong_way", 0, 50.0, False),
    ("running_red_light", 6, 200.0, True),
    ("speeding", 3, 200.0, True),
    ("illegal_parking", 0, 150.0, True),
    ("phone_while_driving", 3, 100.0, True),
)


class _JiangsuPilot(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.85:
            return None
        enrolled = max(0, _jan1(s.birth_year + 12))
        violations_from = max(enrolled, _jan1(s.birth_year + 16))
        commendations = int(rng.random() * (1 + 4 * r))
        violations = int(rng.random() * (1 + 4 * (1 - r))) if violations_from <= _END else 0
        if commendations + violations == 0:
            if violations_from <= _END and rng.random() > r:
                violations = 1
            else:
                commendations = 1
        code = _JIANGSU_CITY_CODES.get(s.city, 3200)
        resident_code = f"JS-{code}-{self.local_number(32):08X}"
        self.rows["residents"].append((resident_code, s.city, _DAYS[enrolled]))
        issuer = f"{s.city} Civilisation Office"
        for _ in range(commendations):
            award, points = _COMMENDATIONS[int(rng.random() * len(_COMMENDATIONS))]
            day = _day(rng, enrolled, _END)
            self.rows["commendations"].append(
                (self.next_id("commendations"), resident_code, _DAYS[day], award, issuer, points)
            )
        licence_from = _jan1(s.birth_year + 18)
        for _ in range(violations):
            day = _day(rng, violations_from, _END)
            offence, points, fine, needs_licence = _OFFENCES[int(rng.random() * len(_OFFENCES))]
            if needs_licence and day < licence_from:
                offence, points, fine, _ = _OFFENCES[0]
            self.rows["traffic_violations"].append(
                (
                    self.next_id("traffic_violations"),
                    resident_code,
                    _DAYS[day],
                    offence,
                    points,
                    fine,
                )
            )
        return resident_code


_GD_MERITS = (
    ("blood_donation", 5, "Health Commission"),
    ("community_volunteering", 3, "Communist Youth League Committee"),
    ("neighbourhood_mediation", 2, "Civil Affairs Bureau"),
    ("scholarship", 4, "Education Bureau"),
)
_GD_DEMERITS = (
    ("fare_evasion", -3, "Metro Group"),
    ("littering", -1, "Urban Management Bureau"),
    ("utility_arrears", -2, "Development and Reform Commission"),
    ("academic_misconduct", -10, "Education Bureau"),
)


class _GuangdongPilot(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.8:
            return None
        enrolled = max(0, _jan1(s.birth_year + 12))
        citizen_ref = f"GD{self.local_number(34):011d}"
        self.rows["citizens"].append((citizen_ref, s.city, _DAYS[enrolled]))
        for day in sorted(_day(rng, enrolled, _END) for _ in range(1 + int(rng.random() * 6))):
            table = _GD_MERITS if rng.random() < 0.4 + 0.55 * r else _GD_DEMERITS
            event, delta, department = table[int(rng.random() * len(table))]
            self.rows["credit_events"].append(
                (
                    self.next_id("credit_events"),
                    citizen_ref,
                    _DAYS[day],
                    event,
                    delta,
                    f"{s.city} {department}",
                )
            )
        return citizen_ref


_EMPLOYERS = (
    ("Huawei Technologies", "telecommunications"),
    ("Tencent", "internet"),
    ("Alibaba Group", "internet"),
    ("BYD", "automotive"),
    ("China Mobile", "telecommunications"),
    ("Suning", "retail"),
    ("Midea Group", "manufacturing"),
    ("JD.com", "retail"),
    ("Industrial and Commercial Bank of China", "banking"),
    ("China State Construction Engineering", "construction"),
    ("SF Express", "logistics"),
)
_LOCAL_EMPLOYERS = (
    ("Municipal Hospital", "healthcare"),
    ("Catering Company", "hospitality"),
    ("Property Management Company", "real_estate"),
    ("Electronics Factory", "manufacturing"),
)
_END_REASONS = ("resigned", "contract_ended", "laid_off", "dismissed")


class _Employment(_NodeWriter):
    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        age = REFERENCE_YEAR - s.birth_year
        adult = max(0, _jan1(s.birth_year + 18))
        if age < 18 or adult > _END - 30:
            return None
        if rng.random() >= 0.3 + 0.6 * (age - 18) / (MAX_AGE - 18):
            return None
        insurance_no = f"SB{self.local_number(34):011d}"
        spells = 1 + int(rng.random() * min(4.0, 1 + (age - 18) / 4))
        day = _day(rng, adult, min(_END, adult + 730))
        self.rows["insured_persons"].append((insurance_no, s.city, _DAYS[day]))
        for _ in range(spells):
            if rng.random() < 0.6:
                employer, industry = _EMPLOYERS[int(rng.random() * len(_EMPLOYERS))]
            else:
                name, industry = _LOCAL_EMPLOYERS[int(rng.random() * len(_LOCAL_EMPLOYERS))]
                employer = f"{s.city} {name}"
            wage = float(round(3_000 + rng.random() * 6_000 + 12_000 * r * rng.random(), -1))
            ended = day + 90 + int(rng.random() * (300 + 1500 * r))
            end_reason = _END_REASONS[int(rng.random() * (2 + 2 * (1 - r)))]
            if ended > _END:
                self.rows["employment_spells"].append(
                    (
                        self.next_id("employment_spells"),
                        insurance_no,
                        employer,
                        industry,
                        _DAYS[day],
                        None,
                        wage,
                        None,
                    )
                )
                break
            self.rows["employment_spells"].append(
                (
                    self.next_id("employment_spells"),
                    insurance_no,
                    employer,
                    industry,
                    _DAYS[day],
                    _DAYS[ended],
                    wage,
                    end_reason,
                )
            )
            day = ended + 1 + int(rng.random() * 180)
            if day > _END:
                break
        return insurance_no


class _CityCivic(_NodeWriter):
    """A city office: knows about half its residents, with commendations and violations."""

    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.5:
            return None
        registered = max(0, _jan1(s.birth_year + 14))
        citizen_no = f"{s.city[:3].upper()}-{self.local_number(30):010d}"
        district = f"{s.city} District {1 + int(rng.random() * 9)}"
        self.rows["residents"].append((citizen_no, district, _DAYS[registered]))
        office = f"{s.city} Civilisation Office"
        for _ in range(1 + int(rng.random() * 4)):
            day = _DAYS[_day(rng, registered, _END)]
            if rng.random() < 0.3 + 0.6 * r:
                award, points = _pick_pair(rng, _COMMENDATIONS)
                row = (self.next_id("civic_entries"), citizen_no, day, "commendation", points,
                       award, office)  # fmt: skip
            else:
                offence, points, _fine, _licence = _OFFENCES[int(rng.random() * 2)]
                row = (self.next_id("civic_entries"), citizen_no, day, "traffic_violation",
                       points, offence, office)  # fmt: skip
            self.rows["civic_entries"].append(row)
        return citizen_no


class _Lender(_NodeWriter):
    """A consumer lender: a few per cent of adults, each with contracts and instalments."""

    def person(self, s: _Subject) -> str | None:
        rng, r = self.rng, s.reliability
        adult = max(0, _jan1(s.birth_year + 18))
        if adult > _END - 60 or rng.random() >= 0.04:
            return None
        customer_ref = f"C{self.local_number(32):010d}"
        onboarded = _day(rng, adult, _END - 60)
        self.rows["customers"].append((customer_ref, _DAYS[onboarded], s.city))
        p_late = 0.05 + 0.5 * (1 - r) ** 2
        for _ in range(1 + int(rng.random() * 2)):
            contract_no = f"{self.spec.id[7:10].upper()}-{self.next_id('contracts'):09d}"
            signed = _day(rng, onboarded, _END - 60)
            principal = float(round(2_000 + rng.random() * 48_000, -2))
            written_off = rng.random() < 0.2 * (1 - r) ** 3
            status = "written_off" if written_off else _pick(rng, ("active", "settled"))
            self.rows["contracts"].append(
                (contract_no, customer_ref, "consumer_loan", principal, _DAYS[signed], status)
            )
            for _ in range(1 + int(rng.random() * 3)):
                due = _day(rng, signed + 30, _END)
                late = min(180, 1 + int(rng.expovariate(1 / 20))) if rng.random() < p_late else 0
                amount = round(principal * (0.05 + 0.1 * rng.random()), 2)
                self.rows["instalments"].append(
                    (self.next_id("instalments"), contract_no, _DAYS[due], late, amount)
                )
        return customer_ref


def _pick_pair(rng: Random, items: Sequence[tuple[str, int]]) -> tuple[str, int]:
    return items[int(rng.random() * len(items))]


_WRITERS: dict[str, type[_NodeWriter]] = {
    "city-civic": _CityCivic,
    "lender": _Lender,
    "volunteer-registry": _Volunteers,
    "pboc-credit-reference": _CreditReference,
    "education-ministry": _Education,
    "court-enforcement": _Courts,
    "zhima-commercial": _Commercial,
    "jiangsu-pilot": _JiangsuPilot,
    "guangdong-pilot": _GuangdongPilot,
    "hrss-employment": _Employment,
}


# --------------------------------------------------------------------------- generate


def _generated_paths() -> list[Path]:
    """Every path `generate` may create, relative to its output directory."""
    paths = [Path(FEDERATION_FILE), Path(SUBJECTS_FILE), Path(LOCATOR_FILE), Path(NODES_DIR)]
    for spec in node_specs(MAX_NODES):
        node_dir = Path(NODES_DIR) / spec.id
        paths += [node_dir, node_dir / RECORDS_DB, node_dir / NODE_CONFIG]
    return paths


def _check_output(out: Path) -> None:
    """Refuse a file, or a non-empty directory that holds anything but an earlier generation."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if (out / FEDERATION_FILE).exists():
        try:
            load_manifest(out)
        except ValueError as exc:
            raise ValueError(
                f"{out} holds a federation.toml that is not a credex-lab generation ({exc}); "
                "refusing to overwrite it"
            ) from None
        return
    ours = {str(p) for p in _generated_paths()}
    ours |= {p + _PARTIAL for p in ours}
    foreign = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if str(p.relative_to(out)) not in ours
    )
    if foreign:
        raise ValueError(
            f"{out} is not empty and holds no earlier generation (no {FEDERATION_FILE}; "
            f"found {', '.join(foreign[:3])}); refusing to write into it"
        )


def generate(
    out: Path,
    subjects: int = 1000,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
    nodes: int = DEFAULT_NODES,
    everywhere: int = 0,
) -> Manifest:
    """Write a complete synthetic federation into `out` and return its manifest.

    Rewrites an earlier generation in place (records.db, node.toml, the CSVs and federation.toml
    only; keys and credex state databases beside them are left alone). Memory stays bounded:
    subjects are streamed in chunks of CHUNK_SUBJECTS and each chunk is committed.

    `everywhere`: the first that many subjects aged EVERYWHERE_MIN_AGE or more are known to
    every node, whatever their region, with records in every category: benchmarks use them
    to measure a fan-out to all nodes. Everyone else is covered as usual.
    """
    out = Path(out)
    if isinstance(subjects, bool) or not isinstance(subjects, int) or subjects < 1:
        raise ValueError(f"subjects must be a positive integer, got {subjects!r}")
    if subjects > MAX_SUBJECTS:
        raise ValueError(f"at most {MAX_SUBJECTS} subjects, got {subjects}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    specs = node_specs(nodes)
    if isinstance(everywhere, bool) or not isinstance(everywhere, int) or everywhere < 0:
        raise ValueError(f"everywhere must be a non-negative integer, got {everywhere!r}")
    _check_output(out)

    final: list[Path] = []  # files written as <name>.partial, renamed into place at the end
    writers: list[_NodeWriter] = []
    try:
        for spec in specs:
            node_dir = out / NODES_DIR / spec.id
            node_dir.mkdir(parents=True, exist_ok=True)
            db = node_dir / RECORDS_DB
            _partial(db).unlink(missing_ok=True)
            final.append(db)
            writers.append(_WRITERS[spec.kind or spec.id](spec, _partial(db), seed))
            config = node_dir / NODE_CONFIG
            _partial(config).write_text(node_toml(spec), encoding="utf-8")
            final.append(config)
        subjects_csv, locator_csv = out / SUBJECTS_FILE, out / LOCATOR_FILE
        final += [subjects_csv, locator_csv]
        with (
            _partial(subjects_csv).open("w", newline="", encoding="utf-8") as subjects_fh,
            _partial(locator_csv).open("w", newline="", encoding="utf-8") as locator_fh,
        ):
            subject_rows = csv.writer(subjects_fh, lineterminator="\n")
            locator_rows = csv.writer(locator_fh, lineterminator="\n")
            subject_rows.writerow(("subject_id", "region", "birth_year", "public_key"))
            locator_rows.writerow(("subject_id", "node_id", "local_id"))
            known = _stream(
                seed, subjects, writers, subject_rows, locator_rows, progress, everywhere
            )
        for writer in writers:
            writer.finish()
        writers.clear()
        for path in final:
            for suffix in ("-journal", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            os.replace(_partial(path), path)
        manifest_path = out / FEDERATION_FILE
        _partial(manifest_path).write_text(
            federation_toml(seed, subjects, specs, known), encoding="utf-8"
        )
        os.replace(_partial(manifest_path), manifest_path)
    except BaseException:
        for writer in writers:
            writer.close()
        for path in [*final, out / FEDERATION_FILE]:
            _partial(path).unlink(missing_ok=True)
        raise
    return load_manifest(out)


def _partial(path: Path) -> Path:
    return path.with_name(path.name + _PARTIAL)


class _RowWriter(Protocol):
    """The part of a csv writer that `_stream` uses."""

    def writerows(self, rows: Iterable[Iterable[Any]], /) -> None: ...


def _stream(
    seed: int,
    count: int,
    writers: list[_NodeWriter],
    subject_rows: _RowWriter,
    locator_rows: _RowWriter,
    progress: Callable[[int], None] | None,
    everywhere: int = 0,
) -> list[str]:
    """Generate subjects chunk by chunk; each node decides whom it knows and writes their rows.
    Returns the ids of the subjects made known to every node."""
    known_everywhere: list[str] = []
    chunk_subjects: list[tuple[str, str, int, str]] = []
    chunk_locator: list[tuple[str, str, str]] = []
    by_city: dict[str, list[_NodeWriter]] = {}  # city -> the nodes that may know its people
    for region in REGIONS:
        for city in region.cities:
            by_city[city] = [
                w
                for w in writers
                if (not w.spec.regions or region.name in w.spec.regions)
                and (not w.spec.cities or city in w.spec.cities)
            ]
    for done, s in enumerate(_subjects(seed, count), 1):
        public_key = subject_key(seed, s.id).public.raw.hex()
        chunk_subjects.append((s.id, s.region, s.birth_year, public_key))
        if len(known_everywhere) < everywhere and REFERENCE_YEAR - s.birth_year >= 25:
            known_everywhere.append(s.id)
            for writer in writers:
                chunk_locator.append((s.id, writer.spec.id, _insist(writer, s)))
        else:
            for writer in by_city[s.city]:
                local_id = writer.person(s)
                if local_id is not None:
                    chunk_locator.append((s.id, writer.spec.id, local_id))
        if len(chunk_subjects) >= CHUNK_SUBJECTS or done == count:
            subject_rows.writerows(chunk_subjects)
            locator_rows.writerows(chunk_locator)
            chunk_subjects.clear()
            chunk_locator.clear()
            for writer in writers:
                writer.flush()
            if progress is not None:
                progress(done)
    return known_everywhere


def _insist(writer: _NodeWriter, s: _Subject) -> str:
    """Ask the node about `s` until it knows them (each try draws anew from its stream)."""
    for _ in range(1_000_000):
        local_id = writer.person(s)
        if local_id is not None:
            return local_id
    raise RuntimeError(f"{writer.spec.id} never took {s.id}")  # pragma: no cover
