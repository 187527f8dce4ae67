"""OrderTracker: idempotent, arrival-order-independent order state; requests and ambiguity.

``order_flows`` (a hypothesis strategy producing a realistic live ExecutionReport stream) and the
small report builders are also used by ``test_ledger.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessions.message import FixMessage
from supervisor.execid import ExecId
from supervisor.orders import (
    DuplicateRequestError,
    OrderState,
    OrderTracker,
    ReportError,
    ResolutionOutcome,
    UnknownOrderError,
    parse_report,
)

# ----------------------------------------------------------------------------- builders


def er(
    exec_id: str,
    exec_type: str,
    ord_status: str,
    *,
    cl: str,
    order_id: str | None = "O1",
    orig: str | None = None,
    symbol: str = "KXHIGHNY-26AUG25-T80",
    side: str = "1",
    price: str = "50",
    qty: str = "10.00",
    cum: str = "0.00",
    leaves: str | None = None,
    avg: str = "0",
    last_px: str | None = None,
    last_qty: str | None = None,
    text: str | None = None,
    rej: int | None = None,
    header: Sequence[tuple[int, Any]] = (),
) -> FixMessage:
    """An ExecutionReport with the fields Kalshi sends (REFERENCE §4.7)."""
    pairs: list[tuple[int, Any]] = [(35, "8"), *header]
    if order_id is not None:
        pairs.append((37, order_id))
    pairs.append((11, cl))
    if orig is not None:
        pairs.append((41, orig))
    if leaves is None:
        leaves = f"{Decimal(qty) - Decimal(cum):.2f}"
    pairs += [
        (17, exec_id),
        (150, exec_type),
        (39, ord_status),
        (54, side),
        (55, symbol),
        (38, qty),
        (14, cum),
        (151, leaves),
        (6, avg),
        (44, price),
    ]
    if last_px is not None:
        pairs.append((31, last_px))
    if last_qty is not None:
        pairs.append((32, last_qty))
    if rej is not None:
        pairs.append((103, rej))
    if text is not None:
        pairs.append((58, text))
    pairs.append((60, "20260825-14:03:11.512"))
    return FixMessage(pairs)


def cxl_reject(cl: str, orig: str, *, order_id: str = "O1", status: str = "0",
               text: str | None = None, header: Sequence[tuple[int, Any]] = ()) -> FixMessage:
    """An OrderCancelReject (35=9) answering cancel ``cl`` of order ``orig``."""
    pairs: list[tuple[int, Any]] = [(35, "9"), *header, (37, order_id), (11, cl), (41, orig),
                                    (39, status), (434, 1), (102, 0)]
    if text is not None:
        pairs.append((58, text))
    return FixMessage(pairs)


def nos(cl: str, *, qty: str = "10", price: str = "50", side: str = "1",
        symbol: str = "KXHIGHNY-26AUG25-T80") -> FixMessage:
    return FixMessage([(35, "D"), (11, cl), (38, qty), (40, "2"), (44, price), (54, side),
                       (55, symbol), (59, "1")])


def cancel(cl: str, orig: str, *, order_id: str | None = None) -> FixMessage:
    pairs: list[tuple[int, Any]] = [(35, "F"), (11, cl), (41, orig)]
    if order_id is not None:
        pairs.append((37, order_id))
    pairs += [(54, "1"), (55, "KXHIGHNY-26AUG25-T80")]
    return FixMessage(pairs)


def is_real(m: FixMessage) -> bool:
    """A report with ExecID identity (what the drop copy replays)."""
    return m.get(35) == b"8" and m.get(17) != b"-1;-1" and m.get(150) != b"8"


def dc_copy(m: FixMessage, seq: int) -> FixMessage:
    """The drop copy's replay of ``m``: same body, the DC session's own header."""
    body = [(t, v) for t, v in m.pairs if t not in (34, 52, 43, 122)]
    return FixMessage([body[0], (34, seq), (52, f"20260825-15:00:{seq % 60:02d}.000"), *body[1:]])


def canon(tracker: OrderTracker) -> list[OrderState]:
    return sorted(tracker.orders(), key=repr)


# ----------------------------------------------------------------------------- scenario strategy


def _q(d: Decimal) -> str:
    return f"{d:.2f}"


@st.composite
def order_flows(draw: st.DrawFn, max_orders: int = 4, max_steps: int = 5) -> list[FixMessage]:
    """The live ExecutionReport stream of a few orders (pending reports, fills, replaces with
    39=5 or the live status, cancels, cancel rejects, rejected orders), interleaved at random,
    with ExecIDs increasing per exchange index and a session header (34/52) on every message."""
    n = draw(st.integers(1, max_orders))
    per_order: list[list[dict[str, Any]]] = []
    for k in range(n):
        idx = draw(st.sampled_from([0, 0, 1]))
        pend = draw(st.booleans())
        oid = f"ORD-{k}"
        cls = iter(f"c{k}-{j}" for j in range(100))
        cl = next(cls)
        qty = Decimal(draw(st.integers(1, 20)))
        price = str(draw(st.integers(1, 99)))
        side = draw(st.sampled_from(["1", "2"]))
        common = dict(idx=idx, order_id=oid, price=price, symbol=f"KX-{k}", side=side)
        evs: list[dict[str, Any]] = []
        if draw(st.integers(0, 7)) == 0:
            evs.append(dict(common, kind="reject", cl=cl, qty=_q(qty), order_id=None,
                            text=draw(st.sampled_from(["INSUFFICIENT_BALANCE", "MARKET_INACTIVE"]))))
            per_order.append(evs)
            continue
        if pend:
            evs.append(dict(common, kind="pending", et="A", os="A", cl=cl, qty=_q(qty), cum="0.00"))
        cum = Decimal(0)
        notional = Decimal(0)
        avg = "0"
        evs.append(dict(common, kind="real", et="0", os="0", cl=cl, qty=_q(qty), cum="0.00", avg=avg))
        closed = False
        steps = draw(st.lists(st.sampled_from(["fill", "fill", "replace", "cancel", "cxlrej"]),
                              max_size=max_steps))
        for step in steps:
            if closed:
                break
            if step == "fill":
                q = Decimal(draw(st.integers(1, int(qty - cum))))
                px = Decimal(draw(st.integers(1, 99)))
                cum += q
                notional += q * px
                avg = str((notional / cum).quantize(Decimal("0.0001")))
                closed = cum == qty
                evs.append(dict(common, kind="real", et="F", os="2" if closed else "1", cl=cl,
                                qty=_q(qty), cum=_q(cum), avg=avg, last_px=str(px), last_qty=_q(q)))
            elif step == "replace":
                new = next(cls)
                qty = cum + Decimal(draw(st.integers(1, 10)))
                if pend:
                    evs.append(dict(common, kind="pending", et="E", os="E", cl=new, orig=cl,
                                    qty=_q(qty), cum=_q(cum), avg=avg))
                live = "1" if cum else "0"
                os_ = draw(st.sampled_from(["5", live]))
                evs.append(dict(common, kind="real", et="5", os=os_, cl=new, orig=cl, qty=_q(qty),
                                cum=_q(cum), avg=avg))
                cl = new
            elif step == "cancel":
                new = next(cls)
                if pend:
                    evs.append(dict(common, kind="pending", et="6", os="6", cl=new, orig=cl,
                                    qty=_q(qty), cum=_q(cum), avg=avg))
                evs.append(dict(common, kind="real", et="4", os="4", cl=new, orig=cl, qty=_q(qty),
                                cum=_q(cum), leaves="0.00", avg=avg))
                closed = True
            else:
                new = next(cls)
                if pend:
                    evs.append(dict(common, kind="pending", et="6", os="6", cl=new, orig=cl,
                                    qty=_q(qty), cum=_q(cum), avg=avg))
                evs.append(dict(common, kind="cxlrej", cl=new, orig=cl,
                                os="1" if cum else "0", text="TOO_LATE_TO_CANCEL"))
        per_order.append(evs)
    labels = [k for k, evs in enumerate(per_order) for _ in evs]
    sequence = draw(st.permutations(labels))
    its = [iter(evs) for evs in per_order]
    counters = {0: 0, 1: 0}
    out = []
    for seq, k in enumerate(sequence, start=1):
        ev = next(its[k])
        header = [(34, seq), (52, f"20260825-14:{seq // 60 % 60:02d}:{seq % 60:02d}.000")]
        if ev["kind"] == "cxlrej":
            out.append(cxl_reject(ev["cl"], ev["orig"], order_id=ev["order_id"], status=ev["os"],
                                  text=ev["text"], header=header))
            continue
        if ev["kind"] == "reject":
            out.append(er("-1;-1", "8", "8", cl=ev["cl"], order_id=None, qty=ev["qty"],
                          price=ev["price"], symbol=ev["symbol"], side=ev["side"], leaves="0.00",
                          rej=3, text=ev["text"], header=header))
            continue
        if ev["kind"] == "pending":
            exec_id = "-1;-1"
        else:
            i = ev["idx"]
            n_ = counters[i]
            counters[i] += 1
            # Events run past 9 so that only numeric comparison orders them correctly.
            exec_id = str(ExecId(7 + n_ // 12, n_ % 12, i))
        out.append(er(exec_id, ev["et"], ev["os"], cl=ev["cl"], order_id=ev["order_id"],
                      orig=ev.get("orig"), symbol=ev["symbol"], side=ev["side"],
                      price=ev["price"], qty=ev["qty"], cum=ev["cum"], leaves=ev.get("leaves"),
                      avg=ev.get("avg", "0"), last_px=ev.get("last_px"),
                      last_qty=ev.get("last_qty"), header=header))
    return out


def interleave(data: st.DataObject, a: list[FixMessage], b: list[FixMessage]) -> list[FixMessage]:
    """A random merge of ``a`` and ``b`` keeping each one's own order."""
    flags = data.draw(st.permutations([0] * len(a) + [1] * len(b)))
    ia, ib = iter(a), iter(b)
    return [next(ia) if f == 0 else next(ib) for f in flags]


