"""Own-order tracker: the account's orders as the ExecutionReports describe them.

:class:`OrderTracker` applies ExecutionReports (35=8) and OrderCancelRejects (35=9) from any
source — the live order-entry stream, drop-copy replays, a ledger re-read after a restart —
and stays correct whatever the arrival order and however often a report repeats:

* Real reports (ExecID other than ``-1;-1``, ExecType not Rejected) are kept per order by ExecID.
  The order's quantities and status come from the report with the **highest** ExecID, because
  CumQty/LeavesQty/AvgPx are cumulative snapshots: an older report arriving late can add a fill
  to the average-price computation but never moves CumQty or the status backwards.
* Pending reports (``-1;-1``; ExecType A/6/E) are overlays on the status, remembered per ClOrdID.
  A pending report is stale — and ignored — once any real report mentions its ClOrdID (as 11 or
  41), an OrderCancelReject answered it, or the order is closed, so a pending copy delivered
  after the outcome it announced cannot resurrect it.
* Rejects (150=8) close an order only if the exchange never reported it otherwise. Kalshi may put
  a placeholder in OrderID(37) on rejects (REFERENCE §4.7, UNCONFIRMED), so rejects and pending
  reports never register an OrderID; only real reports do.

Requests and ambiguity (the "no second order" rules of the supervisor):

* :meth:`OrderTracker.mark_sent` records an application request (D/F/G) before it is sent. A
  ClOrdID is used once; the only second use is a retry of the *same* request after
  :meth:`OrderTracker.resolve` established that the first attempt never reached the exchange.
* A request is *ambiguous* when its outcome is unknown: it was in flight when the session dropped
  (the supervisor calls :meth:`OrderTracker.mark_ambiguous`), or the exchange answered
  ``EXCHANGE_UNAVAILABLE`` (marked automatically). Any real report mentioning the ClOrdID ends
  the ambiguity; otherwise :meth:`OrderTracker.resolve` decides after a complete drop-copy replay.
* A retry answered ``ORDER_ALREADY_EXISTS`` (103=6) proves the first attempt is live: the request
  stays ambiguous ("exists at the exchange") instead of being recorded as rejected.

Sans-IO: no clock, no files. Not thread-safe.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NamedTuple

import attrs

from sessions.errors import KalshiFixError
from sessions.message import FixMessage

from .execid import ExecId, ExecIdError

__all__ = [
    "AmbiguousRequest",
    "CLOSED_STATUSES",
    "DuplicateRequestError",
    "OrderState",
    "OrderTracker",
    "ReportError",
    "Resolution",
    "ResolutionOutcome",
    "UnknownOrderError",
]

#: OrdStatus values after which an order can no longer trade.
CLOSED_STATUSES = frozenset({"2", "4", "8", "C"})
_EXCHANGE_UNAVAILABLE = "EXCHANGE_UNAVAILABLE"
_ORDER_ALREADY_EXISTS = "ORDER_ALREADY_EXISTS"


class ReportError(KalshiFixError, ValueError):
    """A message is not an ExecutionReport/OrderCancelReject the tracker can use (names why)."""


class UnknownOrderError(KalshiFixError, KeyError):
    """No order is known under the given ClOrdID/OrigClOrdID."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateRequestError(KalshiFixError, ValueError):
    """A request would reuse a ClOrdID outside the one sanctioned retry; nothing was recorded."""


class ResolutionOutcome(enum.Enum):
    """What a complete drop-copy replay says about an ambiguous request."""

    #: The exchange has the request (a real report mentions its ClOrdID); state is now known.
    KNOWN = "known"
    #: Nothing in the replay: the request never reached the exchange. Resend the *same* request
    #: with the *same* ClOrdID (if it did arrive after all, the exchange refuses the copy).
    RESEND_SAME_CLORDID = "resend_same_clordid"


@attrs.frozen
class Resolution:
    """The decision :meth:`OrderTracker.resolve` took for one ClOrdID."""

    cl_ord_id: str
    outcome: ResolutionOutcome
    order: OrderState


@attrs.frozen
class AmbiguousRequest:
    """A request whose outcome is unknown; resolve it through the drop copy before resending."""

    cl_ord_id: str
    reason: str
    msg_type: str | None  # "D", "F", "G", or None when the request was never marked sent
    attempts: int
    request: FixMessage | None = attrs.field(eq=False, repr=False)


