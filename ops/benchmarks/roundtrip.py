"""Order round trip through the whole stack, against the floor measured in the same run.

The stack, application to application, as :meth:`supervisor.app.Components.build` wires it:
the order-entry component (:class:`supervisor.orderentry.OrderEntry`: client-side rate limiter,
kill-switch gate, own-order tracker, ``new_order``) sends each NewOrderSingle through the
supervision tree (:class:`supervisor.tree.Supervisor`, one ``KalshiNR`` session from a TOML
file, the key lock; KalshiNR resets its numbers at every Logon, so its sequence store is kept in
memory, as by default); our session core encodes and stores it, the Trio driver writes it to
TCP; the simulated gateway — **another process** (:mod:`ops.benchmarks._gateway`,
i.e. ``kalshi-fix gateway --key KEY=PUB.pem --plain`` with the exchange's rate-limit cost set to
0) — decodes it, runs it through its exchange model and answers; our driver reads, the core
decodes and sequences the ExecutionReport, the executions component
(:class:`supervisor.streams.ExecutionStream`) offers it to the durable execution ledger and the
tracker, and the application takes it from the exactly-once iterator — that is where the answer
counts. The client-side rate limiter is given the Prestige tier at one token an order: it runs
for every order but never holds one back (1,000 orders/s is beyond any tier's budget at
Kalshi's 10 tokens a message, and the benchmark measures the stack, not the budget).

Orders are one-lot GTC buys at 5¢: they rest and nothing trades. The session logs on as the
README's configuration does, with SkipPendingExecReports (``21011=Y``), so the gateway answers each
order with its acknowledgement (``150=0``) alone, not Kalshi's default pair of pending
(``150=A``, which carries no ExecID and which the drop copy never replays) then acknowledged; that
acknowledgement is the answer. Figures:

* ``roundtrip_p50_us`` / ``roundtrip_p99_us``: ``new_order`` → the order's first
  ExecutionReport out of the exactly-once iterator, paced at 1,000 orders/s on a fixed schedule
  (latency from just before ``new_order`` is called; ``time.perf_counter_ns``). When the stack
  cannot keep up with the pace, these include the backlog that builds up;
* ``orders_per_s``: orders answered per second, unpaced with at most 100 unanswered;
* ``roundtrip_vs_floor_p50`` (target ≤ 2) and ``orders_vs_floor`` (target ≥ 0.4): against the
  floor (:mod:`ops.benchmarks.floor`: a bare Trio socket echo between two processes, the same
  message sizes — the real NewOrderSingle and first report — pacing, counts and window),
  measured in this run, its phases interleaved with the stack's so that load on the machine
  hits both alike. :mod:`ops.benchmarks.floor` prints that floor measurement.

The core-only link, measured in the same run for the decomposition floor → session core and
gateway → whole stack: a second KalshiNR session, under a second generated API key (the
gateway allows one connection per key) registered with the **same gateway process**, opened
with :func:`sessions.driver.connect_session` alone — no supervisor, no order-entry component, no
rate limiter, no execution ledger, no own-order tracker, no key lock. It logs on as the stack's
session does (same configuration, SkipPendingExecReports, other key and session name); the
benchmark hands each NewOrderSingle — the same body as the component's, with its own
UUID-prefixed ClOrdIDs, so the two links' orders never share one — to ``FixSession.send_app``
and takes the driver's events with ``next_events()`` in the application task (the load driver's
receiving task); an order's latency counts when the ExecutionReport event for it is taken
there. Same sizes, pacing, counts and window as the stack and the floor. Its ratios to the floor
show how much of the stack's is the core, the driver, the gateway and their wake-ups, and how
much the layers above add.

* ``core_roundtrip_p50_us``: the core-only link's paced p50 (as ``roundtrip_p50_us``);
* ``core_vs_floor_p50``: that against the floor's paced p50;
* ``core_orders_per_s``: the core-only link's windowed rate (as ``orders_per_s``);
* ``core_orders_vs_floor``: that against the floor's windowed rate.

Sequence: gateway up (both keys) → supervisor up → core-only session logged on (then
``gc.freeze()``, as ``kalshi-fix run`` does and the README recommends to embedding applications)
→ warm-up (300 orders each: stack, core-only link, floor) → stack paced → core paced → floor
paced → stack windowed → core windowed → floor windowed.

Attribution (the stack's windowed phase only, CPU time per order; the core-only session is
connected but idle then): ``roundtrip_client_cpu_us`` for this process
(components, supervisor, session, driver, our side of TCP) and ``roundtrip_gateway_cpu_us`` for
the gateway process (its sessions and the exchange model; ``/proc``, 10 ms ticks). On a
two-core machine the two processes each want a core; anything else running shows up as
queueing in the latencies.
"""

