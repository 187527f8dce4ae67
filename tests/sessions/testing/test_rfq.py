"""The RFQ lifecycle of the simulated exchange (REFERENCE §9)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from exchange_sim import MKT, Sim, ers, fields, fix, kinds, nos, of_type
from sessions.testing.exchange import Outbound


@pytest.fixture
def sim() -> Sim:
    """Creator a1 (A) on KalshiRT; makers bq (B) and cq (C) on KalshiRFQ; b1 (B) on KalshiNR."""
    s = Sim()
    s.ex.add_account("C")
    for key, acct in (("bq", "B"), ("aq", "A"), ("cq", "C")):
        s.ex.add_key(key, acct)
    s.connect("a1", "KalshiRT", skip_pending_exec_reports=True)
    s.connect("b1", "KalshiNR", skip_pending_exec_reports=True)
    s.connect("bq", "KalshiRFQ")
    s.connect("aq", "KalshiRFQ")
    s.connect("cq", "KalshiRFQ")
    return s


def request(
    s: Sim, client_id: str = "req-1", qty: Any = 10, *extra: tuple[int, Any], symbol: str = MKT
) -> str:
    """Send an RFQ from a1; return the server RfqId."""
    out = s.send("a1", fix("R", (131, client_id), (146, 1), (55, symbol), (38, qty), *extra))
    (ack,) = of_type(out, b"b", "a1")
    return ack[21023]


def quote(
    s: Sim, key: str, rfq_id: str, qid: str, yes: Any, no: Any, *extra: tuple[int, Any]
) -> list[Outbound]:
    return s.send(
        key, fix("S", (117, qid), (131, rfq_id), (55, MKT), (132, yes), (133, no), *extra)
    )


def server_quote_id(out: list[Outbound]) -> str:
    (note,) = of_type(out, b"S", "a1")
    return note[117]


def accept(
    s: Sim, qid: str, side: int = 1, *extra: tuple[int, Any], dt: float = 0.0
) -> list[Outbound]:
    return s.send("a1", fix("UA", (117, qid), (54, side), *extra), dt=dt)


def test_full_lifecycle(sim: Sim) -> None:
    out = sim.send("a1", fix("R", (131, "req-1"), (146, 1), (55, MKT), (38, 10)))
    (ack,) = of_type(out, b"b")
    assert (ack[131], ack[303], ack[100]) == ("req-1", "1", "0")
    rfq_id = ack[21023]
    broadcasts = [o for o in out if o.msg_type == b"R"]
    assert [o.key_id for o in broadcasts] == ["bq", "cq"]  # not the creator's own maker session
    r = fields(broadcasts[0])
    assert (r[131], r[146], r[55], r[38], r[453]) == (rfq_id, "1", MKT, "10.00", "1")
    assert r[448].startswith("anon-")

    out = quote(sim, "bq", rfq_id, "q1", 40, 55)
    (ai,) = of_type(out, b"AI", "bq")
    assert (ai[117], ai[131], ai[297], ai[132], ai[133], ai[134], ai[135]) == (
        "q1",
        rfq_id,
        "10",
        "40",
        "55",
        "10.00",
        "10.00",
    )
    (note,) = of_type(out, b"S", "a1")
    assert (note[131], note[132], note[133], note[38], note[452]) == (
        rfq_id,
        "0.4000",
        "0.5500",
        "10.00",
        "35",
    )
    qid = note[117]

    out = accept(sim, qid, 1, (21023, rfq_id), (11, "acc-1"), dt=1)
    (uc,) = of_type(out, b"UC")
    assert (uc[117], uc[21025], uc[21024], uc[11]) == (qid, "0", qid, "acc-1")
    (ai,) = of_type(out, b"AI", "bq")
    assert (ai[297], ai[54], ai[38]) == ("0", "2", "10.00")

    out = sim.send("bq", fix("U7", (117, "q1"), (21023, rfq_id)), dt=5)
    assert of_type(out, b"U8") == [{117: "q1", 21010: "0"}]
    assert sim.ex.next_deadline() == sim.now + 15
    assert sim.tick(14.9) == []
    out = sim.tick(0.1)
    (creator,) = ers(out, "a1")
    assert (
        creator[150],
        creator[39],
        creator[11],
        creator[54],
        creator[31],
        creator[32],
        creator[1057],
    ) == ("F", "2", "acc-1", "1", "45", "10.00", "Y")
    (maker,) = ers(out, "b1")  # the maker's order-entry session, not its RFQ session
    assert (maker[11], maker[54], maker[31], maker[1057]) == ("q1", "2", "45", "N")
    assert not [o for o in out if o.key_id == "bq"]
    assert sim.ex.position("A", MKT) == Decimal(10) and sim.ex.position("B", MKT) == Decimal(-10)
    assert [r.exec_type for r in sim.ex.ground_truth("B")] == ["F"]


def test_sell_side_accept_takes_the_yes_bid(sim: Sim) -> None:
    rfq_id = request(sim)
    qid = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 55))
    accept(sim, qid, 2, (38, 4))
    sim.send("bq", fix("U7", (117, "q1")), dt=1)
    out = sim.tick(15)
    (creator,) = ers(out, "a1")
    assert (creator[54], creator[31], creator[32], creator[11]) == ("2", "40", "4.00", qid)


def test_unconfirmed_acceptance_is_voided(sim: Sim) -> None:
    rfq_id = request(sim)
    qid = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 55))
    accept(sim, qid)
    assert sim.ex.next_deadline() == sim.now + 30
    out = sim.tick(30)
    assert of_type(out, b"AI", "bq") == [{117: "q1", 131: rfq_id, 297: "17"}]
    out = sim.send("bq", fix("U7", (117, "q1")))
    assert of_type(out, b"U8")[0] == {117: "q1", 21010: "1", 58: "EXPIRED"}
    assert sim.ex.ground_truth("A") == []
    # The RFQ is open again: a new quote can be taken.
    qid2 = server_quote_id(quote(sim, "cq", rfq_id, "cq1", 41, 55))
    assert of_type(accept(sim, qid2), b"UC")[0][21025] == "0"


def test_high_volatility_windows(sim: Sim) -> None:
    sim.ex.add_market("HVM", high_volatility=True)
    out = sim.send("a1", fix("R", (131, "r"), (146, 1), (55, "HVM"), (38, 1)))
    rfq_id = of_type(out, b"b")[0][21023]
    out = sim.send("bq", fix("S", (117, "q1"), (131, rfq_id), (55, "HVM"), (132, 40), (133, 55)))
    accept(sim, server_quote_id(out))
    assert sim.ex.next_deadline() == sim.now + 3
    assert of_type(sim.send("bq", fix("U7", (117, "q1")), dt=2.9), b"U8")[0][21010] == "0"
    assert sim.ex.next_deadline() == pytest.approx(sim.now + 1)
    assert kinds(sim.tick(1), "a1") == ["F/2"]


def test_maker_quote_cancel(sim: Sim) -> None:
    rfq_id = request(sim)
    qid = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 55))
    out = sim.send("bq", fix("Z", (117, "q1"), (21023, rfq_id)))
    assert of_type(out, b"U9") == [{117: "q1", 298: "0"}]
    assert of_type(out, b"AI")[0][297] == "17"
    assert of_type(accept(sim, qid), b"UC")[0] == {117: qid, 21025: "1", 58: "EXPIRED"}
    assert of_type(sim.send("bq", fix("Z", (117, "q1"))), b"U9")[0][298] == "1"
    assert of_type(sim.send("bq", fix("Z", (117, "nope"))), b"U9")[0][58] == "NOT_FOUND"


def test_cancel_after_confirmation_is_too_late(sim: Sim) -> None:
    rfq_id = request(sim)
    qid = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 55))
    accept(sim, qid)
    sim.send("bq", fix("U7", (117, "q1")))
    assert of_type(sim.send("bq", fix("Z", (117, "q1"))), b"U9")[0][58] == "TOO_LATE"
    assert of_type(sim.send("a1", fix("UE", (21023, rfq_id))), b"UB")[0][58] == "TOO_LATE"


def test_creator_rfq_cancel(sim: Sim) -> None:
    rfq_id = request(sim, "req-9")
    quote(sim, "bq", rfq_id, "q1", 40, 55)
    out = sim.send("a1", fix("UE", (131, "req-9")))
    assert of_type(out, b"UB", "a1") == [{131: "req-9", 21013: "0", 21023: rfq_id}]
    assert of_type(out, b"AI", "bq")[0][297] == "17"
    assert [o.key_id for o in out if o.msg_type == b"AG"] == ["bq", "cq"]
    assert of_type(quote(sim, "cq", rfq_id, "c1", 40, 55), b"AI")[0] == {
        117: "c1",
        131: rfq_id,
        297: "5",
        58: "RFQ_CLOSED",
    }
    assert of_type(sim.send("a1", fix("UE", (21023, rfq_id))), b"UB")[0][21013] == "1"
    assert of_type(sim.send("a1", fix("UE", (131, "unknown"))), b"UB")[0] == {
        131: "unknown",
        21013: "1",
        58: "NOT_FOUND",
    }


def test_quote_request_rejects(sim: Sim) -> None:
    out = sim.send("a1", fix("R", (131, "x"), (146, 1), (55, "NOPE"), (38, 1)))
    assert of_type(out, b"AG") == [{131: "x", 58: "MARKET_NOT_FOUND", 658: "1"}]
    assert not [o for o in out if o.msg_type == b"R"]
    assert (
        of_type(sim.send("a1", fix("R", (131, "x"), (146, 2), (55, MKT), (38, 1))), b"AG")[0][658]
        == "99"
    )
    request(sim, "first")
    out = sim.send("a1", fix("R", (131, "second"), (146, 1), (55, MKT), (38, 1)))
    assert of_type(out, b"AG")[0][58] == "RFQ_ALREADY_EXISTS"
    out = sim.send("a1", fix("R", (131, "third"), (146, 1), (55, MKT), (38, 1), (21016, "Y")))
    (ub,) = of_type(out, b"UB")
    assert (ub[131], ub[21013]) == ("first", "2")
    assert of_type(out, b"b")[0][131] == "third"
    out = sim.send("a1", fix("R", (131, "y"), (146, 1), (55, MKT)))
    assert of_type(out, b"3")[0][371] == "38"


def test_quote_rejects(sim: Sim) -> None:
    rfq_id = request(sim)
    for yes, no in ((0, 0), (60, 45), (-1, 50), (100, 0)):
        (ai,) = of_type(quote(sim, "bq", rfq_id, "q", yes, no), b"AI")
        assert (ai[297], ai[58]) == ("5", "INVALID_QUOTE")
    assert of_type(quote(sim, "aq", rfq_id, "own", 40, 55), b"AI")[0][58] == "SELF_QUOTE"
    assert of_type(quote(sim, "bq", "no-such-rfq", "q", 40, 55), b"AI")[0][58] == "RFQ_NOT_FOUND"
    out = quote(sim, "bq", rfq_id, "q", 40, 0)  # one side only
    assert of_type(out, b"AI")[0][297] == "10" and 133 not in of_type(out, b"S")[0]


def test_new_quote_replaces_the_makers_previous_one(sim: Sim) -> None:
    rfq_id = request(sim)
    old = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 55))
    out = quote(sim, "bq", rfq_id, "q2", 41, 55)
    assert [a[117] + "/" + a[297] for a in of_type(out, b"AI")] == ["q1/17", "q2/10"]
    assert of_type(accept(sim, old), b"UC")[0][58] == "EXPIRED"


def test_accept_rejects(sim: Sim) -> None:
    rfq_id = request(sim)
    qid = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 0))
    assert of_type(accept(sim, "nope"), b"UC")[0] == {117: "nope", 21025: "1", 58: "NOT_FOUND"}
    assert of_type(accept(sim, qid, 1), b"UC")[0][58] == "INVALID_ORDER"  # no No bid to take
    assert of_type(accept(sim, qid, 2, (38, 11)), b"UC")[0][58] == "INVALID_ORDER"
    assert of_type(accept(sim, qid, 2, (21023, "other")), b"UC")[0][58] == "NOT_FOUND"
    assert of_type(accept(sim, qid, 2), b"UC")[0][21025] == "0"
    assert of_type(accept(sim, qid, 2), b"UC")[0][58] == "EXPIRED"  # already accepted


def test_prefer_better_quote(sim: Sim) -> None:
    rfq_id = request(sim)
    worse = server_quote_id(quote(sim, "bq", rfq_id, "b1q", 40, 50))
    better = server_quote_id(quote(sim, "cq", rfq_id, "c1q", 40, 52))
    out = accept(sim, worse, 1, (21022, "Y"))
    assert of_type(out, b"UC")[0][21024] == better
    assert [o.key_id for o in out if o.msg_type == b"AI"] == ["cq"]


def test_accept_through_new_order_single(sim: Sim) -> None:
    out = sim.send("a1", nos("n1", 1, 45, 5, (117, "stale")))
    (e,) = ers(out)
    assert (e[150], e[103], e[58]) == ("8", "8", "EXPIRED")
    rfq_id = request(sim)
    qid = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 55))
    out = sim.send("a1", nos("n2", 1, 45, 5, (117, qid), (21023, rfq_id)))
    assert ers(out) == [] and of_type(out, b"AI", "bq")[0][297] == "0"
    sim.send("bq", fix("U7", (117, "q1")))
    out = sim.tick(15)
    (fill,) = ers(out, "a1")
    assert (fill[11], fill[150], fill[39], fill[31]) == ("n2", "F", "2", "45")


def test_voided_acceptance_through_new_order_single_cancels_the_order(sim: Sim) -> None:
    rfq_id = request(sim)
    qid = server_quote_id(quote(sim, "bq", rfq_id, "q1", 40, 55))
    sim.send("a1", nos("n2", 1, 45, 5, (117, qid)))
    out = sim.tick(30)
    (e,) = ers(out, "a1")
    assert (e[11], e[150], e[58]) == ("n2", "4", "EXPIRED")
    assert sim.ex.open_orders("A") == []


def test_rfq_messages_on_wrong_sessions(sim: Sim) -> None:
    assert (
        of_type(sim.send("b1", fix("R", (131, "x"), (146, 1), (55, MKT), (38, 1))), b"j")[0][380]
        == "3"
    )
    sim.listen("alisten", "KalshiRT")
    assert (
        of_type(sim.send("alisten", fix("R", (131, "x"), (146, 1), (55, MKT), (38, 1))), b"j")[0][
            380
        ]
        == "6"
    )
    assert of_type(sim.send("alisten", fix("UA", (117, "x"), (54, 1))), b"j")[0][380] == "6"
    assert of_type(sim.send("bq", nos("c", 1, 40, 1)), b"j")[0][380] == "3"


def test_maker_in_dollars_and_cash_sized_rfq(sim: Sim) -> None:
    sim.ex.add_key("bqd", "B")
    sim.ex.disconnect("bq", sim.now)
    sim.connect("bqd", "KalshiRFQ", use_dollars=True)
    out = sim.send("a1", fix("R", (131, "cash"), (146, 1), (55, MKT), (152, "10")))
    rfq_id = of_type(out, b"b")[0][21023]
    assert 38 not in of_type(out, b"R", "bqd")[0] and of_type(out, b"R", "bqd")[0][152] == "10.00"
    out = quote(sim, "bqd", rfq_id, "q1", "0.40", "0.55")
    ai = of_type(out, b"AI")[0]
    # AI prices are integer cents whatever the session's unit; sizes follow the $10 target.
    assert (ai[132], ai[133], ai[134], ai[135]) == ("40", "55", "25.00", "18.18")
    assert 38 not in ai