@attrs.frozen
class OrderState:
    """A snapshot of one order. Quantities and prices are ``Decimal`` as on the wire.

    ``ord_status`` is the effective OrdStatus: a pending overlay (A/6/E) while a request is
    pending, else the latest real report's status with Replaced (39=5) read as the live status
    (``1`` if anything filled, else ``0``; REFERENCE §11 #9). ``None`` means no report yet (the
    request is in flight). ``is_open`` counts in-flight and ambiguous orders as open: an order
    whose fate is unknown may be working at the exchange.
    """

    cl_ord_id: str
    cl_ord_ids: tuple[str, ...]
    order_id: str | None
    symbol: str | None
    side: str | None
    price: Decimal | None
    order_qty: Decimal | None
    cum_qty: Decimal
    leaves_qty: Decimal | None
    avg_px: Decimal | None
    ord_status: str | None
    last_exec_id: ExecId | None
    is_open: bool
    ambiguous: str | None
    in_flight: tuple[str, ...]
    text: str | None
    fills: int


class _Report(NamedTuple):
    """The fields of one report the tracker needs, parsed once. A named tuple: the tracker
    builds one per report, and a tuple is built in one step where a frozen class sets each of
    its eighteen fields separately."""

    msg_type: str
    exec_id: ExecId | None
    exec_type: str | None
    ord_status: str | None
    cl_ord_id: str | None
    orig_cl_ord_id: str | None
    order_id: str | None
    symbol: str | None
    side: str | None
    price: Decimal | None
    order_qty: Decimal | None
    cum_qty: Decimal | None
    leaves_qty: Decimal | None
    avg_px: Decimal | None
    last_px: Decimal | None
    last_qty: Decimal | None
    text: str | None
    ord_rej_reason: int | None

    @property
    def is_real(self) -> bool:
        return (
            self.msg_type == "8"
            and self.exec_id is not None
            and not self.exec_id.is_pending
            and self.exec_type != "8"
        )


# When several requests are pending at once, the overlay shown is chosen by a fixed precedence
# (a cancel dominates a replace, which dominates a pending new), not by arrival: retransmitted
# copies of pending reports can arrive out of order.
_OVERLAY_RANK = {"6": 3, "E": 2, "A": 1}


def _overlay(pending: dict[str, str]) -> str:
    return max(pending.values(), key=lambda st: (_OVERLAY_RANK.get(st, 0), st))


# Quantities and prices repeat from report to report ("1.00", "50", ...) and Decimal is
# immutable: parsed values are shared (cleared when full; a miss only costs the parse).
_DECIMALS: dict[bytes, Decimal] = {}
_DECIMALS_MAX = 4096


def _dec(v: bytes | None, tag: int) -> Decimal | None:
    if v is None or v == b"":
        return None
    memo = type(v) is bytes  # (pairs set by hand could hold unhashable bytearrays)
    d = _DECIMALS.get(v) if memo else None
    if d is not None:
        return d
    try:
        d = Decimal(v.decode("ascii"))
    except (ArithmeticError, UnicodeDecodeError, ValueError):
        raise ReportError(f"tag {tag} is not a decimal: {v!r}") from None
    if not d.is_finite():
        raise ReportError(f"tag {tag} is not a finite decimal: {v!r}")
    if memo:
        if len(_DECIMALS) >= _DECIMALS_MAX:
            _DECIMALS.clear()
        _DECIMALS[v] = d
    return d


# The tags parse_report reads after 35, 17 and 103, in _Report field order: text fields, then
# decimal fields, then Text(58).
_REPORT_TAGS = (150, 39, 11, 41, 37, 55, 54, 44, 38, 14, 151, 6, 31, 32, 58)
_new_report = tuple.__new__


