"""Item 15, continued: an adapter that joins a table to itself (or to any table) by something
other than the subject discloses other people's records, and every row still carries the
asked-for local id, so the row check cannot see it.

A careless operator of a school-attendance register maps late payments with a self-join:
`t AS a` finds the student, `t AS b` is meant to be the same student's rows but is joined on
`b.days_late > 30`, i.e. every late payer. Each row says `a.stu AS local_id`, the subject's
own id. The node must refuse such an adapter (check-config calls it fatal, serve and init
refuse to start): every table reference, in every scope, must be found through the subject.
Joins that are tied to the subject (an equal subject column, or the key of a row of the
subject's) keep working."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from credex.lab.identities import subject_key
from credex.node.config_check import check_config
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import SEED, Target
from tests.attacks.nodedata_kit import (
    Adapter,
    checked_config,
    config_text,
    prepare,
    serving,
    start_refused,
    subjects_of,
)

FINANCIAL = Category.CATEGORY_FINANCIAL
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
OTHERS = 30

# Student S-0 (our subject) paid one fee; 30 other students each paid one fee late.
# `accounts` holds one fee account per row (its key), `payments` the payments on it.
SCHEMA = (
    "CREATE TABLE t (stu TEXT NOT NULL, record_id TEXT NOT NULL, kind TEXT NOT NULL,"
    " value REAL NOT NULL, unit TEXT NOT NULL, occurred_at TEXT NOT NULL,"
    " days_late INTEGER NOT NULL);"
    "CREATE INDEX t_stu ON t (stu);"
    "CREATE INDEX t_days_late ON t (days_late);"
    "INSERT INTO t VALUES ('S-0', 'fee-1', 'loan_repaid_on_time', 300, 'CNY', '2024-01-05', 0);"
    + "".join(
        f"INSERT INTO t VALUES ('S-{i}', 'fee-x{i}', 'loan_repaid_late', {100 + i}, 'CNY',"
        f" '2024-03-0{i % 9 + 1}', {30 + i});"
        for i in range(1, OTHERS + 1)
    )
    + "CREATE TABLE accounts (account_no INTEGER PRIMARY KEY, stu TEXT NOT NULL, opened TEXT);"
    "CREATE INDEX accounts_stu ON accounts (stu);"
    "CREATE TABLE payments (payment_id INTEGER PRIMARY KEY, account_no INTEGER NOT NULL"
    " REFERENCES accounts (account_no), amount REAL NOT NULL, paid_on TEXT NOT NULL);"
    "CREATE INDEX payments_account ON payments (account_no);"
    "INSERT INTO accounts VALUES (1, 'S-0', '2023-09-01'), (2, 'S-1', '2023-09-01');"
    "INSERT INTO payments VALUES (1, 1, 300, '2024-01-05'), (2, 2, 999, '2024-01-06');"
)
OWN = {"fee-1"}
COLUMNS = (
    "a.stu AS local_id, b.record_id AS record_id, b.kind AS kind, b.value AS value,"
    " b.unit AS unit, b.occurred_at AS occurred_at"
)
# The reviewer's example: every row carries the subject's id, b is every late payer.
SELF_JOIN = (
    "SELECT a.stu AS local_id, b.record_id, b.kind, b.value, b.unit, b.occurred_at"
    " FROM t a JOIN t b ON b.days_late > 30 WHERE a.stu = :local_id"
)
# Each reads rows of other subjects while the subject's own id is in every row.
LEAKS = {
    "self-join": SELF_JOIN,
    "join-on-a-shared-value": (
        f"SELECT {COLUMNS} FROM t AS a JOIN t AS b ON b.days_late = a.days_late"
        " WHERE a.stu = :local_id"
    ),
    "join-on-the-right-column-of-the-wrong-table": (
        f"SELECT {COLUMNS} FROM t AS a JOIN t AS b ON b.stu = a.kind WHERE a.stu = :local_id"
    ),
    "comma-join": f"SELECT {COLUMNS} FROM t AS a, t AS b WHERE a.stu = :local_id",
    "left-join": (
        f"SELECT {COLUMNS} FROM t AS a LEFT JOIN t AS b ON b.days_late > 30 WHERE a.stu = :local_id"
    ),
    "correlated-subquery-on-the-wrong-column": (
        "SELECT a.stu AS local_id, a.record_id, a.kind, a.value, a.unit, a.occurred_at,"
        " (SELECT group_concat(b.record_id) FROM t AS b WHERE b.stu = a.kind) AS others"
        " FROM t AS a WHERE a.stu = :local_id"
    ),
    "exists-over-another-student": (
        "SELECT a.stu AS local_id, a.record_id, a.kind, a.value, a.unit, a.occurred_at"
        " FROM t AS a WHERE a.stu = :local_id"
        " AND EXISTS (SELECT 1 FROM t AS b WHERE b.stu = 'S-7' AND b.days_late > 30)"
    ),
    "cte-over-everyone": (
        "WITH late AS (SELECT stu, record_id FROM t WHERE days_late > 30)"
        " SELECT a.stu AS local_id, a.record_id, a.kind, a.value, a.unit, a.occurred_at,"
        " (SELECT count(*) FROM late) AS late_payers FROM t AS a WHERE a.stu = :local_id"
    ),
    # The payment row of an account found by its key, but the key of someone else's account.
    "key-of-an-untied-row": (
        "SELECT a.stu AS local_id, 'pay-' || p.payment_id AS record_id, 'payment' AS kind,"
        " p.amount AS value, 'CNY' AS unit, p.paid_on AS occurred_at"
        " FROM t AS a JOIN accounts AS o ON o.account_no = a.days_late"
        " JOIN payments AS p ON p.account_no = o.account_no WHERE a.stu = :local_id"
    ),
}
# Joins tied to the subject: through an equal subject column, and through the key of the
# subject's own account.
TIED = [
    Adapter(
        "financial",
        "SELECT a.stu AS local_id, b.record_id, b.kind, b.value, b.unit, b.occurred_at"
        " FROM t AS a JOIN t AS b ON b.stu = a.stu AND b.record_id = a.record_id"
        " WHERE a.stu = :local_id",
    ),
    Adapter(
        "financial",
        "SELECT o.stu AS local_id, 'pay-' || p.payment_id AS record_id, 'payment' AS kind,"
        " p.amount AS value, 'CNY' AS unit, p.paid_on AS occurred_at"
        " FROM payments AS p JOIN accounts AS o ON o.account_no = p.account_no"
        " WHERE o.stu = :local_id",
    ),
]
TIED_RECORDS = OWN | {"pay-1"}


async def financial_profile(target: Target, subject_id: str) -> object:
    async with target.subject_client(subject_id, subject_key(SEED, subject_id)) as subject:
        consent_id = await subject.grant(
            requester_id="bank", purpose=LOAN, categories=[FINANCIAL], max_uses=3
        )
    async with target.requester_client() as bank:
        return await bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)


def ours(profile: object, node_id: str) -> set[str]:
    """The record ids the profile carries from `node_id` (the target's nodes add their own)."""
    return {r.record_id for r in profile.records if r.node_id == node_id}  # type: ignore[attr-defined]


def test_check_config_calls_every_untied_join_fatal(tmp_path: Path) -> None:
    """Every join above passes the row check (each row carries the subject's id); each is a
    fatal problem of `check-config` on the line of its `sql`, naming other subjects. The tied
    joins pass."""
    passed = []
    for name, sql in LEAKS.items():
        config, sql_line = checked_config(
            tmp_path / name, SCHEMA, "careless", [Adapter("financial", sql)]
        )
        fatal = [p for p in check_config(config) if p.fatal]
        if not fatal:
            passed.append(name)
            continue
        assert all(p.line == sql_line for p in fatal), (name, fatal)
        assert any("other subjects" in p.message for p in fatal), (name, fatal)
    assert not passed, f"check-config let adapters over other subjects pass: {passed}"
    config, _ = checked_config(tmp_path / "tied", SCHEMA, "careful", TIED)
    assert check_config(config) == []
    assert check_config(config, "S-0") == []


def test_a_node_refuses_to_serve_a_self_join_and_serves_tied_joins(
    target: Target, tmp_path: Path
) -> None:
    """The operator enrolls with tied joins: the profile carries exactly the subject's
    records. Then they map the self-join: the node does not start, and says which line is
    wrong. (On the code before the fix, it served every late payer's fee under the
    subject's id.)"""
    (subject_id,) = subjects_of(target, 20, 1)
    node = prepare(
        target,
        tmp_path,
        "fee-register",
        schema=SCHEMA,
        adapters=TIED,
        locations={subject_id: "S-0"},
    )
    with serving(target, node):
        profile = asyncio.run(financial_profile(target, subject_id))
    assert ours(profile, node.node_id) == TIED_RECORDS

    node.config.write_text(
        config_text(node.node_id, [Adapter("financial", SELF_JOIN)], target.address)
    )
    refused = start_refused(target, node)
    if refused is None:  # it served: show what the attack obtained
        with serving(target, node):
            profile = asyncio.run(financial_profile(target, subject_id))
        leaked = ours(profile, node.node_id) - OWN
        pytest.fail(f"the node served a self-join: {len(leaked)} other students' records")
    sql_line = next(
        n for n, line in enumerate(node.config.read_text().splitlines(), 1) if "sql =" in line
    )
    assert f"{node.config}:{sql_line}: adapter for financial" in refused
    assert "other subjects" in refused
