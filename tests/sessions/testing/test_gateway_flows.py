"""Each message family through the simulated gateway, end to end, with clients built on the
session engine: order entry and listeners (NR/RT), retention and resend (RT), drop copy (DC),
settlement reports (PT) and the RFQ lifecycle (RT + RFQ)."""

from __future__ import annotations

import trio

from sessions.events import (
    ApplicationMessage,
    RejectReceived,
    SequenceResetReceived,
    TestResponse,
)
from sessions.logon import LogonOptions
from sessions.message import FixMessage
from sessions.testing.client import collect, new_order, next_app, wait_event
from sessions.testing.exchange import LogonFlags, render_execution_report
from sessions.testing.gateway import _ROUTE_CHUNK

SKIP_PENDING = LogonOptions(skip_pending_exec_reports=True)


def f(msg: FixMessage) -> dict[int, str]:
    out: dict[int, str] = {}
    for t, v in msg.pairs:
        out.setdefault(t, v.decode("latin-1"))
    return out


async def test_order_entry_cancel_and_listener_copies(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    mkt = gw.markets[0]
    listener_opts = LogonOptions(listener_session=True, skip_pending_exec_reports=True)
    async with gw.connect("KalshiRT", "listener", logon=listener_opts) as listener, \
            gw.connect("KalshiNR", "nr") as nr:
        await listener.wait_logged_on()
        await nr.wait_logged_on()
        # Marketable: buys the 10 offered at 60 (pending report first: 21011 not set).
        nr.send_app("D", new_order("buy-1", mkt, 1, 4, 60))
        pending, fill = [f(m) for m in await collect(nr, 2, [b"8"])]
        assert (pending[150], pending[17]) == ("A", "-1;-1")
        assert (fill[150], fill[39], fill[31], fill[32], fill[11]) == ("F", "2", "60", "4.00", "buy-1")
        # Resting, then cancelled.
        nr.send_app("D", new_order("bid-1", mkt, 1, 3, 30))
        assert [f(m)[150] for m in await collect(nr, 2, [b"8"])] == ["A", "0"]
        nr.send_app("F", [(11, "cxl-1"), (41, "bid-1"), (54, 1), (55, mkt)])
        pending_cxl, cancelled = [f(m) for m in await collect(nr, 2, [b"8"])]
        assert (pending_cxl[150], cancelled[150], cancelled[39]) == ("6", "4", "4")
        assert (cancelled[11], cancelled[41]) == ("cxl-1", "bid-1")
        # The listener saw the same account activity, without pending reports.
        copies = [f(m) for m in await collect(listener, 3, [b"8"])]
        assert [(c[11], c[150]) for c in copies] == [("buy-1", "F"), ("bid-1", "0"), ("cxl-1", "4")]
        # A listener may not trade: BusinessMessageReject 380=6.
        listener.send_app("D", new_order("nope", mkt, 1, 1, 50))
        bmr = f(await next_app(listener, [b"j"]))
        assert (bmr[380], bmr[372]) == ("6", "D")
    truth = gw.ground_truth("ACCT-1")
    assert [(r.cl_ord_id, r.exec_type) for r in truth] == [
        ("buy-1", "F"), ("bid-1", "0"), ("cxl-1", "4")
    ]


async def test_session_level_rejects_for_bad_application_messages(
    kalshi_gateway, autojump_clock
) -> None:
    gw = kalshi_gateway
    mkt = gw.markets[0]
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        # Undefined tag: the documented example (REFERENCE §3.4).
        seq = nr.send_app("D", [*new_order("c1", mkt, 1, 1, 30), (333333, "x")])
        rej = await wait_event(nr, RejectReceived)
        assert (rej.ref_seq_num, rej.reason, rej.ref_tag, rej.ref_msg_type) == (seq, 3, 333333, b"D")
        assert rej.text == "Undefined tag received"
        # Wrong data type.
        seq = nr.send_app("D", new_order("c2", mkt, 1, "ten", 30))
        rej = await wait_event(nr, RejectReceived)
        assert (rej.ref_seq_num, rej.reason, rej.ref_tag) == (seq, 6, 38)
        # A MsgType this endpoint does not take (U1 belongs to KalshiDC): 373=11.
        seq = nr.send_app("U1", [(21001, "1;1")])
        rej = await wait_event(nr, RejectReceived)
        assert (rej.ref_seq_num, rej.reason) == (seq, 11)
        # The session carries on.
        nr.send_app("D", new_order("c3", mkt, 1, 1, 30))
        assert f(await next_app(nr, [b"8"]))[11] == "c3"


async def test_rt_resends_what_a_drop_lost(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    mkt = gw.markets[0]
    async with gw.connect("KalshiRT") as rt:
        await rt.wait_logged_on()
        # The gateway writes the pending report, then the connection drops: the fill is kept
        # in the gateway's store but never reaches the client.
        gw.inject("drop:endpoint=KalshiRT,after=1")
        rt.send_app("D", new_order("buy-1", mkt, 1, 2, 60))
        first = f(await next_app(rt, [b"8"]))
        assert first[150] == "A"
        async for _ in rt.events():
            pass
        assert rt.ended is not None and rt.ended.initiated_by == "transport"
    assert gw.fault_log.of_kind(gw.fault_log.entries[0].kind)[0].endpoint == "KalshiRT"
    # Reconnect with continuity (RT default: 141=N, stored sequence numbers).
    async with gw.connect("KalshiRT") as rt:
        logged = await rt.wait_logged_on()
        assert not logged.reset_seq_num
        resent = None
        gap_filled = False
        while resent is None:
            event = await rt.next_event()
            if isinstance(event, SequenceResetReceived) and event.gap_fill:
                gap_filled = True
            if isinstance(event, ApplicationMessage):
                resent = event
        assert resent.poss_dup and resent.message.get(122) is not None
        assert f(resent.message)[150] == "F" and f(resent.message)[11] == "buy-1"
        # The gateway's own Logon (an admin message) was gap-filled, not resent.
        await rt.test_request(timeout=5)
        assert gap_filled or rt.connection.next_target_seq > resent.seq_num


async def test_drop_copy_replay_and_rejects(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    mkt = gw.markets[0]
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        for i, price in enumerate((60, 62)):
            nr.send_app("D", new_order(f"buy-{i}", mkt, 1, 2, price))
            await next_app(nr, [b"8"])
    truth = gw.ground_truth("ACCT-1")
    ids = [r.exec_id for r in truth]
    assert len(ids) == 2
    async with gw.connect("KalshiDC") as dc:
        await dc.wait_logged_on()
        seq = dc.send_app("U1", [(21001, ids[0])])
        replay = [f(m) for m in await collect(dc, 3)]
        assert [m[17] for m in replay[:2]] == ids
        assert replay[2] == {**replay[2], 45: str(seq), 21003: "2"}
        assert [m.get(35) for m in replay] is not None
        # Too soon after the last request: U3 reason 1.
        dc.send_app("U1", [(21001, ids[0])])
        assert f(await next_app(dc, [b"U3"]))[21004] == "1"
        await trio.sleep(2)
        dc.send_app("U1", [(21001, ids[0]), (21002, "999;999")])
        assert f(await next_app(dc, [b"U3"]))[21004] == "4"
        await trio.sleep(2)
        gw.exchange.fail_next_drop_copy()
        dc.send_app("U1", [(21001, ids[0])])
        assert f(await next_app(dc, [b"U3"]))[21004] == "2"


async def test_drop_copy_replay_longer_than_one_chunk(kalshi_gateway, autojump_clock) -> None:
    # The gateway sends a long replay in chunks (_ROUTE_CHUNK reports each); what arrives must
    # be what one piece would have been: every report, in ExecID order, as the ground truth
    # renders it, and the U2 counting them last.
    gw = kalshi_gateway
    mkt = gw.markets[0]
    count = 2 * _ROUTE_CHUNK + 7
    gw.exchange.set_tier("ACCT-1", "Prestige")  # a burst of `count` orders within the budget
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        for i in range(count):
            nr.send_app("D", new_order(f"bid-{i}", mkt, 1, 1, 30))  # rests: one 150=0 each
        acks = await collect(nr, count, [b"8"])
        assert [f(m)[150] for m in acks] == ["0"] * count
    truth = gw.ground_truth("ACCT-1")
    assert len(truth) == count
    header = {8, 9, 10, 34, 35, 49, 52, 56}
    async with gw.connect("KalshiDC") as dc:
        await dc.wait_logged_on()
        seq = dc.send_app("U1", [(21001, truth[0].exec_id)])
        replay = await collect(dc, count + 1)
    assert [m.msg_type for m in replay] == [b"8"] * count + [b"U2"]
    bodies = [tuple((t, v) for t, v in m.pairs if t not in header) for m in replay[:count]]
    assert bodies == [render_execution_report(r, LogonFlags()) for r in truth]
    assert f(replay[-1]) == {**f(replay[-1]), 45: str(seq), 21003: str(count)}


async def test_settlement_reports_on_pt(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    mkt = gw.markets[0]
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        nr.send_app("D", new_order("buy-1", mkt, 1, 5, 60))
        assert f(await next_app(nr, [b"8"]))[150] == "F"
    async with gw.connect("KalshiPT") as pt:
        await pt.wait_logged_on()
        gw.settle(mkt, "yes")
        ums = f(await next_app(pt, [b"UMS"]))
        assert (ums[55], ums[20107], ums[730], ums[893]) == (mkt, "yes", "100.00", "Y")
        assert (ums[20109], ums[704], ums[1704], ums[1705]) == ("ACCT-1", "5.00", "5.00", "PAYOUT")


async def test_rfq_lifecycle(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    mkt = gw.markets[0]
    async with gw.connect("KalshiRT", logon=SKIP_PENDING) as creator, \
            gw.connect("KalshiRFQ") as maker_rfq, \
            gw.connect("KalshiNR", "maker", logon=SKIP_PENDING) as maker_nr:
        for s in (creator, maker_rfq, maker_nr):
            await s.wait_logged_on()
        creator.send_app("R", [(131, "req-1"), (146, 1), (55, mkt), (38, 10)])
        ack = f(await next_app(creator, [b"b"]))
        rfq_id = ack[21023]
        broadcast = f(await next_app(maker_rfq, [b"R"]))
        assert (broadcast[131], broadcast[55], broadcast[38]) == (rfq_id, mkt, "10.00")
        maker_rfq.send_app("S", [(117, "q1"), (131, rfq_id), (55, mkt), (132, 40), (133, 55)])
        assert f(await next_app(maker_rfq, [b"AI"]))[297] == "10"  # pending
        note = f(await next_app(creator, [b"S"]))
        assert (note[132], note[133]) == ("0.4000", "0.5500")
        creator.send_app("UA", [(117, note[117]), (21023, rfq_id), (54, 1), (11, "acc-1")])
        assert f(await next_app(creator, [b"UC"]))[21025] == "0"
        assert f(await next_app(maker_rfq, [b"AI"]))[297] == "0"  # accepted
        maker_rfq.send_app("U7", [(117, "q1"), (21023, rfq_id)])
        assert f(await next_app(maker_rfq, [b"U8"]))[21010] == "0"
        # The execution timer (15 s) runs on the gateway's clock.
        fill = f(await next_app(creator, [b"8"]))
        assert (fill[150], fill[11], fill[31], fill[32]) == ("F", "acc-1", "45", "10.00")
        maker_fill = f(await next_app(maker_nr, [b"8"]))
        assert (maker_fill[11], maker_fill[54]) == ("q1", "2")
    assert [r.exec_type for r in gw.ground_truth("ACCT-2")] == ["F"]


async def test_rt_retention_period_limits_the_resend(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    one_hour = LogonOptions(message_retention_period=1)
    async with gw.connect("KalshiRT", logon=one_hour) as rt:
        await rt.wait_logged_on()
        gw.inject("drop:endpoint=KalshiRT,after=1")
        rt.send_app("D", new_order("buy-1", gw.markets[0], 1, 2, 60))
        await next_app(rt, [b"8"])  # the pending report; the fill is lost with the connection
        [e async for e in rt.events()]
    await trio.sleep(2 * 3600)  # longer than the retention period asked for (20200=1)
    async with gw.connect("KalshiRT", logon=one_hour) as rt:
        await rt.wait_logged_on()
        # The answer to a TestRequest comes after the resend the Logon triggered; every event
        # up to it is queued.
        await rt.test_request(timeout=5)
        events: list = []
        while not events or not isinstance(events[-1], TestResponse):
            events.append(await rt.next_event())
    # The fill aged out of the gateway's store: gap-filled, never resent.
    assert not [e for e in events if isinstance(e, ApplicationMessage)]
    assert any(isinstance(e, SequenceResetReceived) and e.gap_fill for e in events)
    assert [r.exec_type for r in gw.ground_truth("ACCT-1")] == ["F"]


async def test_in_memory_connection(kalshi_gateway, autojump_clock) -> None:
    from sessions.connection import FixConnection
    from sessions.driver import build_settings, open_fix_session
    from sessions.store import MemoryStore

    gw = kalshi_gateway
    key = gw.key("nr")
    settings = build_settings(gw.session_config("KalshiNR"), key.signer.sign)
    stream = gw.gateway.connect_memory("KalshiNR")
    async with open_fix_session(stream, FixConnection(settings, MemoryStore()), clock=gw.clock) as s:
        await s.wait_logged_on()
        await s.test_request(timeout=5)
    assert gw.gateway.connections[-1].key_id == key.key_id
