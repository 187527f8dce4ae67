"""``bash ops/demo``: the main job on the embedded default, end to end on one machine.

What a trading application does with this library, against the simulated Kalshi gateway running
in the same process:

* five sessions, one per endpoint (KalshiNR, KalshiRT, KalshiDC, KalshiPT, KalshiRFQ), each under
  its own freshly generated RSA key (Kalshi allows one connection per key), run by the real
  :class:`~supervisor.tree.Supervisor` with the components of :func:`supervisor.app.open_app` —
  the embedded ``async with`` API;
* orders placed through ``app.orders`` and their executions taken from ``app.executions``, the
  exactly-once stream;
* the KalshiNR connection dropped (an injected fault) while fills are in flight: the supervisor
  reconnects, and the reconciliation component replays the drop copy (KalshiDC), so the missed
  fills reach the application exactly once, flagged ``dropcopy``;
* Kalshi's weekly maintenance window (Thursday 03:00–05:00 America/New_York) crossed: the sessions
  log out before it, stay out, and log back on after 05:00;
* an RFQ: created on KalshiRT, quoted by the maker on KalshiRFQ (a second account, the way a real
  counterparty would be), accepted, confirmed, filled;
* a market settlement (MarketSettlementReport on KalshiPT) through ``app.settlements``.

It prints what happened, in order, and a summary, and exits 0 only when the executions the
application received equal the gateway's ground truth: none lost, none repeated, none unknown.

What is accelerated, and why that is safe: the whole run uses Trio's ``MockClock`` with
``autojump_threshold=0`` — whenever every task is blocked waiting for a timer, virtual time jumps
to the next deadline. The gateway, the supervisor and every session read that one clock (the
gateway's epoch clock is the start time plus Trio time; the session core is sans-IO and gets its
time from the driver), so heartbeats, backoff, the confirmation and execution timers of the RFQ
and the two-hour maintenance window all pass in milliseconds of wall time, in the same order as
they would in real time. The sessions talk to the gateway over its in-memory connections
(``Gateway.connect_memory`` through the tree's ``connect`` hook) rather than TCP: with sockets a
task waiting on the kernel looks idle to the autojump clock, which would then leap over
heartbeat deadlines and time connections out that are merely busy. In memory, "idle" really means
"waiting for a timer", so the accelerated run is the real-time run, compressed. Everything else
— the FIX bytes, signed Logons, the session core, the durable stores and ledger (in a temporary
directory) — is what a production deployment runs.
"""

from __future__ import annotations

import datetime as dt
import faulthandler
import random
import sys
import tempfile
import zoneinfo
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from sessions.config import Config, SessionConfig
from sessions.maintenance import KALSHI_MAINTENANCE
from sessions.profiles import get_profile
from sessions.testing.gateway import Gateway, GatewayConfig
from sessions.testing.keys import TestKey, make_test_key
from supervisor.app import App, open_app
from supervisor.config import (
    ChildSettings,
    MaintenanceSettings,
    ReconciliationSettings,
    SupervisorConfig,
)
from supervisor.ledger import DeliveredExecution
from supervisor.errors import SupervisorError
from supervisor.observer import ChildState, SessionNotActive
from supervisor.rfq import QuoteNotice

__all__ = ["demo", "main"]

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
#: The run starts five minutes before Kalshi's weekly window (Thursday 03:00 New York).
START = dt.datetime(2026, 7, 16, 2, 55, tzinfo=NEW_YORK).timestamp()
WINDOW = (dt.datetime(2026, 7, 16, 3, 0, tzinfo=NEW_YORK).timestamp(),
          dt.datetime(2026, 7, 16, 5, 0, tzinfo=NEW_YORK).timestamp())
TICKER = "KXHIGHNY-26JUL14-B85"  # exchange index 0
ACCOUNT = "ACCT-1"  # ours
MAKER_ACCOUNT = "ACCT-2"  # the RFQ counterparty

