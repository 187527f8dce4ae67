"""The Trio driver: runs one sans-IO :class:`~sessions.connection.FixConnection` over a stream.

The core decides everything; this module only moves bytes, time and events:

* a **reader** task feeds ``stream.receive_some()`` into ``connection.receive_data(data, now)``
  and queues the events. The queue is bounded, so an application that stops consuming events
  stops the reading (backpressure) instead of growing memory;
* one **writer** task is the only code that calls ``stream.send_all``; it writes whatever the
  core queued, so the wire order is the sequence-number order. On plain TCP (or a stream
  offering ``send_nowait(data) -> bytes written``), output produced while nothing is queued or
  being written goes out at once from the call that produced it (one non-blocking ``send``);
  only what the socket does not take waits for the writer;
* a **timer** task sleeps until ``connection.next_deadline()`` and calls ``tick``.

Only this module reads clocks. ``now`` is epoch seconds from the injected clock; the default is
the wall-clock offset captured once at start plus ``trio.current_time()``, so a
``trio.testing.MockClock`` moves FIX time too while SendingTime stays realistic.

Transport failures never escape as raw Trio/OS exceptions: they end the session with a
:class:`~sessions.events.SessionEnded` (``initiated_by="transport"``) and are kept as a
:class:`~sessions.errors.TransportError` in :attr:`FixSession.transport_error`.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from .connection import FixConnection, State
from .errors import (
    CodecError,
    ConfigError,
    LogonRejected,
    SessionClosed,
    SessionError,
    TransportError,
)
from .events import (
    ApplicationMessage,
    Event,
    LoggedOn,
    LogoutReason,
    ProtocolViolation,
    RejectReceived,
    SessionEnded,
    TestResponse,
    classify_logout_text,
)
from .message import FixMessage, Value, to_bytes, wire_pairs
from .settings import Role, SessionSettings
from .store import MemoryStore, MessageStore, SqliteStore
from .transport import looks_like_tls, open_transport

__all__ = [
    "DEFAULT_HIGH_WATER",
    "FixSession",
    "TestRequestTimeout",
    "build_settings",
    "connect_session",
    "default_clock",
    "open_fix_session",
    "open_session_store",
]

Clock = Callable[[], float]

#: ``send()`` waits while more than this many bytes are queued for the wire.
DEFAULT_HIGH_WATER = 1 << 20
# Largest read per receive_some call.
_RECEIVE_SIZE = 65536
# After the core closed, give the transport this long to close politely (TLS close_notify).
_CLOSE_GRACE = 1.0
# Beyond logout_timeout (which the core enforces itself), before the transport is cut.
_LOGOUT_GRACE = 1.0
# When a timer fired but the core found nothing due (float rounding between clocks), retry
# this much later instead of spinning.
_TIMER_RETRY = 0.001

# os.write on a socket's descriptor is a send() on POSIX only.
_POSIX = os.name == "posix"

_TRANSPORT_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)


class TestRequestTimeout(SessionError):
    """A TestRequest got no matching Heartbeat within the time asked for."""

    __test__ = False  # not a pytest test class, despite the name


class _EventQueue:
    """An ordered event queue with a soft bound.

    Producers that run synchronously (``accept_logon`` …) may always append — that keeps the
    events in wire order whatever task caused them; the reader waits in :meth:`wait_for_space`
    before reading more, which is what applies the backpressure.
    """

    def __init__(self, bound: int) -> None:
        if bound < 1:
            raise ValueError("event_buffer must be at least 1")
        self._items: collections.deque[Event] = collections.deque()
        self._bound = bound
        self._closed = False
        self._unbounded = False
        self._readable = trio.lowlevel.ParkingLot()
        self._writable = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> None:
        self._items.append(event)
        self._readable.unpark_all()

    def close(self) -> None:
        self._closed = True
        self._readable.unpark_all()
        self._writable.unpark_all()

    def lift_bound(self) -> None:
        """Nobody will consume any more: stop holding the reader back."""
        self._unbounded = True
        self._writable.unpark_all()

    async def wait_for_space(self) -> None:
        while not self._closed and not self._unbounded and len(self._items) >= self._bound:
            await self._writable.park()

    def take_all(self) -> list[Event]:
        """Every queued event, without waiting."""
        items = list(self._items)
        self._items.clear()
        self._writable.unpark_all()
        return items

    async def get(self) -> Event | None:
        """The next event, or ``None`` once the queue is closed and drained."""
        while not self._items:
            if self._closed:
                return None
            await self._readable.park()
        event = self._items.popleft()
        if len(self._items) < self._bound:
            self._writable.unpark_all()
        return event


def _send_nowait_fd(sock: trio.socket.SocketType, data: bytes) -> int:
    """One non-blocking send on ``sock`` (raises ``BlockingIOError`` when it is full)."""
    return os.write(sock.fileno(), data)


async def _receive_fd(sock: trio.socket.SocketType, max_bytes: int) -> bytes:
    """``SocketStream.receive_some`` as one non-blocking read on the descriptor, waiting for
    readiness only when there is nothing yet: Trio's version wraps each read in two context
    managers and a helper, a good part of a small message's cost. A full checkpoint comes
    first (as with Trio's streams), so whatever arrives meanwhile comes in the same read."""
    await trio.lowlevel.checkpoint()
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


def default_clock() -> Clock:
    """Epoch seconds as wall offset (captured now) + ``trio.current_time()``."""
    # Captured once: FIX time then advances exactly with Trio's clock (MockClock included).
    offset = time.time() - trio.current_time()
    return lambda: offset + trio.current_time()


class FixSession:
    """The application's handle on one running FIX session. Create with :func:`open_fix_session`
    (or :func:`connect_session`); all methods must be called from inside that block."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: FixConnection,
        *,
        clock: Clock,
        event_buffer: int,
        high_water: int,
        peer_name: str,
    ) -> None:
        self._stream = stream
        self._conn = connection
        self._now = clock
        self._queue = _EventQueue(event_buffer)
        self._handler: Callable[[list[Event]], None] | None = None
        self._high_water = high_water
        self.peer_name = peer_name
        self._out = bytearray()
        self._in_flight = 0
        # Writes straight from the call that produced the output, when the writer is idle:
        # waking the writer task costs two trips through Trio's scheduler per message, a
        # non-blocking send one system call. Plain TCP (TLS must go through the SSL object),
        # or a stream that offers send_nowait(data) -> bytes written (0: it would wait).
        self._direct: Callable[[bytes], int] | None = None
        self._receive: Callable[[int], Awaitable[bytes | bytearray]] = stream.receive_some
        if isinstance(stream, trio.SocketStream) and _POSIX:
            self._direct = functools.partial(_send_nowait_fd, stream.socket)
            self._receive = functools.partial(_receive_fd, stream.socket)
        elif callable(getattr(stream, "send_nowait", None)):
            self._direct = stream.send_nowait  # type: ignore[attr-defined]
        self._writer_wake = trio.Event()
        self._timer_wake = trio.Event()
        # The deadline (session clock) the timer task sleeps towards; None: it must be woken
        # on any change. Lets _after_core skip waking it when a deadline only moved later.
        self._timer_deadline: float | None = None
        self._drained = trio.lowlevel.ParkingLot()
        self._logon_settled = trio.Event()
        self._done = trio.Event()
        self._test_waiters: dict[str, trio.Event] = {}
        self._test_answered: set[str] = set()
        self._bg_scope: trio.CancelScope | None = None
        self._reader_scope = trio.CancelScope()
        self._timer_scope = trio.CancelScope()
        self._send_scope: trio.CancelScope | None = None
        self._timers_paused_until = -math.inf  # Trio time; see pause_timers
        self._stream_closed = False
        self._broken = False
        # While the handler of hand_events_to runs (inside a core call), what it sends stays
        # in the core's buffer and leaves with the outer call's output: the answers to one
        # read go out in one write, not one each (for the peer: one read, one wake-up).
        self._handling = 0
        self._timer_owed = False
        #: The LoggedOn event once the handshake completed.
        self.logged_on: LoggedOn | None = None
        #: The SessionEnded event once the session is over.
        self.ended: SessionEnded | None = None
        #: Why the transport failed, when it did (the session then ended with it).
        self.transport_error: TransportError | None = None
        #: The last session-level Reject received before Logon completed (e.g. 373=10).
        self.logon_reject: RejectReceived | None = None
        self._last_violation: str | None = None
        #: Bytes received so far and the first few of them (diagnostics: a TLS alert here
        #: means plain TCP was spoken to a TLS port).
        self.bytes_received = 0
        self.first_bytes = b""

    # ------------------------------------------------------------------ inspection
    @property
    def connection(self) -> FixConnection:
        """The sans-IO core (read its properties freely; drive it only through this class)."""
        return self._conn

    @property
    def state(self) -> State:
        """The core's state (``State.ACTIVE`` once logged on)."""
        return self._conn.state

    @property
    def settings(self) -> SessionSettings:
        """The core's settings."""
        return self._conn.settings

    @property
    def finished(self) -> bool:
        """True once the session ended and the transport is closed."""
        return self._done.is_set()

    @property
    def unsent_bytes(self) -> int:
        """Bytes queued for the wire and not yet written (including a write in progress)."""
        return len(self._out) + self._in_flight

    def now(self) -> float:
        """The session's current time (epoch seconds from its clock)."""
        return self._now()

    # ------------------------------------------------------------------ commands
    def start(self) -> None:
        """Begin the handshake (initiator: send Logon; acceptor: wait for one)."""
        self._call(self._conn.start, self._now())

    def send_app(self, msg_type: bytes | str, body: Iterable[tuple[int, Value]]) -> int:
        """Queue an application message; returns its MsgSeqNum. Never blocks (see :meth:`send`).

        Raises :class:`~sessions.errors.LocalProtocolError` unless the session is active.
        """
        seq: int = self._call(self._send_one, msg_type, body, self._now(), timer=False)
        return seq

    def _send_one(
        self, msg_type: bytes | str, body: Iterable[tuple[int, Value]], now: float
    ) -> int:
        mt = msg_type.encode("ascii") if isinstance(msg_type, str) else msg_type
        # A list or tuple goes as it is (the gateway's reports are tuples); other iterables
        # are read once into a list.
        pairs = body if type(body) in (list, tuple) else list(body)
        try:
            # Bodies of (int, bytes) pairs (pre-rendered reports, order entry's requests) go
            # to the codec as they are: checking every field first cost more than encoding.
            # (The codec refuses a value that is not bytes: rendered below, so typing aside.)
            return self._conn.send_app(mt, pairs, now)  # type: ignore[arg-type]
        except CodecError:
            # Values not rendered yet (str, int, Decimal…): render them and encode again. A
            # value the codec still refuses (SOH inside) raises from here; nothing was sent.
            return self._conn.send_app(mt, wire_pairs(pairs), now)

    def send_app_many(
        self, messages: Iterable[tuple[bytes | str, Iterable[tuple[int, Value]]]]
    ) -> list[int]:
        """Queue several application messages, ``(msg_type, body)`` each, in one go; returns
        their MsgSeqNums. They leave together (one write where the socket takes it), which is
        what a burst of reports answering one request should cost.

        Stops at the first message the core refuses (raising as :meth:`send_app` does); those
        before it are sent.
        """
        now = self._now()
        seqs: list[int] = []
        try:
            for msg_type, body in messages:
                seqs.append(self._send_one(msg_type, body, now))
        finally:
            self._after_core(timer=False)
        return seqs

    async def send(self, msg_type: bytes | str, body: Iterable[tuple[int, Value]]) -> int:
        """Like :meth:`send_app`, but first waits while the unsent bytes exceed the high-water
        mark, so a fast producer cannot outrun a slow connection."""
        await trio.lowlevel.checkpoint()
        while self.unsent_bytes > self._high_water and not self._done.is_set():
            await self._drained.park()
        return self.send_app(msg_type, body)

    def send_message(self, message: FixMessage) -> int:
        """Queue a :class:`FixMessage`; its header fields are replaced by the session's."""
        seq: int = self._call(self._conn.send_message, message, self._now(), timer=False)
        return seq

    async def test_request(self, timeout: float | None = None) -> float:
        """Send a TestRequest and wait for the matching Heartbeat; returns the round trip in
        seconds. Raises :class:`TestRequestTimeout`, or :class:`SessionClosed` if the session
        ends first."""
        if timeout is None:
            timeout = float(self._conn.heartbeat_interval)
        start = self._now()
        req_id: str = self._call(self._conn.test_request, start)
        wake = self._test_waiters[req_id] = trio.Event()
        try:
            with trio.move_on_after(timeout):
                await wake.wait()  # set by the matching Heartbeat or by the end of the session
        finally:
            self._test_waiters.pop(req_id, None)
        if req_id in self._test_answered:
            self._test_answered.discard(req_id)
            return self._now() - start
        if self.ended is not None or self._done.is_set():
            raise SessionClosed(self._ended_text(f"TestRequest {req_id}"))
        raise TestRequestTimeout(
            f"no Heartbeat answered TestRequest {req_id} from {self.peer_name} within "
            f"{timeout:g} s"
        )

    async def wait_logged_on(self) -> LoggedOn:
        """Wait until the Logon handshake completed; returns the :class:`LoggedOn` event.

        Raises :class:`~sessions.errors.LogonRejected` (with the peer's Logout text and its
        :class:`~sessions.events.LogoutReason`) if the session ends first, or
        :class:`~sessions.errors.TransportError` if the connection failed or was closed.
        """
        await self._logon_settled.wait()
        if self.logged_on is not None:
            return self.logged_on
        raise self._logon_failure()

    async def next_event(self) -> Event:
        """The next event; raises :class:`SessionClosed` when the session is over and every
        event has been taken."""
        event = await self._queue.get()
        if event is None:
            raise SessionClosed(self._ended_text("the session"))
        return event

    async def next_events(self) -> list[Event]:
        """Every event queued by now, in order (waiting for at least one); an empty list once
        the session is over and every event has been taken. One wake-up per burst read from
        the wire, for consumers that handle events in batches."""
        first = await self._queue.get()
        if first is None:
            return []
        return [first, *self._queue.take_all()]

    def hand_events_to(self, handler: Callable[[list[Event]], None]) -> None:
        """From now on, call ``handler`` with the events (a list per core step, in order),
        synchronously, from the task that caused them — the reader for what arrives — instead
        of queueing them for :meth:`next_event`, :meth:`events` and :meth:`next_events`
        (those then only see the end). Events already queued are handed over first.

        This saves a task switch per read for a consumer that reacts without awaiting. The
        handler must neither block nor raise: an exception from it escapes into whichever
        task called the core. There is no backpressure to apply: the reader does not read on
        until the handler has returned. Wait for the end with :meth:`wait_finished`.

        What the handler sends leaves together with the rest of that core step's output: the
        answers to one read go out in one write.
        """
        pending = self._queue.take_all()
        self._handler = handler
        if pending:
            handler(pending)

    async def wait_finished(self) -> None:
        """Return once the session has ended and its transport is closed."""
        await self._done.wait()

    async def events(self) -> AsyncIterator[Event]:
        """Every event in order, ending after the session's last one (``SessionEnded``)."""
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event

    async def logout(self, text: str | None = None) -> SessionEnded | None:
        """Log out gracefully: send Logout, wait (bounded by ``logout_timeout``) for the peer's
        answer, then close the transport. Returns the :class:`SessionEnded` event."""
        # The session is ending: events still arriving are queued without holding the reader
        # back, or the peer's Logout answer could sit unread behind a full queue.
        self._queue.lift_bound()
        if not self._done.is_set():
            self._call(self._conn.logout, self._now(), text)
        await self._wait_done(self._conn.settings.logout_timeout + _LOGOUT_GRACE)
        return self.ended

    def accept_logon(
        self, *, store: MessageStore | None = None, fields: Sequence[tuple[int, Value]] = ()
    ) -> None:
        """Acceptor: answer the pending Logon (see ``FixConnection.accept_logon``)."""
        pairs = [(int(t), to_bytes(v)) for t, v in fields]
        self._call(self._conn.accept_logon, self._now(), store=store, fields=pairs)

    def reject_logon(
        self,
        text: str,
        *,
        session_reject_reason: int | None = None,
        ref_tag: int | None = None,
    ) -> None:
        """Acceptor: refuse the pending Logon with a Logout carrying ``text``, then close."""
        self._call(
            self._conn.reject_logon,
            self._now(),
            text,
            session_reject_reason=session_reject_reason,
            ref_tag=ref_tag,
        )

    def send_reject(
        self,
        ref_seq_num: int,
        reason: int | None,
        text: str,
        *,
        ref_tag: int | None = None,
        ref_msg_type: bytes | None = None,
    ) -> None:
        """Reject an inbound message at the session level (35=3) on the application's behalf
        (see ``FixConnection.send_reject``)."""
        self._call(
            self._conn.send_reject,
            self._now(),
            ref_seq_num,
            reason,
            text,
            ref_tag=ref_tag,
            ref_msg_type=ref_msg_type,
        )

    def pause_timers(self, duration: float | None) -> None:
        """Fault injection (simulators, tests): run no timer for ``duration`` seconds of Trio
        time (``None``: for the rest of the connection) — no Heartbeats, no TestRequests, no
        timeouts. Context exit and :meth:`logout` stay bounded by their own limits."""
        self._timers_paused_until = (
            math.inf if duration is None else trio.current_time() + duration
        )
        self._timer_wake.set()

    # ------------------------------------------------------------------ core plumbing
    def _call(self, method: Callable[..., Any], *args: Any, timer: bool = True, **kw: Any) -> Any:
        """Run a core command, then route its events and output."""
        result = method(*args, **kw)
        if isinstance(result, list):  # the core's commands return their events as a list
            self._handling += 1
            try:
                self._deliver(result)
            finally:
                self._handling -= 1
        self._after_core(timer=timer)
        return result

    def _deliver(self, events: list[Event]) -> None:
        observe = self._observe
        for event in events:
            # Most events are application messages, which the driver itself does not look at.
            if type(event) is not ApplicationMessage:
                observe(event)
        handler = self._handler
        if handler is None:
            for event in events:
                self._queue.put(event)
        elif events:
            handler(events)

    def _observe(self, event: Event) -> None:
        if isinstance(event, LoggedOn):
            self.logged_on = event
            self._logon_settled.set()
        elif isinstance(event, TestResponse):
            waiter = self._test_waiters.get(event.test_req_id)
            if waiter is not None:
                self._test_answered.add(event.test_req_id)
                waiter.set()
        elif isinstance(event, RejectReceived):
            if self.logged_on is None:
                self.logon_reject = event
        elif isinstance(event, ProtocolViolation):
            self._last_violation = event.text
        elif isinstance(event, SessionEnded):
            self.ended = event
            self._logon_settled.set()
            for waiter in self._test_waiters.values():
                waiter.set()

    def _after_core(self, *, timer: bool = True) -> None:
        if self._handling:
            # Inside a handler: the outer call writes (and settles the timer) for both.
            self._timer_owed = self._timer_owed or timer
            return
        if self._timer_owed:
            self._timer_owed = False
            timer = True
        conn = self._conn
        data = conn.data_to_send()
        if data:
            if self._broken:
                pass  # nowhere to write it; the session is ending with the transport
            elif self._out or self._in_flight or self._direct is None or self._stream_closed:
                self._out += data  # behind what is queued: wire order is sequence order
            else:
                rest = self._write_now(data)
                if rest:
                    self._out += rest
                else:
                    data = b""  # all written: the writer has nothing to do
        # Read once: writing (above) never closes the core, and this runs for every message.
        closed = conn.closed
        if data or closed:
            self._writer_wake.set()
        if closed:
            if self._send_scope is not None:
                # A write still blocked when the session ends gets a bounded time to finish.
                self._send_scope.deadline = min(
                    self._send_scope.deadline, trio.current_time() + _CLOSE_GRACE
                )
            self._timer_wake.set()
        elif timer:
            # Most traffic only pushes the deadlines later (a message received resets the
            # silence timer); the timer task then wakes at its old deadline, finds nothing
            # due and sleeps again. Waking it for every received chunk costs a task switch each.
            current = self._timer_deadline
            if current is None:
                self._timer_wake.set()
            else:
                new = self._conn.next_deadline()
                if new is not None and new < current:
                    self._timer_wake.set()

    def _write_now(self, data: bytes) -> bytes:
        """Write what the socket takes without blocking; return the rest for the writer."""
        assert self._direct is not None
        try:
            sent = self._direct(data)
        except OSError:
            # Full (BlockingIOError), broken or closed: the writer task takes it from here,
            # and a broken socket then ends the session through the one path that reports
            # transport failures.
            return data
        return data[sent:]

    def _transport_failed(self, exc: BaseException | None, doing: str) -> None:
        """The stream broke (``exc``) or hit EOF (``None``): end the session."""
        if exc is not None and self.transport_error is None and not self._conn.closed:
            self.transport_error = TransportError(
                f"connection to {self.peer_name} failed while {doing}: {_describe(exc)}"
            )
        if exc is not None:
            self._broken = True
            self._out.clear()
        self._call(self._conn.connection_lost, self._now())

    # ------------------------------------------------------------------ tasks
    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            # Entered in a cancelled scope, task_status.started() below would leave this
            # shielded task inside nursery.start() for good; raise here instead (nothing can
            # cancel the scope between this check and started(): no checkpoint in between).
            await trio.lowlevel.checkpoint_if_cancelled()
            # Shielded: when the application's block is cancelled, these tasks must keep running
            # for the graceful Logout. They are stopped explicitly (_wait_done), always bounded.
            with trio.CancelScope(shield=True) as self._bg_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    nursery.start_soon(self._timer)
                    nursery.start_soon(self._writer)
                    task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                if not self._stream_closed:
                    self._stream_closed = True
                    await trio.aclose_forcefully(self._stream)
                if not self._conn.closed:
                    self._call(self._conn.connection_lost, self._now())
                self._logon_settled.set()
                self._queue.close()
                self._done.set()
                self._drained.unpark_all()

    async def _reader(self) -> None:
        with self._reader_scope:
            while not self._conn.closed:
                await self._queue.wait_for_space()
                if self._conn.closed:
                    break
                try:
                    data = await self._receive(_RECEIVE_SIZE)
                except _TRANSPORT_ERRORS as exc:
                    if not self._conn.closed:
                        self._transport_failed(exc, "reading")
                    break
                if not data:
                    self._transport_failed(None, "reading")
                    break
                if self.bytes_received < 16:
                    self.first_bytes += data[: 16 - self.bytes_received]
                self.bytes_received += len(data)
                self._call(self._conn.receive_data, data, self._now())

    async def _timer(self) -> None:
        with self._timer_scope:
            last_fired: float | None = None
            while not self._conn.closed:
                wake = self._timer_wake = trio.Event()
                self._timer_deadline = None
                if trio.current_time() < self._timers_paused_until:
                    with trio.move_on_at(self._timers_paused_until):
                        await wake.wait()
                    continue
                deadline = self._conn.next_deadline()
                if deadline is None:
                    await wake.wait()
                    continue
                self._timer_deadline = deadline
                delay = deadline - self._now()
                if deadline == last_fired:
                    delay = max(delay, _TIMER_RETRY)
                with trio.move_on_after(max(delay, 0.0)):
                    await wake.wait()
                if wake.is_set():
                    continue
                last_fired = deadline
                self._call(self._conn.tick, self._now())

    async def _writer(self) -> None:
        while True:
            if self._out and not self._broken:
                data = bytes(self._out)
                self._out.clear()
                self._in_flight = len(data)
                try:
                    with trio.CancelScope() as self._send_scope:
                        if self._conn.closed:
                            self._send_scope.deadline = trio.current_time() + _CLOSE_GRACE
                        await self._stream.send_all(data)
                    if self._send_scope.cancelled_caught:
                        # The session is over and the peer does not read: stop trying.
                        self._broken = True
                        self._out.clear()
                except _TRANSPORT_ERRORS as exc:
                    self._transport_failed(exc, "writing")
                finally:
                    self._send_scope = None
                    self._in_flight = 0
                    self._drained.unpark_all()
                continue
            if self._conn.closed or self._broken:
                break
            wake = self._writer_wake = trio.Event()
            await wake.wait()
        # The core is closed and everything it wanted to say is on the wire: close the transport.
        self._reader_scope.cancel()
        self._timer_scope.cancel()
        await self._close_stream()

    async def _close_stream(self) -> None:
        if self._stream_closed:
            return
        self._stream_closed = True
        with trio.CancelScope(shield=True):
            if self._broken:
                await trio.aclose_forcefully(self._stream)
                return
            with trio.move_on_after(_CLOSE_GRACE) as scope:
                try:
                    await self._stream.aclose()
                except _TRANSPORT_ERRORS:
                    pass
            if scope.cancelled_caught:
                await trio.aclose_forcefully(self._stream)

    # ------------------------------------------------------------------ shutdown
    async def _wait_done(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self._done.wait()
        if not self._done.is_set() and self._bg_scope is not None:
            # The peer neither answered nor let the core's own timeout close things in time.
            self._bg_scope.cancel()
            await self._done.wait()

    async def _shutdown(self) -> None:
        """Context exit: graceful Logout if still active, then the transport is closed."""
        self._queue.lift_bound()
        if self._done.is_set():
            return
        if not self._conn.closed:
            self._call(self._conn.logout, self._now())
        await self._wait_done(self._conn.settings.logout_timeout + _LOGOUT_GRACE)

    # ------------------------------------------------------------------ errors
    def _ended_text(self, what: str) -> str:
        ended = self.ended
        if self.transport_error is not None:
            return f"{what}: {self.transport_error}"
        if ended is None:
            return f"{what}: the session with {self.peer_name} is over"
        detail = f" ({ended.text!r})" if ended.text else ""
        return f"{what}: the session with {self.peer_name} ended ({ended.initiated_by}){detail}"

    def _logon_failure(self) -> Exception:
        if self.transport_error is not None:
            return self.transport_error
        ended = self.ended
        if ended is None or ended.initiated_by == "transport":
            hint = ""
            if looks_like_tls(self.first_bytes):
                hint = (
                    ": it answered with TLS, so this port expects TLS — set tls = true, or put "
                    "a stunnel in front"
                )
            elif self.bytes_received == 0:
                hint = (
                    ": no byte came back — if the endpoint expects TLS, set tls = true (or run a "
                    "stunnel); otherwise the gateway dropped the Logon"
                )
            return TransportError(
                f"{self.peer_name} closed the connection before answering the Logon{hint}"
            )
        reason = ended.reason
        if reason is LogoutReason.OTHER and self.logon_reject is not None:
            reason = _reject_class(self.logon_reject)
        if ended.initiated_by == "peer":
            text = ended.text
            what = f"Logout {text!r}" if text else "Logout without a reason"
            if self.logon_reject is not None and self.logon_reject.text:
                what += f" after Reject {self.logon_reject.text!r}"
            return LogonRejected(
                f"{self.peer_name} refused the Logon: {what}", text=text, reason=reason.value
            )
        text = self._last_violation
        if self.logon_reject is not None and self.logon_reject.text:
            rejected = f"Reject {self.logon_reject.text!r}"
            text = rejected if text is None else f"{text}; {rejected}"
        return LogonRejected(
            f"Logon to {self.peer_name} did not complete: {text or ended.initiated_by}",
            text=text,
            reason=reason.value,
        )


# SessionRejectReason(373) values that say why a Logon failed (REFERENCE §3.4).
_REJECT_REASONS = {
    8: LogoutReason.SIGNATURE,
    9: LogoutReason.COMP_ID,
    10: LogoutReason.SENDING_TIME,
}


def _reject_class(reject: RejectReceived) -> LogoutReason:
    """Classify a Reject that preceded the Logon's failure: its 373 code, else its text."""
    if reject.reason in _REJECT_REASONS:
        return _REJECT_REASONS[reject.reason]
    return classify_logout_text(reject.text)


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(exc, trio.ClosedResourceError):
        return "the stream was closed"
    if isinstance(exc, trio.BrokenResourceError):
        if isinstance(cause, ssl.SSLError):
            return f"TLS error {cause.reason or cause}"
        if isinstance(cause, OSError):
            return cause.strerror or str(cause) or type(cause).__name__
        return "the connection was reset or broken"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error {exc.reason or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def open_fix_session(
    stream: trio.abc.Stream,
    connection: FixConnection,
    *,
    clock: Clock | None = None,
    event_buffer: int = 1000,
    high_water: int = DEFAULT_HIGH_WATER,
    start: bool = True,
    peer_name: str | None = None,
) -> AsyncIterator[FixSession]:
    """Run ``connection`` over ``stream`` for the duration of the block.

    ``clock`` returns epoch seconds (default: wall offset + ``trio.current_time()``);
    ``event_buffer`` bounds the unconsumed events before reading pauses; ``start=False`` leaves
    the call to :meth:`FixSession.start` to the caller. On exit — normal, error or cancellation —
    an active session is logged out gracefully (bounded by ``logout_timeout``) and the stream is
    closed. The stream belongs to the session from here on.
    """
    session = FixSession(
        stream,
        connection,
        clock=clock or default_clock(),
        event_buffer=event_buffer,
        high_water=high_water,
        peer_name=peer_name or "the peer",
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(session._run)
            try:
                if start:
                    session.start()
                yield session
            finally:
                with trio.CancelScope(shield=True):
                    await session._shutdown()
    except BaseExceptionGroup as group:
        # The body and the driver's tasks share one nursery; callers should see the error they
        # raised (or the one that stopped the session), not a group of one.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


# --------------------------------------------------------------------------- from config
def build_settings(session_config: Any, sign_logon: Callable[[bytes], bytes] | None) -> SessionSettings:
    """:class:`SessionSettings` for a :class:`~sessions.config.SessionConfig` (initiator)."""
    return SessionSettings(
        role=Role.INITIATOR,
        sender_comp_id=session_config.key_id,
        target_comp_id=session_config.profile.target_comp_id,
        heartbeat_interval=session_config.heartbeat_interval,
        reset_seq_num_on_logon=session_config.reset_seq_num_on_logon,
        retransmission=session_config.retransmission,
        logon_fields=tuple(session_config.logon.to_pairs()),
        sign_logon=sign_logon,
        # Kalshi's messages carry either the session name or the literal "Kalshi" in
        # SenderCompID(49) (REFERENCE §3.1, UNCONFIRMED): accept both.
        accepted_peer_comp_ids=frozenset({"Kalshi"}),
        logout_timeout=session_config.logout_timeout,
    )


def open_session_store(session_config: Any, now: float) -> MessageStore:
    """The store of a configured session: the :class:`~sessions.store.SqliteStore` in its
    ``store_dir`` when it uses a durable store (``SessionConfig.uses_durable_store``), else a
    :class:`~sessions.store.MemoryStore` — which keeps no sent message where the session answers
    no ResendRequest (``retransmission`` off: KalshiNR, DC, PT and RFQ by default), since nothing
    would ever read them back."""
    if not getattr(session_config, "uses_durable_store", True):
        return MemoryStore(now=now, keep_messages=getattr(session_config, "retransmission", True))
    return SqliteStore.open(
        session_config.store_dir,
        session_config.profile.target_comp_id,
        session_config.key_id,
        now=now,
    )


@asynccontextmanager
async def connect_session(
    session_config: Any,
    *,
    store: MessageStore | None = None,
    signer: Any = None,
    clock: Clock | None = None,
    event_buffer: int = 1000,
) -> AsyncIterator[FixSession]:
    """Connect a configured session (:class:`~sessions.config.SessionConfig`) and yield the
    started :class:`FixSession` (Logon sent; use ``wait_logged_on``).

    ``signer`` defaults to the configured private key; ``store`` to :func:`open_session_store`
    (closed on exit). Raises :class:`~sessions.errors.ConfigError`,
    :class:`~sessions.errors.KeyLoadError`, :class:`~sessions.errors.StoreError` or
    :class:`~sessions.errors.TransportError` (and its TLS subclasses) before yielding.
    """
    cfg = session_config
    if signer is None:
        signer = cfg.load_signer()
    if getattr(signer, "key_id", cfg.key_id) != cfg.key_id:
        raise ConfigError(
            f"[session.{cfg.name}]: the signer is for key id {signer.key_id}, but the session's "
            f"key_id (SenderCompID) is {cfg.key_id}"
        )
    settings = build_settings(cfg, signer.sign)
    clock_ = clock or default_clock()
    own_store = store is None
    store_ = store if store is not None else open_session_store(cfg, clock_())
    try:
        stream = await open_transport(
            cfg.host,
            cfg.port,
            tls=cfg.tls,
            ca_file=cfg.ca_file,
            pin_sha256=cfg.pin_sha256,
            connect_timeout=cfg.connect_timeout,
        )
        connection = FixConnection(settings, store_)
        async with open_fix_session(
            stream,
            connection,
            clock=clock_,
            event_buffer=event_buffer,
            peer_name=f"{cfg.host}:{cfg.port}",
        ) as session:
            yield session
    finally:
        if own_store:
            store_.close()
