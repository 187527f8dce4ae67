"""ExecutionLedger delivery from memory: items released in this process are handed out without
reading them back, exactly as the file would give them; after a restart, a reload (failed
commit) or beyond the memory bound the file serves them, and nothing changes for the consumer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_orders import dc_copy, er, interleave, is_real, order_flows

from sessions.message import FixMessage
from supervisor import ledger as ledger_module
from supervisor.execid import ExecId
from supervisor.ledger import DeliveredExecution, ExecutionLedger, LedgerError

T0 = 1_900_000_000.0


def fill(exec_id: str, cl: str = "a", order_id: str = "O1") -> FixMessage:
    return er(exec_id, "F", "1", cl=cl, order_id=order_id, cum="1.00", last_px="50",
              last_qty="1.00")


def open_ledger(directory: Path | str) -> ExecutionLedger:
    return ExecutionLedger.open(directory, "acct-mem", now=T0)


def as_stored(lg: ExecutionLedger, item: DeliveredExecution) -> tuple[object, ...]:
    """The item as the file gives it (get() always reads the file)."""
    stored = lg.get(item.delivery_id)
    assert stored is not None
    return (stored, stored.message.pairs)


def same_as_file(lg: ExecutionLedger, items: list[DeliveredExecution]) -> None:
    for item in items:
        assert as_stored(lg, item) == (item, item.message.pairs)


class Statements:
    """The SQL a ledger's connection runs (sqlite3 trace callback)."""

    def __init__(self, lg: ExecutionLedger) -> None:
        self.seen: list[str] = []
        lg._connection().set_trace_callback(self.seen.append)

    def take(self) -> list[str]:
        out = [s.split()[0].upper() for s in self.seen]
        self.seen.clear()
        return out


def test_released_items_are_served_from_memory_as_the_file_has_them(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer(fill("1;1"), source="live", session="NR", now=T0)
        lg.hold()
        lg.offer_many([fill("1;3"), fill("2;1", cl="b", order_id="O2")], source="live",
                      session="NR", now=T0 + 1)
        lg.offer_many([fill("1;2"), fill("1;3")], source="dropcopy", session="DC", now=T0 + 2)
        lg.offer(er("-1;-1", "A", "A", cl="c", order_id=None, header=[(34, 9), (52, "x")]),
                 source="live", now=T0 + 3)
        assert lg.release() == 4
        trace = Statements(lg)
        items = lg.next_undelivered(10)
        assert trace.take() == []  # no query: every item came from memory
        # The hold's merge put O1's executions in ExecID order, in O1's slots.
        assert [i.key for i in items] == ["1;1", "1;2", "2;1", "1;3", items[4].key]
        assert [i.source for i in items] == ["live", "dropcopy", "live", "live", "live"]
        same_as_file(lg, items)


def test_the_steady_state_of_a_consumer_runs_no_extra_statements(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        cursor = lg.cursor()
        trace = Statements(lg)
        lg.offer(fill("1;1"), source="live", now=T0)
        # A new execution (above its index's highest ExecID) goes to the offer log: no
        # statement at all; nor for a copy of one the log holds.
        assert trace.take() == []
        assert not lg.offer(fill("1;1"), source="live", now=T0)  # an RT retransmission, say
        assert trace.take() == []
        assert cursor.next() is not None
        assert trace.take() == []
        lg.offer_many([fill("1;2")], source="live", now=T0, defer_commit=True)
        second = cursor.next()  # the ack appends the group first; the item is not read back
        assert second is not None and second.key == "1;2" and not lg.uncommitted
        assert cursor.next() is None  # the ack alone goes to the ack file
        assert trace.take() == []
        assert lg._memory == {} and lg.acked_through == 2  # acked items are dropped
        # Once the log is written behind, a report that may be stored (its ExecID is not
        # above its index's highest) is looked up: one query.
        list(lg.history())
        trace.take()
        assert not lg.offer(fill("1;1"), source="live", now=T0)
        assert trace.take() == ["SELECT"]


def test_after_a_reopen_the_file_serves_what_memory_held(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
        lg.hold()
        lg.offer(fill("1;4"), source="live", now=T0)
        lg.offer(fill("1;3"), source="dropcopy", now=T0)
        first = lg.cursor().next()
        assert first is not None and first.key == "1;1"
    with open_ledger(tmp_path) as lg:
        assert lg._memory == {} and lg._staged == {}
        assert lg.release() == 2  # read back from the file: the staged rows were not kept
        lg.offer(fill("1;5"), source="live", now=T0)  # released now: kept in memory
        items = lg.next_undelivered(10)
        assert [i.key for i in items] == ["1;1", "1;2", "1;3", "1;4", "1;5"]
        assert list(lg._memory) == [items[-1].delivery_id]
        same_as_file(lg, items)


def test_a_failed_commit_drops_memory_and_the_file_serves_the_rest(tmp_path: Path) -> None:
    # With FULL every offer is a transaction (no offer log): a commit is what fails here.
    with ExecutionLedger.open(tmp_path, "acct-mem", now=T0, synchronous="FULL") as lg:
        cursor = lg.cursor()
        lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
        first = cursor.next()
        assert first is not None and first.key == "1;1"
        lg.offer_many([fill("1;3")], source="live", now=T0, defer_commit=True)
        lg._connection().execute(
            "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON meta "
            "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
        )
        with pytest.raises(LedgerError, match="disk trouble"):
            cursor.next()  # the ack of 1;1 and the group with 1;3 roll back together
        assert lg._memory == {}
        # The consumer goes on: 1;1 again (never acked), 1;2 from the file, 1;3 was lost (the
        # drop copy brings it back, and then it is kept in memory again).
        again = lg.cursor()
        got = [again.next(), again.next()]
        assert [i.key for i in got if i is not None] == ["1;1", "1;2"]
        assert lg.offer(fill("1;3"), source="dropcopy", now=T0)
        third = again.next()
        assert third is not None and third.key == "1;3" and third.source == "dropcopy"
        assert again.next() is None


def test_beyond_the_bound_the_file_serves_the_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "_MEMORY_ITEMS", 3)
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill(f"1;{n}") for n in range(1, 6)], source="live", now=T0)
        assert len(lg._memory) == 3
        lg.hold()
        lg.offer_many([fill(f"2;{n}", cl="b", order_id="O2") for n in (3, 1, 2)],
                      source="live", now=T0)
        assert lg._staged == {}  # memory is full: staged rows are not kept either
        lg.release()
        items = lg.next_undelivered(2, after=2)  # memory, then the file
        assert [i.key for i in items] == ["1;3", "1;4"]
        cursor = lg.cursor()
        got = []
        while (item := cursor.next()) is not None:
            got.append(item)
        assert [i.key for i in got] == ["1;1", "1;2", "1;3", "1;4", "1;5", "2;1", "2;2", "2;3"]
        same_as_file(lg, got)
        # Acked: room again, and new items are kept.
        lg.offer(fill("3;1", cl="c", order_id="O3"), source="live", now=T0)
        assert len(lg._memory) == 1