#: Session name → (endpoint, key slot, account).
SESSIONS: dict[str, tuple[str, str, str]] = {
    "orders": ("KalshiNR", "demo-orders", ACCOUNT),
    "rt": ("KalshiRT", "demo-rt", ACCOUNT),
    "dropcopy": ("KalshiDC", "demo-dropcopy", ACCOUNT),
    "positions": ("KalshiPT", "demo-positions", ACCOUNT),
    "maker": ("KalshiRFQ", "demo-maker", MAKER_ACCOUNT),
}
# Resting liquidity of the scripted provider: (side, price in cents, quantity).
LIQUIDITY = (("sell", 60, 10), ("sell", 62, 100), ("buy", 40, 10), ("buy", 38, 100))
#: Bound on the whole scenario in virtual seconds (the window alone is two hours).
VIRTUAL_LIMIT = 4 * 3600.0
#: Bound on the process in wall seconds (``main`` only): a hang is reported, never waited out.
WALL_LIMIT = 60.0

_EXEC_TYPES = {"0": "new", "F": "fill", "4": "canceled", "5": "replaced", "8": "rejected",
               "C": "expired", "A": "pending"}
_SIDES = {"1": "buy", "2": "sell"}


class DemoFailed(Exception):
    """A step of the scenario did not happen as it should (the message says which)."""


def clock_text(ts: float) -> str:
    """Epoch seconds as New York wall time, e.g. ``Thu 02:55:01``."""
    return dt.datetime.fromtimestamp(ts, NEW_YORK).strftime("%a %H:%M:%S")


# ----------------------------------------------------------------------------- set-up


def build_gateway(keys: dict[str, TestKey], clock: Callable[[], float]) -> Gateway:
    """The simulated gateway: both accounts, our five keys, one market with resting liquidity,
    Kalshi's real maintenance calendar."""
    gateway = Gateway(
        GatewayConfig(tls=False, record_wire=False, maintenance=KALSHI_MAINTENANCE),
        clock=clock,
    )
    for account in (ACCOUNT, MAKER_ACCOUNT):
        gateway.add_account(account)
    for name, (_, _, account) in SESSIONS.items():
        gateway.add_key(keys[name].key_id, account, keys[name].public_key)
    gateway.add_market(TICKER, exchange_index=0)
    for side, price, qty in LIQUIDITY:
        gateway.add_liquidity(TICKER, side, price, qty)
    return gateway


def build_configs(keys: dict[str, TestKey], state_dir: Path) -> tuple[Config, SupervisorConfig]:
    """What the application would load from its TOML file, built in code."""
    sessions = {
        name: SessionConfig(
            name=name,
            profile=get_profile(endpoint),
            host="127.0.0.1",
            port=1,  # never dialled: the connect hook below uses the gateway's memory streams
            key_id=keys[name].key_id,
            private_key=keys[name].private_key_path,
            tls=False,
            store_dir=state_dir / "stores",
        )
        for name, (endpoint, _, _) in SESSIONS.items()
    }
    config = Config(path=state_dir / "demo.toml", sessions=sessions)
    supervisor = SupervisorConfig(
        backoff_min=0.5,
        backoff_max=10.0,
        state_dir=state_dir,
        lock_dir=state_dir / "locks",
        # Kalshi's window, Thursday 03:00-05:00 New York; sessions log out 30 s before it.
        maintenance=MaintenanceSettings(),
        reconciliation=ReconciliationSettings(
            enabled=True, drop_copy_session="dropcopy", journal=state_dir / "executions.jsonl"
        ),
        children={name: ChildSettings(name, start_order=i) for i, name in enumerate(sessions)},
    )
    return config, supervisor


# ----------------------------------------------------------------------------- the application


@attrs.define(eq=False)
class Received:
    """What the application took from the executions stream, in delivery order."""

    items: list[DeliveredExecution] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def add(self, item: DeliveredExecution) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def exec_ids(self) -> list[str]:
        return [str(i.exec_id) for i in self.items if i.exec_id is not None]


