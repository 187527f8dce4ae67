"""The weekly maintenance calendar (REFERENCE §1.6): Thursday 03:00–05:00 America/New_York."""

from __future__ import annotations

import datetime as dt

import pytest

from sessions.errors import ConfigError
from sessions.maintenance import KALSHI_MAINTENANCE, MaintenanceCalendar, Window

UTC = dt.timezone.utc


def ts(*args: int) -> float:
    return dt.datetime(*args, tzinfo=UTC).timestamp()


# Summer (EDT, UTC-4): Thursday 2026-07-16 03:00 ET = 07:00 UTC.
SUMMER_START = ts(2026, 7, 16, 7, 0)
# Winter (EST, UTC-5): Thursday 2026-01-15 03:00 ET = 08:00 UTC.
WINTER_START = ts(2026, 1, 15, 8, 0)


def test_summer_window_is_edt() -> None:
    cal = KALSHI_MAINTENANCE
    assert not cal.in_window(SUMMER_START - 0.001)
    assert cal.in_window(SUMMER_START)
    assert cal.in_window(SUMMER_START + 2 * 3600 - 0.001)
    assert not cal.in_window(SUMMER_START + 2 * 3600)
    assert cal.window_at(SUMMER_START + 60) == Window(SUMMER_START, SUMMER_START + 7200)


def test_winter_window_is_est() -> None:
    cal = KALSHI_MAINTENANCE
    # 07:30 UTC would be inside in summer but is 02:30 EST in January.
    assert not cal.in_window(ts(2026, 1, 15, 7, 30))
    assert cal.in_window(ts(2026, 1, 15, 8, 30))
    assert cal.next_window(ts(2026, 1, 12)) == Window(WINTER_START, WINTER_START + 7200)


def test_weeks_around_dst_changes() -> None:
    # US DST starts Sunday 2026-03-08 and ends Sunday 2026-11-01.
    cal = KALSHI_MAINTENANCE
    assert cal.next_window(ts(2026, 3, 6)).start == ts(2026, 3, 12, 7, 0)  # first EDT Thursday
    assert cal.next_window(ts(2026, 3, 1)).start == ts(2026, 3, 5, 8, 0)  # last EST Thursday
    assert cal.next_window(ts(2026, 10, 30)).start == ts(2026, 11, 5, 8, 0)  # back to EST
    assert cal.next_window(ts(2026, 10, 27)).start == ts(2026, 10, 29, 7, 0)


def test_next_window_and_change() -> None:
    cal = KALSHI_MAINTENANCE
    before = SUMMER_START - 3600
    assert cal.next_window(before) == Window(SUMMER_START, SUMMER_START + 7200)
    assert cal.next_change(before) == SUMMER_START
    # Inside: the current window is "next", the change is its end.
    inside = SUMMER_START + 10
    assert cal.next_window(inside) == Window(SUMMER_START, SUMMER_START + 7200)
    assert cal.next_change(inside) == SUMMER_START + 7200
    # At the exact end, the window is over and the next is a week later.
    end = SUMMER_START + 7200
    assert cal.next_window(end) == Window(SUMMER_START + 7 * 86400, SUMMER_START + 7 * 86400 + 7200)
    assert cal.next_change(end) == SUMMER_START + 7 * 86400


def test_every_week_of_a_year_is_thursday_three_to_five_eastern() -> None:
    ny = __import__("zoneinfo").ZoneInfo("America/New_York")
    cal = KALSHI_MAINTENANCE
    t = ts(2026, 1, 1)
    seen = 0
    while t < ts(2027, 1, 1):
        w = cal.next_window(t)
        assert w is not None
        if w.start >= ts(2027, 1, 1):
            break
        start, end = dt.datetime.fromtimestamp(w.start, ny), dt.datetime.fromtimestamp(w.end, ny)
        assert (start.weekday(), start.hour, start.minute) == (3, 3, 0)
        assert (end.weekday(), end.hour, end.minute) == (3, 5, 0)
        assert w.duration == 7200
        t = w.end
        seen += 1
    assert seen == 53  # 2026 starts and ends on a Thursday


def test_windows_between() -> None:
    cal = KALSHI_MAINTENANCE
    got = cal.windows_between(ts(2026, 7, 1), ts(2026, 8, 1))
    assert [dt.datetime.fromtimestamp(w.start, UTC).day for w in got] == [2, 9, 16, 23, 30]


def test_extra_windows_merge_and_stand_alone() -> None:
    base = SUMMER_START
    cal = MaintenanceCalendar(extra_windows=[(base - 600, base + 60), (base + 86400, base + 86500)])
    merged = cal.window_at(base - 300)
    assert merged == Window(base - 600, base + 7200)
    assert cal.next_change(base - 1000) == base - 600
    assert cal.in_window(base + 86450)
    assert not cal.in_window(base + 86500)
    only = MaintenanceCalendar(weekly=False).with_window(100.0, 200.0)
    assert only.in_window(150.0) and not only.in_window(SUMMER_START + 1)
    assert only.next_change(200.0) is None
    assert only.next_window(250.0) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weekday": 7},
        {"timezone": "Mars/Olympus_Mons"},
        {"start": dt.time(5, 0), "end": dt.time(3, 0)},
        {"extra_windows": [(10.0, 10.0)]},
    ],
)
def test_bad_calendars_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MaintenanceCalendar(**kwargs)  # type: ignore[arg-type]


def test_describe() -> None:
    assert KALSHI_MAINTENANCE.describe() == "Thursday 03:00-05:00 America/New_York"
