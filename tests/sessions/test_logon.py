"""Kalshi Logon options and their rules (REFERENCE §2.1, §7)."""

from __future__ import annotations

import pytest

from sessions.errors import ConfigError, LogonOptionsError
from sessions.logon import (
    MAX_HEARTBEAT_INTERVAL,
    LogonOptions,
    validate_heartbeat_interval,
)
from sessions.profiles import PROFILES, get_profile

NR = get_profile("KalshiNR")
DC = get_profile("KalshiDC")
RT = get_profile("KalshiRT")
PT = get_profile("KalshiPT")
RFQ = get_profile("KalshiRFQ")


def test_defaults_send_nothing_and_pass_everywhere() -> None:
    options = LogonOptions()
    assert options.to_pairs() == []
    for p in PROFILES.values():
        options.validate(p)


def test_to_pairs_tags_values_and_fixed_order() -> None:
    options = LogonOptions(
        split_collateral_return=True,
        use_dollars=True,
        message_retention_period=48,
        skip_pending_exec_reports=False,
        cancel_orders_on_disconnect=True,
        receive_settlement_reports=False,
        enable_ioc_cancel_report=True,
        preserve_original_order_qty=True,
        use_expired_ord_status=True,
        always_emit_new_before_trade=True,
    )
    assert options.to_pairs() == [
        (8013, b"Y"),
        (20127, b"N"),
        (20200, b"48"),
        (21005, b"Y"),
        (21007, b"Y"),
        (21008, b"Y"),
        (21011, b"N"),
        (21012, b"Y"),
        (21026, b"Y"),
        (21027, b"Y"),
    ]
    options.validate(RT)


def test_listener_pairs() -> None:
    options = LogonOptions(listener_session=True, skip_pending_exec_reports=True)
    assert options.to_pairs() == [(20126, b"Y"), (21011, b"Y")]
    options.validate(NR)
    options.validate(RT)


def test_listener_requires_skip_pending() -> None:
    with pytest.raises(
        LogonOptionsError,
        match=r"ListenerSession \(20126=Y\) requires SkipPendingExecReports \(21011=Y\)",
    ):
        LogonOptions(listener_session=True).validate(NR)
    with pytest.raises(LogonOptionsError, match="requires SkipPendingExecReports"):
        LogonOptions(listener_session=True, skip_pending_exec_reports=False).validate(RT)


def test_listener_excludes_cancel_on_disconnect() -> None:
    options = LogonOptions(
        listener_session=True, skip_pending_exec_reports=True, cancel_orders_on_disconnect=True
    )
    with pytest.raises(
        LogonOptionsError,
        match=r"ListenerSession cannot be combined with CancelOrdersOnDisconnect \(8013=Y\)",
    ):
        options.validate(NR)


def test_listener_with_explicit_8013_n_is_fine() -> None:
    LogonOptions(
        listener_session=True, skip_pending_exec_reports=True, cancel_orders_on_disconnect=False
    ).validate(RT)


@pytest.mark.parametrize("profile", [DC, PT, RFQ], ids=lambda p: p.name)
def test_listener_only_on_nr_and_rt(profile: object) -> None:
    options = LogonOptions(listener_session=True, skip_pending_exec_reports=True)
    with pytest.raises(
        LogonOptionsError, match=r"ListenerSession \(20126\) is only allowed on KalshiNR and KalshiRT"
    ):
        options.validate(profile)  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", [NR, DC, RFQ], ids=lambda p: p.name)
def test_settlement_reports_only_on_rt_and_pt(profile: object) -> None:
    with pytest.raises(
        LogonOptionsError,
        match=r"ReceiveSettlementReports \(20127\) is only allowed on KalshiRT and KalshiPT",
    ):
        LogonOptions(receive_settlement_reports=True).validate(profile)  # type: ignore[arg-type]


def test_settlement_reports_allowed_on_rt_and_pt() -> None:
    LogonOptions(receive_settlement_reports=True).validate(RT)
    LogonOptions(receive_settlement_reports=False).validate(PT)


@pytest.mark.parametrize("profile", [NR, DC, RFQ], ids=lambda p: p.name)
def test_retention_only_on_retransmission_endpoints(profile: object) -> None:
    with pytest.raises(
        LogonOptionsError,
        match=r"MessageRetentionPeriod \(20200\) is only allowed on KalshiRT and KalshiPT",
    ):
        LogonOptions(message_retention_period=24).validate(profile)  # type: ignore[arg-type]


