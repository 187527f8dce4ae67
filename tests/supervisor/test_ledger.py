"""ExecutionLedger: de-duplication, delivery order, hold/release, acks, resume points, pruning,
durability across reopen, and the exactly-once property over live + drop-copy interleavings."""

from __future__ import annotations

import sqlite3
import tempfile
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_orders import canon, dc_copy, er, interleave, is_real, order_flows

from sessions.errors import StoreError
from sessions.message import FixMessage
from supervisor.execid import ExecId
from supervisor.ledger import (
    DEFAULT_KEEP_S,
    DeliveredExecution,
    ExecutionLedger,
    LedgerError,
    ledger_file_name,
)
from supervisor.orders import OrderTracker, ReportError

T0 = 1_900_000_000.0


def open_ledger(directory: Path | str, account: str = "acct-1") -> ExecutionLedger:
    return ExecutionLedger.open(directory, account, now=T0)


def drain(ledger: ExecutionLedger) -> list[DeliveredExecution]:
    """Everything released, acked as it is taken (what an exactly-once consumer does)."""
    out = []
    cursor = ledger.cursor()
    while (item := cursor.next()) is not None:
        out.append(item)
    return out


def keys(items: list[DeliveredExecution]) -> list[str]:
    return [i.key for i in items]


def fill(exec_id: str, cl: str = "a", order_id: str = "O1", cum: str = "1.00") -> FixMessage:
    return er(exec_id, "F", "1", cl=cl, order_id=order_id, cum=cum, last_px="50", last_qty="1.00")


@pytest.fixture
def ledger(tmp_path: Path) -> ExecutionLedger:
    with open_ledger(tmp_path) as lg:
        yield lg


# ----------------------------------------------------------------------------- files


def test_file_per_account_and_reopen(tmp_path: Path) -> None:
    lg = open_ledger(tmp_path, "acct/1")
    assert Path(lg.path).name == ledger_file_name("acct/1")
    assert "/" not in ledger_file_name("acct/1") and ledger_file_name("a.b") != ledger_file_name("a_b")
    assert lg.offer(fill("1;1"), source="live", now=T0)
    lg.close()
    lg.close()  # idempotent
    with pytest.raises(LedgerError, match="closed"):
        lg.offer(fill("1;2"), source="live", now=T0)
    with open_ledger(tmp_path, "acct/1") as again:
        assert again.last_exec_id(0) == ExecId(1, 1)
        assert again.offer(fill("1;1"), source="dropcopy", now=T0) is False


def test_a_new_file_has_small_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    # Each commit writes every page it touched: 1 KiB pages for new files. A file made with
    # SQLite's default 4 KiB pages (earlier versions) opens and works as it is.
    with open_ledger(tmp_path / "new", "acct") as lg:
        assert lg.offer(fill("1;1"), source="live", now=T0)
        new_path = lg.path
    with closing(sqlite3.connect(new_path)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 1024
    # An empty database made with 4 KiB pages, as an earlier version's file is.
    (tmp_path / "old").mkdir()
    old_path = str(tmp_path / "old" / ledger_file_name("acct"))
    with closing(sqlite3.connect(old_path)) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = WAL")
    with open_ledger(tmp_path / "old", "acct") as lg:
        assert lg.offer(fill("2;1"), source="live", now=T0)
    with open_ledger(tmp_path / "old", "acct") as lg:
        assert lg.offer(fill("2;2", cum="2.00"), source="live", now=T0)
        assert lg.last_exec_id(0) == ExecId(2, 2)
    with closing(sqlite3.connect(old_path)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_second_open_in_process_is_refused(ledger: ExecutionLedger, tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="already open"):
        open_ledger(tmp_path)


def test_foreign_and_mismatched_files_are_refused(tmp_path: Path) -> None:
    name = ledger_file_name("acct-1")
    conn = sqlite3.connect(tmp_path / name)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="not a kalshi-fix execution ledger"):
        open_ledger(tmp_path)
    other = tmp_path / "other"
    open_ledger(other, "acct-2").close()
    (other / ledger_file_name("acct-2")).rename(other / ledger_file_name("acct-3"))
    with pytest.raises(LedgerError, match="belongs to account 'acct-2'"):
        open_ledger(other, "acct-3")
    assert issubclass(LedgerError, StoreError)
    with pytest.raises(LedgerError, match="non-empty"):
        open_ledger(tmp_path, "")


def test_unwritable_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="cannot create the ledger directory"):
        open_ledger(blocker / "sub")