def parse_report(msg: FixMessage, fields: dict[int, bytes] | None = None) -> _Report:
    """Parse the tracker's view of a 35=8 or 35=9 message (raises :class:`ReportError`).
    ``fields`` is ``msg.first_values()`` when the caller has it already (the executions stream
    reads it once for the ledger and the tracker)."""
    f = msg.first_values() if fields is None else fields
    get = f.get
    mt = get(35)
    if mt == b"8":
        msg_type = "8"
    elif mt == b"9":
        msg_type = "9"
    else:
        raise ReportError(
            f"the order tracker takes ExecutionReport (35=8) and OrderCancelReject (35=9), "
            f"got MsgType {mt!r}"
        )
    exec_id: ExecId | None = None
    if msg_type == "8":
        raw_exec = get(17)
        if raw_exec is None:
            raise ReportError("ExecutionReport without ExecID(17)")
        try:
            exec_id = ExecId.parse(raw_exec)
        except ExecIdError as e:
            raise ReportError(f"ExecutionReport with a bad ExecID(17): {e}") from None
    rej = get(103)
    try:
        ord_rej_reason = int(rej) if rej else None
    except ValueError:
        ord_rej_reason = None  # only used to recognise 6 (duplicate); junk means "not 6"
    # Written out field by field, without a loop or a call per field: this runs for every
    # report, and the loop and its calls were most of its cost. Empty values read as absent, as
    # in _dec(); a decimal seen before is taken from _DECIMALS (bytes only: pairs set
    # by hand could hold unhashable bytearrays), any other one goes through _dec().
    e150, o39, c11, c41, c37, s55, s54, p44, q38, q14, q151, p6, p31, q32, t58 = map(
        get, _REPORT_TAGS
    )
    known = _DECIMALS.get
    return _new_report(
        _Report,
        (
            msg_type,
            exec_id,
            e150.decode("latin-1") if e150 else None,
            o39.decode("latin-1") if o39 else None,
            c11.decode("latin-1") if c11 else None,
            c41.decode("latin-1") if c41 else None,
            c37.decode("latin-1") if c37 else None,
            s55.decode("latin-1") if s55 else None,
            s54.decode("latin-1") if s54 else None,
            (d if type(p44) is bytes and (d := known(p44)) is not None else _dec(p44, 44))
            if p44 else None,
            (d if type(q38) is bytes and (d := known(q38)) is not None else _dec(q38, 38))
            if q38 else None,
            (d if type(q14) is bytes and (d := known(q14)) is not None else _dec(q14, 14))
            if q14 else None,
            (d if type(q151) is bytes and (d := known(q151)) is not None else _dec(q151, 151))
            if q151 else None,
            (d if type(p6) is bytes and (d := known(p6)) is not None else _dec(p6, 6))
            if p6 else None,
            (d if type(p31) is bytes and (d := known(p31)) is not None else _dec(p31, 31))
            if p31 else None,
            (d if type(q32) is bytes and (d := known(q32)) is not None else _dec(q32, 32))
            if q32 else None,
            t58.decode("latin-1") if t58 else None,
            ord_rej_reason,
        ),
    )


def _message(pairs: tuple[tuple[int, bytes], ...]) -> FixMessage:
    """A new message with ``pairs`` (rendered already, so not checked again)."""
    message = FixMessage()
    message.pairs = list(pairs)
    return message


class _Request(NamedTuple):
    """A request sent (internal). Stored in ``OrderTracker._requests`` as a plain tuple of these
    fields — pairs as (int, bytes) tuples, not a message — because the garbage collector stops
    tracking a plain tuple of plain values, where an object (or a named tuple) would be walked
    by every full collection for as long as its order rests. Changed by replacing it."""

    cl_ord_id: str
    msg_type: str
    pairs: tuple[tuple[int, bytes], ...]
    attempts: int = 1
    retry_ready: bool = False


# The stored tuple's last place: _apply_real clears it by slicing (once per real report).
_RETRY_READY = len(_Request._fields) - 1
assert _Request._fields[_RETRY_READY] == "retry_ready"


@attrs.define(eq=False)
class _Order:
    """Mutable per-order state (internal)."""

    real: dict[ExecId, _Report] = attrs.Factory(dict)
    latest: _Report | None = None
    order_id: str | None = None
    # ClOrdIDs in the order they became known; the snapshot orders them canonically.
    # A tuple (grown by copying; an order has one or a few): unlike a list it leaves the
    # garbage collector's lists once it has been seen, and every open order keeps one.
    cls: tuple[str, ...] = ()
    # ClOrdIDs a real report mentioned (11 or 41), or a 35=9 answered: pending copies are stale.
    # A tuple, as cls: a set stays on the garbage collector's lists for the order's lifetime.
    answered: tuple[str, ...] = ()
    pending: dict[str, str] = attrs.Factory(dict)  # ClOrdID -> pending OrdStatus
    rejected: _Report | None = None  # a reject, when no real report exists (yet)
    # Request fields from mark_sent, used until the exchange reports the order.
    req_symbol: str | None = None
    req_side: str | None = None
    req_price: Decimal | None = None
    req_qty: Decimal | None = None
    # Text(58) of the last reject/cancel-reject; these arrive live only, so in a fixed order.
    last_text: str | None = None

    @property
    def closed(self) -> bool:
        if self.latest is not None:
            return self.latest.ord_status in CLOSED_STATUSES
        return self.rejected is not None