# ----------------------------------------------------------------------------- basics


def test_new_then_fills_track_quantities_and_average_price() -> None:
    t = OrderTracker()
    assert t.apply(er("1;1", "0", "0", cl="a"))
    s = t.get("a")
    assert s is not None and s.ord_status == "0" and s.is_open and s.cum_qty == 0
    t.apply(er("1;2", "F", "1", cl="a", cum="3.00", avg="0.4000", last_px="40", last_qty="3.00"))
    t.apply(er("1;3", "F", "2", cl="a", cum="10.00", avg="0.4700", last_px="50", last_qty="7.00"))
    s = t.get("a")
    assert s is not None
    assert s.ord_status == "2" and not s.is_open
    assert s.cum_qty == Decimal("10") and s.leaves_qty == Decimal("0")
    # (3*40 + 7*50) / 10 = 47, exact Decimal from LastPx/LastQty
    assert s.avg_px == Decimal("47")
    assert s.fills == 2
    assert s.last_exec_id == ExecId(1, 3)
    assert t.open_orders() == []


def test_average_price_falls_back_to_avgpx_when_fills_are_missing() -> None:
    t = OrderTracker()
    t.apply(er("1;3", "F", "1", cl="a", cum="5.00", avg="0.4321", last_px="40", last_qty="2.00"))
    s = t.get("a")
    assert s is not None and s.avg_px == Decimal("0.4321")


