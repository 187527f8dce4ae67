"""Restart intensity: the Erlang/OTP rule that stops a supervisor from restarting in a loop.

If more than ``max_restarts`` restarts happen within any ``period`` seconds, the supervisor gives
up and fails with :class:`~supervisor.errors.RestartIntensityExceeded`. Time is passed in (the
driver reads a monotonic clock such as ``trio.current_time()``), so the rule is testable without
waiting.

Callers record unplanned restarts only: a stop for the maintenance window, or a restart the
operator asked for, is expected and must not bring the supervisor closer to giving up.
"""

from __future__ import annotations

import collections

import attrs

from sessions.errors import ConfigError

from .errors import RestartIntensityExceeded


def _check_max_restarts(instance: RestartIntensity, attribute: object, value: int) -> None:
    if type(value) is not int or value < 0:
        raise ConfigError(f"restart intensity must be an integer >= 0, got {value!r}")


def _check_period(instance: RestartIntensity, attribute: object, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"restart period must be a positive number of seconds, got {value!r}")


@attrs.define
class RestartIntensity:
    """Counts restarts in a sliding window of ``period`` seconds.

    One instance per supervisor counts the restarts of all its children together, as OTP does;
    one per child limits each child separately. ``child`` names who is restarted in the error
    when :meth:`record` is not told.
    """

    max_restarts: int = attrs.field(validator=_check_max_restarts)
    period: float = attrs.field(converter=float, validator=_check_period)
    child: str = "session"
    _times: collections.deque[float] = attrs.field(
        init=False, factory=collections.deque, repr=False
    )

    def _forget_before(self, now: float) -> None:
        # A restart exactly ``period`` ago has left the window, as in OTP (strictly "within").
        horizon = now - self.period
        while self._times and self._times[0] <= horizon:
            self._times.popleft()

    def record(self, now: float, child: str | None = None) -> None:
        """Note an unplanned restart at ``now``; raise if that is one too many.

        Raises :class:`~supervisor.errors.RestartIntensityExceeded` naming ``child`` (or the
        instance's ``child``), the count and the period when more than ``max_restarts`` restarts
        fall within the last ``period`` seconds. Once exceeded, the supervisor is expected to
        stop; later calls keep raising until the window has moved on.
        """
        self._forget_before(now)
        self._times.append(now)
        if len(self._times) > self.max_restarts:
            raise RestartIntensityExceeded(
                child if child is not None else self.child,
                len(self._times),
                self.period,
                self.max_restarts,
            )

    def count(self, now: float) -> int:
        """How many recorded restarts fall within the ``period`` seconds before ``now``."""
        self._forget_before(now)
        return len(self._times)

    def reset(self) -> None:
        """Forget every recorded restart."""
        self._times.clear()
