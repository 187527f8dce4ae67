"""The request log: appended requests come back at the next open (a torn last record and a
file of another account are not read), compaction keeps only what it is told to, a failed
append is an error naming the file; and through the supervisor, a request sent just before the
process stopped is ambiguous after the restart and resolved through the drop copy."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from test_exactly_once import MKT0, Child, RigFactory, open_rig, rigs, running  # noqa: F401
from test_orderentry import order_that_never_lands, resolutions, wait_for

from supervisor import requestlog as requestlog_module
from supervisor.requestlog import LoggedRequest, RequestLog, RequestLogError


def req(cl: str, session: str = "orders") -> LoggedRequest:
    return LoggedRequest(cl, session, b"D", 1_900_000_000.5, ((11, cl.encode()), (38, b"1")))


def test_requests_come_back_at_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "acct-requests"
    log = RequestLog.open(path, "acct")
    assert log.recovered == {}
    log.record(req("a"))
    log.record(req("b"))
    log.record(req("a", session="other"))  # a retry logs it again: the last one wins
    log.close()
    again = RequestLog.open(path, "acct")
    assert again.recovered == {"a": req("a", session="other"), "b": req("b")}
    again.close()


def test_a_forgotten_request_does_not_come_back(tmp_path: Path) -> None:
    path = tmp_path / "acct-requests"
    log = RequestLog.open(path, "acct")
    log.record(req("a"))
    log.record(req("b"))
    log.forget("a")  # closed without a report (never reached the exchange)
    log.close()
    again = RequestLog.open(path, "acct")
    assert list(again.recovered) == ["b"]
    assert again.compact(lambda cl: True) == 1  # the forgotten one is not carried over
    again.close()


def test_a_torn_last_record_and_another_accounts_file_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "acct-requests"
    log = RequestLog.open(path, "acct")
    log.record(req("a"))
    whole = path.stat().st_size
    log.record(req("b"))
    log.close()
    os.truncate(path, whole + 5)  # the second append was cut short
    torn = RequestLog.open(path, "acct")
    assert list(torn.recovered) == ["a"]
    torn.close()
    other = RequestLog.open(path, "another-account")
    assert other.recovered == {}
    other.close()


def test_compaction_keeps_what_it_is_told_and_is_due_after_enough_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requestlog_module, "COMPACT_EVERY", 3)
    path = tmp_path / "acct-requests"
    log = RequestLog.open(path, "acct")
    for cl in ("a", "b"):
        log.record(req(cl))
    assert not log.compaction_due
    log.record(req("c"))
    assert log.compaction_due
    assert log.compact({"b"}.__contains__) == 1
    assert not log.compaction_due
    log.record(req("d"))  # appends go to the rewritten file
    log.close()
    assert list(RequestLog.open(path, "acct").recovered) == ["b", "d"]


def test_compaction_writes_the_last_record_of_each_request_the_file_holds(tmp_path: Path) -> None:
    # The rewrite takes the records from memory, not from the file: it must keep exactly what
    # reading the file back would — requests recovered at open, the last of a retried one, not
    # a forgotten one.
    path = tmp_path / "acct-requests"
    log = RequestLog.open(path, "acct")
    log.record(req("old"))
    log.close()
    log = RequestLog.open(path, "acct")
    retried = LoggedRequest("b", "orders", b"D", 1_900_000_001.0, ((11, b"b"), (38, b"2")))
    for r in (req("a"), req("b"), req("c"), retried):
        log.record(r)
    log.forget("c")
    assert log.compact(lambda cl: cl != "a") == 2
    log.close()
    again = RequestLog.open(path, "acct")
    assert again.recovered == {"old": req("old"), "b": retried}
    again.close()


def test_a_failed_append_raises_naming_the_file_and_leaves_no_torn_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "acct-requests"
    log = RequestLog.open(path, "acct")
    log.record(req("a"))
    real_write = os.write

    def half(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(requestlog_module.os, "write", half)
    with pytest.raises(RequestLogError, match="acct-requests.*'b' was not sent"):
        log.record(req("b"))

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(requestlog_module.os, "write", full)
    with pytest.raises(RequestLogError, match="No space left on device"):
        log.record(req("c"))
    monkeypatch.undo()
    log.record(req("d"))
    log.close()
    assert list(RequestLog.open(path, "acct").recovered) == ["a", "d"]


async def test_a_request_sent_just_before_the_process_stopped_is_resolved_after_restart(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    children = {"orders": Child("KalshiNR", "nr", heartbeat=10),
                "dropcopy": Child("KalshiDC", "dc")}
    state = rigs.tmp_path / "state"
    async with running(gw):
        with trio.CancelScope() as scope:
            async with open_rig(gw, rigs.keys, state, children=children,
                                retry_ambiguous=True) as rig:
                await rig.nr().wait_active()
                await rig.dc().wait_active()
                # The order never reaches the exchange, and the process stops before anything
                # about it is known.
                lost = await order_that_never_lands(rig, gw)
                scope.cancel()
        async with open_rig(gw, rigs.keys, state, children=children,
                            retry_ambiguous=True) as rig:
            amb = rig.order_entry.tracker.ambiguous()
            assert [a.cl_ord_id for a in amb] == [lost.cl_ord_id]
            assert "before the process stopped" in amb[0].reason
            await wait_for(lambda: resolutions(rig, lost.cl_ord_id), rig=rig)
            (res,) = resolutions(rig, lost.cl_ord_id)
            # Never resent after a restart: the application decides.
            assert res.outcome == "not_received"
            assert "before a restart" in res.reason
            assert gw.ground_truth("ACCT-1") == []
            assert not rig.order_entry.order(lost.cl_ord_id).is_open
        # Resolved: the log no longer carries it.
        (log_path,) = state.glob("*-requests")
        assert RequestLog.open(log_path, rig.app.ledger.account).recovered == {}


async def test_a_request_answered_before_the_stop_is_not_ambiguous_after_restart(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    state = rigs.tmp_path / "state"
    async with running(gw):
        async with open_rig(gw, rigs.keys, state) as rig:
            await rig.nr().wait_active()
            t = await rig.order_entry.new_order(MKT0, "buy", 1, 45)
            await wait_for(lambda: rig.order_entry.order(t.cl_ord_id).is_open, rig=rig)
        async with open_rig(gw, rigs.keys, state) as rig:
            assert rig.order_entry.tracker.ambiguous() == []
            assert rig.order_entry.order(t.cl_ord_id).is_open
