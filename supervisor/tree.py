"""The supervision tree: every configured session is a child task with Erlang/OTP-style policies.

Embedded use::

    async with Supervisor("firm.toml", observers=[my_component]) as sup:
        orders = sup.handle("orders")            # a SessionHandle, stable across reconnects
        await orders.wait_active()
        orders.send_app("D", fields)
        async for event in sup.status_events():  # StatusEvent per state change
            ...

``config`` is a TOML path or a ``(Config, SupervisorConfig)`` pair (see
:func:`~supervisor.config.load_supervisor_config`). What the tree guarantees:

* **Start.** Every API key is locked for this process (:class:`~supervisor.keys.ProcessKeyLock`;
  another process holding one → :class:`~supervisor.errors.KeyLockedByOtherProcess` from the
  ``async with``), every private key is loaded and every session's store opened
  (:func:`~sessions.driver.open_session_store`: the SQLite file for a session that keeps its
  sequence numbers, so KalshiRT continues them across process restarts); then the observers are attached, and only then the children start, in
  ``start_order``: the next child starts once the previous one *settled* — logged on (a child
  counts as started only when its Logon was answered), or failed its first attempt, or waits for
  the maintenance window — so one unreachable session does not hold up the others.
* **Restarts.** After an unplanned end the child is restarted after an exponential backoff with
  jitter, never sooner than the floor the outcome asks for (≥ 2×HeartBtInt after ``already
  exists`` or an unclean drop, REFERENCE §1.4). Non-retryable outcomes (bad signature, CompID,
  clock, refused reset, unloadable key …; see :mod:`supervisor.classify`) stop that child with
  :class:`~supervisor.errors.ChildStopped` in its status instead of hammering the gateway. The
  other children go on.
* **Restart intensity.** More than ``restart_intensity`` unplanned restarts (all children
  together, as in OTP) within ``restart_period`` seconds: the supervisor gives up — every session
  logs out in reverse order and :class:`~supervisor.errors.RestartIntensityExceeded` is raised
  from the ``async with`` (the body is cancelled). Planned ends never count.
* **One connection per key.** A :class:`~supervisor.keys.KeyRegistry` is held from dialling until
  the transport is closed, so a restart never dials while the old connection is open.
* **Maintenance** (REFERENCE §1.6; Thursday 03:00–05:00 America/New_York unless configured):
  ``logout_before_s`` before a window every session logs out gracefully; no connection attempt
  is made from then until the window ends (plus a short random spread), so there is no reconnect
  storm; then each session logs on with its profile's sequence policy — NR/DC/RFQ reset,
  KalshiRT tries continuity and falls back to ResetSeqNumFlag=Y when the Logon is refused for
  its sequence numbers (observers see the session_down / reset session_up pair and reconcile).
  Drops inside the window are expected: reported as :attr:`DownKind.MAINTENANCE`, not counted.
* **Shutdown** (leaving the block, an error, cancellation): children stop in reverse start
  order, each with a shielded Logout bounded by its ``logout_timeout``; then the observers'
  tasks are cancelled, the stores closed and the key locks released.

Observers (:class:`~supervisor.observer.SessionObserver`) are called synchronously from the
child's task. An exception from an observer callback or from a task started with ``spawn`` is a
bug in a component and is not swallowed: the supervisor shuts down and re-raises it.

Every status change is logged on the ``supervisor.tree`` logger, one line each, naming the
session, key id and endpoint, never key material.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import trio

from sessions.config import Config
from sessions.driver import connect_session, default_clock, open_session_store
from sessions.errors import ConfigError
from sessions.events import ApplicationMessage
from sessions.maintenance import MaintenanceCalendar

from .backoff import Backoff
from .child import ChildHandle, ChildStatus, Connect, SessionChild
from .config import MaintenanceSettings, SupervisorConfig, load_supervisor_config
from .intensity import RestartIntensity
from .keys import KeyRegistry, ProcessKeyLock, lock_keys
from .observer import ChildState, ObserverBase, SessionHandle, SessionObserver, StatusEvent

__all__ = [
    "ChildStatus",
    "Connect",
    "StatusSubscription",
    "Supervisor",
    "maintenance_calendar",
]

log = logging.getLogger("supervisor.tree")

#: Status events kept for :attr:`Supervisor.history`.
HISTORY_LIMIT = 10_000

_LEVELS = {
    ChildState.STARTING: logging.INFO,
    ChildState.UP: logging.INFO,
    ChildState.BACKOFF: logging.WARNING,
    ChildState.MAINTENANCE: logging.INFO,
    ChildState.STOPPED: logging.ERROR,
    ChildState.SHUTDOWN: logging.INFO,
}


def maintenance_calendar(settings: MaintenanceSettings) -> MaintenanceCalendar:
    """The :class:`~sessions.maintenance.MaintenanceCalendar` of a ``[supervisor.maintenance]``
    table (the weekly window plus the extra windows)."""
    return MaintenanceCalendar(
        weekday=settings.weekday,
        start=settings.start,
        end=settings.end,
        timezone=settings.timezone,
        extra_windows=tuple((w.start.timestamp(), w.end.timestamp()) for w in settings.extra_windows),
    )


class StatusSubscription:
    """An async iterator of :class:`~supervisor.observer.StatusEvent`, from the moment it was
    created until the supervisor has shut down (then iteration ends). Unbounded: a subscriber
    that stops reading should :meth:`close` it."""

    def __init__(self, owner: Supervisor) -> None:
        self._owner = owner
        self._items: collections.deque[StatusEvent] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def _put(self, event: StatusEvent) -> None:
        self._items.append(event)
        self._lot.unpark_all()

    def _end(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def close(self) -> None:
        """Stop receiving events."""
        self._owner._subscriptions.discard(self)
        self._end()

    def __aiter__(self) -> StatusSubscription:
        return self

    async def __anext__(self) -> StatusEvent:
        await trio.lowlevel.checkpoint()
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        return self._items.popleft()


def _load(
    config: str | os.PathLike[str] | tuple[Config, SupervisorConfig],
) -> tuple[Config, SupervisorConfig]:
    if isinstance(config, tuple):
        if len(config) != 2 or not isinstance(config[0], Config) or not isinstance(
            config[1], SupervisorConfig
        ):
            raise TypeError("config must be a path or a (Config, SupervisorConfig) pair")
        return config[0], config[1]
    return load_supervisor_config(config)


def _start_order(config: Config, sup: SupervisorConfig) -> list[str]:
    where = f"{config.path}: [supervisor.sessions]"
    for name in sup.children:
        if name not in config.sessions:
            raise ConfigError(
                f"{where}: {name!r} is not a [session.NAME]; sessions: "
                f"{', '.join(config.sessions)}"
            )
    names = list(config.sessions)
    ranked = sorted(enumerate(names), key=lambda p: (sup.child(p[1]).start_order, p[0]))
    return [name for _, name in ranked]


def _check_keys(config: Config) -> None:
    # sessions.config refuses this when loading a file; a Config built in code is checked here.
    owner: dict[str, str] = {}
    for name, session in config.sessions.items():
        other = owner.setdefault(session.key_id, name)
        if other != name:
            raise ConfigError(
                f"{config.path}: sessions {other!r} and {name!r} use the same key_id "
                f"{session.key_id}; Kalshi allows one connection per API key, so each session "
                "needs its own key"
            )


def _message_sink(
    observer: SessionObserver,
) -> Callable[[str, Sequence[ApplicationMessage]], None] | None:
    """How ``observer`` takes a burst of application messages: its ``application_messages``,
    else its ``application_message`` once per message, else not at all."""
    kind, own = type(observer), getattr(observer, "__dict__", {})
    if (
        getattr(kind, "application_messages", None) is ObserverBase.application_messages
        and getattr(kind, "application_message", None) is ObserverBase.application_message
        and "application_messages" not in own and "application_message" not in own
    ):
        return None  # ObserverBase's no-ops: nothing to call for every burst
    batch = getattr(observer, "application_messages", None)
    if batch is not None:
        return batch
    one = getattr(observer, "application_message", None)
    if one is None:
        return None

    def each(name: str, events: Sequence[ApplicationMessage]) -> None:
        for event in events:
            one(name, event)

    return each

class Supervisor:
    """Runs every configured session as a supervised child (see the module docstring).

    ``observers`` are attached before any session starts. Injectable for tests: ``clock``
    (epoch seconds; default :func:`sessions.driver.default_clock`, i.e. wall offset + Trio
    time), ``rng`` (backoff jitter and the spread after a window), ``connect`` (default
    :func:`sessions.driver.connect_session`), ``registry`` (the in-process key registry) and
    ``lock_description`` (written into the key lock files for other processes to read).
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | tuple[Config, SupervisorConfig],
        *,
        observers: Iterable[SessionObserver] = (),
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        connect: Connect | None = None,
        registry: KeyRegistry | None = None,
        lock_description: str | None = None,
    ) -> None:
        self.config, self.supervisor_config = _load(config)
        _check_keys(self.config)
        sup = self.supervisor_config
        self._order = _start_order(self.config, sup)
        self._observers = list(observers)
        # (observer, its application-message entry point): built at the first message.
        self._message_sinks: list[
            tuple[SessionObserver, Callable[[str, Sequence[ApplicationMessage]], None] | None]
        ] | None = None
        self._clock_arg = clock
        self.clock: Callable[[], float] = clock if clock is not None else _no_clock_yet
        self.rng = rng if rng is not None else random.Random()
        self.connect: Connect = connect if connect is not None else connect_session
        self.registry = registry if registry is not None else KeyRegistry()
        self.backoff: Backoff = sup.backoff
        self.intensity: RestartIntensity = sup.new_restart_intensity()
        self.calendar = maintenance_calendar(sup.maintenance)
        self._zone = sup.maintenance.zone
        self._logout_before = sup.maintenance.logout_before_s
        self._lock_description = lock_description
        self._children: dict[str, SessionChild] = {}
        self._handles: dict[str, ChildHandle] = {}
        self._locks: list[ProcessKeyLock] = []
        self._subscriptions: set[StatusSubscription] = set()
        self._history: collections.deque[StatusEvent] = collections.deque(maxlen=HISTORY_LIMIT)
        self._changed = trio.lowlevel.ParkingLot()
        self._failure: BaseException | None = None
        self._entered = False
        self._shutdown_requested = trio.Event()
        self._started_all = trio.Event()
        self._done = trio.Event()
        self._start_scope: trio.CancelScope | None = None
        self._nursery_cm: Any = None
        self._nursery: trio.Nursery | None = None
        self._observer_nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ public API
    def handle(self, name: str) -> SessionHandle:
        """The :class:`~supervisor.observer.SessionHandle` of session ``name`` (after entry)."""
        try:
            return self._handles[name]
        except KeyError:
            if not self._entered:
                raise RuntimeError("handles exist once the supervisor is entered (async with)")
            raise KeyError(
                f"no session {name!r}; sessions: {', '.join(self._order)}"
            ) from None

    @property
    def handles(self) -> Mapping[str, SessionHandle]:
        """Every session's handle, in start order (what observers get in ``attach``)."""
        return dict(self._handles)

    def status(self) -> dict[str, ChildStatus]:
        """A snapshot of every session, in start order."""
        return {name: self._children[name].status() for name in self._order if name in self._children}

    def status_events(self) -> StatusSubscription:
        """Every :class:`~supervisor.observer.StatusEvent` from now on, as an async iterator
        (it ends once the supervisor has shut down). See also :attr:`history`."""
        sub = StatusSubscription(self)
        if self._done.is_set():
            sub._end()
        else:
            self._subscriptions.add(sub)
        return sub

    @property
    def history(self) -> tuple[StatusEvent, ...]:
        """The status events so far (the last :data:`HISTORY_LIMIT`)."""
        return tuple(self._history)

    @property
    def start_order(self) -> tuple[str, ...]:
        """Session names in the order they are started (the reverse is the stop order)."""
        return tuple(self._order)

    @property
    def failure(self) -> BaseException | None:
        """Why the supervisor gave up (restart intensity, a component's exception), if it did."""
        return self._failure

    def add_observers(self, observers: Iterable[SessionObserver]) -> None:
        """Add components before entry (for components that may only be built once this
        process holds the key locks; see :meth:`acquire_key_locks`)."""
        if self._entered:
            raise RuntimeError("observers are attached on entry; add them before async with")
        self._observers.extend(observers)
        self._message_sinks = None

    def acquire_key_locks(self) -> None:
        """Take the per-host lock of every session's API key now instead of on entry, e.g. to
        be sure no other process runs this configuration before opening shared state files.
        Raises :class:`~supervisor.errors.KeyLockedByOtherProcess`; all or none are taken.
        Released when the supervisor exits, or by :meth:`release_key_locks`."""
        if self._locks:
            return
        sessions = self.config.sessions
        self._locks = lock_keys(
            self.supervisor_config.lock_dir,
            [sessions[name].key_id for name in self._order],
            self._lock_description,
        )

    def release_key_locks(self) -> None:
        """Release the key locks (only for a supervisor that is not running)."""
        if self._nursery is not None and not self._done.is_set():
            raise RuntimeError("the key locks are held while the supervisor runs")
        for lock in self._locks:
            lock.release()
        self._locks = []

    def request_shutdown(self) -> None:
        """Begin the graceful shutdown (reverse start order, Logout each) without waiting;
        leaving the ``async with`` block waits for it."""
        self._shutdown_requested.set()
        if self._start_scope is not None:
            self._start_scope.cancel()

    async def wait_started(self) -> None:
        """Wait until the start sequence is through (every child settled once) or cut short."""
        await self._started_all.wait()

    async def wait_all_stopped(self) -> None:
        """Wait until no child is left running (each STOPPED or SHUTDOWN)."""
        await trio.lowlevel.checkpoint()
        while not self._children or any(c.running for c in self._children.values()):
            await self._changed.park()

    async def wait_shutdown(self) -> None:
        """Wait until the shutdown is complete (every session logged out)."""
        await self._done.wait()

    # ------------------------------------------------------------------ for the children
    def quiet_until(self, now: float, *, slack: float = 0.0) -> float | None:
        """If ``now`` is in the quiet period of a window (from ``logout_before_s`` before it
        starts until it ends; ``slack`` seconds earlier still), the end of that window; else
        ``None``."""
        window = self.calendar.next_window(now)
        if window is None:
            return None
        if window.start - self._logout_before - slack <= now < window.end:
            return window.end
        return None

    def next_quiet_start(self, now: float) -> float | None:
        """When the next quiet period starts (in the past if one is in force)."""
        window = self.calendar.next_window(now)
        return None if window is None else window.start - self._logout_before

    def describe_time(self, ts: float) -> str:
        """``ts`` in the maintenance time zone, for operators."""
        local = dt.datetime.fromtimestamp(ts, self._zone)
        return f"{local:%Y-%m-%d %H:%M:%S} {self._zone.key}"

    def notify(self, method: str, *args: Any) -> None:
        """Call ``method`` on every observer; an exception fails the supervisor."""
        for observer in self._observers:
            fn = getattr(observer, method, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - re-raised from the async with
                self._observer_failed(observer, method, exc)

    def notify_messages(self, name: str, events: Sequence[ApplicationMessage]) -> None:
        """Hand one burst of application messages to every observer in turn (its
        ``application_messages`` if it has one, else ``application_message`` per event); an
        exception fails the supervisor."""
        sinks = self._message_sinks
        if sinks is None:
            # Looked up once, not for every burst: observers are fixed once the tree runs.
            sinks = self._message_sinks = [(o, _message_sink(o)) for o in self._observers]
        for observer, sink in sinks:
            if sink is None:
                continue
            try:
                sink(name, events)
            except Exception as exc:  # noqa: BLE001 - re-raised from the async with
                self._observer_failed(observer, "application_messages", exc)

    def _observer_failed(self, observer: object, method: str, exc: Exception) -> None:
        log.error(
            "observer %s raised in %s; the supervisor is shutting down",
            type(observer).__name__, method, exc_info=exc,
        )
        self.fail(exc)

    def publish(self, status: ChildStatus, level: int | None = None) -> None:
        """A child changed state: log one line, record it, tell the subscribers."""
        event = StatusEvent(
            status.name, status.endpoint, status.state, status.since, status.detail,
            status.attempt,
        )
        if level is None:
            level = _LEVELS[status.state]
            if status.state is ChildState.STOPPED and status.error is None:
                level = logging.INFO
        log.log(
            level, "session %s %s (%s, key %s): %s",
            status.name, status.state.value, status.endpoint, status.key_id, status.detail,
        )
        self._history.append(event)
        for sub in list(self._subscriptions):
            sub._put(event)
        self._changed.unpark_all()

    def fail(self, exc: BaseException) -> None:
        """Give up: shut down gracefully, then raise ``exc`` from the ``async with``."""
        if self._failure is None:
            self._failure = exc
            log.error("supervisor giving up: %s", exc)
        self.request_shutdown()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Supervisor:
        if self._entered:
            raise RuntimeError("a Supervisor can be entered only once")
        self._entered = True
        if self._clock_arg is None:
            self.clock = default_clock()
        self.acquire_key_locks()
        try:
            self._prepare_children()
            self._nursery_cm = trio.open_nursery()
            self._nursery = await self._nursery_cm.__aenter__()
        except BaseException:
            self._release_resources()
            raise
        try:
            # Not nursery.start (see _supervise): entered in a cancelled scope, it would keep
            # the shielded host task inside start() for good.
            ready = trio.Event()
            self._nursery.start_soon(self._host_observer_tasks, ready)
            await ready.wait()
            handles = self.handles
            for observer in self._observers:
                observer.attach(handles, self.spawn, self.clock)  # type: ignore[arg-type]
        except BaseException as exc:
            self._done.set()
            self._end_subscriptions()
            if self._observer_nursery is not None:
                self._observer_nursery.cancel_scope.cancel()  # shielded: cancel it directly
            self._nursery.cancel_scope.cancel()
            try:
                await self._nursery_cm.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup:
                pass  # the nursery wraps exc; raise it as it was
            finally:
                self._release_resources()
            raise
        self._nursery.start_soon(self._manage)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self.request_shutdown()
        with trio.CancelScope(shield=True):
            await self._done.wait()
        assert self._nursery_cm is not None
        try:
            suppressed = bool(await self._nursery_cm.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            if self._failure is not None:
                raise self._failure from None
            if len(group.exceptions) == 1:
                # The body's own exception, not a group of one (as with open_fix_session).
                raise group.exceptions[0] from None
            raise
        finally:
            self._release_resources()
        if self._failure is not None:
            raise self._failure
        return suppressed

    def _prepare_children(self) -> None:
        for name in self._order:
            cfg = self.config.sessions[name]
            signer = cfg.load_signer()
            store = open_session_store(cfg, self.clock())
            child = SessionChild(
                self, name, cfg, self.supervisor_config.child(name), store=store, signer=signer
            )
            self._children[name] = child
            self._handles[name] = child.handle

    def _release_resources(self) -> None:
        for child in self._children.values():
            child._close_store()
        for lock in self._locks:
            lock.release()
        self._locks = []

    async def _host_observer_tasks(self, ready: trio.Event) -> None:
        # Shielded like the children: components keep running until the sessions are down;
        # the shutdown cancels this nursery last.
        with trio.CancelScope(shield=True):
            if self._done.is_set():
                return  # the entry failed before this task first ran
            async with trio.open_nursery() as nursery:
                self._observer_nursery = nursery
                ready.set()
                await trio.sleep_forever()

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run ``fn()`` as a component task beside the sessions (what observers get as
        ``spawn`` in ``attach``): it runs until the sessions are down, and an exception from it
        shuts the supervisor down and is raised from the ``async with``. After the shutdown it
        is not started (logged as a warning)."""
        nursery = self._observer_nursery
        if nursery is None or self._done.is_set():
            log.warning("a component tried to start a task after the supervisor shut down")
            return
        nursery.start_soon(self._guard_task, fn)

    async def _guard_task(self, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            await fn()
        except Exception as exc:  # noqa: BLE001 - re-raised from the async with
            log.error("a component's task raised; the supervisor is shutting down", exc_info=exc)
            self.fail(exc)

    async def _manage(self) -> None:
        # Shielded: an outer cancellation reaches the body, whose __aexit__ asks for the
        # orderly shutdown that this task then carries out.
        with trio.CancelScope(shield=True):
            await self._supervise()

    async def _supervise(self) -> None:
        try:
            with trio.CancelScope() as self._start_scope:
                if self._shutdown_requested.is_set():
                    self._start_scope.cancel()
                assert self._nursery is not None
                for name in self._order:
                    if self._shutdown_requested.is_set():
                        break  # no point dialling a session only to log it out
                    child = self._children[name]
                    # Not nursery.start: in a scope already cancelled (the body raised before
                    # this task first ran) Trio leaves a shielded child inside start() for good.
                    self._nursery.start_soon(child.run)
                    await child.settled.wait()
            self._start_scope = None
            self._started_all.set()
            await self._shutdown_requested.wait()
        finally:
            with trio.CancelScope(shield=True):
                self._started_all.set()
                await self._stop_children()
                if self._observer_nursery is not None:
                    self._observer_nursery.cancel_scope.cancel()
                self._done.set()
                self._end_subscriptions()
                self._changed.unpark_all()
                if self._failure is not None and self._nursery is not None:
                    # Interrupt the body of the async with; __aexit__ raises the failure.
                    self._nursery.cancel_scope.cancel()

    async def _stop_children(self) -> None:
        for name in reversed(self._order):
            await self._children[name].stop()

    def _end_subscriptions(self) -> None:
        for sub in list(self._subscriptions):
            sub._end()
        self._subscriptions.clear()


def _no_clock_yet() -> float:
    raise RuntimeError("the supervisor's clock is set when it is entered (async with)")

