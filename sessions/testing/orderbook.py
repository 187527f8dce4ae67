"""Orders, one market's limit order book, and the wire formats of prices and quantities.

Part of the simulated exchange (:mod:`sessions.testing.exchange`). Every price here is the **Yes**
price in dollars as a :class:`~decimal.Decimal` (REFERENCE §4.2: a buy-Yes at p meets a sell-Yes at
p or lower), whatever unit the client used on the wire. The book keeps price-time priority; the
matching policy (self-trade prevention, order groups, reports) lives in the exchange.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterator
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

import attrs

__all__ = [
    "BUY",
    "SELL",
    "CENT",
    "ONE",
    "ZERO",
    "Order",
    "OrderBook",
    "fmt_money",
    "fmt_price",
    "price_printer",
    "fmt_qty",
    "fmt_cents",
    "ceil_cents",
]

#: Side(54) values: buy Yes / sell Yes (= buy No).
BUY = "1"
SELL = "2"

ZERO = Decimal(0)
ONE = Decimal(1)
CENT = Decimal("0.01")
_QTY_STEP = Decimal("0.01")
_DOLLAR_STEP = Decimal("0.0001")


# Printing a Decimal costs microseconds, and every ExecutionReport prints several of a few
# recurring values (one-lot quantities, a market's prices, zero), so the texts are memoised.
# Each text depends on the number alone, except that Decimal("-0") == Decimal("0") prints
# "-0.00": signed values are never stored, so the one key a signed value can hit is zero's.
# Bounded: emptied when full (values a run keeps using come straight back).
_MEMO_LIMIT = 4096


def _memoised(render: Callable[[Decimal], bytes]) -> Callable[[Decimal], bytes]:
    memo: dict[Decimal, bytes] = {}

    def text(value: Decimal) -> bytes:
        found = memo.get(value)
        if found is not None and (value or not value.is_signed()):
            return found
        found = render(value)
        if not value.is_signed():
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[value] = found
        return found

    functools.update_wrapper(text, render)
    return text


@_memoised
def fmt_qty(qty: Decimal) -> bytes:
    """A quantity with at least two decimals (``14=10.00``; since FIX 1.0.18)."""
    q = qty.quantize(_QTY_STEP)
    if q != qty:  # finer than the 0.01 grid: print every digit rather than round silently
        q = qty.normalize()
    return format(q, "f").encode("ascii")


def fmt_price(price: Decimal, dollars: bool) -> bytes:
    """A Yes price as the client asked for it: 4-decimal dollars (21005=Y) or cents.

    Cent prices print as integers when whole (``44=75``) and with the fraction otherwise (an
    average price, or a sub-cent price a cents session cannot otherwise see).
    """
    return _fmt_dollars(price) if dollars else fmt_cents(price)


def price_printer(dollars: bool) -> Callable[[Decimal], bytes]:
    """:func:`fmt_price` with the unit chosen once (for code printing several prices)."""
    return _fmt_dollars if dollars else fmt_cents


@_memoised
def _fmt_dollars(price: Decimal) -> bytes:
    return format(price.quantize(_DOLLAR_STEP, ROUND_HALF_EVEN), "f").encode("ascii")


@_memoised
def fmt_cents(price: Decimal) -> bytes:
    """A dollar price in cents: ``75`` or ``74.5``."""
    cents = (price * 100).quantize(_DOLLAR_STEP, ROUND_HALF_EVEN)
    if cents == cents.to_integral_value():
        return str(int(cents)).encode("ascii")
    return format(cents.normalize(), "f").encode("ascii")


def fmt_money(amount: Decimal) -> bytes:
    """A dollar amount: two decimals, or four when a sub-cent part is present (since 1.0.27)."""
    if amount == amount.quantize(CENT):
        return format(amount.quantize(CENT), "f").encode("ascii")
    return format(amount.quantize(_DOLLAR_STEP, ROUND_HALF_EVEN), "f").encode("ascii")


def ceil_cents(amount: Decimal) -> Decimal:
    """Round a non-negative dollar amount up to whole cents (how Kalshi rounds fees)."""
    return amount.quantize(CENT, ROUND_CEILING)


@attrs.define(eq=False)
class Order:
    """One order's live state. Mutable: the exchange updates it as requests and fills arrive."""

    order_id: str
    account_id: str
    #: API key that entered it (``None`` for the scripted liquidity provider).
    key_id: str | None
    symbol: str
    exchange_index: int
    side: str
    #: Yes price in dollars.
    price: Decimal
    #: Quantity of the last accepted request (NewOrderSingle or replace).
    order_qty: Decimal
    cl_ord_id: str
    tif: str
    #: Time priority; a new value is drawn when a replace loses priority.
    seq: int
    sub: int = 0
    #: Every ClOrdID the order has had, oldest first (F/G may name any of them, REFERENCE §11 #27).
    chain: list[str] = attrs.Factory(list)
    cum_qty: Decimal = ZERO
    #: Sum of price × quantity over the fills, for AvgPx.
    notional: Decimal = ZERO
    expire_time: float | None = None
    post_only: bool = False
    stp: int = 1
    group_id: str | None = None
    cancel_on_pause: bool = False
    parties: tuple[tuple[int, bytes], ...] = ()
    #: OrdStatus(39) of the order's live state: 0, 1, 2, 4 or C.
    status: str = "0"
    is_open: bool = True
    on_book: bool = False
    #: A New (150=0) or first Trade report has been sent, so the next fill needs no New.
    acked: bool = False
    #: Entry-session options that decide which reports exist (not just how they print).
    emit_new_before_trade: bool = False
    ioc_cancel_report: bool = False
    #: True for the maker leg of an RFQ trade: its reports go to every order-entry session of
    #: the account because the maker's RFQ session carries no ExecutionReports (REFERENCE §11 #23).
    rfq_maker: bool = False
    #: Server QuoteID when the order is a NewOrderSingle accepting an RFQ quote: it never rests,
    #: it waits for the quote's execution timer.
    rfq_quote: str | None = None

    @property
    def leaves_qty(self) -> Decimal:
        """LeavesQty(151): 0 once the order is closed."""
        return self.order_qty - self.cum_qty if self.is_open else ZERO

    @property
    def avg_px(self) -> Decimal:
        """AvgPx(6) in dollars (0 before the first fill)."""
        return self.notional / self.cum_qty if self.cum_qty else ZERO

    def crosses(self, price: Decimal) -> bool:
        """Whether a resting order on the other side at ``price`` can trade with this one."""
        return price <= self.price if self.side == BUY else price >= self.price