def _describe(item: DeliveredExecution, clock: Callable[[], float]) -> str:
    m = item.message
    kind = _EXEC_TYPES.get(m.get_str(150) or "", m.get_str(150) or "?")
    side = _SIDES.get(m.get_str(54) or "", "?")
    what = f"{kind:<8} {side:<4} {m.get_str(38) or '?':>5} @{m.get_str(44) or m.get_str(31) or '?':>4}"
    if m.get_str(150) == "F":
        what += f"  filled {m.get_str(32)} @{m.get_str(31)} (cum {m.get_str(14)})"
    flag = "RECOVERED via drop copy" if item.source == "dropcopy" else f"live on {item.session}"
    return f"  {clock_text(clock())}  exec {item.exec_id!s:<10} {what:<44} [{flag}]"


async def consume(app: App, received: Received, clock: Callable[[], float]) -> None:
    """The application's executions loop: every execution once, in order per order."""
    async for item in app.executions:
        received.add(item)
        if item.exec_id is not None:
            print(_describe(item, clock))


async def watch_restarts(app: App) -> None:
    """Print unplanned drops and the reconnections that follow, as they happen."""
    down: set[str] = set()
    async for event in app.status.subscribe():
        if event.state is ChildState.BACKOFF:
            down.add(event.name)
            why = event.detail.split(";")[0].split(": ", 1)[-1]
            print(f"  {clock_text(event.time)}  {event.name} ({event.endpoint}) down: {why}; "
                  "the supervisor backs off and reconnects")
        elif event.state is ChildState.UP and event.name in down:
            down.discard(event.name)
            print(f"  {clock_text(event.time)}  {event.name} ({event.endpoint}) logged on again; "
                  "reconciliation replays the drop copy")


async def caught_up(gateway: Gateway, received: Received) -> None:
    """Wait until the application holds every execution the exchange generated for us."""
    while not {r.exec_id for r in gateway.ground_truth(ACCOUNT)} <= set(received.exec_ids()):
        await received.changed()


async def answered(received: Received, cl_ord_ids: Sequence[str]) -> None:
    """Wait until every order in ``cl_ord_ids`` has at least one execution (its New, or a fill
    with the New folded in) in the application's hands."""
    while not set(cl_ord_ids) <= {
        i.message.get_str(11) for i in received.items if i.exec_id is not None
    }:
        await received.changed()


async def wait_states(app: App, state: ChildState, since: int) -> float:
    """Wait until every session reached ``state`` after history index ``since``; returns the
    (gateway) time the last one did."""
    sub = app.status.subscribe()
    with sub:
        while True:
            history = app.supervisor.history[since:]
            reached = {e.name: e.time for e in history if e.state is state}
            if set(reached) >= set(SESSIONS):
                return max(reached.values())
            await sub.get()


