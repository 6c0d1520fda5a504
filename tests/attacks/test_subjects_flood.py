"""Review of issue 12: a subject, with nothing but their own key, could make the directory and
every node write without bound. Each pause or resume wrote a nonce, a status mark, a feed row
and an audit entry and started one push task per node (never bounded); grants were unbounded
per subject; an order repeating the current status still wrote.

Now subject-signed calls are rate-limited per subject (RESOURCE_EXHAUSTED, RATE_LIMITED, with
when to retry), a subject holds a bounded number of live consents (CONSENT_LIMIT), a repeated
order writes nothing, and at most one push per node is under way, later changes folded into
the next one.

The attacks run against a federation of their own (a directory and one node as processes)
with low limits, so that they need only a few calls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.lab import federation
from credex.lab.identities import subject_key
from credex.protocol.errors import RETRY_KEY, CredexError
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.runtime.db import readonly_uri
from credex.sdk.client import SubjectClient
from credex.v1 import subject_pb2
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import Target
from tests.attacks.nodedata_kit import subjects_of
from tests.attacks.profiles_common import nonce, now_ts, public_stub, refusal
from tests.attacks.test_profiles_subject_replay import pause, send

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
VOL = Category.CATEGORY_VOLUNTEERING
BURST = 10
MAX_CONSENTS = 3
# One call in 50 s: a subject's budget does not noticeably refill while a test runs.
LIMITS = {
    "CREDEX_DIRECTORY_SUBJECTS_RATE_PER_S": "0.02",
    "CREDEX_DIRECTORY_SUBJECTS_BURST": str(BURST),
    "CREDEX_DIRECTORY_SUBJECTS_MAX_CONSENTS": str(MAX_CONSENTS),
    "CREDEX_DIRECTORY_SERVER_METRICS_LISTEN": '"127.0.0.1:0"',
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A directory and one node (the volunteer registry) with the subject limits above."""
    root = Path(tmp_path_factory.mktemp("subjects")) / "fed"
    running = federation.start(root, subjects=40, seed=33, nodes=1, tied=True, directory_env=LIMITS)
    try:
        yield Target(running)
    finally:
        running.stop()


def subjects(target: Target, offset: int, count: int = 1) -> list[tuple[str, SigningKey]]:
    """Subjects of this test alone (each test its own offset: budgets are per subject)."""
    seed = target.fed.seed
    return [(s, subject_key(seed, s)) for s in subjects_of(target, offset, count)]


async def grant(
    target: Target, subject_id: str, key: SigningKey, client: SubjectClient | None = None
) -> Any:
    """A grant as the subject's SDK makes it (with `client`, or a client of its own): the
    consent id, or the refusal."""
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(target.subject_client(subject_id, key))
        try:
            return await client.grant(
                requester_id="bank", purpose=LOAN, categories=[VOL], max_uses=5
            )
        except CredexError as err:  # judged by the test
            return err


def retry_after_ms(err: grpc.aio.AioRpcError) -> int:
    metadata: Any = err.trailing_metadata() or ()
    values = [int(v) for k, v in metadata if k == RETRY_KEY]
    return values[0] if values else 0


def directory_rows(target: Target, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of the directory's own database, read-only (the directory keeps writing it)."""
    conn = sqlite3.connect(readonly_uri(target.settings.db_path), uri=True)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def test_a_subject_toggling_a_consent_is_rate_limited(fed: Target) -> None:
    (subject_id, key), (other_id, other_key) = subjects(fed, 0, 2)

    async def attack() -> tuple[str, list[Any], Any]:
        consent_id = await grant(fed, subject_id, key)
        assert isinstance(consent_id, str), consent_id
        replies: list[Any] = []
        async with public_stub(fed) as stub:
            for i in range(3 * BURST):
                reply = await send(
                    stub.PauseConsent, pause(subject_id, key, consent_id, paused=i % 2 == 0)
                )
                replies.append(reply)
                if isinstance(reply, grpc.aio.AioRpcError):
                    break
            # another subject's budget is their own
            other = await send(stub.ListConsents, list_query(other_id, other_key))
        return consent_id, replies, other

    consent_id, replies, other = asyncio.run(attack())
    refused = replies[-1]
    assert isinstance(refused, grpc.aio.AioRpcError), f"{len(replies)} toggles all applied"
    assert refusal(refused) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert retry_after_ms(refused) > 0
    applied = len(replies) - 1
    assert 0 < applied <= BURST
    # every applied toggle is one feed row per node with a ticket; the refused one wrote nothing
    changes = directory_rows(
        fed,
        "SELECT count(*) FROM ticket_changes JOIN consent_tickets USING (ticket_id, node_id) "
        "WHERE consent_id = ?",
        consent_id,
    )
    tickets = directory_rows(
        fed, "SELECT count(*) FROM consent_tickets WHERE consent_id = ?", consent_id
    )
    assert tickets[0][0] > 0
    assert changes == [(applied * tickets[0][0],)]
    assert not isinstance(other, grpc.aio.AioRpcError), other


def list_query(subject_id: str, key: SigningKey) -> subject_pb2.ListConsentsRequest:
    query = subject_pb2.ConsentListQuery(subject_id=subject_id, issued_at=now_ts(), nonce=nonce())
    return subject_pb2.ListConsentsRequest(query=seal(query, key))


def test_a_subject_holds_a_bounded_number_of_live_consents(fed: Target) -> None:
    [(subject_id, key)] = subjects(fed, 2)

    async def attack() -> tuple[list[Any], Any, Any, Any]:
        # one client: it learns the nodes holding the subject's data (and registers its keys
        # for them) once, then each grant is one call of the subject's budget
        async with fed.subject_client(subject_id, key) as client:
            held = [await grant(fed, subject_id, key, client) for _ in range(MAX_CONSENTS)]
            over = await grant(fed, subject_id, key, client)
            await client.pause(held[0])  # a paused consent is still held
            still_over = await grant(fed, subject_id, key, client)
            await client.revoke(held[0])  # a revoked one is not
            return held, over, still_over, await grant(fed, subject_id, key, client)

    held, over, still_over, after_revoking = asyncio.run(attack())
    assert all(isinstance(c, str) for c in held), held
    for refused in (over, still_over):
        assert not isinstance(refused, str), "a consent past the limit was granted"
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "CONSENT_LIMIT",
        ), refused
    assert isinstance(after_revoking, str), after_revoking
    live = directory_rows(
        fed,
        "SELECT count(*) FROM consents WHERE subject_id = ? AND status != 'revoked'",
        subject_id,
    )
    assert live == [(MAX_CONSENTS,)]


