"""Order-entry handles: new, cancel, replace, mass cancel and order groups, with the
"no second order" rules of the supervisor.

:class:`OrderEntry` is a :class:`~supervisor.observer.SessionObserver` on the order-entry sessions
(KalshiNR, KalshiRT; listener sessions are never used to send). It shares the own-order tracker
(:class:`~supervisor.orders.OrderTracker`) of the executions component, so
:meth:`OrderEntry.order` and :meth:`OrderEntry.open_orders` answer from every report the
supervisor has seen, live or replayed — correct after reconnects.

Decisions (the ones that keep one application request from ever becoming two orders):

* **ClOrdIDs.** A request gets ``uuid4()`` unless the caller supplies one (``cl_ord_id=``,
  checked against Kalshi's rule: at most 64 of ``A-Za-z0-9_-:+=/``). A ClOrdID is never reused for
  a different request: one already known to the tracker or reserved by a request being sent is
  refused with :class:`~supervisor.orders.DuplicateRequestError`. The only second use is a retry of
  the *same* request, below.
* **Session down.** ``new_order`` (and every other request) raises
  :class:`~supervisor.observer.SessionNotActive` when its session is not logged on. Nothing is
  queued silently: a queued order would go out at an unknown later time, at a price the
  application no longer chose; the application decides whether to wait
  (``await handle.wait_active()``) and try again.
* **Ambiguity.** A request whose outcome is unknown — it was sent and unanswered when its session
  went down, or the exchange answered ``EXCHANGE_UNAVAILABLE`` (REFERENCE §4.7) — is marked
  ambiguous in the tracker and resolved through the drop copy *before anything is resent*. After
  the next **complete** recovery pass that covers it (it started after the request's session was
  back up, for an in-flight request; after the reject arrived, for ``EXCHANGE_UNAVAILABLE`` —
  either way after the exchange had processed whatever it received) each ambiguous ClOrdID is
  either

  - mentioned by a real report: its state is known (:class:`AmbiguityResolved` ``"known"``), or
  - absent from a complete replay: it never reached the exchange. Then, only if the application
    asked for it (``retry_ambiguous=True`` on the request, or as the component default), the
    *same* request is sent again with the *same* ClOrdID (``"resent"``; the tracker permits
    exactly this one reuse, and should the first attempt have arrived after all the exchange
    refuses the copy as ``ORDER_ALREADY_EXISTS``); otherwise it is reported ``"not_received"`` and
    the application decides.

  An incomplete pass (gap older than the lookback, replay not available) resolves nothing: the
  requests are reported ``"unresolved"`` (check through REST) and stay ambiguous — at once when
  reconciliation is disabled. Requests survive a restart of the process through the request
  log (:mod:`supervisor.requestlog`, when one is given): a request sent before the process
  stopped that has no stored report is ambiguous again after the restart and resolved the same
  way — but never resent after a restart (``"not_received"``: the application decides).
* **Refusals before the exchange.** A BusinessMessageReject (35=j) for a request means it was not
  applied: the tracker records it as rejected (a local record, never an execution) and a
  :class:`RequestRejected` is published; ``380=8`` also empties the rate limiter's bucket.

Every request first waits for the client-side rate limiter (:mod:`supervisor.ratelimit`), then
checks the kill switch's gate and the session again, then records the request in the tracker
(:meth:`~supervisor.orders.OrderTracker.mark_sent`) and the request log (one append, durable
against a process crash), then sends — with no await between the last check and the send.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Union

import attrs
import trio

from sessions.events import ApplicationMessage, LoggedOn
from sessions.message import FixMessage, Value, to_bytes, wire_pairs

from .errors import ChildStopped, SupervisorError
from .execid import EXCHANGE_INDEXES
from .killswitch import TradingGate
from .observer import ObserverBase, SessionDown, SessionHandle, SessionNotActive, Spawn
from .orders import (
    AmbiguousRequest,
    DuplicateRequestError,
    OrderState,
    OrderTracker,
    ResolutionOutcome,
    UnknownOrderError,
)
from .ratelimit import RateLimiter
from .requestlog import LoggedRequest, RequestLog, RequestLogError
from .streams import ExecutionStream, Fanout, Subscription

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .recovery import RecoveryObserver, RecoveryReport

__all__ = [
    "AmbiguityResolved",
    "MassCancelResult",
    "OrderEntry",
    "OrderEvent",
    "OrderGroupResult",
    "OrderTicket",
    "OutcomeUnknown",
    "RequestRejected",
]

_CL_ORD_ID = re.compile(r"[-\w:+=/]{1,64}", re.ASCII)
_EXCHANGE_UNAVAILABLE = b"EXCHANGE_UNAVAILABLE"
# Requests remembered by MsgSeqNum per process (the newest are kept).
_BY_SEQ_LIMIT = 65536
# The smallest number of remembered requests worth sweeping for finished orders.
_SWEEP_MIN = 4096
_GROUP_ACTIONS = {"create": 1, "reset": 2, "delete": 3, "trigger": 4, "update": 5}
# Side(54) on the wire, by the names new_order accepts.
_SIDES = {"1": b"1", "2": b"2", "buy": b"1", "sell": b"2", "yes": b"1", "no": b"2"}
# What the kill switch's refusal names, per MsgType of a request that creates exposure.
_GATED = {"D": "new order", "G": "replace"}


class OutcomeUnknown(SupervisorError):
    """A request whose answer never came (its session went down first, or the wait timed out);
    the exchange may or may not have applied it."""


# ----------------------------------------------------------------------------- results/events


@attrs.frozen
class OrderTicket:
    """A request that was sent: its ClOrdID, session, MsgType and MsgSeqNum."""

    cl_ord_id: str
    session: str
    msg_type: str
    seq_num: int


@attrs.frozen
class AmbiguityResolved:
    """What became of an ambiguous request (see module docstring).

    ``outcome``: ``"known"`` (the exchange has it; ``order`` is its state), ``"resent"`` (never
    arrived; sent again with the same ClOrdID), ``"not_received"`` (never arrived; not resent —
    the application decides), ``"unresolved"`` (the replay was incomplete; check through REST).
    """

    cl_ord_id: str
    outcome: Literal["known", "resent", "not_received", "unresolved"]
    reason: str
    order: OrderState | None
    msg_type: str | None = None


@attrs.frozen
class RequestRejected:
    """The exchange refused a request before handling it (35=j), or it could not be sent."""

    cl_ord_id: str | None
    msg_type: str | None
    session: str
    reason: int | None
    text: str | None


@attrs.frozen
class MassCancelResult:
    """The OrderMassCancelReport (35=r) for one OrderMassCancelRequest (or why there was none).

    ``accepted`` is MassCancelResponse(531)=6. ``answered`` is False when no report arrived
    within the timeout or the session went down first (the outcome is then unknown).
    """

    session: str
    cl_ord_id: str
    accepted: bool
    answered: bool = True
    operation_id: str | None = None
    reject_reason: str | None = None
    text: str | None = None


@attrs.frozen
class OrderGroupResult:
    """An OrderGroupResponse (35=UOH): the group id, and the limit on Create/Update."""

    group_id: str
    limit: int | None
    subaccount: int | None
    message: FixMessage = attrs.field(eq=False, repr=False)


OrderEvent = Union[AmbiguityResolved, RequestRejected, MassCancelResult]


# ----------------------------------------------------------------------------- internals


class _Waiter:
    """A one-shot result for a task waiting on a reply."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._event.is_set():
            self.value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self.error = error
            self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None) -> Any:
        if timeout is None:
            await self._event.wait()
        else:
            with trio.move_on_after(timeout):
                await self._event.wait()
        if not self._event.is_set():
            raise trio.TooSlowError
        if self.error is not None:
            raise self.error
        return self.value


