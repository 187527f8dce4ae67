"""How a session attempt ended → retry, stop or wait for the maintenance window."""

from __future__ import annotations

import pytest
import trio

from sessions.config import SessionConfig
from sessions.errors import (
    CertificatePinMismatch,
    ConfigError,
    KeyLoadError,
    LocalProtocolError,
    LogonOptionsError,
    LogonRejected,
    SessionClosed,
    StoreError,
    TlsError,
    TransportError,
)
from sessions.events import LogoutReason, SessionEnded
from sessions.profiles import get_profile
from supervisor.classify import RestartDecision, classify_outcome, key_busy_delay
from supervisor.errors import KeyInUse, KeyLockedByOtherProcess

KEY = "3f1c2a9e-0000-4000-8000-0000000000c1"
SESSION = SessionConfig(
    name="orders",
    profile=get_profile("KalshiNR"),
    host="fix.demo.kalshi.co",
    port=8228,
    key_id=KEY,
    private_key="keys/orders.pem",
)


def peer_logout(text: str | None, reason: LogoutReason, *, logged_on: bool = False) -> SessionEnded:
    return SessionEnded(
        initiated_by="peer", text=text, reason=reason, clean=True, was_logged_on=logged_on
    )


# ----------------------------------------------------------------------------- Logout texts


@pytest.mark.parametrize(
    ("reason", "action", "counted", "reset"),
    [
        (LogoutReason.ALREADY_EXISTS, "retry", True, False),
        (LogoutReason.SIGNATURE, "stop", False, False),
        (LogoutReason.COMP_ID, "stop", False, False),
        (LogoutReason.RESET_REQUIRED, "stop", False, False),
        (LogoutReason.SENDING_TIME, "stop", False, False),
        (LogoutReason.SEQUENCE, "retry", True, True),
        (LogoutReason.MAINTENANCE, "wait_for_window", False, False),
        (LogoutReason.HEARTBEAT, "retry", True, False),
        (LogoutReason.OTHER, "retry", True, False),
    ],
)
def test_every_logout_reason_has_a_decision(
    reason: LogoutReason, action: str, counted: bool, reset: bool
) -> None:
    for outcome in (
        peer_logout("some text", reason),
        LogonRejected("refused", text="some text", reason=reason.value),
    ):
        decision = classify_outcome(outcome, 30)
        assert decision.action == action
        assert decision.counts_toward_intensity is counted
        assert decision.reset_next_logon is reset
        assert decision.retryable is (action != "stop")
        assert decision.explanation


def test_sending_time_after_an_accepted_logon_is_a_stall_and_is_retried() -> None:
    # Kalshi's complaint mid-session: our messages reached it late.
    peer = classify_outcome(peer_logout("SendingTime accuracy problem", LogoutReason.SENDING_TIME,
                                        logged_on=True), 10)
    # Our own core's verdict on a late message from the peer, after a Logon whose clocks agreed.
    local = classify_outcome(
        SessionEnded(initiated_by="error", reason=LogoutReason.SENDING_TIME, was_logged_on=True),
        10,
    )
    for decision in (peer, local):
        assert decision.action == "retry"
        assert decision.counts_toward_intensity
        assert decision.min_delay == key_busy_delay(10)
        assert "stalled connection" in decision.explanation


def test_sending_time_at_logon_means_the_clock_is_off_and_stops() -> None:
    decision = classify_outcome(
        SessionEnded(initiated_by="error", reason=LogoutReason.SENDING_TIME, was_logged_on=False),
        10,
    )
    assert decision.action == "stop"
    assert "NTP" in decision.explanation


@pytest.mark.parametrize(
    ("heartbeat", "wait"), [(4, 8.0), (10, 20.0), (30, 60.0), (45, 90.0), (60, 120.0)]
)
def test_already_exists_waits_at_least_two_heartbeats_even_beyond_60_s(
    heartbeat: int, wait: float
) -> None:
    # No 60 s cap: with HeartBtInt 45 the gateway's timeout for the old connection is past 60 s.
    decision = classify_outcome(peer_logout("already exists", LogoutReason.ALREADY_EXISTS), heartbeat)
    assert decision.min_delay == wait == key_busy_delay(heartbeat)
    assert decision.action == "retry"
    assert "another connection holds" in decision.explanation
    assert "own API key" in decision.explanation


