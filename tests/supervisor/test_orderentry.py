"""OrderEntry through the Supervisor against the simulated gateway: ClOrdIDs, the session-down
rule, the own-order tracker, cancel/replace, mass cancel, order groups, business rejects, and
the ambiguity flow (EXCHANGE_UNAVAILABLE and in-flight requests) — never two orders for one
request."""

from __future__ import annotations

import uuid
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from test_exactly_once import (
    MKT0,
    MKT2,
    Child,
    RigFactory,
    assert_exactly_once,
    assert_one_order_per_request,
    open_rig,
    rigs,  # noqa: F401 - fixture
    running,
)

from sessions.message import Value, wire_pairs
from sessions.testing.faults import FaultKind
from supervisor import orderentry as orderentry_module
from supervisor.orderentry import (
    AmbiguityResolved,
    OrderEntry,
    RequestRefused,
    RequestRejected,
)
from supervisor.orders import DuplicateRequestError, OrderTracker, UnknownOrderError
from supervisor.observer import SessionNotActive
from supervisor.ratelimit import RateLimiter

def resolutions(rig: Any, cl: str) -> list[AmbiguityResolved]:
    return [e for e in rig.events if isinstance(e, AmbiguityResolved) and e.cl_ord_id == cl]


class RecordingSession:
    """A session handle that records what it is asked to send (no gateway behind it)."""

    def __init__(self, name: str, *, active: bool = True, listener: bool = False) -> None:
        self.name = name
        self.active = active
        self.config = SimpleNamespace(
            profile=SimpleNamespace(order_entry=True, name="KalshiNR"),
            logon=SimpleNamespace(listener_session=listener),
        )
        self.sent: list[tuple[str, list[tuple[int, bytes]]]] = []

    def send_app(self, msg_type: str, body: list[tuple[int, bytes]]) -> int:
        self.sent.append((msg_type, list(body)))
        return len(self.sent)


def recording_entry(*sessions: RecordingSession) -> OrderEntry:
    oe = OrderEntry(SimpleNamespace(tracker=OrderTracker()),  # type: ignore[arg-type]
                    limiter=RateLimiter("Prestige"))
    oe.attach({s.name: s for s in sessions}, lambda task: None, lambda: 0.0)  # type: ignore[misc]
    return oe


async def wait_for(predicate: Any, limit: float = 600.0, rig: Any = None) -> None:
    deadline = trio.current_time() + limit
    while not predicate():
        if trio.current_time() > deadline:
            detail = ""
            if rig is not None:
                detail = (
                    f": events {rig.events}, gaps {rig.recovery.open_gaps()}, reports "
                    f"{list(rig.recovery.reports.history)}, ambiguous "
                    f"{rig.order_entry.tracker.ambiguous()}, status {rig.supervisor.status()}"
                )
            raise AssertionError(f"condition not met within {limit} s{detail}")
        await trio.sleep(0.5)