# ----------------------------------------------------------------------------- de-duplication


def test_execution_deduplicated_by_exec_id_across_sources(ledger: ExecutionLedger) -> None:
    assert ledger.offer(fill("1;1"), source="live", session="KalshiNR", now=T0) is True
    assert ledger.offer(fill("1;1"), source="live", now=T0) is False
    assert ledger.offer(dc_copy(fill("1;1"), 5), source="dropcopy", now=T0) is False
    # Same numbers on another exchange index are another execution.
    assert ledger.offer(fill("1;1;1", order_id="O2"), source="dropcopy", now=T0) is True
    items = drain(ledger)
    assert keys(items) == ["1;1", "1;1;1"]
    assert items[0].source == "live" and items[0].session == "KalshiNR"
    assert items[1].exec_id == ExecId(1, 1, 1)
    assert items[0].message == fill("1;1")


def test_offer_many_counts_new_and_dedups_within_the_batch(ledger: ExecutionLedger) -> None:
    batch = [fill("1;1"), fill("1;2"), fill("1;1"), fill("1;3")]
    assert ledger.offer_many(batch, source="dropcopy", now=T0) == 3
    assert ledger.offer_many(batch, source="dropcopy", now=T0) == 0
    assert ledger.offer_many([], source="live", now=T0) == 0


def test_malformed_report_in_a_batch_stores_nothing(ledger: ExecutionLedger) -> None:
    with pytest.raises(ReportError, match="ExecID"):
        ledger.offer_many([fill("1;1"), er("bad", "0", "0", cl="x")], source="live", now=T0)
    with pytest.raises(ReportError, match="MsgType"):
        ledger.offer(FixMessage([(35, "D"), (11, "x")]), source="live", now=T0)
    with pytest.raises(LedgerError, match="source"):
        ledger.offer(fill("1;1"), source="rest", now=T0)  # type: ignore[arg-type]
    assert ledger.last_exec_id(0) is None and drain(ledger) == []


def test_pending_and_rejects_come_from_the_live_stream_only(ledger: ExecutionLedger) -> None:
    hdr = [(34, 7), (52, "20260825-14:00:00.000")]
    pending = er("-1;-1", "A", "A", cl="a", header=hdr)
    reject = er("-1;-1", "8", "8", cl="b", order_id="NONE", rej=99, text="EXCHANGE_UNAVAILABLE",
                header=[(34, 8), (52, "20260825-14:00:01.000")])
    assert ledger.offer(pending, source="dropcopy", now=T0) is False  # never replayed: ignored
    assert ledger.offer(pending, source="live", now=T0) is True
    assert ledger.offer(reject, source="live", now=T0) is True
    # A KalshiRT retransmission: same MsgSeqNum, PossDupFlag=Y, OrigSendingTime = original 52.
    resent = er("-1;-1", "8", "8", cl="b", order_id="NONE", rej=99, text="EXCHANGE_UNAVAILABLE",
                header=[(34, 8), (43, "Y"), (52, "20260825-15:00:00.000"),
                        (122, "20260825-14:00:01.000")])
    assert ledger.offer(resent, source="live", now=T0) is False
    # The retry with the same ClOrdID is a new message: its reject is delivered too.
    again = er("-1;-1", "8", "8", cl="b", order_id="NONE", rej=99, text="EXCHANGE_UNAVAILABLE",
               header=[(34, 12), (52, "20260825-14:00:09.000")])
    assert ledger.offer(again, source="live", now=T0) is True
    items = drain(ledger)
    assert [i.exec_id for i in items] == [None, None, None]
    assert len(set(keys(items))) == 3
    assert ledger.last_exec_id(0) is None  # none of these is a resume point