def test_duplicates_are_idempotent() -> None:
    t = OrderTracker()
    m = er("1;2", "F", "1", cl="a", cum="3.00", last_px="40", last_qty="3.00")
    assert t.apply(m) is True
    before = canon(t)
    assert t.apply(m) is False
    assert t.apply(m.copy()) is False
    assert canon(t) == before


def test_older_report_after_newer_does_not_regress() -> None:
    t = OrderTracker()
    t.apply(er("1;3", "F", "2", cl="a", cum="10.00", avg="47", last_px="50", last_qty="7.00"))
    t.apply(er("1;1", "0", "0", cl="a"))
    t.apply(er("1;2", "F", "1", cl="a", cum="3.00", avg="40", last_px="40", last_qty="3.00"))
    s = t.get("a")
    assert s is not None
    assert s.ord_status == "2" and s.cum_qty == 10 and not s.is_open
    assert s.avg_px == Decimal("47") and s.fills == 2


def test_exec_ids_compare_numerically() -> None:
    t = OrderTracker()
    t.apply(er("1;10", "F", "1", cl="a", cum="4.00", last_px="40", last_qty="1.00"))
    t.apply(er("1;9", "F", "1", cl="a", cum="3.00", last_px="40", last_qty="3.00"))
    s = t.get("a")
    assert s is not None and s.cum_qty == 4 and s.last_exec_id == ExecId(1, 10)