async def test_cl_ord_ids_fresh_supplied_and_never_reused(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        t = await oe.new_order(MKT0, "buy", 1, 60)  # fills at once: the order is closed
        assert uuid.UUID(t.cl_ord_id).version == 4
        mine = await oe.new_order(MKT0, "buy", 1, 45, cl_ord_id="my-id:1")
        assert mine.cl_ord_id == "my-id:1" and mine.msg_type == "D" and mine.seq_num > 0
        await rig.settle()
        for reused in (t.cl_ord_id, "my-id:1"):
            with pytest.raises(DuplicateRequestError, match="never reused"):
                await oe.new_order(MKT0, "buy", 1, 45, cl_ord_id=reused)
        with pytest.raises(ValueError, match="not valid for Kalshi"):
            await oe.new_order(MKT0, "buy", 1, 45, cl_ord_id="has space")
        with pytest.raises(DuplicateRequestError):
            await oe.cancel("my-id:1", cl_ord_id=t.cl_ord_id)  # a cancel may not reuse it either
        assert_one_order_per_request(rig)


async def test_new_order_renders_every_field_as_the_generic_rendering_would() -> None:
    session = RecordingSession("orders")
    oe = recording_entry(session)
    extra: list[tuple[int | str, Value]] = [(21001, "x"), ("9999", 5), (20010, True)]
    ticket = await oe.new_order(
        MKT0, "sell", Decimal("2.50"), Decimal("0.4100"), tif="1", cl_ord_id="mine-1",
        exchange_index=2, order_group="g-7", extra=iter(extra),
    )
    assert (ticket.cl_ord_id, ticket.session, ticket.msg_type, ticket.seq_num) == (
        "mine-1", "orders", "D", 1)
    expected = wire_pairs([
        (11, "mine-1"), (38, "2.50"), (40, "2"), (44, "0.4100"), (54, "2"), (55, MKT0),
        (59, "1"), (526, "g-7"), (100, 2), *extra,
    ])
    assert session.sent == [("D", expected)]
    assert expected[-3:] == [(21001, b"x"), (9999, b"5"), (20010, b"Y")]
    state = oe.order("mine-1")
    assert state is not None and state.in_flight == ("mine-1",)
    assert (state.symbol, state.side, state.order_qty, state.price) == (
        MKT0, "2", Decimal("2.50"), Decimal("0.4100"))
    assert oe.limiter is not None and oe.limiter.bucket(2).tokens < oe.limiter.capacity


async def test_a_field_that_cannot_be_rendered_sends_nothing_and_frees_the_cl_ord_id() -> None:
    session = RecordingSession("orders")
    oe = recording_entry(session)
    with pytest.raises(UnicodeEncodeError):
        await oe.new_order("KXHIGHNY-26JUL14-B85\u00e9", "buy", 1, 5, cl_ord_id="again")
    with pytest.raises(TypeError, match="cannot put a list"):
        await oe.new_order(MKT0, "buy", 1, 5, cl_ord_id="again", extra=[(58, ["?"])])
    assert session.sent == [] and oe.order("again") is None
    await oe.new_order(MKT0, "buy", 1, 5, cl_ord_id="again")
    assert [mt for mt, _ in session.sent] == ["D"]


async def test_orders_go_to_the_first_logged_on_session_that_may_trade() -> None:
    listener = RecordingSession("listener", listener=True)
    down = RecordingSession("down", active=False)
    up = RecordingSession("up")
    oe = recording_entry(listener, down, up)
    assert (await oe.new_order(MKT0, "buy", 1, 5)).session == "up"
    assert [len(s.sent) for s in (listener, down, up)] == [0, 0, 1]
    up.active = False
    with pytest.raises(SessionNotActive, match=r"session is logged on \(down, up\)"):
        await oe.new_order(MKT0, "buy", 1, 5)
    assert len(up.sent) == 1


async def test_requests_while_the_session_is_down_raise_and_send_nothing(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    gw.inject("refuse_connections:endpoint=KalshiNR,duration=120")
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        await trio.sleep(1)
        assert not rig.nr().active
        with pytest.raises(SessionNotActive, match="never queued"):
            await rig.order_entry.new_order(MKT0, "buy", 1, 45, cl_ord_id="while-down")
        assert rig.order_entry.order("while-down") is None
        await rig.nr().wait_active()
        await trio.sleep(5)
        assert all(r.cl_ord_id != "while-down" for r in gw.ground_truth("ACCT-1"))
        # The ClOrdID was never used: the application may send the request now.
        t = await rig.order_entry.new_order(MKT0, "buy", 1, 45, cl_ord_id="while-down")
        assert t.cl_ord_id == "while-down"


async def test_tracker_follows_fills_replace_and_cancel(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        t = await oe.new_order(MKT2, "buy", 5, 50)
        await rig.settle()
        gw.add_liquidity(MKT2, "sell", 49, 2)  # trades at our price, 50
        await rig.settle()
        state = oe.order(t.cl_ord_id)
        assert state.cum_qty == 2 and state.ord_status == "1" and state.is_open
        r = await oe.replace(t.cl_ord_id, qty=7, price=52)
        await rig.settle()
        state = oe.order(t.cl_ord_id)
        assert state.cl_ord_id == r.cl_ord_id and state.price == 52  # cents (no UseDollars)
        assert state.order_qty == 7 and state.cum_qty == 2
        gw.add_liquidity(MKT2, "sell", 51, 1)
        await rig.settle()
        state = oe.order(r.cl_ord_id)
        assert state.cum_qty == 3
        assert state.avg_px == (2 * 50 + 52) / Decimal(3)  # from the fills, not rounded
        c = await oe.cancel(t.cl_ord_id)  # any ClOrdID of the chain names the order
        await rig.settle()
        state = oe.order(c.cl_ord_id)
        assert state.ord_status == "4" and not state.is_open
        assert oe.open_orders() == []
        assert_exactly_once(rig)
        with pytest.raises(UnknownOrderError):
            await oe.cancel("no-such-order")


async def test_mass_cancel_and_its_report(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        for price in (44, 45, 46):
            await oe.new_order(MKT0, "buy", 1, price)
        await rig.settle()
        assert len(oe.open_orders()) == 3
        result = await oe.mass_cancel()
        assert result.accepted and result.answered and result.session == "orders"
        await rig.settle()
        assert oe.open_orders() == []
        assert gw.exchange.open_orders("ACCT-1") == []


async def test_order_groups_create_trigger_and_refusal(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        group = await oe.order_group("create", limit=100)
        assert group.limit == 100 and uuid.UUID(group.group_id)
        t = await oe.new_order(MKT0, "buy", 2, 45, order_group=group.group_id)
        await rig.settle()
        assert oe.order(t.cl_ord_id).is_open
        await oe.order_group("trigger", group_id=group.group_id)
        await rig.settle()
        state = oe.order(t.cl_ord_id)
        assert not state.is_open and state.text == "ORDER_GROUP_CANCEL"
        with pytest.raises(RequestRefused, match="ORDER_GROUP_NOT_FOUND"):
            await oe.order_group("reset", group_id=str(uuid.uuid4()))
        with pytest.raises(ValueError):
            await oe.order_group("create", group_id=group.group_id, limit=1)


async def test_business_rejects_close_the_request_without_an_execution(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        oe = rig.order_entry
        oe.limiter = None  # no client-side limiting: provoke the exchange's 380=8
        await rig.nr().wait_active()
        sent = [await oe.new_order(MKT0, "buy", 1, 45) for _ in range(250)]
        await rig.settle()
        refused = [e for e in rig.events if isinstance(e, RequestRejected)]
        assert refused and all(e.reason == 8 and e.msg_type == "D" for e in refused)
        for e in refused:
            state = oe.order(e.cl_ord_id)
            assert state.ord_status == "8" and not state.is_open
        accepted = {r.cl_ord_id for r in gw.ground_truth("ACCT-1")}
        assert accepted | {e.cl_ord_id for e in refused} == {t.cl_ord_id for t in sent}
        assert len(oe.open_orders()) == len(accepted)


async def test_requests_of_finished_orders_are_forgotten_open_ones_kept(
    rigs: RigFactory, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    # A daemon that runs for weeks must not keep every request it sent.
    monkeypatch.setattr(orderentry_module, "_SWEEP_MIN", 8)
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        oe = rig.order_entry
        await rig.nr().wait_active()
        done = []
        for _ in range(25):
            t = await oe.new_order(MKT0, "buy", 1, 45)
            await rig.settle()
            await oe.cancel(t.cl_ord_id)
            await rig.settle()
            done.append(t.cl_ord_id)
        # 50 requests sent, all finished: the sweeps kept the table small on the way.
        assert len(oe._requests) < 20
        resting = await oe.new_order(MKT0, "buy", 1, 44)
        await rig.settle()
        oe._sweep_requests()
        assert set(oe._requests) == {resting.cl_ord_id}
        assert all(not oe.order(cl).is_open for cl in done)  # the tracker still has them
        with pytest.raises(DuplicateRequestError):
            await oe.new_order(MKT0, "buy", 1, 45, cl_ord_id=done[0])
        # A connection's MsgSeqNums die with it: the next one numbers from 1 again.
        assert any(name == "orders" for name, _ in oe._by_seq)
        gw.inject("drop:endpoint=KalshiNR")
        await wait_for(lambda: not rig.nr().active)
        assert not any(name == "orders" for name, _ in oe._by_seq)


@pytest.mark.parametrize("retry", [True, False])
async def test_exchange_unavailable_not_applied(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        gw.exchange.fail_next_order("EXCHANGE_UNAVAILABLE", applied=False)
        t = await rig.order_entry.new_order(MKT0, "buy", 2, 45, retry_ambiguous=retry)
        await wait_for(lambda: resolutions(rig, t.cl_ord_id), rig=rig)
        await rig.settle()
        (res,) = resolutions(rig, t.cl_ord_id)
        state = rig.order_entry.order(t.cl_ord_id)
        if retry:
            assert res.outcome == "resent"
            assert state.ord_status == "0" and state.is_open  # the retry placed it, once
            assert [r.cl_ord_id for r in gw.ground_truth("ACCT-1")] == [t.cl_ord_id]
        else:
            assert res.outcome == "not_received" and "retry_ambiguous is off" in res.reason
            assert not state.is_open and state.text == "NOT_RECEIVED_BY_EXCHANGE"
            assert gw.ground_truth("ACCT-1") == []
        assert_one_order_per_request(rig)


@pytest.mark.parametrize("retry", [True, False])
async def test_exchange_unavailable_after_acceptance_is_known_not_resent(
    rigs: RigFactory, retry: bool, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        gw.exchange.fail_next_order("EXCHANGE_UNAVAILABLE", applied=True)
        t = await rig.order_entry.new_order(MKT0, "buy", 2, 60, retry_ambiguous=retry)  # fills
        await wait_for(lambda: resolutions(rig, t.cl_ord_id), rig=rig)
        await rig.settle()
        (res,) = resolutions(rig, t.cl_ord_id)
        assert res.outcome == "known"
        state = rig.order_entry.order(t.cl_ord_id)
        assert state.cum_qty == 2 and not state.is_open and state.ambiguous is None
        # The order filled and closed: resending the ClOrdID would have created a second one.
        assert_one_order_per_request(rig)
        assert_exactly_once(rig)


async def test_in_flight_at_a_disconnect_known_when_it_arrived(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, retry_ambiguous=True) as rig:
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        # The answers (pending new, then the fill) are lost ...
        gw.inject("garble:endpoint=KalshiNR,variant=truncated,count=2")
        t = await rig.order_entry.new_order(MKT0, "buy", 1, 60)
        await trio.sleep(0.5)
        assert rig.order_entry.order(t.cl_ord_id).in_flight == (t.cl_ord_id,)
        gw.inject("drop:endpoint=KalshiNR")  # ... and the connection with it
        await wait_for(lambda: resolutions(rig, t.cl_ord_id), rig=rig)
        await rig.settle()
        (res,) = resolutions(rig, t.cl_ord_id)
        assert res.outcome == "known"  # the replay has its fill: nothing is resent
        assert len({r.order_id for r in gw.ground_truth("ACCT-1")}) == 1
        assert_exactly_once(rig)


async def order_that_never_lands(rig: Any, gw: Any) -> Any:
    """A new order sent while the gateway has stopped reading the KalshiNR connection for good
    (an endless stall drains and discards what comes): it never reaches the exchange."""
    gw.inject("stall:endpoint=KalshiNR")
    await wait_for(lambda: gw.fault_log.of_kind(FaultKind.STALL))
    # A read the gateway had already begun completes normally: let a harmless message (a reset
    # of an unknown order group) take it, so the order meets the stall.
    rig.nr().send_app("UOG", [(20131, 2), (20130, str(uuid.uuid4()))])
    await trio.sleep(0.1)
    return await rig.order_entry.new_order(MKT0, "buy", 1, 45)


@pytest.mark.parametrize("explicit_index", [False, True])
async def test_an_order_on_a_shard_the_replay_did_not_cover_is_not_resent(
    rigs: RigFactory, autojump_clock: Any, explicit_index: bool  # noqa: F811
) -> None:
    # The supervisor replays index 0 only (nothing on index 2 seen yet). An order for a
    # crypto market (index 2, auto-routed by its symbol or named in ExDestination) loses its
    # answers and its connection: a complete replay of index 0 says nothing about it, so only a
    # pass that covers its shard may decide — resending on the index-0 pass made two orders.
    gw = rigs.gateway()
    async with running(gw), open_rig(
        gw, rigs.keys, rigs.tmp_path, retry_ambiguous=True, indexes=(0,)
    ) as rig:
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        gw.inject("garble:endpoint=KalshiNR,variant=truncated,count=2")
        t = await rig.order_entry.new_order(
            MKT2, "buy", 1, 60, exchange_index=2 if explicit_index else None
        )
        await trio.sleep(0.5)
        assert rig.order_entry.order(t.cl_ord_id).in_flight == (t.cl_ord_id,)
        gw.inject("drop:endpoint=KalshiNR")
        await wait_for(lambda: resolutions(rig, t.cl_ord_id), rig=rig)
        await rig.settle()
        (res,) = resolutions(rig, t.cl_ord_id)
        assert res.outcome == "known"  # the index-2 replay has it: nothing is resent
        assert [r.cl_ord_id for r in gw.ground_truth("ACCT-1")].count(t.cl_ord_id) >= 1
        assert len({r.order_id for r in gw.ground_truth("ACCT-1")}) == 1
        assert_one_order_per_request(rig)
        assert_exactly_once(rig)


async def test_in_flight_at_a_disconnect_never_arrived_is_resent_once(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    children = {"orders": Child("KalshiNR", "nr", heartbeat=10),
                "dropcopy": Child("KalshiDC", "dc")}
    async with running(gw), open_rig(
        gw, rigs.keys, rigs.tmp_path, children=children, retry_ambiguous=True
    ) as rig:
        await rig.nr().wait_active()
        await rig.dc().wait_active()
        # Our side times out the heartbeats and reconnects.
        t = await order_that_never_lands(rig, gw)
        await wait_for(lambda: resolutions(rig, t.cl_ord_id), rig=rig)
        await rig.settle()
        assert [r.outcome for r in resolutions(rig, t.cl_ord_id)] == ["resent"]
        truth = gw.ground_truth("ACCT-1")
        assert [r.cl_ord_id for r in truth] == [t.cl_ord_id]  # placed once, by the retry
        assert rig.order_entry.order(t.cl_ord_id).is_open
        assert_one_order_per_request(rig)


async def test_without_reconciliation_ambiguity_is_reported_unresolved(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    children = {"orders": Child("KalshiNR", "nr")}  # no drop-copy session: nothing to replay
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, children=children) as rig:
        assert rig.recovery is None
        await rig.nr().wait_active()
        gw.exchange.fail_next_order("EXCHANGE_UNAVAILABLE", applied=False)
        t = await rig.order_entry.new_order(MKT0, "buy", 1, 45, retry_ambiguous=True)
        await wait_for(lambda: resolutions(rig, t.cl_ord_id))
        (res,) = resolutions(rig, t.cl_ord_id)
        assert res.outcome == "unresolved" and "REST" in res.reason
        assert rig.order_entry.order(t.cl_ord_id).ambiguous == "EXCHANGE_UNAVAILABLE"
        assert gw.ground_truth("ACCT-1") == []  # and nothing was resent
