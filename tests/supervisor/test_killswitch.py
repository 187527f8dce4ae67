"""KillSwitch: mass cancel on every KalshiNR session, individual cancels on KalshiRT, the gate
that refuses new exposure until re-armed, and sessions that were down when it tripped."""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from test_exactly_once import (
    MKT0,
    MKT2,
    Child,
    RigFactory,
    assert_exactly_once,
    open_rig,
    rigs,  # noqa: F401 - fixture
    running,
)

from supervisor.app import App
from supervisor.killswitch import KillSwitchEngaged, TradingGate

CHILDREN = {
    "orders": Child("KalshiNR", "nr"),
    "rt": Child("KalshiRT", "rt"),
    "dropcopy": Child("KalshiDC", "dc"),
}


def test_gate_closes_once_and_reopens() -> None:
    gate = TradingGate()
    gate.check("new order")
    gate.close("risk limit", now=5.0)
    gate.close("second reason")
    assert not gate.open and gate.reason == "risk limit" and gate.closed_at == 5.0
    with pytest.raises(KillSwitchEngaged, match="new order refused.*risk limit.*cancels still"):
        gate.check("new order")
    gate.reopen()
    gate.check("new order")


async def test_trip_cancels_everywhere_and_blocks_new_orders_until_rearmed(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, children=CHILDREN) as rig:
        oe = rig.order_entry
        for name in CHILDREN:
            await rig.handle(name).wait_active()
        nr_orders = [await oe.new_order(MKT0, "buy", 1, p, session="orders") for p in (44, 45)]
        rt_orders = [await oe.new_order(MKT2, "sell", 1, p, session="rt") for p in (57, 58)]
        assert await rig.settle()
        assert len(gw.exchange.open_orders("ACCT-1")) == 4

        report = await rig.kill.trip("desk limit breached")
        assert report.complete and report.deferred == ()
        by_session = {s.session: s for s in report.sessions}
        assert by_session["orders"].mass_cancel is not None
        assert by_session["orders"].mass_cancel.accepted
        assert len(by_session["rt"].cancels) == 2  # no mass cancel on KalshiRT
        assert not rig.kill.armed
        assert await rig.settle()
        assert gw.exchange.open_orders("ACCT-1") == []
        for t in nr_orders + rt_orders:
            assert oe.order(t.cl_ord_id).ord_status == "4"

        with pytest.raises(KillSwitchEngaged, match="desk limit breached"):
            await oe.new_order(MKT0, "buy", 1, 45)
        with pytest.raises(KillSwitchEngaged):
            await oe.order_group("create", limit=10)
        assert [r.cl_ord_id for r in gw.ground_truth("ACCT-1") if r.exec_type == "0"] == [
            t.cl_ord_id for t in nr_orders + rt_orders
        ]

        rig.kill.rearm()
        assert rig.kill.armed
        t = await oe.new_order(MKT0, "buy", 1, 45)
        assert await rig.settle()
        assert oe.order(t.cl_ord_id).is_open
        assert_exactly_once(rig)


async def test_a_session_down_at_the_trip_is_cancelled_when_it_is_back(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        t = await oe.new_order(MKT0, "buy", 2, 45)
        assert await rig.settle()
        gw.inject("refuse_connections:endpoint=KalshiNR,duration=100")
        gw.inject("drop:endpoint=KalshiNR")
        await trio.sleep(1)
        assert not rig.nr().active
        report = await rig.kill.trip()
        assert report.deferred == ("orders",) and not report.complete
        assert rig.kill.deferred == {"orders"}
        assert len(gw.exchange.open_orders("ACCT-1")) == 1  # resting orders survive a drop
        with pytest.raises(KillSwitchEngaged):
            await oe.new_order(MKT0, "buy", 1, 45)
        assert await rig.settle()  # the session is back: the owed mass cancel went out
        assert rig.kill.deferred == frozenset()
        assert gw.exchange.open_orders("ACCT-1") == []
        assert oe.order(t.cl_ord_id).ord_status == "4"
        assert any(s.session == "orders" and s.done for s in rig.kill.history)


async def test_ambiguous_orders_are_not_retried_while_engaged(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, retry_ambiguous=True) as rig:
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        await rig.kill.trip()
        rig.kill.rearm()
        gw.exchange.fail_next_order("EXCHANGE_UNAVAILABLE", applied=False)
        t = await rig.order_entry.new_order(MKT0, "buy", 1, 45)
        await rig.kill.trip("stop")  # engaged before the drop copy resolved it
        assert await rig.settle()
        (res,) = [e for e in rig.events if getattr(e, "cl_ord_id", None) == t.cl_ord_id]
        assert res.outcome == "not_received" and "kill switch" in res.reason
        assert gw.ground_truth("ACCT-1") == []


def _load_example() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "embedded_app.py"
    spec = importlib.util.spec_from_file_location("embedded_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_embedded_example_trips_the_switch_past_its_position_limit(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    example = _load_example()
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, consume=False) as rig:
        app = App(rig.app, rig.supervisor)
        await app.wait_active()
        resting = await rig.order_entry.new_order(MKT0, "buy", 1, 44)  # cancelled by the trip
        summary = await example.trade(
            app, market=MKT0, side="buy", qty=Decimal(5), price=Decimal(60),
            position_limit=Decimal(3), out=lambda line: None,
        )
        assert summary.tripped and summary.position == 5 and summary.filled == 5
        assert any(line.startswith("KILL") for line in summary.lines)
        assert not rig.kill.armed
        rig.start_consumer()  # the next consumer gets what the example left, nothing twice
        assert await rig.settle()
        assert rig.order_entry.order(resting.cl_ord_id).ord_status == "4"
        later = [str(i.exec_id) for i in rig.received if i.exec_id is not None]
        everything = summary.exec_ids + later
        assert len(everything) == len(set(everything))  # the example acked what it processed
        assert set(everything) == {r.exec_id for r in gw.ground_truth("ACCT-1")}
        with pytest.raises(KillSwitchEngaged):
            await rig.order_entry.new_order(MKT0, "buy", 1, 44)
