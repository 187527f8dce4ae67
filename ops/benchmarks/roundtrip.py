"""Order round trip through the whole stack, against the floor measured in the same run.

The stack: the supervision tree (:class:`supervisor.tree.Supervisor`, one ``KalshiNR`` session
from a TOML file, its durable SQLite sequence store, the key lock) sends each NewOrderSingle
through its :class:`~supervisor.observer.SessionHandle`; our session core encodes and stores
it, the Trio driver writes it to TCP; the simulated gateway — **another process**
(:mod:`ops.benchmarks._gateway`, i.e. ``kalshi-fix gateway --key KEY=PUB.pem --plain`` with the
rate limiter's cost set to 0) — decodes it, runs it through its exchange model and answers; our
driver reads, the core decodes and sequences the ExecutionReport and the tree hands it to an
observer (the application's seam), which is where the answer counts. The order-entry component
(``supervisor/orderentry.py``) had not landed when this was written, so the orders are sent
through the session handle directly, with ClOrdIDs made here.

Orders are one-lot GTC buys at 5¢: they rest and nothing trades. The gateway answers each with
Kalshi's default pair of reports, pending (``150=A``) then acknowledged (``150=0``), written
together; the first one is the answer that counts. Figures:

* ``roundtrip_p50_us`` / ``roundtrip_p99_us``: NewOrderSingle → its first ExecutionReport, paced
  at 1,000 orders/s on a fixed schedule (latency from just before ``send_app`` to the moment
  the observer sees the report; ``time.perf_counter_ns``);
* ``orders_per_s``: orders answered per second, unpaced with at most 100 unanswered;
* ``roundtrip_vs_floor_p50`` (target ≤ 2) and ``orders_vs_floor`` (target ≥ 0.4): against the
  floor (:mod:`ops.benchmarks.floor`: a bare Trio socket echo between two processes, the same
  message sizes — measured here on the real NewOrderSingle and report — pacing, counts and
  window), measured in this run, its phases interleaved with the stack's so that load on the
  machine hits both alike. :mod:`ops.benchmarks.floor` prints that floor measurement.

Sequence: gateway up → supervisor up → warm-up (300 orders) → floor warm-up → stack paced
→ floor paced → stack windowed → floor windowed.

Attribution (windowed phase, CPU time per order): ``roundtrip_client_cpu_us`` for this process
(supervisor, session, driver, our side of TCP) and ``roundtrip_gateway_cpu_us`` for the gateway
process (its sessions and the exchange model; ``/proc``, 10 ms ticks). On a two-core machine
the two processes each want a core; anything else running shows up as queueing in the
latencies.
"""

from __future__ import annotations

import collections
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import attrs
import trio

from sessions.codec import encode_message
from sessions.events import ApplicationMessage
from sessions.message import utc_timestamp
from sessions.testing.keys import make_test_key
from supervisor.config import WEEKDAYS
from supervisor.observer import ObserverBase, SessionDown
from supervisor.tree import Supervisor

from . import Figure
from . import floor as floor_mod
from ._drive import LoadResult, drive
from ._procs import BenchmarkError, address, cpu_seconds, python_module, spawn

__all__ = ["run"]

SYMBOL = "KXHIGHNY-26JUL14-B85"  # a quick-start market of the simulated gateway
_SESSION = "orders"
# Generous bound on one phase (a hung peer must fail the benchmark, not hang it).
_PHASE_TIMEOUT = 120.0
_START_TIMEOUT = 60.0


class _Answers(ObserverBase):
    """The application's seam: records the first ExecutionReport of each benchmark order."""

    def __init__(self) -> None:
        self.pending: dict[bytes, int] = {}
        self.answered: collections.deque[int] = collections.deque()
        self.problem: BenchmarkError | None = None
        self.first_report_size = 0
        self._lot = trio.lowlevel.ParkingLot()

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        msg = event.message
        mt = msg.msg_type
        if mt == b"8":
            i = self.pending.pop(msg.get(11) or b"", None)
            if i is None:
                return  # not a benchmark order, or not its first report
            if msg.get(150) == b"8":
                self._fail(f"the gateway rejected a benchmark order: {msg.get_str(58)!r}")
            if not self.first_report_size:
                self.first_report_size = len(msg.encode())
            self.answered.append(i)
            self._lot.unpark_all()
        elif mt in (b"j", b"3"):
            self._fail(f"the gateway refused a benchmark message (35={mt!r}): {msg.get_str(58)!r}")

    def session_down(self, down: SessionDown) -> None:
        why = down.ended or down.error
        self._fail(f"the benchmark session went down ({down.kind.value}): {why}")

    def _fail(self, text: str) -> None:
        if self.problem is None:
            self.problem = BenchmarkError(text)
        self._lot.unpark_all()

    async def completions(self) -> AsyncIterator[int]:
        while True:
            while not self.answered:
                if self.problem is not None:
                    raise self.problem
                await self._lot.park()
            yield self.answered.popleft()