def test_non_execution_without_header_falls_back_to_text(ledger: ExecutionLedger) -> None:
    r1 = er("-1;-1", "8", "8", cl="b", rej=3, text="INSUFFICIENT_BALANCE")
    assert ledger.offer(r1, source="live", now=T0)
    assert not ledger.offer(r1, source="live", now=T0)
    with pytest.raises(ReportError, match="ClOrdID"):
        ledger.offer(FixMessage([(35, "8"), (17, "-1;-1"), (150, "A")]), source="live", now=T0)


def test_cancel_rejects_are_delivered(ledger: ExecutionLedger) -> None:
    m = FixMessage([(35, "9"), (34, 3), (52, "20260825-14:00:00.000"), (37, "O1"), (11, "c"),
                    (41, "a"), (39, "0"), (434, 1), (58, "TOO_LATE")])
    assert ledger.offer(m, source="live", now=T0)
    assert not ledger.offer(m, source="live", now=T0)
    [item] = drain(ledger)
    assert item.message == m and item.exec_id is None


# ----------------------------------------------------------------------------- delivery order


def test_per_order_exec_id_order_within_a_release(ledger: ExecutionLedger) -> None:
    # The replay of one order came out of order, interleaved with another order's reports.
    batch = [fill("1;5", "a", "O1"), fill("1;4", "b", "O2"), fill("1;3", "a", "O1"),
             fill("1;10", "b", "O2"), fill("1;9", "a", "O1")]
    assert ledger.offer_many(batch, source="dropcopy", now=T0) == 5
    items = drain(ledger)
    # Order O1 keeps its slots (0, 2, 4) but in ExecID order; O2 its slots (1, 3).
    assert keys(items) == ["1;3", "1;4", "1;5", "1;10", "1;9"]
    assert [i.key for i in items if i.order_key == "id:O1"] == ["1;3", "1;5", "1;9"]
    assert [i.key for i in items if i.order_key == "id:O2"] == ["1;4", "1;10"]
    assert [i.order_key for i in items] == ["id:O1", "id:O2", "id:O1", "id:O2", "id:O1"]
    assert [i.delivery_id for i in items] == [1, 2, 3, 4, 5]
    assert not any(i.late for i in items)


def test_hold_stages_and_release_merges_in_order(ledger: ExecutionLedger) -> None:
    ledger.offer(fill("1;1"), source="live", now=T0)
    ledger.offer(fill("4;1;1", order_id="O9"), source="live", now=T0)
    assert keys(drain(ledger)) == ["1;1", "4;1;1"]
    ledger.hold()
    ledger.hold()  # idempotent
    assert ledger.holding
    # After the reconnect the live stream moves on before the replay of the gap arrives.
    assert ledger.offer(fill("1;7"), source="live", now=T0)
    assert ledger.offer(fill("2;0;2", order_id="O5"), source="live", now=T0)
    assert ledger.next_undelivered(10) == []
    assert ledger.staged_count() == 2
    # The resume points stay where the gap began, for every index, even after new offers.
    assert ledger.last_exec_id(0) == ExecId(1, 1)
    assert ledger.last_exec_id(1) == ExecId(4, 1, 1)
    assert ledger.last_exec_id(2) is None  # first seen during the hold: no safe resume point
    replay = [fill("1;1"), fill("1;3"), fill("1;5"), fill("1;7")]
    assert ledger.offer_many(replay, source="dropcopy", now=T0) == 2
    assert ledger.release() == 4
    assert not ledger.holding
    items = drain(ledger)
    assert [i.key for i in items if i.order_key == "id:O1"] == ["1;3", "1;5", "1;7"]
    assert len(items) == 4 and not any(i.late for i in items)
    assert ledger.last_exec_id(0) == ExecId(1, 7)
    assert ledger.last_exec_id(2) == ExecId(2, 0, 2)
    assert ledger.indexes() == [0, 1, 2]
    assert ledger.resume_points() == {0: ExecId(1, 7), 1: ExecId(4, 1, 1), 2: ExecId(2, 0, 2)}


