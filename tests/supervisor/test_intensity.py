"""Restart intensity in the manner of Erlang/OTP."""

from __future__ import annotations

import pytest

from sessions.errors import ConfigError, KalshiFixError
from supervisor.errors import RestartIntensityExceeded, SupervisorError
from supervisor.intensity import RestartIntensity


def test_more_than_max_restarts_within_period_raises_naming_child_count_and_period() -> None:
    limit = RestartIntensity(3, 60, child="orders")
    for now in (100.0, 110.0, 120.0):
        limit.record(now)
    with pytest.raises(RestartIntensityExceeded) as info:
        limit.record(130.0)
    err = info.value
    assert isinstance(err, SupervisorError) and isinstance(err, KalshiFixError)
    assert (err.child, err.count, err.period, err.max_restarts) == ("orders", 4, 60.0, 3)
    message = str(err)
    assert "'orders'" in message
    assert "4 restarts within 60 s" in message
    assert "giving up" in message


def test_restarts_spread_wider_than_the_period_never_escalate() -> None:
    limit = RestartIntensity(2, 10)
    for i in range(100):
        limit.record(i * 5.01)  # at most two in any 10 s window
    assert limit.count(500.0) == 2


def test_a_restart_exactly_one_period_ago_has_left_the_window() -> None:
    limit = RestartIntensity(1, 10)
    limit.record(0.0)
    limit.record(10.0)
    with pytest.raises(RestartIntensityExceeded):
        limit.record(19.999)


def test_zero_intensity_gives_up_on_the_first_restart() -> None:
    with pytest.raises(RestartIntensityExceeded) as info:
        RestartIntensity(0, 60).record(1.0, child="dropcopy")
    assert info.value.child == "dropcopy"


def test_record_names_the_child_given_per_call() -> None:
    limit = RestartIntensity(1, 60, child="default")
    limit.record(0.0, child="orders")
    with pytest.raises(RestartIntensityExceeded) as info:
        limit.record(1.0, child="listener")
    assert "'listener'" in str(info.value)


def test_count_and_reset() -> None:
    limit = RestartIntensity(5, 30)
    for now in (0.0, 10.0, 20.0):
        limit.record(now)
    assert limit.count(25.0) == 3
    assert limit.count(45.0) == 1
    limit.reset()
    assert limit.count(45.0) == 0


@pytest.mark.parametrize(("max_restarts", "period"), [(-1, 10), (1.5, 10), (3, 0), (3, -5)])
def test_invalid_limits_raise_config_error(max_restarts: object, period: float) -> None:
    with pytest.raises(ConfigError):
        RestartIntensity(max_restarts, period)  # type: ignore[arg-type]
