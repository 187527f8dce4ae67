"""An embedded trading application on the supervisor's components.

    python examples/embedded_app.py firm.toml --market KXHIGHNY-26JUL14-B85 --qty 5 --price 41

``firm.toml`` holds the ``[session.NAME]`` tables (a KalshiNR session for orders and a KalshiDC
session for reconciliation, each with its own API key) and the ``[supervisor]`` table; against
the simulated gateway (``kalshi-fix gateway --config examples/gateway.toml``) point the sessions
at its ports. What it shows:

* :func:`supervisor.app.open_app` runs the supervision tree with every component;
* status events, order events (ambiguous orders resolved through the drop copy) and
  reconciliation alerts are printed as they happen;
* one limit order is placed once the order-entry session is logged on — a request while it is
  down raises ``SessionNotActive`` (nothing is queued), so the application waits and tries again;
* executions are consumed from the exactly-once stream: asking for the next one acknowledges the
  previous one, so if this process dies mid-way, the execution being processed is delivered again
  after the restart and none that was processed is;
* a position limit trips the kill switch (mass cancel on every order-entry session, then no new
  orders until someone re-arms it).

:func:`trade` is the application proper; :func:`main` only wires it to a config file and Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from decimal import Decimal

import attrs
import trio

from supervisor.app import App, open_app
from supervisor.killswitch import KillSwitchEngaged
from supervisor.observer import SessionNotActive
from supervisor.streams import ExecutionIterator

# OrdStatus values after which an order no longer trades.
_CLOSED = (b"2", b"4", b"8", b"C")


@attrs.define
class Summary:
    """What :func:`trade` did."""

    cl_ord_id: str | None = None
    executions: int = 0
    filled: Decimal = Decimal(0)
    position: Decimal = Decimal(0)
    tripped: bool = False
    #: ExecIDs of the executions processed (real ones; pending reports and rejects have none).
    exec_ids: list[str] = attrs.Factory(list)
    lines: list[str] = attrs.Factory(list)


async def trade(
    app: App,
    *,
    market: str,
    side: str,
    qty: Decimal,
    price: Decimal,
    position_limit: Decimal,
    until_filled: bool = True,
    out: Callable[[str], None] = print,
) -> Summary:
    """Place one order, follow its executions, trip the kill switch past ``position_limit``.

    Returns once the order is filled (``until_filled``) or closed otherwise, or the switch
    tripped; the caller decides how long to wait (a cancel scope)."""
    summary = Summary()

    def say(line: str) -> None:
        summary.lines.append(line)
        out(line)

    async with trio.open_nursery() as nursery:

        async def show_status() -> None:
            with app.status.subscribe() as events:
                async for e in events:
                    say(f"status  {e.name:<10} {e.state.value:<11} {e.detail}")

        async def show_order_events() -> None:
            with app.orders.subscribe() as events:
                async for e in events:
                    say(f"orders  {type(e).__name__}: {e}")

        async def show_alerts() -> None:
            recovery = app.components.recovery
            if recovery is None:
                return
            with recovery.alerts.subscribe() as alerts:
                async for a in alerts:
                    say(f"ALERT   {a.message}")

        for task in (show_status, show_order_events, show_alerts):
            nursery.start_soon(task)

        # Place the order; while the session is down, wait for it (never queued behind our back).
        while summary.cl_ord_id is None:
            try:
                ticket = await app.orders.new_order(market, side, qty, price)
            except SessionNotActive as e:
                say(f"waiting: {e}")
                await app.orders.handles[app.orders.trading_sessions()[0]].wait_active()
                continue
            summary.cl_ord_id = ticket.cl_ord_id
            say(f"sent    {ticket.msg_type} {ticket.cl_ord_id} on {ticket.session}")

        # One consumer at a time; each ask acknowledges the previous execution.
        async with app.executions.executions() as executions:
            await _follow(app, executions, summary, say, qty=qty, position_limit=position_limit,
                          until_filled=until_filled)
        nursery.cancel_scope.cancel()
    return summary


async def _follow(
    app: App,
    executions: ExecutionIterator,
    summary: Summary,
    say: Callable[[str], None],
    *,
    qty: Decimal,
    position_limit: Decimal,
    until_filled: bool,
) -> None:
    assert summary.cl_ord_id is not None
    async for item in executions:
        msg = item.message
        summary.executions += 1
        if item.exec_id is not None:
            summary.exec_ids.append(str(item.exec_id))
        last_qty = msg.get_decimal(32) or Decimal(0)
        if item.exec_id is not None and msg.get(150) == b"F":
            signed = last_qty if msg.get(54) == b"1" else -last_qty
            summary.position += signed
            if msg.get_str(11) in _chain(app, summary.cl_ord_id):
                summary.filled += last_qty
        say(
            f"exec    {item.exec_id or item.key} {msg.get_str(150)}/{msg.get_str(39)} "
            f"last {last_qty} from {item.source}{' (late)' if item.late else ''}"
        )
        if abs(summary.position) > position_limit and not summary.tripped:
            report = await app.kill_switch.trip(
                f"position {summary.position} beyond the limit {position_limit}"
            )
            summary.tripped = True
            say(f"KILL    {report.reason}: complete={report.complete}")
            executions.ack()
            return
        # Decide on what this stream delivered, not on the tracker: the tracker is already
        # up to date with reports the stream has not handed out yet.
        ours = msg.get_str(11) in _chain(app, summary.cl_ord_id)
        if (ours and msg.get(39) in _CLOSED) or (until_filled and summary.filled >= qty):
            executions.ack()  # processed: not to be delivered again after we stop
            return


def _chain(app: App, cl_ord_id: str) -> tuple[str, ...]:
    state = app.orders.order(cl_ord_id)
    return state.cl_ord_ids if state is not None else (cl_ord_id,)


async def run(args: argparse.Namespace) -> int:
    async with open_app(args.config, indexes=tuple(args.index)) as app:
        try:
            summary = await trade(
                app,
                market=args.market,
                side=args.side,
                qty=Decimal(args.qty),
                price=Decimal(args.price),
                position_limit=Decimal(args.position_limit),
            )
        except KillSwitchEngaged as e:
            print(e, file=sys.stderr)
            return 1
    print(f"done: {summary.executions} executions, filled {summary.filled}, "
          f"position {summary.position}, kill switch {'tripped' if summary.tripped else 'armed'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="TOML file with [session.*] and [supervisor]")
    parser.add_argument("--market", required=True)
    parser.add_argument("--side", default="buy", choices=("buy", "sell"))
    parser.add_argument("--qty", default="1")
    parser.add_argument("--price", required=True, help="cents (dollars with UseDollars)")
    parser.add_argument("--position-limit", default="100")
    parser.add_argument("--index", type=int, action="append", default=[0],
                        help="exchange index traded on (repeat; the drop copy replays each)")
    args = parser.parse_args(argv)
    try:
        return trio.run(run, args)
    except KeyboardInterrupt:  # the supervisor logged every session out on the way
        return 130


if __name__ == "__main__":
    sys.exit(main())
