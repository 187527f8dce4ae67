"""The floor: the same load as the round-trip benchmark over a bare Trio socket echo between two
processes — what Python, Trio and the loopback cost before any FIX is spoken.

The peer (:mod:`ops.benchmarks._echo`, its own process) answers every request-sized chunk with
a response-sized one. This side sends request ``i`` with ``send_all`` and counts an answer once
all of its bytes arrived, with the same pacing (1,000/s on a fixed schedule), the same counts
and the same window (100 unanswered) as :mod:`ops.benchmarks.roundtrip`, and the same
latency definition (from just before the request is handed over to the first sight of its
answer, both ``time.perf_counter_ns``).

* ``floor_p50_us`` / ``floor_p99_us``: latency quantiles of the paced run;
* ``floor_msgs_per_s``: request/answer pairs per second of the windowed run.

Inside ``bash ops/bench`` the round-trip benchmark measures the floor in the same run as the
stack (interleaved phases, the real message sizes) for its ratios; this module then prints
that measurement instead of taking another. Run alone (``python -m ops.benchmarks floor``) it
measures with the sizes of the codec benchmark's NewOrderSingle and acknowledgement report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import attrs
import trio

from sessions.codec import encode_message

from . import Figure
from ._drive import LoadResult, drive
from ._procs import address, python_module, spawn

__all__ = ["FloorLink", "FloorResult", "figures", "last_result", "open_floor", "run"]

#: Defaults shared with the round-trip benchmark.
ORDERS = 3000
RATE = 1000.0
THROUGHPUT_ORDERS = 5000
WINDOW = 100
WARMUP = 300


@attrs.frozen
class FloorResult:
    """One floor measurement: the paced and the windowed run, and the sizes used."""

    paced: LoadResult
    windowed: LoadResult
    request_size: int
    response_size: int


#: The floor measured last in this process (set by the round-trip benchmark too).
last_result: FloorResult | None = None


class FloorLink:
    """A connection to the echo peer, driven by :func:`ops.benchmarks._drive.drive`."""

    def __init__(self, stream: trio.SocketStream, request_size: int, response_size: int) -> None:
        self._stream = stream
        self._request = b"x" * (request_size - 1) + b"\n"
        self._response_size = response_size
        self._pending = 0  # bytes of an answer not yet complete (carried between phases)
        self.request_size = request_size
        self.response_size = response_size

    async def _send(self, i: int) -> None:
        await self._stream.send_all(self._request)

    async def _completions(self) -> AsyncIterator[int]:
        i = 0
        size = self._response_size
        while True:
            data = await self._stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("the echo peer closed the connection")
            done, self._pending = divmod(self._pending + len(data), size)
            for _ in range(done):
                yield i
                i += 1

    async def run(
        self, count: int, *, rate: float | None = None, window: int | None = None
    ) -> LoadResult:
        """One phase: ``count`` requests, paced at ``rate`` or windowed."""
        return await drive(self._send, self._completions, count, rate=rate, window=window)


@asynccontextmanager
async def open_floor(request_size: int, response_size: int) -> AsyncIterator[FloorLink]:
    """Start the echo peer process and connect to it."""
    args = python_module(
        "ops.benchmarks._echo",
        "--request-size", str(request_size),
        "--response-size", str(response_size),
    )
    async with spawn(args, ["ECHO"]) as child:
        host, port = address(child.ready["ECHO"])
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            yield FloorLink(stream, request_size, response_size)


def figures(result: FloorResult) -> list[Figure]:
    """The floor's figures."""
    return [
        ("floor_p50_us", result.paced.p(0.50), "us"),
        ("floor_p99_us", result.paced.p(0.99), "us"),
        ("floor_msgs_per_s", result.windowed.rate, "msg/s"),
    ]


async def measure(
    request_size: int,
    response_size: int,
    *,
    orders: int = ORDERS,
    rate: float = RATE,
    throughput_orders: int = THROUGHPUT_ORDERS,
    window: int = WINDOW,
    warmup: int = WARMUP,
) -> FloorResult:
    """The floor alone: warm-up, paced run, windowed run."""
    async with open_floor(request_size, response_size) as link:
        await link.run(warmup, window=window)
        paced = await link.run(orders, rate=rate)
        windowed = await link.run(throughput_orders, window=window)
    return FloorResult(paced, windowed, request_size, response_size)


def _representative_sizes() -> tuple[int, int]:
    from .codec import BEGIN_STRING, MESSAGES

    (_, _, _), (nos_type, nos_h, nos_b), (ack_type, ack_h, ack_b) = MESSAGES
    return (
        len(encode_message(nos_type, nos_h, nos_b, BEGIN_STRING)),
        len(encode_message(ack_type, ack_h, ack_b, BEGIN_STRING)),
    )


def run(
    *,
    orders: int = ORDERS,
    rate: float = RATE,
    throughput_orders: int = THROUGHPUT_ORDERS,
    window: int = WINDOW,
    warmup: int = WARMUP,
) -> Iterable[Figure]:
    """The floor figures: the round-trip benchmark's measurement if it ran in this process,
    else a fresh one."""
    global last_result
    if last_result is None:
        request_size, response_size = _representative_sizes()
        last_result = trio.run(
            lambda: measure(
                request_size, response_size, orders=orders, rate=rate,
                throughput_orders=throughput_orders, window=window, warmup=warmup,
            )
        )
    yield from figures(last_result)
