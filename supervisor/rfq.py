"""RFQ handles for the application: the creator on KalshiRT, the market maker on KalshiRFQ.

Creator (REFERENCE §9.1–§9.4, §9.8): :meth:`RfqCreator.request` sends a QuoteRequest (35=R) and
returns an :class:`RfqHandle` that follows it — the QuoteRequestAck (35=b) with the server's RFQ
id, QuoteRequestReject (35=AG), quote notifications (35=S), AcceptQuote answers (35=UC) and
RFQCancel answers (35=UB, including the unsolicited "expired"). :meth:`RfqHandle.accept` takes a
quote (35=UA) and :meth:`RfqHandle.cancel` withdraws the RFQ (35=UE). The resulting trades arrive
as ExecutionReports on the executions stream like any other.

Maker (§9.3, §9.5–§9.7): :attr:`RfqMaker.requests` fans out the RFQ broadcasts (35=R) as
:class:`IncomingRfq`; :meth:`RfqMaker.quote` sends a Quote (35=S) and returns a
:class:`QuoteHandle` following its QuoteStatusReports (35=AI: pending, rejected, accepted,
cancelled); :meth:`QuoteHandle.confirm` (35=U7 → 35=U8) and :meth:`QuoteHandle.cancel`
(35=Z → 35=U9). An accepted quote must be confirmed within the confirmation window (30 s; 3 s on
high-volatility markets) — :meth:`QuoteHandle.wait_accepted` is the hook for that.

Both sides share the kill switch's gate (creating an RFQ, accepting a quote and quoting create
exposure; cancelling does not) and the client-side rate limiter (the RFQ flow draws on the Write
bucket, REFERENCE §9.10). As for orders, nothing is queued while the session is down: the call
raises :class:`~supervisor.observer.SessionNotActive`. A session that drops fails every waiter
with :class:`~supervisor.orderentry.OutcomeUnknown` — an RFQ or quote sent just before may or
may not exist at the exchange (RFQ state is not replayed by the drop copy).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import attrs
import trio

from sessions.events import ApplicationMessage
from sessions.message import FixMessage, Value

from .errors import SupervisorError
from .killswitch import TradingGate
from .observer import ObserverBase, SessionDown, SessionHandle, SessionNotActive
from .orderentry import OutcomeUnknown
from .ratelimit import RateLimiter
from .streams import Fanout, Subscription

__all__ = [
    "AcceptResult",
    "CancelResult",
    "IncomingRfq",
    "QuoteHandle",
    "QuoteNotice",
    "QuoteStatus",
    "RfqCreator",
    "RfqHandle",
    "RfqMaker",
    "RfqRejected",
]

_QUOTE_STATUS = {"0": "accepted", "5": "rejected", "10": "pending", "17": "cancelled"}


class RfqRejected(SupervisorError):
    """The exchange refused an RFQ (35=AG); ``text`` and ``reason`` (658) say why."""

    def __init__(self, quote_req_id: str, reason: str | None, text: str | None) -> None:
        self.quote_req_id = quote_req_id
        self.reason = reason
        self.text = text
        super().__init__(f"RFQ {quote_req_id} refused: {text or 'no reason given'} (658={reason})")


@attrs.frozen
class QuoteNotice:
    """A maker's quote as the creator sees it (35=S on KalshiRT). Prices are in dollars; a side
    not quoted is ``None``. ``yes_bid`` is the maker's Yes bid (taken by selling Yes),
    ``no_bid`` its No bid (taken by buying Yes)."""

    quote_id: str
    rfq_id: str
    symbol: str | None
    yes_bid: Decimal | None
    no_bid: Decimal | None
    qty: Decimal | None
    yes_size: Decimal | None
    no_size: Decimal | None
    message: FixMessage = attrs.field(eq=False, repr=False)


@attrs.frozen
class AcceptResult:
    """AcceptQuoteStatus (35=UC): ``accepted``, the quote actually accepted (may differ with
    PreferBetterQuote), the echoed ClOrdID, and the reason when refused."""

    quote_id: str
    accepted: bool
    accepted_quote_id: str | None
    cl_ord_id: str | None
    text: str | None


@attrs.frozen
class CancelResult:
    """RFQCancelStatus (35=UB) or QuoteCancelStatus (35=U9) / QuoteConfirmStatus (35=U8):
    ``status`` as the exchange gave it, ``ok`` when it is 0 (done)."""

    ref: str
    status: str | None
    ok: bool
    text: str | None


@attrs.frozen
class IncomingRfq:
    """An RFQ broadcast to makers (35=R on KalshiRFQ)."""

    rfq_id: str
    symbol: str | None
    qty: Decimal | None
    cash_qty: Decimal | None
    requester: str | None
    session: str
    message: FixMessage = attrs.field(eq=False, repr=False)


@attrs.frozen
class QuoteStatus:
    """A QuoteStatusReport (35=AI) for one of our quotes."""

    quote_id: str
    rfq_id: str | None
    status: str  # accepted / rejected / pending / cancelled / unknown code
    side: str | None
    qty: Decimal | None
    text: str | None
    message: FixMessage = attrs.field(eq=False, repr=False)


def _dec(msg: FixMessage, tag: int) -> Decimal | None:
    v = msg.get(tag)
    if v is None or v == b"":
        return None
    try:
        return Decimal(v.decode("ascii"))
    except (ArithmeticError, UnicodeDecodeError, ValueError):
        return None


class _Reply:
    """One awaited answer."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()

    async def wait(self, timeout: float | None, what: str) -> Any:
        if timeout is None:
            await self.event.wait()
        else:
            with trio.move_on_after(timeout):
                await self.event.wait()
        if not self.event.is_set():
            raise OutcomeUnknown(f"no answer to the {what} within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.value


class _Sender:
    """Shared send path: gate, rate limiter, active check, send (no await in between)."""

    def __init__(self, gate: TradingGate | None, limiter: RateLimiter | None) -> None:
        self.gate = gate if gate is not None else TradingGate()
        self.limiter = limiter

    async def send(
        self, handle: SessionHandle, msg_type: str, body: list[tuple[int, Value]], *,
        exposure: str | None,
    ) -> int:
        if exposure is not None:
            self.gate.check(exposure)
        if not handle.active:
            raise SessionNotActive(
                f"session {handle.name} is not logged on; the {msg_type} was not sent "
                "(nothing is queued — wait for the session and try again)"
            )
        shard = None
        if self.limiter is not None:
            shard = await self.limiter.acquire(msg_type, body, session=handle.name)
        closed = exposure is not None and not self.gate.open
        if closed or not handle.active:
            if self.limiter is not None:
                self.limiter.refund(shard)
            if exposure is not None:
                self.gate.check(exposure)  # raises when the gate closed meanwhile
            raise SessionNotActive(f"session {handle.name} went down; the {msg_type} was not sent")
        # No await since the last check: the message goes out now or raises SessionNotActive.
        return handle.send_app(msg_type, body)


# ----------------------------------------------------------------------------- creator


class RfqHandle:
    """One RFQ we created (see module docstring). ``rfq_id`` is set once acknowledged."""

    def __init__(self, creator: RfqCreator, session: str, quote_req_id: str, symbol: str) -> None:
        self._creator = creator
        self.session = session
        self.quote_req_id = quote_req_id
        self.symbol = symbol
        self.rfq_id: str | None = None
        #: ``pending`` (sent) → ``open`` (acknowledged) → ``cancelled`` / ``expired`` /
        #: ``rejected``; ``unknown`` when the session dropped before the acknowledgement.
        self.state = "pending"
        self.rejection: RfqRejected | None = None
        self.quotes: dict[str, QuoteNotice] = {}
        self._quote_list: list[QuoteNotice] = []
        self._quote_cursor = 0
        self._quote_arrived = trio.Event()
        self._lost_error: OutcomeUnknown | None = None
        self._ack = _Reply()
        self._accepts: dict[str, _Reply] = {}
        self._cancel: _Reply | None = None
        #: Every message about this RFQ, as it arrives.
        self.events: Fanout[Any] = Fanout(history=100)

    def subscribe(self) -> Subscription[Any]:
        """A reader of this RFQ's events (QuoteNotice, AcceptResult, CancelResult, ...)."""
        return self.events.subscribe()

    async def wait_ack(self, timeout: float | None = 10.0) -> str:
        """The server RFQ id once acknowledged; raises :class:`RfqRejected` or
        :class:`OutcomeUnknown`."""
        value: str = await self._ack.wait(timeout, f"QuoteRequest {self.quote_req_id}")
        return value

    async def next_quote(self, timeout: float | None = None) -> QuoteNotice:
        """The next quote notification in arrival order (each one once), waiting for it if
        none is left; every quote received so far is also in ``quotes``."""
        with trio.fail_after(timeout) if timeout is not None else _null():
            while self._quote_cursor >= len(self._quote_list):
                if self._lost_error is not None:
                    raise self._lost_error
                await self._quote_arrived.wait()
        notice = self._quote_list[self._quote_cursor]
        self._quote_cursor += 1
        return notice

    async def accept(
        self,
        quote_id: str,
        side: str | int,
        qty: Decimal | int | str | None = None,
        *,
        cl_ord_id: str | None = None,
        prefer_better: bool = False,
        timeout: float | None = 10.0,
    ) -> AcceptResult:
        """AcceptQuote (35=UA). ``side`` 1/``buy`` = buy Yes (takes the maker's No bid),
        2/``sell`` = sell Yes (takes its Yes bid). Returns the AcceptQuoteStatus."""
        side_code = {"1": "1", "2": "2", "buy": "1", "sell": "2"}.get(str(side).lower())
        if side_code is None:
            raise ValueError(f"side must be buy/sell (1/2), got {side!r}")
        body: list[tuple[int, Value]] = [(117, quote_id)]
        if self.rfq_id is not None:
            body.append((21023, self.rfq_id))  # recommended since 2026-06-25 (§9.7)
        body.append((54, side_code))
        if qty is not None:
            body.append((38, str(qty)))
        cl = cl_ord_id or str(uuid.uuid4())
        body.append((11, cl))
        if prefer_better:
            body.append((21022, "Y"))
        reply = self._accepts[quote_id] = _Reply()
        handle = self._creator.handles[self.session]
        try:
            await self._creator._sender.send(handle, "UA", body, exposure="quote acceptance")
        except BaseException:
            self._accepts.pop(quote_id, None)
            raise
        result: AcceptResult = await reply.wait(timeout, f"AcceptQuote {quote_id}")
        return result

    async def cancel(self, *, timeout: float | None = 10.0) -> CancelResult:
        """RFQCancel (35=UE) by server id when known, else by our QuoteReqID."""
        body: list[tuple[int, Value]] = (
            [(21023, self.rfq_id)] if self.rfq_id is not None else [(131, self.quote_req_id)]
        )
        self._cancel = _Reply()
        handle = self._creator.handles[self.session]
        await self._creator._sender.send(handle, "UE", body, exposure=None)
        result: CancelResult = await self._cancel.wait(timeout, f"RFQCancel {self.quote_req_id}")
        return result

    # -- fed by RfqCreator
    def _on(self, item: Any) -> None:
        self.events.publish(item)

    def _lost(self, error: OutcomeUnknown) -> None:
        if self.state == "pending":
            self.state = "unknown"
        self._lost_error = error
        self._ack.fail(error)
        for reply in self._accepts.values():
            reply.fail(error)
        if self._cancel is not None:
            self._cancel.fail(error)
        self._quote_arrived.set()
        self._quote_arrived = trio.Event()


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class RfqCreator(ObserverBase):
    """RFQ creation on KalshiRT sessions (module docstring)."""

    def __init__(
        self,
        *,
        gate: TradingGate | None = None,
        limiter: RateLimiter | None = None,
        session: str | None = None,
    ) -> None:
        self._sender = _Sender(gate, limiter)
        self.session = session
        self.handles: dict[str, SessionHandle] = {}
        self._by_client: dict[str, RfqHandle] = {}
        self._by_server: dict[str, RfqHandle] = {}

    def _sessions(self) -> list[str]:
        return [
            n for n, h in self.handles.items()
            if h.config.profile.name == "KalshiRT" and not h.config.logon.listener_session
        ]

    def _pick(self, session: str | None) -> SessionHandle:
        name = session or self.session
        if name is not None:
            if name not in self._sessions():
                raise SupervisorError(
                    f"RFQs are created on KalshiRT; {name!r} is not a KalshiRT session "
                    f"(KalshiRT sessions: {', '.join(self._sessions()) or 'none'})"
                )
            return self.handles[name]
        names = self._sessions()
        if not names:
            raise SupervisorError("RFQ creation needs a KalshiRT session; none is configured")
        for n in names:
            if self.handles[n].active:
                return self.handles[n]
        raise SessionNotActive(
            f"no KalshiRT session is logged on ({', '.join(names)}); nothing is queued — wait "
            "for one and try again"
        )

    async def request(
        self,
        symbol: str,
        qty: Decimal | int | str | None = None,
        *,
        cash_qty: Decimal | int | str | None = None,
        rest_remainder: bool | None = None,
        replace_existing: bool | None = None,
        subaccount: int | None = None,
        quote_req_id: str | None = None,
        session: str | None = None,
    ) -> RfqHandle:
        """Send a QuoteRequest (35=R) for ``qty`` contracts (or ``cash_qty`` dollars) of
        ``symbol``; returns its handle (``await handle.wait_ack()`` for the server id)."""
        if (qty is None) == (cash_qty is None):
            raise ValueError("give exactly one of qty (contracts) and cash_qty (dollars)")
        handle = self._pick(session)
        client = quote_req_id or str(uuid.uuid4())
        if client in self._by_client:
            raise ValueError(f"QuoteReqID {client!r} was already used")
        body: list[tuple[int, Value]] = [(131, client)]
        if subaccount is not None:
            body.append((79, subaccount))
        # Inside the NoRelatedSym group: 55 first (the delimiter), then the group's fields;
        # 21015/21016 outside the group are silently ignored by Kalshi (§9.2).
        body += [(146, 1), (55, symbol)]
        if qty is not None:
            body.append((38, str(qty)))
        if cash_qty is not None:
            body.append((152, str(cash_qty)))
        if rest_remainder is not None:
            body.append((21015, bool(rest_remainder)))
        if replace_existing is not None:
            body.append((21016, bool(replace_existing)))
        rfq = RfqHandle(self, handle.name, client, symbol)
        self._by_client[client] = rfq
        try:
            await self._sender.send(handle, "R", body, exposure="RFQ creation")
        except BaseException:
            del self._by_client[client]
            raise
        return rfq

    def rfq(self, rfq_id: str) -> RfqHandle | None:
        """The handle of an RFQ by server or client id."""
        return self._by_server.get(rfq_id) or self._by_client.get(rfq_id)

    def session_down(self, down: SessionDown) -> None:
        error = OutcomeUnknown(f"session {down.name} went down; RFQ state is unknown")
        for rfq in list(self._by_client.values()):
            if rfq.session == down.name:
                rfq._lost(error)

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        msg = event.message
        mt = msg.get(35)
        if mt == b"b":
            rfq = self._by_client.get(msg.get_str(131) or "")
            if rfq is not None:
                rfq.rfq_id = msg.get_str(21023)
                rfq.state = "open"
                if rfq.rfq_id is not None:
                    self._by_server[rfq.rfq_id] = rfq
                rfq._ack.set(rfq.rfq_id)
                rfq._on(("ack", rfq.rfq_id))
        elif mt == b"AG":
            ref = msg.get_str(131) or ""
            rfq = self._by_client.get(ref) or self._by_server.get(ref)
            if rfq is not None:
                err = RfqRejected(rfq.quote_req_id, msg.get_str(658), msg.get_str(58))
                if rfq.state == "pending":
                    rfq.state = "rejected"
                    rfq.rejection = err
                    rfq._ack.fail(err)
                else:
                    rfq.state = "cancelled"
                rfq._on(err)
        elif mt == b"S":
            rfq = self._by_server.get(msg.get_str(131) or "")
            if rfq is not None:
                notice = QuoteNotice(
                    quote_id=msg.get_str(117) or "",
                    rfq_id=msg.get_str(131) or "",
                    symbol=msg.get_str(55),
                    yes_bid=_dec(msg, 132),
                    no_bid=_dec(msg, 133),
                    qty=_dec(msg, 38),
                    yes_size=_dec(msg, 134),
                    no_size=_dec(msg, 135),
                    message=msg,
                )
                rfq.quotes[notice.quote_id] = notice
                rfq._quote_list.append(notice)
                rfq._quote_arrived.set()
                rfq._quote_arrived = trio.Event()
                rfq._on(notice)
        elif mt == b"UC":
            qid = msg.get_str(117) or ""
            result = AcceptResult(
                quote_id=qid,
                accepted=msg.get(21025) == b"0",
                accepted_quote_id=msg.get_str(21024),
                cl_ord_id=msg.get_str(11),
                text=msg.get_str(58),
            )
            for rfq in self._by_client.values():
                reply = rfq._accepts.pop(qid, None)
                if reply is not None or qid in rfq.quotes:
                    if reply is not None:
                        reply.set(result)
                    rfq._on(result)
                    break
        elif mt == b"UB":
            ref = msg.get_str(131) or ""
            server = msg.get_str(21023)
            rfq = self._by_client.get(ref) or self._by_server.get(ref) or (
                self._by_server.get(server) if server else None
            )
            if rfq is not None:
                status = msg.get_str(21013)
                cancelled = CancelResult(ref, status, status == "0", msg.get_str(58))
                if status == "0":
                    rfq.state = "cancelled"
                elif status == "2":
                    rfq.state = "expired"
                if rfq._cancel is not None:
                    rfq._cancel.set(cancelled)
                rfq._on(cancelled)


# ----------------------------------------------------------------------------- maker


class QuoteHandle:
    """One quote we sent as a maker (see module docstring)."""

    def __init__(self, maker: RfqMaker, session: str, quote_id: str, rfq_id: str) -> None:
        self._maker = maker
        self.session = session
        self.quote_id = quote_id
        self.rfq_id = rfq_id
        #: ``sent`` → ``pending`` → ``accepted`` / ``rejected`` / ``cancelled``; ``unknown``
        #: after a disconnect before any status.
        self.status = "sent"
        self.last: QuoteStatus | None = None
        self._changed = trio.Event()
        self._cancel: _Reply | None = None
        self._confirm: _Reply | None = None
        self.events: Fanout[Any] = Fanout(history=50)

    def _on_status(self, status: QuoteStatus) -> None:
        self.status = status.status
        self.last = status
        self.events.publish(status)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_status(self, *statuses: str, timeout: float | None = None) -> QuoteStatus:
        """Wait until the quote's status is one of ``statuses`` (with none given: until there
        is any status) and return that QuoteStatusReport."""
        with trio.fail_after(timeout) if timeout is not None else _null():
            while True:
                if self.last is not None and (not statuses or self.status in statuses):
                    return self.last
                if self.status == "unknown":
                    raise OutcomeUnknown(f"session {self.session} went down; quote state unknown")
                await self._changed.wait()

    async def wait_accepted(self, timeout: float | None = None) -> QuoteStatus:
        """Wait for the creator's acceptance (then :meth:`confirm` within the window)."""
        status = await self.wait_status("accepted", "rejected", "cancelled", timeout=timeout)
        return status

    async def confirm(self, *, timeout: float | None = 10.0) -> CancelResult:
        """QuoteConfirm (35=U7) → QuoteConfirmStatus (35=U8)."""
        self._confirm = _Reply()
        handle = self._maker.handles[self.session]
        await self._maker._sender.send(
            handle, "U7", [(117, self.quote_id), (21023, self.rfq_id)], exposure="quote confirm"
        )
        result: CancelResult = await self._confirm.wait(timeout, f"QuoteConfirm {self.quote_id}")
        return result

    async def cancel(self, *, timeout: float | None = 10.0) -> CancelResult:
        """QuoteCancel (35=Z) → QuoteCancelStatus (35=U9)."""
        self._cancel = _Reply()
        handle = self._maker.handles[self.session]
        await self._maker._sender.send(
            handle, "Z", [(117, self.quote_id), (21023, self.rfq_id)], exposure=None
        )
        result: CancelResult = await self._cancel.wait(timeout, f"QuoteCancel {self.quote_id}")
        return result

    def _lost(self, error: OutcomeUnknown) -> None:
        if self.status == "sent":
            self.status = "unknown"
        for reply in (self._cancel, self._confirm):
            if reply is not None:
                reply.fail(error)
        self._changed.set()
        self._changed = trio.Event()


class RfqMaker(ObserverBase):
    """Market making on KalshiRFQ sessions (module docstring)."""

    def __init__(
        self,
        *,
        gate: TradingGate | None = None,
        limiter: RateLimiter | None = None,
        session: str | None = None,
    ) -> None:
        self._sender = _Sender(gate, limiter)
        self.session = session
        self.handles: dict[str, SessionHandle] = {}
        #: RFQ broadcasts as they arrive.
        self.requests: Fanout[IncomingRfq] = Fanout(history=200)
        #: RFQs withdrawn by the exchange (35=AG to makers): their ids.
        self.withdrawn: Fanout[str] = Fanout(history=200)
        self._quotes: dict[str, QuoteHandle] = {}

    def subscribe(self) -> Subscription[IncomingRfq]:
        """A reader of RFQ broadcasts from now on."""
        return self.requests.subscribe()

    def _pick(self, session: str | None) -> SessionHandle:
        names = [n for n, h in self.handles.items() if h.config.profile.name == "KalshiRFQ"]
        name = session or self.session
        if name is not None:
            if name not in names:
                raise SupervisorError(f"{name!r} is not a KalshiRFQ session")
            return self.handles[name]
        if not names:
            raise SupervisorError("quoting needs a KalshiRFQ session; none is configured")
        for n in names:
            if self.handles[n].active:
                return self.handles[n]
        raise SessionNotActive(
            f"no KalshiRFQ session is logged on ({', '.join(names)}); nothing is queued — wait "
            "for one and try again"
        )

    async def quote(
        self,
        rfq: IncomingRfq | str,
        *,
        symbol: str | None = None,
        yes_bid: Decimal | int | str | None = None,
        no_bid: Decimal | int | str | None = None,
        quote_id: str | None = None,
        post_only: bool = False,
        subaccount: int | None = None,
        rest_remainder: bool | None = None,
        session: str | None = None,
    ) -> QuoteHandle:
        """Quote (35=S) on an RFQ: ``yes_bid`` (BidPx 132) and/or ``no_bid`` (OfferPx 133 —
        the No bid, not a Yes offer; REFERENCE §9.5), in the session's price units."""
        if yes_bid is None and no_bid is None:
            raise ValueError("quote at least one side (yes_bid and/or no_bid)")
        if isinstance(rfq, IncomingRfq):
            rfq_id, sym = rfq.rfq_id, symbol or rfq.symbol
            default_session = rfq.session
        else:
            rfq_id, sym, default_session = rfq, symbol, None
        if sym is None:
            raise ValueError("the quote needs the RFQ's symbol")
        handle = self._pick(session or default_session)
        qid = quote_id or str(uuid.uuid4())
        body: list[tuple[int, Value]] = [(117, qid), (131, rfq_id), (55, sym)]
        body.append((132, str(yes_bid) if yes_bid is not None else "0"))
        body.append((133, str(no_bid) if no_bid is not None else "0"))
        if post_only:
            body.append((18, "6"))
        if subaccount is not None:
            body.append((79, subaccount))
        if rest_remainder is not None:
            body.append((21015, bool(rest_remainder)))
        q = QuoteHandle(self, handle.name, qid, rfq_id)
        self._quotes[qid] = q
        try:
            await self._sender.send(handle, "S", body, exposure="quote")
        except BaseException:
            del self._quotes[qid]
            raise
        return q

    def session_down(self, down: SessionDown) -> None:
        error = OutcomeUnknown(f"session {down.name} went down; quote state is unknown")
        for q in self._quotes.values():
            if q.session == down.name:
                q._lost(error)

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        msg = event.message
        mt = msg.get(35)
        if mt == b"R":
            raw_requester = msg.get_str(448)
            self.requests.publish(
                IncomingRfq(
                    rfq_id=msg.get_str(131) or "",
                    symbol=msg.get_str(55),
                    qty=_dec(msg, 38),
                    cash_qty=_dec(msg, 152),
                    requester=raw_requester,
                    session=name,
                    message=msg,
                )
            )
        elif mt == b"AI":
            q = self._quotes.get(msg.get_str(117) or "")
            if q is not None:
                code = msg.get_str(297) or ""
                q._on_status(
                    QuoteStatus(
                        quote_id=q.quote_id,
                        rfq_id=msg.get_str(131),
                        status=_QUOTE_STATUS.get(code, f"unknown({code})"),
                        side=msg.get_str(54),
                        qty=_dec(msg, 38),
                        text=msg.get_str(58),
                        message=msg,
                    )
                )
        elif mt in (b"U9", b"U8"):
            q = self._quotes.get(msg.get_str(117) or "")
            if q is not None:
                # 21010 is the confirm status since FIX 1.0.17; legacy servers used 297 (§9.7).
                status_tag = 298 if mt == b"U9" else 21010
                status = msg.get_str(status_tag) or (msg.get_str(297) if mt == b"U8" else None)
                result = CancelResult(q.quote_id, status, status == "0", msg.get_str(58))
                reply = q._cancel if mt == b"U9" else q._confirm
                if reply is not None:
                    reply.set(result)
                q.events.publish(result)
        elif mt == b"AG":
            rfq_id = msg.get_str(131)
            if rfq_id is not None:
                self.withdrawn.publish(rfq_id)