def test_an_order_repeating_the_current_status_writes_nothing(fed: Target) -> None:
    """No nonce, no status mark, no feed row, no audit entry for a repeat; a held order signed
    before the repeat still cannot undo it."""
    [(subject_id, key)] = subjects(fed, 3)

    def snapshot(consent_id: str) -> tuple[Any, ...]:
        return (
            directory_rows(fed, "SELECT count(*) FROM subject_nonces"),
            directory_rows(fed, "SELECT * FROM consents WHERE consent_id = ?", consent_id),
            directory_rows(fed, "SELECT count(*) FROM ticket_changes"),
            directory_rows(
                fed,
                "SELECT count(*) FROM audit_log WHERE consent_id = ? OR subject_ref = ?",
                consent_id,
                subject_id,
            ),
        )

    async def attack() -> tuple[tuple[Any, ...], tuple[Any, ...], list[Any], Any, str]:
        consent_id = await grant(fed, subject_id, key)
        assert isinstance(consent_id, str), consent_id
        async with public_stub(fed) as stub:
            first = await send(stub.PauseConsent, pause(subject_id, key, consent_id, paused=True))
            assert not isinstance(first, grpc.aio.AioRpcError), first
            before = snapshot(consent_id)
            held = pause(subject_id, key, consent_id, paused=False)
            await asyncio.sleep(0.002)
            repeats = [
                await send(stub.PauseConsent, pause(subject_id, key, consent_id, paused=True))
                for _ in range(3)
            ]
            after = snapshot(consent_id)
            late = await send(stub.PauseConsent, held)
        async with fed.subject_client(subject_id, key) as client:
            status = next(c.status for c in await client.consents() if c.consent_id == consent_id)
        return before, after, repeats, late, status

    before, after, repeats, late, status = asyncio.run(attack())
    assert [isinstance(r, grpc.aio.AioRpcError) for r in repeats] == [False] * 3, repeats
    assert after == before
    assert isinstance(late, grpc.aio.AioRpcError), "a resume older than the last pause applied"
    assert refusal(late) == (grpc.StatusCode.FAILED_PRECONDITION, "STALE_CHANGE")
    assert status == "paused"


def pushes_in_flight(target: Target) -> float:
    address = target.fed.metrics_address
    assert address, "the directory serves no metrics"
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith("credex_pushes_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no credex_pushes_in_flight in the directory's metrics")


def test_pushes_to_a_node_that_does_not_answer_do_not_pile_up(fed: Target) -> None:
    """The node is frozen (SIGSTOP): every push to it hangs until its timeout. Four subjects
    toggle their consents at once; the directory keeps at most one push under way per node."""
    togglers = subjects(fed, 4, 4)
    node_pid = fed.pid(fed.node_ids[0])

    async def toggle(subject_id: str, key: SigningKey, consent_id: str) -> int:
        applied = 0
        async with public_stub(fed) as stub:
            for i in range(BURST - 3):  # the grant took three calls of the budget
                reply = await send(
                    stub.PauseConsent, pause(subject_id, key, consent_id, paused=i % 2 == 0)
                )
                applied += not isinstance(reply, grpc.aio.AioRpcError)
        return applied

    async def watch(done: asyncio.Event, seen: list[float]) -> None:
        while not done.is_set():
            seen.append(await asyncio.to_thread(pushes_in_flight, fed))
            await asyncio.sleep(0.05)

    async def attack() -> tuple[int, list[float]]:
        consents = [await grant(fed, s, k) for s, k in togglers]
        assert all(isinstance(c, str) for c in consents), consents
        done, seen = asyncio.Event(), [pushes_in_flight(fed)]
        watcher = asyncio.create_task(watch(done, seen))
        os.kill(node_pid, signal.SIGSTOP)
        try:
            counts = await asyncio.gather(
                *(toggle(s, k, c) for (s, k), c in zip(togglers, consents, strict=True))
            )
            seen.append(pushes_in_flight(fed))
        finally:
            os.kill(node_pid, signal.SIGCONT)
            done.set()
            await watcher
        return sum(counts), seen

    applied, seen = asyncio.run(attack())
    assert applied >= 2 * len(togglers)
    assert max(seen) <= 1, f"pushes under way to one node: {seen}"
    # once the node answers again the pushes end
    deadline = time.monotonic() + 60
    while pushes_in_flight(fed) > 0:
        assert time.monotonic() < deadline, "pushes still under way a minute later"
        time.sleep(0.1)