def test_replace_chain_and_status_5_read_as_live() -> None:
    t = OrderTracker()
    t.apply(er("1;1", "0", "0", cl="a"))
    t.apply(er("1;2", "F", "1", cl="a", cum="2.00", last_px="50", last_qty="2.00"))
    t.apply(er("1;3", "5", "5", cl="b", orig="a", qty="12.00", cum="2.00", price="55"))
    s = t.get("a")
    assert s is not None and s == t.get("b") == t.get_by_order_id("O1")
    assert s.cl_ord_id == "b" and s.cl_ord_ids == ("a", "b")
    assert s.ord_status == "1"  # 39=5 with fills → partially filled, still live
    assert s.is_open and s.price == Decimal("55") and s.order_qty == Decimal("12")
    t2 = OrderTracker()
    t2.apply(er("1;1", "0", "0", cl="a"))
    t2.apply(er("1;3", "5", "5", cl="b", orig="a", qty="12.00"))
    assert t2.get("b").ord_status == "0"  # type: ignore[union-attr]


def test_pending_overlay_and_stale_pending_copies() -> None:
    t = OrderTracker()
    assert t.apply(er("-1;-1", "A", "A", cl="a"))
    assert t.get("a").ord_status == "A"  # type: ignore[union-attr]
    t.apply(er("1;1", "0", "0", cl="a"))
    assert t.get("a").ord_status == "0"  # type: ignore[union-attr]
    assert t.apply(er("-1;-1", "A", "A", cl="a")) is False  # copy after the outcome: stale
    assert t.apply(er("-1;-1", "6", "6", cl="b", orig="a"))
    assert t.get("a").ord_status == "6"  # type: ignore[union-attr]
    t.apply(er("1;2", "4", "4", cl="b", orig="a", leaves="0.00"))
    s = t.get("b")
    assert s is not None and s.ord_status == "4" and not s.is_open
    assert t.apply(er("-1;-1", "6", "6", cl="b", orig="a")) is False


def test_still_pending_lists_requests_the_replay_cannot_settle() -> None:
    t = OrderTracker()
    t.apply(er("-1;-1", "A", "A", cl="a"))
    t.apply(er("1;1", "0", "0", cl="b", order_id="O2"))
    t.apply(er("-1;-1", "6", "6", cl="c", orig="b", order_id="O2"))
    assert t.still_pending() == ["a", "c"]
    t.apply(er("1;2", "4", "4", cl="c", orig="b", order_id="O2", leaves="0.00"))
    assert t.still_pending() == ["a"]


def test_pending_arriving_after_its_outcome_is_ignored() -> None:
    t = OrderTracker()
    t.apply(er("1;1", "0", "0", cl="a"))
    t.apply(er("1;2", "4", "4", cl="b", orig="a", leaves="0.00"))
    assert t.apply(er("-1;-1", "6", "6", cl="b", orig="a")) is False
    assert t.get("a").ord_status == "4"  # type: ignore[union-attr]


def test_cancel_reject_clears_the_pending_cancel() -> None:
    t = OrderTracker()
    t.apply(er("1;1", "0", "0", cl="a"))
    t.apply(er("-1;-1", "6", "6", cl="b", orig="a"))
    assert t.apply(cxl_reject("b", "a", text="TOO_LATE"))
    s = t.get("a")
    assert s is not None and s.ord_status == "0" and s.text == "TOO_LATE"
    assert t.apply(er("-1;-1", "6", "6", cl="b", orig="a")) is False


def test_rejected_new_order_is_closed() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    t.apply(er("-1;-1", "8", "8", cl="a", order_id="NONE", rej=3, text="INSUFFICIENT_BALANCE"))
    s = t.get("a")
    assert s is not None and s.ord_status == "8" and not s.is_open
    assert s.text == "INSUFFICIENT_BALANCE" and s.order_id is None  # placeholder not linked
    assert t.ambiguous() == [] and t.in_flight() == []


def test_placeholder_order_ids_on_rejects_do_not_merge_orders() -> None:
    t = OrderTracker()
    t.apply(er("-1;-1", "8", "8", cl="a", order_id="NONE", rej=3, text="X"))
    t.apply(er("-1;-1", "8", "8", cl="b", order_id="NONE", rej=3, text="Y"))
    assert len(t.orders()) == 2


