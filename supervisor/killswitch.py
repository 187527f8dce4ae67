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
which an operator (or the application) calls deliberately; nothing re-arms it automatically —
not even a restart: with a ``state_path`` (:meth:`supervisor.app.Components.build` puts
``killswitch.json`` in ``state_dir``) the engaged state, its reason and time, and the sessions
still owed a cancel are written there (temp file, fsync, rename) before any cancel is sent, and a
new process loads it and comes up engaged. A file that cannot be read is an error naming it,
never taken as "armed".
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from sessions.events import LoggedOn

from .errors import SupervisorError
from .observer import ObserverBase, SessionHandle, SessionNotActive, Spawn
from .records import replace_file

if TYPE_CHECKING:  # pragma: no cover
    from .orderentry import MassCancelResult, OrderEntry

__all__ = [
    "KillReport",
    "KillSwitch",
    "KillSwitchEngaged",
    "KillSwitchStateError",
    "SessionKill",
    "TradingGate",
]

log = logging.getLogger("supervisor.killswitch")

_STATE_VERSION = 1


class KillSwitchStateError(SupervisorError):
    """The kill switch's state file is unreadable or malformed: whether the switch is engaged
    is unknown, so the supervisor must not start as if it were armed."""


def _load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or ``None`` when no file exists (never tripped here: armed)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KillSwitchStateError(
            f"cannot read the kill switch state {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    problem = None
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        problem = f"not JSON ({exc})"
    else:
        if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
            problem = f"not a version-{_STATE_VERSION} kill switch state object"
        elif type(data.get("engaged")) is not bool:
            problem = "'engaged' is not true or false"
        elif data["engaged"] and not isinstance(data.get("reason"), str):
            problem = "engaged without a reason"
        elif data.get("engaged_at") is not None and not isinstance(
            data["engaged_at"], (int, float)
        ):
            problem = "'engaged_at' is not a number of epoch seconds"
        elif not isinstance(data.get("deferred", []), list) or not all(
            isinstance(n, str) for n in data.get("deferred", [])
        ):
            problem = "'deferred' is not a list of session names"
    if problem is not None:
        raise KillSwitchStateError(
            f"the kill switch state {path} is corrupt: {problem}. Whether the switch is engaged "
            "is unknown, so the supervisor does not start as if it were armed; inspect the "
            "file, then delete it (re-arms) or write it engaged again"
        )
    return data


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` with ``state`` atomically and durably (raises ``OSError``)."""
    replace_file(path, (json.dumps(state, sort_keys=True) + "\n").encode("utf-8"), mode=0o600)


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
    #: Why the engaged state could not be saved (``None``: saved, or no state file in use).
    #: The switch is engaged in this process regardless; a restart would come up armed.
    state_error: str | None = None

    @property
    def complete(self) -> bool:
        """Every session's cancel went out and was accepted."""
        return not self.deferred and all(s.done for s in self.sessions)


class KillSwitch(ObserverBase):
    """The kill switch (module docstring). ``order_entry`` sends the cancels; its gate is the
    one closed. ``state_path``: the file that keeps the engaged state across restarts (loaded
    here: an engaged file closes the gate at once; a corrupt one raises
    :class:`KillSwitchStateError`)."""

    def __init__(
        self, order_entry: OrderEntry, *, state_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.order_entry = order_entry
        self.gate: TradingGate = order_entry.gate
        self._deferred: set[str] = set()
        #: Every session result, including deferred ones completed later.
        self.history: list[SessionKill] = []
        self._lock = trio.Lock()
        self.handles: dict[str, SessionHandle] = {}
        self.clock: Callable[[], float] | None = None  # type: ignore[assignment]  # until attach
        self.state_path = Path(state_path) if state_path is not None else None
        if self.state_path is not None:
            state = _load_state(self.state_path)
            if state is not None and state["engaged"]:
                self.gate.close(state["reason"], state.get("engaged_at"))
                # Cancels still owed when the last process ended: sent when those log on.
                self._deferred.update(state.get("deferred", []))
                log.warning(
                    "the kill switch is engaged since a previous run (%s; state %s): no new "
                    "orders until it is re-armed", state["reason"], self.state_path,
                )

    def _save(self, deferred: Iterable[str] | None = None) -> None:
        """Write the current state (raises ``OSError``); no-op without a state file."""
        if self.state_path is None:
            return
        engaged = not self.gate.open
        _write_state(self.state_path, {
            "version": _STATE_VERSION,
            "engaged": engaged,
            "reason": self.gate.reason,
            "engaged_at": self.gate.closed_at,
            "deferred": sorted(self._deferred if deferred is None else deferred),
            "written_at": time.time(),
        })

    def _save_or_log(self, deferred: Iterable[str] | None = None) -> str | None:
        try:
            self._save(deferred)
        except OSError as exc:
            error = (
                f"cannot save the kill switch state to {self.state_path}: "
                f"{exc.strerror or type(exc).__name__}; engaged in this process, but a restart "
                "would come up armed"
            )
            log.error("%s", error)
            return error
        return None

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
        self.gate.close(reason, self.clock() if self.clock is not None else time.time())
        # Saved before any cancel goes out, with every trading session owed one: a crash in the
        # middle leaves a restarted process engaged and cancelling on each session's Logon.
        state_error = self._save_or_log({*self._deferred, *self._sessions()})
        results: list[SessionKill] = []
        async with self._lock:
            for name in self._sessions():
                result = await self._kill_session(name, timeout)
                if result.error is not None:
                    self._deferred.add(name)
                results.append(result)
                self.history.append(result)
            if state_error is None:
                state_error = self._save_or_log()
        return KillReport(
            reason, tuple(results), tuple(sorted(self._deferred)), state_error=state_error
        )

    def rearm(self) -> None:
        """Allow trading again. Cancels still owed to sessions that were down are dropped:
        re-arming is the decision to trade again.

        The armed state is saved first: if that fails (``OSError``) the switch stays engaged,
        since a restart would otherwise engage it again behind the operator's back."""
        if self.state_path is not None:
            reason, closed_at = self.gate.reason, self.gate.closed_at
            self.gate.reopen()
            try:
                self._save(deferred=())
            except BaseException:
                if reason is not None:
                    self.gate.close(reason, closed_at)
                raise
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
                self._save_or_log()
