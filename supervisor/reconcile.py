"""Drop-copy recovery planning and decisions (pure: no I/O, no clock — time is passed in).

The recovery pattern (REFERENCE §6): after any gap in an order-entry session's stream (NR
disconnect, restart, maintenance, sequence gap, a failed RT resend) ask the drop copy, once per
exchange index, to replay from the last stored ExecID (inclusive, so the first replayed report is
a duplicate the ledger drops) with EventResendRequest (35=U1), EndExecID omitted. The server
replays ExecutionReports and ends with EventResendComplete (U2, ``21003`` = count) or
EventResendReject (U3, ``21004`` = reason).

Decisions for U3 reasons (``21004``):

====  ==========================================  =========================================
code  meaning                                     outcome
====  ==========================================  =========================================
1     too many resend requests                    ``RETRY_BACKOFF``: same request, back off
2     server error                                ``RETRY_LATER``: same request, later
3     BeginExecID too small / outside the window  ``GAP_TOO_OLD``: alert; history beyond the
                                                  3 h lookback is gone — reconcile via REST
4     EndExecID too large                         ``RETRY_WITHOUT_END``: same begin, no end
5     replay not enabled for the key (UNCONFIRMED ``NOT_AVAILABLE``: non-retryable capability
      in official pages)                          alert
any   unknown code                                ``NOT_AVAILABLE`` (REFERENCE §6: treat
                                                  unknown reasons as non-retryable)
====  ==========================================  =========================================

A U2 whose ``21003`` differs from the number of reports actually received is ``INCOMPLETE``:
reports were lost on the (non-retransmitting) drop-copy session, so the same request is asked
again (the ledger makes the repeat harmless) and a :class:`ReplayCountMismatch` alert says so.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Union

import attrs

from sessions.errors import KalshiFixError
from sessions.message import FixMessage

from .execid import ExecId, ExecIdError

__all__ = [
    "Alert",
    "GapTooOld",
    "LOOKBACK_MARGIN_S",
    "LOOKBACK_S",
    "OutcomeKind",
    "ReconcileError",
    "RecoveryOutcome",
    "RecoverySession",
    "ReplayCountMismatch",
    "ReplayNotAvailable",
    "U1Request",
    "build_u1",
    "needs_lookback_alert",
    "on_u2",
    "on_u3",
    "plan_recovery",
]

#: How far back the drop copy can replay (REFERENCE §6).
LOOKBACK_S: float = 3 * 3600.0
#: Safety margin below the lookback: our clock, the exchange's and the time a U1 takes to arrive
#: differ, so a gap this close to 3 h is treated as already too old (careful reading of an
#: exact-sounding limit).
LOOKBACK_MARGIN_S: float = 60.0

# Tags (REFERENCE Appendix B).
_REF_SEQ_NUM = 45
_BEGIN_EXEC_ID = 21001
_END_EXEC_ID = 21002
_RESEND_EVENT_COUNT = 21003
_EVENT_RESEND_REJECT_REASON = 21004


class ReconcileError(KalshiFixError, ValueError):
    """A message handed to the recovery logic is not what it expects (names the problem)."""


def _fmt_span(start: float | None, now: float | None) -> str:
    if start is None or now is None:
        return "of unknown length"
    return f"of {max(0.0, now - start) / 3600:.2f} h (since epoch {start:.3f})"


@attrs.frozen
class GapTooOld:
    """Executions of ``session`` on ``index`` from ``begin`` on cannot be replayed: the gap
    reaches back further than the drop copy's lookback. Reconcile through REST."""

    session: str
    index: int
    begin: ExecId
    gap_start_time: float | None
    now: float | None
    lookback_s: float = LOOKBACK_S
    anchored: bool = True

    @property
    def message(self) -> str:
        """A sentence an operator can act on."""
        if not self.anchored:
            return (
                f"{self.session}: no stored ExecID for exchange index {self.index}, and the drop "
                f"copy refused to replay from {self.begin}: executions on that index since the "
                "gap cannot be recovered over FIX — reconcile the account through the REST API"
            )
        return (
            f"{self.session}: gap on exchange index {self.index} from ExecID {self.begin} "
            f"{_fmt_span(self.gap_start_time, self.now)} exceeds the drop copy's "
            f"{self.lookback_s / 3600:g} h lookback; executions in it cannot be replayed — "
            "reconcile the account through the REST API"
        )


