"""Item 16: an adapter that fails must not show the requester a record value, the operator's
log must say what failed (under the query's id), and a profile that disclosed nothing carries
no score.

The node's operator database holds a row the adapter cannot turn into a record (its date is a
text that quotes something private); the requester asks for it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from credex.lab.identities import subject_key
from credex.runtime.db import readonly_uri
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import SEED, Target
from tests.attacks.nodedata_kit import Adapter, prepare, serving, subjects_of

JUDICIAL = Category.CATEGORY_JUDICIAL
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
SECRET = "owes-Zhang-Wei-88231-CNY"

SCHEMA = (
    "CREATE TABLE cases (case_id INTEGER PRIMARY KEY, party TEXT NOT NULL, amount REAL,"
    " decided TEXT);"
    "CREATE INDEX cases_party ON cases (party);"
    # P-0's case has a date no adapter can read; P-1 is known to the court without any case.
    f"INSERT INTO cases (party, amount, decided) VALUES ('P-0', 1200, '{SECRET}');"
)
SQL = (
    "SELECT 'case-' || c.case_id AS record_id, 'judgment' AS kind, c.amount AS value,"
    " 'CNY' AS unit, c.decided AS occurred_at, c.party AS local_id"
    " FROM cases AS c WHERE c.party = :local_id"
)


async def judicial_profile(target: Target, subject_id: str) -> Any:
    async with target.subject_client(subject_id, subject_key(SEED, subject_id)) as subject:
        consent_id = await subject.grant(requester_id="bank", purpose=LOAN, categories=[JUDICIAL])
    async with target.requester_client() as bank:
        return await bank.get_profile(
            subject_id=subject_id, consent_id=consent_id, purpose=LOAN, categories=[JUDICIAL]
        )


def node_queries(state_db: Path, local_id: str) -> list[tuple[str, str, str]]:
    """(query id, outcome, detail) of the node's audit entries about `local_id`."""
    conn = sqlite3.connect(readonly_uri(state_db), uri=True)
    try:
        return conn.execute(
            "SELECT request_id, outcome, detail FROM audit_log"
            " WHERE action = 'query' AND subject_ref = ? ORDER BY seq",
            (local_id,),
        ).fetchall()
    finally:
        conn.close()


def test_adapter_failure_shows_no_record_value_and_an_empty_profile_no_score(
    target: Target, tmp_path: Path
) -> None:
    failing, empty = subjects_of(target, 5, 2)
    node = prepare(
        target,
        tmp_path,
        "failing-court",
        schema=SCHEMA,
        adapters=[Adapter("judicial", SQL)],
        locations={failing: "P-0", empty: "P-1"},
    )
    with serving(target, node):
        profile = asyncio.run(judicial_profile(target, failing))
        nothing = asyncio.run(judicial_profile(target, empty))

    (outcome,) = [n for n in profile.nodes if n.node_id == node.node_id]
    assert outcome.status != "OK" and not profile.records
    assert SECRET not in outcome.detail, outcome.detail
    assert "occurred_at" not in outcome.detail  # not even which column failed
    assert profile.score is None, "a profile that disclosed nothing was scored"

    (empty_outcome,) = [n for n in nothing.nodes if n.node_id == node.node_id]
    assert empty_outcome.status == "NOT_FOUND" and not nothing.records
    assert nothing.score is None, "a profile that disclosed nothing was scored"

    # The operator sees what failed, under the query's id, and the failure is audited.
    audited = node_queries(node.home / "credex-node.db", "P-0")
    assert len(audited) == 1, audited
    query_id, outcome_text, detail = audited[0]
    assert outcome_text.startswith("failed:") and SECRET not in detail
    lines = [line for line in node.log_text().splitlines() if SECRET in line]
    assert lines and all(query_id in line for line in lines), lines
