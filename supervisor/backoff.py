"""Exponential backoff with jitter between restart attempts.

Jitter choice: *proportional, downward*. The un-jittered schedule is
``min(maximum, minimum * multiplier ** attempt)``; jitter then shortens each delay by a random
fraction of at most ``jitter`` of itself, so a delay lies in ``[d * (1 - jitter), d]``:

* ``maximum`` is a hard cap: no delay is ever longer than configured, and sessions that all
  reach the cap together (after an exchange-wide outage) still spread out instead of piling up
  on exactly ``maximum`` as clamping upward jitter would make them.
* Unlike "full jitter" (uniform over ``[0, d]``) a delay never collapses to near zero; Logon is
  rate limited (REFERENCE §2.3), so a reconnect storm must not start with instant retries.
* The shortest possible delay is ``minimum * (1 - jitter)``. Hard floors that come from the
  protocol (at least 2×HeartBtInt after "already exists") are not the backoff's business: the
  caller waits ``max(decision.min_delay, backoff.delay(...))``.

:class:`Backoff` is immutable and stateless (the attempt number is passed in), so one instance
can be shared by every child; :class:`BackoffCounter` keeps the attempt count for one child.
"""

from __future__ import annotations

import random

import attrs

from sessions.errors import ConfigError


def _check_minimum(instance: Backoff, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"backoff minimum must be a positive number of seconds, got {value}")


def _check_maximum(instance: Backoff, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= instance.minimum:
        raise ConfigError(
            f"backoff maximum must be >= the minimum ({instance.minimum:g}), got {value:g}"
        )


def _check_multiplier(instance: Backoff, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 1:
        raise ConfigError(f"backoff multiplier must be >= 1, got {value:g}")


def _check_jitter(instance: Backoff, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"backoff jitter must be a fraction in [0, 1), got {value:g}")


@attrs.frozen
class Backoff:
    """The delay schedule between attempts: exponential, capped, with proportional jitter.

    ``minimum``/``maximum`` are seconds, ``multiplier`` the growth per attempt and ``jitter`` the
    largest fraction by which a delay is shortened at random (see the module docstring).
    Invalid values raise :class:`~sessions.errors.ConfigError`.
    """

    minimum: float = attrs.field(default=1.0, converter=float, validator=_check_minimum)
    maximum: float = attrs.field(default=60.0, converter=float, validator=_check_maximum)
    multiplier: float = attrs.field(default=2.0, converter=float, validator=_check_multiplier)
    jitter: float = attrs.field(default=0.2, converter=float, validator=_check_jitter)

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (0 = the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        try:
            grown = self.minimum * self.multiplier**attempt
        except OverflowError:  # a very long outage: the cap was reached long ago
            return self.maximum
        return min(self.maximum, grown)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (0 = the first retry).

        Deterministic given ``rng``'s state; draws exactly one number from it.
        """
        base = self.base_delay(attempt)
        return base * (1.0 - self.jitter * rng.random())


@attrs.define
class BackoffCounter:
    """One child's position in a :class:`Backoff` schedule.

    Call :meth:`next_delay` before each retry and :meth:`reset` once an attempt succeeded (the
    supervisor resets after a Logon was accepted, so a session that ran fine for hours and then
    dropped starts again from the short delays).
    """

    backoff: Backoff
    rng: random.Random = attrs.field(factory=random.Random)
    #: Retries since the last reset; the next delay uses this attempt number.
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next retry; advances the attempt count."""
        value = self.backoff.delay(self.attempt, self.rng)
        self.attempt += 1
        return value

    def reset(self) -> None:
        """Start the schedule over from ``minimum``."""
        self.attempt = 0