def test_malformed_input_is_refused() -> None:
    t = OrderTracker()
    with pytest.raises(ReportError, match="MsgType"):
        t.apply(nos("a"))
    with pytest.raises(ReportError, match="ExecID"):
        t.apply(er("x;1", "0", "0", cl="a"))
    with pytest.raises(ReportError, match="ExecID"):
        t.apply(FixMessage([(35, "8"), (11, "a"), (150, "0")]))
    with pytest.raises(ReportError, match="decimal"):
        t.apply(er("1;1", "0", "0", cl="a", cum="lots", leaves="1"))


# ----------------------------------------------------------------------------- requests & ambiguity


def test_mark_sent_tracks_in_flight_until_answered() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a", qty="7", price="33"))
    s = t.get("a")
    assert s is not None and s.ord_status is None and s.is_open and s.in_flight == ("a",)
    assert s.order_qty == Decimal("7") and s.price == Decimal("33")
    assert t.in_flight() == ["a"]
    t.apply(er("-1;-1", "A", "A", cl="a", qty="7.00"))
    assert t.in_flight() == []
    t.apply(er("1;1", "0", "0", cl="a", qty="7.00"))
    t.mark_sent("b", cancel("b", "a"))
    assert t.in_flight() == ["b"]
    assert t.get("b") == t.get("a")


def test_mark_sent_refuses_a_second_use_of_a_clordid() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    with pytest.raises(DuplicateRequestError, match="already sent"):
        t.mark_sent("a", nos("a"))
    t.apply(er("1;1", "0", "0", cl="z", order_id="O9"))
    with pytest.raises(DuplicateRequestError, match="new ClOrdID"):
        t.mark_sent("z", nos("z"))


def test_cancel_of_unknown_order_is_refused() -> None:
    t = OrderTracker()
    with pytest.raises(UnknownOrderError, match="names no known order"):
        t.mark_sent("b", cancel("b", "nope"))
    with pytest.raises(UnknownOrderError):
        t.mark_ambiguous("nope", "x")
    with pytest.raises(ReportError):
        t.mark_sent("b", FixMessage([(35, "q"), (11, "b")]))
    with pytest.raises(ReportError, match="carries"):
        t.mark_sent("b", nos("c"))


def test_exchange_unavailable_marks_ambiguous_and_keeps_the_order_open() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    t.apply(er("-1;-1", "8", "8", cl="a", rej=99, text="EXCHANGE_UNAVAILABLE"))
    s = t.get("a")
    assert s is not None and s.is_open and s.ambiguous == "EXCHANGE_UNAVAILABLE"
    assert s.ord_status is None
    [amb] = t.ambiguous()
    assert (amb.cl_ord_id, amb.reason, amb.msg_type, amb.attempts) == (
        "a", "EXCHANGE_UNAVAILABLE", "D", 1)
    assert amb.request == nos("a")
    with pytest.raises(DuplicateRequestError, match="resolve it through the drop copy"):
        t.mark_sent("a", nos("a"))


def test_resolve_found_in_drop_copy() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    t.mark_ambiguous("a", "in flight at disconnect")
    assert t.get("a").ambiguous == "in flight at disconnect"  # type: ignore[union-attr]
    replay = [er("1;5", "0", "0", cl="a"), er("1;6", "F", "1", cl="a", cum="1.00",
                                                last_px="50", last_qty="1.00"),
              er("1;7", "0", "0", cl="other", order_id="O2")]
    res = t.resolve("a", replay)
    assert res.outcome is ResolutionOutcome.KNOWN
    assert res.order.cum_qty == 1 and res.order.ambiguous is None
    assert t.ambiguous() == []
    with pytest.raises(DuplicateRequestError):
        t.mark_sent("a", nos("a"))  # known orders are never resent


