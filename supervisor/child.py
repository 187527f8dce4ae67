"""One supervised session: the loop that dials, logs on, pumps events, and decides what next.

A :class:`SessionChild` is run by the :class:`~supervisor.tree.Supervisor` as one task of its
nursery. Each *attempt* goes::

    wait out the maintenance window (no connection attempts inside it)
    hold the API key in the KeyRegistry  ─┐  the key is held from dialling until the
      connect → Logon → events → end     │  transport is closed, so a restart never
    release the key                     ─┘  dials while the old connection is open
    classify the outcome → session_down → stop / wait for the window / back off and retry

The child counts as started (state ``UP``, backoff reset) only when the Logon was answered.
Planned ends — the supervisor shutting down, the Logout before the maintenance window, a
component's :meth:`ChildHandle.logout` — are a graceful Logout bounded by ``logout_timeout``
and never count towards the restart intensity.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from sessions.config import SessionConfig
from sessions.driver import FixSession
from sessions.errors import LocalProtocolError, SessionClosed
from sessions.events import (
    ApplicationMessage,
    Event,
    LoggedOn,
    SequenceGap,
    SequenceNumbersReset,
    SequenceResetReceived,
    SessionEnded,
)
from sessions.message import Value
from sessions.store import MessageStore

from .backoff import BackoffCounter
from .classify import RestartDecision, classify_outcome
from .config import ChildSettings, RestartType
from .errors import ChildStopped, RestartIntensityExceeded
from .observer import ChildState, DownKind, SessionDown, SessionNotActive

if TYPE_CHECKING:  # pragma: no cover
    from .tree import Supervisor

__all__ = ["ChildHandle", "ChildStatus", "Connect", "SessionChild"]

log = logging.getLogger("supervisor.tree")

#: Text of our Logout before the maintenance window.
MAINTENANCE_LOGOUT_TEXT = "logging out for the scheduled maintenance window"
#: Text of our Logout when the supervisor shuts down.
SHUTDOWN_LOGOUT_TEXT = "client shutting down"
#: When Kalshi says it is closed for maintenance up to this long before our calendar's window
#: starts, the two clocks disagree a little: we wait for that window's end as if inside it.
CLOCK_SKEW_SLACK = 300.0
# On top of logout_timeout (which the driver enforces) before a child that does not finish its
# Logout is cancelled outright: the driver's own close grace plus a margin.
_STOP_GRACE = 5.0


class Connect(Protocol):
    """How a child opens one connection; :func:`sessions.driver.connect_session` by default.

    The block yields a started :class:`~sessions.driver.FixSession` (Logon sent) and closes the
    transport on exit; ``store`` and ``signer`` stay the caller's.
    """

    def __call__(
        self,
        session_config: SessionConfig,
        *,
        store: MessageStore,
        signer: Any,
        clock: Callable[[], float],
    ) -> AbstractAsyncContextManager[FixSession]: ...


@attrs.frozen
class ChildStatus:
    """A snapshot of one supervised session (see :meth:`Supervisor.status`)."""

    name: str
    endpoint: str
    key_id: str
    state: ChildState
    #: Epoch seconds (supervisor clock) of the last state change.
    since: float
    detail: str = ""
    #: Connection attempts since the last successful Logon (the one running included).
    attempt: int = 0
    #: Restarts after unplanned ends so far.
    restarts: int = 0
    #: Why the child stopped for good (``STOPPED`` after a non-retryable error), else ``None``.
    error: ChildStopped | None = attrs.field(default=None, eq=False)
    #: The Logon answer of the current connection while ``UP``.
    logged_on: LoggedOn | None = None


@attrs.define
class _Attempt:
    """What one connection attempt came to."""

    config: SessionConfig
    outcome: SessionEnded | Exception | None = None
    was_logged_on: bool = False
    planned: DownKind | None = None


class ChildHandle:
    """The :class:`~supervisor.observer.SessionHandle` of one child: stable across reconnects."""

    def __init__(self, child: SessionChild) -> None:
        self._child = child

    def __repr__(self) -> str:
        return f"<ChildHandle {self._child.name!r} {self._child.state.value}>"

    @property
    def name(self) -> str:
        return self._child.name

    @property
    def config(self) -> SessionConfig:
        return self._child.config

    @property
    def active(self) -> bool:
        """Logged on right now."""
        return self._child.active_session is not None

    @property
    def state(self) -> ChildState:
        return self._child.state

    def send_app(self, msg_type: bytes | str, body: Iterable[tuple[int, Value]]) -> int:
        """Send an application message now; returns its MsgSeqNum. Raises
        :class:`~supervisor.observer.SessionNotActive` unless the session is logged on."""
        session = self._child.active_session
        if session is None:
            raise SessionNotActive(
                f"session {self.name!r} is not logged on ({self._child.state.value}); "
                "wait with wait_active() or watch session_up"
            )
        try:
            return session.send_app(msg_type, body)
        except LocalProtocolError:
            # The session ended between the check and the send (a Logout arrived).
            raise SessionNotActive(
                f"session {self.name!r} is no longer logged on (it is ending)"
            ) from None

    async def wait_active(self) -> None:
        """Return once the session is logged on. Raises :class:`ChildStopped` if it stopped
        for good, :class:`SessionNotActive` once the supervisor shuts down."""
        await trio.lowlevel.checkpoint()
        while True:
            child = self._child
            if child.active_session is not None:
                return
            if child.error is not None:
                raise child.error
            if child.finished:
                raise SessionNotActive(
                    f"session {self.name!r} will not log on again ({child.state.value})"
                )
            await child.changed.park()

    async def logout(self, text: str | None = None) -> None:
        """Log the session out now (a normal end; see :class:`SessionHandle`)."""
        await self._child.request_logout(text)


class SessionChild:
    """Runs one configured session under the supervisor's policies (see the module docstring)."""

    def __init__(
        self,
        tree: Supervisor,
        name: str,
        config: SessionConfig,
        settings: ChildSettings,
        *,
        store: MessageStore,
        signer: Any,
    ) -> None:
        self.name = name
        self.config = config
        self.settings = settings
        self.handle = ChildHandle(self)
        self._tree = tree
        self._store: MessageStore | None = store
        self._signer = signer
        self._backoff = BackoffCounter(tree.backoff, rng=tree.rng)
        self.state = ChildState.STARTING
        self._status = ChildStatus(
            name, config.profile.name, config.key_id, ChildState.STARTING, since=math.nan,
            detail="not started yet",
        )
        #: Wakes everyone waiting for a change (wait_active, start sequence).
        self.changed = trio.lowlevel.ParkingLot()
        #: Set once the first attempt settled: logged on, or failed/waiting/stopped.
        self.settled = trio.Event()
        self.done = trio.Event()
        self.error: ChildStopped | None = None
        self.active_session: FixSession | None = None
        self._started = False
        self._stop = trio.Event()
        self._logout_request: trio.Event | None = None
        self._logout_text: str | None = None
        self._session: FixSession | None = None
        self._attempt_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._task_scope: trio.CancelScope | None = None
        self._planned: DownKind | None = None
        self._reset_next = False
        self._attempts = 0
        self._restarts = 0

    # ------------------------------------------------------------------ inspection
    @property
    def finished(self) -> bool:
        """True once the child's task ended (stopped, or the supervisor shut it down)."""
        return self.done.is_set()

    @property
    def running(self) -> bool:
        """Still being supervised: not stopped for good and not shut down."""
        return self.state not in (ChildState.STOPPED, ChildState.SHUTDOWN)

    def status(self) -> ChildStatus:
        return self._status

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        """Ask the child to end: a graceful Logout if connected, else stop waiting at once."""
        self._stop.set()
        if self._session is None and self._attempt_scope is not None:
            self._attempt_scope.cancel()  # dialling or waiting for the key: nothing to log out
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def stop(self) -> None:
        """Stop the child and wait until it is down; bounded by its Logout timeout."""
        if not self._started:
            self._stop.set()  # run() may still be scheduled: it must not begin now
            self._set_state(ChildState.SHUTDOWN, "never started")
            self.done.set()
            self.settled.set()
            return
        self.request_stop()
        with trio.move_on_after(self.config.logout_timeout + _STOP_GRACE):
            await self.done.wait()
        if not self.done.is_set() and self._task_scope is not None:
            log.warning("session %s did not finish its Logout in time; cutting it", self.name)
            self._task_scope.cancel()
            await self.done.wait()

    async def request_logout(self, text: str | None) -> None:
        if self._session is None or self.active_session is None:
            raise SessionNotActive(f"session {self.name!r} is not logged on")
        request = self._logout_request
        if request is None:
            raise SessionNotActive(f"session {self.name!r} is not logged on")
        self._logout_text = text
        if self._planned is None:
            self._planned = DownKind.REQUESTED
        session = self._session
        request.set()
        with trio.CancelScope(shield=True):
            await session.logout(text)

    # ------------------------------------------------------------------ the task
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The child's task: supervise the session until stopped."""
        if self._stop.is_set():  # the supervisor shut down before this task began
            task_status.started()
            return
        self._started = True
        try:
            # Shielded: a cancellation from outside the supervisor (the application's scope)
            # must not cut the session without its Logout; the tree stops the child itself,
            # in reverse start order, and cancels this scope only if the Logout overruns.
            with trio.CancelScope(shield=True) as self._task_scope:
                task_status.started()
                await self._loop()
        finally:
            self.active_session = None
            if self.running:
                self._set_state(ChildState.SHUTDOWN, "supervisor shut down")
            self._close_store()
            self.settled.set()
            self.done.set()
            self.changed.unpark_all()

    def _close_store(self) -> None:
        # The store refuses a second open of the same session in this process while open.
        if self._store is not None:
            store, self._store = self._store, None
            try:
                store.close()
            except Exception:  # noqa: BLE001 - a failing close must not hide why we stopped
                log.exception("session %s: closing the sequence store failed", self.name)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            if await self._wait_out_maintenance():
                continue
            if self._stop.is_set():
                break
            attempt = await self._attempt()
            if not await self._after(attempt):
                return
        self._set_state(ChildState.SHUTDOWN, "the supervisor is shutting down")

    # ------------------------------------------------------------------ waiting
    async def _sleep_until(self, when: float) -> None:
        """Sleep until the supervisor clock reads ``when``, or until stopped."""
        with trio.CancelScope() as self._wait_scope:
            if self._stop.is_set():
                self._wait_scope.cancel()
            # The epoch clock moves with trio's (default_clock and the gateway's test clock
            # both do), so the difference is a trio duration.
            await trio.sleep(max(0.0, when - self._tree.clock()))
        self._wait_scope = None

    async def _wait_out_maintenance(self, reason: str = "", slack: float = 0.0) -> bool:
        """If ``now`` is in the quiet period around a window, wait until it is over (no
        attempt inside it) and return True."""
        now = self._tree.clock()
        until = self._tree.quiet_until(now, slack=slack)
        if until is None:
            return False
        # A spread after the window so that many sessions do not log on at the same instant
        # (Logon is rate limited) nor at the very boundary the exchange may still be closed at.
        resume = until + self._tree.backoff.delay(0, self._tree.rng)
        self._set_state(
            ChildState.MAINTENANCE,
            (reason + "; " if reason else "")
            + f"maintenance window until {self._tree.describe_time(until)}: no connection "
            "attempts until then",
        )
        self.settled.set()
        await self._sleep_until(resume)
        return True

    # ------------------------------------------------------------------ one attempt
    async def _attempt(self) -> _Attempt:
        cfg = self.config
        if self._reset_next and not cfg.reset_seq_num_on_logon:
            cfg = attrs.evolve(cfg, reset_seq_num_on_logon=True)
        self._reset_next = False
        self._attempts += 1
        attempt = _Attempt(cfg)
        self._planned = None
        reset = " with ResetSeqNumFlag(141)=Y" if cfg.reset_seq_num_on_logon else (
            " keeping sequence numbers (ResetSeqNumFlag(141)=N)"
        )
        self._set_state(
            ChildState.STARTING,
            f"connecting to {cfg.host}:{cfg.port} and logging on{reset}",
        )
        with trio.CancelScope() as scope:
            self._attempt_scope = scope
            if self._stop.is_set():
                scope.cancel()
            try:
                async with self._tree.registry.hold(cfg.key_id, self.name):
                    assert self._store is not None
                    async with self._tree.connect(
                        cfg, store=self._store, signer=self._signer, clock=self._tree.clock
                    ) as session:
                        self._session = session
                        self._logout_request = trio.Event()
                        try:
                            async with trio.open_nursery() as nursery:
                                nursery.start_soon(self._watch_planned_stop, session)
                                attempt.outcome = await self._pump(session, attempt)
                                nursery.cancel_scope.cancel()
                        finally:
                            self.active_session = None
                            self._session = None
                            self._logout_request = None
            except Exception as exc:  # classified below: every attempt's failure is an outcome
                if attempt.outcome is None:
                    attempt.outcome = exc
        self._attempt_scope = None
        # A shutdown overrides whatever else ended the attempt at the same moment.
        attempt.planned = DownKind.SHUTDOWN if self._stop.is_set() else self._planned
        return attempt

    async def _watch_planned_stop(self, session: FixSession) -> None:
        """Log out gracefully when the supervisor stops, the window approaches, or a component
        asks; these are planned ends (never counted towards the restart intensity)."""
        request = self._logout_request
        assert request is not None
        quiet_start = self._tree.next_quiet_start(self._tree.clock())
        delay = math.inf if quiet_start is None else max(0.0, quiet_start - self._tree.clock())
        async with trio.open_nursery() as nursery:

            async def stop_on(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on, self._stop)
            nursery.start_soon(stop_on, request)
            await trio.sleep(delay)
            nursery.cancel_scope.cancel()
        text: str | None
        if self._stop.is_set():
            kind, text = DownKind.SHUTDOWN, SHUTDOWN_LOGOUT_TEXT
        elif request.is_set():
            kind, text = DownKind.REQUESTED, self._logout_text
        else:
            kind, text = DownKind.MAINTENANCE, MAINTENANCE_LOGOUT_TEXT
        if self._planned is None:
            self._planned = kind
        with trio.CancelScope(shield=True):
            # Before the Logon was answered this simply closes the connection.
            await session.logout(text)

    async def _pump(self, session: FixSession, attempt: _Attempt) -> SessionEnded | Exception:
        """Hand the session's events to the observers, in wire order, until it ends.

        The observers are called from the session's reader as each read is decoded (no task
        switch in between), and the application messages of one read go to them together
        (one ledger transaction, one wake-up of the consumer, instead of one per message).
        """
        notify_messages = self._tree.notify_messages

        def take(events: list[Event]) -> None:
            burst: list[ApplicationMessage] = []
            for event in events:
                if isinstance(event, ApplicationMessage):
                    burst.append(event)
                    continue
                if burst:
                    notify_messages(self.name, burst)
                    burst = []
                if isinstance(event, LoggedOn):
                    attempt.was_logged_on = True
                    self._went_up(session, event)
                elif isinstance(event, SequenceGap):
                    self._tree.notify("sequence_gap", self.name, event)
                elif isinstance(event, SequenceResetReceived):
                    # A GapFill over numbers we asked for may have skipped lost executions.
                    self._tree.notify("sequence_reset", self.name, event)
                elif isinstance(event, SequenceNumbersReset):
                    # Losses under the old numbering can no longer be asked for again.
                    self._tree.notify("sequence_numbers_reset", self.name, event)
                elif isinstance(event, SessionEnded):
                    self.active_session = None
            if burst:
                notify_messages(self.name, burst)

        session.hand_events_to(take)
        await session.wait_finished()
        if not attempt.was_logged_on:
            try:
                await session.wait_logged_on()
            except Exception as exc:  # LogonRejected / TransportError: classified
                return exc
        # The driver keeps the SessionEnded event it handed over.
        return session.ended or SessionClosed(f"session {self.name!r} ended without an event")

    def _went_up(self, session: FixSession, logged_on: LoggedOn) -> None:
        self._backoff.reset()
        attempts, self._attempts = self._attempts, 0
        self.active_session = session
        flag = "Y" if logged_on.reset_seq_num else "N"
        self._set_state(
            ChildState.UP,
            f"logged on (ResetSeqNumFlag={flag}, next "
            f"MsgSeqNum out {logged_on.next_sender_seq}, in {logged_on.next_target_seq})",
            attempt=attempts,
            logged_on=logged_on,
        )
        self.settled.set()
        self._tree.notify("session_up", self.name, logged_on)

    # ------------------------------------------------------------------ after an attempt
    async def _after(self, attempt: _Attempt) -> bool:
        """Report the end to the observers and decide; False when the child is done."""
        outcome = attempt.outcome
        planned = attempt.planned
        now = self._tree.clock()
        decision: RestartDecision | None = None
        if planned is not DownKind.SHUTDOWN and outcome is not None:
            decision = self._decide(outcome, attempt)
        if planned is not None:
            kind = planned
        elif decision is not None and (
            decision.action == "wait_for_window" or self._tree.quiet_until(now) is not None
        ):
            # Kalshi closed us for the window, or a drop came inside it: expected and quiet.
            kind = DownKind.MAINTENANCE
        else:
            kind = DownKind.UNPLANNED
        self._tree.notify(
            "session_down",
            SessionDown(
                self.name,
                kind,
                ended=outcome if isinstance(outcome, SessionEnded) else None,
                error=outcome if isinstance(outcome, Exception) else None,
                was_logged_on=attempt.was_logged_on,
            ),
        )
        self._log_unexpected(outcome, decision)
        if kind is DownKind.SHUTDOWN or self._stop.is_set():
            return True  # the loop ends: state SHUTDOWN
        if decision is None:  # a planned stop that never reached the gateway
            decision = RestartDecision(
                "retry", "planned", "the attempt was stopped", counts_toward_intensity=False,
                normal=True,
            )

        if decision.action == "stop":
            self.error = ChildStopped(self.name, decision.explanation)
            self._set_state(ChildState.STOPPED, decision.explanation, error=self.error)
            self.settled.set()
            return False
        if kind is DownKind.REQUESTED and self.settings.restart is RestartType.TRANSIENT:
            self._set_state(ChildState.STOPPED, "logged out on request (transient: not restarted)")
            self.settled.set()
            return False
        if decision.reset_next_logon:
            self._reset_next = True
        if kind is DownKind.MAINTENANCE:
            # Kalshi's closing a little before our calendar's window is clock skew, not a
            # reason to knock on a closed door until our window starts.
            slack = CLOCK_SKEW_SLACK if decision.action == "wait_for_window" else 0.0
            if await self._wait_out_maintenance(
                self._maintenance_reason(planned, decision), slack
            ):
                return True
            # Refused for a window our calendar does not know (an unscheduled exchange pause):
            # back off, not counted — it is not our sessions' fault.
        counted = (
            kind is DownKind.UNPLANNED and decision.counts_toward_intensity and not decision.normal
        )
        if counted:
            self._restarts += 1
            try:
                self._tree.intensity.record(trio.current_time(), self.name)
            except RestartIntensityExceeded as exc:
                self._set_state(ChildState.SHUTDOWN, str(exc))
                self._tree.fail(exc)
                return False
        delay = max(decision.min_delay, self._backoff.next_delay())
        self._set_state(
            ChildState.BACKOFF,
            f"{decision.explanation} (next attempt in {delay:.1f} s)",
            level=logging.WARNING if counted else logging.INFO,
        )
        self.settled.set()
        await self._sleep_until(now + delay)
        return True

    def _decide(self, outcome: SessionEnded | Exception, attempt: _Attempt) -> RestartDecision:
        cfg = attempt.config
        return classify_outcome(
            outcome,
            float(cfg.heartbeat_interval),
            session=cfg,
            kept_sequence=not (cfg.reset_seq_num_on_logon or cfg.profile.reset_mandatory),
        )

    def _maintenance_reason(self, planned: DownKind | None, decision: RestartDecision) -> str:
        if planned is DownKind.MAINTENANCE:
            return "logged out before the maintenance window"
        if decision.action == "wait_for_window":
            return "Kalshi closed the session for maintenance"
        return "the connection ended inside the maintenance window"

    def _log_unexpected(
        self, outcome: SessionEnded | Exception | None, decision: RestartDecision | None
    ) -> None:
        if (
            decision is not None and decision.cause == "unexpected"
            and isinstance(outcome, BaseException)
        ):
            # classify shows only the type of a foreign exception (its text could hold
            # anything); the traceback goes to the log as the explanation promises.
            log.error(
                "session %s: the attempt crashed", self.name,
                exc_info=(type(outcome), outcome, outcome.__traceback__),
            )

    # ------------------------------------------------------------------ status
    def _set_state(
        self,
        state: ChildState,
        detail: str,
        *,
        attempt: int | None = None,
        error: ChildStopped | None = None,
        logged_on: LoggedOn | None = None,
        level: int | None = None,
    ) -> None:
        self.state = state
        self._status = ChildStatus(
            self.name,
            self.config.profile.name,
            self.config.key_id,
            state,
            since=self._tree.clock(),
            detail=detail,
            attempt=self._attempts if attempt is None else attempt,
            restarts=self._restarts,
            error=error,
            logged_on=logged_on,
        )
        self._tree.publish(self._status, level)
        self.changed.unpark_all()

