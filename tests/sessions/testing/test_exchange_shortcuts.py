"""The exchange's shortcuts on the order path give exactly what the plain path gives: records
built without the generated __init__, reports derived from the PENDING before them, memoised
field parsing and the per-session "prints as default" flag."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
import pytest

from exchange_sim import MKT, Sim, amend, cxl, nos
from sessions.testing import exchange as exchange_mod
from sessions.testing.exchange import (
    ExchangeConfig,
    ExecRecord,
    LogonFlags,
    Outbound,
    _dec,
    _derive,
    _render,
    render_execution_report,
)

_FLAG_SETS: dict[str, dict[str, Any]] = {
    "a1": {},
    "a2": {"use_dollars": True, "preserve_original_order_qty": True},
    "b1": {"always_emit_new_before_trade": True, "use_expired_ord_status": True},
}


def _scenario() -> tuple[list[Outbound], list[ExecRecord]]:
    """Orders that rest, trade, are amended (a no-op amend too), cancelled and rejected, from
    sessions with different flags and a listener; every message out and the ground truth."""
    s = Sim(ExchangeConfig(message_cost=0))
    for key, flags in _FLAG_SETS.items():
        s.connect(key, **flags)
    s.listen()
    out: list[Outbound] = []
    out += s.send("a1", nos("r1", 1, 30, 5))
    out += s.send("a2", nos("r2", 1, "0.3100", 2))
    out += s.send("b1", nos("s1", 2, 31, 3, (59, "1")), dt=0.25)  # trades with r2, then r1
    out += s.send("a1", amend("r1-b", "r1", 1, 5, 30), dt=1.5)  # same quantity and price
    out += s.send("a1", amend("r1-c", "r1-b", 1, 7, 29))
    out += s.send("a2", nos("r3", 1, "0.1000", 1, (126, "20260302-14:00:10.000"), tif="6"))
    out += s.send("a1", cxl("r1-d", "r1-c", 1))
    out += s.send("a1", nos("r1", 1, 30, 5))  # a ClOrdID of a closed order: rests again
    out += s.send("a1", nos("r1", 1, 30, 5))  # now a duplicate of an open one: rejected
    out += s.send("b1", nos("s2", 2, 5, 1, (59, "3")))  # IOC that trades
    out += s.tick(20.0)  # r3 expires
    truth = s.ex.ground_truth("A") + s.ex.ground_truth("B")
    return out, truth


def test_derived_reports_equal_fully_built_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    derived = _scenario()
    calls: list[int] = []
    real_derive = exchange_mod._derive

    def counting(*args: Any) -> ExecRecord:
        calls.append(1)
        return real_derive(*args)

    monkeypatch.setattr(exchange_mod, "_derive", counting)
    assert _scenario() == derived
    assert calls  # the scenario did take the shortcut
    monkeypatch.setattr(exchange_mod, "_same_report_state", lambda *args: False)
    calls.clear()
    plain = _scenario()
    assert not calls
    assert plain == derived
    # Bodies too (Outbound equality covers them) and the record fields, incl. Decimal exponents.
    assert [repr(r) for r in plain[1]] == [repr(r) for r in derived[1]]


def test_derived_record_matches_a_rendered_one() -> None:
    s = Sim(ExchangeConfig(message_cost=0))
    s.connect("a1")
    out = s.send("a1", nos("c1", 1, 30, 5))
    order = s.ex.open_orders("A")[0]
    for orig in (None, "c0"):
        pending = s.ex._record(order, "A", "A", "-1;-1", orig=orig)
        new = _derive(pending, "7;9", "0", "0")
        assert new.body == _render(new, LogonFlags())
        assert (new.exec_id, new.exec_type, new.ord_status) == ("7;9", "0", "0")
        assert pending.exec_id == "-1;-1" and pending.body[2 if orig is None else 3][1] == b"-1;-1"
        fresh = ExecRecord(
            **{a.name: getattr(new, a.name) for a in attrs.fields(ExecRecord) if a.init}
        )
        assert fresh == new
    assert [o.get(150) for o in out] == [b"A", b"0"]


def test_records_built_from_a_dict_equal_those_of_the_constructor() -> None:
    s = Sim(ExchangeConfig(message_cost=0))
    s.connect("a1")
    s.connect("b1")
    s.send("b1", nos("s1", 2, 40, 10))
    s.send("a1", nos("b1", 1, 40, 4))
    records = s.ex.ground_truth("A") + s.ex.ground_truth("B")
    assert {r.exec_type for r in records} >= {"0", "F"}
    names = {a.name for a in attrs.fields(ExecRecord)}
    for rec in records:
        assert set(vars(rec)) == names
        fresh = ExecRecord(**{a.name: getattr(rec, a.name) for a in attrs.fields(ExecRecord) if a.init})
        assert fresh == rec and repr(fresh) == repr(rec)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            rec.exec_id = "x"  # type: ignore[misc]


def test_decimal_texts_are_memoised_without_merging_exponents() -> None:
    assert _dec(b"5", 44) is _dec(b"5", 44)
    five, five_point_o = _dec(b"5", 44), _dec(b"5.0", 44)
    assert five == five_point_o
    assert str(five) == "5" and str(five_point_o) == "5.0"
    with pytest.raises(exchange_mod._FieldProblem):
        _dec(b"NaN", 44)
    with pytest.raises(exchange_mod._FieldProblem):
        _dec(b"NaN", 44)  # refused again: a refusal is not memoised
    assert _dec(b"0.25", 38) == Decimal("0.25")


@pytest.mark.parametrize("flags", [{}, *({name: True} for name in (
    "use_dollars", "preserve_original_order_qty", "use_expired_ord_status",
    "split_collateral_return", "skip_pending_exec_reports", "listener_session",
))])
def test_session_reports_print_as_render_execution_report(flags: dict[str, bool]) -> None:
    s = Sim(ExchangeConfig(message_cost=0))
    s.connect("a1")
    s.connect("a2", **flags)
    s.send("a1", nos("c1", 1, 30, 5))
    rec = s.ex.ground_truth("A")[0]
    sess = s.ex._sessions["a2"]
    assert sess.plain == LogonFlags(**flags).prints_as_default
    assert sess.report(rec) == Outbound("a2", b"8", render_execution_report(rec, sess.flags))
    assert (sess.report(rec).body is rec.body) == sess.plain


def test_each_order_keeps_its_own_ids_in_derived_reports() -> None:
    # The shortcut is keyed on the order object: a second order at the same instant, same
    # price and quantity, gets its own OrderID and ClOrdID in both of its reports.
    s = Sim(ExchangeConfig(message_cost=0))
    s.connect("a1")
    out = s.send("a1", nos("c1", 1, 30, 5)) + s.send("a1", nos("c2", 1, 30, 5))
    ids = [(o.get(11), o.get(37), o.get(150)) for o in out]
    assert [i[0] for i in ids] == [b"c1", b"c1", b"c2", b"c2"]
    assert ids[0][1] == ids[1][1] != ids[2][1] == ids[3][1]
    assert all(o.get(55) == MKT.encode() for o in out)


def test_reports_are_outbound_records_like_those_built_by_name() -> None:
    # _Session.report builds its Outbound straight from a tuple (no generated __new__).
    s = Sim(ExchangeConfig(message_cost=0))
    s.connect("a1")
    out = s.send("a1", nos("c1", 1, 30, 5))
    for o in out:
        assert type(o) is Outbound
        assert o == Outbound(key_id=o.key_id, msg_type=o.msg_type, body=o.body)
        assert o.to_message().pairs[0] == (35, b"8")
        with pytest.raises(AttributeError):
            o.key_id = "x"  # type: ignore[misc]


class _Forgetful(dict):  # type: ignore[type-arg]
    """A memo that never remembers: every lookup misses."""

    def get(self, key: Any, default: Any = None) -> Any:
        return default

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def _price_texts_scenario(forget: bool) -> tuple[list[Outbound], list[str]]:
    """Orders whose price and quantity texts repeat, equal in value but not in text, off the
    grid or out of range, from a cents and a dollars session; every message out and the
    ground truth's reprs (Decimal exponents included)."""
    s = Sim(ExchangeConfig(message_cost=0))
    s.ex.add_market("SUBPENNY", tick="0.001")
    if forget:
        for market in s.ex._markets.values():
            market.prices = (_Forgetful(), _Forgetful())
    s.connect("a1")
    s.connect("b1", use_dollars=True)
    out: list[Outbound] = []
    n = 0
    for key, prices in (
        # "0.5" and "30" mean different prices (or none) to the two sessions.
        ("a1", ("30", "30", "30.0", "30.5", "0", "100", "x", "0.5", "31")),
        ("b1", ("0.3000", "0.3", "0.3", "0.30001", "0.305", "1.0000", "30", "0.5", "0.31")),
    ):
        for qty in ("5", "5", "5.00", "0.5", "0.001", "0", "-1", "2"):
            for price in prices:
                for symbol in (MKT, "SUBPENNY"):
                    n += 1
                    side = 1 + (n // 2) % 2  # both sides in each market
                    out += s.send(key, nos(f"o{n}", side, price, qty, symbol=symbol))
    truth = s.ex.ground_truth("A") + s.ex.ground_truth("B")
    return out, [repr(r) for r in truth]


def test_memoised_price_and_quantity_checks_answer_as_the_plain_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exchange_mod._QTY_ON_GRID.clear()
    memoised = _price_texts_scenario(forget=False)
    assert exchange_mod._QTY_ON_GRID  # the scenario did use the memo
    monkeypatch.setattr(exchange_mod, "_QTY_ON_GRID", _Forgetful())
    plain = _price_texts_scenario(forget=True)
    assert plain == memoised
    kinds_seen = {o.get(150) for o in memoised[0]}
    assert {b"8", b"A", b"0", b"F"} <= kinds_seen  # rejects, rests and trades all covered
