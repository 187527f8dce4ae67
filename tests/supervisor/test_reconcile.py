"""Drop-copy recovery planning and U2/U3 decisions (REFERENCE §6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessions.message import FixMessage
from supervisor.execid import ExecId
from supervisor.ledger import ExecutionLedger
from supervisor.reconcile import (
    LOOKBACK_MARGIN_S,
    LOOKBACK_S,
    GapTooOld,
    OutcomeKind,
    ReconcileError,
    RecoverySession,
    ReplayCountMismatch,
    ReplayNotAvailable,
    U1Request,
    build_u1,
    needs_lookback_alert,
    on_u2,
    on_u3,
    plan_recovery,
)

NOW = 1_900_000_000.0


def u2(ref: int, count: int | None) -> FixMessage:
    pairs: list[tuple[int, object]] = [(35, "U2"), (45, ref)]
    if count is not None:
        pairs.append((21003, count))
    return FixMessage(pairs)  # type: ignore[arg-type]


def u3(ref: int, reason: int | str | None, text: str | None = None) -> FixMessage:
    pairs: list[tuple[int, object]] = [(35, "U3"), (45, ref)]
    if reason is not None:
        pairs.append((21004, reason))
    if text is not None:
        pairs.append((58, text))
    return FixMessage(pairs)  # type: ignore[arg-type]


def replayed(exec_id: str) -> FixMessage:
    return FixMessage([(35, "8"), (37, "O1"), (11, "a"), (17, exec_id), (150, "F"), (39, "1"),
                       (54, "1"), (55, "KX"), (38, "10"), (14, "1"), (151, "9"), (6, "50")])


# ----------------------------------------------------------------------------- planning


def test_plan_one_request_per_index_from_the_stored_exec_id() -> None:
    plans = plan_recovery({1: ExecId(9, 9, 1), 0: ExecId(4, 7)}, NOW, NOW - 60)
    assert plans == [U1Request(0, ExecId(4, 7)), U1Request(1, ExecId(9, 9, 1))]
    assert all(p.end is None and p.anchored and not p.beyond_lookback for p in plans)
    assert build_u1(plans[0]) == [(21001, b"4;7")]
    assert build_u1(plans[1]) == [(21001, b"9;9;1")]


def test_plan_marks_unanchored_indexes_and_old_gaps() -> None:
    [p] = plan_recovery({2: None}, NOW, None)
    assert p == U1Request(2, ExecId(0, 0, 2), anchored=False)
    assert build_u1(p) == [(21001, b"0;0;2")]
    old = plan_recovery({0: ExecId(1, 1)}, NOW, NOW - LOOKBACK_S)
    assert old[0].beyond_lookback
    assert plan_recovery({}, NOW, NOW) == []


def test_plan_refuses_inconsistent_input() -> None:
    with pytest.raises(ReconcileError, match="listed under"):
        plan_recovery({0: ExecId(1, 1, 1)}, NOW, NOW)
    with pytest.raises(ReconcileError):
        plan_recovery({-1: None}, NOW, NOW)
    with pytest.raises(ReconcileError, match="cannot start"):
        U1Request(0, ExecId(-1, -1))
    with pytest.raises(ReconcileError, match="same|real ExecID"):
        U1Request(0, ExecId(1, 1), end=ExecId(2, 2, 1))


def test_build_u1_with_an_end() -> None:
    req = U1Request(1, ExecId(12345, 67890, 1), end=ExecId(12350, 67895, 1))
    assert build_u1(req) == [(21001, b"12345;67890;1"), (21002, b"12350;67895;1")]


def test_lookback_alert_threshold_includes_the_margin() -> None:
    limit = LOOKBACK_S - LOOKBACK_MARGIN_S
    assert not needs_lookback_alert(NOW - limit, NOW)
    assert needs_lookback_alert(NOW - limit - 0.001, NOW)
    assert needs_lookback_alert(NOW - 4 * 3600, NOW)
    assert not needs_lookback_alert(NOW - 100, NOW, lookback_s=200, margin_s=0)


def test_plan_from_a_ledger_begins_with_a_duplicate(tmp_path: Path) -> None:
    with ExecutionLedger.open(tmp_path, "acct", now=NOW) as lg:
        lg.offer(replayed("4;7"), source="live", now=NOW)
        lg.hold()
        [p] = plan_recovery(lg.resume_points(), NOW, NOW - 30)
        assert p.begin == ExecId(4, 7)
        # BeginExecID is inclusive: the first replayed report is the one we had.
        assert lg.offer(replayed(str(p.begin)), source="dropcopy", now=NOW) is False
        assert lg.offer(replayed("4;8"), source="dropcopy", now=NOW) is True


# ----------------------------------------------------------------------------- U2 / U3


def test_u2_complete_and_count_mismatch() -> None:
    req = U1Request(0, ExecId(4, 7))
    ok = on_u2(u2(3, 5), request=req, replayed=5)
    assert ok.kind is OutcomeKind.COMPLETE and ok.alert is None and not ok.retryable
    assert (ok.expected_count, ok.received_count) == (5, 5)
    bad = on_u2(u2(3, 5), request=req, session="KalshiDC", replayed=4)
    assert bad.kind is OutcomeKind.INCOMPLETE and bad.retryable
    assert bad.retry == U1Request(0, ExecId(4, 7), attempt=2)
    assert isinstance(bad.alert, ReplayCountMismatch)
    assert "KalshiDC" in bad.alert.message and "5" in bad.alert.message and "4" in bad.alert.message
    # Without 21003 (required, but tolerated) nothing can be checked.
    assert on_u2(u2(3, None), request=req, replayed=4).kind is OutcomeKind.COMPLETE
    with pytest.raises(ReconcileError, match="U2"):
        on_u2(u3(3, 1))


@pytest.mark.parametrize(
    ("reason", "kind"),
    [(1, OutcomeKind.RETRY_BACKOFF), (2, OutcomeKind.RETRY_LATER)],
)
def test_u3_transient_reasons_retry_the_same_range(reason: int, kind: OutcomeKind) -> None:
    req = U1Request(0, ExecId(4, 7))
    out = on_u3(u3(3, reason), request=req)
    assert out.kind is kind and out.retryable and out.alert is None
    assert out.reason_code == reason
    assert out.retry == U1Request(0, ExecId(4, 7), attempt=2)


def test_u3_reason_4_drops_the_end() -> None:
    req = U1Request(1, ExecId(4, 7, 1), end=ExecId(9, 9, 1))
    out = on_u3(u3(3, 4), request=req)
    assert out.kind is OutcomeKind.RETRY_WITHOUT_END
    assert out.retry == U1Request(1, ExecId(4, 7, 1), attempt=2)
    # We never sent an end: "too large" cannot be about ours; retry later.
    out = on_u3(u3(3, 4), request=U1Request(1, ExecId(4, 7, 1)))
    assert out.kind is OutcomeKind.RETRY_LATER and out.retry is not None


def test_u3_reason_3_is_an_explicit_gap_too_old_alert() -> None:
    req = U1Request(2, ExecId(4, 7, 2))
    out = on_u3(u3(3, 3), request=req, session="KalshiNR/acct-1",
                gap_start_time=NOW - 4 * 3600, now=NOW)
    assert out.kind is OutcomeKind.GAP_TOO_OLD and not out.retryable and out.retry is None
    alert = out.alert
    assert isinstance(alert, GapTooOld)
    assert (alert.session, alert.index, alert.begin) == ("KalshiNR/acct-1", 2, ExecId(4, 7, 2))
    msg = alert.message
    assert "KalshiNR/acct-1" in msg and "4;7;2" in msg and "4.00 h" in msg and "3 h" in msg
    assert "REST" in msg
    unanchored = on_u3(u3(3, 3), request=U1Request(2, ExecId(0, 0, 2), anchored=False))
    assert isinstance(unanchored.alert, GapTooOld)
    assert "no stored ExecID" in unanchored.alert.message
    assert "unknown length" in GapTooOld("s", 0, ExecId(1, 1), None, None).message


@pytest.mark.parametrize("reason", [5, 9, "x", None])
def test_u3_reason_5_and_unknown_reasons_are_capability_alerts(reason: object) -> None:
    req = U1Request(0, ExecId(4, 7))
    out = on_u3(u3(3, reason, text="drop copy disabled"), request=req,  # type: ignore[arg-type]
                session="KalshiDC")
    assert out.kind is OutcomeKind.NOT_AVAILABLE and not out.retryable and out.retry is None
    assert isinstance(out.alert, ReplayNotAvailable)
    assert "KalshiDC" in out.alert.message and "drop copy disabled" in out.alert.message
    if reason == 5:
        assert "not enabled" in out.alert.message
    else:
        assert "unknown EventResendRejectReason" in out.alert.message


# ----------------------------------------------------------------------------- RecoverySession


def test_session_runs_one_request_at_a_time_and_checks_counts() -> None:
    plans = plan_recovery({0: ExecId(4, 7), 1: ExecId(2, 2, 1)}, NOW, NOW - 60)
    rs = RecoverySession(plans, session="KalshiDC", gap_start_time=NOW - 60)
    first = rs.next_request()
    assert first == plans[0]
    rs.sent(11)
    assert rs.in_flight == first and rs.expected_ref_seq == 11
    assert rs.next_request() is None  # one at a time
    with pytest.raises(ReconcileError, match="still in flight"):
        rs.sent(12)
    assert rs.on_report(replayed("4;7")) and rs.on_report(replayed("4;8"))
    assert not rs.on_report(replayed("3;3;1"))  # another index: not part of this replay
    assert not rs.on_report(u2(1, 1))
    assert rs.replayed == 2
    # With the fields read by the caller: the same answers.
    for m in (replayed("3;3;1"), u2(1, 1)):
        assert not rs.on_report(m, m.first_values())
    assert rs.replayed == 2
    assert rs.on_u2(u2(10, 2)) is None  # answers an older U1: ignored
    out = rs.on_u2(u2(11, 2))
    assert out is not None and out.kind is OutcomeKind.COMPLETE
    second = rs.next_request()
    assert second == plans[1]
    rs.sent(12)
    assert rs.on_u3(u3(11, 1)) is None
    out = rs.on_u3(u3(12, 1), now=NOW)
    assert out is not None and out.kind is OutcomeKind.RETRY_BACKOFF
    retry = rs.next_request()
    assert retry == U1Request(1, ExecId(2, 2, 1), attempt=2)
    rs.sent(13)
    rs.on_report(replayed("2;2;1"))
    out = rs.on_u2(u2(13, 1))
    assert out is not None and out.kind is OutcomeKind.COMPLETE
    assert rs.done and rs.complete
    assert [o.kind for o in rs.outcomes] == [
        OutcomeKind.COMPLETE, OutcomeKind.RETRY_BACKOFF, OutcomeKind.COMPLETE]
    with pytest.raises(ReconcileError, match="no U1"):
        rs.sent(14)


def test_session_count_mismatch_is_retried() -> None:
    rs = RecoverySession([U1Request(0, ExecId(1, 1))])
    rs.sent(2)
    rs.on_report(replayed("1;1"))
    out = rs.on_u2(u2(2, 3))
    assert out is not None and out.kind is OutcomeKind.INCOMPLETE
    assert isinstance(out.alert, ReplayCountMismatch)
    assert not rs.done and rs.next_request() == U1Request(0, ExecId(1, 1), attempt=2)


def test_session_with_a_gap_too_old_is_done_but_not_complete() -> None:
    rs = RecoverySession([U1Request(0, ExecId(1, 1))], session="DC", gap_start_time=NOW - 5 * 3600)
    rs.sent(2)
    out = rs.on_u3(u3(2, 3), now=NOW)
    assert out is not None and isinstance(out.alert, GapTooOld)
    assert "5.00 h" in out.alert.message
    assert rs.done and not rs.complete


def test_session_connection_lost_requeues_the_request() -> None:
    rs = RecoverySession([U1Request(0, ExecId(1, 1))])
    rs.sent(5)
    rs.on_report(replayed("1;1"))
    rs.connection_lost()
    assert rs.in_flight is None and rs.replayed == 0
    assert rs.next_request() == U1Request(0, ExecId(1, 1))
    rs.sent(1)  # new connection, sequence numbers from 1 again (141=Y)
    assert rs.on_u2(u2(5, 1)) is None
    assert rs.on_u2(u2(1, 0)) is not None
    assert rs.complete
    with pytest.raises(ReconcileError, match="MsgSeqNum"):
        RecoverySession([U1Request(0, ExecId(1, 1))]).sent(0)
    with pytest.raises(ReconcileError, match="U3"):
        rs.on_u3(u2(1, 0))