@pytest.mark.parametrize("hours", [0, -1, 73, 1000])
def test_retention_range(hours: int) -> None:
    with pytest.raises(LogonOptionsError, match=r"MessageRetentionPeriod \(20200\) must be 1..72 hours"):
        LogonOptions(message_retention_period=hours).validate(RT)


@pytest.mark.parametrize("hours", [1, 24, 72])
def test_retention_bounds_accepted(hours: int) -> None:
    LogonOptions(message_retention_period=hours).validate(PT)


@pytest.mark.parametrize("profile", [DC, PT, RFQ], ids=lambda p: p.name)
def test_cancel_on_disconnect_only_on_order_entry(profile: object) -> None:
    with pytest.raises(
        LogonOptionsError,
        match=r"CancelOrdersOnDisconnect \(8013\) is only allowed on KalshiNR and KalshiRT",
    ):
        LogonOptions(cancel_orders_on_disconnect=True).validate(profile)  # type: ignore[arg-type]


def test_execution_report_options_not_on_pt() -> None:
    with pytest.raises(LogonOptionsError, match=r"SkipPendingExecReports \(21011\) is only allowed on"):
        LogonOptions(skip_pending_exec_reports=True).validate(PT)


def test_execution_report_options_on_drop_copy() -> None:
    LogonOptions(use_dollars=True, preserve_original_order_qty=True, split_collateral_return=True).validate(DC)


def test_rfq_admits_use_dollars_only() -> None:
    LogonOptions(use_dollars=True).validate(RFQ)
    with pytest.raises(LogonOptionsError, match=r"EnableIocCancelReport \(21007\)"):
        LogonOptions(enable_ioc_cancel_report=True).validate(RFQ)


def test_explicit_false_counts_as_sent() -> None:
    # 8013=N is still a field on the wire, and PT does not take it.
    assert LogonOptions(cancel_orders_on_disconnect=False).to_pairs() == [(8013, b"N")]
    with pytest.raises(LogonOptionsError, match="CancelOrdersOnDisconnect"):
        LogonOptions(cancel_orders_on_disconnect=False).validate(PT)


def test_wrong_types_rejected_at_construction() -> None:
    with pytest.raises(LogonOptionsError, match=r"UseDollars \(21005\) must be true, false or unset"):
        LogonOptions(use_dollars="Y")  # type: ignore[arg-type]
    with pytest.raises(LogonOptionsError, match=r"MessageRetentionPeriod \(20200\)"):
        LogonOptions(message_retention_period=True)  # type: ignore[arg-type]
    with pytest.raises(LogonOptionsError, match="MessageRetentionPeriod"):
        LogonOptions(message_retention_period=24.0)  # type: ignore[arg-type]


def test_logon_options_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        LogonOptions(listener_session=True).validate(NR)


def test_options_are_frozen_and_keyword_only() -> None:
    options = LogonOptions(use_dollars=True)
    with pytest.raises(AttributeError):
        options.use_dollars = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        LogonOptions(True)  # type: ignore[misc]


def test_field_names_cover_every_field() -> None:
    import attrs

    assert LogonOptions.field_names() == tuple(a.name for a in attrs.fields(LogonOptions))


# --- HeartBtInt -----------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [4, 30, MAX_HEARTBEAT_INTERVAL])
def test_heartbeat_accepted(seconds: int) -> None:
    assert validate_heartbeat_interval(seconds) == seconds


@pytest.mark.parametrize("seconds", [3, 2, 0, -30])
def test_heartbeat_must_exceed_three(seconds: int) -> None:
    with pytest.raises(ConfigError, match=f"must be an integer >= 4, got {seconds}"):
        validate_heartbeat_interval(seconds)


def test_heartbeat_upper_bound() -> None:
    with pytest.raises(ConfigError, match=f"at most {MAX_HEARTBEAT_INTERVAL}"):
        validate_heartbeat_interval(MAX_HEARTBEAT_INTERVAL + 1)


@pytest.mark.parametrize("value", [30.0, "30", True, None])
def test_heartbeat_must_be_an_int(value: object) -> None:
    with pytest.raises(ConfigError, match="must be an integer"):
        validate_heartbeat_interval(value)