async def scenario(app: App, gateway: Gateway, received: Received) -> dict[str, Any]:
    """The trading day (see the module docstring); returns facts for the summary."""
    clock = gateway.clock
    facts: dict[str, Any] = {}

    def say(text: str) -> None:
        print(f"\n{clock_text(clock())}  {text}")

    say("1. Five sessions start under the supervisor")
    await app.wait_active()
    for name, (endpoint, _, account) in SESSIONS.items():
        key = app.supervisor.handle(name).config.key_id
        print(f"  {name:<10} {endpoint:<10} logged on  key {key[:8]}…  account {account}")

    say("2. Orders on KalshiNR: two marketable, three resting")
    placed = []
    for side, qty, price in (("buy", 5, 60), ("sell", 4, 40), ("buy", 4, 52), ("buy", 3, 51),
                             ("buy", 6, 50)):
        ticket = await app.orders.new_order(TICKER, side, qty, price, tif="1", session="orders")
        placed.append(ticket.cl_ord_id)
    await answered(received, placed)
    await caught_up(gateway, received)

    say("3. Fills in flight while the KalshiNR connection drops (injected fault)")
    mark = len(app.supervisor.history)
    # Armed now, it cuts the connection as the fill reports below go out.
    gateway.inject("drop:endpoint=KalshiNR,after=1")
    gateway.add_liquidity(TICKER, "sell", 50, 13)  # crosses our three resting bids
    await app.handle("orders").wait_active()
    await caught_up(gateway, received)
    if not any(e.name == "orders" and e.state is ChildState.BACKOFF
               for e in app.supervisor.history[mark:]):
        raise DemoFailed("the injected drop did not take KalshiNR down")
    recovered = [i for i in received.items if i.source == "dropcopy" and i.exec_id is not None]
    print(f"  drop copy reconciliation delivered {len(recovered)} missed execution(s); "
          "the application got each once")
    facts["recovered_before_window"] = len(recovered)

    say("4. Waiting for the maintenance window (Thursday 03:00-05:00 New York)")
    mark = len(app.supervisor.history)
    out_at = await wait_states(app, ChildState.MAINTENANCE, mark)
    print(f"  {clock_text(out_at)}  all five sessions logged out ahead of the window")
    back_at = await wait_states(app, ChildState.UP, len(app.supervisor.history))
    await app.wait_active()
    inside = [e for e in app.supervisor.history[mark:]
              if e.state is ChildState.UP and WINDOW[0] <= e.time < WINDOW[1]]
    if inside or out_at >= WINDOW[0] or back_at < WINDOW[1]:
        raise DemoFailed(f"the sessions did not stay out of the window: {inside or back_at}")
    print(f"  {clock_text(back_at)}  all five sessions logged back on (none during the window)")
    facts["maintenance"] = (out_at, back_at)

    say("5. RFQ: we ask on KalshiRT, the maker quotes on KalshiRFQ")
    incoming = app.maker.subscribe()
    rfq = await app.rfq.request(TICKER, 10)
    rfq_events = rfq.subscribe()
    rfq_id = await rfq.wait_ack()
    print(f"  RFQ {rfq_id} for 10 {TICKER} acknowledged")
    broadcast = await incoming.get()
    quote = await app.maker.quote(broadcast, yes_bid=40, no_bid=55)
    print(f"  maker quotes Yes bid 40c / No bid 55c on RFQ {broadcast.rfq_id}")
    while True:
        notice = await rfq_events.get()
        if isinstance(notice, QuoteNotice) and notice.no_bid is not None:
            break
    result = await rfq.accept(notice.quote_id, "buy")
    print(f"  we accept quote {notice.quote_id} (buy Yes at {1 - notice.no_bid:.2f}): "
          f"{'accepted' if result.accepted else 'refused: ' + str(result.text)}")
    status = await quote.wait_accepted(timeout=30)
    confirmed = await quote.confirm()
    print(f"  maker sees '{status.status}', confirms: "
          f"{'ok' if confirmed.ok else 'refused: ' + str(confirmed.text)}")
    if not (result.accepted and confirmed.ok):
        raise DemoFailed("the RFQ did not reach a confirmed quote")
    before = len(received.exec_ids())
    while not any(i.session == "rt" and i.exec_id is not None for i in received.items):
        await received.changed()
    await caught_up(gateway, received)
    facts["rfq_fills"] = len(received.exec_ids()) - before

    say(f"6. {TICKER} settles; the report arrives on KalshiPT")
    settlements = app.settlements.subscribe()
    gateway.settle(TICKER, "yes")
    settlement = await settlements.get()
    print(f"  MarketSettlementReport {settlement.symbol} result={settlement.result} "
          f"price={settlement.settlement_price} ({len(settlement.parties)} position(s))")
    facts["settlement"] = settlement

    # Quiet before the summary: no reconciliation pending, nothing undelivered.
    await caught_up(gateway, received)
    if app.components.recovery is not None:
        await app.components.recovery.wait_idle()
    facts["placed"] = placed
    return facts


