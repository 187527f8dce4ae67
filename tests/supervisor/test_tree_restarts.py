"""Restarts: backoff with jitter, restart intensity, restart types, durable sequence numbers."""

from __future__ import annotations

import random

import pytest
import trio

from sessions.testing.client import new_order
from sessions.testing.faults import FaultKind
from supervisor.backoff import Backoff
from supervisor.classify import key_busy_delay
from supervisor.config import RestartType
from supervisor.errors import RestartIntensityExceeded
from supervisor.observer import ChildState, DownKind
from supervisor.tree import Supervisor
from test_tree import Recorder, build_config, wait_state


def gaps(sup: Supervisor, name: str) -> list[float]:
    """Seconds from each BACKOFF to the STARTING that follows it."""
    out: list[float] = []
    backoff_at: float | None = None
    for event in sup.history:
        if event.name != name:
            continue
        if event.state is ChildState.BACKOFF:
            backoff_at = event.time
        elif event.state is ChildState.STARTING and backoff_at is not None:
            out.append(event.time - backoff_at)
            backoff_at = None
    return out


async def test_restarts_after_a_drop_with_exponential_backoff_and_jitter(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    seed = 42
    config = build_config(
        gw, tmp_path, {"orders": ("KalshiNR", "nr")},
        overrides={"orders": {"heartbeat_interval": 5}},
        backoff_min=2.0, backoff_max=30.0, backoff_multiplier=2.0, backoff_jitter=0.5,
        restart_intensity=100, restart_period=60.0,
    )
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock, rng=random.Random(seed)) as sup:
        await wait_state(sup, "orders", ChildState.UP)
        mark = len(sup.history)
        # The connection is cut after two more messages; then the gateway refuses connections
        # for a while, so several attempts in a row fail.
        gw.inject("refuse_connections:endpoint=KalshiNR,duration=45")
        gw.inject("drop:endpoint=KalshiNR,after=2")
        orders = sup.handle("orders")
        orders.send_app("D", new_order("a", gw.markets[0], 1, 1, 60))
        await wait_state(sup, "orders", ChildState.UP, since=mark)

    # The schedule the supervisor must have followed, from the same seed.
    rng = random.Random(seed)
    b = Backoff(2.0, 30.0, 2.0, 0.5)
    observed = gaps(sup, "orders")
    expected = [max(key_busy_delay(5), b.delay(0, rng))]
    expected += [b.delay(i, rng) for i in range(1, len(observed))]
    assert observed == pytest.approx(expected, abs=1e-6)
    assert len(observed) >= 4  # several refused attempts, growing delays
    assert observed[0] >= 2 * 5  # after an unclean drop: at least 2×HeartBtInt
    assert all(later > earlier for earlier, later in zip(observed[1:], observed[2:]))
    starts = [e.attempt for e in sup.history[mark:] if e.state is ChildState.STARTING]
    assert starts == list(range(1, len(starts) + 1))
    assert sup.status()["orders"].restarts == len(observed)
    # Observers saw the unplanned drop (logged on) and each failed attempt.
    unplanned = [d for d in rec.downs if d.kind is DownKind.UNPLANNED]
    assert unplanned[0].was_logged_on and unplanned[0].ended.initiated_by == "transport"
    assert all(not d.was_logged_on for d in unplanned[1:])
    assert len(unplanned) == len(observed)