class _StackLink:
    """Orders through the supervisor's session handle, answers through the observer."""

    def __init__(self, sup: Supervisor, answers: _Answers) -> None:
        self._handle = sup.handle(_SESSION)
        self._answers = answers
        self._phase = 0
        self._base = ""
        self.last_seq = 0

    def fields(self, cl: bytes) -> list[tuple[int, bytes]]:
        return [
            (11, cl), (38, b"1"), (40, b"2"), (44, b"5"), (54, b"1"), (55, SYMBOL.encode()),
            (59, b"1"),
        ]

    async def _send(self, i: int) -> None:
        # A UUID-sized ClOrdID, as real clients send.
        cl = f"{self._base}{i:012d}".encode()
        self._answers.pending[cl] = i
        self.last_seq = self._handle.send_app(b"D", self.fields(cl))

    async def run(
        self, count: int, *, rate: float | None = None, window: int | None = None
    ) -> LoadResult:
        self._phase += 1
        self._base = str(uuid.uuid4())[:24]
        with trio.fail_after(_PHASE_TIMEOUT + count / 100):
            return await drive(
                self._send, self._answers.completions, count, rate=rate, window=window
            )


def _order_size(link: _StackLink, key_id: str) -> int:
    """Bytes of one benchmark NewOrderSingle on the wire (the core's header: 49, 56, 34, 52;
    a MsgSeqNum of the measured phases' width)."""
    header = [
        (49, key_id.encode()), (56, b"KalshiNR"), (34, str(link.last_seq).encode()),
        (52, utc_timestamp(time.time())),
    ]
    return len(encode_message(b"D", header, link.fields(b"0" * 36)))


def _write_config(tmp: Path, port: int, key_id: str, private_key: Path) -> Path:
    # A maintenance weekday three days from today: the benchmark never waits for a window.
    weekday = WEEKDAYS[(dt.date.today().weekday() + 3) % 7]
    path = tmp / "bench.toml"
    path.write_text(
        f"""
[session.{_SESSION}]
endpoint = "KalshiNR"
host = "127.0.0.1"
port = {port}
tls = false
key_id = "{key_id}"
private_key = "{private_key}"
store_dir = "store"

[supervisor]
state_dir = "state"
lock_dir = "locks"

[supervisor.maintenance]
weekday = "{weekday}"

[supervisor.reconciliation]
enabled = false
""",
        encoding="utf-8",
    )
    return path


@attrs.frozen
class _Result:
    paced: LoadResult
    windowed: LoadResult
    floor: floor_mod.FloorResult
    #: CPU seconds per order in the windowed phase: this process, the gateway process.
    client_cpu: float
    gateway_cpu: float | None


async def _measure(
    orders: int, rate: float, throughput_orders: int, window: int, warmup: int
) -> _Result:
    with tempfile.TemporaryDirectory(prefix="kalshi-bench-roundtrip-") as tmp_name:
        tmp = Path(tmp_name)
        key = make_test_key("bench-roundtrip", tmp / "keys")
        args = python_module(
            "ops.benchmarks._gateway", "--key", f"{key.key_id}={key.public_key_path}",
            "--plain", "--no-maintenance",
        )
        async with spawn(args, ["KalshiNR"]) as gateway:
            _, port = address(gateway.ready["KalshiNR"])
            config = _write_config(tmp, port, key.key_id, key.private_key_path)
            answers = _Answers()
            async with Supervisor(config, observers=[answers]) as sup:
                with trio.fail_after(_START_TIMEOUT):
                    await sup.handle(_SESSION).wait_active()
                link = _StackLink(sup, answers)
                await link.run(warmup, window=window)
                request_size = _order_size(link, key.key_id)
                response_size = answers.first_report_size
                async with floor_mod.open_floor(request_size, response_size) as floor_link:
                    await floor_link.run(warmup, window=window)
                    paced = await link.run(orders, rate=rate)
                    floor_paced = await floor_link.run(orders, rate=rate)
                    gw0, cpu0 = cpu_seconds(gateway.process.pid), time.process_time()
                    windowed = await link.run(throughput_orders, window=window)
                    gw1, cpu1 = cpu_seconds(gateway.process.pid), time.process_time()
                    floor_windowed = await floor_link.run(throughput_orders, window=window)
    return _Result(
        paced,
        windowed,
        floor_mod.FloorResult(floor_paced, floor_windowed, request_size, response_size),
        (cpu1 - cpu0) / throughput_orders,
        None if gw0 is None or gw1 is None else (gw1 - gw0) / throughput_orders,
    )


def run(
    *,
    orders: int = floor_mod.ORDERS,
    rate: float = floor_mod.RATE,
    throughput_orders: int = floor_mod.THROUGHPUT_ORDERS,
    window: int = floor_mod.WINDOW,
    warmup: int = floor_mod.WARMUP,
) -> Iterable[Figure]:
    """Round-trip latency and throughput through the stack, and their ratios to the floor."""
    r = trio.run(_measure, orders, rate, throughput_orders, window, warmup)
    floor_mod.last_result = r.floor
    yield ("roundtrip_p50_us", r.paced.p(0.50), "us")
    yield ("roundtrip_p99_us", r.paced.p(0.99), "us")
    yield ("orders_per_s", r.windowed.rate, "orders/s")
    yield ("roundtrip_vs_floor_p50", r.paced.p(0.50) / r.floor.paced.p(0.50), "x")
    yield ("orders_vs_floor", r.windowed.rate / r.floor.windowed.rate, "x")
    yield ("roundtrip_client_cpu_us", r.client_cpu * 1e6, "us/order")
    if r.gateway_cpu is not None:
        yield ("roundtrip_gateway_cpu_us", r.gateway_cpu * 1e6, "us/order")
