"""Fan-out, the executions stream (exactly-once consumption, one consumer, bad reports, tracker
rebuilt after a restart, journal mode), settlement reassembly and status events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_exactly_once import (
    MKT0,
    MKT2,
    Child,
    RigFactory,
    open_rig,
    rigs,  # noqa: F401 - fixture
    running,
)

from sessions.events import ApplicationMessage
from sessions.message import FixMessage
from sessions.testing.exchange import ExchangeConfig
from supervisor.journal import JournalWriter
from supervisor.ledger import ExecutionLedger
from supervisor.observer import ChildState, StatusEvent
from supervisor.streams import (
    ConsumerBusy,
    ExecutionStream,
    Fanout,
    SettlementStream,
    StatusStream,
)

T0 = 1_900_000_000.0


def er(exec_id: str, *, cl: str = "c1", order_id: str = "O1", cum: str = "1.00",
       exec_type: str = "F") -> FixMessage:
    return FixMessage([
        (35, "8"), (37, order_id), (11, cl), (17, exec_id), (150, exec_type), (39, "1"),
        (54, "1"), (55, MKT0), (38, "10.00"), (14, cum), (151, "9.00"), (6, "0.5000"),
        (31, "0.5000"), (32, "1.00"),
    ])


# ----------------------------------------------------------------------------- fan-out


async def test_fanout_gives_every_subscriber_its_own_queue() -> None:
    f: Fanout[int] = Fanout(history=2)
    a = f.subscribe()
    b = f.subscribe(maxlen=2)
    for i in range(4):
        f.publish(i)
    assert a.pending() == [0, 1, 2, 3]
    assert b.pending() == [2, 3] and b.dropped == 2
    assert list(f.history) == [2, 3]
    late = f.subscribe()
    assert late.get_nowait() is None  # no replay of what came before
    f.publish(9)
    assert await late.get() == 9
    b.close()
    assert f.subscriber_count == 2
    got = []

    async def reader() -> None:
        async for item in a:
            got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0)
        f.publish(10)
        await trio.sleep(0)
        a.close()
    assert got == [9, 10]


# ----------------------------------------------------------------------------- executions


def stream(tmp: Path, **kw: Any) -> ExecutionStream:
    return ExecutionStream(ExecutionLedger.open(tmp, "acct", now=T0), clock=lambda: T0, **kw)


async def test_exactly_once_consumer_acks_on_next_and_is_alone(tmp_path: Path) -> None:
    s = stream(tmp_path)
    live = s.subscribe()
    s.application_message("x", ApplicationMessage(er("1;1"), 5))  # no handles: taken as live
    s.ingest([er("1;1"), er("1;2", cum="2.00")], source="dropcopy", session="dc")
    it = s.executions()
    with pytest.raises(ConsumerBusy, match="one acknowledgement pointer"):
        s.executions()
    first = await it.__anext__()
    assert str(first.exec_id) == "1;1" and first.source == "live"
    it.close()  # as if the process died while processing 1;1: it was not acknowledged
    again = s.executions()
    assert [str(i.exec_id) for i in (await again.__anext__(), await again.__anext__())] == [
        "1;1", "1;2"
    ]
    assert again.next_nowait() is None  # acknowledges 1;2
    assert s.undelivered == 0
    assert [str(i.exec_id) for i in live.pending()] == ["1;1", "1;1", "1;2"]
    s.ledger.close()


async def test_a_malformed_report_is_reported_not_delivered_and_the_rest_goes_on(
    tmp_path: Path,
) -> None:
    s = stream(tmp_path)
    problems = s.problems.subscribe()
    bad = er("not-an-exec-id")
    assert s.ingest([er("2;1"), bad, er("2;2", cum="2.00")], source="live", session="nr") == 2
    (p,) = problems.pending()
    assert p.message is bad and "ExecID" in p.reason and p.session == "nr"
    it = s.executions()
    assert [str(it.next_nowait().exec_id) for _ in range(2)] == ["2;1", "2;2"]
    assert it.next_nowait() is None
    s.ledger.close()


async def test_a_burst_goes_to_the_ledger_in_one_offer_and_one_commit(tmp_path: Path) -> None:
    s = stream(tmp_path)
    offers: list[int] = []
    real_offer = s.ledger.offer_many

    def counting_offer(msgs: Any, **kw: Any) -> int:
        msgs = list(msgs)
        offers.append(len(msgs))
        return real_offer(msgs, **kw)

    s.ledger.offer_many = counting_offer  # type: ignore[method-assign]
    heartbeat = FixMessage([(35, "0")])  # not a report: skipped
    burst = [er("5;1"), heartbeat, er("5;2", cum="2.00"), er("5;3", cum="3.00")]
    spawned: list[Any] = []
    s.attach({}, spawned.append, lambda: T0)
    s.application_messages("nr", [ApplicationMessage(m, i) for i, m in enumerate(burst, 1)])
    assert offers == [3]
    # The burst is whole: committed at once, no task spawned to do it.
    assert not s.ledger.uncommitted and spawned == []
    it = s.executions()
    assert [str(it.next_nowait().exec_id) for _ in range(3)] == ["5;1", "5;2", "5;3"]
    order = s.tracker.get("c1")
    assert order is not None and order.cum_qty == 3
    s.ledger.close()


async def test_tracker_is_rebuilt_from_the_ledger_after_a_restart(tmp_path: Path) -> None:
    s = stream(tmp_path)
    s.ingest([er("3;1"), er("3;2", cum="2.00")], source="live", session="nr")
    s.hold()
    s.ingest([er("3;3", cum="3.00")], source="live", session="nr")  # staged when it "crashes"
    s.ledger.close()
    s2 = stream(tmp_path)
    assert s2.tracker.get("c1").cum_qty == 2  # what was released before
    s2.release()
    assert s2.tracker.get("c1").cum_qty == 3  # the staged report, applied on release
    s2.ledger.close()


async def test_journal_mode_writes_first_then_acks_and_refuses_a_second_consumer(
    tmp_path: Path,
) -> None:
    journal = JournalWriter.open(tmp_path / "executions.jsonl", fsync="never")
    s = stream(tmp_path, journal=journal)
    copy = s.subscribe()
    s.ingest([er("4;1"), er("4;2", cum="2.00")], source="live", session="nr")
    lines = [json.loads(x) for x in (tmp_path / "executions.jsonl").read_text().splitlines()]
    assert [x["exec_id"] for x in lines] == ["4;1", "4;2"]
    assert lines[1]["cum_qty"] == "2.00" and lines[1]["session"] == "nr"
    assert s.undelivered == 0  # acked once journalled
    assert [str(i.exec_id) for i in copy.pending()] == ["4;1", "4;2"]
    with pytest.raises(ConsumerBusy, match="consumed by the journal"):
        s.executions()
    journal.close()
    s.ledger.close()


async def test_standalone_components_journal_every_execution(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    state = rigs.tmp_path / "state"
    async with running(gw), open_rig(gw, rigs.keys, state, consume=False, journal=True) as rig:
        await rig.nr().wait_active()
        await rig.order_entry.new_order(MKT0, "buy", 2, 60)
        t = await rig.order_entry.new_order(MKT2, "buy", 2, 50)
        assert await rig.settle()
        gw.inject("drop:endpoint=KalshiNR")
        await trio.sleep(0.1)
        gw.add_liquidity(MKT2, "sell", 50, 2)
        assert await rig.settle()
    lines = [json.loads(x) for x in (state / "executions.jsonl").read_text().splitlines()]
    journaled = [x["exec_id"] for x in lines if x["exec_id"] != "-1;-1"]
    assert sorted(journaled) == sorted(r.exec_id for r in gw.ground_truth("ACCT-1"))
    assert len(journaled) == len(set(journaled))
    assert any(x["cl_ord_id"] == t.cl_ord_id and x["source"] == "dropcopy" for x in lines)


# ----------------------------------------------------------------------------- settlement


def ums(
    report_id: str, symbol: str, last: str | None, *parties: str, total: int | None = None
) -> FixMessage:
    pairs: list[tuple[int, Any]] = [
        (35, "UMS"), (20105, report_id), (55, symbol), (715, "20260714"),
    ]
    if total is not None:
        pairs.append((20106, total))
    pairs += [(20107, "yes"), (730, "100.00")]
    if last is not None:
        pairs.append((893, last))
    pairs.append((20108, len(parties)))
    for p in parties:
        pairs += [(20109, p), (20110, 24), (704, "3.00"), (705, "0.00"), (1703, 1),
                  (1704, "3.00"), (1705, "PAYOUT"), (136, 1), (137, "0.00"), (138, "USD"),
                  (139, 4), (891, 0)]
    return FixMessage(pairs)


def test_settlement_pages_reassembled_by_symbol_once_each() -> None:
    s = SettlementStream()
    sub = s.subscribe()
    assert s.offer(ums("r1", "A", "N", "p1")) is None
    assert s.offer(ums("b1", "B", None, "q1")) is not None  # no 893: a single page
    assert s.offer(ums("r1", "A", "N", "p1")) is None  # a repeated page counts once
    done = s.offer(ums("r2", "A", "Y", "p2"))
    assert done is not None and done.complete
    assert done.report_ids == ("r1", "r2") and [p["party_id"] for p in done.parties] == ["p1", "p2"]
    assert done.parties[0]["collateral"] == [("3.00", "PAYOUT")]
    assert done.parties[0]["fees"] == [("0.00", "4")]
    assert done.result == "yes" and str(done.settlement_price) == "100.00"
    assert [x.symbol for x in sub.pending()] == ["B", "A"]
    # 20106 says how many pages: complete without a final 893=Y as well.
    assert s.offer(ums("c1", "C", "N", "x", total=2)) is None
    assert s.offer(ums("c2", "C", "N", "y", total=2)) is not None
    assert s.offer(ums("d1", "D", "N", "z")) is None
    (partial,) = s.flush()
    assert partial.symbol == "D" and not partial.complete


async def test_settlement_reports_from_the_post_trade_session(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway(exchange=ExchangeConfig(settlement_parties_per_report=1))
    children = {"orders": Child("KalshiNR", "nr"), "dropcopy": Child("KalshiDC", "dc"),
                "posttrade": Child("KalshiPT", "pt")}
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path, children=children) as rig:
        for name in children:
            await rig.handle(name).wait_active()
        sub = rig.app.settlements.subscribe()
        await rig.order_entry.new_order(MKT0, "buy", 2, 60)
        await rig.order_entry.new_order(MKT0, "buy", 1, 60, extra=[(79, 1)])  # subaccount 1
        assert await rig.settle()
        gw.settle(MKT0, "yes")
        settlement = await sub.get()
        assert settlement.symbol == MKT0 and settlement.complete and len(settlement.pages) == 2
        assert [p["party_id"] for p in settlement.parties] == ["ACCT-1", "ACCT-1/1"]
        assert [p["long_qty"] for p in settlement.parties] == ["2.00", "1.00"]


# ----------------------------------------------------------------------------- status


def test_status_stream_keeps_the_latest_per_session() -> None:
    s = StatusStream()
    sub = s.subscribe()
    s.publish(StatusEvent("orders", "KalshiNR", ChildState.STARTING, 1.0))
    s.publish(StatusEvent("orders", "KalshiNR", ChildState.UP, 2.0))
    assert s.latest["orders"].state is ChildState.UP
    assert [e.state for e in sub.pending()] == [ChildState.STARTING, ChildState.UP]


async def test_status_events_follow_the_tree(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw), open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
        sub = rig.app.status.subscribe()
        await rig.nr().wait_active()
        gw.inject("drop:endpoint=KalshiNR")
        assert await rig.settle()
        states = [e.state for e in sub.pending() if e.name == "orders"]
        assert ChildState.BACKOFF in states and states[-1] is ChildState.UP
        assert rig.app.status.latest["orders"].state is ChildState.UP


async def test_attached_stream_commits_each_burst_once_and_before_delivery(
    tmp_path: Path,
) -> None:
    s = stream(tmp_path)
    commits: list[bool] = []
    real_commit = s.ledger.commit

    def counting_commit() -> None:
        commits.append(s.ledger.uncommitted)
        real_commit()

    s.ledger.commit = counting_commit  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        s.attach({}, nursery.start_soon, lambda: T0)
        # One burst of events: the offers share one open transaction.
        for n in range(1, 4):
            s.application_message("nr", ApplicationMessage(er(f"4;{n}", cum=f"{n}.00"), n))
        assert s.ledger.uncommitted and s.undelivered == 3
        # The burst's commit task runs once the session's task waits for input.
        await trio.testing.wait_all_tasks_blocked()
        assert not s.ledger.uncommitted and commits == [True]
        # A consumer asking while a burst is still open gets it committed first.
        s.application_message("nr", ApplicationMessage(er("4;4", cum="4.00"), 4))
        it = s.executions()
        got = [it.next_nowait() for _ in range(4)]
        assert not s.ledger.uncommitted
        assert [str(i.exec_id) for i in got if i is not None] == ["4;1", "4;2", "4;3", "4;4"]
        await trio.testing.wait_all_tasks_blocked()
        assert commits[-1] is False  # the burst task found nothing left to commit
    s.ledger.close()


async def test_closed_orders_are_forgotten_on_the_prune_cadence(tmp_path: Path) -> None:
    s = ExecutionStream(
        ExecutionLedger.open(tmp_path, "acct", now=T0), clock=lambda: T0,
        prune_every=0.0, keep_closed_orders=1,
    )
    for n in range(3):  # three orders, each filled in full: closed
        filled = er(f"{n};1", cl=f"f{n}", order_id=f"O{n}", cum="10.00")
        filled.pairs = [(t, b"2" if t == 39 else b"0.00" if t == 151 else v)
                        for t, v in filled.pairs]
        s.ingest([filled], source="live", session="nr")
    s.ingest([er("7;1", cl="open", order_id="O7", exec_type="0")], source="live", session="nr")
    assert [o.cl_ord_id for o in s.tracker.orders()] == ["f2", "open"]
    it = s.executions()  # the ledger still delivers every execution, forgotten or not
    assert [str(it.next_nowait().exec_id) for _ in range(4)] == ["0;1", "1;1", "2;1", "7;1"]
    s.ledger.close()


def feed_a_log_batch(s: ExecutionStream) -> None:
    """One offer log's batch of reports (LOG_BATCH_ROWS fills of order O1), in reads of 16, as
    a session hands them over."""
    from supervisor.ledger import LOG_BATCH_ROWS

    burst = [ApplicationMessage(er(f"4;{n}", cum=f"{n}.00"), n)
             for n in range(1, LOG_BATCH_ROWS + 1)]
    for i in range(0, len(burst), 16):
        s.application_messages("nr", burst[i : i + 16])


async def test_attached_stream_writes_the_offer_log_behind_after_the_burst(
    tmp_path: Path,
) -> None:
    from supervisor.ledger import LOG_BATCH_ROWS

    s = stream(tmp_path)
    async with trio.open_nursery() as nursery:
        s.attach({}, nursery.start_soon, lambda: T0)
        feed_a_log_batch(s)
        # Durable in the offer log and deliverable; the tables are not written in the burst.
        assert s.ledger.log_rows == LOG_BATCH_ROWS and s.undelivered == LOG_BATCH_ROWS
        await trio.testing.wait_all_tasks_blocked()
        assert s.ledger.log_rows == 0
        it = s.executions()
        assert [str(it.next_nowait().exec_id) for _ in range(2)] == ["4;1", "4;2"]
    s.ledger.close()


async def test_attached_stream_writes_behind_in_steps_letting_other_tasks_run_between(
    tmp_path: Path,
) -> None:
    from supervisor.ledger import LOG_BATCH_ROWS, WRITE_BEHIND_STEP_ROWS

    s = stream(tmp_path)
    trail: list[str] = []
    real = s.ledger.write_behind_step

    def step(rows: int = WRITE_BEHIND_STEP_ROWS) -> bool:
        trail.append("step")
        return real(rows)

    s.ledger.write_behind_step = step  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        s.attach({}, nursery.start_soon, lambda: T0)
        feed_a_log_batch(s)

        async def other_task() -> None:
            while s.ledger.log_rows:
                trail.append("other")
                await trio.lowlevel.checkpoint()

        nursery.start_soon(other_task)
        await trio.testing.wait_all_tasks_blocked()
        assert s.ledger.log_rows == 0
        steps = LOG_BATCH_ROWS // WRITE_BEHIND_STEP_ROWS
        assert trail.count("step") == steps
        first, last = trail.index("step"), len(trail) - 1 - trail[::-1].index("step")
        # The other task ran between the steps, not only before or after the batch.
        # (Trio may run the two in either order within a batch: the batches strictly between
        # the first step and the last give at least one turn each.)
        assert trail[first:last].count("other") >= steps - 2
    s.ledger.close()


async def test_attached_stream_checkpoints_the_ledger_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from supervisor import ledger as ledger_module
    from supervisor.ledger import LOG_BATCH_ROWS

    monkeypatch.setattr(ledger_module, "CHECKPOINT_ROWS", LOG_BATCH_ROWS)
    s = stream(tmp_path)
    done = trio.Event()
    ran_in: list[int] = []
    real = s.ledger.checkpoint

    def checkpoint() -> int:
        ran_in.append(threading.get_ident())
        copied = real()
        trio.from_thread.run_sync(done.set)
        return copied

    s.ledger.checkpoint = checkpoint  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        s.attach({}, nursery.start_soon, lambda: T0)
        feed_a_log_batch(s)
        with trio.fail_after(10):
            await done.wait()
        assert ran_in and ran_in[0] != threading.get_ident()
        assert not s.ledger.checkpoint_due
    s.ledger.close()
