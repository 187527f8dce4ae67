"""The client-side rate limiter: token-bucket arithmetic, tier shapes, shard billing, waiting
(first come, first served) instead of sending into a 380=8, the mass-cancel rule, and an
end-to-end burst that the simulated exchange accepts in full."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from test_exactly_once import (
    MKT0,
    RigFactory,
    open_rig,
    rigs,  # noqa: F401 - fixture
    running,
)

from sessions.errors import ConfigError
from supervisor.orderentry import RequestRejected
from supervisor.ratelimit import RateLimiter, TokenBucket, bucket_shape, shard_of


def test_bucket_refills_continuously_up_to_capacity() -> None:
    b = TokenBucket(rate=100.0, capacity=100.0)
    assert b.take(10, now=0.0)
    for _ in range(9):
        assert b.take(10, now=0.0)
    assert not b.take(10, now=0.0)  # empty
    assert b.wait_time(10, now=0.0) == pytest.approx(0.1)
    assert b.wait_time(10, now=0.05) == pytest.approx(0.05)
    assert b.take(10, now=0.1)
    b.refund(10, now=0.1)
    assert b.tokens == pytest.approx(10.0)
    assert b.wait_time(10, now=100.0) == 0.0 and b.tokens == 100.0  # never above capacity
    b.drain(now=100.0)
    assert b.wait_time(10, now=100.0) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="holds at most"):
        b.wait_time(101, now=100.0)


@pytest.mark.parametrize(
    ("tier", "share", "shape"),
    [("Basic", 1.0, (100.0, 100.0)), ("Advanced", 1.0, (300.0, 600.0)),
     ("Premier", 1.0, (1000.0, 2000.0)), ("Prestige", 1.0, (8000.0, 16000.0)),
     ("Premier", 0.5, (500.0, 1000.0))],
)
def test_tier_shapes(tier: str, share: float, shape: tuple[float, float]) -> None:
    assert bucket_shape(tier, share=share) == shape


def test_bad_tier_and_share_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="valid tiers: Basic"):
        bucket_shape("Gold")
    with pytest.raises(ConfigError, match="share"):
        bucket_shape("Basic", share=0)
    with pytest.raises(ConfigError, match="cost"):
        RateLimiter("Basic", cost=0)


def test_shard_billing() -> None:
    assert shard_of(b"D", [(11, "a"), (100, 2)]) == 2
    assert shard_of(b"F", [(100, b"3")]) == 3
    for unscoped in ([(100, 0)], [(100, "-1")], []):
        assert shard_of(b"D", unscoped) is None
    assert shard_of(b"UOG", [(100, 2)]) is None  # groups and the RFQ flow bill unscoped
    assert shard_of(b"G", [("100", b"4")]) == 4  # a tag given as text is read as a number


async def test_acquire_reads_the_shard_from_any_iterable_body(autojump_clock: Any) -> None:
    limiter = RateLimiter("Basic")
    body = ((t, v) for t, v in [(11, b"a"), ("100", b"3")])  # read once, like any iterator
    assert await limiter.acquire(b"D", body) == 3
    assert await limiter.acquire("D", ((100, 3),)) == 3
    assert limiter.bucket(3).tokens == limiter.capacity - 2 * limiter.cost
    assert limiter.bucket(None).tokens == limiter.capacity  # the unscoped bucket is untouched


async def test_waits_instead_of_overdrawing_first_come_first_served(autojump_clock: Any) -> None:
    limiter = RateLimiter("Basic")
    t0 = trio.current_time()
    for _ in range(10):  # the burst: one second of budget
        await limiter.acquire("D")
    assert trio.current_time() == t0 and limiter.waited == 0
    order: list[int] = []

    async def one(i: int) -> None:
        await limiter.acquire("D")
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(one, i)
            await trio.sleep(0)
    assert order == [0, 1, 2, 3, 4]
    assert trio.current_time() - t0 == pytest.approx(0.5, abs=1e-3)  # 10 tokens at 100/s
    assert limiter.waited == 5


async def test_tokens_at_hand_are_taken_without_yielding_but_cancellation_holds(
    autojump_clock: Any,
) -> None:
    limiter = RateLimiter("Basic")
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)  # runnable, waiting for a schedule point
        await limiter.acquire("D")
        assert ran == []  # no trip through the scheduler on the fast path
    assert ran == ["other"]
    with trio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire("D")
        raise AssertionError("not reached")  # pragma: no cover
    assert scope.cancelled_caught  # and the cancelled request took no tokens:
    assert limiter.bucket().tokens == pytest.approx(limiter.capacity - limiter.cost)


async def test_a_newcomer_queues_behind_a_waiter_even_once_tokens_are_back(
    autojump_clock: Any,
) -> None:
    limiter = RateLimiter("Basic")
    for _ in range(10):
        await limiter.acquire("D")
    order: list[str] = []

    async def one(name: str) -> None:
        await limiter.acquire("D")
        order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "first")
        await trio.sleep(0.05)  # "first" holds the queue, five tokens back of the ten it needs
        nursery.start_soon(one, "second")
    assert order == ["first", "second"]


async def test_session_messages_and_other_shards_do_not_wait(autojump_clock: Any) -> None:
    limiter = RateLimiter("Basic")
    for _ in range(10):
        await limiter.acquire("D")
    t0 = trio.current_time()
    for mt in ("0", "1", "2", "4", "5", "A", "U1"):
        assert await limiter.acquire(mt) is None
    assert await limiter.acquire("D", [(100, 2)]) == 2  # shard 2 has its own full bucket
    assert limiter.try_acquire("D", [(100, 2)])
    assert not limiter.try_acquire("D")
    assert trio.current_time() == t0


async def test_mass_cancel_at_most_once_per_second_per_session(autojump_clock: Any) -> None:
    limiter = RateLimiter("Premier")
    t0 = trio.current_time()
    await limiter.acquire("q", session="a")
    await limiter.acquire("q", session="b")
    assert trio.current_time() == t0
    await limiter.acquire("q", session="a")
    assert trio.current_time() - t0 == pytest.approx(1.0, abs=1e-3)


async def test_a_throttle_from_the_exchange_empties_the_bucket(autojump_clock: Any) -> None:
    limiter = RateLimiter("Premier")
    limiter.throttled()
    t0 = trio.current_time()
    await limiter.acquire("D")
    assert trio.current_time() - t0 == pytest.approx(0.01, abs=1e-3)
    assert limiter.throttles == 1


async def test_a_burst_stays_inside_the_exchange_budget(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    gw.exchange.set_tier("ACCT-1", "Basic")
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, tier="Basic") as rig:
        await rig.nr().wait_active()
        t0 = trio.current_time()
        sent = [await rig.order_entry.new_order(MKT0, "buy", 1, 45) for _ in range(40)]
        elapsed = trio.current_time() - t0
        assert await rig.settle()
        assert not [e for e in rig.events if isinstance(e, RequestRejected)]  # no 380=8
        accepted = {r.cl_ord_id for r in gw.ground_truth("ACCT-1")}
        assert accepted == {t.cl_ord_id for t in sent}
        # 10 at once, then 100 tokens/s = 10 orders/s: the other 30 take 3 seconds.
        assert elapsed == pytest.approx(3.0, abs=0.05)
        assert rig.app.limiter.waited == 30
