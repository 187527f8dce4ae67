"""RFQ handles end to end: a creator on KalshiRT (account ACCT-1) and a market maker on
KalshiRFQ (account ACCT-2) under one Supervisor — request, broadcast, quote, accept, confirm,
the trade on the executions stream; refusals, cancels, the kill switch and a session that is
down."""

from __future__ import annotations

from decimal import Decimal
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

from supervisor.killswitch import KillSwitchEngaged
from supervisor.observer import SessionNotActive
from supervisor.rfq import RfqRejected

CHILDREN = {
    "orders": Child("KalshiRT", "rt"),  # the creator: RFQs are created on KalshiRT
    "maker": Child("KalshiRFQ", "rfq"),  # another member quoting on KalshiRFQ
    "dropcopy": Child("KalshiDC", "dc"),
}


async def up(rig: Any) -> None:
    for name in CHILDREN:
        await rig.handle(name).wait_active()


async def test_request_quote_accept_confirm_trade(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, children=CHILDREN) as rig:
        await up(rig)
        creator, maker = rig.app.rfq, rig.app.maker
        broadcasts = maker.subscribe()
        rfq = await creator.request(MKT0, 10)
        rfq_id = await rfq.wait_ack()
        assert rfq.state == "open" and rfq.rfq_id == rfq_id and creator.rfq(rfq_id) is rfq

        incoming = await broadcasts.get()
        assert (incoming.rfq_id, incoming.symbol, incoming.qty) == (rfq_id, MKT0, Decimal("10.00"))
        quote = await maker.quote(incoming, yes_bid=40, no_bid=55)  # maker side: cents
        pending = await quote.wait_status("pending")
        assert pending.rfq_id == rfq_id

        notice = await rfq.next_quote(timeout=5)
        assert (notice.yes_bid, notice.no_bid) == (Decimal("0.4000"), Decimal("0.5500"))
        assert notice.quote_id in rfq.quotes
        result = await rfq.accept(notice.quote_id, "buy", cl_ord_id="take-1")
        assert result.accepted and result.cl_ord_id == "take-1"

        accepted = await quote.wait_accepted(timeout=5)
        assert accepted.status == "accepted"
        confirm = await quote.confirm()
        assert confirm.ok

        await trio.sleep(20)  # the execution timer (15 s on a standard market)
        assert await rig.settle()
        fills = [r for r in gw.ground_truth("ACCT-1") if r.exec_type == "F"]
        assert fills and fills[0].cl_ord_id == "take-1"
        assert fills[0].last_px == Decimal("0.45")  # buying Yes takes the No bid: 1 - 0.55
        assert_exactly_once(rig)


async def test_refused_rfq_and_cancels(rigs: RigFactory, autojump_clock: Any) -> None:  # noqa: F811
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, children=CHILDREN) as rig:
        await up(rig)
        creator, maker = rig.app.rfq, rig.app.maker
        bad = await creator.request("NO-SUCH-MARKET", 5)
        with pytest.raises(RfqRejected, match="MARKET_NOT_FOUND"):
            await bad.wait_ack()
        assert bad.state == "rejected"
        with pytest.raises(ValueError, match="exactly one"):
            await creator.request(MKT0, 5, cash_qty=10)

        broadcasts = maker.subscribe()
        withdrawn = maker.withdrawn.subscribe()
        rfq = await creator.request(MKT2, 5)
        await rfq.wait_ack()
        incoming = await broadcasts.get()
        quote = await maker.quote(incoming, no_bid=30)
        await quote.wait_status("pending")
        cancelled = await quote.cancel()
        assert cancelled.ok
        assert (await quote.wait_status("cancelled")).status == "cancelled"

        result = await rfq.cancel()
        assert result.ok and rfq.state == "cancelled"
        assert await withdrawn.get() == rfq.rfq_id


async def test_kill_switch_and_session_down(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, children=CHILDREN) as rig:
        await up(rig)
        creator, maker = rig.app.rfq, rig.app.maker
        broadcasts = maker.subscribe()
        rfq = await creator.request(MKT0, 5)
        await rfq.wait_ack()
        incoming = await broadcasts.get()
        await rig.kill.trip("stop everything")
        with pytest.raises(KillSwitchEngaged):
            await creator.request(MKT2, 5)
        with pytest.raises(KillSwitchEngaged):
            await maker.quote(incoming, yes_bid=40)
        with pytest.raises(KillSwitchEngaged):
            await rfq.accept("any-quote", "buy")
        assert (await rfq.cancel()).ok  # withdrawing is always allowed
        rig.kill.rearm()

        gw.inject("refuse_connections:endpoint=KalshiRT,duration=60")
        gw.inject("drop:endpoint=KalshiRT")
        await trio.sleep(1)
        with pytest.raises(SessionNotActive, match="nothing is queued|not logged on"):
            await creator.request(MKT2, 5)
