"""Issue 12 item 14: two profile requests in flight at once under one request id. Uniqueness was
checked only against assembled profiles, so both were served, and subject A's access log then
showed subject B's nodes (node results are linked to a profile by its request id).

The directory claims a request id when it authorises the request, in the transaction that
records the nonce and counts the consent's use: the second is refused as a replay."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from credex.protocol.errors import CredexError, Reason
from credex.protocol.signing import seal
from credex.sdk.client import RequesterClient
from credex.testing.loop import LoopThread
from credex.v1 import requester_pb2
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import Target
from tests.attacks.profiles_common import own_subject

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
VOL = Category.CATEGORY_VOLUNTEERING
ROUNDS = 6


def with_request_id(client: RequesterClient, key: Any, request_id: str, **kwargs: Any) -> Any:
    request = client.profile_request(purpose=LOAN, **kwargs)
    body = requester_pb2.ProfileRequest.FromString(request.request.body)
    body.request_id = request_id
    return requester_pb2.GetProfileRequest(request=seal(body, key))


async def outcome(client: RequesterClient, request: Any) -> str:
    try:
        await client.send_profile_request(request)
    except CredexError as err:
        return str(err.reason)
    except grpc.aio.AioRpcError as err:  # pragma: no cover - the SDK maps every refusal
        return err.code().name
    return "served"


def test_two_requests_in_flight_cannot_share_a_request_id(target: Target, loop: LoopThread) -> None:
    a, a_key = own_subject(target, 3)
    b, b_key = own_subject(target, 4)
    home = target.requester_home()
    key = home.signing_key()

    async def attack() -> tuple[list[list[str]], list[tuple[str, dict[str, str]]]]:
        consents = {}
        for subject_id, subject_key in ((a, a_key), (b, b_key)):
            async with target.subject_client(subject_id, subject_key) as subject:
                consents[subject_id] = await subject.grant(
                    requester_id=home.member_id, purpose=LOAN, categories=[VOL],
                    max_uses=2 * ROUNDS,
                )  # fmt: skip
        rounds = []
        shared_ids = []
        async with target.requester_client() as bank:
            for _ in range(ROUNDS):
                request_id = f"r-shared-{uuid.uuid4().hex}"
                shared_ids.append(request_id)
                pair = [
                    with_request_id(bank, key, request_id, subject_id=s, consent_id=consents[s])
                    for s in (a, b)
                ]
                rounds.append(list(await asyncio.gather(*(outcome(bank, r) for r in pair))))
        async with target.subject_client(a, a_key) as subject:
            log = await subject.access_log()
        seen = [(r.request_id, r.nodes) for r in log.records if r.request_id in shared_ids]
        return rounds, seen

    rounds, seen = loop.run(attack())
    for pair in rounds:
        assert sorted(pair) == sorted(["served", Reason.REPLAY]), rounds
    # A's log shows only A's own node results under the shared ids
    for _, nodes in seen:
        assert set(nodes) <= {"volunteer-registry"}
        assert len(nodes) <= 1, seen


def test_a_request_id_refused_once_may_not_be_served_twice(
    target: Target, loop: LoopThread
) -> None:
    """The claim is made only by an authorised request: a refused request leaves its id free,
    a served one takes it for good."""
    a, a_key = own_subject(target, 3)
    home = target.requester_home()
    key = home.signing_key()

    async def attack() -> list[str]:
        async with target.subject_client(a, a_key) as subject:
            consent_id = await subject.grant(
                requester_id=home.member_id, purpose=LOAN, categories=[VOL], max_uses=3
            )
        request_id = f"r-claim-{uuid.uuid4().hex}"
        async with target.requester_client() as bank:
            return [
                await outcome(
                    bank,
                    with_request_id(bank, key, request_id, subject_id=a, consent_id="c-none"),
                ),
                await outcome(
                    bank,
                    with_request_id(bank, key, request_id, subject_id=a, consent_id=consent_id),
                ),
                await outcome(
                    bank,
                    with_request_id(bank, key, request_id, subject_id=a, consent_id=consent_id),
                ),
            ]

    assert loop.run(attack()) == [Reason.CONSENT_NOT_FOUND, "served", Reason.REPLAY]
