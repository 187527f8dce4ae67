"""Client-side rate limiting: keep application messages inside the account's token buckets.

Kalshi charges FIX application messages like REST calls (REFERENCE §10.1): 10 tokens per
message from a Write bucket (order entry, order groups, the RFQ flow) that refills continuously at
the tier's budget and holds two seconds of it (one second on Basic). Orders, cancels and amends
with ``ExDestination(100) >= 1`` draw on that shard's own bucket; everything else on the unscoped
one. OrderMassCancelRequest is further limited to one per second. A message sent into an empty
bucket comes back as BusinessMessageReject ``380=8`` — for an order, a refusal the application
must then handle — so this limiter **waits** instead: :meth:`RateLimiter.acquire` returns when
the message may go.

Session-level messages (Logon, Heartbeat, TestRequest, ResendRequest, Logout) never pass
through here: the components call the limiter only for application messages. The drop copy's
EventResendRequest (U1) has its own spacing in :mod:`supervisor.recovery`.

The buckets are shared with REST (and with other FIX sessions of the account in other
processes), which this process cannot see. ``share`` reserves part of the budget for them; and
when a ``380=8`` arrives anyway, :meth:`RateLimiter.throttled` empties the bucket, so the next
messages wait a full refill instead of hammering a bucket that is already dry.

:class:`TokenBucket` is sans-IO (time is passed in); :class:`RateLimiter` waits with
``trio.sleep`` on the clock it was given. Waiters are served first come, first served per bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import attrs
import trio

from sessions.errors import ConfigError
from sessions.message import Value

__all__ = [
    "DEFAULT_COST",
    "MASS_CANCEL_INTERVAL",
    "RateLimiter",
    "TIER_BUDGETS",
    "TokenBucket",
    "WRITE_MESSAGES",
    "bucket_shape",
    "shard_of",
]

#: Tokens per application message (REFERENCE §10.1).
DEFAULT_COST = 10
#: OrderMassCancelRequest: at most one per second (REFERENCE §4.9, §10.1).
MASS_CANCEL_INTERVAL = 1.0

#: Tier → (Read, Write) tokens per second (REFERENCE §10.1).
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

#: Application messages drawn from the Write bucket (order entry, groups, RFQ; §10.1, §9.10).
WRITE_MESSAGES = frozenset({b"D", b"F", b"G", b"q", b"UOG", b"R", b"UA", b"UE", b"S", b"Z", b"U7"})
# Only these are billed to a shard's own bucket when ExDestination >= 1; the RFQ flow and order
# groups are routed internally and billed unscoped (§1.7, §9.10).
_SHARD_BILLED = frozenset({b"D", b"F", b"G"})


def bucket_shape(tier: str, *, share: float = 1.0) -> tuple[float, float]:
    """(refill in tokens/s, capacity in tokens) of the Write bucket of ``tier``, scaled by
    ``share``. Raises :class:`~sessions.errors.ConfigError` for an unknown tier."""
    if tier not in TIER_BUDGETS:
        raise ConfigError(
            f"unknown rate-limit tier {tier!r}; valid tiers: {', '.join(TIER_BUDGETS)}"
        )
    if not 0 < share <= 1:
        raise ConfigError(f"rate-limit share must be more than 0 and at most 1, got {share}")
    rate = TIER_BUDGETS[tier][1] * share
    # Write buckets hold two seconds of budget above Basic, one second on Basic (§10.1).
    seconds = 1.0 if tier == "Basic" else 2.0
    return rate, rate * seconds


def shard_of(msg_type: bytes, body: Iterable[tuple[int, Value]] = ()) -> int | None:
    """The shard whose bucket pays for a message: ExDestination(100) when it is >= 1 on
    D/F/G, else ``None`` (the unscoped bucket)."""
    if msg_type not in _SHARD_BILLED:
        return None
    for tag, value in body:
        # int() only for tags that are not ints already (rendered pairs): one call less per
        # field of every order.
        if (tag if type(tag) is int else int(tag)) == 100:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            if text.isdigit() and int(text) >= 1:
                return int(text)
            return None
    return None


@attrs.define
class TokenBucket:
    """A continuously refilling bucket; time is passed in (epoch seconds)."""

    rate: float
    capacity: float
    tokens: float = attrs.field(default=attrs.Factory(lambda self: self.capacity, takes_self=True))
    updated: float | None = None

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` tokens are available (0 = now). Takes nothing."""
        self._refill(now)
        if cost > self.capacity:
            raise ConfigError(
                f"a message costs {cost:g} tokens but the bucket holds at most "
                f"{self.capacity:g}; raise the tier or the share"
            )
        missing = cost - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate

    def take(self, cost: float, now: float) -> bool:
        """Take ``cost`` tokens if available now; True if taken."""
        if self.wait_time(cost, now) > 0:
            return False
        self.tokens -= cost
        return True

    def refund(self, cost: float, now: float) -> None:
        """Give back tokens of a message that was not sent after all."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + cost)

    def drain(self, now: float) -> None:
        """Empty the bucket (the exchange said it is empty: 380=8)."""
        self._refill(now)
        self.tokens = 0.0


class RateLimiter:
    """The account's Write buckets as this process uses them (module docstring).

    ``tier`` is the account's Kalshi tier; ``share`` the fraction of its budget this process
    may use (default all of it); ``cost`` the tokens per message; ``clock`` epoch seconds
    (default: Trio's clock, which is all waiting needs).
    """

    def __init__(
        self,
        tier: str = "Basic",
        *,
        share: float = 1.0,
        cost: int = DEFAULT_COST,
        clock: Callable[[], float] | None = None,
        mass_cancel_interval: float = MASS_CANCEL_INTERVAL,
    ) -> None:
        self.rate, self.capacity = bucket_shape(tier, share=share)
        if cost <= 0:
            raise ConfigError(f"rate-limit cost must be a positive number of tokens, got {cost}")
        self.tier = tier
        self.cost = cost
        self.clock: Callable[[], float] = clock or trio.current_time
        self._mass_cancel_interval = mass_cancel_interval
        self._buckets: dict[int | None, TokenBucket] = {}
        self._locks: dict[int | None, trio.Lock] = {}
        self._last_mass_cancel: dict[str, float] = {}
        self._mass_lock = trio.Lock()
        #: Messages that had to wait, and the total seconds waited (for the operator).
        self.waited = 0
        self.waited_s = 0.0
        #: 380=8 rejects reported through :meth:`throttled`.
        self.throttles = 0

    def bucket(self, shard: int | None = None) -> TokenBucket:
        """The bucket of ``shard`` (``None`` = unscoped), created full on first use."""
        b = self._buckets.get(shard)
        if b is None:
            b = self._buckets[shard] = TokenBucket(self.rate, self.capacity)
        return b

    def charged(self, msg_type: bytes | str) -> bool:
        """Whether this message type draws tokens (Write bucket)."""
        mt = msg_type.encode("ascii") if isinstance(msg_type, str) else msg_type
        return mt in WRITE_MESSAGES

    async def acquire(
        self,
        msg_type: bytes | str,
        body: Iterable[tuple[int, Value]] = (),
        *,
        session: str | None = None,
    ) -> int | None:
        """Wait until a message of ``msg_type`` (with ``body``, for its ExDestination) may be
        sent, and take its tokens. Returns the shard charged (for :meth:`refund`). Mass cancels
        additionally wait out the one-per-second rule per ``session``.

        When the tokens are there and nobody is waiting, this returns without letting other
        tasks run (it still raises ``Cancelled`` in a cancelled scope)."""
        mt = msg_type.encode("ascii") if isinstance(msg_type, str) else msg_type
        if mt not in WRITE_MESSAGES:
            return None
        # Read as a whole, as before, unless it is a list or tuple already (no copy needed).
        shard = shard_of(mt, body if type(body) in (list, tuple) else list(body))
        if mt == b"q":
            async with self._mass_lock:
                key = session or ""
                last = self._last_mass_cancel.get(key)
                if last is not None:
                    delay = last + self._mass_cancel_interval - self.clock()
                    if delay > 0:
                        await self._sleep(delay)
                await self._take(shard)
                self._last_mass_cancel[key] = self.clock()
            return shard
        # _take(shard), its usual case written out here: one coroutine less for every order.
        bucket = self._ready(shard)
        if bucket is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            bucket.tokens -= self.cost
            return shard
        await self._wait_and_take(shard)
        return shard

    def _ready(self, shard: int | None) -> TokenBucket | None:
        """The bucket of ``shard`` if nobody waits for it (a waiting task would hold its lock)
        and it holds the tokens now, else ``None``."""
        lock = self._locks.get(shard)
        if lock is not None and lock.locked():
            return None
        bucket = self.bucket(shard)
        return bucket if bucket.wait_time(self.cost, self.clock()) <= 0 else None

    async def _take(self, shard: int | None) -> None:
        bucket = self._ready(shard)
        if bucket is not None:
            # Take the tokens without a trip through the scheduler, which would add its latency
            # to every order. Still a cancellation point; a caller that loops on sends yields
            # once the bucket runs dry.
            await trio.lowlevel.checkpoint_if_cancelled()
            bucket.tokens -= self.cost
            return
        await self._wait_and_take(shard)

    async def _wait_and_take(self, shard: int | None) -> None:
        lock = self._locks.get(shard)
        if lock is None:
            lock = self._locks[shard] = trio.Lock()
        async with lock:  # first come, first served
            bucket = self.bucket(shard)
            while True:
                delay = bucket.wait_time(self.cost, self.clock())
                if delay <= 0:
                    bucket.tokens -= self.cost
                    return
                await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        self.waited += 1
        self.waited_s += delay
        # A hair extra: float rounding must not wake us a token short and spin.
        await trio.sleep(delay + 1e-6 if math.isfinite(delay) else 1.0)

    def try_acquire(self, msg_type: bytes | str, body: Iterable[tuple[int, Value]] = ()) -> bool:
        """Take the tokens if available right now (never waits); True if the message may go."""
        mt = msg_type.encode("ascii") if isinstance(msg_type, str) else msg_type
        if mt not in WRITE_MESSAGES:
            return True
        return self.bucket(shard_of(mt, list(body))).take(self.cost, self.clock())

    def refund(self, shard: int | None) -> None:
        """A message acquired for ``shard`` was not sent after all (the session went down)."""
        self.bucket(shard).refund(self.cost, self.clock())

    def throttled(self, shard: int | None = None) -> None:
        """The exchange refused a message with 380=8: its bucket is empty, whatever our
        estimate said (REST or another process shares it)."""
        self.throttles += 1
        self.bucket(shard).drain(self.clock())
