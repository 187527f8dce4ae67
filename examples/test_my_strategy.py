"""Testing your own strategy against the simulated Kalshi gateway.

The ``kalshi_gateway`` fixture comes with kalshi-fix-supervisor (a pytest plugin); pytest-trio in
trio mode runs the async tests (``trio_mode = true`` in your pytest configuration, or run this
file with ``pytest -o trio_mode=true examples/test_my_strategy.py``). ``autojump_clock`` makes
every wait (heartbeats, back-off, timers) take no real time.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from my_strategy import Accumulator


def accumulator(gw, target: int) -> Accumulator:
    return Accumulator(
        order_entry=gw.session_config("KalshiNR"),  # key "nr" of account ACCT-1
        drop_copy=gw.session_config("KalshiDC"),  # key "dc", same account
        ticker=gw.markets[0],
        target=target,
        limit_cents=62,
        clock=gw.clock,  # SendingTime must agree with the gateway's clock (30 s rule)
    )


async def test_buys_exactly_the_target(kalshi_gateway, autojump_clock) -> None:
    strategy = accumulator(kalshi_gateway, 5)
    await strategy.run()
    assert strategy.position == 5
    assert kalshi_gateway.exchange.position("ACCT-1", kalshi_gateway.markets[0]) == 5


async def test_survives_a_dropped_connection(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    # Cut the order-entry connection right after the gateway's 2nd message to it (the Logon
    # answer, then the first order's pending-new report): the fill report written right behind
    # it is lost, although the exchange did fill the order.
    gw.inject("drop:endpoint=KalshiNR,after=2")
    strategy = accumulator(gw, 5)
    await strategy.run()

    assert strategy.reconnects == 1
    assert strategy.orders_sent == 5  # the lost fill was found, not bought again
    assert [entry.kind.value for entry in gw.fault_log] == ["drop"]
    # The drop copy filled the gap: what the strategy believes is what happened.
    truth = [r for r in gw.ground_truth("ACCT-1") if r.exec_type == "F"]
    assert {r.exec_id: r.last_qty for r in truth} == strategy.fills
    assert gw.exchange.position("ACCT-1", gw.markets[0]) == Decimal(5)


@pytest.mark.kalshi_gateway(faults=["reject_logon:endpoint=KalshiNR,text=already exists"])
async def test_retries_a_refused_logon(kalshi_gateway, autojump_clock) -> None:
    strategy = accumulator(kalshi_gateway, 2)
    await strategy.run()
    assert strategy.position == 2 and strategy.reconnects == 1