async def test_a_stall_that_delivers_stale_messages_is_a_retry_not_a_stop(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    # The gateway neither reads nor writes for 65 s. Its Heartbeat, due 30 s in, waits out
    # the stall and arrives 35 s old: beyond the 30 s SendingTime tolerance, before our own
    # TestRequest times out (36 + 36 s). Clocks agreed at Logon, so this is a stalled
    # connection, not a clock that is off: log on again, do not stop the session for good.
    gw = kalshi_gateway
    config = build_config(
        gw, tmp_path, {"orders": ("KalshiNR", "nr")},
        overrides={"orders": {"heartbeat_interval": 30}},
        backoff_min=1.0, backoff_jitter=0.0,
    )
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
        await wait_state(sup, "orders", ChildState.UP)
        mark = len(sup.history)
        gw.inject("stall:endpoint=KalshiNR,duration=65")
        with trio.fail_after(600):  # a stopped child would never come back up
            down = await wait_state(sup, "orders", ChildState.BACKOFF, since=mark)
            up = await wait_state(sup, "orders", ChildState.UP, since=mark)
        assert sup.status()["orders"].state is ChildState.UP
    assert "SendingTime" in down.detail and "stalled" in down.detail
    assert up.time - down.time >= 2 * 30  # Kalshi may still hold the key: 2×HeartBtInt
    (stalled,) = [d for d in rec.downs if d.kind is DownKind.UNPLANNED]
    assert stalled.was_logged_on
    assert gw.fault_log.of_kind(FaultKind.STALL)


async def test_exceeding_the_restart_intensity_escalates(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    config = build_config(
        gw, tmp_path, {"dc": ("KalshiDC", "dc"), "orders": ("KalshiNR", "nr")},
        overrides={"orders": {"heartbeat_interval": 5}},
        backoff_min=1.0, backoff_max=4.0, backoff_jitter=0.0,
        restart_intensity=3, restart_period=60.0,
    )
    rec = Recorder()
    with pytest.raises(RestartIntensityExceeded) as info:
        async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
            await wait_state(sup, "orders", ChildState.UP)
            gw.inject("refuse_connections:endpoint=KalshiNR,duration=100000")
            gw.inject("drop:endpoint=KalshiNR")
            await trio.sleep_forever()  # cancelled when the supervisor gives up
    assert info.value.child == "orders" and info.value.count == 4
    assert "restart_intensity" in str(info.value)
    attempts = len([r for r in gw.gateway.connections if r.endpoint == "KalshiNR"])
    # It does not spin: nothing more is attempted, however long we wait.
    await trio.sleep(3600)
    assert len([r for r in gw.gateway.connections if r.endpoint == "KalshiNR"]) == attempts
    assert attempts == 4  # the first connection and three restarts; the fourth is refused
    # The healthy session was logged out gracefully on the way down.
    assert (rec.downs[-1].name, rec.downs[-1].kind) == ("dc", DownKind.SHUTDOWN)
    assert rec.downs[-1].ended.initiated_by == "local" and rec.downs[-1].ended.clean
    assert sup.status()["dc"].state is ChildState.SHUTDOWN


async def test_planned_ends_do_not_count_and_transient_children_stay_down(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    config = build_config(
        gw, tmp_path, {"orders": ("KalshiNR", "nr"), "rfq": ("KalshiRFQ", "rfq")},
        restart={"orders": RestartType.PERMANENT, "rfq": RestartType.TRANSIENT},
        restart_intensity=0,  # any counted restart would make the supervisor give up
    )
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
        await sup.wait_started()
        mark = len(sup.history)
        # A component ends the sessions itself (a normal end).
        await sup.handle("orders").logout("done for now")
        await sup.handle("rfq").logout()
        await wait_state(sup, "rfq", ChildState.STOPPED, since=mark)
        await wait_state(sup, "orders", ChildState.UP, since=mark)  # permanent: back up
        await trio.sleep(600)
        assert sup.status()["rfq"].state is ChildState.STOPPED
        assert sup.status()["rfq"].error is None
        assert not sup.handle("rfq").active
        with pytest.raises(Exception, match="will not log on again"):
            await sup.handle("rfq").wait_active()
    assert sup.failure is None
    requested = [(d.name, d.was_logged_on) for d in rec.downs if d.kind is DownKind.REQUESTED]
    assert sorted(requested) == [("orders", True), ("rfq", True)]
    rfq_key = config[0].sessions["rfq"].key_id
    assert len([r for r in gw.gateway.connections if r.key_id == rfq_key]) == 1
    # The Logout text a component gave went to the gateway.
    await gw.gateway.wait_idle()
    orders_key = config[0].sessions["orders"].key_id
    first = next(r for r in gw.gateway.connections if r.key_id == orders_key)
    assert first.ended == "peer" and first.text == "done for now"


async def test_kalshirt_keeps_its_sequence_numbers_across_supervisor_restarts(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    config = build_config(gw, tmp_path, {"rt": ("KalshiRT", "rt")})
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
        await wait_state(sup, "rt", ChildState.UP)
        for i in range(3):
            sup.handle("rt").send_app("D", new_order(f"rt-{i}", gw.markets[0], 1, 1, 60))
        for _ in range(3):
            await rec.app_receive.receive()
    first = rec.ups[0][1]
    assert not first.reset_seq_num
    # A new supervisor (a process restart) opens the same SqliteStore and continues.
    rec2 = Recorder()
    async with Supervisor(config, observers=[rec2], clock=gw.clock) as sup:
        await wait_state(sup, "rt", ChildState.UP)
    again = rec2.ups[0][1]
    assert not again.reset_seq_num
    assert again.next_sender_seq > first.next_sender_seq + 3
    assert again.next_target_seq > first.next_target_seq + 3


async def test_a_logon_refused_for_its_sequence_numbers_is_retried_with_a_reset(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    config = build_config(gw, tmp_path, {"rt": ("KalshiRT", "rt")}, restart_intensity=0)
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
        await wait_state(sup, "rt", ChildState.UP)
        for i in range(3):
            sup.handle("rt").send_app("D", new_order(f"rt-{i}", gw.markets[0], 1, 1, 60))
        for _ in range(3):
            await rec.app_receive.receive()
    # The client's store lost its numbers (restored from an old backup, say): our next Logon
    # carries a MsgSeqNum lower than Kalshi expects.
    from sessions.driver import open_session_store

    store = open_session_store(config[0].sessions["rt"], gw.clock())
    store.reset(gw.clock())
    store.close()
    rec2 = Recorder()
    async with Supervisor(config, observers=[rec2], clock=gw.clock) as sup:
        up = await wait_state(
            sup, "rt", ChildState.UP, where=lambda e: "ResetSeqNumFlag=Y" in e.detail
        )
    assert sup.failure is None  # the fallback is not counted
    # The gateway answered our Logon with a Logout alone, as FIX's test case 1B has it: the
    # attempt never logged on, observers saw it refused for its numbers, then the reset
    # session_up.
    refused = rec2.downs[0]
    assert refused.kind is DownKind.UNPLANNED and not refused.was_logged_on
    assert "MsgSeqNum too low" in str(refused.error)
    assert [logged_on.reset_seq_num for _, logged_on in rec2.ups] == [True]
    assert "ResetSeqNumFlag=Y" in up.detail
    assert len(gw.gateway.connections) == 3  # first run; refused continuity; the reset
