"""Endpoint profiles (REFERENCE §1.2, §11 #3)."""

from __future__ import annotations

import pytest

from sessions.errors import ConfigError
from sessions.logon import LogonOptions
from sessions.profiles import (
    CAPABILITIES,
    HOSTS,
    PROFILES,
    EndpointProfile,
    get_profile,
)


def test_names_and_ports() -> None:
    assert {n: p.port for n, p in PROFILES.items()} == {
        "KalshiNR": 8228,
        "KalshiDC": 8229,
        "KalshiRT": 8230,
        "KalshiPT": 8231,
        "KalshiRFQ": 8232,
    }
    for name, profile in PROFILES.items():
        assert profile.name == name == profile.target_comp_id


def test_resend_request_only_toward_rt() -> None:
    assert [n for n, p in PROFILES.items() if p.retransmission] == ["KalshiRT"]


def test_reset_on_logon_by_default_everywhere_but_rt() -> None:
    assert {n for n, p in PROFILES.items() if p.reset_seq_num_on_logon} == {
        "KalshiNR", "KalshiDC", "KalshiPT", "KalshiRFQ",
    }
    assert get_profile("KalshiRT").reset_seq_num_on_logon is False


def test_reset_mandatory_where_the_current_pages_say_so() -> None:
    assert {n for n, p in PROFILES.items() if p.reset_mandatory} == {
        "KalshiNR", "KalshiDC", "KalshiRFQ",
    }


def test_mandatory_reset_implies_reset_by_default() -> None:
    for p in PROFILES.values():
        if p.reset_mandatory:
            assert p.reset_seq_num_on_logon, p.name


def test_retransmission_never_possible_on_nr_and_dc() -> None:
    assert not get_profile("KalshiNR").retransmission_possible
    assert not get_profile("KalshiDC").retransmission_possible
    for p in PROFILES.values():
        if p.retransmission:
            assert p.retransmission_possible, p.name


def test_what_each_endpoint_carries() -> None:
    nr, dc, rt, pt, rfq = (get_profile(n) for n in ("KalshiNR", "KalshiDC", "KalshiRT", "KalshiPT", "KalshiRFQ"))
    assert nr.order_entry and not nr.drop_copy and not nr.rfq_creator
    assert dc.drop_copy and not dc.order_entry
    assert rt.order_entry and rt.rfq_creator and rt.post_trade and not rt.rfq_maker
    assert pt.post_trade and not pt.order_entry
    assert rfq.rfq_maker and not rfq.rfq_creator and not rfq.order_entry
    for p in PROFILES.values():
        assert p.carries <= CAPABILITIES


def test_admitted_logon_options_are_real_option_names() -> None:
    names = set(LogonOptions.field_names())
    for p in PROFILES.values():
        assert p.logon_options <= names, p.name


def test_listener_and_cancel_on_disconnect_only_on_order_entry() -> None:
    for p in PROFILES.values():
        assert p.admits("listener_session") == (p.name in {"KalshiNR", "KalshiRT"})
        assert p.admits("cancel_orders_on_disconnect") == p.order_entry


def test_retention_and_settlement_reports_only_on_rt_and_pt() -> None:
    for option in ("message_retention_period", "receive_settlement_reports"):
        assert {n for n, p in PROFILES.items() if p.admits(option)} == {"KalshiRT", "KalshiPT"}


def test_profiles_are_frozen() -> None:
    p = get_profile("KalshiNR")
    with pytest.raises(AttributeError):
        p.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        PROFILES["KalshiXX"] = p  # type: ignore[index]
    assert isinstance(p, EndpointProfile)


def test_hosts() -> None:
    assert dict(HOSTS) == {"demo": "fix.demo.kalshi.co", "production": "mm.fix.elections.kalshi.com"}


def test_get_profile_returns_the_table_entry() -> None:
    assert get_profile("KalshiPT") is PROFILES["KalshiPT"]


def test_get_profile_unknown_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_profile("KalshiXYZ")
    msg = str(info.value)
    assert "'KalshiXYZ'" in msg
    for name in PROFILES:
        assert name in msg


def test_get_profile_suggests_the_right_case() -> None:
    with pytest.raises(ConfigError, match="did you mean KalshiNR"):
        get_profile("kalshinr")


def test_market_data_endpoint_is_not_a_profile() -> None:
    # KalshiMD lives on a different host (REFERENCE Appendix A); this engine does not speak it.
    with pytest.raises(ConfigError):
        get_profile("KalshiMD")
