"""RecoveryObserver: when passes run, what they ask for (per-session marks), every U2/U3 outcome,
timeouts and drop-copy losses, the lookback alert, persistence across restarts, and the merge of
replays with the live stream — first with scripted handles (the test plays the drop copy), then
end to end through the Supervisor and the simulated gateway."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
from test_exactly_once import (
    MKT0,
    RigFactory,
    assert_exactly_once,
    open_rig,
    real_exec_ids,
    rigs,  # noqa: F401 - fixture
    running,
)

from sessions.config import SessionConfig
from sessions.events import ApplicationMessage, LoggedOn, SequenceGap
from sessions.message import FixMessage, Value
from sessions.profiles import get_profile
from sessions.testing.exchange import ExchangeConfig
from supervisor.execid import ExecId
from supervisor.ledger import ExecutionLedger
from supervisor.observer import DownKind, SessionDown, SessionNotActive
from supervisor.reconcile import GapTooOld, OutcomeKind, ReplayCountMismatch, ReplayNotAvailable
from supervisor.recovery import RecoveryObserver, RecoveryReport, RecoveryStateError
from supervisor.streams import ExecutionStream

T0 = 1_900_000_000.0

# ----------------------------------------------------------------------------- scripted handles


def session_config(name: str, endpoint: str) -> SessionConfig:
    return SessionConfig(
        name=name, profile=get_profile(endpoint), host="127.0.0.1", port=1,
        key_id=f"key-{name}", private_key="/nonexistent", tls=False,
    )


class FakeHandle:
    """A SessionHandle the test switches on and off; records what was sent."""

    def __init__(self, name: str, endpoint: str) -> None:
        self.name = name
        self.config = session_config(name, endpoint)
        self.active = False
        self.sent: list[tuple[bytes, list[tuple[int, Value]], int]] = []
        self._seq = 1
        self._changed = trio.Event()
        self._sent_event = trio.Event()

    def send_app(self, msg_type: bytes | str, body: Iterable[tuple[int, Value]]) -> int:
        if not self.active:
            raise SessionNotActive(self.name)
        self._seq += 1
        mt = msg_type.encode() if isinstance(msg_type, str) else msg_type
        self.sent.append((mt, list(body), self._seq))
        self._sent_event.set()
        self._sent_event = trio.Event()
        return self._seq

    async def wait_active(self) -> None:
        while not self.active:
            await self._changed.wait()

    def set_active(self, active: bool) -> None:
        self.active = active
        self._changed.set()
        self._changed = trio.Event()

    async def next_sent(self, count: int) -> None:
        while len(self.sent) < count:
            await self._sent_event.wait()


LOGGED_ON = LoggedOn(heartbeat_interval=30, reset_seq_num=True, next_sender_seq=2,
                     next_target_seq=2)


def er(exec_id: str, *, cl: str = "c1", order_id: str = "O1", exec_type: str = "F",
       status: str = "1", cum: str = "1.00") -> FixMessage:
    return FixMessage([
        (35, "8"), (37, order_id), (11, cl), (17, exec_id), (150, exec_type), (39, status),
        (54, "1"), (55, MKT0), (38, "10.00"), (14, cum), (151, "9.00"), (6, "0.5000"),
    ])


def app(msg: FixMessage, seq: int = 1) -> ApplicationMessage:
    return ApplicationMessage(msg, seq)


class Stage:
    """An ExecutionStream + RecoveryObserver on scripted handles, with a fake clock."""

    def __init__(self, tmp: Path, nursery: trio.Nursery, *, sessions: Iterable[str] = ("nr",),
                 state: bool = True, **kw: Any) -> None:
        self.now = T0
        self.ledger = ExecutionLedger.open(tmp, "acct", now=self.now)
        self.executions = ExecutionStream(self.ledger, clock=self.clock)
        self.handles: dict[str, FakeHandle] = {n: FakeHandle(n, "KalshiNR") for n in sessions}
        self.handles["dc"] = FakeHandle("dc", "KalshiDC")
        kw.setdefault("min_interval", 0.0)
        kw.setdefault("indexes", (0,))
        self.recovery = RecoveryObserver(
            self.executions, drop_copy="dc", state_path=tmp / "rec.json" if state else None,
            **kw,
        )
        self.reports: list[RecoveryReport] = []
        self.recovery.on_pass.append(self.reports.append)
        self.nursery = nursery
        for obs in (self.executions, self.recovery):
            obs.attach(dict(self.handles), lambda fn: nursery.start_soon(fn), self.clock)

    def clock(self) -> float:
        return self.now

    def up(self, name: str) -> None:
        self.handles[name].set_active(True)
        for obs in (self.executions, self.recovery):
            obs.session_up(name, LOGGED_ON)

    def down(self, name: str) -> None:
        self.handles[name].set_active(False)
        for obs in (self.executions, self.recovery):
            obs.session_down(SessionDown(name, DownKind.UNPLANNED, was_logged_on=True))

    def live(self, name: str, msg: FixMessage) -> None:
        for obs in (self.executions, self.recovery):
            obs.application_message(name, app(msg))

    def dc_says(self, msg: FixMessage) -> None:
        for obs in (self.executions, self.recovery):
            obs.application_message("dc", app(msg))

    def u1s(self) -> list[tuple[dict[int, bytes], int]]:
        return [
            ({t: v if isinstance(v, bytes) else str(v).encode() for t, v in body}, seq)
            for mt, body, seq in self.handles["dc"].sent if mt == b"U1"
        ]

    async def u1(self, n: int) -> tuple[dict[int, bytes], int]:
        """Wait for the n-th U1 (1-based)."""
        dc = self.handles["dc"]
        while len(self.u1s()) < n:
            await dc._sent_event.wait()
        return self.u1s()[n - 1]

    def u2(self, ref: int, count: int) -> None:
        self.dc_says(FixMessage([(35, "U2"), (45, ref), (21003, count)]))

    def u3(self, ref: int, reason: int) -> None:
        self.dc_says(FixMessage([(35, "U3"), (45, ref), (21004, reason)]))

    async def reports_at_least(self, n: int) -> None:
        while len(self.reports) < n:
            await trio.sleep(0.01)


def delivered(stage: Stage) -> list[str]:
    out = []
    it = stage.executions.executions()
    while (item := it.next_nowait()) is not None:
        out.append(str(item.exec_id) if item.exec_id is not None else item.key)
    it.close()
    return out


async def test_no_pass_while_nothing_happened_then_one_after_a_reconnect(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery)
        st.up("dc")
        st.up("nr")
        st.live("nr", er("5;1"))
        await trio.sleep(5)
        assert st.u1s() == []  # a fresh start with nothing missed asks for nothing
        st.down("nr")
        await trio.sleep(5)
        assert st.u1s() == []  # the replay must start after the reconnect
        st.up("nr")
        assert st.executions.holding  # live reports after the reconnect wait for the merge
        body, seq = await st.u1(1)
        assert body == {21001: b"5;1"}  # from the last ExecID, inclusive; no EndExecID
        st.dc_says(er("5;1"))
        st.dc_says(er("5;2", cum="2.00"))
        st.u2(seq, 2)
        await st.reports_at_least(1)
        report = st.reports[0]
        assert report.complete and report.covered == frozenset({"nr"})
        assert (report.replayed, report.new) == (2, 1)
        assert not st.executions.holding
        assert delivered(st) == ["5;1", "5;2"]
        assert st.recovery.marks("nr") == {0: ExecId(5, 2, 0)}
        nursery.cancel_scope.cancel()


async def test_a_loss_on_one_session_is_replayed_from_its_own_mark(
    tmp_path: Path, autojump_clock: Any
) -> None:
    # Session a misses 7;2; session b meanwhile stores 7;3. The ledger's highest ExecID (7;3)
    # would skip a's loss; a's own mark (7;1) does not.
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, sessions=("a", "b"))
        st.up("dc")
        st.up("a")
        st.up("b")
        st.live("a", er("7;1", cl="x", order_id="OX"))
        st.live("b", er("7;3", cl="y", order_id="OY"))
        st.recovery.sequence_gap("a", SequenceGap(5, 6))  # a's next message reveals the hole
        body, seq = await st.u1(1)
        assert body == {21001: b"7;1"}
        for e, cl, oid in (("7;1", "x", "OX"), ("7;2", "x", "OX"), ("7;3", "y", "OY")):
            st.dc_says(er(e, cl=cl, order_id=oid))
        st.u2(seq, 3)
        await st.reports_at_least(1)
        assert sorted(delivered(st)) == ["7;1", "7;2", "7;3"]
        assert st.ledger.resume_points() == {0: ExecId(7, 3, 0)}
        nursery.cancel_scope.cancel()


async def test_retries_on_timeout_count_mismatch_and_drop_copy_loss(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, reply_timeout=30.0)
        st.up("dc")
        st.up("nr")
        st.live("nr", er("3;1"))
        st.down("nr")
        st.up("nr")
        # 1: no answer at all (the U2 was lost on the non-retransmitting drop copy).
        _, seq1 = await st.u1(1)
        # 2: asked again after the timeout; this time one report arrives but U2 says two.
        body2, seq2 = await st.u1(2)
        assert body2 == {21001: b"3;1"}
        st.dc_says(er("3;1"))
        st.u2(seq1, 0)  # a stale answer (RefSeqNum of the first U1) is ignored
        st.u2(seq2, 2)
        # 3: the mismatch asks again; now the drop copy goes down mid-replay.
        _, seq3 = await st.u1(3)
        st.dc_says(er("3;1"))
        st.down("dc")
        await trio.sleep(2)
        assert len(st.u1s()) == 3  # nothing is sent while the drop copy is down
        st.up("dc")
        _, seq4 = await st.u1(4)
        st.dc_says(er("3;1"))
        st.dc_says(er("3;2", cum="2.00"))
        st.u2(seq4, 2)
        await st.reports_at_least(1)
        report = st.reports[0]
        assert report.complete
        kinds = [o.kind for o in report.outcomes]
        assert kinds == [OutcomeKind.INCOMPLETE, OutcomeKind.COMPLETE]
        assert any(isinstance(a, ReplayCountMismatch) for a in report.alerts)
        assert delivered(st) == ["3;1", "3;2"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("reason", "kind"),
    [(1, OutcomeKind.RETRY_BACKOFF), (2, OutcomeKind.RETRY_LATER),
     (4, OutcomeKind.RETRY_LATER)],
)
async def test_retryable_rejects_ask_again_after_waiting(
    tmp_path: Path, autojump_clock: Any, reason: int, kind: OutcomeKind
) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, backoff_min=4.0, retry_later=7.0)
        st.up("dc")
        st.up("nr")
        st.live("nr", er("3;1"))
        st.down("nr")
        st.up("nr")
        _, seq = await st.u1(1)
        sent_at = trio.current_time()
        st.u3(seq, reason)
        _, seq2 = await st.u1(2)
        waited = trio.current_time() - sent_at
        assert waited >= (4.0 if reason == 1 else 7.0)
        st.u2(seq2, 0)
        await st.reports_at_least(1)
        assert [o.kind for o in st.reports[0].outcomes] == [kind, OutcomeKind.COMPLETE]
        assert st.reports[0].complete
        nursery.cancel_scope.cancel()


async def test_gap_older_than_the_lookback_is_alerted_before_asking_and_after_u3(
    tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="supervisor.recovery")
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery)
        alerts = st.recovery.alerts.subscribe()
        st.up("dc")
        st.up("nr")
        st.live("nr", er("3;1"))
        st.down("nr")
        st.now += 3 * 3600.0 + 10  # the session stays away longer than the lookback
        st.up("nr")
        _, seq = await st.u1(1)
        early = alerts.pending()
        assert len(early) == 1 and isinstance(early[0], GapTooOld)
        assert "3" in early[0].message or "lookback" in early[0].message.lower()
        st.u3(seq, 3)
        await st.reports_at_least(1)
        report = st.reports[0]
        assert not report.complete
        assert [o.kind for o in report.outcomes] == [OutcomeKind.GAP_TOO_OLD]
        assert isinstance(alerts.pending()[0], GapTooOld)
        # Logged too: a standalone supervisor has no subscriber, its log is what an operator reads.
        logged = [r.getMessage() for r in caplog.records if r.name == "supervisor.recovery"]
        assert any(early[0].message in m for m in logged)
        # The lost stretch is for REST now; the next gap is recovered again.
        assert st.recovery.open_gaps() == {}
        st.live("nr", er("3;5", cum="5.00"))
        st.down("nr")
        st.up("nr")
        body, seq = await st.u1(2)
        assert body == {21001: b"3;5"}
        st.dc_says(er("3;5", cum="5.00"))
        st.u2(seq, 1)
        await st.reports_at_least(2)
        assert st.reports[1].complete
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("reason", [5, 99])
async def test_replay_not_available_is_a_non_retryable_alert(
    tmp_path: Path, autojump_clock: Any, reason: int
) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery)
        st.up("dc")
        st.up("nr")
        st.live("nr", er("3;1"))
        st.down("nr")
        st.up("nr")
        _, seq = await st.u1(1)
        st.u3(seq, reason)
        await st.reports_at_least(1)
        report = st.reports[0]
        assert not report.complete
        assert [type(a) for a in report.alerts] == [ReplayNotAvailable]
        await trio.sleep(30)
        assert len(st.u1s()) == 1  # not asked again
        assert not st.executions.holding  # live reports flow again
        nursery.cancel_scope.cancel()


async def test_replay_merges_with_live_reports_in_execid_order_per_order(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery)
        st.up("dc")
        st.up("nr")
        st.live("nr", er("2;1", exec_type="0", status="0", cum="0.00"))
        st.down("nr")
        st.up("nr")
        # After the reconnect a newer fill arrives live before the replay of the older one.
        st.live("nr", er("2;3", cum="3.00"))
        _, seq = await st.u1(1)
        st.dc_says(er("2;1", exec_type="0", status="0", cum="0.00"))
        st.dc_says(er("2;2", cum="1.00"))
        st.dc_says(er("2;3", cum="3.00"))
        st.u2(seq, 3)
        await st.reports_at_least(1)
        assert delivered(st) == ["2;1", "2;2", "2;3"]
        order = st.executions.tracker.get("c1")
        assert order is not None and str(order.cum_qty) == "3.00"
        nursery.cancel_scope.cancel()


async def test_marks_and_gaps_survive_a_restart(tmp_path: Path, autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, save_interval=0.0)
        st.up("dc")
        st.up("nr")
        st.live("nr", er("4;1"))
        st.live("nr", er("4;2", cum="2.00"))
        assert delivered(st) == ["4;1", "4;2"]
        nursery.cancel_scope.cancel()
    st.ledger.close()
    saved = json.loads((tmp_path / "rec.json").read_text())
    assert saved["marks"] == {"nr": {"0": "4;2"}}
    async with trio.open_nursery() as nursery:
        st2 = Stage(tmp_path, nursery)
        # The process was down: a gap on every order-entry session, from the persisted mark.
        assert st2.recovery.open_gaps()["nr"][2] == "supervisor restarted"
        st2.up("dc")
        st2.up("nr")
        body, seq = await st2.u1(1)
        assert body == {21001: b"4;2"}
        st2.dc_says(er("4;2", cum="2.00"))
        st2.dc_says(er("4;3", cum="3.00"))
        st2.u2(seq, 2)
        await st2.reports_at_least(1)
        assert delivered(st2) == ["4;3"]  # 4;1 and 4;2 were delivered (acked) before
        nursery.cancel_scope.cancel()
    st2.ledger.close()


def test_an_unreadable_state_file_is_refused_with_advice(tmp_path: Path) -> None:
    (tmp_path / "rec.json").write_text("{not json")
    ledger = ExecutionLedger.open(tmp_path, "acct", now=T0)
    try:
        rec = RecoveryObserver(
            ExecutionStream(ledger, clock=lambda: T0), drop_copy="dc",
            state_path=tmp_path / "rec.json",
        )
        handles = {"dc": FakeHandle("dc", "KalshiDC"), "nr": FakeHandle("nr", "KalshiNR")}
        with pytest.raises(RecoveryStateError, match="move it aside"):
            rec.attach(handles, lambda fn: None, lambda: T0)  # type: ignore[arg-type]
    finally:
        ledger.close()


def test_attach_needs_the_drop_copy_session(tmp_path: Path) -> None:
    ledger = ExecutionLedger.open(tmp_path, "acct", now=T0)
    try:
        rec = RecoveryObserver(ExecutionStream(ledger, clock=lambda: T0), drop_copy="dc")
        with pytest.raises(Exception, match="drop-copy session 'dc'"):
            handles: Any = {"nr": FakeHandle("nr", "KalshiNR")}
            rec.attach(handles, lambda fn: None, lambda: T0)
    finally:
        ledger.close()


# ----------------------------------------------------------------------------- end to end


async def _fill_while_down(rig: Any, gw: Any) -> None:
    await rig.nr().wait_active()
    await rig.dc().wait_active()
    await rig.order_entry.new_order(MKT0, "buy", 3, 50)
    await rig.settle()
    gw.inject("drop:endpoint=KalshiNR")
    await trio.sleep(0.1)
    gw.add_liquidity(MKT0, "sell", 50, 3)


async def test_end_to_end_server_error_then_complete(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        await _fill_while_down(rig, gw)
        gw.exchange.fail_next_drop_copy()  # U3 21004=2 once
        assert await rig.settle()
        assert_exactly_once(rig)
        kinds = [o.kind for r in rig.recovery.reports.history for o in r.outcomes]
        assert OutcomeKind.RETRY_LATER in kinds


async def test_end_to_end_too_many_requests_backs_off(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    # The exchange wants 5 s between U1s, we space them 1 s: two indexes give a U3 reason 1.
    gw = rigs.gateway(exchange=ExchangeConfig(drop_copy_min_interval=5.0))
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        await _fill_while_down(rig, gw)
        assert await rig.settle()
        assert_exactly_once(rig)
        kinds = [o.kind for r in rig.recovery.reports.history for o in r.outcomes]
        assert OutcomeKind.RETRY_BACKOFF in kinds


async def test_end_to_end_key_without_replay_permission(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    gw.exchange._keys[rigs.keys["dc"].key_id].drop_copy = False
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        alerts = rig.recovery.alerts.subscribe()
        await _fill_while_down(rig, gw)
        assert await rig.settle()
        got = alerts.pending()
        assert got and all(isinstance(a, ReplayNotAvailable) for a in got)
        assert "enable drop-copy replay" in got[0].message
        # The fill that happened while NR was down is lost to FIX: only REST can tell.
        assert len(real_exec_ids(rig.received)) < len(gw.ground_truth("ACCT-1"))


async def test_end_to_end_sequence_gap_is_recovered(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        t = await rig.order_entry.new_order(MKT0, "buy", 3, 50)
        await rig.settle()
        gw.inject("garble:endpoint=KalshiNR,variant=checksum")  # the next report is lost
        gw.add_liquidity(MKT0, "sell", 50, 1)
        gw.add_liquidity(MKT0, "sell", 50, 1)  # its arrival reveals the gap
        assert await rig.settle()
        assert_exactly_once(rig)
        reasons = [r for rep in rig.recovery.reports.history for r in rep.reasons]
        assert any("sequence gap" in r for r in reasons)
        assert rig.nr().active  # recovered without reconnecting
        assert rig.order_entry.order(t.cl_ord_id).cum_qty == 2


async def test_end_to_end_supervisor_restart_recovers_what_happened_meanwhile(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    state = rigs.tmp_path / "state"
    async with running(gw):
        async with open_rig(gw, rigs.keys, state) as rig:
            await rig.nr().wait_active()
            await rig.order_entry.new_order(MKT0, "buy", 4, 50)
            assert await rig.settle()
            first = list(rig.received)
        # The supervisor is not running: our resting order trades.
        gw.add_liquidity(MKT0, "sell", 50, 4)
        async with open_rig(gw, rigs.keys, state) as rig2:
            assert await rig2.settle()
            second = list(rig2.received)
    rig2.received = first + second
    assert_exactly_once(rig2)
    assert [i.source for i in second if i.exec_id is not None] == ["dropcopy"]
