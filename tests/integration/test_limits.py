"""Use limits: per-requester rate at the directory, per-directory rate at nodes, and the
purpose's monthly ceiling; each refusal is RESOURCE_EXHAUSTED with a retry hint."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from credex.directory.quotas import month_of
from credex.node.config import load_node_config
from credex.node.server import build_service, start_node
from credex.protocol.channels import open_channel
from credex.protocol.errors import REASON_KEY, RETRY_KEY, Reason, ResourceExhausted
from credex.runtime.ratelimit import RateLimiter
from credex.testing.federation import Federation, start_federation
from credex.testing.loop import LoopThread
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.node_pb2_grpc import NodeServiceStub
from tests.harness import trailer_map
from tests.integration.test_node_refusals import node_query, signed_request

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
PROMOTION = Purpose.PURPOSE_PROMOTION


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock)
    assert [limiter.take("bank") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("bank") == pytest.approx(0.5)
    assert limiter.take("school") == 0.0  # per caller
    clock.now += 0.5
    assert limiter.take("bank") == 0.0
    clock.now -= 100  # a clock stepped back neither refills nor drains
    assert limiter.take("bank") == pytest.approx(0.5)


def test_a_flood_of_new_keys_does_not_wipe_the_debts_of_callers_turned_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_KEYS keys, buckets that have refilled are dropped (as good as new), then the
    least recently used; a caller in debt keeps its debt while it keeps calling."""
    monkeypatch.setattr(RateLimiter, "MAX_KEYS", 100)
    clock = Clock()
    limiter = RateLimiter(1.0, 3, clock)
    for _ in range(10):
        limiter.charge("attacker")
    for i in range(1000):  # as many addresses as an IPv6 /48 offers, and more than held
        limiter.take(f"address {i}")
        limiter.wait("attacker")  # it keeps calling: recently used
    assert limiter.wait("attacker") > 0  # still turned away
    assert len(limiter._buckets) <= 100


def test_month_boundaries() -> None:
    month, left = month_of(1_798_761_599.0)  # 2026-12-31 23:59:59 UTC
    assert (month, left) == ("2026-12", 1.0)
    assert month_of(1_798_761_600.0)[0] == "2027-01"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, loop: LoopThread) -> Iterator[Federation]:
    """A federation whose directory lets each requester send 1 profile request a second,
    with a burst of 3."""
    fed = start_federation(
        Path(tmp_path_factory.mktemp("strict")), loop, requester_rate_per_s=1.0, requester_burst=3
    )
    yield fed
    fed.stop()


def test_requester_over_its_rate_is_told_when_to_retry(strict: Federation) -> None:
    subject = strict.subject("S1")
    consent_id = strict.loop.run(
        subject.grant(
            requester_id="bank", purpose=LOAN, categories=[Category.CATEGORY_FINANCIAL],
            max_uses=10,
        )
    )  # fmt: skip
    bank = strict.requester("bank")
    for _ in range(3):
        strict.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    with pytest.raises(ResourceExhausted) as err:
        strict.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    assert err.value.reason == Reason.RATE_LIMITED
    assert err.value.retry_after_s is not None and 0 < err.value.retry_after_s <= 1.0
    # another requester has its own budget
    school = strict.requester("school")
    views = strict.loop.run(subject.consents())
    assert [v.uses for v in views if v.consent_id == consent_id] == [3]
    with pytest.raises(Exception) as other:
        strict.loop.run(school.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    assert getattr(other.value, "reason", None) == Reason.CONSENT_WRONG_REQUESTER


def test_purpose_ceiling_per_month(federation: Federation) -> None:
    """The harness allows 2 promotion profiles per requester, subject and month."""
    subject = federation.subject("S1")
    consent_id = federation.loop.run(
        subject.grant(
            requester_id="school", purpose=PROMOTION, categories=[Category.CATEGORY_VOLUNTEERING],
            max_uses=10,
        )
    )  # fmt: skip
    school = federation.requester("school")
    for _ in range(2):
        federation.loop.run(
            school.get_profile(subject_id="S1", consent_id=consent_id, purpose=PROMOTION)
        )
    with pytest.raises(ResourceExhausted) as err:
        federation.loop.run(
            school.get_profile(subject_id="S1", consent_id=consent_id, purpose=PROMOTION)
        )
    assert err.value.reason == Reason.PURPOSE_LIMIT
    _, until_next_month = month_of(federation.clock())
    assert err.value.retry_after_s == pytest.approx(until_next_month, abs=5)
    views = federation.loop.run(subject.consents())
    assert [v.uses for v in views if v.consent_id == consent_id] == [2]  # refusal used nothing


def test_node_over_its_rate_refuses_the_directory_with_a_retry_hint(
    federation: Federation, tmp_path: Path
) -> None:
    """A second pboc node server that allows 1 query a second with a burst of 2."""
    config = dataclasses.replace(
        load_node_config(federation.node_configs["pboc"]), rate_per_s=1.0, burst=2.0
    )

    async def run() -> list[grpc.StatusCode]:
        node = await start_node(
            config, service=build_service(config, clock=federation.clock),
            announce_to_directory=False,
        )  # fmt: skip
        codes = []
        try:
            async with open_channel(node.address, federation.directory_tls) as channel:
                stub = NodeServiceStub(channel)
                for _ in range(3):
                    try:
                        await stub.QueryRecords(signed_request(federation, node_query(federation)))
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code())
                        trailers = trailer_map(exc)
                        assert trailers[REASON_KEY] == Reason.RATE_LIMITED
                        assert 0 < int(trailers[RETRY_KEY]) <= 1000
        finally:
            await node.stop(0)
        return codes

    assert federation.loop.run(run()) == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]


def test_the_channel_pool_closes_the_least_recently_used_past_its_cap(
    monkeypatch: pytest.MonkeyPatch, federation: Federation
) -> None:
    """A node announcing address after address cannot grow the directory's channels."""
    from credex.protocol.channels import ChannelPool

    monkeypatch.setattr(ChannelPool, "MAX_CHANNELS", 2)

    async def fill() -> list[str]:
        pool = ChannelPool(federation.directory_tls)
        pool.get("127.0.0.1:1")
        pool.get("127.0.0.1:2")
        pool.get("127.0.0.1:1")  # used again: now the most recent
        pool.get("127.0.0.1:3")
        held = list(pool._channels)
        await pool.close()
        return held

    assert asyncio.run(fill()) == ["127.0.0.1:1", "127.0.0.1:3"]