def test_resolve_not_found_allows_exactly_one_resend_with_the_same_clordid() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    t.apply(er("-1;-1", "8", "8", cl="a", rej=99, text="EXCHANGE_UNAVAILABLE"))
    res = t.resolve("a", [er("1;7", "0", "0", cl="other", order_id="O2")])
    assert res.outcome is ResolutionOutcome.RESEND_SAME_CLORDID
    assert t.ambiguous() == []
    with pytest.raises(DuplicateRequestError):
        t.mark_sent("a", cancel("a", "other"))  # a retry must be the same kind of request
    t.mark_sent("a", nos("a"))  # the sanctioned retry
    assert t.in_flight() == ["a"]
    with pytest.raises(DuplicateRequestError):
        t.mark_sent("a", nos("a"))  # and only one
    t.apply(er("1;8", "0", "0", cl="a", order_id="O3"))
    s = t.get("a")
    assert s is not None and s.ord_status == "0" and s.order_id == "O3"


def test_order_already_exists_on_a_retry_stays_ambiguous() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    t.mark_ambiguous("a", "in flight at disconnect")
    t.resolve("a", [])
    t.mark_sent("a", nos("a"))
    t.apply(er("-1;-1", "8", "8", cl="a", rej=6, text="ORDER_ALREADY_EXISTS"))
    s = t.get("a")
    assert s is not None and s.is_open and s.ord_status is None
    assert s.ambiguous is not None and "first attempt is live" in s.ambiguous
    # The first attempt's reports then settle it.
    t.apply(er("1;9", "0", "0", cl="a"))
    assert t.get("a").ambiguous is None  # type: ignore[union-attr]


def test_report_for_a_clordid_ends_its_ambiguity() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    t.mark_ambiguous("a", "disconnect")
    t.apply(er("1;1", "0", "0", cl="a"))
    assert t.ambiguous() == []
    t.mark_ambiguous("a", "again")  # already known: no-op
    assert t.ambiguous() == []


def test_ambiguous_cancel_is_resolved_like_an_order() -> None:
    t = OrderTracker()
    t.apply(er("1;1", "0", "0", cl="a"))
    t.mark_sent("b", cancel("b", "a", order_id="O1"))
    assert t.in_flight() == ["b"]
    t.mark_ambiguous("b", "disconnect")
    res = t.resolve("b", [er("1;1", "0", "0", cl="a")])
    assert res.outcome is ResolutionOutcome.RESEND_SAME_CLORDID
    t.mark_sent("b", cancel("b", "a", order_id="O1"))
    t.apply(er("1;4", "4", "4", cl="b", orig="a", leaves="0.00"))
    assert t.open_orders() == []


def test_out_of_order_reports_merge_into_one_order() -> None:
    t = OrderTracker()
    t.mark_sent("a", nos("a"))
    # A fill after a replace arrives first: it knows only the new ClOrdID and the OrderID.
    t.apply(er("1;4", "F", "1", cl="b", cum="1.00", last_px="50", last_qty="1.00"))
    assert len(t.orders()) == 2
    t.apply(er("1;3", "5", "5", cl="b", orig="a"))
    assert len(t.orders()) == 1
    s = t.get("a")
    assert s is not None and s == t.get("b") and s.cum_qty == 1 and s.cl_ord_id == "b"
    assert s.cl_ord_ids == ("a", "b")


# ----------------------------------------------------------------------------- property


@settings(max_examples=300, deadline=None)
@given(order_flows(), st.data())
def test_any_arrival_order_and_duplication_gives_the_in_order_state(
    live: list[FixMessage], data: st.DataObject
) -> None:
    reference = OrderTracker()
    reference.apply_many(live)
    # Real reports may be lost on the live stream; the drop copy brings them back in any order,
    # and copies of anything may repeat anywhere.
    lost = data.draw(st.lists(st.booleans(), min_size=len(live), max_size=len(live)))
    received = [m for m, gone in zip(live, lost) if not (gone and is_real(m))]
    replay = data.draw(st.permutations([m for m in live if is_real(m)]))
    repeats = data.draw(st.lists(st.sampled_from(live), max_size=6))
    arrival = interleave(data, received, list(replay) + repeats)
    tracker = OrderTracker()
    tracker.apply_many(arrival)
    assert canon(tracker) == canon(reference)
    assert tracker.apply_many(arrival) == 0  # everything again: nothing new


def test_decimal_fields_are_checked_on_every_report_although_parses_are_shared() -> None:
    a = parse_report(er("1;1", "F", "1", cl="a", cum="3.00"))
    b = parse_report(er("1;2", "F", "1", cl="a", cum="3.00"))
    assert a.cum_qty == Decimal("3.00") and b.cum_qty is a.cum_qty
    for exec_id in ("1;3", "1;4"):
        with pytest.raises(ReportError, match="tag 14 is not a finite decimal"):
            parse_report(er(exec_id, "F", "1", cl="a", cum="Infinity"))