def _key(order: Order) -> tuple[Decimal, int]:
    # Best first: highest bid, lowest offer; then the oldest.
    return (-order.price, order.seq) if order.side == BUY else (order.price, order.seq)


class OrderBook:
    """The resting orders of one market, bids and offers in price-time priority."""

    __slots__ = ("_sides",)

    def __init__(self) -> None:
        self._sides: dict[str, tuple[list[tuple[Decimal, int]], list[Order]]] = {
            BUY: ([], []),
            SELL: ([], []),
        }

    def add(self, order: Order) -> None:
        """Rest ``order`` at its price and time priority."""
        keys, orders = self._sides[order.side]
        k = _key(order)
        if not keys or keys[-1] < k:
            # Behind every resting order (the newest at the side's worst price, as most orders
            # that rest are): one comparison instead of a binary search of the whole side.
            keys.append(k)
            orders.append(order)
        else:
            i = bisect.bisect_left(keys, k)
            keys.insert(i, k)
            orders.insert(i, order)
        order.on_book = True

    def remove(self, order: Order) -> None:
        """Take ``order`` off the book (no-op when it is not resting)."""
        if not order.on_book:
            return
        keys, orders = self._sides[order.side]
        i = bisect.bisect_left(keys, _key(order))
        if i < len(orders) and orders[i] is order:
            del keys[i]
            del orders[i]
        order.on_book = False

    def best(self, side: str) -> Order | None:
        """The order with priority on ``side`` (``BUY`` = best bid), or ``None``."""
        orders = self._sides[side][1]
        return orders[0] if orders else None

    def iter_side(self, side: str) -> Iterator[Order]:
        """Resting orders of ``side`` in priority order (a snapshot: safe to modify the book)."""
        return iter(list(self._sides[side][1]))

    def crossing(self, taker: Order) -> Iterator[Order]:
        """Resting orders on the other side that ``taker`` could trade with, in priority order
        (the live book, not a snapshot: do not change the book while iterating)."""
        other = SELL if taker.side == BUY else BUY
        for resting in self._sides[other][1]:
            if not taker.crosses(resting.price):
                return
            yield resting

    def all_orders(self) -> list[Order]:
        """Every resting order, bids then offers, each in priority order."""
        return list(self._sides[BUY][1]) + list(self._sides[SELL][1])

    def __len__(self) -> int:
        return len(self._sides[BUY][1]) + len(self._sides[SELL][1])
