"""A maintenance crossing whose run spans the US DST change itself, under MockClock.

The supervisor starts on the Saturday before the change (UTC offset of the old rule), stays
logged on across the Sunday change, and must then log out just before 03:00 New York on the
Thursday — an instant computed with the *new* offset — stay away until 05:00 New York and log on
again. Window starts are written in UTC by hand, so a calendar (or a sleep computed once on the
Saturday) that kept the old offset would be an hour off and fail here.
"""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo

import pytest

from supervisor.config import MaintenanceSettings
from supervisor.observer import ChildState, DownKind
from supervisor.tree import Supervisor
from test_tree import Recorder, build_config, wait_state
from test_tree_maintenance import gateway_time, utc

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
HOUR = 3600.0
LOGOUT_BEFORE = 30.0

#: (start: Saturday 22:00 New York before the change, the following Thursday's window in UTC,
#: the session). March: Sunday 2026-03-08 02:00 EST → 03:00 EDT; the start is 03:00 UTC on the
#: Sunday (EST, -5), the window 07:00 UTC (EDT, -4). November: Sunday 2026-11-01 02:00 EDT →
#: 01:00 EST; the start is 02:00 UTC (EDT), the window 08:00 UTC (EST). One session each (five
#: simulated days of heartbeats are the cost of this test): NR, which resets its sequence
#: numbers at every Logon, in March; KalshiRT, which keeps them across the window, in November.
CROSSINGS = [
    pytest.param(
        utc(2026, 3, 8, 3, 0), utc(2026, 3, 12, 7, 0), ("orders", "KalshiNR", "nr"),
        id="march-dst-starts",
    ),
    pytest.param(
        utc(2026, 11, 1, 2, 0), utc(2026, 11, 5, 8, 0), ("rt", "KalshiRT", "rt"),
        id="november-dst-ends",
    ),
]


def new_york(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, NEW_YORK)


@pytest.fixture
def kalshi_gateway_options(request):  # type: ignore[no-untyped-def]
    from sessions.testing.pytest_plugin import GatewayOptions

    # The gateway runs Kalshi's own calendar: it closes the sessions at its 03:00 New York.
    # Plain TCP and no wire log: only the time of day matters here, and it is five days long.
    return GatewayOptions(
        start=request.node.callspec.params["start"], tls=False, record_wire=False
    )


@pytest.mark.parametrize(("start", "window", "child"), CROSSINGS)
async def test_a_week_across_the_dst_change_logs_out_before_thursday_0300_new_york(
    kalshi_gateway, autojump_clock, tmp_path, start: float, window: float,
    child: tuple[str, str, str],
) -> None:
    gw = kalshi_gateway
    name, endpoint, role = child
    sessions = {name: (endpoint, role)}
    end = window + 2 * HOUR
    # The hand-written instants are what they claim: Saturday before the change, Thursday after.
    assert new_york(start).strftime("%A %H:%M") == "Saturday 22:00"
    assert new_york(window).strftime("%A %H:%M") == "Thursday 03:00"
    assert new_york(end).strftime("%H:%M") == "05:00"
    assert new_york(start).utcoffset() != new_york(window).utcoffset()
    assert window - start < 6 * 24 * HOUR  # no other Thursday window in between

    config = build_config(
        gw, tmp_path, sessions, restart_intensity=0,  # a counted restart would fail the test
        # The longest heartbeat allowed: five simulated days stay cheap.
        overrides={name: {"heartbeat_interval": 60}},
        maintenance=MaintenanceSettings(logout_before_s=LOGOUT_BEFORE),
    )
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock, rng=random.Random(5)) as sup:
        await sup.wait_started()
        await wait_state(sup, name, ChildState.UP)
        mark = len(sup.history)
        quiet = await wait_state(sup, name, ChildState.MAINTENANCE, since=mark)
        # Just before 03:00 New York on the Thursday: the right UTC instant after the change.
        assert quiet.time == pytest.approx(window - LOGOUT_BEFORE, abs=1)
        local = new_york(quiet.time)
        assert (local.strftime("%A"), local.hour, local.minute) == ("Thursday", 2, 59)
        assert "05:00:00 America/New_York" in quiet.detail
        # Up, logged on, the whole time until then: nothing happened at the DST change.
        assert [e.state for e in sup.history[mark:] if e.name == name] == [
            ChildState.MAINTENANCE
        ]
        up = await wait_state(sup, name, ChildState.UP, since=mark)
        assert end <= up.time <= end + config[1].backoff_min + 1
        assert new_york(up.time).strftime("%A %H") == "Thursday 05"
    assert sup.failure is None

    # One planned stop, the maintenance one, after a session that lasted from Saturday on.
    planned = [d for d in rec.downs if d.kind is not DownKind.SHUTDOWN]
    assert [(d.name, d.kind, d.was_logged_on) for d in planned] == [
        (name, DownKind.MAINTENANCE, True)
    ]
    assert planned[0].ended.initiated_by == "local" and planned[0].ended.clean
    (_, first), (_, second) = rec.ups
    if endpoint == "KalshiRT":  # continuity kept across the window
        assert not second.reset_seq_num and second.next_sender_seq > 2
    else:
        assert second.reset_seq_num and second.next_sender_seq == 2

    # The gateway's view: one connection from Saturday to Thursday, closed by our Logout 30 s
    # before its 03:00; not one connection attempt inside the window; the next one from
    # 05:00 New York on.
    await gw.gateway.wait_idle()
    records = gw.gateway.connections
    assert len(records) == 2 and all(r.logged_on for r in records)
    before, later = records
    assert before.ended == "peer" and before.opened_at == pytest.approx(0, abs=5)
    assert before.closed_at == pytest.approx(gateway_time(gw, window - LOGOUT_BEFORE), abs=1)
    assert before.text == "logging out for the scheduled maintenance window"
    assert later.opened_at >= gateway_time(gw, end)
    assert not any(
        gateway_time(gw, window) <= r.opened_at < gateway_time(gw, end) for r in records
    )
    assert not any("Exchange closed" in (r.text or "") for r in records)
