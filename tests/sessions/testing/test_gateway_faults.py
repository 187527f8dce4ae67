"""Every fault kind, injected into the simulated gateway and observed by a client built on the
session engine (under trio's autojumping MockClock, so timeouts pass in milliseconds)."""

from __future__ import annotations

import pytest
import trio

from sessions.errors import LogonRejected, TransportError
from sessions.events import (
    ApplicationMessage,
    GarbledMessage,
    HeartbeatTimeout,
    ProtocolViolation,
    SequenceGap,
    SequenceResetReceived,
    SessionEnded,
)
from sessions.driver import TestRequestTimeout
from sessions.logon import LogonOptions
from sessions.testing.client import new_order, next_app
from sessions.testing.faults import Fault, FaultKind
from sessions.testing.logon_check import ALREADY_EXISTS

K = FaultKind
SKIP_PENDING = LogonOptions(skip_pending_exec_reports=True)


async def drain(session) -> list:
    """Every remaining event of a session (it must end by itself)."""
    return [e async for e in session.events()]


def fired(gw, kind: FaultKind) -> list:
    return gw.fault_log.of_kind(kind)


async def test_drop_at_a_time(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR") as nr:
        await nr.wait_logged_on()
        start = gw.gateway.gateway_time()
        gw.inject(Fault(K.DROP, endpoint="KalshiNR", at=start + 7))
        events = await drain(nr)
        assert isinstance(events[-1], SessionEnded) and events[-1].initiated_by == "transport"
    (entry,) = fired(gw, K.DROP)
    assert entry.time == pytest.approx(start + 7) and entry.key_id == gw.key("nr").key_id
    # Fired once: the next connection is left alone.
    async with gw.connect("KalshiNR") as nr:
        await nr.wait_logged_on()
        await nr.test_request(timeout=5)


async def test_half_open_stall_keeps_the_key_busy_until_the_heartbeat_timeout(
    kalshi_gateway, autojump_clock
) -> None:
    gw = kalshi_gateway
    hb = 10
    async with gw.connect("KalshiNR", heartbeat_interval=hb) as nr:
        await nr.wait_logged_on()
        gw.inject("stall:endpoint=KalshiNR,duration=100")
        with pytest.raises(TestRequestTimeout):
            await nr.test_request(timeout=3)
        stalled_at = trio.current_time()
    # The client gave up; the gateway still holds the key (it reads nothing, sees no FIN).
    async with gw.connect("KalshiNR", heartbeat_interval=hb) as again:
        with pytest.raises(LogonRejected) as info:
            await again.wait_logged_on()
    assert info.value.text == ALREADY_EXISTS
    # The gateway's heartbeat timeout (TestRequest after 1.2 HeartBtInt, then as long again)
    # frees the key.
    await trio.sleep_until(stalled_at + 2.4 * hb + 1)
    assert not gw.gateway.is_connected(gw.key("nr").key_id)
    async with gw.connect("KalshiNR", heartbeat_interval=hb) as again:
        await again.wait_logged_on()
    assert fired(gw, K.STALL)


async def test_stop_heartbeats(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", heartbeat_interval=10) as nr:
        await nr.wait_logged_on()
        gw.inject("stop_heartbeats:endpoint=KalshiNR")
        t0 = trio.current_time()
        events = await drain(nr)
    # The client noticed the silence itself: TestRequest unanswered, then it gave up.
    assert any(isinstance(e, HeartbeatTimeout) for e in events)
    assert nr.ended is not None and nr.ended.initiated_by == "error"
    assert trio.current_time() - t0 >= 2 * 10
    details = [e.detail for e in fired(gw, K.STOP_HEARTBEATS)]
    assert details[0].startswith("no Heartbeats")
    assert any("TestRequest" in d for d in details[1:])


async def test_delay(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        gw.inject("delay:endpoint=KalshiNR,duration=3")
        t0 = trio.current_time()
        nr.send_app("D", new_order("c1", gw.markets[0], 1, 1, 30))
        await next_app(nr, [b"8"])
        assert trio.current_time() - t0 >= 3
    assert fired(gw, K.DELAY)


async def test_duplicate_is_a_too_low_sequence_number_for_the_client(
    kalshi_gateway, autojump_clock
) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        gw.inject("duplicate:endpoint=KalshiNR")
        nr.send_app("D", new_order("c1", gw.markets[0], 1, 1, 30))
        events = await drain(nr)
    # The first copy is delivered; the raw duplicate (no PossDupFlag) ends the session.
    assert any(isinstance(e, ApplicationMessage) for e in events)
    violations = [e.text for e in events if isinstance(e, ProtocolViolation)]
    assert violations and "too low" in violations[0]
    assert fired(gw, K.DUPLICATE)


async def test_skip_seq_on_nr_is_a_gap(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        expected = nr.connection.next_target_seq
        gw.inject("skip_seq:endpoint=KalshiNR,count=3")
        nr.send_app("D", new_order("c1", gw.markets[0], 1, 1, 30))
        gap = None
        while True:
            event = await nr.next_event()
            if isinstance(event, SequenceGap):
                gap = event
            if isinstance(event, ApplicationMessage):
                break
        assert gap == SequenceGap(expected, expected + 3)
    (entry,) = fired(gw, K.SKIP_SEQ)
    assert entry.detail == f"MsgSeqNum {expected}..{expected + 2} skipped"


async def test_skip_seq_on_rt_is_gap_filled(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiRT", logon=SKIP_PENDING) as rt:
        await rt.wait_logged_on()
        gw.inject("skip_seq:endpoint=KalshiRT,count=2")
        rt.send_app("D", new_order("c1", gw.markets[0], 1, 1, 30))
        reset = None
        while True:
            event = await rt.next_event()
            if isinstance(event, SequenceResetReceived):
                reset = event
            if isinstance(event, ApplicationMessage):
                break
        assert reset is not None and reset.gap_fill
        assert not event.poss_dup


async def test_garble(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        gw.inject("garble:endpoint=KalshiNR,variant=body_length")
        nr.send_app("D", new_order("c1", gw.markets[0], 1, 1, 30))
        nr.send_app("D", new_order("c2", gw.markets[0], 1, 1, 31))
        seen = []
        while True:
            event = await nr.next_event()
            seen.append(event)
            if isinstance(event, ApplicationMessage):
                break
    assert any(isinstance(e, GarbledMessage) for e in seen)
    # The garbled report was lost: the client sees the second one after a gap.
    assert any(isinstance(e, SequenceGap) for e in seen)
    assert seen[-1].message.get(11) == b"c2"
    assert fired(gw, K.GARBLE)


async def test_reject_logon(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    gw.inject("reject_logon:endpoint=KalshiNR,text=Kalshi exchange unavailable")
    async with gw.connect("KalshiNR") as nr:
        with pytest.raises(LogonRejected) as info:
            await nr.wait_logged_on()
    assert info.value.text == "Kalshi exchange unavailable"
    async with gw.connect("KalshiNR") as nr:  # only the next one
        await nr.wait_logged_on()
    assert len(fired(gw, K.REJECT_LOGON)) == 1


async def test_restart_loses_sessions_and_keeps_executions(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr, gw.connect("KalshiRT") as rt:
        await nr.wait_logged_on()
        await rt.wait_logged_on()
        nr.send_app("D", new_order("c1", gw.markets[0], 1, 2, 60))
        await next_app(nr, [b"8"])
        truth = gw.ground_truth("ACCT-1")
        gw.restart()
        for s in (nr, rt):
            events = await drain(s)
            assert events[-1].initiated_by == "transport"
    assert gw.ground_truth("ACCT-1") == truth
    await gw.gateway.wait_idle()
    assert [r.ended for r in gw.gateway.connections] == ["aborted", "aborted"]
    # Session state is gone: a reset logon works on both.
    async with gw.connect("KalshiRT", reset_seq_num_on_logon=True) as rt:
        logged = await rt.wait_logged_on()
        assert logged.next_sender_seq == 2
    async with gw.connect("KalshiNR") as nr:
        await nr.wait_logged_on()


async def test_refuse_connections(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    gw.inject("refuse_connections:duration=10")
    await trio.sleep(0)
    with pytest.raises(TransportError):  # TLS: closed during the handshake
        async with gw.connect("KalshiNR") as nr:
            await nr.wait_logged_on()
    await trio.sleep(10)
    async with gw.connect("KalshiNR") as nr:
        await nr.wait_logged_on()
    assert [r.ended for r in gw.gateway.connections][0] == "refused"
    assert fired(gw, K.REFUSE_CONNECTIONS)


async def test_slow_reader(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        gw.inject("slow_reader:endpoint=KalshiNR,duration=30")
        # The gateway's read already waiting completes as before; the next ones are slow.
        await nr.test_request(timeout=5)
        t0 = trio.current_time()
        nr.send_app("D", new_order("c1", gw.markets[0], 1, 1, 30))
        report = await next_app(nr, [b"8"])
        # Read 16 bytes per 50 ms: a ~150-byte order takes about half a second to get in.
        assert trio.current_time() - t0 >= 0.4
        assert report.get(11) == b"c1"
    assert fired(gw, K.SLOW_READER)


@pytest.mark.kalshi_gateway(faults=["drop:endpoint=KalshiNR,after=2"])
async def test_plan_fault_fires_once(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()  # message 1: the gateway's Logon
        nr.send_app("D", new_order("c1", gw.markets[0], 1, 1, 30))
        await next_app(nr, [b"8"])  # message 2, then the drop
        events = await drain(nr)
        assert events[-1].initiated_by == "transport"
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        nr.send_app("D", new_order("c2", gw.markets[0], 1, 1, 30))
        await next_app(nr, [b"8"])
        await nr.test_request(timeout=5)
    assert len(fired(gw, K.DROP)) == 1


@pytest.mark.kalshi_gateway(tls=False, record_wire=False)
async def test_direct_writes_count_every_message_and_step_aside_for_a_session_fault(
    kalshi_gateway, autojump_clock
) -> None:
    # Plain TCP without a wire log: the gateway's answers leave from the call that made them
    # (no writer task). Message counts stay exact for the session-level triggers, and an armed
    # session fault puts the connection back on the writer task, where it fires.
    gw = kalshi_gateway
    async with gw.connect("KalshiNR", logon=SKIP_PENDING) as nr:
        await nr.wait_logged_on()
        (conn,) = [c for c in gw.gateway._conns.values() if c.endpoint == "KalshiNR"]
        before = conn.stream.sent_messages
        for i in range(5):
            nr.send_app("D", new_order(f"d{i}", gw.markets[0], 1, 1, 30))
        received = 0
        while received < 5:
            if isinstance(await nr.next_event(), ApplicationMessage):
                received += 1
        assert conn.stream.sent_messages - before == 5
        expected = nr.connection.next_target_seq
        gw.inject("skip_seq:endpoint=KalshiNR,after=2")
        gaps = []
        for i in range(3):  # one at a time: each answer is a write of its own
            nr.send_app("D", new_order(f"e{i}", gw.markets[0], 1, 1, 30))
            while True:
                event = await nr.next_event()
                if isinstance(event, SequenceGap):
                    gaps.append(event)
                elif isinstance(event, ApplicationMessage):
                    break
        assert gaps == [SequenceGap(expected + 2, expected + 3)]  # after exactly 2 more