@attrs.frozen
class ReplayNotAvailable:
    """The drop copy refused replay for a reason that retrying cannot fix (U3 reason 5 —
    replay not enabled for the key — or a reason code we do not know)."""

    session: str
    index: int
    reason_code: int | None
    text: str | None

    @property
    def message(self) -> str:
        """A sentence an operator can act on."""
        what = (
            "drop-copy replay is not enabled for this API key"
            if self.reason_code == 5
            else f"unknown EventResendRejectReason {self.reason_code!r}"
        )
        extra = f" ({self.text})" if self.text else ""
        return (
            f"{self.session}: EventResendRequest for exchange index {self.index} refused: "
            f"{what}{extra}; ask Kalshi to enable drop-copy replay on both the trading and the "
            "drop-copy key — until then executions missed during gaps are not recovered"
        )


@attrs.frozen
class ReplayCountMismatch:
    """The drop copy said it replayed ``expected`` reports; ``received`` arrived."""

    session: str
    index: int
    expected: int
    received: int

    @property
    def message(self) -> str:
        """A sentence an operator can act on."""
        return (
            f"{self.session}: replay of exchange index {self.index} announced {self.expected} "
            f"reports (21003) but {self.received} arrived; asking again from the same ExecID"
        )


Alert = Union[GapTooOld, ReplayNotAvailable, ReplayCountMismatch]


@attrs.frozen
class U1Request:
    """One EventResendRequest to send: replay ``index`` from ``begin`` (inclusive) to ``end``
    (inclusive; ``None`` = the latest). ``anchored`` is False when no ExecID was stored for the
    index (``begin`` is then ``0;0``); ``beyond_lookback`` when the gap was already older than
    the lookback at planning time (alert now; the answer will be U3 reason 3). ``attempt``
    counts tries of the same range (1 = first)."""

    index: int
    begin: ExecId
    end: ExecId | None = None
    anchored: bool = True
    beyond_lookback: bool = False
    attempt: int = 1

    def __attrs_post_init__(self) -> None:
        if self.begin.is_pending or self.begin.index != self.index:
            raise ReconcileError(
                f"BeginExecID {self.begin} cannot start a replay of exchange index {self.index}"
            )
        if self.end is not None and (self.end.is_pending or self.end.index != self.index):
            raise ReconcileError(
                f"EndExecID {self.end} must be a real ExecID on index {self.index} (REFERENCE §6)"
            )


