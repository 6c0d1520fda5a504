"""Issue 12 item 13: subject-signed messages replayed within their freshness window. A captured
"resume", replayed after the subject paused again, re-activated the consent and the bank got the
profile; a captured access-log query gave its replayer the subject's log.

Every subject-signed message carries a nonce the directory refuses to see twice, and a status
change signed before the consent's last change is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from credex.protocol.clock import to_timestamp
from credex.protocol.consents import create_consent
from credex.protocol.errors import CredexError, Reason
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.testing.loop import LoopThread
from credex.v1 import subject_pb2
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.consent_pb2 import ConsentPause, ConsentRevocation, ConsentStatus
from tests.attacks.conftest import Target
from tests.attacks.profiles_common import nonce, own_subject, public_stub, refusal

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
FIN = Category.CATEGORY_FINANCIAL


def pause(subject_id: str, key: SigningKey, consent_id: str, *, paused: bool) -> Any:
    """A pause (or resume) exactly as the subject's SDK signs it."""
    message = ConsentPause(
        consent_id=consent_id,
        subject_id=subject_id,
        paused=paused,
        issued_at=to_timestamp(time.time()),
        nonce=nonce(),
    )
    return subject_pb2.PauseConsentRequest(pause=seal(message, key))


async def send(method: Any, request: Any) -> Any:
    try:
        return await method(request, timeout=30)
    except grpc.aio.AioRpcError as err:
        return err


async def status_of(target: Target, subject_id: str, key: SigningKey, consent_id: str) -> str:
    async with target.subject_client(subject_id, key) as client:
        return next(c.status for c in await client.consents() if c.consent_id == consent_id)


async def bank_profile(target: Target, subject_id: str, consent_id: str) -> str:
    """ "served", or the reason the bank was refused."""
    async with target.requester_client() as bank:
        try:
            await bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)
        except CredexError as err:
            return str(err.reason)
    return "served"


async def granted(target: Target, subject_id: str, key: SigningKey) -> str:
    async with target.subject_client(subject_id, key) as client:
        return await client.grant(requester_id="bank", purpose=LOAN, categories=[FIN], max_uses=10)


def test_a_captured_resume_replayed_after_a_new_pause_is_refused(
    target: Target, loop: LoopThread
) -> None:
    subject_id, key = own_subject(target, 1)

    async def attack() -> tuple[Any, str, str]:
        consent_id = await granted(target, subject_id, key)
        async with public_stub(target) as stub:
            for paused in (True, False):  # the subject pauses, then resumes: the resume leaks
                sent = pause(subject_id, key, consent_id, paused=paused)
                answer = await send(stub.PauseConsent, sent)
                assert not isinstance(answer, grpc.aio.AioRpcError), answer
            captured = sent
            again = await send(stub.PauseConsent, pause(subject_id, key, consent_id, paused=True))
            assert again.status == ConsentStatus.CONSENT_STATUS_PAUSED
            replayed = await send(stub.PauseConsent, captured)
        return (
            replayed,
            await status_of(target, subject_id, key, consent_id),
            await bank_profile(target, subject_id, consent_id),
        )

    replayed, status, bank = loop.run(attack())
    assert isinstance(replayed, grpc.aio.AioRpcError), "the replayed resume was accepted"
    assert refusal(replayed) == (grpc.StatusCode.PERMISSION_DENIED, "REPLAY")
    assert status == "paused"
    assert bank == Reason.CONSENT_PAUSED


def test_a_resume_held_back_and_delivered_after_a_later_pause_is_refused(
    target: Target, loop: LoopThread
) -> None:
    """An attacker holds a genuine, never-delivered resume and delivers it (a new nonce, within
    its window) after the subject paused: the pause was signed later, so the resume is stale."""
    subject_id, key = own_subject(target, 1)

    async def attack() -> tuple[Any, str, str]:
        consent_id = await granted(target, subject_id, key)
        async with public_stub(target) as stub:
            held = pause(subject_id, key, consent_id, paused=False)
            await asyncio.sleep(0.002)  # the subject's next message is signed after it
            later = await send(stub.PauseConsent, pause(subject_id, key, consent_id, paused=True))
            assert not isinstance(later, grpc.aio.AioRpcError), later
            delivered = await send(stub.PauseConsent, held)
        return (
            delivered,
            await status_of(target, subject_id, key, consent_id),
            await bank_profile(target, subject_id, consent_id),
        )

    delivered, status, bank = loop.run(attack())
    assert isinstance(delivered, grpc.aio.AioRpcError), "the stale resume was applied"
    assert refusal(delivered) == (grpc.StatusCode.FAILED_PRECONDITION, "STALE_CHANGE")
    assert status == "paused"
    assert bank == Reason.CONSENT_PAUSED


def test_a_stale_pause_cannot_undo_a_later_resume(target: Target, loop: LoopThread) -> None:
    """The rule cuts both ways: a pause signed before the last resume is refused as well, and
    repeating the current status with a later message moves the mark forward."""
    subject_id, key = own_subject(target, 1)

    async def attack() -> tuple[Any, Any, str]:
        consent_id = await granted(target, subject_id, key)
        async with public_stub(target) as stub:
            first = await send(stub.PauseConsent, pause(subject_id, key, consent_id, paused=True))
            assert not isinstance(first, grpc.aio.AioRpcError), first
            held = pause(subject_id, key, consent_id, paused=True)
            await asyncio.sleep(0.002)
            resumed = await send(
                stub.PauseConsent, pause(subject_id, key, consent_id, paused=False)
            )
            assert not isinstance(resumed, grpc.aio.AioRpcError), resumed
            stale = await send(stub.PauseConsent, held)
            # a held "resume" older than a repeated (no-op) resume is refused too
            held_resume = pause(subject_id, key, consent_id, paused=False)
            await asyncio.sleep(0.002)
            repeated = await send(
                stub.PauseConsent, pause(subject_id, key, consent_id, paused=False)
            )
            assert not isinstance(repeated, grpc.aio.AioRpcError), repeated
            older = await send(stub.PauseConsent, held_resume)
        return stale, older, await status_of(target, subject_id, key, consent_id)

    stale, older, status = loop.run(attack())
    assert isinstance(stale, grpc.aio.AioRpcError), "the stale pause was applied"
    assert refusal(stale) == (grpc.StatusCode.FAILED_PRECONDITION, "STALE_CHANGE")
    assert isinstance(older, grpc.aio.AioRpcError), "a resume older than the last was accepted"
    assert status == "active"


