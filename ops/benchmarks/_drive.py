"""The load pattern shared by the round-trip benchmark and its floor: paced or windowed requests,
latency per request from just before it is handed to the transport to the moment the
application sees its first answer.

Two shapes:

* **paced**: request ``i`` goes out at ``start + i / rate`` (``trio.sleep_until`` on a fixed
  schedule, so a late request does not push back the ones after it); no window.
* **windowed**: as fast as possible with at most ``window`` requests unanswered.

A link is two callables: ``send(i)`` hands request ``i`` to the transport and ``completions`` is
an async iterator of the indexes of answered requests, in the order the application sees them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import attrs
import trio

__all__ = ["LoadResult", "drive", "percentile"]


@attrs.frozen
class LoadResult:
    """Latencies (ns, in completion order) and the span from first send to last answer (s)."""

    latencies_ns: list[int]
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Answered requests per second over the whole span."""
        return len(self.latencies_ns) / self.elapsed_s

    def p(self, q: float) -> float:
        """The ``q``-quantile latency in microseconds."""
        return percentile(self.latencies_ns, q) / 1000.0


def percentile(values: list[int], q: float) -> float:
    """Nearest-rank quantile (``q`` in 0..1) of ``values``."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


async def drive(
    send: Callable[[int], Awaitable[None]],
    completions: Callable[[], AsyncIterator[int]],
    count: int,
    *,
    rate: float | None = None,
    window: int | None = None,
) -> LoadResult:
    """Send ``count`` requests (paced at ``rate``/s, or windowed) and wait for every answer."""
    if (rate is None) == (window is None):
        raise ValueError("give either rate (paced) or window (unpaced)")
    sent_at = [0] * count
    latencies: list[int] = []
    slots = trio.Semaphore(window) if window is not None else None
    clock = time.perf_counter_ns
    first = 0
    last = 0

    async def receiver() -> None:
        nonlocal last
        seen = 0
        # An async generator in practice: it has aclose().
        async with aclosing(completions()) as answered:  # type: ignore[type-var]
            async for i in answered:
                now = clock()
                latencies.append(now - sent_at[i])
                if slots is not None:
                    slots.release()
                seen += 1
                if seen == count:
                    last = now
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        start = trio.current_time()
        first = clock()
        for i in range(count):
            if slots is not None:
                await slots.acquire()
            else:
                assert rate is not None
                await trio.sleep_until(start + i / rate)
            sent_at[i] = clock()
            await send(i)
    return LoadResult(latencies, (last - first) / 1e9)
