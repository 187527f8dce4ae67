"""Drop-copy reconciliation after losses FIX resend cannot repair on an order session (REFERENCE
§6 step 2, "after a failed resend on RT"): our ResendRequest rejected, a GapFill over numbers we
asked to be resent (ExecutionReports the peer no longer had), and sequence numbers reset
mid-session. Each opens a gap on that session at once — before its next report can move its
resume point past the loss — and a drop-copy pass recovers the execution exactly once.

First on scripted handles (the test plays the drop copy, see ``test_recovery.Stage``), then end
to end on KalshiRT against the simulated gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_exactly_once import (
    MKT0,
    Child,
    RigFactory,
    assert_exactly_once,
    open_rig,
    rigs,  # noqa: F401 - fixture
    running,
)
from test_recovery import Stage, delivered, er

from sessions.events import (
    SequenceGap,
    SequenceNumbersReset,
    SequenceResetReceived,
)
from sessions.testing.faults import FaultKind
from supervisor.execid import ExecId

RT_CHILDREN = {"orders": Child("KalshiRT", "rt"), "dropcopy": Child("KalshiDC", "dc")}


async def _lost_then_replayed(st: Stage, lose: Any, reason: str) -> None:
    """rt has 4;1 live; ``lose()`` reports 4;2 lost; 4;3 then arrives live. The pass must start
    from 4;1 (the mark 4;3 would have moved it past the loss) and deliver 4;2 once."""
    st.up("dc")
    st.up("rt")
    st.live("rt", er("4;1"))
    lose()
    assert reason in st.recovery.open_gaps()["rt"][2]
    st.live("rt", er("4;3", cum="3.00"))  # after the loss: no mark yet, the pass decides
    assert st.recovery.marks("rt") == {0: ExecId(4, 1, 0)}
    body, seq = await st.u1(1)
    assert body == {21001: b"4;1"}
    for e, cum in (("4;1", "1.00"), ("4;2", "2.00"), ("4;3", "3.00")):
        st.dc_says(er(e, cum=cum))
    st.u2(seq, 3)
    await st.reports_at_least(1)
    assert st.reports[0].complete and any(reason in r for r in st.reports[0].reasons)
    assert delivered(st) == ["4;1", "4;2", "4;3"]
    assert st.recovery.open_gaps() == {} and st.recovery.marks("rt") == {0: ExecId(4, 3, 0)}


async def test_a_rejected_resend_request_opens_a_gap(tmp_path: Path, autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, sessions=("rt",))
        await _lost_then_replayed(
            st,
            lambda: st.recovery.sequence_gap("rt", SequenceGap(7, 8, resend_rejected=True)),
            "resend rejected, sequence gap 7..7",
        )
        nursery.cancel_scope.cancel()


async def test_a_gap_fill_over_requested_numbers_opens_a_gap(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, sessions=("rt",))
        await _lost_then_replayed(
            st,
            lambda: st.recovery.sequence_reset(
                "rt", SequenceResetReceived(9, True, requested_from=7)
            ),
            "resend gap-filled 7..8",
        )
        nursery.cancel_scope.cancel()


async def test_a_mid_session_reset_opens_a_gap(tmp_path: Path, autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, sessions=("rt",))
        await _lost_then_replayed(
            st,
            lambda: st.recovery.sequence_numbers_reset("rt", SequenceNumbersReset(2, 2)),
            "sequence numbers reset mid-session",
        )
        nursery.cancel_scope.cancel()


async def test_resets_that_skip_nothing_asked_for_open_no_gap(
    tmp_path: Path, autojump_clock: Any
) -> None:
    # A SequenceReset-Reset, or a GapFill nobody asked for, loses nothing we could have had
    # resent; and the drop copy's own resets are its business (count mismatch, timeouts).
    async with trio.open_nursery() as nursery:
        st = Stage(tmp_path, nursery, sessions=("rt",))
        st.up("dc")
        st.up("rt")
        st.recovery.sequence_reset("rt", SequenceResetReceived(40, False))
        st.recovery.sequence_reset("rt", SequenceResetReceived(12, True))
        st.recovery.sequence_reset("dc", SequenceResetReceived(9, True, requested_from=7))
        st.recovery.sequence_numbers_reset("dc", SequenceNumbersReset(2, 2))
        assert st.recovery.open_gaps() == {} and not st.recovery.busy
        assert not st.executions.holding
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "fault, kind, reason",
    [
        # The gateway forgets the report: our ResendRequest is answered with a GapFill.
        ("forget_sent", FaultKind.FORGET_SENT, "resend gap-filled"),
        # The report counts as past retention: our ResendRequest is rejected (Kalshi's
        # documented answer), never served.
        ("reject_resend", FaultKind.REJECT_RESEND, "resend rejected"),
    ],
)
async def test_end_to_end_rt_execution_not_resent_comes_from_the_drop_copy(
    rigs: RigFactory, autojump_clock: Any, fault: str, kind: FaultKind, reason: str  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, children=RT_CHILDREN) as rig:
        rt = rig.handle("orders")
        await rt.wait_active()
        await rig.dc().wait_active()
        t = await rig.order_entry.new_order(MKT0, "buy", 3, 50)
        assert await rig.settle()
        passes = len(rig.recovery.reports.history)
        # The next report is garbled (lost on the wire), and the gateway will not resend it.
        gw.inject("garble:endpoint=KalshiRT,variant=checksum")
        gw.inject(f"{fault}:endpoint=KalshiRT,after=1")
        gw.add_liquidity(MKT0, "sell", 50, 1)
        gw.add_liquidity(MKT0, "sell", 50, 1)  # its arrival reveals the gap
        assert await rig.settle()
        assert gw.fault_log.of_kind(FaultKind.GARBLE)
        assert gw.fault_log.of_kind(kind)
        assert_exactly_once(rig)
        new = list(rig.recovery.reports.history)[passes:]
        assert any(reason in r for rep in new for r in rep.reasons)
        assert any(rep.complete and rep.new >= 1 for rep in new)  # the lost fill came back
        sources = {i.exec_id: i.source for i in rig.received if i.exec_id is not None}
        assert "dropcopy" in sources.values()
        assert rt.active  # the session gave the gap up and went on, no reconnect
        assert rig.order_entry.order(t.cl_ord_id).cum_qty == 2
