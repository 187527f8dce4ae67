"""ExecutionLedger group commit and write-behind marks: deferred offers are never handed out
before they are durable, an ack commits them with it, a failed commit forgets the whole group,
and the marks (resume points, per-order marks) survive a SIGKILL although their tables lag."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_orders import er

from sessions.message import FixMessage
from supervisor.execid import ExecId
from supervisor.ledger import DeliveredExecution, ExecutionLedger, LedgerError

T0 = 1_900_000_000.0
ACCOUNT = "acct-gc"
REPO = Path(__file__).resolve().parents[2]


def fill(exec_id: str, cl: str = "a", order_id: str = "O1") -> FixMessage:
    return er(exec_id, "F", "1", cl=cl, order_id=order_id, cum="1.00", last_px="50",
              last_qty="1.00")


def open_ledger(directory: Path) -> ExecutionLedger:
    return ExecutionLedger.open(directory, ACCOUNT, now=T0)


def stored_keys(directory: Path) -> list[str]:
    """The report keys on disk, read by a second connection (committed rows only)."""
    (path,) = directory.glob("*.ledger.sqlite3")
    with sqlite3.connect(path) as conn:
        return [k for (k,) in conn.execute("SELECT key FROM reports ORDER BY arrival")]


def keys(items: list[DeliveredExecution]) -> list[str]:
    return [i.key for i in items]


def test_deferred_offers_are_committed_before_they_are_handed_out(tmp_path: Path) -> None:
    lg = open_ledger(tmp_path)
    try:
        assert lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0,
                             defer_commit=True) == 2
        assert lg.offer_many([fill("1;2"), fill("1;3")], source="live", now=T0,
                             defer_commit=True) == 1  # a duplicate within the open group
        assert lg.uncommitted and lg.undelivered_count() == 3
        assert lg.last_exec_id(0) == ExecId(1, 3)
        items = lg.next_undelivered(10)
        assert keys(items) == ["1;1", "1;2", "1;3"]
        assert not lg.uncommitted
    finally:
        lg.close()
    # The exclusive lock is gone with the connection: the file can be read from outside.
    assert stored_keys(tmp_path) == ["1;1", "1;2", "1;3"]


def test_an_ack_commits_the_deferred_offers_with_it(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        cursor = lg.cursor()
        lg.offer(fill("1;1"), source="live", now=T0)
        first = cursor.next()
        assert first is not None and first.key == "1;1"
        lg.offer_many([fill("1;2")], source="live", now=T0, defer_commit=True)
        assert lg.uncommitted
        second = cursor.next()  # acks "1;1" and commits "1;2" in one transaction
        assert second is not None and second.key == "1;2"
        assert lg.acked_through == 1 and not lg.uncommitted
    with open_ledger(tmp_path) as lg:
        assert keys(lg.next_undelivered(10)) == ["1;2"]


def test_close_commits_deferred_offers(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill("1;1")], source="live", now=T0, defer_commit=True)
    with open_ledger(tmp_path) as lg:
        assert keys(lg.next_undelivered(10)) == ["1;1"]


def test_a_failed_commit_forgets_the_whole_group(tmp_path: Path) -> None:
    # With FULL every offer is a transaction (no offer log): a commit is what fails here.
    with ExecutionLedger.open(tmp_path, ACCOUNT, now=T0, synchronous="FULL") as lg:
        lg.offer(fill("1;1"), source="live", now=T0)
        lg.offer_many([fill("1;2"), fill("2;1", cl="b", order_id="O2")], source="live", now=T0,
                      defer_commit=True)
        assert lg.last_exec_id(0) == ExecId(2, 1)
        # A trigger stands in for a disk error at the end of the group (created inside the
        # open group, so the rollback removes it too).
        lg._connection().execute(
            "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON meta "
            "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
        )
        with pytest.raises(LedgerError, match="disk trouble"):
            lg.ack(1)
        # Memory agrees with the file again: only the committed report exists.
        assert not lg.uncommitted
        assert lg.acked_through == 0 and lg.undelivered_count() == 1
        assert lg.last_exec_id(0) == ExecId(1, 1)
        # The drop copy brings the lost ones back; nothing is a duplicate of a ghost.
        assert lg.offer_many([fill("1;2"), fill("2;1", cl="b", order_id="O2")],
                             source="dropcopy", now=T0) == 2
        assert keys(lg.next_undelivered(10)) == ["1;1", "1;2", "2;1"]


CHILD = r'''
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_orders import er
from supervisor.ledger import ExecutionLedger

def fill(exec_id, cl="a", order_id="O1"):
    return er(exec_id, "F", "1", cl=cl, order_id=order_id, cum="1.00", last_px="50",
              last_qty="1.00")

state, mode = sys.argv[1], sys.argv[2]
lg = ExecutionLedger.open(state, "acct-gc", now=1_900_000_000.0)
if mode == "deferred":
    lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=1_900_000_000.0)
    cursor = lg.cursor()
    item = cursor.next()
    print("delivered", item.key, flush=True)
    lg.offer_many([fill("1;3"), fill("1;4")], source="live", now=1_900_000_000.0,
                  defer_commit=True)
elif mode == "marks":
    # Two orders on two indexes, committed report by report: the mark tables are never
    # written (no hold, no prune).
    lg.offer(fill("5;1", cl="a", order_id="O1"), source="live", now=1_900_000_000.0)
    lg.offer(fill("5;3", cl="a", order_id="O1"), source="live", now=1_900_000_000.0)
    lg.offer(fill("7;2;2", cl="b", order_id="O2"), source="live", now=1_900_000_000.0)
    lg.hold()
    lg.offer(fill("7;9;2", cl="b", order_id="O2"), source="live", now=1_900_000_000.0)
    lg.offer(fill("8;0", cl="c", order_id="O3"), source="live", now=1_900_000_000.0)
elif mode == "busy":
    lg.offer(fill("1;1"), source="live", now=1_900_000_000.0)
print("ready", flush=True)
sys.stdin.readline()
'''


def run_child(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO),
                                                        os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), mode, str(Path(__file__).parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env=env,
    )


def read_until_ready(proc: subprocess.Popen[bytes]) -> list[str]:
    assert proc.stdout is not None
    lines = []
    while True:
        line = proc.stdout.readline().decode().strip()
        if not line:
            proc.wait(timeout=10)
            assert proc.stderr is not None
            pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read().decode()}")
        if line == "ready":
            return lines
        lines.append(line)


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_loses_only_uncommitted_offers_and_repeats_nothing(tmp_path: Path) -> None:
    proc = run_child(tmp_path, "deferred")
    assert read_until_ready(proc) == ["delivered 1;1"]
    kill(proc)
    with open_ledger(tmp_path) as lg:
        # "1;1" was handed out but not acked: it comes again (the crash rule). The deferred
        # group never reached the file, so it cannot have been delivered; the resume point
        # is that of the committed reports, so a replay from it brings "1;3" and "1;4" back.
        assert lg.acked_through == 0
        assert keys(lg.next_undelivered(10)) == ["1;1", "1;2"]
        assert lg.last_exec_id(0) == ExecId(1, 2)
        assert lg.offer_many([fill("1;2"), fill("1;3"), fill("1;4")], source="dropcopy",
                             now=T0) == 2


def test_marks_are_rebuilt_from_the_reports_after_sigkill(tmp_path: Path) -> None:
    proc = run_child(tmp_path, "marks")
    read_until_ready(proc)
    kill(proc)
    with open_ledger(tmp_path) as lg:
        assert lg.holding
        # Frozen at the hold: index 2's anchor is 7;2 even though 7;9 is stored.
        assert lg.resume_points() == {0: ExecId(5, 3), 2: ExecId(7, 2, 2)}
        assert lg.release() == 2
        assert lg.resume_points() == {0: ExecId(8, 0), 2: ExecId(7, 9, 2)}
        # O1's mark (5;3, released before the crash) survived: an older report is late.
        lg.offer(fill("5;2", cl="a", order_id="O1"), source="dropcopy", now=T0)
        items = lg.next_undelivered(10)
        assert [(i.key, i.late) for i in items][-1] == ("5;2", True)
    with open_ledger(tmp_path) as lg:
        assert lg.resume_points() == {0: ExecId(8, 0), 2: ExecId(7, 9, 2)}


def test_a_second_process_is_refused_while_the_ledger_is_open(tmp_path: Path) -> None:
    proc = run_child(tmp_path, "busy")
    try:
        read_until_ready(proc)
        with pytest.raises(LedgerError, match="another process holds the file"):
            open_ledger(tmp_path)
    finally:
        kill(proc)
    with open_ledger(tmp_path) as lg:
        assert keys(lg.next_undelivered(10)) == ["1;1"]