from __future__ import annotations

import datetime as dt
import gc
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import attrs
import trio

from sessions.codec import encode_message
from sessions.config import load_config
from sessions.driver import FixSession, connect_session
from sessions.events import ApplicationMessage
from sessions.message import FixMessage, utc_timestamp
from sessions.testing.keys import make_test_key
from supervisor.app import Components
from supervisor.config import WEEKDAYS, load_supervisor_config
from supervisor.observer import ObserverBase, SessionDown
from supervisor.orderentry import OrderEntry
from supervisor.ratelimit import RateLimiter
from supervisor.streams import ExecutionStream
from supervisor.tree import Supervisor

from . import Figure
from . import floor as floor_mod
from ._drive import LoadResult, drive
from ._procs import BenchmarkError, address, cpu_seconds, python_module, spawn

__all__ = ["run"]

SYMBOL = "KXHIGHNY-26JUL14-B85"  # a quick-start market of the simulated gateway
_SESSION = "orders"
# The core-only link's session (its own key and config file; see the module docstring).
_CORE_SESSION = "core"
# Generous bound on one phase (a hung peer must fail the benchmark, not hang it).
_PHASE_TIMEOUT = 120.0
_START_TIMEOUT = 60.0


class _Watch(ObserverBase):
    """Notices when the benchmark session goes down (the phase then fails, not hangs)."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def session_down(self, down: SessionDown) -> None:
        if self.problem is None:
            why = down.ended or down.error
            self.problem = f"the benchmark session went down ({down.kind.value}): {why}"


def _order_body(cl_ord_id: bytes) -> list[tuple[int, bytes]]:
    """The benchmark NewOrderSingle's body, field for field as the order-entry component renders
    ``new_order(SYMBOL, "buy", 1, 5, tif="1")``: one lot, limit 5¢, GTC."""
    return [
        (11, cl_ord_id), (38, b"1"), (40, b"2"), (44, b"5"), (54, b"1"), (55, SYMBOL.encode()),
        (59, b"1"),
    ]


class _Link:
    """What both links share: ClOrdIDs drawn afresh per phase, the orders waiting for their
    first report, and one bounded phase through :func:`drive`. A link supplies ``_send``,
    ``_completions`` and what it was waiting for when a phase timed out (``_stuck``)."""

    #: The orders' name in errors.
    what = "benchmark"

    def __init__(self) -> None:
        self._pending: dict[bytes, int] = {}
        self._base = ""

    async def _send(self, i: int) -> None:
        raise NotImplementedError

    def _completions(self) -> AsyncIterator[int]:
        raise NotImplementedError

    def _stuck(self) -> str:
        raise NotImplementedError

    def _answered(self, msg: FixMessage) -> int | None:
        """The index of the order ``msg`` first answers, or ``None`` (a later report)."""
        i = self._pending.pop(msg.get(11) or b"", None)
        if i is not None and msg.get(150) == b"8":
            raise BenchmarkError(f"the gateway rejected a {self.what} order: {msg.get_str(58)!r}")
        return i

    async def run(
        self, count: int, *, rate: float | None = None, window: int | None = None
    ) -> LoadResult:
        """One phase: ``count`` orders, paced at ``rate`` or windowed."""
        # UUID-prefixed ClOrdIDs drawn afresh per phase: no ClOrdID is ever shared.
        self._base = str(uuid.uuid4())[:24]
        limit = _PHASE_TIMEOUT + count / 100  # a hung peer must fail the phase, not hang it
        with trio.move_on_after(limit):
            return await drive(self._send, self._completions, count, rate=rate, window=window)
        raise BenchmarkError(
            f"{len(self._pending)} {self.what} orders unanswered after {limit:g} s; "
            f"{self._stuck()}"
        )


class _AppLink(_Link):
    """Orders through the order-entry component, answers through the executions stream's
    exactly-once iterator — the application's two ends of the stack."""

    def __init__(self, orders: OrderEntry, executions: ExecutionStream, watch: _Watch) -> None:
        super().__init__()
        self._orders = orders
        self._consumer = executions.executions()
        self._watch = watch
        self.last_seq = 0
        self.first_report_size = 0

    async def _send(self, i: int) -> None:
        # UUID-sized ClOrdIDs, as the component makes them, but known here in advance.
        cl = f"{self._base}{i:012d}"
        self._pending[cl.encode()] = i
        ticket = await self._orders.new_order(SYMBOL, "buy", 1, 5, tif="1", cl_ord_id=cl)
        self.last_seq = ticket.seq_num

    async def _completions(self) -> AsyncIterator[int]:
        while True:
            item = await self._consumer.__anext__()  # acknowledges the previous item
            msg = item.message
            i = self._answered(msg)
            if i is None:
                continue  # not the order's first report
            if not self.first_report_size:
                self.first_report_size = len(msg.encode())
            yield i

    def _stuck(self) -> str:
        refusals = [e for e in self._orders.events.subscribe().pending()]
        return (
            f"{self._watch.problem or 'the session stayed up'}; order-entry events: "
            f"{refusals[-3:]!r}"
        )


