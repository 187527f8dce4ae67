"""An OrderCancelRequest (35=F) or OrderCancelReplaceRequest (35=G) in flight at a disconnect,
through the Supervisor against the simulated gateway under the autojump clock.

The promise under test: a request whose outcome is unknown is resolved through the drop copy by
its ClOrdID before anything is resent; a retry reuses the same ClOrdID; one application request
never has two effects at the exchange; every execution is delivered exactly once.

For F and G each:

* (a) the request reached the exchange, its answers were lost (garbled) and the connection
  dropped: resolved ``known`` from the replay, the tracker shows the cancel / the replace (new
  price, quantity and ClOrdID chain), and nothing is sent again;
* (b) the request never reached the exchange (the gateway stopped reading): resolved per
  ``retry_ambiguous`` — resent once with the same ClOrdID, or ``not_received`` — and the
  exchange applied it exactly once, or not at all;
* (c) a fill of the original order races with the lost request: the fill is delivered once and
  the cumulative quantity is right, whichever of the two the exchange saw first.

What reached the exchange is read at the exchange itself (:func:`spy_arrivals`), not from the
client's side.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import trio
from test_exactly_once import (
    ACCOUNT,
    MKT0,
    Child,
    RigFactory,
    assert_exactly_once,
    assert_one_order_per_request,
    assert_tracker_matches,
    open_rig,
    rigs,  # noqa: F401 - fixture
    running,
)
from test_orderentry import resolutions, wait_for

from sessions.testing.faults import FaultKind

# Heartbeats of 10 s: an endless stall is noticed (test request unanswered) and the session
# reconnects within a minute of MockClock time.
STALL_CHILDREN = {
    "orders": Child("KalshiNR", "nr", heartbeat=10),
    "dropcopy": Child("KalshiDC", "dc"),
}


class Arrivals:
    """What the exchange itself received (MsgType, ClOrdID) and the cancel rejects (35=9) it
    answered with, in order."""

    def __init__(self, gw: Any) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.cancel_rejects: list[tuple[str, str]] = []
        real = gw.exchange.handle

        def handle(key_id: str, msg: Any, seq_num: int, now: float) -> Any:
            self.requests.append(((msg.msg_type or b"").decode(), msg.get_str(11)))
            out = real(key_id, msg, seq_num, now)
            for o in out:
                if o.msg_type == b"9":
                    self.cancel_rejects.append(
                        ((o.get(11) or b"").decode(), (o.get(58) or b"").decode())
                    )
            return out

        gw.exchange.handle = handle

    def count(self, msg_type: str, cl: str) -> int:
        return self.requests.count((msg_type, cl))


def spy_arrivals(gw: Any) -> Arrivals:
    return Arrivals(gw)


def effects(gw: Any, cl: str, exec_type: str) -> list[Any]:
    """The exchange's real reports of ``exec_type`` carrying ClOrdID ``cl``."""
    return [r for r in gw.ground_truth(ACCOUNT) if r.cl_ord_id == cl and r.exec_type == exec_type]


async def resting_order(rig: Any, qty: int = 5, price: int = 45) -> str:
    t = await rig.order_entry.new_order(MKT0, "buy", qty, price)
    await rig.settle()
    state = rig.order_entry.order(t.cl_ord_id)
    assert state.ord_status == "0" and state.is_open and state.order_id is not None
    return str(t.cl_ord_id)


async def lose_answers_then_drop(rig: Any, gw: Any, send: Any, *, count: int,
                                 before: Any = None) -> str:
    """Garble the next ``count`` messages to the client (``before()`` runs once that is armed,
    e.g. a fill whose report is among them), send the request, see it in flight, drop the
    connection. Returns the request's ClOrdID."""
    gw.inject(f"garble:endpoint=KalshiNR,variant=truncated,count={count}")
    if before is not None:
        before()
    ticket = await send()
    await trio.sleep(0.5)
    # Its answers never arrived: still in flight (not pending, not answered).
    assert ticket.cl_ord_id in rig.order_entry.order(ticket.cl_ord_id).in_flight
    gw.inject("drop:endpoint=KalshiNR")
    await wait_for(lambda: resolutions(rig, ticket.cl_ord_id), rig=rig)
    await rig.settle()
    return str(ticket.cl_ord_id)


