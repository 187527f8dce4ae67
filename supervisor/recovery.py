"""The reconciliation observer: recovers missed executions through the drop copy (REFERENCE §6).

:class:`RecoveryObserver` sits on every session of the tree. It watches the order-entry sessions
(KalshiNR, KalshiRT, and listener sessions on either) for *gaps* — a disconnect, restart or
maintenance stop, a sequence gap (a message the endpoint will never resend), a failed resend on
KalshiRT (our ResendRequest rejected, or numbers we asked for gap-filled instead of resent), a
mid-session sequence reset, a KalshiRT logon that had to reset its sequence numbers (continuity
lost), and the supervisor process itself having been down — and after each one asks the drop-copy session (KalshiDC) to replay with
EventResendRequest (U1), once per exchange index, from the last ExecID known complete. The
replayed reports go through the same :class:`~supervisor.streams.ExecutionStream` as the live
ones, so the ledger de-duplicates them by ExecID and the application sees every execution once.
U2/U3 decisions are :mod:`supervisor.reconcile`'s; the plumbing, waiting and persistence are
here.

Resume points ("marks"), per order-entry session and exchange index. The ledger's own resume
point (the highest ExecID stored) is not safe when several sessions feed it: session A can lose
a report while session B, still healthy, stores a later ExecID, and a replay from B's ExecID
would skip A's loss. So each session has its own mark: the highest ExecID such that every report
of that session up to it has been received. It advances

* on every live report the session receives while it has no open gap (a session's reports of one
  exchange index arrive in ExecID order: the exchange assigns ExecIDs in sequence and the session
  is sequenced; REFERENCE §4.7 — a lost one shows up as a gap *before* the next one is
  delivered);
* at the end of a complete replay that started while the session was up, to the last ExecID the
  replay returned for each index (everything up to it was replayed; everything after it reaches
  the session live);
* when the session logs on for the first time in this process without an open gap, to the
  ledger's marks (reports generated from then on are newer than anything stored).

The begin of a replay is, per index, the lowest mark over the sessions it covers; an index a
covered session has no mark for is replayed from ``0;0`` (unanchored: the drop copy's whole
window). Marks and open gaps are persisted (JSON, atomic replace) in ``state_path``, and a mark
only ever lags behind the truth there, so a stale file makes a replay longer, never incomplete.
After a restart of the process every order-entry session starts with an open gap from its
persisted marks (executions may have happened while the process was down).

When a pass runs: once the drop-copy session is up and at least one session with an open gap is
back up (the replay must start after the reconnect, or it could end before the gap does), or
when a component asked for one (:meth:`RecoveryObserver.request_pass`: an ambiguous order to
resolve), or every ``refresh_interval`` to keep marks fresh (a mark older than the 3-hour
lookback would make the next replay fail with U3 reason 3 although nothing was missed).

Merging and order: while a pass is pending or running the execution ledger *holds* (stores
without releasing); at the end it releases, merging the replay with the live reports that arrived
meanwhile in per-order ExecID order. The hold starts when a session with an open gap logs on
again (or at a sequence gap), not when it goes down: while it is down nothing of it arrives, and
the other sessions' executions keep flowing.

Requests and answers: one U1 in flight at a time (replays cannot be told apart otherwise), spaced
``min_interval`` apart (the drop copy refuses bursts with U3 reason 1). No U2/U3 within
``reply_timeout`` (the answer itself was lost: the drop copy does not retransmit) or the drop
copy going down puts the request back; U3 1 backs off exponentially, U3 2 waits
``retry_later``; a U2 whose count disagrees with the reports received asks again (the ledger
makes the repeat harmless). U3 3 (gap older than the 3-hour lookback) and 5/unknown (replay not
available) end the pass *incomplete* with an alert on :attr:`RecoveryObserver.alerts`; the marks
then move on to the ledger's, so later gaps are recovered again, and the operator reconciles the
lost stretch through REST. A gap already older than the lookback when planned is alerted before
the request is even sent.

Listeners of :attr:`RecoveryObserver.reports` (and the callbacks in ``on_pass``) get a
:class:`RecoveryReport` after each pass; the order-entry component resolves ambiguous orders
from complete ones.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import trio

from sessions.events import (
    ApplicationMessage,
    LoggedOn,
    SequenceGap,
    SequenceNumbersReset,
    SequenceResetReceived,
)
from sessions.message import FixMessage

from .errors import ChildStopped, SupervisorError
from .execid import EXCHANGE_INDEXES, ExecId, ExecIdError
from .observer import ObserverBase, SessionDown, SessionHandle, SessionNotActive, Spawn
from .reconcile import (
    LOOKBACK_MARGIN_S,
    LOOKBACK_S,
    Alert,
    GapTooOld,
    OutcomeKind,
    RecoveryOutcome,
    RecoverySession,
    U1Request,
    build_u1,
    plan_recovery,
)
from .records import replace_file
from .streams import ExecutionStream, Fanout

__all__ = [
    "EXCHANGE_INDEXES",
    "RecoveryAbandoned",
    "RecoveryUnavailable",
    "RecoveryObserver",
    "RecoveryReport",
    "RecoveryStateError",
    "STATE_VERSION",
]

log = logging.getLogger(__name__)

#: Version of the JSON state file.
STATE_VERSION = 1
# Replayed reports offered to the ledger per transaction.
_REPLAY_BATCH = 500


class RecoveryStateError(SupervisorError):
    """The recovery state file cannot be read or written (the message names it)."""


@attrs.frozen
class RecoveryAbandoned:
    """A replay request failed ``attempts`` times in a row without a usable answer (no U2/U3,
    or the drop copy kept dropping): the pass was given up and will be tried again later."""

    session: str
    index: int
    attempts: int

    @property
    def message(self) -> str:
        """A sentence an operator can act on."""
        return (
            f"{self.session}: replay of exchange index {self.index} got no usable answer after "
            f"{self.attempts} attempts; executions missed during the gap are not recovered yet "
            "(retrying later) — check the drop-copy session"
        )


@attrs.frozen
class RecoveryUnavailable:
    """The drop-copy session stopped for good (the tree will not restart it): no gap is
    recovered from now on until the supervisor is restarted with a working drop copy."""

    session: str
    reason: str

    @property
    def message(self) -> str:
        """A sentence an operator can act on."""
        return (
            f"{self.session}: the drop-copy session stopped ({self.reason}); executions missed "
            "in gaps are no longer recovered — fix the session and restart the supervisor "
            "(the next start recovers from the persisted resume points)"
        )


@attrs.frozen
class RecoveryReport:
    """The result of one recovery pass.

    ``complete``: every index was replayed in full (the precondition for resolving ambiguous
    orders). ``covered``: order-entry sessions that were up when the pass started (the replay
    covers everything they missed before it). ``started``/``finished`` are supervisor clock
    times; ``replayed`` reports came back, ``new`` of them were unknown to the ledger.
    """

    pass_id: int
    started: float
    finished: float
    complete: bool
    covered: frozenset[str]
    reasons: tuple[str, ...]
    requests: tuple[U1Request, ...]
    outcomes: tuple[RecoveryOutcome, ...]
    alerts: tuple[Alert | RecoveryAbandoned | RecoveryUnavailable, ...]
    replayed: int
    new: int


@attrs.define
class _Gap:
    since: float
    generation: int
    up: bool
    reason: str


def _mark_str(marks: dict[int, ExecId]) -> dict[str, str]:
    return {str(i): str(e) for i, e in sorted(marks.items())}


def _max(a: ExecId | None, b: ExecId) -> ExecId:
    if a is None or a.index != b.index or b.key > a.key:
        return b
    return a


class RecoveryObserver(ObserverBase):
    """Drop-copy reconciliation for the tree's order-entry sessions (module docstring).

    ``executions`` is the executions component (ledger + tracker); ``drop_copy`` the name of the
    KalshiDC session; ``state_path`` the JSON file for marks and open gaps (``None``: memory
    only); ``indexes`` exchange indexes always replayed (others join once seen in a report or
    named by :meth:`use_index`).
    """

    def __init__(
        self,
        executions: ExecutionStream,
        *,
        drop_copy: str,
        state_path: str | os.PathLike[str] | None = None,
        indexes: Iterable[int] = (0,),
        lookback_s: float = LOOKBACK_S,
        margin_s: float = LOOKBACK_MARGIN_S,
        min_interval: float = 1.0,
        reply_timeout: float = 30.0,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        retry_later: float = 5.0,
        max_attempts: int = 8,
        refresh_interval: float | None = 3600.0,
        save_interval: float = 10.0,
    ) -> None:
        self.executions = executions
        self.drop_copy = drop_copy
        self.state_path = None if state_path is None else Path(state_path)
        self._indexes: set[int] = set(indexes)
        self.lookback_s = lookback_s
        self.margin_s = margin_s
        self.min_interval = min_interval
        self.reply_timeout = reply_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.retry_later = retry_later
        self.max_attempts = max_attempts
        self.refresh_interval = refresh_interval
        self.save_interval = save_interval
        #: Operator alerts (GapTooOld, ReplayNotAvailable, ReplayCountMismatch, RecoveryAbandoned).
        self.alerts: Fanout[Alert | RecoveryAbandoned | RecoveryUnavailable] = Fanout(
            history=100
        )
        #: One report per finished pass.
        self.reports: Fanout[RecoveryReport] = Fanout(history=20)
        #: Synchronous callbacks run after each pass (before :attr:`reports` readers wake).
        self.on_pass: list[Callable[[RecoveryReport], None]] = []
        self._oe: list[str] = []
        self._marks: dict[str, dict[int, ExecId]] = {}
        self._gaps: dict[str, _Gap] = {}
        self._gen: dict[str, int] = {}
        self._up: set[str] = set()
        self._seen_up: set[str] = set()
        self._live_max: dict[str, dict[int, ExecId]] = {}
        self._wanted: list[str] = []
        self._wake = trio.Event()
        self._answer = trio.Event()
        self._rs: RecoverySession | None = None
        self._replay_max: dict[int, ExecId] = {}
        self._replay_buffer: list[FixMessage] = []
        self._replay_fields: list[dict[int, bytes]] = []
        self._replayed = 0
        self._new = 0
        self._last_u1: float | None = None
        self._last_pass_end: float | None = None
        self._last_save: float | None = None
        self._dirty = False
        self._pass_id = 0
        self._last_outcome: RecoveryOutcome | None = None
        self._dc_dropped = False
        self._dead: RecoveryUnavailable | None = None
        self._attached_at: float | None = None
        self._running = False
        self._idle = trio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ queries

    @property
    def order_entry_sessions(self) -> tuple[str, ...]:
        """The sessions watched for gaps."""
        return tuple(self._oe)

    def open_gaps(self) -> dict[str, tuple[float, bool, str]]:
        """``{session: (since, back_up, reason)}`` of gaps not yet recovered."""
        return {n: (g.since, g.up, g.reason) for n, g in self._gaps.items()}

    def marks(self, session: str) -> dict[int, ExecId]:
        """The session's resume points (see module docstring)."""
        return dict(self._marks.get(session, {}))

    @property
    def busy(self) -> bool:
        """A pass is running or waiting to run."""
        return self._running or self._pass_needed()

    @property
    def pass_running(self) -> bool:
        """A pass is running now."""
        return self._running

    async def wait_idle(self) -> None:
        """Return once no pass is running or needed (now or after the current one)."""
        while self.busy:
            self._idle = trio.Event()
            await self._idle.wait()

    def _alert(self, alert: Alert | RecoveryAbandoned | RecoveryUnavailable) -> None:
        """Publish an operator alert, and log it: a standalone supervisor has no subscriber, and
        its log is where an operator looks."""
        log.error("drop-copy reconciliation: %s", alert.message)
        self.alerts.publish(alert)

    def indexes(self) -> list[int]:
        """Exchange indexes a replay asks for."""
        idx = set(self._indexes) | set(self.executions.ledger.indexes())
        for marks in self._marks.values():
            idx |= set(marks)
        return sorted(idx)

    def use_index(self, index: int) -> None:
        """Replay ``index`` from now on (an order was sent to it)."""
        if type(index) is int and index >= 0:
            self._indexes.add(index)

    def request_pass(self, reason: str) -> None:
        """Ask for a pass even without a gap (e.g. to resolve an ambiguous order)."""
        self._wanted.append(reason)
        self._wake.set()

    # ------------------------------------------------------------------ observer

    def attach(
        self, handles: dict[str, SessionHandle], spawn: Spawn, clock: Callable[[], float]
    ) -> None:
        super().attach(handles, spawn, clock)
        if self.drop_copy not in handles:
            raise SupervisorError(
                f"reconciliation needs the drop-copy session {self.drop_copy!r}, but the "
                f"supervisor runs only {', '.join(sorted(handles))}; add it or disable "
                "reconciliation"
            )
        if not handles[self.drop_copy].config.profile.drop_copy:
            raise SupervisorError(
                f"session {self.drop_copy!r} is not a drop-copy (KalshiDC) session"
            )
        self._oe = [n for n, h in handles.items() if h.config.profile.order_entry]
        for n in self._oe:
            self._gen.setdefault(n, 0)
        self._attached_at = clock()
        self._load_state()
        spawn(self._run)

    def session_up(self, name: str, logged_on: LoggedOn) -> None:
        if name == self.drop_copy:
            self._wake.set()
            return
        if name not in self._gen:
            return
        now = self.clock()
        self._up.add(name)
        self._wake.set()
        first = name not in self._seen_up
        self._seen_up.add(name)
        # KalshiRT included: every disconnect opened a gap in session_down, even though RT can
        # resend. The resend cannot prove that a request in flight never reached the exchange,
        # and it can fail (sequence reset at logon, a stale resend); one U1 per index is cheap.
        gap = self._gaps.get(name)
        if gap is not None:
            gap.up = True
            self._live_max.pop(name, None)
            self.executions.hold()
            self._wake.set()
        elif first and name not in self._marks:
            # First logon without an open gap: every report of this session is generated from
            # now on, so it is newer than anything stored (the "logon fence").
            ledger = self.executions.ledger
            self._marks[name] = {
                i: ledger.last_exec_id(i) or ExecId(0, 0, i) for i in self.indexes()
            }
            self._dirty = True
        self._save(now)

    def session_down(self, down: SessionDown) -> None:
        name = down.name
        if name == self.drop_copy:
            self._flush_replay()
            self._dc_dropped = True
            self._answer.set()  # a request in flight is lost with the connection
            return
        if name not in self._gen:
            return
        self._up.discard(name)
        # Planned or not, the session missed whatever happens until it is back: always a gap
        # (maintenance and shutdown included — the next start recovers it).
        self._open_gap(name, self.clock(), f"session down ({down.kind.value})", up=False)

    def sequence_gap(self, name: str, gap: SequenceGap) -> None:
        what = "resend rejected, sequence gap" if gap.resend_rejected else "sequence gap"
        self._lost_in_session(name, f"{what} {gap.expected}..{gap.received - 1}")

    def sequence_reset(self, name: str, event: SequenceResetReceived) -> None:
        # KalshiRT answered our ResendRequest with a GapFill: for session messages that is
        # normal, but an ExecutionReport it no longer had is filled the same way and the core
        # cannot tell them apart. The replay is one U1 per index; a lost fill is not cheap.
        if event.requested_from is None:
            return
        self._lost_in_session(
            name, f"resend gap-filled {event.requested_from}..{event.new_seq_num - 1}"
        )

    def sequence_numbers_reset(self, name: str, event: SequenceNumbersReset) -> None:
        # A mid-session reset Logon: whatever was missing under the old numbering can never be
        # asked for again (and a resend in progress was dropped with it).
        self._lost_in_session(name, "sequence numbers reset mid-session")

    def _lost_in_session(self, name: str, reason: str) -> None:
        """Messages of a logged-on session are lost to FIX recovery: open a gap now, before the
        session's next report can move its mark past them."""
        if name == self.drop_copy:
            # A lost replayed report shows as a count mismatch, a lost U2/U3 as a timeout.
            return
        if name not in self._gen:
            return
        self._open_gap(name, self.clock(), reason, up=True)
        self.executions.hold()
        self._wake.set()

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        msg = event.message
        # Read once (by the core), for the count, the marks, the ledger and the tracker.
        fields = event.field_map()
        mt = fields.get(35)
        if name == self.drop_copy:
            self._on_drop_copy(msg, mt, fields)
            return
        if mt != b"8" or name not in self._gen:
            return
        exec_id = _real_exec_id(msg, fields)
        if exec_id is None:
            return
        self._indexes.add(exec_id.index)
        if name in self._gaps:
            # Not a mark yet: the session has a hole before this report until a pass covers it.
            lm = self._live_max.setdefault(name, {})
            lm[exec_id.index] = _max(lm.get(exec_id.index), exec_id)
            return
        marks = self._marks.setdefault(name, {})
        cur = marks.get(exec_id.index)
        if cur is None:
            # A first report on an index this session had no mark for: reports before it may be
            # missing, so the mark stays unset (unanchored) until a pass covers the index.
            return
        if exec_id.key > cur.key:
            marks[exec_id.index] = exec_id
            self._dirty = True
            self._save(self.clock(), lazy=True)

    def _flush_replay(self) -> None:
        """Offer the buffered replayed reports in one ledger transaction."""
        if self._replay_buffer:
            batch, self._replay_buffer = self._replay_buffer, []
            fields, self._replay_fields = self._replay_fields, []
            self._new += self.executions.ingest(
                batch, source="dropcopy", session=self.drop_copy, fields=fields
            )

    def _on_drop_copy(self, msg: FixMessage, mt: bytes | None, fields: dict[int, bytes]) -> None:
        rs = self._rs
        if mt == b"8":
            counted = rs is not None and rs.on_report(msg, fields)
            if counted:
                e = _real_exec_id(msg, fields)
                if e is not None:
                    self._replay_max[e.index] = _max(self._replay_max.get(e.index), e)
            self._replayed += 1
            # Replays are ingested in batches (one ledger transaction each): the ledger holds
            # during a pass anyway, so nothing is delivered later than it would be.
            self._replay_buffer.append(msg)
            self._replay_fields.append(fields)
            if rs is None or len(self._replay_buffer) >= _REPLAY_BATCH:
                self._flush_replay()
            return
        self._flush_replay()
        if rs is None:
            return
        outcome: RecoveryOutcome | None = None
        if mt == b"U2":
            outcome = rs.on_u2(msg)
        elif mt == b"U3":
            outcome = rs.on_u3(msg, now=self.clock())
        if outcome is not None:
            self._last_outcome = outcome
            self._answer.set()

    # ------------------------------------------------------------------ gaps and marks

    def _open_gap(self, name: str, now: float, reason: str, *, up: bool) -> None:
        self._gen[name] = self._gen.get(name, 0) + 1
        gap = self._gaps.get(name)
        if gap is None:
            self._gaps[name] = _Gap(now, self._gen[name], up, reason)
        else:
            # The earlier start is what the replay must reach back to; keep it.
            gap.generation = self._gen[name]
            gap.up = up
            gap.reason = reason
        self._live_max.pop(name, None)
        self._dirty = True
        self._save(now)
        self._wake.set()

    def _pass_needed(self) -> bool:
        if self._dead is not None:
            return False
        if self._wanted:
            return True
        return any(g.up for g in self._gaps.values())

    def _refresh_at(self) -> float | None:
        if self.refresh_interval is None:
            return None
        last = self._last_pass_end if self._last_pass_end is not None else self._attached_at
        return None if last is None else last + self.refresh_interval

    # ------------------------------------------------------------------ the pass loop

    async def _run(self) -> None:
        dc = self.handles[self.drop_copy]
        while True:
            while True:
                self._wake = trio.Event()
                now = self.clock()
                refresh = self._refresh_at()
                if refresh is not None and now >= refresh and self._up and not self._pass_needed():
                    self._wanted.append("refresh of resume points")
                if self._pass_needed():
                    if dc.active:
                        break
                    await self._wake.wait()  # the drop copy's logon wakes us
                    continue
                self._idle.set()
                if refresh is None or now >= refresh:
                    await self._wake.wait()
                else:
                    with trio.move_on_after(refresh - now):
                        await self._wake.wait()
            self._running = True
            try:
                abandoned = await self._one_pass(dc)
            except SessionNotActive:
                return  # the supervisor is shutting down
            finally:
                self._running = False
            if self._dead is not None:
                return
            if abandoned:
                # Give the drop copy time before the next try; live reports flow meanwhile.
                await trio.sleep(self.backoff_max)
            if not self._pass_needed():
                self._idle.set()

    def _covered(self) -> dict[str, int]:
        """Sessions a pass starting now covers, with their generation."""
        return {n: self._gen[n] for n in self._oe if n in self._up}

    async def _one_pass(self, dc: SessionHandle) -> bool:
        """Run one pass; True when it was abandoned (no usable answers)."""
        self._pass_id += 1
        started = self.clock()
        covered = self._covered()
        reasons = tuple(self._wanted) + tuple(
            f"{n}: {g.reason}" for n, g in self._gaps.items() if g.up
        )
        self._wanted = []
        self.executions.hold()
        begins: dict[int, ExecId | None] = {}
        basis = [n for n in covered] or list(self._oe)
        for index in self.indexes():
            values = [self._marks.get(n, {}).get(index) for n in basis]
            if any(v is None for v in values) or not values:
                begins[index] = None
            else:
                begins[index] = min(values, key=lambda e: e.key)  # type: ignore[union-attr]
        gap_starts = [self._gaps[n].since for n in covered if n in self._gaps]
        gap_start = min(gap_starts) if gap_starts else None
        requests = plan_recovery(
            begins, started, gap_start, lookback_s=self.lookback_s, margin_s=self.margin_s
        )
        alerts: list[Alert | RecoveryAbandoned | RecoveryUnavailable] = []
        for r in requests:
            if r.beyond_lookback:
                a = GapTooOld(
                    self.drop_copy, r.index, r.begin, gap_start, started, self.lookback_s,
                    anchored=r.anchored,
                )
                alerts.append(a)
                self._alert(a)
        rs = RecoverySession(
            requests, session=self.drop_copy, gap_start_time=gap_start, lookback_s=self.lookback_s
        )
        self._rs = rs
        self._replay_max = {}
        self._replayed = 0
        self._new = 0
        failures = 0
        backoff = self.backoff_min
        abandoned: RecoveryAbandoned | None = None
        try:
            while not rs.done:
                req = rs.next_request()
                if req is None:  # pragma: no cover - done or in flight are excluded above
                    break
                if failures >= self.max_attempts:
                    abandoned = RecoveryAbandoned(self.drop_copy, req.index, failures)
                    alerts.append(abandoned)
                    self._alert(abandoned)
                    break
                try:
                    await dc.wait_active()
                except ChildStopped as e:
                    dead = RecoveryUnavailable(self.drop_copy, e.explanation)
                    self._dead = dead
                    alerts.append(dead)
                    self._alert(dead)
                    break
                if self._last_u1 is not None:
                    wait = self._last_u1 + self.min_interval - self.clock()
                    if wait > 0:
                        await trio.sleep(wait)
                if not dc.active:
                    continue
                self._answer = trio.Event()
                self._last_outcome = None
                self._dc_dropped = False
                try:
                    seq = dc.send_app("U1", build_u1(req))
                except SessionNotActive:
                    continue
                self._last_u1 = self.clock()
                rs.sent(seq)
                with trio.move_on_after(self.reply_timeout):
                    await self._answer.wait()
                outcome = self._last_outcome
                if outcome is None:
                    # Timed out (the answer was lost: the drop copy does not retransmit), or the
                    # drop copy went down: ask again (a repeat is harmless). Only a timeout
                    # counts as a failure of the replay service.
                    rs.connection_lost()
                    if not self._dc_dropped:
                        failures += 1
                    continue
                if outcome.alert is not None:
                    alerts.append(outcome.alert)
                    self._alert(outcome.alert)
                if outcome.kind is OutcomeKind.COMPLETE:
                    failures = 0
                    backoff = self.backoff_min
                    if outcome.request is not None:
                        # Nothing past the begin came back: the begin itself is still a mark
                        # (0;0 for an unanchored request with an empty window).
                        i = outcome.request.index
                        self._replay_max[i] = _max(self._replay_max.get(i), outcome.request.begin)
                elif outcome.kind is OutcomeKind.RETRY_BACKOFF:
                    failures += 1
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                elif outcome.kind is OutcomeKind.RETRY_LATER:
                    failures += 1
                    await trio.sleep(self.retry_later)
                elif outcome.retryable:
                    failures += 1
        finally:
            self._rs = None
            self._flush_replay()
        finished = self.clock()
        complete = abandoned is None and self._dead is None and rs.complete
        self._finish_pass(
            rs, covered, complete=complete, abandoned=abandoned is not None or not rs.done
        )
        self.executions.release()
        self._last_pass_end = finished
        self._save(finished)
        report = RecoveryReport(
            pass_id=self._pass_id,
            started=started,
            finished=finished,
            complete=complete,
            covered=frozenset(covered),
            reasons=reasons,
            requests=tuple(requests),
            outcomes=tuple(rs.outcomes),
            alerts=tuple(alerts),
            replayed=self._replayed,
            new=self._new,
        )
        for callback in list(self.on_pass):
            callback(report)
        self.reports.publish(report)
        return abandoned is not None

    def _finish_pass(
        self, rs: RecoverySession, covered: dict[str, int], *, complete: bool, abandoned: bool
    ) -> None:
        if abandoned:
            return  # nothing learned for sure; the gaps stay open for the next pass
        done = {
            o.request.index
            for o in rs.outcomes
            if o.kind is OutcomeKind.COMPLETE and o.request is not None
        }
        failed = {
            o.request.index
            for o in rs.outcomes
            if o.request is not None and not o.retryable and o.kind is not OutcomeKind.COMPLETE
        }
        ledger_marks = self.executions.ledger.resume_points()
        for name, gen in covered.items():
            if self._gen.get(name) != gen:
                continue  # it went down (or gapped) again during the pass: still open
            marks = self._marks.setdefault(name, {})
            for index in done:
                e = self._replay_max.get(index)
                if e is not None:
                    marks[index] = _max(marks.get(index), e)
            for index in failed:
                # Unrecoverable through FIX (alerted): move on, or every later replay fails too.
                e = ledger_marks.get(index)
                if e is not None:
                    marks[index] = _max(marks.get(index), e)
            for index, e in self._live_max.pop(name, {}).items():
                if index in done and index in marks:
                    marks[index] = _max(marks.get(index), e)
            self._gaps.pop(name, None)
        self._dirty = True

    # ------------------------------------------------------------------ persistence

    def _save(self, now: float, *, lazy: bool = False) -> None:
        if self.state_path is None or not self._dirty:
            return
        if lazy and self._last_save is not None and now - self._last_save < self.save_interval:
            return
        # The marks come from reports the ledger may hold in an uncommitted group: commit it
        # first, or a crash could leave marks on disk past executions that never were stored
        # (the next replay would start after them).
        self.executions.ledger.commit()
        data = {
            "version": STATE_VERSION,
            "saved": now,
            "marks": {n: _mark_str(m) for n, m in sorted(self._marks.items())},
            "gaps": {n: g.since for n, g in sorted(self._gaps.items())},
        }
        path = self.state_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(path, json.dumps(data, separators=(",", ":")).encode("utf-8"))
        except OSError as e:
            raise RecoveryStateError(
                f"cannot write the recovery state {str(path)!r}: {e.strerror or e}; check that "
                "the state directory is writable"
            ) from e
        self._last_save = now
        self._dirty = False

    def _load_state(self) -> None:
        now = self.clock()
        data: dict[str, Any] | None = None
        if self.state_path is not None and self.state_path.exists():
            try:
                data = json.loads(self.state_path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                    raise ValueError("unexpected content")
            except (OSError, ValueError) as e:
                raise RecoveryStateError(
                    f"the recovery state {str(self.state_path)!r} is unreadable ({e}); move it "
                    "aside — the next start then replays from the ledger's resume points"
                ) from None
        if data is not None:
            for name, marks in data.get("marks", {}).items():
                parsed: dict[int, ExecId] = {}
                for idx, value in marks.items():
                    try:
                        parsed[int(idx)] = ExecId.parse(value)
                    except (ValueError, ExecIdError):
                        continue  # dropping a mark only makes the replay longer
                self._marks[name] = parsed
            saved = float(data.get("saved", now))
            gaps = {n: float(t) for n, t in data.get("gaps", {}).items()}
            for name in self._oe:
                # The process was down: every session missed whatever happened meanwhile.
                since = min(gaps.get(name, saved), saved)
                self._gen[name] += 1
                self._gaps[name] = _Gap(since, self._gen[name], False, "supervisor restarted")
            return
        if self.executions.ledger.indexes() or self.executions.ledger.holding:
            # No state file but executions on record: resume from the ledger (correct for one
            # order-entry session; with several, the persisted marks are what makes it exact).
            marks = dict(self.executions.ledger.resume_points())
            for name in self._oe:
                self._marks[name] = dict(marks)
                self._gen[name] += 1
                self._gaps[name] = _Gap(now, self._gen[name], False, "supervisor restarted")
            self._dirty = True


def _real_exec_id(msg: FixMessage, fields: dict[int, bytes] | None = None) -> ExecId | None:
    get = msg.get if fields is None else fields.get
    raw = get(17)
    if raw is None or get(150) == b"8":
        return None
    try:
        e = ExecId.parse(raw)
    except ExecIdError:
        return None
    return None if e.is_pending else e
