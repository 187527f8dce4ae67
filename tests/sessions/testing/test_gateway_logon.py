"""Logon against the simulated gateway, end to end through clients built on the session engine."""

from __future__ import annotations

import pytest

from sessions.errors import LogonRejected, TransportError
from sessions.events import LogoutReason
from sessions.logon import LogonOptions
from sessions.testing.client import connect_with_settings
from sessions.testing.keys import make_test_key
from sessions.testing.logon_check import ALREADY_EXISTS


async def rejected(gw, endpoint: str, key=None, **kw) -> LogonRejected:
    async with connect_with_settings(gw, endpoint, key, **kw) as session:
        with pytest.raises(LogonRejected) as info:
            await session.wait_logged_on()
    return info.value


async def test_every_endpoint_accepts_its_key_over_tls(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    assert gw.tls and set(gw.ports) == {"KalshiNR", "KalshiDC", "KalshiRT", "KalshiPT", "KalshiRFQ"}
    assert len(set(gw.ports.values())) == 5
    for endpoint in gw.ports:
        async with gw.connect(endpoint) as session:
            logged = await session.wait_logged_on()
            assert logged.heartbeat_interval == 30
            assert gw.gateway.is_connected(gw.key(_role(endpoint)).key_id)
    await gw.gateway.wait_idle()
    assert not any(gw.gateway.is_connected(k.key_id) for k in gw.keys.values())
    assert [r.logged_on for r in gw.gateway.connections] == [True] * 5
    assert {r.ended for r in gw.gateway.connections} == {"peer"}  # clients logged out


def _role(endpoint: str) -> str:
    return {"KalshiNR": "nr", "KalshiDC": "dc", "KalshiRT": "rt", "KalshiPT": "pt",
            "KalshiRFQ": "rfq"}[endpoint]


async def test_bad_signature(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    # Signed with another key's private key than the one registered for the SenderCompID.
    wrong = gw.key("rt").signer
    err = await rejected(gw, "KalshiNR", "nr", signer=_renamed(wrong, gw.key("nr").key_id))
    assert err.reason == LogoutReason.SIGNATURE.value
    assert "signature" in (err.text or "").lower()


def _renamed(signer, key_id):
    class Signer:
        def __init__(self) -> None:
            self.key_id = key_id

        def sign(self, pre_hash: bytes) -> bytes:
            return signer.sign(pre_hash)

    return Signer()


async def test_stale_sending_time(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    err = await rejected(gw, "KalshiNR", clock=lambda: gw.clock() - 45.0)
    assert err.reason == LogoutReason.SENDING_TIME.value
    # The Reject (373=10) came before the Logout.
    assert "SendingTime" in str(err)


async def test_wrong_target_comp_id_for_the_port(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    err = await rejected(gw, "KalshiNR", target_comp_id="KalshiRT")
    assert err.reason == LogoutReason.COMP_ID.value
    assert "KalshiRT" in (err.text or "")


@pytest.mark.parametrize("endpoint", ["KalshiNR", "KalshiDC", "KalshiRFQ"])
async def test_missing_reset_seq_num_flag(kalshi_gateway, autojump_clock, endpoint) -> None:
    err = await rejected(kalshi_gateway, endpoint, reset_seq_num_on_logon=False)
    assert err.reason == LogoutReason.RESET_REQUIRED.value
    assert endpoint in (err.text or "")


async def test_unknown_key(kalshi_gateway, autojump_clock, tmp_path) -> None:
    gw = kalshi_gateway
    stranger = make_test_key("gw-stranger", tmp_path)
    err = await rejected(gw, "KalshiNR", stranger)
    assert err.reason == LogoutReason.COMP_ID.value


async def test_invalid_option_combination(kalshi_gateway, autojump_clock) -> None:
    # Listener mode without SkipPendingExecReports: refused (REFERENCE §2.1, §7).
    fields = ((20126, b"Y"),)
    err = await rejected(kalshi_gateway, "KalshiNR", "listener", logon_fields=fields)
    assert "21011" in (err.text or "")


async def test_key_already_connected(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", "nr") as first:
        await first.wait_logged_on()
        # Same key on another endpoint: one connection per key (REFERENCE §1.4, §11 #21).
        err = await rejected(gw, "KalshiDC", "nr")
        assert err.text == ALREADY_EXISTS
        assert err.reason == LogoutReason.ALREADY_EXISTS.value
        # The first session is untouched.
        await first.test_request(timeout=5)
    # Released once the first session logged out.
    async with gw.connect("KalshiDC", "nr") as again:
        await again.wait_logged_on()


async def test_listener_logon_accepted(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    opts = LogonOptions(listener_session=True, skip_pending_exec_reports=True)
    async with gw.connect("KalshiRT", "listener", logon=opts) as session:
        await session.wait_logged_on()


async def test_plain_tcp_to_a_tls_port_fails(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", tls=False, ca_file=None) as session:
        with pytest.raises(TransportError):
            await session.wait_logged_on()
    assert gw.gateway.connections[-1].ended == "tls"
    # The gateway still serves everyone else.
    async with gw.connect("KalshiNR") as session:
        await session.wait_logged_on()


@pytest.mark.kalshi_gateway(tls=False)
async def test_plain_gateway(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    assert not gw.tls and gw.ca_file is None
    async with gw.connect("KalshiRT") as session:
        await session.wait_logged_on()