async def stall_order_entry(rig: Any, gw: Any) -> None:
    """The gateway stops reading the KalshiNR connection for good (an endless stall drains
    and discards what comes): what is sent next never reaches the exchange. As in
    ``order_that_never_lands``."""
    gw.inject("stall:endpoint=KalshiNR")
    await wait_for(lambda: gw.fault_log.of_kind(FaultKind.STALL))
    # A read the gateway had already begun completes normally: a harmless message (a reset of
    # an unknown order group) takes it, so the request meets the stall.
    rig.nr().send_app("UOG", [(20131, 2), (20130, str(uuid.uuid4()))])
    await trio.sleep(0.1)


def delivered(rig: Any, exec_id: str) -> list[str]:
    """The sources the application received execution ``exec_id`` from (once each time)."""
    return [i.source for i in rig.received if i.exec_id is not None and str(i.exec_id) == exec_id]


def check_invariants(rig: Any) -> None:
    assert_exactly_once(rig)
    assert_one_order_per_request(rig)
    assert_tracker_matches(rig)
    assert rig.order_entry.tracker.ambiguous() == []


# ----------------------------------------------------------------------------- (a) arrived


@pytest.mark.parametrize("retry", [True, False])
async def test_cancel_in_flight_arrived_answers_lost_is_known_not_resent(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, retry_ambiguous=retry) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig)
        arrivals = spy_arrivals(gw)
        # The pending cancel and the cancel itself are lost, then the connection.
        cl = await lose_answers_then_drop(rig, gw, lambda: oe.cancel(orig), count=2)
        (res,) = resolutions(rig, cl)
        assert res.outcome == "known" and res.msg_type == "F"
        state = oe.order(orig)
        assert state.ord_status == "4" and not state.is_open and state.ambiguous is None
        assert state.cl_ord_id == cl and state.cl_ord_ids == (orig, cl)
        assert oe.order(cl) == state and oe.open_orders() == []
        # The exchange saw the cancel once and cancelled once; nothing was sent again.
        assert arrivals.count("F", cl) == 1 and arrivals.cancel_rejects == []
        assert [(r.orig_cl_ord_id, r.cl_ord_id) for r in effects(gw, cl, "4")] == [(orig, cl)]
        assert gw.exchange.open_orders(ACCOUNT) == []
        check_invariants(rig)


@pytest.mark.parametrize("retry", [True, False])
async def test_replace_in_flight_arrived_answers_lost_is_known_not_resent(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, retry_ambiguous=retry) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig, qty=5, price=45)
        arrivals = spy_arrivals(gw)
        # The pending replace and the replace itself are lost, then the connection.
        cl = await lose_answers_then_drop(
            rig, gw, lambda: oe.replace(orig, qty=7, price=47), count=2
        )
        (res,) = resolutions(rig, cl)
        assert res.outcome == "known" and res.msg_type == "G"
        state = oe.order(orig)
        assert state.cl_ord_id == cl and state.cl_ord_ids == (orig, cl)
        assert (state.price, state.order_qty, state.cum_qty) == (47, 7, 0)
        assert state.ord_status == "0" and state.is_open and state.ambiguous is None
        assert state.in_flight == ()
        assert arrivals.count("G", cl) == 1 and arrivals.cancel_rejects == []
        (replaced,) = effects(gw, cl, "5")
        assert replaced.orig_cl_ord_id == orig and replaced.order_qty == 7
        (live,) = gw.exchange.open_orders(ACCOUNT)
        assert live.cl_ord_id == cl and live.order_id == state.order_id
        # The chain is usable: a cancel names the order by its first ClOrdID and goes out
        # under the replace's, which the exchange knows.
        c = await oe.cancel(orig)
        await rig.settle()
        assert [r.orig_cl_ord_id for r in effects(gw, c.cl_ord_id, "4")] == [cl]
        assert not oe.order(orig).is_open
        check_invariants(rig)


# ----------------------------------------------------------------------------- (b) never arrived