class _CoreLink(_Link):
    """The core-only link: orders into the Trio driver's ``send_app``, answers from its
    ``next_events()`` in the application task — the session core and driver without anything
    of the supervisor on top."""

    what = "core-only"

    def __init__(self, session: FixSession) -> None:
        super().__init__()
        self._session = session

    async def _send(self, i: int) -> None:
        cl = f"{self._base}{i:012d}".encode()
        self._pending[cl] = i
        self._session.send_app(b"D", _order_body(cl))

    async def _completions(self) -> AsyncIterator[int]:
        session = self._session
        while True:
            events = await session.next_events()
            if not events:  # the session is over and every event was taken
                raise BenchmarkError(
                    f"the core-only session ended during a phase: {session.ended!r} "
                    f"({session.transport_error!r})"
                )
            for event in events:
                if not isinstance(event, ApplicationMessage):
                    continue  # heartbeats and the like: not an answer
                i = self._answered(event.message)
                if i is not None:
                    yield i

    def _stuck(self) -> str:
        return f"session state {self._session.state.name}, ended {self._session.ended!r}"


def _order_size(link: _AppLink, key_id: str) -> int:
    """Bytes of one benchmark NewOrderSingle on the wire (the core's header: 49, 56, 34, 52,
    and the component's body)."""
    header = [
        (49, key_id.encode()), (56, b"KalshiNR"), (34, str(link.last_seq).encode()),
        (52, utc_timestamp(time.time())),
    ]
    return len(encode_message(b"D", header, _order_body(b"0" * 36)))