def _revocation(subject_id: str, key: SigningKey, consent_id: str) -> Any:
    message = ConsentRevocation(
        consent_id=consent_id,
        subject_id=subject_id,
        issued_at=to_timestamp(time.time()),
        nonce=nonce(),
    )
    return subject_pb2.RevokeConsentRequest(revocation=seal(message, key))


def _consent_list(subject_id: str, key: SigningKey, consent_id: str) -> Any:
    query = subject_pb2.ConsentListQuery(
        subject_id=subject_id, issued_at=to_timestamp(time.time()), nonce=nonce()
    )
    return subject_pb2.ListConsentsRequest(query=seal(query, key))


def _access_log(subject_id: str, key: SigningKey, consent_id: str) -> Any:
    query = subject_pb2.AccessLogQuery(
        subject_id=subject_id, issued_at=to_timestamp(time.time()), nonce=nonce()
    )
    return subject_pb2.GetAccessLogRequest(query=seal(query, key))


def _dispute_list(subject_id: str, key: SigningKey, consent_id: str) -> Any:
    query = subject_pb2.DisputeListQuery(
        subject_id=subject_id, issued_at=to_timestamp(time.time()), nonce=nonce()
    )
    return subject_pb2.ListDisputesRequest(query=seal(query, key))


def _pause(subject_id: str, key: SigningKey, consent_id: str) -> Any:
    return pause(subject_id, key, consent_id, paused=True)


@pytest.mark.parametrize(
    ("method", "build"),
    [
        ("RevokeConsent", _revocation),
        ("PauseConsent", _pause),
        ("ListConsents", _consent_list),
        ("GetAccessLog", _access_log),
        ("ListDisputes", _dispute_list),
    ],
)
def test_every_subject_signed_message_is_refused_the_second_time(
    target: Target, loop: LoopThread, method: str, build: Callable[..., Any]
) -> None:
    """A captured read query would hand its replayer the subject's consents, access log or
    disputes; a captured change would be applied again."""
    subject_id, key = own_subject(target, 2)

    async def attack() -> tuple[Any, Any]:
        consent_id = await granted(target, subject_id, key)
        request = build(subject_id, key, consent_id)
        async with public_stub(target) as stub:
            first = await send(getattr(stub, method), request)
            second = await send(getattr(stub, method), request)
        return first, second

    first, second = loop.run(attack())
    assert not isinstance(first, grpc.aio.AioRpcError), first
    assert isinstance(second, grpc.aio.AioRpcError), f"the replayed {method} was answered"
    assert refusal(second) == (grpc.StatusCode.PERMISSION_DENIED, "REPLAY")


def test_a_subject_message_without_a_nonce_is_refused(target: Target, loop: LoopThread) -> None:
    """Messages signed the old way (no nonce) cannot be told from replays: refused."""
    subject_id, key = own_subject(target, 2)
    query = subject_pb2.AccessLogQuery(subject_id=subject_id, issued_at=to_timestamp(time.time()))

    async def read() -> Any:
        async with public_stub(target) as stub:
            return await send(
                stub.GetAccessLog, subject_pb2.GetAccessLogRequest(query=seal(query, key))
            )

    answer = loop.run(read())
    assert isinstance(answer, grpc.aio.AioRpcError), "a query without a nonce was answered"
    assert refusal(answer) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED")


def test_the_sdk_changes_a_consent_back_and_forth(target: Target, loop: LoopThread) -> None:
    """The subject's own client signs every message with a fresh nonce and a later time."""
    subject_id, key = own_subject(target, 6)

    async def flip() -> list[str]:
        consent_id = await granted(target, subject_id, key)
        async with target.subject_client(subject_id, key) as client:
            return [
                await client.pause(consent_id),
                await client.resume(consent_id),
                await client.pause(consent_id),
                await client.resume(consent_id),
                await client.revoke(consent_id),
            ]

    assert loop.run(flip()) == ["paused", "active", "paused", "active", "revoked"]


def test_a_replayed_grant_is_refused_by_its_consent_id(target: Target, loop: LoopThread) -> None:
    """A consent carries no nonce: its id is unique for good, so the very same signed grant
    sent again is refused, whenever it comes."""
    subject_id, key = own_subject(target, 7)
    now = time.time()
    signed = create_consent(
        key, requester_id="bank", purpose=LOAN, categories=[FIN], not_before=now,
        not_after=now + 86_400, max_uses=1,
    )  # fmt: skip
    request = subject_pb2.GrantConsentRequest(consent=signed, subject_id=subject_id)

    async def twice() -> tuple[Any, Any]:
        async with public_stub(target) as stub:
            return await send(stub.GrantConsent, request), await send(stub.GrantConsent, request)

    first, second = loop.run(twice())
    assert not isinstance(first, grpc.aio.AioRpcError), first
    assert isinstance(second, grpc.aio.AioRpcError), "the replayed grant was accepted"
    assert refusal(second) == (grpc.StatusCode.ALREADY_EXISTS, "CONSENT_EXISTS")