class _Request(NamedTuple):
    """A request sent (internal). Kept as a plain tuple of its fields in ``_requests``."""

    cl_ord_id: str
    session: str
    msg_type: str
    retry: bool
    shard: int | None = None


@attrs.define
class _Ambiguity:
    since: float
    kind: str  # "disconnect" | "exchange_unavailable" | "restart"
    session: str | None
    reported_unresolved: bool = False


def _text(v: Value) -> str:
    return to_bytes(v).decode("latin-1")


class OrderEntry(ObserverBase):
    """Order entry for the application (module docstring).

    ``executions`` supplies the shared tracker; ``limiter`` the client-side rate limiter (none:
    no limiting); ``gate`` the kill switch's gate (a new one if ``None``); ``recovery`` the
    reconciliation observer that resolves ambiguous requests (none: they stay ambiguous and are
    reported ``"unresolved"``). ``default_session`` is used when a request names none (default:
    the first order-entry session that is logged on). ``retry_ambiguous`` is the default of the
    per-request flag; ``max_attempts`` bounds sends of one request. ``request_log`` makes
    sent requests survive a restart of the process (module docstring).
    """

    def __init__(
        self,
        executions: ExecutionStream,
        *,
        limiter: RateLimiter | None = None,
        gate: TradingGate | None = None,
        recovery: RecoveryObserver | None = None,
        default_session: str | None = None,
        retry_ambiguous: bool = False,
        max_attempts: int = 3,
        id_factory: Callable[[], str] | None = None,
        reply_timeout: float = 10.0,
        request_log: RequestLog | None = None,
    ) -> None:
        self.executions = executions
        self.request_log = request_log
        self.limiter = limiter
        self.gate = gate if gate is not None else TradingGate()
        self.recovery = recovery
        self.default_session = default_session
        self.retry_ambiguous = retry_ambiguous
        self.max_attempts = max_attempts
        self.reply_timeout = reply_timeout
        self._new_id = id_factory or (lambda: str(uuid.uuid4()))
        #: Outcomes the application should hear about (ambiguity, refusals, mass cancels).
        self.events: Fanout[OrderEvent] = Fanout(history=200)
        self.handles: dict[str, SessionHandle] = {}
        # ClOrdID -> the request's fields as a plain tuple (see _Request; read via _request()).
        self._requests: dict[str, tuple[str, str, str, bool, int | None]] = {}
        self._reserved: set[str] = set()
        self._amb: dict[str, _Ambiguity] = {}
        self._resending: set[str] = set()
        # (session, MsgSeqNum) → ClOrdID of the requests sent on the current connections, for a
        # BusinessMessageReject that names only RefSeqNum(45). Oldest first (dict order).
        self._by_seq: dict[tuple[str, int], str] = {}
        # _requests is swept of finished orders once it holds this many entries.
        self._sweep_at = _SWEEP_MIN
        self._mass: dict[str, tuple[str, _Waiter]] = {}
        self._groups: dict[str, deque[_Waiter]] = {}
        self._group_locks: dict[str, trio.Lock] = {}
        if recovery is not None:
            recovery.on_pass.append(self._on_pass)

    # ------------------------------------------------------------------ queries

    @property
    def tracker(self) -> OrderTracker:
        """The shared own-order tracker."""
        return self.executions.tracker

    def order(self, cl_ord_id: str) -> OrderState | None:
        """The order known under any ClOrdID of its chain."""
        return self.tracker.get(cl_ord_id)

    def open_orders(self) -> list[OrderState]:
        """Orders that are or may be working (open, in flight, or ambiguous)."""
        return self.tracker.open_orders()

    def subscribe(self, *, maxlen: int | None = None) -> Subscription[OrderEvent]:
        """A reader of :attr:`events`."""
        return self.events.subscribe(maxlen=maxlen)

    def trading_sessions(self) -> list[str]:
        """Order-entry sessions that may send orders (listeners excluded)."""
        out = []
        for name, h in self.handles.items():
            profile = h.config.profile
            if profile.order_entry and not h.config.logon.listener_session:
                out.append(name)
        return out

    def supports_mass_cancel(self, session: str) -> bool:
        """OrderMassCancelRequest exists on KalshiNR only (REFERENCE §4.9)."""
        return self.handles[session].config.profile.name == "KalshiNR"

    # ------------------------------------------------------------------ observer

    def attach(
        self, handles: dict[str, SessionHandle], spawn: Spawn, clock: Callable[[], float]
    ) -> None:
        super().attach(handles, spawn, clock)
        self._restore_logged_requests()
        # After a restart the tracker was rebuilt from the ledger: an EXCHANGE_UNAVAILABLE seen
        # before it is still ambiguous and is resolved by the first pass of this process.
        now = clock()
        for amb in self.tracker.ambiguous():
            self._amb.setdefault(amb.cl_ord_id, _Ambiguity(now, "restart", None))

    def _restore_logged_requests(self) -> None:
        """Requests the last process sent and the ledger has no report of: ambiguous again."""
        log = self.request_log
        if log is None or not log.recovered:
            return  # nothing unanswered in the file: no rewrite at start-up
        tracker = self.tracker
        for logged in log.recovered.values():
            cl = logged.cl_ord_id
            if tracker.get(cl) is not None:
                continue  # a report of it was stored: the exchange has it
            request = FixMessage()
            request.pairs = [(35, logged.msg_type), *logged.pairs]
            try:
                tracker.mark_sent(cl, request)
            except SupervisorError:
                continue  # a cancel/replace of an order nothing is known of: nothing to track
            tracker.mark_ambiguous(
                cl, f"sent on {logged.session} before the process stopped; no report of it "
                "was stored"
            )
        log.recovered = {}
        log.compact(self._unanswered())

    def _unanswered(self) -> Callable[[str], bool]:
        """Which ClOrdIDs the request log must keep: requests in flight or ambiguous."""
        tracker = self.tracker
        keep = set(tracker.in_flight())
        keep.update(a.cl_ord_id for a in tracker.ambiguous())
        return keep.__contains__

    def _log_request(self, cl: str, session: str, mt: bytes, body: list[tuple[int, bytes]]) -> None:
        """Append a request to the request log (raises RequestLogError: then do not send)."""
        log = self.request_log
        if log is None:
            return
        log.record(LoggedRequest(cl, session, mt, self.clock(), tuple(body)))
        if log.compaction_due:
            log.compact(self._unanswered())

    def session_down(self, down: SessionDown) -> None:
        name = down.name
        now = self.clock()
        # The next connection numbers its messages afresh (or resends under the same numbers):
        # a RefSeqNum(45) must never find a request of this one.
        for key in [k for k in self._by_seq if k[0] == name]:
            del self._by_seq[key]
        for cl in self.tracker.in_flight():
            req = self._request(cl)
            if req is None or req.session != name:
                continue
            self.tracker.mark_ambiguous(cl, f"in flight when {name} went down")
            self._amb[cl] = _Ambiguity(now, "disconnect", name)
        for cl in self.tracker.still_pending():
            # Acknowledged as pending, but the outcome (which may have been a reject — never
            # replayed) was lost with the connection (REFERENCE §6 step 5).
            req = self._request(cl)
            if req is None or req.session != name or cl in self._amb:
                continue
            self.tracker.mark_ambiguous(cl, f"pending at the exchange when {name} went down")
            self._amb[cl] = _Ambiguity(now, "disconnect", name)
        self._unresolvable()
        error = OutcomeUnknown(f"session {name} went down before the answer arrived")
        for cl, (session, waiter) in list(self._mass.items()):
            if session == name:
                waiter.fail(error)
                del self._mass[cl]
        for waiter in self._groups.pop(name, deque()):
            waiter.fail(error)

    def session_up(self, name: str, logged_on: LoggedOn) -> None:
        pass

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        msg = event.message
        # The core's index of the fields: every report passes here, and each msg.get() of a
        # tag it lacks (58 on an acknowledgement) would scan the whole message.
        get = event.field_map().get
        mt = get(35)
        if mt in (b"8", b"9"):
            if get(58) == _EXCHANGE_UNAVAILABLE:
                cl = msg.get_str(11)
                if cl is not None and cl not in self._amb:
                    # The tracker marked it ambiguous when it applied the report.
                    self._amb[cl] = _Ambiguity(self.clock(), "exchange_unavailable", name)
                    if self.recovery is not None:
                        self.recovery.request_pass(f"EXCHANGE_UNAVAILABLE for {cl}")
                    self._unresolvable()
            elif self._amb:
                self._settle_known()
            return
        if mt == b"r":
            cl = msg.get_str(11)
            entry = self._mass.pop(cl, None) if cl is not None else None
            result = MassCancelResult(
                session=name,
                cl_ord_id=cl or "",
                accepted=msg.get(531) == b"6",
                operation_id=msg.get_str(37),
                reject_reason=msg.get_str(532),
                text=msg.get_str(58),
            )
            if entry is not None:
                entry[1].set(result)
            self.events.publish(result)
            return
        if mt == b"UOH":
            queue = self._groups.get(name)
            if queue:
                limit = msg.get(20132)
                sub = msg.get(79)
                queue.popleft().set(
                    OrderGroupResult(
                        group_id=msg.get_str(20130) or "",
                        limit=int(limit) if limit and limit.isdigit() else None,
                        subaccount=int(sub) if sub and sub.isdigit() else None,
                        message=msg,
                    )
                )
            return
        if mt == b"j":
            self._on_business_reject(name, msg)

    def _on_business_reject(self, name: str, msg: FixMessage) -> None:
        ref_type = msg.get(372)
        reason_raw = msg.get(380)
        reason = int(reason_raw) if reason_raw and reason_raw.isdigit() else None
        text = msg.get_str(58)
        ref_seq_raw = msg.get(45)
        cl = msg.get_str(379)
        if cl is None and ref_seq_raw is not None and ref_seq_raw.isdigit():
            cl = self._by_seq.get((name, int(ref_seq_raw)))
        req = self._request(cl) if cl is not None else None
        if reason == 8 and self.limiter is not None:
            self.limiter.throttled(req.shard if req is not None else None)
        if ref_type == b"UOG":
            queue = self._groups.get(name)
            if queue:
                queue.popleft().fail(
                    RequestRefused(f"order group request refused: {text or reason}", reason, text)
                )
        elif ref_type == b"q" and cl is not None and cl in self._mass:
            session, waiter = self._mass.pop(cl)
            waiter.set(MassCancelResult(session, cl, accepted=False, text=text))
        elif req is not None and req.msg_type in ("D", "F", "G"):
            # Refused before the exchange handled it: definitely not applied. Record it in the
            # tracker as a local reject (never an execution: the ledger does not see it).
            self.tracker.apply(_local_reject(req, text or "BUSINESS_REJECT"))
        self.events.publish(
            RequestRejected(
                cl, ref_type.decode("latin-1") if ref_type else None, name, reason, text
            )
        )

    # ------------------------------------------------------------------ sending

    def _session(self, session: str | None, *, need_mass_cancel: bool = False) -> SessionHandle:
        if session is not None:
            handle = self.handles.get(session)
            if handle is None or session not in self.trading_sessions():
                raise SupervisorError(
                    f"no order-entry session named {session!r}; order-entry sessions: "
                    f"{', '.join(self.trading_sessions()) or 'none'}"
                )
            return handle
        if self.default_session is not None:
            return self._session(self.default_session)
        if not need_mass_cancel:
            # The first logged-on trading session, without building the list: this runs for
            # every order (the list is built below only to name the sessions in the error).
            for h in self.handles.values():
                if h.active and h.config.profile.order_entry and not (
                    h.config.logon.listener_session
                ):
                    return h
        names = self.trading_sessions()
        if need_mass_cancel:
            names = [n for n in names if self.supports_mass_cancel(n)]
        for n in names:
            if self.handles[n].active:
                return self.handles[n]
        if not names:
            raise SupervisorError("no order-entry (KalshiNR/KalshiRT) session is configured")
        raise SessionNotActive(
            f"no order-entry session is logged on ({', '.join(names)}); wait for one "
            "(handle.wait_active()) and try again — requests are never queued"
        )

    def _claim_cl_ord_id(self, cl_ord_id: str | None) -> str:
        cl = cl_ord_id if cl_ord_id is not None else self._new_id()
        if not isinstance(cl, str) or not _CL_ORD_ID.fullmatch(cl):
            raise ValueError(
                f"ClOrdID {cl!r} is not valid for Kalshi: 1-64 characters of letters, digits "
                "and _ - : + = / (REFERENCE §4.4)"
            )
        if cl in self._reserved or cl in self._requests or self.tracker.get(cl) is not None:
            raise DuplicateRequestError(
                f"ClOrdID {cl!r} was already used; a ClOrdID is never reused for a different "
                "request (omit cl_ord_id to get a fresh uuid4)"
            )
        self._reserved.add(cl)
        return cl

    async def _send(
        self,
        handle: SessionHandle,
        msg_type: str,
        wire: list[tuple[int, bytes]],
        *,
        cl: str | None,
        exposure: bool,
        retry: bool = False,
        track: bool = True,
    ) -> OrderTicket:
        """Rate-limit, re-check, record, send (no await between the last check and the send).
        ``wire`` is the body as :func:`~sessions.message.wire_pairs` renders it, rendered once
        for the limiter, the tracker and the session."""
        if exposure:
            self.gate.check(_GATED.get(msg_type, msg_type))
        if not handle.active:
            raise SessionNotActive(
                f"session {handle.name} is not logged on; the {msg_type} request was not sent "
                "(requests are never queued — wait for the session and try again)"
            )
        mt = msg_type.encode("ascii")
        shard = None
        if self.limiter is not None:
            shard = await self.limiter.acquire(mt, wire, session=handle.name)
        try:
            if exposure:
                self.gate.check(_GATED.get(msg_type, msg_type))
            if not handle.active:
                raise SessionNotActive(
                    f"session {handle.name} went down while the {msg_type} request waited for "
                    "the rate limiter; it was not sent"
                )
        except BaseException:
            if self.limiter is not None:
                self.limiter.refund(shard)
            raise
        req: _Request | None = None
        if track and cl is not None:
            # Before sending: a request is never forgotten, even if the process dies right after.
            request = FixMessage()
            request.pairs = [(35, mt), *wire]  # rendered already: no second check of the pairs
            self.tracker.mark_sent(cl, request)
            req = _Request(cl, handle.name, msg_type, retry, shard)
            # Stored as a plain tuple: the garbage collector stops tracking that (not a
            # subclass), and a resting order's request would otherwise be walked by every
            # full collection.
            self._requests[cl] = tuple(req)  # type: ignore[assignment]  # the same fields
        try:
            if req is not None:
                self._log_request(cl or "", handle.name, mt, wire)
            seq = handle.send_app(msg_type, wire)
        except (SessionNotActive, RequestLogError) as e:
            if self.limiter is not None:
                self.limiter.refund(shard)
            if req is not None:
                # Not sent at all: close it locally so it is neither in flight nor ambiguous.
                down = isinstance(e, SessionNotActive)
                why = "NOT_SENT_SESSION_DOWN" if down else "NOT_SENT_REQUEST_LOG"
                self.tracker.apply(_local_reject(req, why))
            raise
        if cl is not None:
            self._remember_seq(handle.name, seq, cl)
            if len(self._requests) >= self._sweep_at:
                self._sweep_requests()
        return OrderTicket(cl or "", handle.name, msg_type, seq)

    def _request(self, cl: str) -> _Request | None:
        """The request sent under ClOrdID ``cl``, if it is still remembered."""
        fields = self._requests.get(cl)
        return None if fields is None else _Request._make(fields)

    def _remember_seq(self, session: str, seq: int, cl: str) -> None:
        by_seq = self._by_seq
        by_seq[(session, seq)] = cl
        if len(by_seq) > _BY_SEQ_LIMIT:
            # A BusinessMessageReject answers within moments; a connection that lives for days
            # must not keep every number it ever sent.
            del by_seq[next(iter(by_seq))]

    def _sweep_requests(self) -> None:
        """Forget the requests of orders that are over (neither open nor ambiguous nor being
        resent): a process that runs for weeks must not keep every request it ever sent. The
        tracker still knows those orders (ClOrdID reuse stays refused)."""
        is_open = self.tracker.is_open
        for cl in list(self._requests):
            if cl in self._amb or cl in self._resending:
                continue
            if not is_open(cl):  # None: the tracker forgot it, closed
                del self._requests[cl]
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self._requests))

    async def new_order(
        self,
        symbol: str,
        side: str | int,
        qty: Decimal | int | str,
        price: Decimal | int | str,
        *,
        tif: str | None = None,
        cl_ord_id: str | None = None,
        session: str | None = None,
        exchange_index: int | None = None,
        order_group: str | None = None,
        retry_ambiguous: bool | None = None,
        extra: Iterable[tuple[int, Value]] = (),
    ) -> OrderTicket:
        """Send a limit NewOrderSingle (35=D).

        ``side``: ``"buy"``/``1`` (buy Yes) or ``"sell"``/``2`` (sell Yes = buy No); ``price`` in
        cents (or dollars when the session logs on with UseDollars); ``tif`` TimeInForce(59)
        (absent = the exchange's default); ``exchange_index`` ExDestination(100);
        ``order_group`` SecondaryClOrdID(526); ``extra`` more body fields. Raises
        :class:`SessionNotActive` (session down: nothing queued),
        :class:`~supervisor.killswitch.KillSwitchEngaged`, or
        :class:`~supervisor.orders.DuplicateRequestError` (ClOrdID reuse).
        """
        side_code = _SIDES.get(str(side).lower())
        if side_code is None:
            raise ValueError(f"side must be buy/sell (1/2), got {side!r}")
        self.gate.check("new order")
        handle = self._session(session)
        cl = self._claim_cl_ord_id(cl_ord_id)
        try:
            # Rendered here as wire_pairs() would render it, field by field (this runs for
            # every order; the generic rendering was a good part of its cost), in the same order
            # of events: the index is announced and ``extra`` read before anything is rendered.
            qty_text, price_text = str(qty), str(price)
            if exchange_index is not None and self.recovery is not None:
                self.recovery.use_index(exchange_index)
            more = list(extra)
            wire = [
                (11, cl.encode("ascii")), (38, qty_text.encode("ascii")), (40, b"2"),
                (44, price_text.encode("ascii")), (54, side_code), (55, to_bytes(symbol)),
            ]
            if tif is not None:
                wire.append((59, to_bytes(tif)))
            if order_group is not None:
                wire.append((526, to_bytes(order_group)))
            if exchange_index is not None:
                wire.append((100, to_bytes(exchange_index)))
            if more:
                wire += wire_pairs(more)
            retry = self.retry_ambiguous if retry_ambiguous is None else retry_ambiguous
            return await self._send(handle, "D", wire, cl=cl, exposure=True, retry=retry)
        finally:
            self._reserved.discard(cl)

    def _order_for(self, orig_cl_ord_id: str) -> OrderState:
        state = self.tracker.get(orig_cl_ord_id)
        if state is None:
            raise UnknownOrderError(f"no order is known under ClOrdID {orig_cl_ord_id!r}")
        return state

    def _origin_session(self, state: OrderState) -> str | None:
        for cl in state.cl_ord_ids:
            req = self._request(cl)
            if req is not None:
                return req.session
        return None

    async def cancel(
        self,
        orig_cl_ord_id: str,
        *,
        cl_ord_id: str | None = None,
        session: str | None = None,
        retry_ambiguous: bool | None = None,
    ) -> OrderTicket:
        """Send an OrderCancelRequest (35=F) for the order known under ``orig_cl_ord_id`` (any
        ClOrdID of its chain; the request names the current one). Allowed while the kill switch
        is engaged. Sent on the session that entered the order unless ``session`` says otherwise.
        """
        state = self._order_for(orig_cl_ord_id)
        handle = self._session(session or self._origin_session(state))
        cl = self._claim_cl_ord_id(cl_ord_id)
        try:
            body: list[tuple[int, Value]] = [(11, cl), (41, state.cl_ord_id)]
            if state.order_id is not None:
                body.append((37, state.order_id))
            body += [(54, state.side or ""), (55, state.symbol or "")]
            retry = self.retry_ambiguous if retry_ambiguous is None else retry_ambiguous
            return await self._send(
                handle, "F", wire_pairs(body), cl=cl, exposure=False, retry=retry
            )
        finally:
            self._reserved.discard(cl)

    async def replace(
        self,
        orig_cl_ord_id: str,
        *,
        qty: Decimal | int | str | None = None,
        price: Decimal | int | str | None = None,
        cl_ord_id: str | None = None,
        session: str | None = None,
        retry_ambiguous: bool | None = None,
    ) -> OrderTicket:
        """Send an OrderCancelReplaceRequest (35=G): new total ``qty`` and/or new ``price``
        (unchanged when omitted). Refused while the kill switch is engaged."""
        self.gate.check("replace")
        state = self._order_for(orig_cl_ord_id)
        new_qty = qty if qty is not None else state.order_qty
        if new_qty is None:
            raise ValueError(f"the quantity of order {orig_cl_ord_id!r} is unknown; pass qty=")
        handle = self._session(session or self._origin_session(state))
        cl = self._claim_cl_ord_id(cl_ord_id)
        try:
            body: list[tuple[int, Value]] = [(11, cl), (41, state.cl_ord_id)]
            if state.order_id is not None:
                body.append((37, state.order_id))
            body += [(38, str(new_qty)), (40, "2")]
            new_price = price if price is not None else state.price
            if new_price is not None:
                body.append((44, str(new_price)))
            body += [(54, state.side or ""), (55, state.symbol or "")]
            retry = self.retry_ambiguous if retry_ambiguous is None else retry_ambiguous
            return await self._send(
                handle, "G", wire_pairs(body), cl=cl, exposure=True, retry=retry
            )
        finally:
            self._reserved.discard(cl)

    async def cancel_all(self, *, session: str | None = None) -> list[str]:
        """An OrderCancelRequest for every open order (entered through ``session``, when given).
        Returns the ClOrdIDs of the cancels sent."""
        sent = []
        for state in self.open_orders():
            # In-flight and ambiguous orders included: a cancel behind an unanswered order on
            # the same session is handled after it; for an order that does not exist the
            # exchange just refuses the cancel.
            origin = self._origin_session(state)
            if session is not None and origin not in (None, session):
                continue
            try:
                ticket = await self.cancel(state.cl_ord_id, session=session or origin)
            except (UnknownOrderError, DuplicateRequestError):
                continue
            sent.append(ticket.cl_ord_id)
        return sent

    async def mass_cancel(
        self, *, session: str | None = None, timeout: float | None = None
    ) -> MassCancelResult:
        """OrderMassCancelRequest (35=q, type 6) on a KalshiNR session; waits for the
        OrderMassCancelReport (35=r). The cancelled orders' reports arrive on the executions
        stream. A missing answer gives ``answered=False`` (outcome unknown)."""
        handle = self._session(session, need_mass_cancel=True)
        if not self.supports_mass_cancel(handle.name):
            raise SupervisorError(
                f"session {handle.name} is {handle.config.profile.name}: mass cancel exists on "
                "KalshiNR only (use cancel_all())"
            )
        cl = self._new_id()
        waiter = _Waiter()
        self._mass[cl] = (handle.name, waiter)
        try:
            body: list[tuple[int, Value]] = [(11, cl), (530, "6")]
            await self._send(handle, "q", wire_pairs(body), cl=cl, exposure=False, track=False)
        except BaseException:
            self._mass.pop(cl, None)
            raise
        limit = self.reply_timeout if timeout is None else timeout
        try:
            result: MassCancelResult = await waiter.wait(limit)
            return result
        except (trio.TooSlowError, OutcomeUnknown) as e:
            self._mass.pop(cl, None)
            return MassCancelResult(handle.name, cl, accepted=False, answered=False, text=str(e))

    # ------------------------------------------------------------------ order groups

    async def order_group(
        self,
        action: Literal["create", "reset", "delete", "trigger", "update"],
        *,
        group_id: str | None = None,
        limit: int | None = None,
        subaccount: int | None = None,
        exchange_index: int | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> OrderGroupResult:
        """OrderGroupRequest (35=UOG, REFERENCE §5); returns the OrderGroupResponse (35=UOH).

        UOH carries no request id, so one request per session is outstanding at a time and
        answers are matched in order. Raises :class:`RequestRefused` on a 35=j,
        :class:`OutcomeUnknown` when no answer came (timeout, session down).
        """
        code = _GROUP_ACTIONS.get(action)
        if code is None:
            raise ValueError(f"order group action must be one of {', '.join(_GROUP_ACTIONS)}")
        if action == "create":
            if group_id is not None:
                raise ValueError("create takes no group_id: the exchange assigns it")
            self.gate.check("order group create")
        elif group_id is None:
            raise ValueError(f"{action} needs the group_id")
        if action in ("create", "update") and limit is None:
            raise ValueError(f"{action} needs limit (1..1,000,000 contracts)")
        handle = self._session(session)
        body: list[tuple[int, Value]] = [(20131, code)]
        if group_id is not None:
            body.append((20130, group_id))
        if limit is not None:
            body.append((20132, limit))
        if subaccount is not None:
            body.append((79, subaccount))
        if exchange_index is not None:
            body.append((100, exchange_index))
        lock = self._group_locks.setdefault(handle.name, trio.Lock())
        async with lock:
            waiter = _Waiter()
            queue = self._groups.setdefault(handle.name, deque())
            queue.append(waiter)
            try:
                await self._send(
                    handle, "UOG", wire_pairs(body), cl=None, exposure=False, track=False
                )
            except BaseException:
                if waiter in queue:
                    queue.remove(waiter)
                raise
            wait_s = self.reply_timeout if timeout is None else timeout
            try:
                group: OrderGroupResult = await waiter.wait(wait_s)
                return group
            except trio.TooSlowError:
                if waiter in queue:
                    queue.remove(waiter)
                raise OutcomeUnknown(
                    f"no OrderGroupResponse within {wait_s:g} s on {handle.name}; the {action} "
                    "may or may not have been applied"
                ) from None

    # ------------------------------------------------------------------ ambiguity

    def _eligible(
        self, amb: _Ambiguity, request: AmbiguousRequest, report: RecoveryReport
    ) -> str:
        """``"yes"``; ``"later"`` (a pass that starts later will cover it: ask for one);
        ``"wait"`` (the session is still down: its reconnect brings a pass anyway)."""
        if amb.kind == "disconnect" and amb.session not in report.covered:
            # The old connection is finished at the exchange only once the session is back
            # (one connection per key), so the replay must start after that.
            return "wait"
        if amb.since >= report.started:
            return "later"  # the replay may have run before the exchange saw the request
        replayed = {r.index for r in report.requests}
        missing = self._shards(request) - replayed
        if missing:
            # Replays are per exchange index: a complete replay of the others says nothing
            # about this request, and taking it for "never arrived" resent a live order.
            if self.recovery is not None:
                for index in sorted(missing):
                    self.recovery.use_index(index)
            return "later"
        return "yes"

    def _shards(self, request: AmbiguousRequest) -> set[int]:
        """The exchange indexes whose replay would hold an answer to ``request``: the one its
        ExDestination(100) names, else the one its order's reports came from, else all of them
        (auto-routed by symbol to a shard the client cannot tell)."""
        msg = request.request
        raw = None if msg is None else msg.get(100)
        if raw is not None and raw.isdigit():
            return {int(raw)}
        state = self.tracker.get(request.cl_ord_id)
        if state is not None and state.last_exec_id is not None:
            return {state.last_exec_id.index}
        known = set(EXCHANGE_INDEXES)
        if self.recovery is not None:
            known.update(self.recovery.indexes())
        return known

    def _unresolvable(self) -> None:
        """Without reconciliation nothing can resolve an ambiguous request: say so at once."""
        if self.recovery is not None:
            return
        for amb in self.tracker.ambiguous():
            meta = self._amb.get(amb.cl_ord_id)
            if meta is not None and not meta.reported_unresolved:
                meta.reported_unresolved = True
                self.events.publish(
                    AmbiguityResolved(
                        amb.cl_ord_id, "unresolved",
                        f"{amb.reason}; reconciliation through the drop copy is disabled: check "
                        "the order through REST (a later report of it still settles it)",
                        self.tracker.get(amb.cl_ord_id), amb.msg_type,
                    )
                )

    def _settle_known(self) -> None:
        """Announce ambiguous requests a real report has since mentioned (live or replayed):
        the tracker ended their ambiguity when it applied the report."""
        still = {a.cl_ord_id for a in self.tracker.ambiguous()}
        for cl in [c for c in self._amb if c not in still and c not in self._resending]:
            del self._amb[cl]
            req = self._request(cl)
            self.events.publish(
                AmbiguityResolved(
                    cl, "known", "the exchange reported it", self.tracker.get(cl),
                    req.msg_type if req is not None else None,
                )
            )

    def _on_pass(self, report: RecoveryReport) -> None:
        self._settle_known()
        later = False
        # Requests to send again, per session, resent in the order they were first sent (below).
        resends: dict[str, list[tuple[str, FixMessage, str]]] = {}
        for amb in self.tracker.ambiguous():
            cl = amb.cl_ord_id
            meta = self._amb.get(cl)
            if meta is None:
                meta = self._amb[cl] = _Ambiguity(report.started, "restart", None)
                later = True
                continue
            if cl in self._resending:
                continue
            eligible = self._eligible(meta, amb, report)
            if eligible != "yes":
                later = later or eligible == "later"
                continue
            if not report.complete:
                if not meta.reported_unresolved:
                    meta.reported_unresolved = True
                    self.events.publish(
                        AmbiguityResolved(
                            cl, "unresolved",
                            "the drop-copy replay was incomplete "
                            f"({'; '.join(_alert_text(a) for a in report.alerts) or 'no answer'});"
                            " check the order through REST",
                            self.tracker.get(cl), amb.msg_type,
                        )
                    )
                continue
            resolution = self.tracker.resolve(cl, ())
            del self._amb[cl]
            if resolution.outcome is ResolutionOutcome.KNOWN:
                self.events.publish(
                    AmbiguityResolved(cl, "known", amb.reason, resolution.order, amb.msg_type)
                )
                continue
            req = self._request(cl)
            attempts = amb.attempts
            why: str | None = None
            if req is None and amb.request is not None:
                why = "not resent: it was sent before a restart of the process"
            elif req is None or not req.retry:
                why = "not resent: retry_ambiguous is off"
            elif attempts >= self.max_attempts:
                why = f"not resent: {attempts} attempts made (max_attempts)"
            elif not self.gate.open and req.msg_type in ("D", "G"):
                why = "not resent: the kill switch is engaged"
            elif amb.request is None:
                why = "not resent: the request is not known any more (restart)"
            if why is not None:
                self._not_received(cl, amb.msg_type, f"{amb.reason}; a complete drop-copy "
                                   f"replay has no report of it ({why})")
            else:
                assert amb.request is not None and req is not None
                self._resending.add(cl)
                resends.setdefault(req.session, []).append((cl, amb.request, amb.reason))
        if resends:
            # One task per session resends that session's requests one after the other, in the
            # order they were first sent (the order of _requests). A task per request let the
            # scheduler pick the order: an order and its cancel, both lost at a disconnect,
            # went out cancel first — the exchange refused the cancel (no such order yet), then
            # placed the order the application had cancelled.
            rank = {cl: i for i, cl in enumerate(self._requests)}
            for batch in resends.values():
                batch.sort(key=lambda item: rank.get(item[0], len(rank)))
                self.spawn(functools.partial(self._resend_in_order, batch))
        if later and self.recovery is not None:
            self.recovery.request_pass("ambiguous requests not covered by the last pass")

    def _not_received(self, cl: str, msg_type: str | None, reason: str) -> None:
        """Close a request that never reached the exchange and tell the application."""
        req = self._request(cl) or _Request(cl, "", msg_type or "D", False)
        # The order never existed: record it as rejected locally (the application sees the
        # reason), so it is neither open nor pending for ever.
        self.tracker.apply(_local_reject(req, "NOT_RECEIVED_BY_EXCHANGE"))
        if self.request_log is not None:
            try:
                # Settled without a report: a restart must not make it ambiguous again.
                self.request_log.forget(cl)
            except RequestLogError:
                pass  # then a restart reports it once more (not_received again): harmless
        self.events.publish(AmbiguityResolved(cl, "not_received", reason, self.tracker.get(cl),
                                              msg_type))

    async def _resend_in_order(self, batch: list[tuple[str, FixMessage, str]]) -> None:
        """Resend one session's requests in the given order, each once its turn comes."""
        try:
            for cl, request, reason in batch:
                await self._resend(cl, request, reason)
        finally:
            # Those never reached (the supervisor is shutting down) are not being resent.
            for cl, _request, _reason in batch:
                self._resending.discard(cl)

    async def _resend(self, cl: str, request: FixMessage, reason: str) -> None:
        """Send the same request again, with the same ClOrdID, once its session is up."""
        req = self._request(cl)
        assert req is not None  # a resend is only started for a known request
        handle = self.handles[req.session]
        body = [(t, v) for t, v in request.pairs if t != 35]
        exposure = req.msg_type in ("D", "G")
        try:
            while True:
                try:
                    await handle.wait_active()
                except ChildStopped as e:
                    self._not_received(cl, req.msg_type, f"{reason}; not resent: {e}")
                    return
                except SessionNotActive:
                    return  # the supervisor is shutting down
                try:
                    if exposure:
                        self.gate.check("retry of an ambiguous request")
                    shard = None
                    if self.limiter is not None:
                        shard = await self.limiter.acquire(req.msg_type, body, session=handle.name)
                    if exposure:
                        self.gate.check("retry of an ambiguous request")
                    if not handle.active:
                        if self.limiter is not None:
                            self.limiter.refund(shard)
                        continue
                    # The tracker permits exactly this reuse (resolve() answered
                    # RESEND_SAME_CLORDID); anything else raises DuplicateRequestError.
                    self.tracker.mark_sent(cl, request)
                    self._log_request(cl, handle.name, req.msg_type.encode("ascii"), body)
                    seq = handle.send_app(req.msg_type, body)
                except SessionNotActive:
                    continue
                except (DuplicateRequestError, SupervisorError, RequestLogError) as e:
                    self._not_received(cl, req.msg_type, f"{reason}; not resent: {e}")
                    return
                self._remember_seq(handle.name, seq, cl)
                self.events.publish(
                    AmbiguityResolved(
                        cl, "resent",
                        f"{reason}; a complete drop-copy replay has no report of it: sent again "
                        "with the same ClOrdID",
                        self.tracker.get(cl), req.msg_type,
                    )
                )
                return
        finally:
            self._resending.discard(cl)


class RequestRefused(SupervisorError):
    """The exchange refused a request before handling it (BusinessMessageReject, 35=j)."""

    def __init__(self, message: str, reason: int | None, text: str | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.text = text


def _alert_text(alert: object) -> str:
    message = getattr(alert, "message", None)
    return str(message) if message is not None else repr(alert)


def _local_reject(req: _Request, text: str) -> FixMessage:
    """A reject as the tracker understands it, for a request the exchange never applied.
    Never offered to the ledger: it is the supervisor's own record, not an execution."""
    if req.msg_type == "D":
        return FixMessage(
            [(35, "8"), (37, "NONE"), (11, req.cl_ord_id), (17, "-1;-1"), (150, "8"), (39, "8"),
             (103, "99"), (58, text)]
        )
    return FixMessage(
        [(35, "9"), (37, "NONE"), (11, req.cl_ord_id), (39, "8"),
         (434, "1" if req.msg_type == "F" else "2"), (102, "99"), (58, text)]
    )