class OrderTracker:
    """The account's own orders, rebuilt from ExecutionReports (see module docstring)."""

    def __init__(self) -> None:
        self._by_cl: dict[str, _Order] = {}
        self._by_order_id: dict[str, _Order] = {}
        self._orders: list[_Order] = []
        self._requests: dict[str, tuple[Any, ...]] = {}  # ClOrdID -> a _Request's fields
        self._ambiguous: dict[str, str] = {}

    # ----------------------------------------------------------------------------- lookup

    def _link_cl(self, order: _Order, cl: str | None) -> _Order:
        if cl is None:
            return order
        other = self._by_cl.get(cl)
        if other is not None and other is not order:
            order = self._merge(order, other)
        if cl not in order.cls:
            order.cls += (cl,)
        self._by_cl[cl] = order
        return order

    def _link_order_id(self, order: _Order, order_id: str | None) -> _Order:
        if order_id is None:
            return order
        other = self._by_order_id.get(order_id)
        if other is not None and other is not order:
            order = self._merge(order, other)
        order.order_id = order_id
        self._by_order_id[order_id] = order
        return order

    def _merge(self, a: _Order, b: _Order) -> _Order:
        """Two records turned out to be one order (reports arrived before the link between
        their ClOrdIDs/OrderID did). Fold ``b`` into ``a``; both are consistent views of the
        same order, so re-applying ``b``'s facts to ``a`` is order-independent."""
        for cl in b.cls:
            if cl not in a.cls:
                a.cls += (cl,)
            self._by_cl[cl] = a
        if b.order_id is not None:
            a.order_id = a.order_id or b.order_id
            self._by_order_id[b.order_id] = a
        for r in b.real.values():
            self._apply_real(a, r)
        a.answered += tuple(cl for cl in b.answered if cl not in a.answered)
        for cl, st in b.pending.items():
            a.pending.setdefault(cl, st)
        for cl in list(a.pending):
            if cl in a.answered or a.closed:
                del a.pending[cl]
        if a.rejected is None:
            a.rejected = b.rejected
        for name in ("req_symbol", "req_side", "req_price", "req_qty", "last_text"):
            if getattr(a, name) is None:
                setattr(a, name, getattr(b, name))
        self._orders = [o for o in self._orders if o is not b]
        return a

    def _find(self, r: _Report, *, use_order_id: bool) -> _Order | None:
        if use_order_id and r.order_id is not None and r.order_id in self._by_order_id:
            return self._by_order_id[r.order_id]
        for cl in (r.cl_ord_id, r.orig_cl_ord_id):
            if cl is not None and cl in self._by_cl:
                return self._by_cl[cl]
        return None

    def _locate(self, r: _Report) -> _Order:
        """``_find(r, use_order_id=True)``, or a new record (an order is never falsy)."""
        by_cl = self._by_cl
        # None is never a key of either map.
        return (
            self._by_order_id.get(r.order_id)  # type: ignore[arg-type]
            or by_cl.get(r.cl_ord_id)  # type: ignore[arg-type]
            or by_cl.get(r.orig_cl_ord_id)  # type: ignore[arg-type]
            or self._new_order()
        )

    def _new_order(self) -> _Order:
        order = _Order()
        self._orders.append(order)
        return order

    # ----------------------------------------------------------------------------- applying

    def apply(self, report: FixMessage, *, fields: dict[int, bytes] | None = None) -> bool:
        """Apply one ExecutionReport (35=8) or OrderCancelReject (35=9).

        Returns False when the report taught nothing new (a duplicate or a stale pending copy).
        Raises :class:`ReportError` for other message types or malformed ExecIDs/decimals.
        ``fields`` is ``report.first_values()`` when the caller has it already.
        """
        r = parse_report(report, fields)
        msg_type, exec_id, exec_type, ord_status, cl, orig, order_id = r[:7]
        if msg_type == "9":
            return self._apply_cancel_reject(r)
        # msg_type is "8", so exec_id is set: this is _Report.is_real.
        if exec_type != "8" and not exec_id.is_pending:  # type: ignore[union-attr]
            order = self._locate(r)
            # Linking what is linked already changes nothing (a ClOrdID maps to an order only
            # while the order lists it): skip the calls in the usual case, a known order.
            if order_id is not None and (
                self._by_order_id.get(order_id) is not order or order.order_id != order_id
            ):
                order = self._link_order_id(order, order_id)
            by_cl = self._by_cl
            if orig is not None and by_cl.get(orig) is not order:
                order = self._link_cl(order, orig)
            if cl is not None and by_cl.get(cl) is not order:
                order = self._link_cl(order, cl)
            return self._apply_real(order, r)
        if exec_type == "8" or ord_status == "8":
            return self._apply_reject(r)
        return self._apply_pending(r)

    def apply_many(self, reports: Iterable[FixMessage]) -> int:
        """Apply reports in the given order; return how many taught something new."""
        return sum(1 for m in reports if self.apply(m))

    def _apply_real(self, order: _Order, r: _Report) -> bool:
        assert r.exec_id is not None
        real = order.real
        known = len(real)
        real.setdefault(r.exec_id, r)  # one hash of the ExecID instead of two
        if len(real) == known:
            return False
        latest = order.latest
        if latest is None or self._newer(r, latest):
            order.latest = latest = r
        for cl in (r.cl_ord_id, r.orig_cl_ord_id):
            if cl is not None:
                if cl not in order.answered:
                    order.answered += (cl,)
                order.pending.pop(cl, None)
                # The exchange has spoken about this ClOrdID: its outcome is no longer unknown.
                self._ambiguous.pop(cl, None)
                stored = self._requests.get(cl)
                if stored is not None and stored[_RETRY_READY]:
                    self._requests[cl] = stored[:_RETRY_READY] + (False,)
        if latest.ord_status in CLOSED_STATUSES:  # order.closed, latest being set
            order.pending.clear()
        return True

    @staticmethod
    def _newer(a: _Report, b: _Report) -> bool:
        assert a.exec_id is not None and b.exec_id is not None
        # Within one index this is the ExecID order. One order lives on one exchange index;
        # reports of one order on two would be an exchange bug: stay deterministic (larger index
        # wins) instead of raising mid-stream.
        x, y = a.exec_id, b.exec_id
        return (x.index, x.clock, x.event) > (y.index, y.clock, y.event)

    def _apply_pending(self, r: _Report) -> bool:
        cl = r.cl_ord_id
        if cl is None:
            raise ReportError("pending ExecutionReport without ClOrdID(11)")
        order = self._locate(r)
        orig = r.orig_cl_ord_id
        by_cl = self._by_cl
        # As in apply(): linking what is linked already changes nothing.
        if orig is not None and by_cl.get(orig) is not order:
            order = self._link_cl(order, orig)
        if by_cl.get(cl) is not order:
            order = self._link_cl(order, cl)
        if order.closed or cl in order.answered:
            return False
        status = r.ord_status or r.exec_type or "A"
        if order.pending.get(cl) == status:
            return False
        order.pending[cl] = status
        return True

    @staticmethod
    def _note_text(order: _Order, text: str | None) -> bool:
        # Recorded even when the message is otherwise stale: rejects and cancel rejects arrive
        # live only, in a fixed order, so "last text" is the same whatever else interleaves.
        if text is None or order.last_text == text:
            return False
        order.last_text = text
        return True

    def _apply_reject(self, r: _Report) -> bool:
        cl = r.cl_ord_id
        if cl is None:
            raise ReportError("rejected ExecutionReport without ClOrdID(11)")
        order = self._find(r, use_order_id=False) or self._new_order()
        order = self._link_cl(order, cl)
        changed = self._note_text(order, r.text)
        if cl in order.answered:
            return changed  # the exchange reported this ClOrdID for real: the reject is history
        req = self._request(cl)
        text = r.text or ""
        if text == _EXCHANGE_UNAVAILABLE:
            changed |= self._ambiguous.get(cl) != _EXCHANGE_UNAVAILABLE
            self._ambiguous[cl] = _EXCHANGE_UNAVAILABLE
            return changed
        duplicate = r.ord_rej_reason == 6 or text == _ORDER_ALREADY_EXISTS
        if duplicate and req is not None and req.attempts > 1:
            reason = (
                "ORDER_ALREADY_EXISTS on a retry: the first attempt is live at the exchange; "
                "its reports will arrive through the drop copy"
            )
            changed |= self._ambiguous.get(cl) != reason
            self._ambiguous[cl] = reason
            return changed
        if order.real:
            # A reject naming a live order's ClOrdID refuses *another* request that reused it;
            # the order itself is unaffected.
            return changed
        if order.rejected is not None and order.rejected.text == r.text:
            return changed
        order.rejected = r
        order.pending.pop(cl, None)
        self._ambiguous.pop(cl, None)
        if req is not None and req.retry_ready:
            self._store_request(req._replace(retry_ready=False))
        return True

    def _apply_cancel_reject(self, r: _Report) -> bool:
        cl = r.cl_ord_id
        if cl is None:
            raise ReportError("OrderCancelReject without ClOrdID(11)")
        # OrderID(37) is not linked from a 35=9 and only consulted last: for an unknown order
        # it is a placeholder.
        order = (
            self._find(r, use_order_id=False)
            or (self._by_order_id.get(r.order_id) if r.order_id is not None else None)
            or self._new_order()
        )
        order = self._link_cl(order, r.orig_cl_ord_id)
        order = self._link_cl(order, cl)
        changed = self._note_text(order, r.text)
        if cl in order.answered:
            return changed
        if r.text == _EXCHANGE_UNAVAILABLE:
            changed |= self._ambiguous.get(cl) != _EXCHANGE_UNAVAILABLE or cl in order.pending
            self._ambiguous[cl] = _EXCHANGE_UNAVAILABLE
            order.pending.pop(cl, None)
            return changed
        if cl not in order.answered:
            order.answered += (cl,)
        order.pending.pop(cl, None)
        self._ambiguous.pop(cl, None)
        return True

    # ----------------------------------------------------------------------------- requests

    def mark_sent(self, cl_ord_id: str, request: FixMessage) -> None:
        """Record that the application request ``request`` (35=D/F/G with 11=``cl_ord_id``) is
        about to be sent. Call it *before* sending, so a crash right after the send still finds
        the request (and it becomes ambiguous, never forgotten).

        A ClOrdID may be sent again only when :meth:`resolve` answered
        ``RESEND_SAME_CLORDID`` for it, and only with the same MsgType. Anything else raises
        :class:`DuplicateRequestError` and records nothing: that is how no path can create a
        second order for one application request. F/G must name a known order in 41 or 37
        (else :class:`UnknownOrderError`).
        """
        # One pass over the request for every tag read below (each get() is a scan of it).
        get = request.first_values().get
        mt = get(35)
        if mt not in (b"D", b"F", b"G"):
            raise ReportError(f"mark_sent takes 35=D, F or G, got MsgType {mt!r}")
        carried = get(11)
        carried_cl = carried.decode("latin-1") if carried else None  # empty reads as absent
        if carried_cl not in (None, cl_ord_id):
            raise ReportError(
                f"mark_sent({cl_ord_id!r}): the request carries ClOrdID(11)={carried_cl!r}"
            )
        msg_type = mt.decode()
        prior = self._request(cl_ord_id)
        if prior is not None:
            if not prior.retry_ready or prior.msg_type != msg_type:
                state = (
                    "its outcome is unknown: resolve it through the drop copy first"
                    if cl_ord_id in self._ambiguous
                    else "it was already sent"
                )
                raise DuplicateRequestError(
                    f"ClOrdID {cl_ord_id!r} cannot be sent again: {state}. A retry must reuse "
                    "the same request after resolve() answered RESEND_SAME_CLORDID"
                )
            self._store_request(
                prior._replace(
                    attempts=prior.attempts + 1, retry_ready=False, pairs=tuple(request.pairs)
                )
            )
            return
        if cl_ord_id in self._by_cl:
            raise DuplicateRequestError(
                f"ClOrdID {cl_ord_id!r} already names an order known from the exchange's "
                "reports; use a new ClOrdID for a new request"
            )
        if msg_type == "D":
            order = self._new_order()
            symbol, side = get(55), get(54)
            order.req_symbol = symbol.decode("latin-1") if symbol else None
            order.req_side = side.decode("latin-1") if side else None
            order.req_price = _dec(get(44), 44)
            order.req_qty = _dec(get(38), 38)
        else:
            orig_raw, oid_raw = get(41), get(37)
            orig = orig_raw.decode("latin-1") if orig_raw else None
            oid = oid_raw.decode("latin-1") if oid_raw else None
            found = self._by_cl.get(orig) if orig is not None else None
            if found is None and oid is not None:
                found = self._by_order_id.get(oid)
            if found is None:
                raise UnknownOrderError(
                    f"{'cancel' if msg_type == 'F' else 'replace'} {cl_ord_id!r} names no known "
                    f"order (OrigClOrdID={orig!r}, OrderID={oid!r})"
                )
            order = found
        self._link_cl(order, cl_ord_id)
        self._store_request(_Request(cl_ord_id, msg_type, tuple(request.pairs)))

    def _request(self, cl_ord_id: str) -> _Request | None:
        stored = self._requests.get(cl_ord_id)
        return None if stored is None else _Request._make(stored)

    def _store_request(self, req: _Request) -> None:
        self._requests[req.cl_ord_id] = tuple(req)  # plain: see _Request

    def forget_closed(self, keep: int) -> int:
        """Forget the oldest closed orders beyond the ``keep`` most recent ones, so that a
        process running for weeks does not hold every order it ever had (about 1 KB each).

        An order is kept, whatever its age, while it is open, has a request pending or
        ambiguous, or has a request the exchange has not answered (a late answer must find
        it). A forgotten order is unknown to :meth:`get` and :meth:`orders`, and its
        ClOrdIDs are no longer refused for reuse. Returns how many were forgotten.
        """
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        if len(self._orders) <= keep:
            return 0  # nothing to look at (the usual case between sweeps)
        closed = [o for o in self._orders if o.closed and self._settled(o)]
        excess = len(closed) - keep
        if excess <= 0:
            return 0
        gone = closed[:excess]
        for o in gone:
            for cl in o.cls:
                if self._by_cl.get(cl) is o:
                    del self._by_cl[cl]
                self._requests.pop(cl, None)
            if o.order_id is not None and self._by_order_id.get(o.order_id) is o:
                del self._by_order_id[o.order_id]
        dropped = set(map(id, gone))
        self._orders = [o for o in self._orders if id(o) not in dropped]
        return excess

    def _settled(self, order: _Order) -> bool:
        """No request of ``order`` is pending, ambiguous or unanswered."""
        if order.pending:
            return False
        for cl in order.cls:
            if cl in self._ambiguous:
                return False
            if cl in self._requests and not (
                cl in order.answered
                or (order.rejected is not None and order.rejected.cl_ord_id == cl)
            ):
                return False
        return True

    def in_flight(self) -> list[str]:
        """ClOrdIDs of requests sent but not yet answered by any report (in sending order).
        After a disconnect the supervisor marks these ambiguous."""
        out = []
        for cl, stored in self._requests.items():
            order = self._by_cl[cl]
            answered = (
                cl in order.answered
                or cl in order.pending
                or (order.rejected is not None and order.rejected.cl_ord_id == cl)
                or cl in self._ambiguous
            )
            if not answered and not stored[_RETRY_READY]:
                out.append(cl)
        return out

    def still_pending(self) -> list[str]:
        """ClOrdIDs whose last word from the exchange is a pending report (A/6/E) on an open
        order. The drop copy never replays pending reports, so after a complete replay these
        are unknown (REFERENCE §6 step 5): mark them ambiguous and resolve them."""
        return [
            cl
            for o in self._orders
            if not o.closed
            for cl in sorted(o.pending)
        ]

    def mark_ambiguous(self, cl_ord_id: str, reason: str) -> None:
        """Mark a request's outcome unknown (e.g. in flight at a disconnect). It must be
        resolved through the drop copy (:meth:`resolve`) before anything is resent. A request
        the exchange already reported for real is not ambiguous; the call is then a no-op."""
        order = self._by_cl.get(cl_ord_id)
        if order is None:
            raise UnknownOrderError(f"no order or request is known under ClOrdID {cl_ord_id!r}")
        if cl_ord_id in order.answered:
            return
        self._ambiguous[cl_ord_id] = reason

    def ambiguous(self) -> list[AmbiguousRequest]:
        """Requests whose outcome is unknown, in the order they became ambiguous."""
        out = []
        for cl, reason in self._ambiguous.items():
            req = self._request(cl)
            out.append(
                AmbiguousRequest(
                    cl_ord_id=cl,
                    reason=reason,
                    msg_type=None if req is None else req.msg_type,
                    attempts=0 if req is None else req.attempts,
                    request=None if req is None else _message(req.pairs),
                )
            )
        return out

    def resolve(self, cl_ord_id: str, reports: Iterable[FixMessage]) -> Resolution:
        """Decide an ambiguous request from a **complete** drop-copy replay covering the time
        since it was sent (pass the replay's reports; unrelated ones are harmless).

        If a real report mentions ``cl_ord_id`` the state is now known (``KNOWN``). If not, the
        request never reached the exchange — rejects and pending reports are never replayed,
        but a rejected request created nothing — and the answer is ``RESEND_SAME_CLORDID``: the
        one retry :meth:`mark_sent` then accepts, with the same ClOrdID.
        """
        order = self._by_cl.get(cl_ord_id)
        if order is None:
            raise UnknownOrderError(f"no order or request is known under ClOrdID {cl_ord_id!r}")
        for m in reports:
            self.apply(m)
        order = self._by_cl[cl_ord_id]  # applying may have merged records
        if cl_ord_id in order.answered:
            self._ambiguous.pop(cl_ord_id, None)
            outcome = ResolutionOutcome.KNOWN
        else:
            self._ambiguous.pop(cl_ord_id, None)
            req = self._request(cl_ord_id)
            if req is not None:
                self._store_request(req._replace(retry_ready=True))
            outcome = ResolutionOutcome.RESEND_SAME_CLORDID
        return Resolution(cl_ord_id, outcome, self._snapshot(order))

    # ----------------------------------------------------------------------------- queries

    def get(self, cl_ord_id: str) -> OrderState | None:
        """The order known under any ClOrdID of its chain, or ``None``."""
        order = self._by_cl.get(cl_ord_id)
        return None if order is None else self._snapshot(order)

    def is_open(self, cl_ord_id: str) -> bool | None:
        """``get(cl_ord_id).is_open`` without building the snapshot (``None`` when no order is
        known under it): for callers that ask it of many orders at once."""
        order = self._by_cl.get(cl_ord_id)
        return None if order is None else self._is_open(order)

    def get_by_order_id(self, order_id: str) -> OrderState | None:
        """The order with exchange OrderID ``order_id``, or ``None``."""
        order = self._by_order_id.get(order_id)
        return None if order is None else self._snapshot(order)

    def orders(self) -> list[OrderState]:
        """Every known order, oldest record first."""
        return [self._snapshot(o) for o in self._orders]

    def open_orders(self) -> list[OrderState]:
        """Orders that are or may be working: open, in flight, or with an unknown outcome."""
        return [s for s in self.orders() if s.is_open]

    def _is_open(self, order: _Order) -> bool:
        """``_snapshot(order).is_open``: the same status, worked out the same way."""
        ambiguous = self._ambiguous
        amb = any(cl in ambiguous for cl in order.cls)
        latest = order.latest
        if latest is not None:
            status = latest.ord_status
            if status == "5":
                status = "1"  # read as 1 or 0 (live either way)
            if status not in CLOSED_STATUSES and order.pending:
                status = _overlay(order.pending)
            return status not in CLOSED_STATUSES or amb
        if order.rejected is not None and not amb:
            return False  # status 8
        if order.pending:
            return _overlay(order.pending) not in CLOSED_STATUSES
        return True  # no status yet: in flight

    def _snapshot(self, order: _Order) -> OrderState:
        latest = order.latest
        first_cl = order.cls[0] if order.cls else ""
        chain: list[str] = []
        for eid in sorted(order.real, key=lambda e: (e.index, e.key)):
            r = order.real[eid]
            for cl in (r.orig_cl_ord_id, r.cl_ord_id):
                if cl is not None and cl not in chain:
                    chain.append(cl)
        # Other ClOrdIDs tied to the order (pending or refused requests) follow, sorted: copies of
        # such messages may arrive in any order, and the snapshot must not depend on it.
        chain += sorted(cl for cl in order.cls if cl not in chain)
        amb = [self._ambiguous[cl] for cl in order.cls if cl in self._ambiguous]
        in_flight = tuple(
            cl
            for cl in order.cls
            if cl in self._requests
            and cl not in order.answered
            and cl not in order.pending
            and not (order.rejected is not None and order.rejected.cl_ord_id == cl)
            and cl not in self._ambiguous
            and not self._requests[cl][_RETRY_READY]
        )
        if latest is not None:
            status: str | None = latest.ord_status
            cum = latest.cum_qty or Decimal(0)
            if status == "5":
                status = "1" if cum > 0 else "0"
            if status not in CLOSED_STATUSES and order.pending:
                status = _overlay(order.pending)
            fills = [r for r in order.real.values() if r.exec_type == "F" and r.last_qty]
            filled = sum((r.last_qty for r in fills if r.last_qty is not None), Decimal(0))
            avg = latest.avg_px
            if fills and filled == cum and cum > 0 and all(r.last_px is not None for r in fills):
                notional = sum(
                    (r.last_px * r.last_qty for r in fills if r.last_px and r.last_qty),
                    Decimal(0),
                )
                avg = notional / filled
            return OrderState(
                cl_ord_id=latest.cl_ord_id or first_cl,
                cl_ord_ids=tuple(chain),
                order_id=order.order_id,
                symbol=latest.symbol or order.req_symbol,
                side=latest.side or order.req_side,
                price=latest.price if latest.price is not None else order.req_price,
                order_qty=latest.order_qty if latest.order_qty is not None else order.req_qty,
                cum_qty=cum,
                leaves_qty=latest.leaves_qty,
                avg_px=avg,
                ord_status=status,
                last_exec_id=latest.exec_id,
                is_open=status not in CLOSED_STATUSES or bool(amb),
                ambiguous=amb[-1] if amb else None,
                in_flight=in_flight,
                text=latest.text or order.last_text,
                fills=len(fills),
            )
        rej = order.rejected
        if rej is not None and not amb:
            status = "8"
        elif order.pending:
            status = _overlay(order.pending)
        else:
            status = None
        src = rej
        return OrderState(
            cl_ord_id=first_cl,
            cl_ord_ids=tuple(chain),
            order_id=order.order_id,
            symbol=order.req_symbol or (src.symbol if src else None),
            side=order.req_side or (src.side if src else None),
            price=order.req_price if order.req_price is not None else (src.price if src else None),
            order_qty=order.req_qty if order.req_qty is not None else (
                src.order_qty if src else None
            ),
            cum_qty=Decimal(0),
            leaves_qty=None,
            avg_px=None,
            ord_status=status,
            last_exec_id=None,
            is_open=status not in CLOSED_STATUSES,
            ambiguous=amb[-1] if amb else None,
            in_flight=in_flight,
            text=order.last_text,
            fills=0,
        )
