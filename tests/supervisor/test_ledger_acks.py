"""ExecutionLedger acknowledgement file: an ack with no group pending is one write to the ledger's
``-ack`` file; it survives a SIGKILL, counts only for the ledger it belongs to (a leftover or
torn file is ignored), is folded into the meta row by the next commit, prune and close, and is
not used with ``synchronous="FULL"``."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_ledger_group_commit import fill

from supervisor.ledger import ExecutionLedger

T0 = 1_900_000_000.0
ACCOUNT = "acct-acks"
REPO = Path(__file__).resolve().parents[2]


def open_ledger(directory: Path, *, now: float = T0, **kw: object) -> ExecutionLedger:
    return ExecutionLedger.open(directory, ACCOUNT, now=now, **kw)  # type: ignore[arg-type]


def stored_ack(lg: ExecutionLedger) -> int:
    """The meta row's ack, as the file has it (read through the ledger's own connection)."""
    return int(lg._connection().execute("SELECT acked_through FROM meta").fetchone()[0])


def ack_file(directory: Path) -> Path:
    (path,) = directory.glob("*.ledger.sqlite3")
    return Path(str(path) + "-ack")


def keys(lg: ExecutionLedger) -> list[str]:
    return [i.key for i in lg.next_undelivered(100)]


def test_an_ack_with_no_group_pending_is_written_to_the_ack_file(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill("1;1"), fill("1;2"), fill("1;3")], source="live", now=T0)
        cursor = lg.cursor()
        seen: list[str] = []
        lg._connection().set_trace_callback(seen.append)
        for _ in range(3):
            assert cursor.next() is not None
        assert seen == []  # no statement: the acks of 1;1 and 1;2 went to the ack file
        assert lg.acked_through == 2 and stored_ack(lg) == 0
        # The next transaction (here the offer log's write-behind) carries the ack into the
        # meta row.
        lg.offer(fill("1;4"), source="live", now=T0)
        assert stored_ack(lg) == 0  # the offer went to the log: no transaction
        list(lg.history())  # reads the tables: the log is written behind first
        assert stored_ack(lg) == 2


def test_close_writes_the_last_ack_into_the_meta_row(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
        lg.ack(1)
        assert stored_ack(lg) == 0
    ack_file(tmp_path).unlink()  # not needed after a clean close
    with open_ledger(tmp_path) as lg:
        assert lg.acked_through == 1 and keys(lg) == ["1;2"]


def test_prune_writes_the_ack_before_deleting_what_it_covers(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
        lg.ack(2)
        assert lg.prune(T0 + 10, keep_s=1) == 2
        assert stored_ack(lg) == 2
        # The pruned rows are gone, and the ack file names one of them: the meta row is what
        # a reopen relies on.
        os.truncate(ack_file(tmp_path), 0)
        lg._load()
        assert lg.acked_through == 2 and keys(lg) == []


def test_a_leftover_or_torn_ack_file_is_ignored(tmp_path: Path) -> None:
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    with open_ledger(old_dir) as lg:
        lg.offer(fill("1;1"), source="live", now=T0)
        lg.offer(fill("1;2"), source="live", now=T0)
        lg.ack(2)
        leftover = ack_file(old_dir).read_bytes()
    assert len(leftover) > 0
    # A new ledger created at another time: the record is not for it.
    with open_ledger(new_dir, now=T0 + 1) as lg:
        lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
    ack_file(new_dir).write_bytes(leftover)
    with open_ledger(new_dir, now=T0 + 1) as lg:
        assert lg.acked_through == 0 and keys(lg) == ["1;1", "1;2"]
    # Same creation time, but its delivery id 2 is another report (a hold put 1;1 first).
    same_dir = tmp_path / "same"
    with open_ledger(same_dir) as lg:
        lg.hold()
        lg.offer(fill("1;2"), source="live", now=T0)
        lg.offer(fill("1;1"), source="dropcopy", now=T0)
        lg.release()
    ack_file(same_dir).write_bytes(leftover)
    with open_ledger(same_dir) as lg:
        assert lg.acked_through == 0 and keys(lg) == ["1;1", "1;2"]
    # A torn or damaged record.
    for damaged in (leftover[:-3], leftover[:10] + b"\x00" + leftover[11:], b"junk"):
        ack_file(old_dir).write_bytes(damaged)
        with open_ledger(old_dir) as lg:
            assert lg.acked_through == 2  # the meta row's ack, written at close


def test_synchronous_full_acks_through_the_meta_row(tmp_path: Path) -> None:
    with open_ledger(tmp_path, synchronous="FULL") as lg:
        lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
        lg.ack(1)
        assert stored_ack(lg) == 1
    assert list(tmp_path.glob("*-ack")) == []


CHILD = r'''
import sys
sys.path.insert(0, sys.argv[2])
from test_orders import er
from supervisor.ledger import ExecutionLedger

def fill(exec_id):
    return er(exec_id, "F", "1", cl="a", order_id="O1", cum="1.00", last_px="50",
              last_qty="1.00")

lg = ExecutionLedger.open(sys.argv[1], "acct-acks", now=1_900_000_000.0)
lg.offer_many([fill("1;1"), fill("1;2"), fill("1;3")], source="live", now=1_900_000_000.0)
cursor = lg.cursor()
for _ in range(3):
    print("delivered", cursor.next().key, flush=True)
print("ready", flush=True)
sys.stdin.readline()
'''


def test_acks_in_the_ack_file_survive_sigkill(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO),
                                                        os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(Path(__file__).parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline().decode().strip()) != "ready":
        if not line:
            proc.wait(timeout=10)
            assert proc.stderr is not None
            pytest.fail(f"child exited early: {proc.stderr.read().decode()}")
        lines.append(line)
    assert lines == ["delivered 1;1", "delivered 1;2", "delivered 1;3"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    (path,) = tmp_path.glob("*.ledger.sqlite3")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT acked_through FROM meta").fetchone()[0] == 0
    finally:
        conn.close()
    with open_ledger(tmp_path) as lg:
        # 1;1 and 1;2 were acked (asking for the next one); 1;3 was being processed.
        assert lg.acked_through == 2 and keys(lg) == ["1;3"]
