"""Item 17: disputes. A subject may dispute only a record the node holds about them; outcomes
apply to one (category, record id); text from other parties never reaches a terminal with its
control characters; and a subject cannot flood the directory and the nodes with disputes.

The node is a ward office of the test's own (two categories whose record ids collide, as two
tables' row numbers do), served as its own process in the attack target's federation."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from credex.lab.identities import subject_key
from credex.node.admin import list_disputes, resolve_dispute
from credex.node.config import load_node_config
from credex.protocol.errors import NotFound, ResourceExhausted
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import SEED, Target
from tests.attacks.nodedata_kit import Adapter, ExtraNode, prepare, serving, subjects_of
from tests.commands import cli

CIVIC = Category.CATEGORY_CIVIC
COMMERCIAL = Category.CATEGORY_COMMERCIAL
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\u202ereversed\x1b[31m"
# Control characters (C0, DEL, C1) and the bidi overrides that reorder what a terminal shows.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

# W-0 .. W-3 are our subjects; W-9 is someone else. Record ids collide across the two tables.
SCHEMA = (
    "CREATE TABLE merits (id INTEGER PRIMARY KEY, who TEXT NOT NULL, points REAL, day TEXT,"
    " remark TEXT);"
    "CREATE INDEX merits_who ON merits (who);"
    "CREATE TABLE contracts (id INTEGER PRIMARY KEY, who TEXT NOT NULL, amount REAL, day TEXT);"
    "CREATE INDEX contracts_who ON contracts (who);"
    f"INSERT INTO merits VALUES (1, 'W-0', 5, '2024-01-01', 'volunteer of the month{HOSTILE}');"
    "INSERT INTO merits VALUES (2, 'W-9', -3, '2024-02-01', 'someone else');"
    "INSERT INTO merits VALUES (3, 'W-0', 2, '2024-03-01', '');"
    "INSERT INTO contracts VALUES (1, 'W-0', 900, '2024-01-05');"
    f"INSERT INTO merits VALUES (40, 'W-1', 1, '2024-04-02', 'thanks{HOSTILE}');"
    + "".join(
        f"INSERT INTO merits VALUES ({10 + i}, 'W-{1 + i // 8}', 1, '2024-04-01', '');"
        for i in range(24)
    )
)
ADAPTERS = [
    Adapter(
        "civic",
        "SELECT 'r-' || m.id AS record_id, 'civic_merit' AS kind, m.points AS value,"
        " 'points' AS unit, m.day AS occurred_at, m.who AS local_id, m.remark AS remark"
        " FROM merits AS m WHERE m.who = :local_id",
    ),
    Adapter(
        "commercial",
        "SELECT 'r-' || c.id AS record_id, 'contract' AS kind, c.amount AS value,"
        " 'CNY' AS unit, c.day AS occurred_at, c.who AS local_id"
        " FROM contracts AS c WHERE c.who = :local_id",
    ),
]


@dataclass
class Ward:
    node: ExtraNode
    subjects: list[str]  # the target's subjects the office knows as W-0 .. W-3

    @property
    def config(self) -> Path:
        return self.node.config


@pytest.fixture(scope="module")
def ward(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ward]:
    """The ward office, serving."""
    subjects = subjects_of(target, 10, 4)
    node = prepare(
        target,
        tmp_path_factory.mktemp("ward"),
        "ward-office",
        schema=SCHEMA,
        adapters=ADAPTERS,
        locations={s: f"W-{i}" for i, s in enumerate(subjects)},
    )
    with serving(target, node):
        yield Ward(node, subjects)


async def file(
    target: Target, subject_id: str, category: Category.ValueType | str, record_id: str, reason: str
) -> Any:
    async with target.subject_client(subject_id, subject_key(SEED, subject_id)) as subject:
        return await subject.file_dispute(
            node_id="ward-office", category=category, record_id=record_id, reason=reason
        )


async def my_disputes(target: Target, subject_id: str) -> Any:
    async with target.subject_client(subject_id, subject_key(SEED, subject_id)) as subject:
        return await subject.disputes()


async def ward_profile(target: Target, subject_id: str) -> tuple[Any, str]:
    async with target.subject_client(subject_id, subject_key(SEED, subject_id)) as subject:
        consent_id = await subject.grant(
            requester_id="bank", purpose=LOAN, categories=[CIVIC, COMMERCIAL], max_uses=2
        )
    async with target.requester_client() as bank:
        profile = await bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)
    return profile, consent_id


def test_a_subject_disputes_only_records_held_about_them(target: Target, ward: Ward) -> None:
    """Another person's record, a record that does not exist and a record in a category the
    node does not hold it under are refused NOT_FOUND, and nothing is filed anywhere."""
    subject_id = ward.subjects[0]
    refused = {("civic", "r-2"), ("civic", "r-404"), ("commercial", "r-3")}
    for category, record_id in sorted(refused):
        with pytest.raises(NotFound):
            asyncio.run(file(target, subject_id, category, record_id, "not mine"))
    mine = asyncio.run(my_disputes(target, subject_id))
    assert not {(d.category, d.record_id) for d in mine} & refused
    at_node = list_disputes(load_node_config(ward.config))
    assert not {(d.category, d.record_id) for d in at_node} & refused


def test_an_outcome_applies_to_its_category_only(target: Target, ward: Ward) -> None:
    """`deleted` on (civic, r-1) holds back that record and not (commercial, r-1)."""
    subject_id = ward.subjects[0]
    filed = asyncio.run(file(target, subject_id, CIVIC, "r-1", "I never got this merit"))
    assert (filed.category, filed.record_id, filed.status) == ("civic", "r-1", "open")
    config = load_node_config(ward.config)
    asyncio.run(resolve_dispute(config, filed.dispute_id, "deleted", "entered for someone else"))
    profile, _ = asyncio.run(ward_profile(target, subject_id))
    shown = {(r.category, r.record_id) for r in profile.records if r.node_id == "ward-office"}
    assert shown == {("civic", "r-3"), ("commercial", "r-1")}


def test_text_from_other_parties_is_escaped_where_printed(
    target: Target, ward: Ward, tmp_path: Path
) -> None:
    """A subject's dispute reason at the operator's terminal, the operator's note and a record
    attribute from the operator's database at the subject's and the requester's: no control
    character reaches the terminal, each is shown escaped."""
    subject_id = ward.subjects[1]
    filed = asyncio.run(file(target, subject_id, CIVIC, "r-10", f"wrong{HOSTILE}"))
    operator = cli("credex-node", "disputes", "list", str(ward.config)).stdout
    assert filed.dispute_id in operator
    assert not UNSAFE.search(operator), repr(operator)
    assert "\\x1b" in operator

    config = load_node_config(ward.config)
    asyncio.run(resolve_dispute(config, filed.dispute_id, "rejected", f"stands{HOSTILE}"))
    key = tmp_path / "subject.key"
    subject_key(SEED, subject_id).save(key)
    ca = str(target.settings.ca_cert_path)
    subject_view = cli(
        "credex", "disputes", "list", "--directory", target.public_address, "--ca-cert", ca,
        "--subject", subject_id, "--key", str(key),
    ).stdout  # fmt: skip
    assert "stands" in subject_view and "\\x1b" in subject_view
    assert not UNSAFE.search(subject_view), repr(subject_view)

    _, consent_id = asyncio.run(ward_profile(target, subject_id))  # r-40's remark is hostile
    printed = cli(
        "credex", "profile", "get", "--home", str(target.requester_home().path),
        "--subject", subject_id, "--consent", consent_id, "--purpose", "loan-application",
    ).stdout  # fmt: skip
    assert "ward-office" in printed and "thanks" in printed
    assert not UNSAFE.search(printed), repr(printed)


def test_disputes_are_rate_limited_per_subject(target: Target, ward: Ward) -> None:
    """A subject files a few disputes an hour at most; the next is RESOURCE_EXHAUSTED with a
    time to retry, reaches no node, and another subject is not affected."""
    flooder, other = ward.subjects[2], ward.subjects[3]
    filed: list[str] = []
    with pytest.raises(ResourceExhausted) as err:
        for n in range(40):  # W-2 holds r-18 .. r-25
            filed.append(
                asyncio.run(file(target, flooder, CIVIC, f"r-{18 + n % 8}", "x")).record_id
            )
    assert err.value.retry_after_s is not None and err.value.retry_after_s > 0
    assert 0 < len(filed) <= 10
    at_node = [
        d for d in list_disputes(load_node_config(ward.config)) if d.local_subject_id == "W-2"
    ]
    assert len(at_node) == len(filed)
    assert asyncio.run(file(target, other, CIVIC, "r-26", "mine to dispute")).status == "open"