def _write_config(
    tmp: Path, port: int, key_id: str, private_key: Path, session: str = _SESSION
) -> Path:
    # A maintenance weekday three days from today: the benchmark never waits for a window.
    # One file per session: the supervisor reads only the stack's, so it runs that one alone.
    weekday = WEEKDAYS[(dt.date.today().weekday() + 3) % 7]
    path = tmp / f"bench-{session}.toml"
    path.write_text(
        f"""
[session.{session}]
endpoint = "KalshiNR"
host = "127.0.0.1"
port = {port}
tls = false
key_id = "{key_id}"
private_key = "{private_key}"
store_dir = "store"

[session.{session}.logon]
skip_pending_exec_reports = true

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
    core_paced: LoadResult
    core_windowed: LoadResult
    #: CPU seconds per order in the windowed phase: this process, the gateway process.
    client_cpu: float
    gateway_cpu: float | None


async def _measure(
    orders_count: int, rate: float, throughput_orders: int, window: int, warmup: int
) -> _Result:
    with tempfile.TemporaryDirectory(prefix="kalshi-bench-roundtrip-") as tmp_name:
        tmp = Path(tmp_name)
        key = make_test_key("bench-roundtrip", tmp / "keys")
        core_key = make_test_key("bench-roundtrip-core", tmp / "keys")
        args = python_module(
            "ops.benchmarks._gateway", "--key", f"{key.key_id}={key.public_key_path}",
            "--key", f"{core_key.key_id}={core_key.public_key_path}",
            "--plain", "--no-maintenance",
        )
        async with spawn(args, ["KalshiNR"]) as gateway:
            _, port = address(gateway.ready["KalshiNR"])
            config = _write_config(tmp, port, key.key_id, key.private_key_path)
            core_config = load_config(
                _write_config(
                    tmp, port, core_key.key_id, core_key.private_key_path, _CORE_SESSION
                )
            ).sessions[_CORE_SESSION]
            cfg, sup_cfg = load_supervisor_config(config)
            app = Components.build(cfg, sup_cfg, tier="Prestige")
            # One token an order: the limiter runs for every order but never holds one back
            # (1,000 orders/s is beyond any tier's budget at 10 tokens a message).
            app.orders.limiter = RateLimiter("Prestige", cost=1)
            watch = _Watch()
            try:
                observers = [*app.observers, watch]
                async with (
                    Supervisor((cfg, sup_cfg), observers=observers) as sup,
                    connect_session(core_config) as core_session,
                ):
                    with trio.fail_after(_START_TIMEOUT):
                        await sup.handle(_SESSION).wait_active()
                        await core_session.wait_logged_on()
                    gc.freeze()  # as `kalshi-fix run` does once up (README: Latency)
                    link = _AppLink(app.orders, app.executions, watch)
                    core_link = _CoreLink(core_session)
                    await link.run(warmup, window=window)
                    await core_link.run(warmup, window=window)
                    request_size = _order_size(link, key.key_id)
                    response_size = link.first_report_size
                    async with floor_mod.open_floor(request_size, response_size) as floor_link:
                        await floor_link.run(warmup, window=window)
                        paced = await link.run(orders_count, rate=rate)
                        core_paced = await core_link.run(orders_count, rate=rate)
                        floor_paced = await floor_link.run(orders_count, rate=rate)
                        # The attribution covers the stack's windowed phase and nothing else.
                        gw0, cpu0 = cpu_seconds(gateway.process.pid), time.process_time()
                        windowed = await link.run(throughput_orders, window=window)
                        gw1, cpu1 = cpu_seconds(gateway.process.pid), time.process_time()
                        core_windowed = await core_link.run(throughput_orders, window=window)
                        floor_windowed = await floor_link.run(throughput_orders, window=window)
            finally:
                app.close()
                gc.unfreeze()  # the benchmarks that run after this one start as they would alone
    return _Result(
        paced,
        windowed,
        floor_mod.FloorResult(floor_paced, floor_windowed, request_size, response_size),
        core_paced,
        core_windowed,
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
    """Round-trip latency and throughput through the stack, and their ratios to the floor; then
    the core-only link's, and theirs."""
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
    yield ("core_roundtrip_p50_us", r.core_paced.p(0.50), "us")
    yield ("core_vs_floor_p50", r.core_paced.p(0.50) / r.floor.paced.p(0.50), "x")
    yield ("core_orders_per_s", r.core_windowed.rate, "orders/s")
    yield ("core_orders_vs_floor", r.core_windowed.rate / r.floor.windowed.rate, "x")
