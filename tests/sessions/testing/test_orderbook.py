"""Order book priority and the wire formats of prices and quantities."""

from __future__ import annotations

import random
from decimal import Decimal

import attrs

from sessions.testing.orderbook import (
    BUY,
    SELL,
    Order,
    OrderBook,
    ceil_cents,
    fmt_cents,
    fmt_money,
    fmt_price,
    fmt_qty,
)


def _order(seq: int, side: str, price: str, qty: str = "1") -> Order:
    return Order(
        order_id=f"o{seq}",
        account_id="A",
        key_id="k",
        symbol="M",
        exchange_index=0,
        side=side,
        price=Decimal(price),
        order_qty=Decimal(qty),
        cl_ord_id=f"c{seq}",
        tif="1",
        seq=seq,
    )


def test_price_time_priority_per_side() -> None:
    book = OrderBook()
    orders = [
        _order(1, BUY, "0.40"),
        _order(2, BUY, "0.42"),
        _order(3, BUY, "0.40"),
        _order(4, SELL, "0.50"),
        _order(5, SELL, "0.45"),
        _order(6, SELL, "0.45"),
    ]
    for o in orders:
        book.add(o)
    assert [o.seq for o in book.iter_side(BUY)] == [2, 1, 3]
    assert [o.seq for o in book.iter_side(SELL)] == [5, 6, 4]
    assert book.best(BUY) is orders[1] and book.best(SELL) is orders[4]
    assert len(book) == 6


def test_crossing_stops_at_the_limit_and_remove() -> None:
    book = OrderBook()
    asks = [_order(1, SELL, "0.45"), _order(2, SELL, "0.46"), _order(3, SELL, "0.50")]
    for o in asks:
        book.add(o)
    taker = _order(9, BUY, "0.46")
    assert [o.seq for o in book.crossing(taker)] == [1, 2]
    book.remove(asks[0])
    book.remove(asks[0])  # no-op when not resting
    assert not asks[0].on_book and [o.seq for o in book.crossing(taker)] == [2]
    assert book.all_orders() == asks[1:]


def test_order_leaves_and_average() -> None:
    o = _order(1, BUY, "0.40", "10")
    o.cum_qty, o.notional = Decimal(4), Decimal("1.64")
    assert o.leaves_qty == 6 and o.avg_px == Decimal("0.41")
    o.is_open = False
    assert o.leaves_qty == 0
    assert o.crosses(Decimal("0.40")) and not o.crosses(Decimal("0.41"))


def test_memoised_formats_tell_negative_zero_from_zero() -> None:
    # The texts are memoised by value; -0 equals 0 but prints with its sign (a position that
    # went flat can be -0), so whichever comes first must not answer for the other.
    assert fmt_qty(Decimal(0)) == b"0.00" and fmt_qty(Decimal("-0")) == b"-0.00"
    assert fmt_qty(Decimal("-0.00")) == b"-0.00" and fmt_qty(Decimal("0.00")) == b"0.00"
    assert fmt_money(Decimal("-0")) == b"-0.00" and fmt_money(Decimal(0)) == b"0.00"
    # Equal values with different exponents print alike, so sharing a memo entry is right.
    assert fmt_qty(Decimal("1.000")) == fmt_qty(Decimal(1)) == b"1.00"


def test_formats() -> None:
    assert fmt_qty(Decimal(10)) == b"10.00" and fmt_qty(Decimal("2.5")) == b"2.50"
    assert fmt_qty(Decimal("0.125")) == b"0.125"
    assert (
        fmt_price(Decimal("0.75"), False) == b"75" and fmt_price(Decimal("0.75"), True) == b"0.7500"
    )
    assert fmt_price(Decimal("0.0123"), True) == b"0.0123"
    assert fmt_cents(Decimal("0.725")) == b"72.5" and fmt_cents(Decimal(0)) == b"0"
    assert fmt_money(Decimal("-2.4")) == b"-2.40" and fmt_money(Decimal("0.001")) == b"0.0010"
    assert ceil_cents(Decimal("0.0672")) == Decimal("0.07") and ceil_cents(
        Decimal("0.07")
    ) == Decimal("0.07")


def test_fields_without_default_keep_their_order() -> None:
    # Exchange._new_order passes these by position (keywords cost several times as much on
    # the order path): reordering them must be a deliberate change there too.
    required = [f.name for f in attrs.fields(Order) if f.default is attrs.NOTHING]
    assert required == [
        "order_id", "account_id", "key_id", "symbol", "exchange_index", "side", "price",
        "order_qty", "cl_ord_id", "tif", "seq",
    ]


def test_book_order_does_not_depend_on_arrival() -> None:
    # Orders joining the back of a side take a shortcut past the binary search; the result
    # must be price-time priority all the same.
    rng = random.Random(7)
    orders = [_order(seq, rng.choice([BUY, SELL]), f"0.{rng.randint(1, 9)}0") for seq in range(200)]
    book = OrderBook()
    for o in orders:
        book.add(o)
    for side, best_first in ((BUY, lambda o: (-o.price, o.seq)), (SELL, lambda o: (o.price, o.seq))):
        expected = sorted((o for o in orders if o.side == side), key=best_first)
        assert list(book.iter_side(side)) == expected