@pytest.mark.parametrize(
    "outcome",
    [
        peer_logout("already exists", LogoutReason.ALREADY_EXISTS),
        SessionEnded(initiated_by="transport", reason=LogoutReason.OTHER, was_logged_on=True),
        SessionEnded(initiated_by="peer", reason=LogoutReason.HEARTBEAT, was_logged_on=True),
    ],
    ids=["already-exists", "dropped", "heartbeat-timeout"],
)
def test_every_key_busy_wait_covers_two_heartbeats_of_45_s(outcome: SessionEnded) -> None:
    decision = classify_outcome(outcome, 45)
    assert decision.action == "retry"
    assert decision.min_delay >= 90.0
    assert "90 s" in decision.explanation


def test_unclassified_text_is_classified_again() -> None:
    decision = classify_outcome(
        LogonRejected("refused", text="Already Exists", reason="not-a-reason"), 10
    )
    assert decision.cause == "already_exists"
    assert decision.min_delay == 20


def test_signature_stop_explains_key_mismatch_and_clock_naming_the_key() -> None:
    decision = classify_outcome(
        LogonRejected("refused", text="invalid signature", reason="signature"), 30, session=SESSION
    )
    assert decision.action == "stop"
    assert KEY in decision.explanation
    assert "private key" in decision.explanation and "clock" in decision.explanation
    assert "'invalid signature'" in decision.explanation


def test_comp_id_stop_explains_sender_and_target_comp_ids() -> None:
    decision = classify_outcome(peer_logout("bad CompID", LogoutReason.COMP_ID), 30, session=SESSION)
    assert decision.action == "stop"
    text = decision.explanation
    assert "SenderCompID(49) must be the API key id" in text
    assert "TargetCompID(56) must match the port" in text
    assert "KalshiNR (port 8228)" in text and "KalshiDC on 8229" in text


def test_reset_required_stop_names_reset_seq_num_flag() -> None:
    decision = classify_outcome(
        peer_logout("ResetSeqNumFlag required", LogoutReason.RESET_REQUIRED), 30
    )
    assert decision.action == "stop"
    assert "ResetSeqNumFlag(141)=Y" in decision.explanation


def test_maintenance_waits_for_the_window_and_is_not_counted() -> None:
    decision = classify_outcome(
        peer_logout("exchange closed for maintenance", LogoutReason.MAINTENANCE, logged_on=True), 30
    )
    assert decision == RestartDecision(
        "wait_for_window",
        "maintenance",
        decision.explanation,
        min_delay=0.0,
        counts_toward_intensity=False,
    )
    assert "maintenance" in decision.explanation


def test_peer_logout_without_text_after_logon_is_retried() -> None:
    decision = classify_outcome(peer_logout(None, LogoutReason.OTHER, logged_on=True), 30)
    assert decision.action == "retry"
    assert "without giving a reason" in decision.explanation


# ----------------------------------------------------------------------------- other endings


def test_transport_loss_after_logon_waits_for_the_key_to_free() -> None:
    ended = SessionEnded(initiated_by="transport", was_logged_on=True)
    decision = classify_outcome(ended, 15, session=SESSION)
    assert decision.action == "retry"
    assert decision.min_delay == 30
    assert decision.counts_toward_intensity
    assert KEY in decision.explanation


def test_transport_loss_before_logon_uses_plain_backoff() -> None:
    decision = classify_outcome(SessionEnded(initiated_by="transport"), 15)
    assert (decision.action, decision.min_delay) == ("retry", 0.0)


def test_heartbeat_timeout_retries_after_the_key_frees() -> None:
    ended = SessionEnded(
        initiated_by="error", reason=LogoutReason.HEARTBEAT, was_logged_on=True
    )
    decision = classify_outcome(ended, 20)
    assert (decision.action, decision.min_delay, decision.cause) == ("retry", 40.0, "heartbeat")


def test_sequence_violation_requests_a_reset_on_the_next_logon() -> None:
    ended = SessionEnded(initiated_by="error", reason=LogoutReason.SEQUENCE, was_logged_on=True)
    decision = classify_outcome(ended, 30)
    assert decision.action == "retry"
    assert decision.reset_next_logon
    assert decision.min_delay == 60


def test_peer_with_wrong_comp_ids_means_wrong_endpoint_and_stops() -> None:
    ended = SessionEnded(initiated_by="error", reason=LogoutReason.COMP_ID, was_logged_on=True)
    decision = classify_outcome(ended, 30, session=SESSION)
    assert decision.action == "stop"
    assert "KalshiNR (port 8228)" in decision.explanation


def test_logon_answer_timeout_is_retried_without_a_reset() -> None:
    decision = classify_outcome(SessionEnded(initiated_by="error"), 30)
    assert (decision.action, decision.reset_next_logon, decision.min_delay) == ("retry", False, 0)


