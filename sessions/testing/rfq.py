"""The RFQ lifecycle of the simulated exchange (REFERENCE §9).

Creators work on KalshiRT (R, UA, UE; they receive b, S notifications, UC, UB, AG and the
ExecutionReports), market makers on KalshiRFQ (S, Z, U7; they receive R broadcasts, AI, U9, U8,
AG). An accepted quote must be confirmed within the confirmation window (30 s, 3 s on
high-volatility markets) or it is voided; a confirmed quote executes when the execution timer
(15 s / 1 s) runs out. Both timers run through :meth:`Exchange.tick`.

Choices where the reference is silent are commented where they are made.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

import attrs

from ..message import FixMessage
from .exchange import (
    RFQ,
    Outbound,
    _bool,
    _dec,
    _FieldProblem,
    _int,
    _need,
    _on_qty_grid,
    _Session,
    _text,
    _valid_cl_ord_id,
)
from .orderbook import BUY, CENT, ONE, SELL, ZERO, Order, fmt_price, fmt_qty

if TYPE_CHECKING:  # pragma: no cover
    from .exchange import Exchange, _Market

__all__ = ["RfqDesk"]

# RFQ states: open (quotes welcome) → accepted (a quote awaits the maker's confirmation) →
# confirmed (waiting for the execution timer) → done; or cancelled.
_OPEN, _ACCEPTED, _CONFIRMED, _DONE, _CANCELLED = (
    "open",
    "accepted",
    "confirmed",
    "done",
    "cancelled",
)
# Quote states.
_LIVE, _EXECUTED, _VOIDED = "live", "executed", "voided"


@attrs.define(eq=False)
class _Rfq:
    rfq_id: str
    client_id: str
    account_id: str
    key_id: str
    symbol: str
    qty: Decimal | None
    cash_qty: Decimal | None
    sub: int
    state: str = _OPEN
    #: RFQ sessions the request was broadcast to (they hear about its withdrawal).
    recipients: list[str] = attrs.Factory(list)
    quotes: list[_Quote] = attrs.Factory(list)

    def size(self, cost: Decimal) -> Decimal:
        """Contracts a quote side covers: the RFQ size, or what the target cost buys at ``cost``."""
        if self.qty is not None:
            return self.qty
        if self.cash_qty is None or cost <= 0:
            return ZERO
        return (self.cash_qty / cost).quantize(CENT, rounding=ROUND_FLOOR)


@attrs.define(eq=False)
class _Quote:
    server_id: str
    maker_quote_id: str
    rfq: _Rfq
    account_id: str
    key_id: str
    sub: int
    #: Yes bid and No bid in dollars (0 = that side not quoted).
    yes_bid: Decimal
    no_bid: Decimal
    state: str = _LIVE
    creator_side: str | None = None
    qty: Decimal = ZERO
    creator_key: str | None = None
    creator_cl: str | None = None
    #: Set when the acceptance came as a NewOrderSingle with QuoteID (§9.8).
    creator_order: Order | None = None
    deadline: float | None = None
    execute_at: float | None = None

    def taken_price(self, creator_side: str) -> Decimal:
        """Maker's bid the creator takes: buy Yes (1) takes the No bid, sell Yes (2) the Yes bid."""
        return self.no_bid if creator_side == BUY else self.yes_bid

    def yes_price(self, creator_side: str) -> Decimal:
        """The trade's Yes price."""
        return ONE - self.no_bid if creator_side == BUY else self.yes_bid


def _cents_int(price: Decimal) -> bytes:
    # AI carries integer cents, integer part only (REFERENCE §9.6).
    return str(int(price * 100)).encode()