class OutcomeKind(enum.Enum):
    """How a replay request ended (see the module table)."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    RETRY_BACKOFF = "retry_backoff"
    RETRY_LATER = "retry_later"
    RETRY_WITHOUT_END = "retry_without_end"
    GAP_TOO_OLD = "gap_too_old"
    NOT_AVAILABLE = "not_available"


_RETRYABLE = frozenset(
    {
        OutcomeKind.INCOMPLETE,
        OutcomeKind.RETRY_BACKOFF,
        OutcomeKind.RETRY_LATER,
        OutcomeKind.RETRY_WITHOUT_END,
    }
)


@attrs.frozen
class RecoveryOutcome:
    """The decision for one U2/U3. ``retry`` is the request to send next (after a back-off for
    ``RETRY_BACKOFF``/``RETRY_LATER``); ``alert`` is set when an operator must know."""

    kind: OutcomeKind
    request: U1Request | None
    retry: U1Request | None = None
    alert: Alert | None = None
    reason_code: int | None = None
    expected_count: int | None = None
    received_count: int | None = None

    @property
    def retryable(self) -> bool:
        """True when asking again (``retry``) can still recover the range."""
        return self.kind in _RETRYABLE


def needs_lookback_alert(
    gap_start_time: float,
    now: float,
    *,
    lookback_s: float = LOOKBACK_S,
    margin_s: float = LOOKBACK_MARGIN_S,
) -> bool:
    """True when a gap that began at ``gap_start_time`` can no longer be fully replayed at
    ``now``: older than the lookback minus ``margin_s``. Raise the :class:`GapTooOld` alert
    before even asking."""
    return now - gap_start_time > lookback_s - margin_s


def plan_recovery(
    ledger_last_ids: Mapping[int, ExecId | None],
    now: float,
    last_seen_time: float | None,
    *,
    lookback_s: float = LOOKBACK_S,
    margin_s: float = LOOKBACK_MARGIN_S,
) -> list[U1Request]:
    """One U1 per exchange index of ``ledger_last_ids`` (ascending), each from the stored
    ExecID (inclusive), EndExecID omitted.

    ``last_seen_time`` is when the stream was last known complete (the start of the gap); when
    that is beyond the lookback every request is marked ``beyond_lookback``. An index mapped to
    ``None`` (in use, nothing stored) gets an unanchored request from ``0;0``: the exchange
    either replays its whole window or refuses with reason 3, which then says "reconcile via
    REST" rather than pretending nothing was missed.
    """
    beyond = last_seen_time is not None and needs_lookback_alert(
        last_seen_time, now, lookback_s=lookback_s, margin_s=margin_s
    )
    plans = []
    for index in sorted(ledger_last_ids):
        last = ledger_last_ids[index]
        if type(index) is not int or index < 0:
            raise ReconcileError(f"exchange index must be an integer >= 0, got {index!r}")
        if last is None:
            plans.append(
                U1Request(index, ExecId(0, 0, index), anchored=False, beyond_lookback=beyond)
            )
            continue
        if last.index != index:
            raise ReconcileError(
                f"resume point {last} is on exchange index {last.index}, listed under {index}"
            )
        plans.append(U1Request(index, last, beyond_lookback=beyond))
    return plans


def build_u1(request: U1Request) -> list[tuple[int, bytes]]:
    """The body of the EventResendRequest (MsgType ``U1`` is given to the session separately):
    ``21001`` BeginExecID and, only when set, ``21002`` EndExecID, in wire form."""
    body = [(_BEGIN_EXEC_ID, str(request.begin).encode("ascii"))]
    if request.end is not None:
        body.append((_END_EXEC_ID, str(request.end).encode("ascii")))
    return body


def _int_field(message: FixMessage, tag: int) -> int | None:
    v = message.get(tag)
    if v is None or v == b"":
        return None
    try:
        return int(v)
    except ValueError:
        return None


def _check_type(message: FixMessage, want: bytes) -> None:
    mt = message.get(35)
    if mt != want:
        raise ReconcileError(f"expected MsgType {want.decode()}, got {mt!r}")


def on_u2(
    message: FixMessage,
    *,
    request: U1Request | None = None,
    session: str = "DC",
    replayed: int | None = None,
) -> RecoveryOutcome:
    """Decide an EventResendComplete. With ``replayed`` (reports received for the request) a
    difference from ``21003`` gives ``INCOMPLETE`` with a retry of the same range."""
    _check_type(message, b"U2")
    expected = _int_field(message, _RESEND_EVENT_COUNT)
    if replayed is not None and expected is not None and expected != replayed:
        alert = None
        retry = None
        if request is not None:
            alert = ReplayCountMismatch(session, request.index, expected, replayed)
            retry = attrs.evolve(request, attempt=request.attempt + 1)
        return RecoveryOutcome(
            OutcomeKind.INCOMPLETE,
            request,
            retry=retry,
            alert=alert,
            expected_count=expected,
            received_count=replayed,
        )
    return RecoveryOutcome(
        OutcomeKind.COMPLETE, request, expected_count=expected, received_count=replayed
    )


def on_u3(
    message: FixMessage,
    *,
    request: U1Request | None = None,
    session: str = "DC",
    gap_start_time: float | None = None,
    now: float | None = None,
    lookback_s: float = LOOKBACK_S,
) -> RecoveryOutcome:
    """Decide an EventResendReject from its ``21004`` reason (module table)."""
    _check_type(message, b"U3")
    code = _int_field(message, _EVENT_RESEND_REJECT_REASON)
    index = request.index if request is not None else -1
    again = None if request is None else attrs.evolve(request, attempt=request.attempt + 1)
    if code == 1:
        return RecoveryOutcome(OutcomeKind.RETRY_BACKOFF, request, retry=again, reason_code=code)
    if code == 2:
        return RecoveryOutcome(OutcomeKind.RETRY_LATER, request, retry=again, reason_code=code)
    if code == 4:
        if request is not None and request.end is None:
            # We never sent an EndExecID, so "too large" cannot be about ours: the server is
            # confused; treat as a transient server error.
            return RecoveryOutcome(OutcomeKind.RETRY_LATER, request, retry=again, reason_code=code)
        retry = None if again is None else attrs.evolve(again, end=None)
        return RecoveryOutcome(
            OutcomeKind.RETRY_WITHOUT_END, request, retry=retry, reason_code=code
        )
    if code == 3:
        begin = request.begin if request is not None else ExecId(0, 0, 0)
        alert = GapTooOld(
            session,
            index,
            begin,
            gap_start_time,
            now,
            lookback_s,
            anchored=True if request is None else request.anchored,
        )
        return RecoveryOutcome(OutcomeKind.GAP_TOO_OLD, request, alert=alert, reason_code=code)
    raw_text = message.get(58)
    text = None if raw_text is None else raw_text.decode("latin-1")
    return RecoveryOutcome(
        OutcomeKind.NOT_AVAILABLE,
        request,
        alert=ReplayNotAvailable(session, index, code, text),
        reason_code=code,
    )


class RecoverySession:
    """The state of one drop-copy recovery: a queue of :class:`U1Request` (one per index), at
    most one in flight (replayed reports cannot otherwise be told apart by request).

    Use: ``req = rs.next_request()`` → send ``build_u1(req)`` as U1 →
    ``rs.sent(msg_seq_num)`` → feed each replayed 35=8 to ``rs.on_report`` (and the ledger) →
    feed U2/U3 to ``rs.on_u2``/``rs.on_u3``, which answer ``None`` for a message that does not
    refer to the U1 in flight (stale ``RefSeqNum``). A retryable outcome puts its retry at the
    front of the queue; wait as the outcome says before the next ``next_request``.
    :attr:`complete` tells whether every index was replayed in full — the precondition of
    :meth:`supervisor.orders.OrderTracker.resolve`.
    """

    def __init__(
        self,
        requests: Iterable[U1Request],
        *,
        session: str = "DC",
        gap_start_time: float | None = None,
        lookback_s: float = LOOKBACK_S,
    ) -> None:
        self._queue: deque[U1Request] = deque(requests)
        self._session = session
        self._gap_start = gap_start_time
        self._lookback_s = lookback_s
        self._in_flight: U1Request | None = None
        self._ref_seq: int | None = None
        self._replayed = 0
        self._outcomes: list[RecoveryOutcome] = []
        self._failed = False

    def __repr__(self) -> str:
        return (
            f"RecoverySession({self._session!r}, queued={len(self._queue)}, "
            f"in_flight={self._in_flight!r}, replayed={self._replayed})"
        )

    @property
    def in_flight(self) -> U1Request | None:
        """The request sent and not yet answered."""
        return self._in_flight

    @property
    def expected_ref_seq(self) -> int | None:
        """MsgSeqNum of the U1 in flight: the RefSeqNum(45) its U2/U3 must carry."""
        return self._ref_seq

    @property
    def replayed(self) -> int:
        """Reports received so far for the request in flight."""
        return self._replayed

    @property
    def outcomes(self) -> list[RecoveryOutcome]:
        """Every decision taken so far, in order."""
        return list(self._outcomes)

    @property
    def done(self) -> bool:
        """Nothing queued and nothing in flight."""
        return self._in_flight is None and not self._queue

    @property
    def complete(self) -> bool:
        """Done, and every index ended with a complete replay (no alert-only endings)."""
        return self.done and not self._failed

    def next_request(self) -> U1Request | None:
        """The request to send now, or ``None`` (one is in flight, or all are done)."""
        if self._in_flight is not None or not self._queue:
            return None
        return self._queue[0]

    def sent(self, msg_seq_num: int) -> None:
        """The request from :meth:`next_request` went out as MsgSeqNum ``msg_seq_num``."""
        if self._in_flight is not None:
            raise ReconcileError(
                f"a U1 for index {self._in_flight.index} is still in flight; wait for its U2/U3"
            )
        if not self._queue:
            raise ReconcileError("no U1 request is queued")
        if type(msg_seq_num) is not int or msg_seq_num < 1:
            raise ReconcileError(f"MsgSeqNum must be an integer >= 1, got {msg_seq_num!r}")
        self._in_flight = self._queue.popleft()
        self._ref_seq = msg_seq_num
        self._replayed = 0

    def on_report(self, report: FixMessage, fields: dict[int, bytes] | None = None) -> bool:
        """Count a replayed ExecutionReport; False (not counted) when no U1 is in flight or it
        is on another exchange index than the one being replayed. ``fields`` is
        ``report.first_values()`` when the caller has it already."""
        get = report.get if fields is None else fields.get
        if self._in_flight is None or get(35) != b"8":
            return False
        raw = get(17)
        if raw is not None:
            try:
                if ExecId.parse(raw).index != self._in_flight.index:
                    return False
            except ExecIdError:
                pass  # still a replayed report the server counted; the ledger will refuse it
        self._replayed += 1
        return True

    def _ours(self, message: FixMessage) -> bool:
        return self._in_flight is not None and _int_field(message, _REF_SEQ_NUM) == self._ref_seq

    def _finish(self, outcome: RecoveryOutcome) -> RecoveryOutcome:
        self._outcomes.append(outcome)
        self._in_flight = None
        self._ref_seq = None
        if outcome.retry is not None:
            self._queue.appendleft(outcome.retry)
        elif outcome.kind is not OutcomeKind.COMPLETE:
            self._failed = True
        return outcome

    def on_u2(self, message: FixMessage) -> RecoveryOutcome | None:
        """Decide an EventResendComplete for the U1 in flight (``None`` if not ours)."""
        _check_type(message, b"U2")
        if not self._ours(message):
            return None
        return self._finish(
            on_u2(message, request=self._in_flight, session=self._session, replayed=self._replayed)
        )

    def on_u3(self, message: FixMessage, *, now: float | None = None) -> RecoveryOutcome | None:
        """Decide an EventResendReject for the U1 in flight (``None`` if not ours)."""
        _check_type(message, b"U3")
        if not self._ours(message):
            return None
        return self._finish(
            on_u3(
                message,
                request=self._in_flight,
                session=self._session,
                gap_start_time=self._gap_start,
                now=now,
                lookback_s=self._lookback_s,
            )
        )

    def connection_lost(self) -> None:
        """The drop-copy connection dropped: the request in flight goes back to the front of
        the queue (its partial replay is harmless; the ledger de-duplicates the repeat)."""
        if self._in_flight is not None:
            self._queue.appendleft(self._in_flight)
            self._in_flight = None
            self._ref_seq = None
            self._replayed = 0
