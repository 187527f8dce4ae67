"""Kalshi's weekly maintenance window as a pure calendar (REFERENCE §1.6).

Every Thursday 03:00–05:00 US Eastern time (``America/New_York``, so the UTC offset follows DST)
the exchange runs a trading pause and may disconnect FIX sessions. The calendar answers questions
about epoch-second timestamps only; it never reads a clock, so the simulated gateway (on its own,
possibly mocked, clock) and the supervisor (on wall time) share it.

Ad-hoc windows (an unscheduled exchange pause, or a window a test wants right now) are added as
``extra_windows``; overlapping or touching windows are merged, so callers always see disjoint
intervals.

Example::

    cal = MaintenanceCalendar()
    if cal.in_window(now):
        wait = cal.next_change(now) - now   # seconds until the window ends
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .errors import ConfigError

__all__ = ["MaintenanceCalendar", "Window", "KALSHI_MAINTENANCE"]

_WEEK = _dt.timedelta(days=7)
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@attrs.frozen(order=True)
class Window:
    """One maintenance interval ``[start, end)`` in epoch seconds."""

    start: float
    end: float

    def __contains__(self, now: object) -> bool:
        return isinstance(now, (int, float)) and self.start <= now < self.end

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


def _check_weekday(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= 6:
        raise ConfigError(f"maintenance weekday must be 0 (Monday) .. 6 (Sunday), got {value!r}")


def _check_zone(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(
            f"unknown time zone {value!r} for the maintenance window (use an IANA name such as "
            "'America/New_York'; the tzdata package provides them)"
        ) from None


def _windows(value: Iterable[tuple[float, float] | Window]) -> tuple[Window, ...]:
    out: list[Window] = []
    for item in value:
        w = item if isinstance(item, Window) else Window(float(item[0]), float(item[1]))
        if not w.end > w.start:
            raise ConfigError(f"maintenance window must end after it starts: {w}")
        out.append(w)
    return tuple(sorted(out))


@attrs.frozen
class MaintenanceCalendar:
    """The weekly window plus any ad-hoc ones; all times are epoch seconds.

    The weekly window starts on ``weekday`` (Monday = 0) at local time ``start`` and ends at
    local time ``end`` of the same day, in ``timezone``. ``weekly=False`` keeps only the
    ``extra_windows`` (a gateway without the Thursday window, for tests that must not meet it).
    """

    weekday: int = attrs.field(default=3, validator=_check_weekday)
    start: _dt.time = _dt.time(3, 0)
    end: _dt.time = _dt.time(5, 0)
    timezone: str = attrs.field(default="America/New_York", validator=_check_zone)
    weekly: bool = True
    extra_windows: tuple[Window, ...] = attrs.field(default=(), converter=_windows)

    def __attrs_post_init__(self) -> None:
        if not self.end > self.start:
            raise ConfigError(
                f"maintenance window must end after it starts on the same day "
                f"(start {self.start}, end {self.end})"
            )

    # ------------------------------------------------------------------ queries
    def in_window(self, now: float) -> bool:
        """Whether ``now`` falls inside a window (start inclusive, end exclusive)."""
        return self.window_at(now) is not None

    def window_at(self, now: float) -> Window | None:
        """The (merged) window containing ``now``, or ``None``."""
        for w in self._merged(now):
            if now in w:
                return w
        return None

    def next_window(self, now: float) -> Window | None:
        """The window in force at ``now``, else the next one to start; ``None`` if none will."""
        for w in self._merged(now):
            if w.end > now:
                return w
        return None

    def next_change(self, now: float) -> float | None:
        """The first window start or end strictly after ``now``; ``None`` if there is none."""
        for w in self._merged(now):
            if w.start > now:
                return w.start
            if w.end > now:
                return w.end
        return None

    def windows_between(self, begin: float, end: float) -> list[Window]:
        """The (merged) windows overlapping ``[begin, end)``, in time order."""
        out: list[Window] = []
        t = begin
        while t < end:
            w = self.next_window(t)
            if w is None or w.start >= end:
                break
            out.append(w)
            t = w.end
        return out

    def with_window(self, start: float, end: float) -> MaintenanceCalendar:
        """A copy with one more ad-hoc window ``[start, end)``."""
        return attrs.evolve(self, extra_windows=(*self.extra_windows, Window(start, end)))

    def describe(self) -> str:
        """Human-readable schedule, e.g. ``Thursday 03:00-05:00 America/New_York``."""
        if not self.weekly:
            return f"{len(self.extra_windows)} ad-hoc window(s)"
        return (
            f"{_WEEKDAY_NAMES[self.weekday]} {self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"
        )

    # ------------------------------------------------------------------ internals
    def weekly_window(self, now: float) -> Window | None:
        """The scheduled weekly window of the local week containing ``now`` (may be past)."""
        if not self.weekly:
            return None
        zone = ZoneInfo(self.timezone)
        local = _dt.datetime.fromtimestamp(now, zone)
        day = local.date() + _dt.timedelta(days=self.weekday - local.weekday())
        return self._on(day, zone)

    def _on(self, day: _dt.date, zone: ZoneInfo) -> Window:
        # Wall-clock times are combined with the zone for that very date, so each window gets the
        # UTC offset in force on its own day (EDT in summer, EST in winter). fold=0 picks the
        # first occurrence should a configured time fall into a repeated hour.
        begin = _dt.datetime.combine(day, self.start, zone).timestamp()
        finish = _dt.datetime.combine(day, self.end, zone).timestamp()
        return Window(begin, finish)

    def _scheduled_near(self, now: float) -> list[Window]:
        if not self.weekly:
            return []
        zone = ZoneInfo(self.timezone)
        local = _dt.datetime.fromtimestamp(now, zone)
        day = local.date() + _dt.timedelta(days=self.weekday - local.weekday())
        # Last week's window may still matter for merging with an extra window; the next two
        # guarantee a future window whatever the position inside the week.
        return [self._on(day + k * _WEEK, zone) for k in (-1, 0, 1, 2)]

    def _merged(self, now: float) -> list[Window]:
        windows = sorted([*self._scheduled_near(now), *self.extra_windows])
        merged: list[Window] = []
        for w in windows:
            if merged and w.start <= merged[-1].end:
                last = merged[-1]
                merged[-1] = Window(last.start, max(last.end, w.end))
            else:
                merged.append(w)
        return merged


#: Kalshi's documented schedule: Thursday 03:00–05:00 America/New_York.
KALSHI_MAINTENANCE = MaintenanceCalendar()
