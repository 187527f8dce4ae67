"""Crossing Kalshi's Thursday maintenance window (03:00–05:00 America/New_York) under MockClock.

Window starts are written in UTC by hand, so a calendar that got the DST offset wrong would
put the Logout an hour off and fail these tests.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
import trio

from sessions.events import LogoutReason
from supervisor.config import MaintenanceSettings
from supervisor.observer import ChildState, DownKind
from supervisor.tree import Supervisor
from test_tree import Recorder, build_config, wait_state

UTC = dt.timezone.utc
HOUR = 3600.0


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=UTC).timestamp()


#: (window start in UTC, label): summer (EDT), the Thursday after the March change (EDT already,
#: the week before it was 08:00 UTC), the Thursday after the November change (EST again).
WINDOWS = [
    pytest.param(utc(2026, 7, 16, 7, 0), id="july-edt"),
    pytest.param(utc(2026, 3, 12, 7, 0), id="march-after-dst-start"),
    pytest.param(utc(2026, 11, 5, 8, 0), id="november-after-dst-end"),
]
SESSIONS = {"orders": ("KalshiNR", "nr"), "rt": ("KalshiRT", "rt")}


def gateway_time(gw, epoch: float) -> float:  # type: ignore[no-untyped-def]
    """An epoch time as the gateway's record time (seconds since it started)."""
    return epoch - gw.options.start


@pytest.fixture
def kalshi_gateway_options(request):  # type: ignore[no-untyped-def]
    from sessions.testing.pytest_plugin import GatewayOptions

    marker = request.node.get_closest_marker("kalshi_gateway")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    if hasattr(request.node, "callspec") and "window" in request.node.callspec.params:
        kwargs.setdefault("start", request.node.callspec.params["window"] - 300)
    return GatewayOptions(**kwargs)


@pytest.mark.parametrize("window", WINDOWS)
async def test_logs_out_before_the_window_stays_away_and_logs_on_after(
    kalshi_gateway, autojump_clock, tmp_path, window: float
) -> None:
    gw = kalshi_gateway
    end = window + 2 * HOUR
    config = build_config(
        gw, tmp_path, SESSIONS, restart_intensity=0,  # a counted restart would fail the test
        maintenance=MaintenanceSettings(logout_before_s=30.0),
    )
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock, rng=random.Random(5)) as sup:
        await sup.wait_started()
        mark = len(sup.history)
        for name in SESSIONS:
            quiet = await wait_state(sup, name, ChildState.MAINTENANCE, since=mark)
            assert quiet.time == pytest.approx(window - 30, abs=1)
            local_end = dt.datetime.fromtimestamp(end, dt.timezone.utc).astimezone(
                config[1].maintenance.zone
            )
            assert local_end.strftime("%H:%M") == "05:00"
            assert "05:00:00 America/New_York" in quiet.detail
        for name in SESSIONS:
            up = await wait_state(sup, name, ChildState.UP, since=mark)
            assert end <= up.time <= end + config[1].backoff_min + 1
    assert sup.failure is None

    # Observers: one planned stop per session (they were logged on), then up again.
    planned = [d for d in rec.downs if d.kind is not DownKind.SHUTDOWN]
    assert sorted((d.name, d.kind, d.was_logged_on) for d in planned) == [
        ("orders", DownKind.MAINTENANCE, True), ("rt", DownKind.MAINTENANCE, True)
    ]
    assert all(d.ended.initiated_by == "local" and d.ended.clean for d in planned)
    # Sequence numbers per profile: NR resets, KalshiRT keeps continuity across the window.
    after = {name: logged_on for name, logged_on in rec.ups[2:]}
    assert after["orders"].reset_seq_num and after["orders"].next_sender_seq == 2
    assert not after["rt"].reset_seq_num and after["rt"].next_sender_seq > 2

    # The gateway's view: the Logouts came from us before 03:00; no connection at all was
    # opened from then until 05:00 — not even a refused Logon.
    await gw.gateway.wait_idle()
    records = gw.gateway.connections
    before, later = records[:2], records[2:]
    assert [r.ended for r in before] == ["peer", "peer"]
    assert all(r.closed_at == pytest.approx(gateway_time(gw, window - 30), abs=1) for r in before)
    assert len(later) == 2 and all(r.logged_on for r in later)
    assert all(r.opened_at >= gateway_time(gw, end) for r in later)
    assert [r.text for r in before] == ["logging out for the scheduled maintenance window"] * 2
    assert not any("Exchange closed" in (r.text or "") for r in records)


