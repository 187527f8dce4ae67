"""Token buckets of the simulated exchange (REFERENCE §10.1)."""

from __future__ import annotations

import pytest

from sessions.errors import ConfigError
from sessions.testing.ratelimit import READ, WRITE, RateLimiter, TokenBucket, bucket_shape


def test_bucket_shapes_by_tier() -> None:
    assert bucket_shape("Basic", WRITE) == (100.0, 100.0)  # Basic Write holds 1 s
    assert bucket_shape("Premier", WRITE) == (1000.0, 2000.0)  # 2 s burst: 200 orders
    assert bucket_shape("Prestige", WRITE) == (8000.0, 16000.0)
    assert bucket_shape("Basic", READ) == (200.0, 400.0)
    with pytest.raises(ConfigError, match="valid tiers"):
        bucket_shape("Gold", WRITE)


def test_bucket_refills_continuously_and_caps() -> None:
    b = TokenBucket(rate=100.0, capacity=100.0, tokens=100.0)
    assert all(b.try_take(10, 0.0) for _ in range(10))
    assert not b.try_take(10, 0.0)
    assert not b.try_take(10, 0.05)  # 5 tokens back
    assert b.try_take(10, 0.1)
    assert not b.try_take(10, 0.05)  # time going backwards refills nothing
    b.try_take(0, 100.0)
    assert b.tokens == 100.0


def test_limiter_keys_on_account_bucket_and_shard() -> None:
    lim = RateLimiter(cost=10)
    assert sum(lim.allow("A", "Premier", WRITE, None, 0.0) for _ in range(250)) == 200
    assert lim.allow("A", "Premier", WRITE, 1, 0.0)
    assert lim.allow("A", "Premier", READ, None, 0.0)
    assert lim.allow("B", "Premier", WRITE, None, 0.0)
    lim.forget("A")
    assert lim.allow("A", "Premier", WRITE, None, 0.0)