@pytest.mark.parametrize("retry", [True, False])
async def test_cancel_in_flight_never_arrived_resent_once_or_not_received(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(
        gw, rigs.keys, rigs.tmp_path, children=STALL_CHILDREN, retry_ambiguous=retry
    ) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig)
        arrivals = spy_arrivals(gw)
        await stall_order_entry(rig, gw)
        c = await oe.cancel(orig)
        assert arrivals.count("F", c.cl_ord_id) == 0
        await wait_for(lambda: resolutions(rig, c.cl_ord_id), rig=rig)
        await rig.settle()
        (res,) = resolutions(rig, c.cl_ord_id)
        assert res.msg_type == "F"
        state = oe.order(orig)
        if retry:
            assert res.outcome == "resent"
            # Sent again with the same ClOrdID, once; the exchange cancelled once.
            assert arrivals.count("F", c.cl_ord_id) == 1 and arrivals.cancel_rejects == []
            assert len(effects(gw, c.cl_ord_id, "4")) == 1
            assert state.ord_status == "4" and not state.is_open
            assert state.cl_ord_id == c.cl_ord_id
            assert gw.exchange.open_orders(ACCOUNT) == []
        else:
            assert res.outcome == "not_received" and "retry_ambiguous is off" in res.reason
            assert arrivals.count("F", c.cl_ord_id) == 0
            assert [r for r in gw.ground_truth(ACCOUNT) if r.exec_type == "4"] == []
            # The order is untouched and open; the application decides (a new cancel).
            assert state.ord_status == "0" and state.is_open and state.ambiguous is None
            assert state.cl_ord_id == orig and state.in_flight == ()
            assert [o.cl_ord_id for o in gw.exchange.open_orders(ACCOUNT)] == [orig]
            again = await oe.cancel(orig)
            await rig.settle()
            assert len(effects(gw, again.cl_ord_id, "4")) == 1
            assert not oe.order(orig).is_open
        # One cancel effect on the order in all.
        assert len([r for r in gw.ground_truth(ACCOUNT) if r.exec_type == "4"]) == 1
        check_invariants(rig)


@pytest.mark.parametrize("retry", [True, False])
async def test_replace_in_flight_never_arrived_resent_once_or_not_received(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(
        gw, rigs.keys, rigs.tmp_path, children=STALL_CHILDREN, retry_ambiguous=retry
    ) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig, qty=5, price=45)
        arrivals = spy_arrivals(gw)
        await stall_order_entry(rig, gw)
        r = await oe.replace(orig, qty=8, price=47)
        assert arrivals.count("G", r.cl_ord_id) == 0
        await wait_for(lambda: resolutions(rig, r.cl_ord_id), rig=rig)
        await rig.settle()
        (res,) = resolutions(rig, r.cl_ord_id)
        assert res.msg_type == "G"
        state = oe.order(orig)
        (live,) = gw.exchange.open_orders(ACCOUNT)
        assert live.order_id == state.order_id and state.is_open and state.ambiguous is None
        if retry:
            assert res.outcome == "resent"
            assert arrivals.count("G", r.cl_ord_id) == 1 and arrivals.cancel_rejects == []
            (replaced,) = effects(gw, r.cl_ord_id, "5")
            assert replaced.orig_cl_ord_id == orig
            assert state.cl_ord_id == r.cl_ord_id and state.cl_ord_ids == (orig, r.cl_ord_id)
            assert (state.price, state.order_qty) == (47, 8)
            assert (live.cl_ord_id, live.order_qty) == (r.cl_ord_id, 8)
        else:
            assert res.outcome == "not_received" and "retry_ambiguous is off" in res.reason
            assert arrivals.count("G", r.cl_ord_id) == 0
            assert effects(gw, r.cl_ord_id, "5") == []
            # Unchanged: the original price, quantity and ClOrdID.
            assert state.cl_ord_id == orig and (state.price, state.order_qty) == (45, 5)
            assert (live.cl_ord_id, live.order_qty) == (orig, 5)
            assert state.ord_status == "0" and state.in_flight == ()
        # One replace effect on the order in all, none for any other request.
        assert len([x for x in gw.ground_truth(ACCOUNT) if x.exec_type == "5"]) == int(retry)
        check_invariants(rig)


# ----------------------------------------------------------------------------- (c) fill races