def test_a_hold_partly_kept_in_memory_is_released_from_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "_MEMORY_ITEMS", 2)
    with open_ledger(tmp_path) as lg:
        lg.hold()
        lg.offer_many([fill("1;4"), fill("1;2"), fill("1;3")], source="dropcopy", now=T0)
        assert len(lg._staged) == 2
        assert lg.release() == 3
        items = lg.next_undelivered(10)
        assert [i.key for i in items] == ["1;2", "1;3", "1;4"]
        same_as_file(lg, items)


@settings(max_examples=60, deadline=None)
@given(order_flows(max_orders=4, max_steps=5), st.data())
def test_memory_and_file_agree_for_any_interleaving(
    live: list[FixMessage], data: st.DataObject
) -> None:
    bound = data.draw(st.sampled_from([1, 3, 16384]))
    cut = data.draw(st.integers(0, len(live)))
    replay = [dc_copy(m, n) for n, m in enumerate((m for m in live if is_real(m)), start=1)]
    arrival = interleave(data, [("live", m) for m in live[cut:]],  # type: ignore[misc]
                         [("dc", m) for m in replay])
    old = ledger_module._MEMORY_ITEMS
    ledger_module._MEMORY_ITEMS = bound
    try:
        with tempfile.TemporaryDirectory() as d, open_ledger(d) as lg:
            cursor = lg.cursor()
            delivered: list[DeliveredExecution] = []
            for m in live[:cut]:
                lg.offer(m, source="live", now=T0)
                if data.draw(st.booleans()) and (item := cursor.next()) is not None:
                    delivered.append(item)
            lg.hold()
            for source, m in arrival:  # type: ignore[misc]
                lg.offer_many([m], source="live" if source == "live" else "dropcopy", now=T0,
                              defer_commit=data.draw(st.booleans()))
                if data.draw(st.booleans()) and (item := cursor.next()) is not None:
                    delivered.append(item)
            lg.release()
            while (item := cursor.next()) is not None:
                delivered.append(item)
            same_as_file(lg, delivered)
            keys = [i.key for i in delivered]
            assert len(keys) == len(set(keys))
            assert {i.key for i in delivered if i.exec_id is not None} == {
                str(ExecId.parse(m.get(17) or b"")) for m in live if is_real(m)
            }
    finally:
        ledger_module._MEMORY_ITEMS = old
