"""Kalshi's Logon rules as the simulated gateway applies them (pure, no sockets)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest

from sessions.events import LogoutReason, classify_logout_text
from sessions.maintenance import Window
from sessions.message import FixMessage, utc_timestamp
from sessions.tags import SessionRejectReason
from sessions.testing.endpoints import ENDPOINTS, acceptor_settings, endpoint_spec
from sessions.testing.keys import key_id_for, rsa_key_for
from sessions.testing.logon_check import ALREADY_EXISTS, ApiKey, check_logon
from sessions.signature import LogonSigner

NOW = 1_790_000_000.0
SLOT = "logon-check"
KEY_ID = key_id_for(SLOT)


@pytest.fixture(scope="module")
def signer() -> LogonSigner:
    return LogonSigner.from_private_key(rsa_key_for(SLOT), KEY_ID)


@pytest.fixture(scope="module")
def keys(signer: LogonSigner) -> dict[str, ApiKey]:
    restricted = key_id_for("logon-check-restricted")
    return {
        KEY_ID: ApiKey(KEY_ID, "acct-1", signer.public_key()),
        restricted: ApiKey(restricted, "acct-1", signer.public_key(), subaccount=3),
    }


def logon(
    signer: LogonSigner,
    endpoint: str = "KalshiNR",
    body: Sequence[tuple[int, bytes]] = ((141, b"Y"),),
    *,
    sender: str = KEY_ID,
    seq: bytes = b"1",
    sign_as: bytes | None = None,
    raw_data: bytes | None = None,
    raw_len: bytes | None | bool = True,
    appl_ver: bytes = b"9",
) -> FixMessage:
    stamp = utc_timestamp(NOW)
    target = endpoint.encode()
    pre_hash = b"\x01".join((stamp, b"A", seq, sender.encode(), sign_as or target))
    sig = signer.sign(pre_hash) if raw_data is None else raw_data
    pairs: list[tuple[int, bytes]] = [
        (8, b"FIXT.1.1"), (35, b"A"), (49, sender.encode()), (56, target), (34, seq),
        (52, stamp), (98, b"0"), (108, b"30"), *body, (1137, appl_ver),
    ]
    if raw_len is True:
        pairs.append((95, str(len(sig)).encode()))
    elif isinstance(raw_len, bytes):
        pairs.append((95, raw_len))
    pairs.append((96, sig))
    return FixMessage(pairs)


def test_valid_logon_is_accepted_with_parsed_options(signer: LogonSigner, keys: dict) -> None:
    msg = logon(signer, body=[(141, b"Y"), (8013, b"Y"), (21005, b"Y")])
    d = check_logon(msg, ENDPOINTS["KalshiNR"], keys)
    assert d.accepted and d.text is None
    assert d.key is not None and d.key.account_id == "acct-1"
    assert d.options is not None
    assert d.options.cancel_orders_on_disconnect is True and d.options.use_dollars is True


def test_raw_data_length_is_optional(signer: LogonSigner, keys: dict) -> None:
    assert check_logon(logon(signer, raw_len=None), ENDPOINTS["KalshiNR"], keys).accepted


def test_legacy_skip_pending_tag_counts_for_listener(signer: LogonSigner, keys: dict) -> None:
    msg = logon(signer, body=[(141, b"Y"), (20126, b"Y"), (21003, b"Y")])
    d = check_logon(msg, ENDPOINTS["KalshiNR"], keys)
    assert d.accepted, d.text
    assert d.options is not None and d.options.skip_pending_exec_reports is True


def test_rt_accepts_continuity_logon(signer: LogonSigner, keys: dict) -> None:
    msg = logon(signer, "KalshiRT", body=[(20200, b"48")], seq=b"17")
    d = check_logon(msg, ENDPOINTS["KalshiRT"], keys)
    assert d.accepted, d.text
    assert d.options is not None and d.options.message_retention_period == 48


def refused(d, reason: LogoutReason, reject: int | None = None, ref_tag: int | None = None) -> None:
    assert not d.accepted
    assert classify_logout_text(d.text) is reason, d.text
    assert d.session_reject_reason == reject
    if ref_tag is not None:
        assert d.ref_tag == ref_tag


def test_unknown_key_is_a_compid_problem(signer: LogonSigner, keys: dict) -> None:
    d = check_logon(logon(signer, sender="not-a-key"), ENDPOINTS["KalshiNR"], keys)
    refused(d, LogoutReason.COMP_ID, SessionRejectReason.COMPID_PROBLEM, 49)
    assert d.key is None


def test_bad_signature(signer: LogonSigner, keys: dict) -> None:
    wrong_target = logon(signer, sign_as=b"KalshiRT")  # signed for another endpoint
    refused(check_logon(wrong_target, ENDPOINTS["KalshiNR"], keys), LogoutReason.SIGNATURE)
    garbage = logon(signer, raw_data=base64.b64encode(b"x" * 256))
    refused(check_logon(garbage, ENDPOINTS["KalshiNR"], keys), LogoutReason.SIGNATURE)
    not_base64 = logon(signer, raw_data=b"%%%")
    refused(check_logon(not_base64, ENDPOINTS["KalshiNR"], keys), LogoutReason.SIGNATURE)


def test_missing_raw_data_and_wrong_length(signer: LogonSigner, keys: dict) -> None:
    msg = logon(signer)
    msg.remove(96)
    msg.remove(95)
    refused(check_logon(msg, ENDPOINTS["KalshiNR"], keys), LogoutReason.SIGNATURE)
    refused(check_logon(logon(signer, raw_len=b"12"), ENDPOINTS["KalshiNR"], keys),
            LogoutReason.SIGNATURE)


def test_pkcs1v15_signature_is_refused(signer: LogonSigner, keys: dict) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    stamp = utc_timestamp(NOW)
    pre = b"\x01".join((stamp, b"A", b"1", KEY_ID.encode(), b"KalshiNR"))
    sig = base64.b64encode(rsa_key_for(SLOT).sign(pre, padding.PKCS1v15(), hashes.SHA256()))
    refused(check_logon(logon(signer, raw_data=sig), ENDPOINTS["KalshiNR"], keys),
            LogoutReason.SIGNATURE)


def test_default_appl_ver_id_must_be_9(signer: LogonSigner, keys: dict) -> None:
    d = check_logon(logon(signer, appl_ver=b"7"), ENDPOINTS["KalshiNR"], keys)
    refused(d, LogoutReason.OTHER, SessionRejectReason.VALUE_INCORRECT, 1137)


@pytest.mark.parametrize("endpoint", ["KalshiNR", "KalshiDC", "KalshiRFQ"])
def test_reset_flag_mandatory(signer: LogonSigner, keys: dict, endpoint: str) -> None:
    d = check_logon(logon(signer, endpoint, body=()), ENDPOINTS[endpoint], keys)
    refused(d, LogoutReason.RESET_REQUIRED)
    assert endpoint in (d.text or "")
    d = check_logon(logon(signer, endpoint, body=[(141, b"N")]), ENDPOINTS[endpoint], keys)
    refused(d, LogoutReason.RESET_REQUIRED)


@pytest.mark.parametrize("endpoint", ["KalshiRT", "KalshiPT"])
def test_reset_flag_optional(signer: LogonSigner, keys: dict, endpoint: str) -> None:
    assert check_logon(logon(signer, endpoint, body=()), ENDPOINTS[endpoint], keys).accepted
    d = check_logon(logon(signer, endpoint, body=()), ENDPOINTS[endpoint], keys,
                    reset_required=True)
    refused(d, LogoutReason.RESET_REQUIRED)


@pytest.mark.parametrize(
    ("endpoint", "body", "fragment"),
    [
        ("KalshiNR", [(141, b"Y"), (20126, b"Y")], "21011"),  # listener without 21011
        ("KalshiNR", [(141, b"Y"), (20126, b"Y"), (21011, b"Y"), (8013, b"Y")], "8013"),
        ("KalshiDC", [(141, b"Y"), (20126, b"Y"), (21011, b"Y")], "ListenerSession"),
        ("KalshiNR", [(141, b"Y"), (20200, b"24")], "MessageRetentionPeriod"),
        ("KalshiRT", [(20200, b"100")], "72"),
        ("KalshiRFQ", [(141, b"Y"), (8013, b"Y")], "CancelOrdersOnDisconnect"),
    ],
)
def test_option_combinations(
    signer: LogonSigner, keys: dict, endpoint: str, body: list, fragment: str
) -> None:
    d = check_logon(logon(signer, endpoint, body=body), ENDPOINTS[endpoint], keys)
    assert not d.accepted
    assert fragment in (d.text or "")


@pytest.mark.parametrize(
    ("body", "reason", "tag"),
    [
        ([(141, b"Y"), (8013, b"yes")], SessionRejectReason.VALUE_INCORRECT, 8013),
        ([(141, b"Y"), (333333, b"1")], SessionRejectReason.UNDEFINED_TAG, 333333),
        ([(141, b"X")], SessionRejectReason.VALUE_INCORRECT, 141),
    ],
)
def test_malformed_logon_fields(
    signer: LogonSigner, keys: dict, body: list, reason: int, tag: int
) -> None:
    d = check_logon(logon(signer, body=body), ENDPOINTS["KalshiNR"], keys)
    assert not d.accepted
    assert (d.session_reject_reason, d.ref_tag) == (reason, tag)


def test_restricted_key(signer: LogonSigner, keys: dict) -> None:
    restricted = key_id_for("logon-check-restricted")
    for endpoint in ("KalshiRT", "KalshiDC"):
        msg = logon(signer, endpoint, body=[(141, b"Y")], sender=restricted)
        refused(check_logon(msg, ENDPOINTS[endpoint], keys), LogoutReason.COMP_ID)
    listener = logon(signer, body=[(141, b"Y"), (20126, b"Y"), (21011, b"Y")], sender=restricted)
    refused(check_logon(listener, ENDPOINTS["KalshiNR"], keys), LogoutReason.COMP_ID)
    assert check_logon(logon(signer, sender=restricted), ENDPOINTS["KalshiNR"], keys).accepted


def test_maintenance_then_already_exists(signer: LogonSigner, keys: dict) -> None:
    msg = logon(signer)
    window = Window(NOW - 60, NOW + 3600)
    d = check_logon(msg, ENDPOINTS["KalshiNR"], keys, maintenance=window, busy=lambda k: True)
    refused(d, LogoutReason.MAINTENANCE)
    d = check_logon(msg, ENDPOINTS["KalshiNR"], keys, busy=lambda k: k == KEY_ID)
    assert d.text == ALREADY_EXISTS
    refused(d, LogoutReason.ALREADY_EXISTS)


def test_endpoint_table_and_settings() -> None:
    assert [s.name for s in ENDPOINTS.values()] == [
        "KalshiNR", "KalshiDC", "KalshiRT", "KalshiPT", "KalshiRFQ"
    ]
    assert {n for n, s in ENDPOINTS.items() if s.retransmission} == {"KalshiRT", "KalshiPT"}
    assert {n for n, s in ENDPOINTS.items() if s.reset_mandatory} == {
        "KalshiNR", "KalshiDC", "KalshiRFQ"
    }
    st = acceptor_settings(endpoint_spec("KalshiDC"))
    assert st.sender_comp_id == "KalshiDC" and st.target_comp_id is None
    assert st.application_msg_types == frozenset({b"U1"})
    assert st.min_heartbeat_interval == 4 and st.sending_time_tolerance == 30.0
    assert b"q" in ENDPOINTS["KalshiNR"].inbound and b"q" not in ENDPOINTS["KalshiRT"].inbound
    assert ENDPOINTS["KalshiPT"].inbound == frozenset()