def test_hold_and_anchor_survive_a_restart(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer(fill("1;1"), source="live", now=T0)
        lg.hold()
        lg.offer(fill("1;9"), source="live", now=T0)
        lg.offer(fill("3;3;3", order_id="O3"), source="live", now=T0)
    with open_ledger(tmp_path) as lg:
        assert lg.holding
        assert lg.last_exec_id(0) == ExecId(1, 1)
        assert lg.last_exec_id(3) is None
        assert [i.key for i in lg.next_undelivered(10)] == ["1;1"]
        lg.offer(fill("1;5"), source="dropcopy", now=T0)
        assert lg.release() == 3
    with open_ledger(tmp_path) as lg:
        assert not lg.holding and lg.last_exec_id(0) == ExecId(1, 9)
        # O1 keeps its arrival slots (1;9 came first), filled in ExecID order.
        assert keys(drain(lg)) == ["1;1", "1;5", "3;3;3", "1;9"]


def test_late_report_without_a_hold_is_delivered_once_and_flagged(ledger: ExecutionLedger) -> None:
    ledger.offer(fill("1;5"), source="live", now=T0)
    ledger.offer(fill("1;3"), source="dropcopy", now=T0)
    ledger.offer(fill("1;4", cl="z", order_id="O2"), source="dropcopy", now=T0)
    items = drain(ledger)
    assert [(i.key, i.late) for i in items] == [("1;5", False), ("1;3", True), ("1;4", False)]


def test_last_exec_id_is_the_maximum_per_index(ledger: ExecutionLedger) -> None:
    ledger.offer_many([fill("2;10"), fill("2;9"), fill("10;0;1", order_id="O2")],
                      source="dropcopy", now=T0)
    assert ledger.last_exec_id(0) == ExecId(2, 10)
    assert ledger.last_exec_id(1) == ExecId(10, 0, 1)
    assert ledger.last_exec_id(5) is None
    ledger.offer(fill("2;3"), source="live", now=T0)
    assert ledger.last_exec_id(0) == ExecId(2, 10)


# ----------------------------------------------------------------------------- acks


def test_unacked_items_come_back_after_reopen_and_acked_ones_never(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill(f"1;{i}") for i in range(1, 6)], source="live", now=T0)
        first = lg.next_undelivered(2)
        assert [i.delivery_id for i in first] == [1, 2]
        assert [i.delivery_id for i in lg.next_undelivered(10, after=2)] == [3, 4, 5]
        lg.ack(2)
        lg.ack(1)  # lower: no-op
        assert lg.acked_through == 2 and lg.undelivered_count() == 3
        with pytest.raises(LedgerError, match="beyond the last released"):
            lg.ack(6)
        with pytest.raises(LedgerError):
            lg.ack(-1)
        with pytest.raises(LedgerError):
            lg.next_undelivered(0)
    with open_ledger(tmp_path) as lg:
        assert lg.acked_through == 2
        assert keys(lg.next_undelivered(10)) == ["1;3", "1;4", "1;5"]


def test_cursor_acks_the_previous_item_when_asked_for_the_next(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill(f"1;{i}") for i in range(1, 4)], source="live", now=T0)
        cur = lg.cursor()
        a = cur.next()
        assert a is not None and a.key == "1;1" and lg.acked_through == 0
        b = cur.next()
        assert b is not None and b.key == "1;2" and lg.acked_through == 1
        # The process dies while "1;2" is being handled: it comes again, "1;1" never.
    with open_ledger(tmp_path) as lg:
        assert keys(drain(lg)) == ["1;2", "1;3"]
        assert lg.acked_through == 3


