"""Issue 12 item 4: a requester floods refusals under one subject. Each was its own audit entry
(one disk write per refusal), and GetAccessLog returned the whole history in one message, which
fails past the message limit.

Repeated refusals become one audit entry with a count per window (the first of them written at
once), and the access log comes in pages, newest first."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from credex.directory.config import DirectorySettings
from credex.lab import federation
from credex.lab.demo import pick_subject
from credex.lab.identities import subject_key
from credex.protocol.clock import to_timestamp
from credex.protocol.errors import CredexError, Reason
from credex.protocol.signing import seal
from credex.runtime.audit import verify_log
from credex.runtime.db import readonly_uri
from credex.sdk.client import RequesterClient, SubjectClient
from credex.testing.loop import LoopThread
from credex.v1 import subject_pb2
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.profiles_common import nonce, subject_service

SEED = 31
FLOOD = 400
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
VOL = Category.CATEGORY_VOLUNTEERING
USED_UP = f"refused:{Reason.CONSENT_USED_UP}"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[federation.RunningFederation]:
    """A federation of its own whose requesters are not rate-limited nor turned away after
    repeated refusals (to flood quickly: the per-caller refusal budget is proven in
    test_availability_refusals) and whose refusal window outlasts the test (so only the first
    refusal reaches the disk while the directory runs)."""
    root = Path(tmp_path_factory.mktemp("flooded")) / "fed"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CREDEX_DIRECTORY_DIRECTORY_REQUESTER_RATE_PER_S", "100000")
        env.setenv("CREDEX_DIRECTORY_DIRECTORY_REQUESTER_BURST", "100000")
        env.setenv("CREDEX_DIRECTORY_SERVER_REFUSAL_WINDOW_S", "3600")
        env.setenv("CREDEX_DIRECTORY_SERVER_REFUSALS_PER_S", "100000")
        env.setenv("CREDEX_DIRECTORY_SERVER_REFUSAL_BURST", "100000")
        running = federation.start(root, subjects=20, seed=SEED, nodes=1, tied=True)
        try:
            yield running
        finally:
            running.stop()


def refusal_rows(root: Path, subject_id: str) -> list[tuple[int, int]]:
    """(seq, count) of the directory's audit entries of refused requests about the subject."""
    db = DirectorySettings(home=federation.directory_home(root)).db_path
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        return conn.execute(
            "SELECT seq, count FROM audit_log WHERE subject_ref = ? AND outcome = ? ORDER BY seq",
            (subject_id, USED_UP),
        ).fetchall()
    finally:
        conn.close()


async def page(fed: federation.Federation, subject_id: str, size: int, token: str = "") -> Any:
    """One page of the subject's access log, asked for as a subject's client would."""
    query = subject_pb2.AccessLogQuery(
        subject_id=subject_id,
        issued_at=to_timestamp(time.time()),
        nonce=nonce(),
        page_size=size,
        page_token=token,
    )
    key = subject_key(SEED, subject_id)
    async with subject_service(fed.public_address, fed.ca_pem) as stub:
        return await stub.GetAccessLog(
            subject_pb2.GetAccessLogRequest(query=seal(query, key)), timeout=30
        )


def test_a_flood_of_refusals_is_one_entry_and_the_log_comes_in_pages(
    fed: federation.RunningFederation, loop: LoopThread
) -> None:
    node_id = fed.manifest.nodes[0].id
    subject_id = pick_subject(fed.root, {node_id})
    skey = subject_key(SEED, subject_id)
    home = fed.requester("bank")

    async def flood() -> str:
        async with SubjectClient(
            fed.public_address, subject_id, skey, ca_pem=fed.ca_pem
        ) as subject:
            consent_id = await subject.grant(
                requester_id="bank", purpose=LOAN, categories=[VOL], max_uses=1
            )
        async with RequesterClient(
            fed.directory_address, "bank", home.signing_key(), tls=home.tls(),
            directory_key=home.directory_key(),
        ) as bank:  # fmt: skip
            await bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)

            async def refused() -> str:
                try:
                    await bank.get_profile(
                        subject_id=subject_id, consent_id=consent_id, purpose=LOAN
                    )
                except CredexError as err:
                    return str(err.reason)
                return "served"

            for _ in range(FLOOD // 25):
                outcomes = await asyncio.gather(*(refused() for _ in range(25)))
                assert set(outcomes) == {Reason.CONSENT_USED_UP}
        return consent_id

    loop.run(flood(), timeout=300)
    # the attacker's rate did not become disk writes: one entry, the first refusal
    assert [count for _, count in refusal_rows(fed.root, subject_id)] == [1]

    # the access log comes in pages, newest first, each far below the message limit
    first = loop.run(page(fed, subject_id, 1))
    assert len(first.records) == 1 and first.next_page_token
    assert first.records[0].outcome == USED_UP and first.records[0].count == 1
    assert first.ByteSize() < 64 * 1024
    second = loop.run(page(fed, subject_id, 1, first.next_page_token))
    assert [r.outcome for r in second.records] == ["assembled"]
    assert not second.next_page_token
    assert not second.consents  # consents come with the first page only
    assert [c.uses for c in first.consents] == [1]

    # the counted refusals reach the log when the directory stops (or its window ends)
    fed.stop()
    rows = refusal_rows(fed.root, subject_id)
    assert [count for _, count in rows] == [1, FLOOD - 1]
    report = verify_log(DirectorySettings(home=federation.directory_home(fed.root)).db_path)
    assert report.ok, report.problem

    # and the subject reads them, with their count, through its own client
    restarted = federation.start(fed.root, subjects=20, seed=SEED, nodes=1, tied=True)
    try:

        async def read() -> Any:
            async with SubjectClient(
                restarted.public_address, subject_id, skey, ca_pem=restarted.ca_pem
            ) as subject:
                return await subject.access_log(page_size=1)

        log = loop.run(read())
    finally:
        restarted.stop()
    assert [(r.outcome, r.count) for r in log.records] == [
        (USED_UP, FLOOD - 1),
        (USED_UP, 1),
        ("assembled", 1),
    ]
