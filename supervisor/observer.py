"""The seam between the supervision tree and the components that live on its sessions.

The tree (``supervisor/tree.py``) owns connections: it dials, logs on, restarts, waits out the
maintenance window. Components (order entry, reconciliation, executions, RFQ, settlement) own
meaning: they send application messages through a :class:`SessionHandle` and hear about the
sessions through the :class:`SessionObserver` callbacks. Callbacks are synchronous and called
from the child's task in wire order; a component that must await (a drop-copy replay) starts a
task with the ``spawn`` function it was given in :meth:`SessionObserver.attach`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from sessions.config import SessionConfig
from sessions.events import (
    ApplicationMessage,
    LoggedOn,
    SequenceGap,
    SequenceNumbersReset,
    SequenceResetReceived,
    SessionEnded,
)
from sessions.message import Value


class ChildState(enum.Enum):
    """Where one supervised session is."""

    STARTING = "starting"  # dialling / logging on
    UP = "up"  # Logon acknowledged: counts as started
    BACKOFF = "backoff"  # down, waiting before the next attempt
    MAINTENANCE = "maintenance"  # planned stop around the weekly window
    STOPPED = "stopped"  # not restarted any more (non-retryable error, or transient child done)
    SHUTDOWN = "shutdown"  # the supervisor is shutting down


class DownKind(enum.Enum):
    """Why a session went down; components treat planned and unplanned drops differently."""

    UNPLANNED = "unplanned"  # transport loss, peer Logout, heartbeat timeout, error
    MAINTENANCE = "maintenance"  # we logged out for the window
    SHUTDOWN = "shutdown"  # the supervisor is stopping
    #: A component ended the session itself through :meth:`SessionHandle.logout` (a normal
    #: end: a transient child is not restarted, a permanent one is).
    REQUESTED = "requested"


@attrs.frozen
class SessionDown:
    """A session ended. ``ended`` is the core's event when there was one; ``error`` the
    exception that ended the attempt otherwise (transport, logon rejected, ...)."""

    name: str
    kind: DownKind
    ended: SessionEnded | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)
    #: True when the session had logged on in this attempt (messages may have been missed).
    was_logged_on: bool = False


@attrs.frozen
class StatusEvent:
    """What the tree publishes to the application and the operator for every state change."""

    name: str
    endpoint: str
    state: ChildState
    time: float
    detail: str = ""
    attempt: int = 0


class SessionNotActive(Exception):
    """Raised by :meth:`SessionHandle.send_app` when the session is not logged on."""


class SessionHandle(Protocol):
    """A component's view of one supervised session (stable across reconnects)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> SessionConfig: ...

    @property
    def active(self) -> bool:
        """Logged on right now."""
        ...

    def send_app(self, msg_type: bytes | str, body: Iterable[tuple[int, Value]]) -> int:
        """Send an application message now; returns its MsgSeqNum (persisted before it left).
        Raises :class:`SessionNotActive` when the session is not logged on."""
        ...

    async def wait_active(self) -> None:
        """Return once the session is logged on (immediately if it is).

        The tree's handles raise :class:`~supervisor.errors.ChildStopped` if the session
        stopped for good while waiting, and :class:`SessionNotActive` once the supervisor
        is shutting down."""
        ...

    # Extensions (the tree's handles implement them; components may rely on them).

    @property
    def state(self) -> ChildState:
        """Where the session is now."""
        ...

    async def logout(self, text: str | None = None) -> None:
        """End the session with a graceful Logout (bounded by ``logout_timeout``) and return
        once it is closed. A normal end: observers see :attr:`DownKind.REQUESTED`; a transient
        child is not restarted, a permanent one is restarted after the backoff delay."""
        ...


Spawn = Callable[[Callable[[], Awaitable[Any]]], None]


class SessionObserver(Protocol):
    """A component plugged into the tree. Every method has a no-op default in
    :class:`ObserverBase`; override what you need."""

    def attach(self, handles: dict[str, SessionHandle], spawn: Spawn, clock: Callable[[], float]) -> None:
        """Called once, before any session starts. ``clock`` is the supervisor's epoch clock."""
        ...

    def session_up(self, name: str, logged_on: LoggedOn) -> None:
        """The Logon was answered (``logged_on.reset_seq_num``: sequence numbers were reset,
        so continuity was lost if the endpoint keeps it)."""
        ...

    def session_down(self, down: SessionDown) -> None:
        """Called by the tree after every connection attempt, also one whose Logon failed
        (``down.was_logged_on`` is then False); ``down.kind`` says whether it was planned."""
        ...

    def application_message(self, name: str, event: ApplicationMessage) -> None: ...

    def application_messages(self, name: str, events: Sequence[ApplicationMessage]) -> None:
        """Optional: the application messages of one burst read from the wire, in order
        (default: :meth:`application_message` for each). The tree hands a burst to each
        observer in turn, so an observer later in the list sees the whole burst after the
        earlier ones have taken all of it."""
        ...

    def sequence_gap(self, name: str, gap: SequenceGap) -> None:
        """Inbound messages were lost for good: the session has no retransmission, or the peer
        rejected our ResendRequest (``gap.resend_rejected``)."""
        ...

    def sequence_reset(self, name: str, event: SequenceResetReceived) -> None:
        """The peer moved our expected inbound number (SequenceReset). When
        ``event.requested_from`` is set, it gap-filled numbers we had asked to be resent:
        possibly application messages it no longer had."""
        ...

    def sequence_numbers_reset(self, name: str, event: SequenceNumbersReset) -> None:
        """The peer restarted both sequence numbers mid-session (Logon with
        ResetSeqNumFlag=Y): anything lost under the old numbering can no longer be resent."""
        ...


class ObserverBase:
    """No-op implementations of :class:`SessionObserver`, to subclass."""

    def attach(self, handles: dict[str, SessionHandle], spawn: Spawn, clock: Callable[[], float]) -> None:
        self.handles = handles
        self.spawn = spawn
        self.clock = clock

    def session_up(self, name: str, logged_on: LoggedOn) -> None:
        pass

    def session_down(self, down: SessionDown) -> None:
        pass

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        pass

    def application_messages(self, name: str, events: Sequence[ApplicationMessage]) -> None:
        """One burst; override to take it at once (e.g. one store transaction)."""
        for event in events:
            self.application_message(name, event)

    def sequence_gap(self, name: str, gap: SequenceGap) -> None:
        pass

    def sequence_reset(self, name: str, event: SequenceResetReceived) -> None:
        pass

    def sequence_numbers_reset(self, name: str, event: SequenceNumbersReset) -> None:
        pass