@pytest.mark.kalshi_gateway(reset_after_maintenance=True)
@pytest.mark.parametrize("window", WINDOWS[:1])
async def test_rt_falls_back_to_a_reset_when_continuity_is_refused(
    kalshi_gateway, autojump_clock, tmp_path, window: float
) -> None:
    gw = kalshi_gateway
    end = window + 2 * HOUR
    config = build_config(gw, tmp_path, {"rt": ("KalshiRT", "rt")}, restart_intensity=0)
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
        await wait_state(sup, "rt", ChildState.UP)
        mark = len(sup.history)
        await wait_state(sup, "rt", ChildState.MAINTENANCE, since=mark)
        backoff = await wait_state(sup, "rt", ChildState.BACKOFF, since=mark)
        assert backoff.time >= end and "ResetSeqNumFlag(141)=Y" in backoff.detail
        await wait_state(sup, "rt", ChildState.UP, since=mark)
    assert sup.failure is None
    # Observers: the planned stop, the refused continuity Logon, then a reset session_up —
    # the signal for reconciliation through drop copy.
    kinds = [(d.kind, d.was_logged_on) for d in rec.downs]
    assert kinds[:2] == [(DownKind.MAINTENANCE, True), (DownKind.UNPLANNED, False)]
    refused = rec.downs[1].error
    assert refused is not None and refused.reason == LogoutReason.RESET_REQUIRED.value
    (_, first), (_, second) = rec.ups
    assert not first.reset_seq_num and second.reset_seq_num
    records = gw.gateway.connections
    assert [r.logged_on for r in records] == [True, False, True]


@pytest.mark.parametrize("window", WINDOWS[:1])
async def test_drops_inside_the_window_are_expected_and_quiet(
    kalshi_gateway, autojump_clock, tmp_path, window: float
) -> None:
    gw = kalshi_gateway
    end = window + 2 * HOUR
    # No early Logout, and our clock 5 s behind Kalshi's: the gateway closes the session itself
    # at its 03:00, a little before our calendar's window.
    config = build_config(
        gw, tmp_path, {"orders": ("KalshiNR", "nr")}, restart_intensity=0,
        maintenance=MaintenanceSettings(logout_before_s=0.0),
    )
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=lambda: gw.clock() - 5) as sup:
        await wait_state(sup, "orders", ChildState.UP)
        mark = len(sup.history)
        await wait_state(sup, "orders", ChildState.UP, since=mark)
        assert ChildState.BACKOFF not in [e.state for e in sup.history[mark:]]
    down = rec.downs[0]
    assert down.kind is DownKind.MAINTENANCE and down.was_logged_on
    assert down.ended.initiated_by == "peer" and down.ended.reason is LogoutReason.MAINTENANCE
    assert "Kalshi closed the session for maintenance" in next(
        e.detail for e in sup.history if e.state is ChildState.MAINTENANCE
    )
    records = gw.gateway.connections
    assert len(records) == 2  # before and after: not one attempt in between
    assert records[0].ended == "local"  # the gateway's Logout
    assert records[1].opened_at >= gateway_time(gw, end)


@pytest.mark.parametrize("window", WINDOWS[:1])
async def test_starting_inside_the_window_waits_for_its_end(
    kalshi_gateway, autojump_clock, tmp_path, window: float
) -> None:
    gw = kalshi_gateway
    end = window + 2 * HOUR
    await trio.sleep(300 + HOUR)  # the gateway started 5 min before the window: now 04:00 ET
    config = build_config(gw, tmp_path, SESSIONS)
    async with Supervisor(config, clock=gw.clock) as sup:
        await sup.wait_started()
        assert {s.state for s in sup.status().values()} == {ChildState.MAINTENANCE}
        assert gw.gateway.connections == []
        for name in SESSIONS:
            up = await wait_state(sup, name, ChildState.UP)
            assert up.time >= end
    assert all(r.opened_at >= gateway_time(gw, end) for r in gw.gateway.connections)


async def test_an_exchange_pause_the_calendar_does_not_know_is_backed_off_not_counted(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    now = gw.clock()
    # An unscheduled pause from +10 s to +200 s that only the exchange knows of.
    gw.gateway.set_maintenance(gw.gateway.config.maintenance.with_window(now + 10, now + 200))
    config = build_config(
        gw, tmp_path, {"orders": ("KalshiNR", "nr")}, restart_intensity=0,
        backoff_min=1.0, backoff_max=60.0, backoff_jitter=0.0,
    )
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
        await wait_state(sup, "orders", ChildState.UP)
        mark = len(sup.history)
        up = await wait_state(sup, "orders", ChildState.UP, since=mark)
        assert up.time >= now + 200
    assert sup.failure is None  # none of it counted towards the intensity
    assert {d.kind for d in rec.downs[:-1]} == {DownKind.MAINTENANCE}
    refused = [r for r in gw.gateway.connections if not r.logged_on]
    # Backed off exponentially (1, 2, 4, … s), not hammered: a handful of Logons in 190 s.
    assert 3 <= len(refused) <= 8