async def demo(workdir: Path) -> int:
    """Run the scenario under the current Trio clock, which must be a
    :class:`trio.testing.MockClock` with autojump (two hours of maintenance in real time is not
    a demo). Returns the exit code: 0 when the application's executions equal the ground truth."""
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise DemoFailed("run the demo under trio.testing.MockClock(autojump_threshold=0)")
    keys = {name: make_test_key(slot, workdir / "keys") for name, (_, slot, _) in SESSIONS.items()}
    t0 = trio.current_time()

    def clock() -> float:
        return START + (trio.current_time() - t0)

    gateway = build_gateway(keys, clock)
    config = build_configs(keys, workdir / "state")
    received = Received()
    facts: dict[str, Any] = {}
    problem: str | None = None
    history: Sequence[Any] = ()
    print(f"Simulated Kalshi gateway in-process; clock starts {clock_text(clock())} "
          "New York time (accelerated, see the module docstring)")
    with trio.move_on_after(VIRTUAL_LIMIT) as bound:
        async with trio.open_nursery() as outer:
            await outer.start(gateway.run)
            try:
                async with open_app(
                    config,
                    clock=clock,
                    supervisor_options={"connect": gateway.memory_connector(),
                                        "rng": random.Random(7)},
                ) as app:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(consume, app, received, clock)
                        inner.start_soon(watch_restarts, app)
                        try:
                            facts = await scenario(app, gateway, received)
                        except (DemoFailed, SupervisorError, SessionNotActive,
                                trio.TooSlowError) as exc:
                            problem = f"{type(exc).__name__}: {exc}"
                        inner.cancel_scope.cancel()
                    history = app.supervisor.history
            finally:
                gateway.stop()
    if bound.cancelled_caught:
        problem = problem or f"the scenario did not finish within {VIRTUAL_LIMIT:g} virtual seconds"

    truth = [r.exec_id for r in gateway.ground_truth(ACCOUNT)]
    got = received.exec_ids()
    lost = set(truth) - set(got)
    unknown = set(got) - set(truth)
    repeated = sum(n - 1 for n in Counter(got).values())
    sources = Counter(i.source for i in received.items if i.exec_id is not None)
    faults = gateway.fault_log.entries
    unplanned = [e for e in history if e.state is ChildState.BACKOFF]

    print("\nSummary")
    print(f"  sessions:             {len(SESSIONS)} "
          f"({', '.join(e for e, _, _ in SESSIONS.values())}), {len(keys)} generated keys")
    print(f"  orders:               {len(facts.get('placed', ()))} placed on KalshiNR, "
          f"1 RFQ traded on KalshiRT ({facts.get('rfq_fills', 0)} execution(s))")
    print(f"  executions delivered: {len(got)} (live {sources['live']}, "
          f"reconciled through drop copy {sources['dropcopy']})")
    print(f"  ground truth:         {len(truth)} at the exchange; "
          f"lost {len(lost)}, repeated {repeated}, unknown {len(unknown)}")
    print(f"  faults survived:      {len(faults)} injected "
          f"({', '.join(sorted({f'{e.kind.value} on {e.endpoint}' for e in faults}))}); "
          f"{len(unplanned)} unplanned session restart(s)")
    if "maintenance" in facts:
        out_at, back_at = facts["maintenance"]
        print(f"  maintenance crossed:  logged out {clock_text(out_at)}, "
              f"back {clock_text(back_at)} New York time")
    else:
        print("  maintenance crossed:  no")
    if gateway.internal_errors:
        print(f"  gateway internal errors: {gateway.internal_errors}")
    ok = (
        problem is None
        and not lost and not unknown and not repeated
        and sources["dropcopy"] > 0
        and "maintenance" in facts
        and not gateway.internal_errors
    )
    if problem is not None:
        print(f"  FAILED: {problem}")
    print("  OK" if ok else "  MISMATCH")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo on an accelerated clock; returns the process exit code."""
    # A hang must end the process with a traceback, not keep a terminal waiting.
    faulthandler.dump_traceback_later(WALL_LIMIT, exit=True, file=sys.__stderr__ or sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="kalshi-fix-demo-") as tmp:
            return trio.run(demo, Path(tmp), clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    sys.exit(main())