def test_a_report_read_once_by_the_caller_applies_as_the_message_itself() -> None:
    reports = [
        er("1;1", "0", "0", cl="a"),
        er("1;2", "F", "1", cl="a", cum="3.00", avg="0.4000", last_px="40", last_qty="3.00"),
        er("-1;-1", "6", "6", cl="b", orig="a"),
    ]
    plain, shared = OrderTracker(), OrderTracker()
    for m in reports:
        assert plain.apply(m) == shared.apply(m, fields=m.first_values())
    assert canon(plain) == canon(shared)
    assert parse_report(reports[1], reports[1].first_values()) == parse_report(reports[1])


def test_forget_closed_keeps_the_recent_the_open_and_the_unsettled() -> None:
    t = OrderTracker()
    for n in range(5):  # five orders, filled (closed) in turn
        cl, oid = f"c{n}", f"O{n}"
        t.mark_sent(cl, nos(cl))
        t.apply(er(f"{n};1", "0", "0", cl=cl, order_id=oid))
        t.apply(er(f"{n};2", "F", "2", cl=cl, order_id=oid, cum="10.00", last_px="50",
                   last_qty="10.00"))
    t.mark_sent("open", nos("open"))
    t.apply(er("9;1", "0", "0", cl="open", order_id="O9"))
    # A cancel sent for c0 (already filled): unanswered, so c0 must stay findable.
    t.mark_sent("x0", cancel("x0", "c0"))
    assert t.forget_closed(keep=1) == 3  # c1, c2, c3 go; c4 is the most recent closed one
    assert [t.get(cl) is None for cl in ("c0", "c1", "c2", "c3", "c4", "open")] == [
        False, True, True, True, False, False
    ]
    assert t.get_by_order_id("O1") is None and t.get_by_order_id("O4") is not None
    assert [o.cl_ord_id for o in t.orders()] == ["c0", "c4", "open"]
    assert t.in_flight() == ["x0"]
    t.mark_sent("c1", nos("c1"))  # a forgotten ClOrdID is no longer refused
    assert t.forget_closed(keep=10) == 0
    with pytest.raises(ValueError, match="keep"):
        t.forget_closed(keep=-1)


def assert_is_open_agrees(tracker: OrderTracker, cls: set[str]) -> None:
    for cl in cls:
        state = tracker.get(cl)
        assert tracker.is_open(cl) == (None if state is None else state.is_open), cl


@settings(max_examples=200, deadline=None)
@given(order_flows(), st.data())
def test_is_open_answers_as_the_snapshot_does_at_every_step(
    live: list[FixMessage], data: st.DataObject
) -> None:
    arrival = interleave(data, live, list(data.draw(st.permutations(live))))
    cls = {m.get_str(t) or "" for m in arrival for t in (11, 41)} | {"never-seen"}
    tracker = OrderTracker()
    for m in arrival:
        tracker.apply(m)
        assert_is_open_agrees(tracker, cls)


def test_is_open_for_requests_rejects_ambiguity_and_unknown_ids() -> None:
    t = OrderTracker()
    t.mark_sent("sent", nos("sent"))
    t.mark_sent("amb", nos("amb"))
    t.apply(er("-1;-1", "8", "8", cl="amb", rej=99, text="EXCHANGE_UNAVAILABLE"))
    t.mark_sent("rej", nos("rej"))
    t.apply(er("-1;-1", "8", "8", cl="rej", rej=3, text="INVALID_ORDER"))
    t.apply(er("1;1", "0", "0", cl="done", order_id="O2"))
    t.apply(er("1;2", "F", "2", cl="done", order_id="O2", cum="10.00", last_px="50",
               last_qty="10.00"))
    t.mark_sent("lost", nos("lost"))
    t.mark_ambiguous("lost", "in flight at a disconnect")
    assert [t.is_open(cl) for cl in ("sent", "amb", "rej", "done", "lost", "nobody")] == [
        True, True, False, False, True, None
    ]
    assert_is_open_agrees(t, {"sent", "amb", "rej", "done", "lost", "nobody"})
