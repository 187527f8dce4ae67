"""The kill switch: cancel everything on every order-entry session, then refuse new orders.

:meth:`KillSwitch.trip` first closes the :class:`TradingGate` (from that moment
:meth:`~supervisor.orderentry.OrderEntry.new_order`, replaces, retries of ambiguous orders, RFQ
creation, quote acceptance and maker quotes raise :class:`KillSwitchEngaged`; cancels stay
allowed), then cancels:

* on each KalshiNR session, one OrderMassCancelRequest (35=q; REFERENCE §4.9 — it cancels the
  session's orders on every shard) and waits for its OrderMassCancelReport (35=r);
* on each KalshiRT session (no mass cancel there), an OrderCancelRequest per open order the
  tracker knows was entered through it — including orders whose outcome is unknown;
* a session that is down when the switch trips gets its cancel as soon as it logs on again
  (resting orders survive a disconnect unless CancelOrdersOnDisconnect was set), before the
  switch reports that session done.

Listener sessions cannot cancel and are skipped. The gate stays closed until :meth:`rearm`,
which an operator (or the application) calls deliberately; nothing re-arms it automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from sessions.events import LoggedOn

from .errors import SupervisorError
from .observer import ObserverBase, SessionHandle, SessionNotActive, Spawn

if TYPE_CHECKING:  # pragma: no cover
    from .orderentry import MassCancelResult, OrderEntry

__all__ = ["KillReport", "KillSwitch", "KillSwitchEngaged", "SessionKill", "TradingGate"]


class KillSwitchEngaged(SupervisorError):
    """The kill switch is engaged: no new orders (or quotes) until it is re-armed."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(
            f"{what} refused: the kill switch is engaged ({reason}); cancels still work. "
            "Re-arm it deliberately (KillSwitch.rearm) to trade again"
        )


class TradingGate:
    """Open (trading allowed) or closed (kill switch engaged). Shared by every component that
    can create exposure."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.closed_at: float | None = None

    @property
    def open(self) -> bool:
        """Whether new orders may be sent."""
        return self.reason is None

    def check(self, what: str) -> None:
        """Raise :class:`KillSwitchEngaged` if the gate is closed."""
        if self.reason is not None:
            raise KillSwitchEngaged(what, self.reason)

    def close(self, reason: str, now: float | None = None) -> None:
        """Stop new exposure (idempotent; the first reason is kept)."""
        if self.reason is None:
            self.reason = reason
            self.closed_at = now

    def reopen(self) -> None:
        """Allow trading again."""
        self.reason = None
        self.closed_at = None


@attrs.frozen
class SessionKill:
    """What the kill switch did on one session. ``mass_cancel`` is the 35=r outcome on NR;
    ``cancels`` the ClOrdIDs of the individual cancels sent on RT; ``error`` why nothing could
    be sent (the session is down: it is done when it logs on again)."""

    session: str
    mass_cancel: MassCancelResult | None = None
    cancels: tuple[str, ...] = ()
    error: str | None = None

    @property
    def done(self) -> bool:
        """The cancel went out (and, on NR, the exchange accepted the mass cancel)."""
        if self.error is not None:
            return False
        if self.mass_cancel is not None:
            return self.mass_cancel.accepted
        return True


@attrs.frozen
class KillReport:
    """The outcome of :meth:`KillSwitch.trip`, per order-entry session."""

    reason: str
    sessions: tuple[SessionKill, ...]
    #: Sessions that were down: cancelled when they log on again.
    deferred: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every session's cancel went out and was accepted."""
        return not self.deferred and all(s.done for s in self.sessions)


class KillSwitch(ObserverBase):
    """The kill switch (module docstring). ``order_entry`` sends the cancels; its gate is the
    one closed."""

    def __init__(self, order_entry: OrderEntry) -> None:
        self.order_entry = order_entry
        self.gate: TradingGate = order_entry.gate
        self._deferred: set[str] = set()
        #: Every session result, including deferred ones completed later.
        self.history: list[SessionKill] = []
        self._lock = trio.Lock()
        self.handles: dict[str, SessionHandle] = {}
        self.clock: Callable[[], float] | None = None

    @property
    def armed(self) -> bool:
        """True while trading is allowed (the switch can be tripped)."""
        return self.gate.open

    @property
    def deferred(self) -> frozenset[str]:
        """Sessions still owed a cancel (they were down)."""
        return frozenset(self._deferred)

    def attach(
        self, handles: dict[str, SessionHandle], spawn: Spawn, clock: Callable[[], float]
    ) -> None:
        super().attach(handles, spawn, clock)

    def _sessions(self) -> list[str]:
        return self.order_entry.trading_sessions()

    async def trip(self, reason: str = "kill switch", *, timeout: float = 10.0) -> KillReport:
        """Engage: close the gate, cancel on every order-entry session (module docstring).
        Returns once every reachable session answered or ``timeout`` passed per session."""
        self.gate.close(reason, self.clock() if self.clock is not None else None)
        results: list[SessionKill] = []
        async with self._lock:
            for name in self._sessions():
                result = await self._kill_session(name, timeout)
                if result.error is not None:
                    self._deferred.add(name)
                results.append(result)
                self.history.append(result)
        return KillReport(reason, tuple(results), tuple(sorted(self._deferred)))

    def rearm(self) -> None:
        """Allow trading again. Cancels still owed to sessions that were down are dropped:
        re-arming is the decision to trade again."""
        self._deferred.clear()
        self.gate.reopen()

    async def _kill_session(self, name: str, timeout: float) -> SessionKill:
        oe = self.order_entry
        handle = self.handles.get(name)
        if handle is None or not handle.active:
            return SessionKill(name, error=f"session {name} is down; cancelling when it is back")
        try:
            if oe.supports_mass_cancel(name):
                result = await oe.mass_cancel(session=name, timeout=timeout)
                return SessionKill(name, mass_cancel=result)
            cancels = await oe.cancel_all(session=name)
            return SessionKill(name, cancels=tuple(cancels))
        except SessionNotActive:
            return SessionKill(name, error=f"session {name} went down; cancelling when it is back")

    def session_up(self, name: str, logged_on: LoggedOn) -> None:
        if name in self._deferred and not self.gate.open:
            self.spawn(lambda: self._complete_deferred(name))

    async def _complete_deferred(self, name: str) -> None:
        async with self._lock:
            if name not in self._deferred or self.gate.open:
                return
            result = await self._kill_session(name, 10.0)
            self.history.append(result)
            if result.error is None:
                self._deferred.discard(name)