def test_history_feeds_a_fresh_tracker(ledger: ExecutionLedger) -> None:
    ledger.offer_many([er("1;1", "0", "0", cl="a"), fill("1;2", cum="1.00")], source="live",
                      now=T0)
    t = OrderTracker()
    t.apply_many(ledger.history())
    s = t.get("a")
    assert s is not None and s.cum_qty == 1 and s.ord_status == "1"


def test_get_returns_stored_items(ledger: ExecutionLedger) -> None:
    ledger.offer(fill("1;1"), source="live", now=T0)
    item = ledger.get(1)
    assert item is not None and item.key == "1;1"
    assert ledger.get(2) is None


# ----------------------------------------------------------------------------- pruning


def test_prune_drops_old_acked_rows_and_still_recognises_them(ledger: ExecutionLedger) -> None:
    ledger.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
    ledger.offer(fill("5;5;1", order_id="O2"), source="live", now=T0)
    ledger.offer(fill("1;3"), source="live", now=T0 + 10_000)
    ledger.ack(2)
    # Only acked rows older than the keep window go; item 3 (un-acked) and 4 (recent) stay.
    assert ledger.prune(T0 + DEFAULT_KEEP_S + 1) == 2
    assert ledger.get(1) is None and ledger.get(2) is None
    assert ledger.get(3) is not None
    # A late copy of a pruned execution (e.g. a KalshiRT retransmission) is still a duplicate,
    # and so is anything older on that index.
    assert ledger.offer(fill("1;1"), source="live", now=T0 + 20_000) is False
    assert ledger.offer(fill("0;9"), source="live", now=T0 + 20_000) is False
    assert ledger.offer(fill("1;4"), source="live", now=T0 + 20_000) is True
    ledger.ack(ledger.last_delivery_id)
    assert ledger.prune(T0 + 100_000) == 3
    with pytest.raises(LedgerError):
        ledger.prune(T0, keep_s=0)