class RfqDesk:
    """RFQ state and message handlers; owned by an :class:`Exchange`."""

    def __init__(self, exchange: Exchange) -> None:
        self.ex = exchange
        self.rfqs: dict[str, _Rfq] = {}
        self.quotes: dict[str, _Quote] = {}
        #: (maker account, maker QuoteID) → its latest quote.
        self.maker_quotes: dict[tuple[str, str], _Quote] = {}

    # --- creator: QuoteRequest ---------------------------------------------------------------

    def on_quote_request(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        """QuoteRequest (R) from a creator on KalshiRT: ack (b) and broadcast to makers, or AG."""
        ex = self.ex
        client_id = _text(_need(msg, 131))
        n = _need(msg, 146)
        symbol = msg.get_str(55)
        qty = _dec(msg.get(38), 38)
        cash = _dec(msg.get(152), 152)
        _bool(msg.get(21015), 21015)
        replace_existing = _bool(msg.get(21016), 21016) or False
        alloc = _int(msg.get(79), 79)
        mve = msg.get(20180)
        if symbol is None and mve is None:
            raise _FieldProblem(55, 1, "Required tag missing: 55")
        if qty is None and cash is None:
            raise _FieldProblem(38, 1, "Required tag missing: 38 (or 152)")

        def ag(reason: int, text: str) -> None:
            out.append(
                Outbound(
                    sess.key_id,
                    b"AG",
                    ((131, client_id.encode()), (58, text.encode()), (658, str(reason).encode())),
                )
            )

        if n != b"1":
            return ag(99, "NoRelatedSym (146) must be 1")
        if mve is not None:
            return ag(99, "Multivariate (combo) RFQs are not simulated")
        assert symbol is not None
        market = ex._markets.get(symbol)
        if market is None:
            return ag(1, "MARKET_NOT_FOUND")
        closed = ex._market_closed_text(market)
        if closed is not None:
            return ag(99, closed)
        if (qty is not None and not _on_qty_grid(qty)) or (cash is not None and cash <= 0):
            return ag(99, "INVALID_ORDER")
        if alloc is not None and not 0 <= alloc <= 63:
            return ag(99, "CUSTOMER_ACCOUNT_NOT_FOUND")
        mine = [
            r
            for r in self.rfqs.values()
            if r.account_id == sess.account_id
            and r.symbol == symbol
            and r.state != _DONE
            and r.state != _CANCELLED
        ]
        # One open RFQ per market, as REST answers 409; ReplaceExisting closes the older open one.
        # The refusal text is UNCONFIRMED (REFERENCE §9.2).
        if mine and (not replace_existing or any(r.state != _OPEN for r in mine)):
            return ag(99, "RFQ_ALREADY_EXISTS")
        for old in mine:
            self._close_rfq(old, out, text="RFQ_REPLACED")
            # The exchange closed it: an unsolicited RFQCancelStatus "expired" (21013=2).
            if ex.is_connected(old.key_id):
                out.append(
                    Outbound(
                        old.key_id,
                        b"UB",
                        (
                            (131, old.client_id.encode()),
                            (21013, b"2"),
                            (21023, old.rfq_id.encode()),
                        ),
                    )
                )
        rfq = _Rfq(
            rfq_id=ex._uuid(),
            client_id=client_id,
            account_id=sess.account_id,
            key_id=sess.key_id,
            symbol=symbol,
            qty=qty,
            cash_qty=cash,
            sub=alloc or 0,
        )
        self.rfqs[rfq.rfq_id] = rfq
        out.append(
            Outbound(
                sess.key_id,
                b"b",
                (
                    (131, client_id.encode()),
                    (303, b"1"),
                    (21023, rfq.rfq_id.encode()),
                    (100, str(market.exchange_index).encode()),
                ),
            )
        )
        body: list[tuple[int, bytes]] = [
            (131, rfq.rfq_id.encode()),
            (146, b"1"),
            (55, symbol.encode()),
        ]
        if qty is not None:
            body.append((38, fmt_qty(qty)))
        if cash is not None:
            body.append((152, fmt_qty(cash)))
        # The requester appears under its pseudonymous public communications ID (§9.3).
        body += [(453, b"1"), (448, ex._accounts[sess.account_id].public_id.encode())]
        # Makers of the creator's own account are not asked to quote against it.
        for s in sorted(ex._sessions.values(), key=lambda s: s.key_id):
            if s.endpoint == RFQ and s.account_id != sess.account_id:
                rfq.recipients.append(s.key_id)
                out.append(Outbound(s.key_id, b"R", tuple(body)))

    def _close_rfq(self, rfq: _Rfq, out: list[Outbound], *, text: str) -> None:
        """Withdraw an RFQ: live quotes cancelled (AI 17), makers told with AG (our reading, §9.9)."""
        rfq.state = _CANCELLED
        for q in rfq.quotes:
            if q.state in (_LIVE, _ACCEPTED):
                self._cancel_quote(q, out)
        for key in rfq.recipients:
            if self.ex.is_connected(key):
                out.append(
                    Outbound(
                        key, b"AG", ((131, rfq.rfq_id.encode()), (58, text.encode()), (658, b"99"))
                    )
                )

    def _cancel_quote(
        self, quote: _Quote, out: list[Outbound], *, void_text: str = "EXPIRED"
    ) -> None:
        """Cancel a live or accepted quote; an acceptance it carried is voided."""
        was_accepted = quote.state == _ACCEPTED
        quote.state = _CANCELLED if not was_accepted else _VOIDED
        if was_accepted:
            self._void_acceptance(quote, out, void_text)
        if self.ex.is_connected(quote.key_id):
            out.append(Outbound(quote.key_id, b"AI", self._ai(quote, b"17")))

    def _void_acceptance(self, quote: _Quote, out: list[Outbound], text: str) -> None:
        if quote.rfq.state in (_ACCEPTED, _CONFIRMED):
            quote.rfq.state = _OPEN
        order = quote.creator_order
        if order is not None and order.is_open:
            self.ex._cancel(order, out, text=text)

    # --- maker: Quote ------------------------------------------------------------------------

    def _ai(
        self, quote: _Quote, status: bytes, *, accepted: bool = False
    ) -> tuple[tuple[int, bytes], ...]:
        body: list[tuple[int, bytes]] = [
            (117, quote.maker_quote_id.encode()),
            (131, quote.rfq.rfq_id.encode()),
            (297, status),
        ]
        if quote.sub:
            body.append((79, str(quote.sub).encode()))
        if accepted:
            # 54 = the maker's side of the trade: 1 when its Yes bid was taken, 2 when its No bid
            # was (UNCONFIRMED whose side the docs mean).
            assert quote.creator_side is not None
            body += [
                (54, SELL.encode() if quote.creator_side == BUY else BUY.encode()),
                (38, fmt_qty(quote.qty)),
            ]
            return tuple(body)
        if status == b"10":
            rfq = quote.rfq
            if rfq.qty is not None:
                body.append((38, fmt_qty(rfq.qty)))
            if quote.yes_bid:
                body.append((132, _cents_int(quote.yes_bid)))
            if quote.no_bid:
                body.append((133, _cents_int(quote.no_bid)))
            if quote.yes_bid:
                body.append((134, fmt_qty(rfq.size(quote.yes_bid))))
            if quote.no_bid:
                body.append((135, fmt_qty(rfq.size(quote.no_bid))))
        return tuple(body)

    def on_quote(self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]) -> None:
        """Quote (S) from a maker: AI pending (or rejected) and a notification to the creator."""
        ex = self.ex
        mq = _text(_need(msg, 117))
        rid = _text(_need(msg, 131))
        symbol = _text(_need(msg, 55))
        yes_raw = _dec(msg.get(132), 132) or ZERO
        no_raw = _dec(msg.get(133), 133) or ZERO
        alloc = _int(msg.get(79), 79)
        _bool(msg.get(21015), 21015)

        def reject(text: str) -> None:
            # 117 echoes the maker's ID: the docs say "empty", but an empty field is not valid
            # FIX, so the simulator keeps the ID the maker sent.
            out.append(
                Outbound(
                    sess.key_id,
                    b"AI",
                    (
                        (117, mq.encode()),
                        (131, rid.encode()),
                        (297, b"5"),
                        (58, text.encode()),
                    ),
                )
            )

        rfq = self.rfqs.get(rid)
        if rfq is None:
            return reject("RFQ_NOT_FOUND")
        if rfq.state != _OPEN:
            return reject("RFQ_CLOSED")
        if symbol != rfq.symbol:
            return reject("INVALID_QUOTE")
        if rfq.account_id == sess.account_id:
            return reject("SELF_QUOTE")
        if alloc is not None and not 0 <= alloc <= 63:
            return reject("CUSTOMER_ACCOUNT_NOT_FOUND")
        market = ex._markets[rfq.symbol]
        # Maker prices are integer cents per the docs; a maker session with UseDollars quotes in
        # dollars (REFERENCE §11 #11).
        scale = ONE if sess.flags.use_dollars else Decimal(100)
        yes, no = yes_raw / scale, no_raw / scale
        if (yes == 0 and no == 0) or yes < 0 or no < 0 or yes + no > ONE:
            return reject("INVALID_QUOTE")
        if any(p and (p >= ONE or p % market.tick) for p in (yes, no)):
            return reject("INVALID_QUOTE")
        same_id = self.maker_quotes.get((sess.account_id, mq))
        if (
            same_id is not None
            and same_id.state in (_LIVE, _ACCEPTED, _CONFIRMED)
            and same_id.rfq is not rfq
        ):
            return reject("QUOTE_ALREADY_EXISTS")
        for prior in rfq.quotes:
            if prior.account_id == sess.account_id and prior.state in (_LIVE,):
                # A new quote from the same maker replaces its previous one (§9.5).
                prior.state = _CANCELLED
                if prior.maker_quote_id != mq and ex.is_connected(prior.key_id):
                    out.append(Outbound(prior.key_id, b"AI", self._ai(prior, b"17")))
        quote = _Quote(
            server_id=ex._uuid(),
            maker_quote_id=mq,
            rfq=rfq,
            account_id=sess.account_id,
            key_id=sess.key_id,
            sub=alloc or 0,
            yes_bid=yes,
            no_bid=no,
        )
        rfq.quotes.append(quote)
        self.quotes[quote.server_id] = quote
        self.maker_quotes[(sess.account_id, mq)] = quote
        out.append(Outbound(sess.key_id, b"AI", self._ai(quote, b"10")))
        if ex.is_connected(rfq.key_id):
            # The creator sees a server QuoteID (makers' own IDs may collide) and dollar prices.
            body: list[tuple[int, bytes]] = [
                (117, quote.server_id.encode()),
                (131, rfq.rfq_id.encode()),
                (55, rfq.symbol.encode()),
            ]
            if yes:
                body.append((132, fmt_price(yes, True)))
            if no:
                body.append((133, fmt_price(no, True)))
            if rfq.qty is not None:
                body.append((38, fmt_qty(rfq.qty)))
            if yes:
                body.append((134, fmt_qty(rfq.size(yes))))
            if no:
                body.append((135, fmt_qty(rfq.size(no))))
            body += [
                (453, b"1"),
                (448, ex._accounts[sess.account_id].public_id.encode()),
                (452, b"35"),
            ]
            out.append(Outbound(rfq.key_id, b"S", tuple(body)))

    # --- creator: AcceptQuote / NewOrderSingle with QuoteID ----------------------------------

    def _acceptable(
        self, account_id: str, quote_id: str, rfq_id: str | None, side: str, prefer_better: bool
    ) -> tuple[_Quote | None, str | None]:
        """(quote to accept, None) or (None, reject text)."""
        quote = self.quotes.get(quote_id)
        if (
            quote is None
            or quote.rfq.account_id != account_id
            or (rfq_id is not None and rfq_id != quote.rfq.rfq_id)
        ):
            return None, "NOT_FOUND"
        rfq = quote.rfq
        if quote.state != _LIVE or rfq.state != _OPEN:
            return None, "EXPIRED"
        if prefer_better:
            for other in rfq.quotes:
                if other.state == _LIVE and other.taken_price(side) > quote.taken_price(side):
                    quote = other
        if quote.taken_price(side) <= 0:
            return None, "INVALID_ORDER"
        market = self.ex._markets[rfq.symbol]
        if self.ex._market_closed_text(market) is not None:
            return None, self.ex._market_closed_text(market)
        return quote, None

    def _accept(
        self,
        quote: _Quote,
        side: str,
        qty: Decimal,
        creator_key: str,
        creator_cl: str,
        out: list[Outbound],
    ) -> None:
        ex = self.ex
        rfq = quote.rfq
        market = ex._markets[rfq.symbol]
        quote.state = _ACCEPTED
        rfq.state = _ACCEPTED
        quote.creator_side = side
        quote.qty = qty
        quote.creator_key = creator_key
        quote.creator_cl = creator_cl
        window = (
            ex.config.rfq_confirm_window_hvm
            if market.high_volatility
            else ex.config.rfq_confirm_window
        )
        quote.deadline = ex._now + window
        ex._add_timer(quote.deadline, "rfq_confirm", quote.server_id)
        if ex.is_connected(quote.key_id):
            out.append(Outbound(quote.key_id, b"AI", self._ai(quote, b"0", accepted=True)))

    def on_accept_quote(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        """AcceptQuote (UA): UC to the creator, AI accepted to the maker; starts the window."""
        qid = _text(_need(msg, 117))
        side = _text(_need(msg, 54))
        rfq_id = msg.get_str(21023)
        qty = _dec(msg.get(38), 38)
        cl = msg.get_str(11)
        prefer = _bool(msg.get(21022), 21022) or False

        def uc(status: bytes, text: str | None = None, accepted: str | None = None) -> None:
            body: list[tuple[int, bytes]] = [(117, qid.encode()), (21025, status)]
            if accepted is not None:
                body.append((21024, accepted.encode()))
            if cl is not None:
                body.append((11, cl.encode()))
            if text is not None:
                body.append((58, text.encode()))
            out.append(Outbound(sess.key_id, b"UC", tuple(body)))

        if side not in (BUY, SELL) or (cl is not None and not _valid_cl_ord_id(cl)):
            return uc(b"1", "INVALID_ORDER")
        quote, problem = self._acceptable(sess.account_id, qid, rfq_id, side, prefer)
        if quote is None:
            return uc(b"1", problem)
        available = quote.rfq.size(quote.taken_price(side))
        take = qty if qty is not None else available
        if not _on_qty_grid(take) or take > available:
            return uc(b"1", "INVALID_ORDER")
        uc(b"0", accepted=quote.server_id)
        # Without a ClOrdID the creator's ExecutionReports carry the server QuoteID as ClOrdID.
        self._accept(quote, side, take, sess.key_id, cl or quote.server_id, out)

    def on_order_with_quote(
        self,
        sess: _Session,
        msg: FixMessage,
        cl: str,
        side: str,
        qty: Decimal,
        price: Decimal,
        reject: Callable[..., None],
        out: list[Outbound],
    ) -> None:
        """NewOrderSingle with QuoteID (117): the alternative accept path (REFERENCE §9.8).

        A stale or unknown quote is an ER reject ``103=8 58=EXPIRED``. Otherwise the order is
        acknowledged as pending and fills at the quote's price when the quote executes; if the
        acceptance is voided the order is cancelled with ``58=EXPIRED``.
        """
        ex = self.ex
        quote, problem = self._acceptable(
            sess.account_id, _text(msg.get(117) or b""), msg.get_str(21023), side, False
        )
        if quote is None:
            return (
                reject(8, "EXPIRED")
                if problem in ("NOT_FOUND", "EXPIRED")
                else reject(11, problem or "INVALID_ORDER")
            )
        if qty > quote.rfq.size(quote.taken_price(side)):
            return reject(13, "INVALID_ORDER")
        market = ex._markets[quote.rfq.symbol]
        yes_price = quote.yes_price(side)
        order = ex._new_order(
            account_id=sess.account_id,
            key_id=sess.key_id,
            market=market,
            side=side,
            price=yes_price,
            qty=qty,
            cl_ord_id=cl,
            tif="3",
            sub=quote.rfq.sub,
            emit_new_before_trade=sess.flags.always_emit_new_before_trade,
            rfq_quote=quote.server_id,
        )
        ex._register(order)
        ex._pending(order, "A", out)
        quote.creator_order = order
        self._accept(quote, side, qty, sess.key_id, cl, out)

    # --- creator: RFQCancel ------------------------------------------------------------------

    def on_rfq_cancel(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        """RFQCancel (UE) by client or server RFQ ID: UB, and the RFQ is withdrawn from makers."""
        client = msg.get_str(131)
        rid = msg.get_str(21023)
        if client is None and rid is None:
            raise _FieldProblem(131, 1, "Required tag missing: 131 (or 21023)")
        rfq: _Rfq | None = None
        if rid is not None:
            rfq = self.rfqs.get(rid)
        else:
            for r in self.rfqs.values():
                if r.account_id == sess.account_id and r.client_id == client:
                    rfq = r  # the latest RFQ with that client ID
        used = client if client is not None else rid
        assert used is not None

        def ub(status: bytes, text: str | None = None) -> None:
            body: list[tuple[int, bytes]] = [(131, used.encode()), (21013, status)]
            ref = rfq.rfq_id if rfq is not None else rid
            if ref is not None:
                body.append((21023, ref.encode()))
            if text is not None:
                body.append((58, text.encode()))
            out.append(Outbound(sess.key_id, b"UB", tuple(body)))

        if rfq is not None and rfq.account_id != sess.account_id:
            rfq = None  # another member's RFQ: not even its ID is echoed
        if rfq is None or rfq.state == _CANCELLED:
            return ub(b"1", "NOT_FOUND")
        if rfq.state in (_CONFIRMED, _DONE):
            return ub(b"1", "TOO_LATE")
        self._close_rfq(rfq, out, text="RFQ_CANCELLED")
        ub(b"0")

    # --- maker: QuoteCancel / QuoteConfirm ---------------------------------------------------

    def _maker_quote(self, sess: _Session, msg: FixMessage) -> tuple[str, _Quote | None]:
        mq = _text(_need(msg, 117))
        rid = msg.get_str(21023)
        quote = self.maker_quotes.get((sess.account_id, mq))
        if quote is not None and rid is not None and quote.rfq.rfq_id != rid:
            quote = None
        return mq, quote

    def on_quote_cancel(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        """QuoteCancel (Z): U9, plus AI cancelled; an unconfirmed acceptance is voided."""
        mq, quote = self._maker_quote(sess, msg)

        def u9(status: bytes, text: str | None = None) -> None:
            body: list[tuple[int, bytes]] = [(117, mq.encode()), (298, status)]
            if text is not None:
                body.append((58, text.encode()))
            out.append(Outbound(sess.key_id, b"U9", tuple(body)))

        if quote is None or quote.state in (_CANCELLED, _VOIDED):
            return u9(b"1", "NOT_FOUND")
        if quote.state in (_CONFIRMED, _EXECUTED):
            return u9(b"1", "TOO_LATE")
        u9(b"0")
        self._cancel_quote(quote, out)

    def on_quote_confirm(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        """QuoteConfirm (U7) inside the window: U8 and the execution timer starts."""
        mq, quote = self._maker_quote(sess, msg)

        def u8(status: bytes, text: str | None = None) -> None:
            body: list[tuple[int, bytes]] = [(117, mq.encode()), (21010, status)]
            if text is not None:
                body.append((58, text.encode()))
            out.append(Outbound(sess.key_id, b"U8", tuple(body)))

        if quote is None or quote.state == _CANCELLED:
            return u8(b"1", "NOT_FOUND")
        if quote.state == _VOIDED:
            return u8(b"1", "EXPIRED")
        if quote.state != _ACCEPTED:
            return u8(b"1", "QUOTE_NOT_ACCEPTED")
        ex = self.ex
        market = ex._markets[quote.rfq.symbol]
        quote.state = _CONFIRMED
        quote.rfq.state = _CONFIRMED
        delay = (
            ex.config.rfq_execution_delay_hvm
            if market.high_volatility
            else ex.config.rfq_execution_delay
        )
        quote.execute_at = ex._now + delay
        ex._add_timer(quote.execute_at, "rfq_execute", quote.server_id)
        u8(b"0")

    # --- timers ------------------------------------------------------------------------------

    def timer_live(self, kind: str, ref: str, when: float) -> bool:
        """Whether a queued RFQ timer still applies (the quote is still in that state)."""
        quote = self.quotes.get(ref)
        if quote is None:
            return False
        if kind == "rfq_confirm":
            return quote.state == _ACCEPTED and quote.deadline == when
        if kind == "rfq_execute":
            return quote.state == _CONFIRMED and quote.execute_at == when
        return False

    def fire_timer(self, kind: str, ref: str, out: list[Outbound]) -> None:
        """Run an RFQ timer: void an unconfirmed acceptance, or execute a confirmed quote."""
        quote = self.quotes[ref]
        if kind == "rfq_confirm":
            # Not confirmed in time: the acceptance is voided; the docs name no message to the
            # creator (an order accepted through NOS is cancelled with 58=EXPIRED).
            quote.state = _VOIDED
            self._void_acceptance(quote, out, "EXPIRED")
            if self.ex.is_connected(quote.key_id):
                out.append(Outbound(quote.key_id, b"AI", self._ai(quote, b"17")))
            return
        self._execute(quote, out)

    def _execute(self, quote: _Quote, out: list[Outbound]) -> None:
        ex = self.ex
        rfq = quote.rfq
        market: _Market = ex._markets[rfq.symbol]
        order = quote.creator_order
        if ex._market_closed_text(market) is not None or (order is not None and not order.is_open):
            quote.state = _VOIDED
            self._void_acceptance(quote, out, ex._market_closed_text(market) or "EXPIRED")
            return
        assert (
            quote.creator_side is not None
            and quote.creator_key is not None
            and quote.creator_cl is not None
        )
        quote.state = _EXECUTED
        rfq.state = _DONE
        ex._rfq_trade(
            creator_account=rfq.account_id,
            creator_key=quote.creator_key,
            creator_cl=quote.creator_cl,
            creator_side=quote.creator_side,
            creator_sub=rfq.sub,
            maker_account=quote.account_id,
            maker_key=quote.key_id,
            maker_cl=quote.maker_quote_id,
            maker_sub=quote.sub,
            market=market,
            yes_price=quote.yes_price(quote.creator_side),
            qty=quote.qty,
            out=out,
            creator_order=order,
        )
        for other in rfq.quotes:
            if other.state == _LIVE:
                self._cancel_quote(other, out)
