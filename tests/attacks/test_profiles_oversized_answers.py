"""Issue 12 item 6: nodes answer with oversized record sets (a node gone bad, or an adapter that
returns far too much). Two 9 MB answers took the profile past the message limit: the requester
got nothing, yet the consent's use was spent and the profile audited as assembled.

Each node's share of a profile is capped: an over-size answer is marked TOO_LARGE and the other
nodes' answers are still delivered; a profile that disclosed nothing spends no consent use and is
audited as such."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from credex.sdk.client import VerifiedProfile
from credex.testing.loop import LoopThread
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import Target
from tests.attacks.profiles_common import local_id, own_subject

RESEARCH = Purpose.PURPOSE_RESEARCH
FIN, EDU, VOL = (
    Category.CATEGORY_FINANCIAL,
    Category.CATEGORY_EDUCATION,
    Category.CATEGORY_VOLUNTEERING,
)
PBOC, EDUCATION, VOLUNTEERS = "pboc-credit-reference", "education-ministry", "volunteer-registry"
ROWS, ROW_BYTES = 40, 225_000  # 9 MB a node: two of them exceed gRPC's 16 MiB message limit
FIRST_ID = 900_000_000


def records_db(target: Target, node_id: str) -> Path:
    return target.root / "nodes" / node_id / "records.db"


@pytest.fixture(scope="module")
def bloated(target: Target) -> Iterator[str]:
    """A subject of our own about whom two nodes hold 9 MB of records each (written into the
    operators' databases, removed afterwards)."""
    subject_id, _ = own_subject(target, 5)
    text = "x" * ROW_BYTES
    pboc = sqlite3.connect(records_db(target, PBOC), timeout=30)
    education = sqlite3.connect(records_db(target, EDUCATION), timeout=30)
    borrower = int(local_id(target.root, subject_id, PBOC))
    student = local_id(target.root, subject_id, EDUCATION)
    ids = range(FIRST_ID, FIRST_ID + ROWS)
    try:
        with pboc:
            pboc.executemany(
                "INSERT INTO loans VALUES (?, ?, ?, 'consumer', 1000.0, 'CNY', '2020-01-01', "
                "'open')",
                [(i, borrower, text) for i in ids],
            )
        with education:
            education.executemany(
                "INSERT INTO enrollments VALUES (?, ?, ?, 'bachelor', 6, '2020-09-01', 'enrolled')",
                [(i, student, text) for i in ids],
            )
        yield subject_id
    finally:
        with pboc:
            pboc.execute("DELETE FROM loans WHERE loan_id >= ?", (FIRST_ID,))
        with education:
            education.execute("DELETE FROM enrollments WHERE enrollment_id >= ?", (FIRST_ID,))
        pboc.close()
        education.close()


async def profile_and_uses(
    target: Target, subject_id: str, categories: list[Category.ValueType]
) -> tuple[VerifiedProfile, int, str]:
    """The bank's profile under a fresh consent, the consent's uses afterwards, and how the
    subject's access log records the request."""
    _, subject_key = own_subject(target, 5)
    async with target.subject_client(subject_id, subject_key) as subject:
        consent_id = await subject.grant(
            requester_id="bank", purpose=RESEARCH, categories=categories, max_uses=5
        )
        async with target.requester_client() as bank:
            profile = await bank.get_profile(
                subject_id=subject_id, consent_id=consent_id, purpose=RESEARCH
            )
        uses = next(c.uses for c in await subject.consents() if c.consent_id == consent_id)
        log = await subject.access_log()
        outcome = next(r.outcome for r in log.records if r.request_id == profile.request_id)
    return profile, uses, outcome


def test_an_oversized_answer_is_marked_and_the_others_are_delivered(
    target: Target, loop: LoopThread, bloated: str
) -> None:
    profile, uses, outcome = loop.run(
        profile_and_uses(target, bloated, [FIN, EDU, VOL]), timeout=120
    )
    statuses = {n.node_id: n.status for n in profile.nodes}
    assert statuses[PBOC] == statuses[EDUCATION] == "TOO_LARGE", statuses
    assert statuses[VOLUNTEERS] in ("OK", "NOT_FOUND"), statuses
    assert {r.node_id for r in profile.records} <= {VOLUNTEERS}
    assert (uses, outcome) == (1, "assembled")


def test_a_profile_that_disclosed_nothing_spends_no_use(
    target: Target, loop: LoopThread, bloated: str
) -> None:
    profile, uses, outcome = loop.run(profile_and_uses(target, bloated, [FIN, EDU]), timeout=120)
    assert {n.node_id: n.status for n in profile.nodes} == {
        PBOC: "TOO_LARGE",
        EDUCATION: "TOO_LARGE",
    }
    assert profile.records == []
    assert uses == 0
    assert outcome == "nothing-disclosed"
