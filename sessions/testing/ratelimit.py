"""Token buckets as the simulated exchange charges FIX application messages (REFERENCE §10.1).

Each account has a Read and a Write bucket per exchange shard (``None`` = the unscoped bucket,
used when ExDestination is absent, 0 or -1). A message costs :data:`DEFAULT_COST` tokens; buckets
refill continuously at the tier's per-second budget and hold two seconds of it, except Basic Write
which holds one. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from ..errors import ConfigError

__all__ = ["READ", "WRITE", "DEFAULT_COST", "TIER_BUDGETS", "TokenBucket", "RateLimiter"]

READ = "read"
WRITE = "write"

#: Tokens per request, as REST charges (REFERENCE §10.1).
DEFAULT_COST = 10

#: Tier → (Read, Write) tokens per second.
TIER_BUDGETS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "Basic": (200, 100),
        "Advanced": (300, 300),
        "Expert": (600, 600),
        "Premier": (1000, 1000),
        "Paragon": (2000, 2000),
        "Prime": (4000, 4000),
        "Prestige": (10000, 8000),
    }
)


def check_tier(tier: str) -> str:
    """Return ``tier`` if it is a known tier name; raise :class:`ConfigError` otherwise."""
    if tier not in TIER_BUDGETS:
        raise ConfigError(
            f"unknown rate-limit tier {tier!r}; valid tiers: {', '.join(TIER_BUDGETS)}"
        )
    return tier


def bucket_shape(tier: str, bucket: str) -> tuple[float, float]:
    """(refill rate in tokens/s, capacity in tokens) of ``bucket`` for ``tier``."""
    read, write = TIER_BUDGETS[check_tier(tier)]
    rate = float(write if bucket == WRITE else read)
    # Write buckets hold 2 s of budget above Basic and 1 s on Basic (REFERENCE §10.1). The docs
    # give no burst for Read buckets; two seconds, like Write above Basic, is our assumption.
    seconds = 1.0 if (bucket == WRITE and tier == "Basic") else 2.0
    return rate, rate * seconds


@attrs.define
class TokenBucket:
    """A continuously refilled bucket; starts full."""

    rate: float
    capacity: float
    tokens: float
    updated: float | None = None

    def try_take(self, cost: float, now: float) -> bool:
        """Take ``cost`` tokens at time ``now`` if there are enough; report whether it did."""
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        # A clock that steps backwards neither refills nor drains the bucket.
        if self.updated is None or now > self.updated:
            self.updated = now
        # Epoch floats carry ~0.2 µs of rounding; forgive that much so exact refills count.
        if self.tokens + 1e-3 < cost:
            return False
        self.tokens -= cost
        return True


class RateLimiter:
    """Buckets per (account, bucket, shard), created on first use from the account's tier."""

    def __init__(self, cost: int = DEFAULT_COST) -> None:
        self.cost = cost
        self._buckets: dict[tuple[str, str, int | None], TokenBucket] = {}

    def allow(self, account_id: str, tier: str, bucket: str, shard: int | None, now: float) -> bool:
        """Charge one message to the bucket; ``False`` means the message must be refused."""
        k = (account_id, bucket, shard)
        b = self._buckets.get(k)
        if b is None:
            rate, capacity = bucket_shape(tier, bucket)
            b = self._buckets[k] = TokenBucket(rate=rate, capacity=capacity, tokens=capacity)
        return b.try_take(self.cost, now)

    def forget(self, account_id: str) -> None:
        """Drop an account's buckets (e.g. after its tier changed); they restart full."""
        for k in [k for k in self._buckets if k[0] == account_id]:
            del self._buckets[k]
