"""Call slots held by stalled requests: gRPC takes a server-wide call slot when a call's headers
arrive, and a unary handler runs only once the request has arrived. A caller that opens calls
and never sends their request (or half of it) held every slot, so that nobody else's call was
taken. Each caller may have only its share of calls in progress, and a request must arrive
within a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from credex.lab import federation
from credex.protocol.channels import MAX_TRANSPORT_BYTES
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import Target

READ_TIMEOUT_S = 2
STALLED = 300  # more than the server's 256 call slots
CHANNELS = 3  # one connection carries at most 100 streams


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A federation of its own, with a short request deadline so the test need not wait."""
    root = Path(tmp_path_factory.mktemp("stalled")) / "fed"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CREDEX_DIRECTORY_SERVER_REQUEST_READ_TIMEOUT_S", str(READ_TIMEOUT_S))
        fed = federation.start(root, subjects=20, seed=43, nodes=1, tied=True)
    try:
        yield Target(fed)
    finally:
        fed.stop()


def test_stalled_calls_of_one_caller_do_not_take_everyones_slots(own: Target) -> None:
    staller = asyncio.run(own.enroll_requester("staller"))
    node = own.node_ids[0]
    subject_id, key = own.subject({node})
    loan = Purpose.PURPOSE_LOAN_APPLICATION

    async def attack() -> tuple[list[str], list[str]]:
        channels = [
            grpc.aio.secure_channel(
                own.address,
                staller.tls().channel_credentials(),
                options=[
                    ("grpc.ssl_target_name_override", "credex-directory"),
                    ("grpc.use_local_subchannel_pool", 1),  # a connection of its own each
                    ("grpc.max_receive_message_length", MAX_TRANSPORT_BYTES),
                ],
            )
            for _ in range(CHANNELS)
        ]
        hold = asyncio.Event()

        async def never() -> AsyncIterator[bytes]:
            await hold.wait()
            return
            yield b""  # an async generator that sends nothing until released

        async def stalled(channel: grpc.aio.Channel) -> str:
            call = channel.stream_unary("/credex.v1.MemberService/ListMembers", None, None)
            try:
                await call(never(), timeout=60)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return "OK"

        try:
            calls = [asyncio.create_task(stalled(channels[i % CHANNELS])) for i in range(STALLED)]
            await asyncio.sleep(0.5)  # every call has started (or been refused)
            # Meanwhile another member, and a subject, are served as usual.
            async with own.subject_client(subject_id, key) as owner:
                consent = await owner.grant(
                    requester_id="bank", purpose=loan, categories=[Category.CATEGORY_VOLUNTEERING]
                )
            async with own.requester_client(timeout_s=10) as bank:
                profile = await bank.get_profile(
                    subject_id=subject_id, consent_id=consent, purpose=loan
                )
            served = [n.status for n in profile.nodes]
            outcomes = await asyncio.gather(*calls)
        finally:
            hold.set()
            for channel in channels:
                await channel.close(None)
        return served, list(outcomes)

    served, outcomes = asyncio.run(attack())
    assert served == ["OK"]
    # The caller's share was let in and cut off at the deadline; the rest refused at once.
    assert outcomes.count("DEADLINE_EXCEEDED") == 64, outcomes
    assert outcomes.count("RESOURCE_EXHAUSTED") == STALLED - 64, outcomes