@pytest.mark.parametrize(("clean", "wait"), [(True, 0.0), (False, 60.0)])
def test_our_own_logout_is_a_normal_end(clean: bool, wait: float) -> None:
    ended = SessionEnded(initiated_by="local", clean=clean, was_logged_on=True)
    decision = classify_outcome(ended, 30)
    assert decision.normal
    assert decision.min_delay == wait


def test_abnormal_ends_are_not_normal() -> None:
    for outcome in (SessionEnded(initiated_by="transport"), TransportError("reset")):
        assert not classify_outcome(outcome, 30).normal


# ----------------------------------------------------------------------------- exceptions


@pytest.mark.parametrize(
    ("exc", "action", "cause"),
    [
        (TransportError("connection refused by 127.0.0.1:8228"), "retry", "transport"),
        (TlsError("handshake failed"), "retry", "tls"),
        (CertificatePinMismatch("pin mismatch for fix.demo.kalshi.co"), "stop", "pin_mismatch"),
        (KeyLoadError("keys/orders.pem: not a PEM private key"), "stop", "key_load"),
        (ConfigError("cfg.toml: [session.orders] port: must be 1..65535"), "stop", "config"),
        (LogonOptionsError("listener_session needs ..."), "stop", "config"),
        (StoreError("store is corrupt"), "stop", "store"),
        (LocalProtocolError("send before Logon"), "stop", "local_protocol"),
        (SessionClosed("session ended"), "retry", "session_closed"),
        (KeyLockedByOtherProcess(KEY, 4242, "/x.lock"), "stop", "key_locked"),
        (KeyInUse(KEY, "orders"), "retry", "key_in_use"),
        (ConnectionResetError(104, "Connection reset by peer"), "retry", "transport"),
        (trio.BrokenResourceError(), "retry", "transport"),
        (ValueError("boom"), "retry", "unexpected"),
    ],
)
def test_exceptions(exc: Exception, action: str, cause: str) -> None:
    decision = classify_outcome(exc, 30)
    assert (decision.action, decision.cause) == (action, cause)
    assert decision.counts_toward_intensity is (action == "retry")


def test_pin_mismatch_explains_how_to_fetch_the_certificate() -> None:
    decision = classify_outcome(CertificatePinMismatch("pin mismatch"), 30)
    assert "openssl s_client" in decision.explanation and "No Logon was sent" in decision.explanation


def test_foreign_exception_text_is_not_repeated() -> None:
    # Only our own errors are known to be free of secrets.
    decision = classify_outcome(RuntimeError("passphrase=hunter2"), 30)
    assert "hunter2" not in decision.explanation
    assert "RuntimeError" in decision.explanation


def test_exception_group_is_judged_by_its_worst_member() -> None:
    group = ExceptionGroup("attempt", [TransportError("eof"), KeyLoadError("bad key")])
    assert classify_outcome(group, 30).action == "stop"
    retries = ExceptionGroup(
        "attempt",
        [TransportError("eof"), LogonRejected("x", text="already exists", reason="already_exists")],
    )
    decision = classify_outcome(retries, 30)
    assert (decision.action, decision.min_delay) == ("retry", 60)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1)])
def test_base_exceptions_are_not_outcomes(exc: BaseException) -> None:
    with pytest.raises(TypeError):
        classify_outcome(exc, 30)  # type: ignore[arg-type]


def test_other_objects_are_refused() -> None:
    with pytest.raises(TypeError):
        classify_outcome("already exists", 30)  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", [LogoutReason.RESET_REQUIRED, LogoutReason.SEQUENCE])
def test_a_refused_continuity_logon_falls_back_to_one_reset_not_counted(
    reason: LogoutReason,
) -> None:
    refused = LogonRejected("refused", text="some text", reason=reason.value)
    kept = classify_outcome(refused, 30, kept_sequence=True)
    assert kept.action == "retry"
    assert kept.reset_next_logon
    assert not kept.counts_toward_intensity
    assert "drop copy" in kept.explanation
    # A Logon that already reset has no fallback left: the ordinary decision stands.
    plain = classify_outcome(refused, 30, kept_sequence=False)
    assert plain == classify_outcome(refused, 30)
    assert plain.counts_toward_intensity is (reason is LogoutReason.SEQUENCE)


def test_kept_sequence_changes_no_other_decision() -> None:
    for reason in LogoutReason:
        if reason in (LogoutReason.RESET_REQUIRED, LogoutReason.SEQUENCE):
            continue
        outcome = peer_logout("some text", reason)
        assert classify_outcome(outcome, 30, kept_sequence=True) == classify_outcome(outcome, 30)