@pytest.mark.parametrize("retry", [True, False])
async def test_partial_fill_racing_a_cancel_whose_answers_were_lost(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, retry_ambiguous=retry) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig, qty=5, price=45)
        arrivals = spy_arrivals(gw)
        # The fill of 2 happens first; its report, the pending cancel and the cancel are lost:
        # the client sent the cancel without having seen the fill.
        cl = await lose_answers_then_drop(
            rig, gw, lambda: oe.cancel(orig), count=3,
            before=lambda: gw.add_liquidity(MKT0, "sell", 44, 2),
        )
        (res,) = resolutions(rig, cl)
        assert res.outcome == "known"
        state = oe.order(orig)
        assert state.cum_qty == 2 and state.ord_status == "4" and not state.is_open
        assert state.fills == 1 and state.cl_ord_id == cl
        assert arrivals.count("F", cl) == 1 and arrivals.cancel_rejects == []
        fills = [x for x in gw.ground_truth(ACCOUNT) if x.exec_type == "F"]
        assert [(x.cl_ord_id, x.last_qty) for x in fills] == [(orig, 2)]
        # The fill, once, and through the drop copy: its live report was lost.
        assert delivered(rig, fills[0].exec_id) == ["dropcopy"]
        check_invariants(rig)


@pytest.mark.parametrize("retry", [True, False])
async def test_full_fill_racing_a_cancel_whose_refusal_was_lost(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    # The order fills completely just before the cancel arrives: the exchange refuses the
    # cancel (35=9, never replayed by the drop copy). Fill report and refusal are lost with the
    # connection. The replay has the fill but nothing of the cancel: it is resent (refused
    # again, harmless) or reported not received — never a second effect, never a second fill.
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, retry_ambiguous=retry) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig, qty=3, price=45)
        arrivals = spy_arrivals(gw)
        cl = await lose_answers_then_drop(
            rig, gw, lambda: oe.cancel(orig), count=2,
            before=lambda: gw.add_liquidity(MKT0, "sell", 44, 3),
        )
        (res,) = resolutions(rig, cl)
        state = oe.order(orig)
        assert state.cum_qty == 3 and state.ord_status == "2" and not state.is_open
        assert state.ambiguous is None and state.in_flight == ()
        if retry:
            assert res.outcome == "resent"
            assert arrivals.count("F", cl) == 2  # the first (refused) and the one retry
            assert arrivals.cancel_rejects == [(cl, "CANNOT_UPDATE_FILLED_ORDER")] * 2
        else:
            assert res.outcome == "not_received"
            assert arrivals.count("F", cl) == 1
            assert arrivals.cancel_rejects == [(cl, "CANNOT_UPDATE_FILLED_ORDER")]
        assert [x for x in gw.ground_truth(ACCOUNT) if x.exec_type == "4"] == []
        (fill,) = [x for x in gw.ground_truth(ACCOUNT) if x.exec_type == "F"]
        assert fill.last_qty == 3 and delivered(rig, fill.exec_id) == ["dropcopy"]
        check_invariants(rig)


@pytest.mark.parametrize("retry", [True, False])
async def test_partial_fill_racing_a_replace_whose_answers_were_lost(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, retry_ambiguous=retry) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig, qty=5, price=45)
        arrivals = spy_arrivals(gw)
        # Fill 2 of the original, then the replace to 7 @ 47 (total quantity: 5 left open).
        cl = await lose_answers_then_drop(
            rig, gw, lambda: oe.replace(orig, qty=7, price=47), count=3,
            before=lambda: gw.add_liquidity(MKT0, "sell", 44, 2),
        )
        (res,) = resolutions(rig, cl)
        assert res.outcome == "known"
        state = oe.order(orig)
        assert state.cl_ord_id == cl and state.cl_ord_ids == (orig, cl)
        assert (state.price, state.order_qty, state.cum_qty) == (47, 7, 2)
        assert state.leaves_qty == 5 and state.ord_status == "1" and state.is_open
        assert arrivals.count("G", cl) == 1 and arrivals.cancel_rejects == []
        (fill,) = [x for x in gw.ground_truth(ACCOUNT) if x.exec_type == "F"]
        assert fill.cl_ord_id == orig and delivered(rig, fill.exec_id) == ["dropcopy"]
        # A fill of the replaced order adds to the same cumulative quantity.
        gw.add_liquidity(MKT0, "sell", 46, 1)
        await rig.settle()
        state = oe.order(cl)
        assert state.cum_qty == 3 and state.fills == 2
        assert state.avg_px == (2 * 45 + 47) / Decimal(3)
        check_invariants(rig)


