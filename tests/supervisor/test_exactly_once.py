"""The key property: whatever the faults, the application receives every execution of the
account exactly once, in order per order, and no application request becomes two orders.

Also home of the test harness the component tests share (imported by name, like
``driver_peer``): :class:`MiniTree`, a minimal stand-in for the supervision tree that drives real
:class:`~sessions.driver.FixSession` objects over the simulated gateway's in-memory connections,
reconnects with a short back-off, and calls the observers exactly as the seam
(:mod:`supervisor.observer`) describes; and :class:`Rig`, a gateway plus the components.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from sessions.config import SessionConfig
from sessions.connection import FixConnection
from sessions.driver import build_settings, open_fix_session
from sessions.errors import KalshiFixError, LocalProtocolError
from sessions.events import (
    ApplicationMessage,
    LoggedOn,
    LogoutReason,
    SequenceGap,
    SessionEnded,
)
from sessions.logon import LogonOptions
from sessions.maintenance import KALSHI_MAINTENANCE
from sessions.message import Value
from sessions.profiles import get_profile
from sessions.store import MemoryStore
from sessions.testing.faults import FaultKind, FaultPlan
from sessions.testing.gateway import Gateway
from sessions.testing.pytest_plugin import BASE_EPOCH, KEY_ROLES, GatewayOptions, build_gateway
from supervisor.execid import ExecId
from supervisor.killswitch import KillSwitch
from supervisor.ledger import DeliveredExecution, ExecutionLedger
from supervisor.observer import DownKind, SessionDown, SessionNotActive
from supervisor.orderentry import AmbiguityResolved, OrderEntry
from supervisor.recovery import RecoveryObserver
from supervisor.streams import ExecutionStream

MKT0 = "KXHIGHNY-26JUL14-B85"  # exchange index 0
MKT2 = "KXBTC-26JUL14-T60000"  # exchange index 2
ACCOUNT = "ACCT-1"

# ----------------------------------------------------------------------------- the mini tree


class MiniHandle:
    """A :class:`~supervisor.observer.SessionHandle` over whichever FixSession is current."""

    def __init__(self, name: str, config: SessionConfig) -> None:
        self._name = name
        self._config = config
        self.session: Any = None
        self.logged_on = False
        self._changed = trio.Event()
        self.sent: list[tuple[bytes, int]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> SessionConfig:
        return self._config

    @property
    def active(self) -> bool:
        s = self.session
        return s is not None and self.logged_on and s.ended is None and not s.finished

    def send_app(self, msg_type: bytes | str, body: Iterable[tuple[int, Value]]) -> int:
        if not self.active:
            raise SessionNotActive(f"{self._name} is not logged on")
        try:
            seq: int = self.session.send_app(msg_type, body)
        except LocalProtocolError as e:
            raise SessionNotActive(f"{self._name}: {e}") from None
        mt = msg_type.encode() if isinstance(msg_type, str) else msg_type
        self.sent.append((mt, seq))
        return seq

    async def wait_active(self) -> None:
        while not self.active:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@attrs.define
class ChildSpec:
    endpoint: str
    role: str
    heartbeat: int = 30
    logon: LogonOptions = attrs.Factory(LogonOptions)


class MiniTree:
    """Runs each session in a reconnect loop against ``gateway`` (in-memory connections) and
    dispatches to ``observers``. ``stop()`` ends it (observers hear SHUTDOWN)."""

    def __init__(
        self,
        gateway: Gateway,
        keys: dict[str, Any],
        children: dict[str, ChildSpec],
        observers: Sequence[Any],
        *,
        clock: Callable[[], float],
        store_dir: Path,
        backoff: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        self.gateway = gateway
        self.keys = keys
        self.observers = list(observers)
        self.clock = clock
        self.backoff = backoff
        self.handles: dict[str, MiniHandle] = {}
        self.specs = children
        self.stores: dict[str, MemoryStore] = {}
        self.downs: list[SessionDown] = []
        self.ups: dict[str, int] = defaultdict(int)
        self._scope: trio.CancelScope | None = None
        self._stopping = False
        for name, spec in children.items():
            key = keys[spec.role]
            cfg = SessionConfig(
                name=name,
                profile=get_profile(spec.endpoint),
                host="127.0.0.1",
                port=1,
                key_id=key.key_id,
                private_key=key.private_key_path,
                tls=False,
                heartbeat_interval=spec.heartbeat,
                logon=spec.logon,
                store_dir=store_dir,
            )
            self.handles[name] = MiniHandle(name, cfg)

    def handle(self, name: str) -> MiniHandle:
        return self.handles[name]

    async def run(self, *, task_status: trio.TaskStatus[MiniTree] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:

                def spawn(fn: Callable[[], Awaitable[Any]]) -> None:
                    nursery.start_soon(fn)

                for obs in self.observers:
                    obs.attach(dict(self.handles), spawn, self.clock)
                for name in self.handles:
                    nursery.start_soon(self._child, name)
                task_status.started(self)

    def stop(self) -> None:
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    async def _child(self, name: str) -> None:
        handle = self.handles[name]
        spec = self.specs[name]
        key = self.keys[spec.role]
        store = self.stores.setdefault(name, MemoryStore(now=self.clock()))
        delay = self.backoff[0]
        while True:
            ended: SessionEnded | None = None
            was_up = False
            error: BaseException | None = None
            try:
                stream = self.gateway.connect_memory(spec.endpoint)
                conn = FixConnection(build_settings(handle.config, key.signer.sign), store)
                async with open_fix_session(stream, conn, clock=self.clock, peer_name=name) as fs:
                    handle.session = fs
                    async for event in fs.events():
                        if isinstance(event, LoggedOn):
                            handle.logged_on = True
                            was_up = True
                            delay = self.backoff[0]
                            self.ups[name] += 1
                            handle._notify()
                            for obs in self.observers:
                                obs.session_up(name, event)
                        elif isinstance(event, ApplicationMessage):
                            for obs in self.observers:
                                obs.application_message(name, event)
                        elif isinstance(event, SequenceGap):
                            for obs in self.observers:
                                obs.sequence_gap(name, event)
                        elif isinstance(event, SessionEnded):
                            ended = event
                            handle.logged_on = False
                            handle._notify()
                            break
            except KalshiFixError as e:
                error = e
            finally:
                handle.logged_on = False
                handle.session = None
                handle._notify()
                if self._stopping:
                    kind = DownKind.SHUTDOWN
                elif ended is not None and ended.reason is LogoutReason.MAINTENANCE:
                    kind = DownKind.MAINTENANCE
                else:
                    kind = DownKind.UNPLANNED
                if was_up:
                    down = SessionDown(name, kind, ended, error, was_logged_on=True)
                    self.downs.append(down)
                    with trio.CancelScope(shield=True):
                        for obs in self.observers:
                            obs.session_down(down)
            await trio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])


# ----------------------------------------------------------------------------- the rig


@attrs.define
class Rig:
    """A gateway and the components, wired like the real supervisor would wire them."""

    gateway: Gateway
    tree: MiniTree
    executions: ExecutionStream
    recovery: RecoveryObserver
    order_entry: OrderEntry
    kill: KillSwitch
    ledger: ExecutionLedger
    nursery: trio.Nursery
    received: list[DeliveredExecution] = attrs.Factory(list)
    events: list[Any] = attrs.Factory(list)

    def now(self) -> float:
        return self.gateway.clock()

    def close(self) -> None:
        """Stop everything the rig started (the consumer tasks too)."""
        self.tree.stop()
        self.gateway.stop()
        self.nursery.cancel_scope.cancel()

    def nr(self) -> MiniHandle:
        return self.tree.handle("orders")

    def dc(self) -> MiniHandle:
        return self.tree.handle("dropcopy")

    async def settle(self, quiet: float = 40.0, limit: float = 3600.0) -> None:
        """Wait until every session is up, no pass is running or needed, nothing is held, and
        the consumer has everything — stable over ``quiet`` seconds (heartbeats reveal gaps)."""
        deadline = trio.current_time() + limit
        while trio.current_time() < deadline:
            if self._quiet():
                passes = self.recovery._pass_id
                got = len(self.received)
                await trio.sleep(quiet)
                if self._quiet() and passes == self.recovery._pass_id and got == len(self.received):
                    return
            else:
                await trio.sleep(1.0)
        raise AssertionError(
            f"the rig never settled: gaps {self.recovery.open_gaps()}, busy "
            f"{self.recovery.busy}, holding {self.ledger.holding}, undelivered "
            f"{self.ledger.undelivered_count()}"
        )

    def _quiet(self) -> bool:
        return (
            all(h.active for h in self.tree.handles.values())
            and not self.recovery.busy
            and not self.ledger.holding
            and self.ledger.undelivered_count() == 0
            and not self.order_entry._resending
        )


DEFAULT_CHILDREN = {
    "orders": ChildSpec("KalshiNR", "nr"),
    "dropcopy": ChildSpec("KalshiDC", "dc"),
}


@attrs.define
class RigFactory:
    keys: dict[str, Any]
    tmp_path: Path

    def gateway(self, **options: Any) -> Gateway:
        opts = GatewayOptions(tls=False, record_wire=False, **options)
        t0 = trio.current_time()
        start = opts.start

        def clock() -> float:
            return start + (trio.current_time() - t0)

        return build_gateway(opts, self.keys, None, clock)


def make_components(
    ledger: ExecutionLedger,
    state_dir: Path,
    *,
    retry_ambiguous: bool = False,
    indexes: Iterable[int] = (0, 2),
    **recovery_kw: Any,
) -> tuple[ExecutionStream, RecoveryObserver, OrderEntry, KillSwitch]:
    executions = ExecutionStream(ledger)
    recovery = RecoveryObserver(
        executions,
        drop_copy="dropcopy",
        state_path=state_dir / "recovery.json",
        indexes=indexes,
        **recovery_kw,
    )
    order_entry = OrderEntry(executions, recovery=recovery, retry_ambiguous=retry_ambiguous)
    kill = KillSwitch(order_entry)
    return executions, recovery, order_entry, kill


async def open_rig(
    nursery: trio.Nursery,
    gateway: Gateway,
    keys: dict[str, Any],
    state_dir: Path,
    *,
    children: dict[str, ChildSpec] | None = None,
    consume: bool = True,
    retry_ambiguous: bool = False,
    **recovery_kw: Any,
) -> Rig:
    """Start the gateway (if not running), the components and the mini tree in ``nursery``."""
    if gateway._handler_nursery is None:
        await nursery.start(gateway.run)
    ledger = ExecutionLedger.open(state_dir, ACCOUNT, now=gateway.clock())
    executions, recovery, order_entry, kill = make_components(
        ledger, state_dir, retry_ambiguous=retry_ambiguous, **recovery_kw
    )
    tree = MiniTree(
        gateway,
        keys,
        children or DEFAULT_CHILDREN,
        [executions, recovery, order_entry, kill],
        clock=gateway.clock,
        store_dir=state_dir / "stores",
    )
    rig = Rig(gateway, tree, executions, recovery, order_entry, kill, ledger, nursery)
    await nursery.start(tree.run)
    if consume:
        nursery.start_soon(_consume, rig)
    sub = order_entry.subscribe()
    nursery.start_soon(_collect_events, rig, sub)
    return rig


async def _consume(rig: Rig) -> None:
    async for item in rig.executions:
        rig.received.append(item)


async def _collect_events(rig: Rig, sub: Any) -> None:
    async for ev in sub:
        rig.events.append(ev)


@pytest.fixture
def rigs(_kalshi_gateway_material: Any, tmp_path: Path) -> RigFactory:
    keys, _tls, _ca = _kalshi_gateway_material
    return RigFactory(keys, tmp_path)


# ----------------------------------------------------------------------------- checks


def real_exec_ids(items: Iterable[DeliveredExecution]) -> list[str]:
    return [str(i.exec_id) for i in items if i.exec_id is not None]


def assert_exactly_once(rig: Rig, received: list[DeliveredExecution] | None = None) -> None:
    items = rig.received if received is None else received
    got = real_exec_ids(items)
    truth = [r.exec_id for r in rig.gateway.ground_truth(ACCOUNT)]
    dupes = sorted({e for e in got if got.count(e) > 1})
    assert not dupes, f"delivered more than once: {dupes}"
    missing = sorted(set(truth) - set(got))
    extra = sorted(set(got) - set(truth))
    assert not missing, f"never delivered: {missing}"
    assert not extra, f"delivered but not in the ground truth: {extra}"
    # In order per order: each order's executions in ExecID order.
    per_order: dict[str, list[ExecId]] = defaultdict(list)
    for i in items:
        if i.exec_id is not None:
            per_order[i.order_key].append(i.exec_id)
    for key, ids in per_order.items():
        assert ids == sorted(ids, key=lambda e: e.key), f"order {key} out of order: {ids}"


def assert_one_order_per_request(rig: Rig) -> None:
    orders_by_cl: dict[str, set[str]] = defaultdict(set)
    for rec in rig.gateway.ground_truth(ACCOUNT):
        orders_by_cl[rec.cl_ord_id].add(rec.order_id)
    doubled = {cl: ids for cl, ids in orders_by_cl.items() if len(ids) > 1}
    assert not doubled, f"one request became several orders: {doubled}"


def assert_tracker_matches(rig: Rig) -> None:
    last: dict[str, Any] = {}
    for rec in rig.gateway.ground_truth(ACCOUNT):
        last[rec.order_id] = rec
    for oid, rec in last.items():
        state = rig.order_entry.tracker.get_by_order_id(oid)
        assert state is not None, f"tracker does not know order {oid}"
        assert state.cum_qty == rec.cum_qty, (oid, state.cum_qty, rec.cum_qty)
        closed = rec.ord_status in ("2", "4", "C")
        assert (not state.is_open) == closed or state.ambiguous, (oid, state, rec.ord_status)


# ----------------------------------------------------------------------------- scenarios


async def test_fill_while_disconnected_is_recovered_once(rigs: RigFactory, autojump_clock: Any) -> None:
    gw = rigs.gateway()
    async with trio.open_nursery() as nursery:
        rig = await open_rig(nursery, gw, rigs.keys, rigs.tmp_path)
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        # A marketable order fills at once; a resting one waits for the liquidity provider.
        await rig.order_entry.new_order(MKT0, "buy", 2, 60)
        t = await rig.order_entry.new_order(MKT0, "buy", 3, 50)
        await rig.settle()
        before = len(real_exec_ids(rig.received))
        assert before == 2  # the fill (New folded in) and the resting order's New
        gw.inject("drop:endpoint=KalshiNR")
        await trio.sleep(0.1)
        assert not rig.nr().active
        gw.add_liquidity(MKT0, "sell", 50, 3)  # fills our resting order while NR is down
        await rig.settle()
        assert_exactly_once(rig)
        state = rig.order_entry.order(t.cl_ord_id)
        assert state is not None and state.cum_qty == Decimal(3) and not state.is_open
        sources = {i.source for i in rig.received if i.exec_id is not None}
        assert sources == {"live", "dropcopy"}
        rig.close()


# ----------------------------------------------------------------------------- the property

#: Seeds of the property test (each one a different fault plan, workload and maybe a crash).
SEEDS = range(200)
HORIZON = 60.0


def seed_maintenance(rng: random.Random) -> Any:
    """One seed in six crosses a short ad-hoc maintenance window."""
    if rng.random() >= 1 / 6:
        return None
    start = BASE_EPOCH + rng.uniform(5.0, 50.0)
    return KALSHI_MAINTENANCE.with_window(start, start + rng.uniform(30.0, 240.0))


async def trader(rig: Rig, rng: random.Random, retry: bool) -> None:
    """A small random workload: marketable and resting orders on both shards, cancels,
    replaces, and the liquidity provider crossing our resting orders (also while we are
    disconnected). A refused request (session down) is simply not retried by this app."""
    oe = rig.order_entry
    for _ in range(rng.randint(4, 9)):
        await trio.sleep(rng.uniform(0.0, HORIZON / 6))
        action = rng.random()
        market = rng.choice((MKT0, MKT2))
        try:
            if action < 0.30:
                await oe.new_order(market, "buy", rng.randint(1, 3), rng.choice((60, 62)),
                                   retry_ambiguous=retry)
            elif action < 0.60:
                side, price = rng.choice((("buy", rng.randint(44, 55)), ("sell", rng.randint(56, 59))))
                await oe.new_order(market, side, rng.randint(1, 5), price, retry_ambiguous=retry)
            elif action < 0.80:
                side, price = rng.choice((("sell", 44), ("buy", 59)))
                rig.gateway.add_liquidity(market, side, price, rng.randint(1, 4))
            else:
                mine = [o for o in oe.open_orders() if o.order_id is not None and o.symbol]
                if not mine:
                    continue
                target = rng.choice(mine)
                if action < 0.9:
                    await oe.cancel(target.cl_ord_id)
                else:
                    qty = (target.order_qty or Decimal(1)) + 1
                    await oe.replace(target.cl_ord_id, qty=qty)
        except (SessionNotActive, KalshiFixError):
            continue


@pytest.mark.parametrize("seed", SEEDS)
async def test_exactly_once_under_random_faults(
    seed: int, rigs: RigFactory, autojump_clock: Any
) -> None:
    rng = random.Random(seed * 7919 + 17)
    plan = FaultPlan.random(
        seed,
        endpoints=("KalshiNR", "KalshiDC"),
        count=rng.randint(2, 4),
        horizon=HORIZON,
    )
    gw = rigs.gateway(seed=seed, faults=plan, maintenance=seed_maintenance(rng))
    retry = rng.random() < 0.5
    crash_at = rng.uniform(10.0, HORIZON) if rng.random() < 0.2 else None
    state = rigs.tmp_path / "state"
    received: list[DeliveredExecution] = []
    async with trio.open_nursery() as outer:
        await outer.start(gw.run)
        t0 = trio.current_time()
        lives = [crash_at, None] if crash_at is not None else [None]
        for crash in lives:
            async with trio.open_nursery() as inner:
                rig = await open_rig(inner, gw, rigs.keys, state, retry_ambiguous=retry)
                if crash is not None:
                    inner.start_soon(trader, rig, rng, retry)
                    await trio.sleep(crash)
                    # The supervisor process dies here: whatever was in memory is gone; the
                    # application keeps what it had received (and acknowledged).
                else:
                    if crash_at is None:
                        inner.start_soon(trader, rig, rng, retry)
                    await trio.sleep_until(t0 + 3 * HORIZON)
                    await rig.settle()
                received += rig.received
                rig.tree.stop()
                inner.cancel_scope.cancel()
            rig.ledger.close()
        outer.cancel_scope.cancel()
    rig.received = received
    assert_exactly_once(rig)
    assert_one_order_per_request(rig)
