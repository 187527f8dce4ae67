"""Crossing the Thursday maintenance window (03:00–05:00 New York) under trio's MockClock."""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from sessions.errors import LogonRejected
from sessions.events import LogoutReason, SessionEnded
from sessions.logon import LogonOptions
from sessions.testing.client import new_order, next_app

UTC = dt.timezone.utc
# Thursday 2026-07-16: EDT, so the window is 07:00–09:00 UTC.
WINDOW_START = dt.datetime(2026, 7, 16, 7, 0, tzinfo=UTC).timestamp()
WINDOW_END = WINDOW_START + 2 * 3600
SKIP_PENDING = LogonOptions(skip_pending_exec_reports=True)


async def sleep_until_epoch(gw, when: float) -> None:
    await trio.sleep(max(0.0, when - gw.clock()))


@pytest.mark.kalshi_gateway(start=WINDOW_START - 600)
async def test_window_logs_out_refuses_and_pauses(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    mkt = gw.markets[0]
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr, \
            gw.connect("KalshiRT", logon=SKIP_PENDING) as rt:
        await nr.wait_logged_on()
        await rt.wait_logged_on()
        # A resting order that asked to be cancelled on a pause, and one that did not.
        nr.send_app("D", new_order("pause-me", mkt, 1, 1, 30, t21006="Y"))
        nr.send_app("D", new_order("keep-me", mkt, 1, 1, 31))
        assert [(await next_app(nr, [b"8"])).get(150) for _ in range(2)] == [b"0", b"0"]
        rt_seq_before = rt.connection.next_target_seq
        cancelled = await next_app(nr, [b"8"])  # at 03:00 ET
        assert (cancelled.get(11), cancelled.get(150), cancelled.get(58)) == (
            b"pause-me", b"4", b"TRADING_PAUSED"
        )
        assert gw.clock() == pytest.approx(WINDOW_START, abs=1)
        for session in (nr, rt):
            events = [e async for e in session.events()]
            ended = events[-1]
            assert isinstance(ended, SessionEnded) and ended.initiated_by == "peer"
            assert ended.reason is LogoutReason.MAINTENANCE
    assert gw.gateway.in_maintenance()
    # Logons are refused for as long as the window lasts.
    await sleep_until_epoch(gw, WINDOW_START + 3600)
    async with gw.connect("KalshiNR") as nr:
        with pytest.raises(LogonRejected) as info:
            await nr.wait_logged_on()
    assert info.value.reason == LogoutReason.MAINTENANCE.value
    assert [o.cl_ord_id for o in gw.exchange.open_orders("ACCT-1")] == ["keep-me"]
    # After 05:00 ET: trading resumes; KalshiRT continues its sequence (REFERENCE §1.6, §11 #4)
    # while NR starts again at 1 (141=Y is mandatory there).
    await sleep_until_epoch(gw, WINDOW_END + 1)
    assert not gw.gateway.in_maintenance()
    async with gw.connect("KalshiRT", logon=SKIP_PENDING) as rt, \
            gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        rt_logged = await rt.wait_logged_on()
        nr_logged = await nr.wait_logged_on()
        assert not rt_logged.reset_seq_num and rt_logged.next_sender_seq > 2
        assert rt.connection.next_target_seq > rt_seq_before
        assert nr_logged.reset_seq_num and nr_logged.next_sender_seq == 2
        nr.send_app("D", new_order("after", mkt, 1, 1, 60))
        assert (await next_app(nr, [b"8"])).get(150) == b"F"


@pytest.mark.kalshi_gateway(start=WINDOW_START - 60, reset_after_maintenance=True)
async def test_older_reading_demands_a_reset_after_the_window(
    kalshi_gateway, autojump_clock
) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiRT") as rt:
        await rt.wait_logged_on()
        [e async for e in rt.events()]  # logged out at 03:00 ET
    await sleep_until_epoch(gw, WINDOW_END + 1)
    async with gw.connect("KalshiRT") as rt:
        with pytest.raises(LogonRejected) as info:
            await rt.wait_logged_on()
    assert info.value.reason == LogoutReason.RESET_REQUIRED.value
    async with gw.connect("KalshiRT", reset_seq_num_on_logon=True) as rt:
        logged = await rt.wait_logged_on()
        assert logged.reset_seq_num


async def test_ad_hoc_window(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    now = gw.clock()
    gw.gateway.set_maintenance(gw.gateway.config.maintenance.with_window(now + 10, now + 20))
    async with gw.connect("KalshiNR") as nr:
        await nr.wait_logged_on()
        events = [e async for e in nr.events()]
        assert events[-1].reason is LogoutReason.MAINTENANCE
        assert gw.clock() == pytest.approx(now + 10, abs=0.01)
    await sleep_until_epoch(gw, now + 20)
    async with gw.connect("KalshiNR") as nr:
        await nr.wait_logged_on()