@pytest.mark.parametrize("retry", [True, False])
async def test_partial_fill_while_a_replace_never_arrived(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    # The replace is swallowed by the stall; meanwhile the original order fills 2 of 5. After
    # the reconnect the replay has the fill but no replace: it is resent once (and applies on
    # top of the fill) or reported not received (the order keeps its terms).
    gw = rigs.gateway()
    async with running(gw), open_rig(
        gw, rigs.keys, rigs.tmp_path, children=STALL_CHILDREN, retry_ambiguous=retry
    ) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        orig = await resting_order(rig, qty=5, price=45)
        arrivals = spy_arrivals(gw)
        await stall_order_entry(rig, gw)
        r = await oe.replace(orig, qty=6, price=47)
        gw.add_liquidity(MKT0, "sell", 44, 2)
        await wait_for(lambda: resolutions(rig, r.cl_ord_id), rig=rig)
        await rig.settle()
        (res,) = resolutions(rig, r.cl_ord_id)
        state = oe.order(orig)
        assert state.cum_qty == 2 and state.is_open and state.ambiguous is None
        fills = [x for x in gw.ground_truth(ACCOUNT) if x.exec_type == "F"]
        assert [(x.cl_ord_id, x.last_qty) for x in fills] == [(orig, 2)]
        assert len(delivered(rig, fills[0].exec_id)) == 1
        if retry:
            assert res.outcome == "resent"
            assert arrivals.count("G", r.cl_ord_id) == 1 and arrivals.cancel_rejects == []
            assert len(effects(gw, r.cl_ord_id, "5")) == 1
            assert state.cl_ord_id == r.cl_ord_id
            assert (state.price, state.order_qty, state.leaves_qty) == (47, 6, 4)
        else:
            assert res.outcome == "not_received"
            assert arrivals.count("G", r.cl_ord_id) == 0
            assert state.cl_ord_id == orig
            assert (state.price, state.order_qty, state.leaves_qty) == (45, 5, 3)
        check_invariants(rig)


# ----------------------------------------------------------------------------- chained requests


@pytest.mark.parametrize("second", ["F", "G"])
async def test_order_and_its_cancel_or_replace_never_arrived_are_resent_in_their_order(
    rigs: RigFactory, second: str, autojump_clock: Any  # noqa: F811
) -> None:
    # A new order and, right behind it, its cancel (or replace): both swallowed by the stall.
    # After the reconnect both are resent with their ClOrdIDs — the second after the order, as
    # the application sent them. The other way round the exchange refused the cancel (no such
    # order yet) and then placed an order the application had cancelled (or one at the price
    # it had replaced). This failed about half the runs before the resends were ordered.
    gw = rigs.gateway()
    async with running(gw), open_rig(
        gw, rigs.keys, rigs.tmp_path, children=STALL_CHILDREN, retry_ambiguous=True
    ) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        arrivals = spy_arrivals(gw)
        await stall_order_entry(rig, gw)
        t = await oe.new_order(MKT0, "buy", 2, 45)
        if second == "F":
            c = await oe.cancel(t.cl_ord_id)
        else:
            c = await oe.replace(t.cl_ord_id, qty=3, price=46)
        await wait_for(lambda: resolutions(rig, t.cl_ord_id) and resolutions(rig, c.cl_ord_id),
                       rig=rig)
        await rig.settle()
        assert [x.outcome for x in resolutions(rig, t.cl_ord_id)] == ["resent"]
        assert [x.outcome for x in resolutions(rig, c.cl_ord_id)] == ["resent"]
        mine = [x for x in arrivals.requests if x[1] in (t.cl_ord_id, c.cl_ord_id)]
        assert mine == [("D", t.cl_ord_id), (second, c.cl_ord_id)]
        assert arrivals.cancel_rejects == []
        state = oe.order(t.cl_ord_id)
        assert state.cl_ord_id == c.cl_ord_id and state.cl_ord_ids == (t.cl_ord_id, c.cl_ord_id)
        if second == "F":
            assert state.ord_status == "4" and not state.is_open
            assert gw.exchange.open_orders(ACCOUNT) == []
        else:
            assert (state.price, state.order_qty, state.ord_status) == (46, 3, "0")
            (live,) = gw.exchange.open_orders(ACCOUNT)
            assert (live.cl_ord_id, live.order_qty) == (c.cl_ord_id, 3)
        check_invariants(rig)