def test_prune_watermark_survives_reopen(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer(fill("1;1"), source="live", now=T0)
        drain(lg)
        assert lg.prune(T0 + DEFAULT_KEEP_S + 1) == 1
    with open_ledger(tmp_path) as lg:
        assert lg.offer(fill("1;1"), source="dropcopy", now=T0) is False
        assert lg.last_exec_id(0) == ExecId(1, 1)


def test_prune_never_drops_unreleased_rows(ledger: ExecutionLedger) -> None:
    ledger.hold()
    ledger.offer(fill("1;1"), source="live", now=T0)
    assert ledger.prune(T0 + 10 * DEFAULT_KEEP_S) == 0
    ledger.release()
    assert keys(drain(ledger)) == ["1;1"]


# ----------------------------------------------------------------------------- property


def _check_exactly_once(items: list[DeliveredExecution], offered: list[FixMessage]) -> None:
    delivered = keys(items)
    assert len(delivered) == len(set(delivered)), "an execution was delivered twice"
    per_order: dict[str, list[ExecId]] = defaultdict(list)
    for i in items:
        if i.exec_id is not None:
            per_order[i.order_key].append(i.exec_id)
    for order_key, ids in per_order.items():
        assert ids == sorted(ids), f"order {order_key} delivered out of ExecID order: {ids}"


@settings(max_examples=150, deadline=None)
@given(order_flows(max_orders=5, max_steps=6), st.data())
def test_live_and_drop_copy_in_any_interleaving_deliver_exactly_once_in_order(
    live: list[FixMessage], data: st.DataObject
) -> None:
    # The stream runs normally up to a disconnect at `cut`; after it, live reports may be lost,
    # the drop copy replays every index from its resume point (inclusive), copies repeat, and
    # everything interleaves arbitrarily until the replay completes and the hold is released.
    cut = data.draw(st.integers(0, len(live)))
    before, after = live[:cut], live[cut:]
    lost = data.draw(st.lists(st.booleans(), min_size=len(after), max_size=len(after)))
    after_received = [m for m, gone in zip(after, lost) if not gone]
    repeats = data.draw(st.lists(st.sampled_from(live), max_size=6)) if live else []
    with tempfile.TemporaryDirectory() as d, open_ledger(d) as lg:
        for m in before:
            lg.offer(m, source="live", session="KalshiNR", now=T0)
        delivered = drain(lg)
        lg.hold()
        resume = lg.resume_points()
        replay = []
        for m in live:
            if not is_real(m):
                continue
            e = ExecId.parse(m.get(17) or b"")
            anchor = resume.get(e.index)
            if anchor is None or e >= anchor:
                replay.append(dc_copy(m, len(replay) + 1))
        chunk = data.draw(st.integers(1, 8))
        arrival = interleave(data, [("live", m) for m in after_received + repeats],  # type: ignore[misc]
                             [("dc", replay[i:i + chunk]) for i in range(0, len(replay), chunk)])
        for source, payload in arrival:  # type: ignore[misc]
            if source == "live":
                lg.offer(payload, source="live", session="KalshiNR", now=T0)
            else:
                lg.offer_many(payload, source="dropcopy", session="KalshiDC", now=T0)
        lg.release()
        delivered += drain(lg)
    # Exactly once, per-order ExecID order, and nothing late thanks to the hold.
    _check_exactly_once(delivered, live)
    assert not any(i.late for i in delivered)
    received = before + after_received + repeats
    expected = {str(ExecId.parse(m.get(17) or b"")) for m in live if is_real(m)}
    assert {i.key for i in delivered if i.exec_id is not None} == expected
    non_exec = [m for m in received if not is_real(m)]
    assert sum(1 for i in delivered if i.exec_id is None) == len(
        {(m.get(11), m.get(35), m.get(150), m.get(34)) for m in non_exec}
    )
    # The tracker fed in delivery order equals the tracker fed the reports once, in order.
    got_once = OrderTracker()
    got_once.apply_many(i.message for i in delivered)
    reference = OrderTracker()
    reference.apply_many(m for m in live if is_real(m) or m in non_exec)
    assert canon(got_once) == canon(reference)


@settings(max_examples=100, deadline=None)
@given(order_flows(max_orders=4, max_steps=5), st.data())
def test_without_a_hold_every_execution_is_still_delivered_exactly_once(
    live: list[FixMessage], data: st.DataObject
) -> None:
    real = [m for m in live if is_real(m)]
    replay = [dc_copy(m, n) for n, m in enumerate(data.draw(st.permutations(real)), start=1)]
    repeats = data.draw(st.lists(st.sampled_from(live), max_size=6)) if live else []
    arrival = interleave(data, [("live", m) for m in live + repeats],  # type: ignore[misc]
                         [("dc", m) for m in replay])
    with tempfile.TemporaryDirectory() as d, open_ledger(d) as lg:
        for source, m in arrival:  # type: ignore[misc]
            lg.offer(m, source=source if source == "live" else "dropcopy", now=T0)
        delivered = drain(lg)
    assert len(keys(delivered)) == len(set(keys(delivered)))
    assert {i.key for i in delivered if i.exec_id is not None} == {
        str(ExecId.parse(m.get(17) or b"")) for m in real
    }
    tracker = OrderTracker()
    tracker.apply_many(i.message for i in delivered)
    reference = OrderTracker()
    reference.apply_many(live)
    assert canon(tracker) == canon(reference)


def test_offers_with_their_fields_read_by_the_caller(ledger: ExecutionLedger) -> None:
    reports = [fill("1;1"), fill("1;2")]
    with pytest.raises(LedgerError, match="2 reports"):
        ledger.offer_many(reports, source="live", now=T0, fields=[reports[0].first_values()])
    assert ledger.undelivered_count() == 0
    fields = [m.first_values() for m in reports]
    assert ledger.offer_many(reports, source="live", now=T0, fields=fields) == 2
    assert keys(drain(ledger)) == ["1;1", "1;2"]


def test_the_wal_is_checkpointed_every_ten_thousand_pages(ledger: ExecutionLedger) -> None:
    conn = ledger._connection()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10_000
