"""JournalWriter and the ledger → journal delivery path, including SIGKILL crash tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sessions.message import FixMessage
from supervisor.execid import ExecId
from supervisor.journal import (
    JournalError,
    JournalWriter,
    drain_to_journal,
    journal_record,
    sync_ledger,
)
from supervisor.ledger import ExecutionLedger

T0 = 1_900_000_000.0
REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "acct-crash"


def report(n: int, *, order: int | None = None) -> FixMessage:
    """Fill number ``n`` (ExecID ``1;n``) of one of seven orders."""
    k = n % 7 if order is None else order
    return FixMessage([
        (35, "8"), (37, f"O{k}"), (11, f"c{k}"), (17, f"1;{n}"), (150, "F"), (39, "1"),
        (54, "2"), (55, "KXBTC-26AUG25-T60000"), (38, "1000.00"), (14, f"{n}.00"),
        (151, f"{1000 - n}.00"), (6, "0.4100"), (44, "0.4100"), (31, "0.4100"), (32, "1.00"),
        (60, "20260825-14:03:11.512"),
    ])


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def ledger(tmp_path: Path) -> ExecutionLedger:
    with ExecutionLedger.open(tmp_path / "state", ACCOUNT, now=T0) as lg:
        yield lg


# ----------------------------------------------------------------------------- writer


def test_record_fields(ledger: ExecutionLedger) -> None:
    ledger.offer(report(3), source="dropcopy", session="KalshiDC", now=T0)
    [item] = ledger.next_undelivered(1)
    rec = journal_record(item)
    assert rec == {
        "delivery_id": 1, "exec_id": "1;3", "order_id": "O3", "cl_ord_id": "c3",
        "orig_cl_ord_id": None, "symbol": "KXBTC-26AUG25-T60000", "side": "2", "msg_type": "8",
        "exec_type": "F", "ord_status": "1", "last_qty": "1.00", "last_px": "0.4100",
        "cum_qty": "3.00", "leaves_qty": "997.00", "avg_px": "0.4100",
        "transact_time": "20260825-14:03:11.512", "text": None, "source": "dropcopy",
        "session": "KalshiDC",
    }


def test_pending_reports_keep_their_wire_exec_id(ledger: ExecutionLedger) -> None:
    m = FixMessage([(35, "8"), (34, 4), (52, "20260825-14:00:00.000"), (11, "c9"), (17, "-1;-1"),
                    (150, "A"), (39, "A")])
    ledger.offer(m, source="live", now=T0)
    [item] = ledger.next_undelivered(1)
    assert journal_record(item)["exec_id"] == "-1;-1"


def test_append_reopen_and_skip(tmp_path: Path, ledger: ExecutionLedger) -> None:
    path = tmp_path / "j" / "executions.jsonl"
    ledger.offer_many([report(i) for i in range(1, 6)], source="live", now=T0)
    with JournalWriter.open(path) as j:
        assert j.last_delivery_id is None and j.last_exec_id is None
        j.append_many(ledger.next_undelivered(3))
        assert j.last_delivery_id == 3 and j.last_exec_id == "1;3"
    with JournalWriter.open(path, fsync="never") as j:
        assert j.last_delivery_id == 3 and j.last_exec_id == "1;3"
        j.append_many(ledger.next_undelivered(10))  # 1..3 are skipped: already there
        j.append(ledger.next_undelivered(10)[-1])  # skipped as well
        assert j.last_delivery_id == 5
    assert [r["exec_id"] for r in lines(path)] == [f"1;{i}" for i in range(1, 6)]
    assert [r["delivery_id"] for r in lines(path)] == [1, 2, 3, 4, 5]


def test_torn_tail_is_cut_off(tmp_path: Path, ledger: ExecutionLedger) -> None:
    path = tmp_path / "executions.jsonl"
    ledger.offer_many([report(i) for i in range(1, 4)], source="live", now=T0)
    with JournalWriter.open(path) as j:
        j.append_many(ledger.next_undelivered(2))
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"delivery_id":3,"exec_id":"1;')
    with JournalWriter.open(path) as j:
        assert j.last_delivery_id == 2
        assert path.read_bytes() == whole
        j.append_many(ledger.next_undelivered(10))
    assert [r["delivery_id"] for r in lines(path)] == [1, 2, 3]


def test_single_torn_line_leaves_an_empty_journal(tmp_path: Path) -> None:
    path = tmp_path / "executions.jsonl"
    path.write_bytes(b'{"delivery_id":1,"ex')
    with JournalWriter.open(path) as j:
        assert j.last_delivery_id is None
    assert path.read_bytes() == b""


def test_long_journal_finds_its_last_line(tmp_path: Path, ledger: ExecutionLedger) -> None:
    path = tmp_path / "executions.jsonl"
    ledger.offer_many([report(i) for i in range(1, 1201)], source="live", now=T0)
    with JournalWriter.open(path, fsync="never") as j:
        j.append_many(ledger.next_undelivered(1200))
    assert path.stat().st_size > 64 * 1024 * 2  # spans several tail-read chunks
    with JournalWriter.open(path) as j:
        assert j.last_delivery_id == 1200 and j.last_exec_id == "1;1200"


def test_foreign_last_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "executions.jsonl"
    path.write_text("hello world\n")
    with pytest.raises(JournalError, match="not a journal record"):
        JournalWriter.open(path)
    path.write_text('["delivery_id"]\n')
    with pytest.raises(JournalError):
        JournalWriter.open(path)


def test_bad_options_and_paths(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="fsync"):
        JournalWriter.open(tmp_path / "x.jsonl", fsync="sometimes")  # type: ignore[arg-type]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="cannot open"):
        JournalWriter.open(blocker / "x.jsonl")
    j = JournalWriter.open(tmp_path / "y.jsonl")
    j.close()
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.append_many([])


# ----------------------------------------------------------------------------- ledger pairing


def test_sync_acks_what_the_journal_already_holds(tmp_path: Path, ledger: ExecutionLedger) -> None:
    ledger.offer_many([report(i) for i in range(1, 6)], source="live", now=T0)
    with JournalWriter.open(tmp_path / "j.jsonl") as j:
        j.append_many(ledger.next_undelivered(4))  # crash before the ack
        assert ledger.acked_through == 0
        assert sync_ledger(j, ledger) == 4
        assert ledger.acked_through == 4
        assert sync_ledger(j, ledger) == 0
        assert drain_to_journal(ledger, j) == 1
        assert drain_to_journal(ledger, j) == 0
    assert [r["exec_id"] for r in lines(tmp_path / "j.jsonl")] == [f"1;{i}" for i in range(1, 6)]


def test_sync_refuses_a_journal_from_another_ledger(tmp_path: Path) -> None:
    with ExecutionLedger.open(tmp_path / "a", "acct-a", now=T0) as a:
        a.offer_many([report(i) for i in range(1, 4)], source="live", now=T0)
        with JournalWriter.open(tmp_path / "j.jsonl") as j:
            drain_to_journal(a, j)
    with ExecutionLedger.open(tmp_path / "b", "acct-b", now=T0) as b:
        b.offer(report(1), source="live", now=T0)
        with JournalWriter.open(tmp_path / "j.jsonl") as j, pytest.raises(JournalError, match="do not belong"):
            sync_ledger(j, b)
        b.offer_many([report(7), report(8)], source="live", now=T0)
        with JournalWriter.open(tmp_path / "j.jsonl") as j, pytest.raises(JournalError, match="disagree"):
            sync_ledger(j, b)


# ----------------------------------------------------------------------------- SIGKILL

CHILD = r'''
import os, sys
from sessions.message import FixMessage
from supervisor.ledger import ExecutionLedger
from supervisor.journal import JournalWriter, drain_to_journal, journal_record

state, journal_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]

def report(n):
    k = n % 7
    return FixMessage([
        (35, "8"), (37, f"O{k}"), (11, f"c{k}"), (17, f"1;{n}"), (150, "F"), (39, "1"),
        (54, "2"), (55, "KXBTC-26AUG25-T60000"), (38, "1000.00"), (14, f"{n}.00"),
        (151, f"{1000 - n}.00"), (6, "0.4100"), (44, "0.4100"), (31, "0.4100"), (32, "1.00"),
        (60, "20260825-14:03:11.512"),
    ])

ledger = ExecutionLedger.open(state, "acct-crash", now=1_900_000_000.0)
journal = JournalWriter.open(journal_path, fsync="never")
out = sys.stdout
if mode == "stream":
    # Live reports with drop-copy duplicates of earlier ones, delivered in small batches.
    for n in range(1, 200_000):
        ledger.offer(report(n), source="live", session="KalshiNR", now=1_900_000_000.0)
        if n % 3 == 0:
            ledger.offer_many([report(n - 2), report(n - 1)], source="dropcopy", now=1_900_000_000.0)
        drain_to_journal(ledger, journal, batch=1 + n % 4)
        out.write(f"acked {ledger.acked_through}\n")
        out.flush()
elif mode == "journaled":
    ledger.offer_many([report(n) for n in range(1, 21)], source="live", now=1_900_000_000.0)
    drain_to_journal(ledger, journal, batch=5)
    ledger.offer_many([report(n) for n in range(21, 31)], source="live", now=1_900_000_000.0)
    journal.append_many(ledger.next_undelivered(100))   # written, never acked
    out.write(f"journaled {journal.last_delivery_id} acked {ledger.acked_through}\n")
    out.flush()
    sys.stdin.readline()
elif mode == "torn":
    ledger.offer_many([report(n) for n in range(1, 21)], source="live", now=1_900_000_000.0)
    drain_to_journal(ledger, journal, batch=7)
    ledger.offer(report(21), source="live", now=1_900_000_000.0)
    import json
    [item] = ledger.next_undelivered(1)
    line = json.dumps(journal_record(item)).encode()
    os.write(journal._fd, line[: len(line) // 2])         # dies in the middle of a write
    out.write(f"torn {item.delivery_id}\n")
    out.flush()
    sys.stdin.readline()
'''


def start_child(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "state"), str(tmp_path / "journal.jsonl"),
         mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
    )


def read_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        assert proc.stderr is not None
        pytest.fail(f"crash child exited early ({proc.returncode}): {proc.stderr.read().decode()}")
    return line.decode().strip()


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def restart_and_finish(tmp_path: Path, through: int) -> list[dict[str, object]]:
    """What the supervisor does after the crash: reopen, sync the journal, recover everything
    up to ExecID ``1;through`` from the drop copy (duplicates included), deliver."""
    with ExecutionLedger.open(tmp_path / "state", ACCOUNT, now=T0) as lg, \
            JournalWriter.open(tmp_path / "journal.jsonl") as j:
        sync_ledger(j, lg)
        last = lg.last_exec_id(0)
        begin = 1 if last is None else last.event
        lg.hold()
        lg.offer_many([report(n) for n in range(begin, through + 1)], source="dropcopy", now=T0)
        lg.release()
        drain_to_journal(lg, j)
        assert lg.undelivered_count() == 0
    return lines(tmp_path / "journal.jsonl")


def assert_exactly_once_in_order(recs: list[dict[str, object]], through: int) -> None:
    assert [r["delivery_id"] for r in recs] == list(range(1, len(recs) + 1))
    ids = [r["exec_id"] for r in recs]
    assert sorted(ids, key=lambda s: ExecId.parse(str(s))) == [f"1;{n}" for n in range(1, through + 1)]
    per_order: dict[object, list[int]] = {}
    for r in recs:
        per_order.setdefault(r["order_id"], []).append(ExecId.parse(str(r["exec_id"])).event)
    assert all(v == sorted(v) for v in per_order.values())


@pytest.mark.parametrize("kill_after", [40, 333, 1200])
def test_sigkill_mid_delivery_loses_and_repeats_nothing(tmp_path: Path, kill_after: int) -> None:
    proc = start_child(tmp_path, "stream")
    try:
        seen = [read_line(proc) for _ in range(kill_after)]
    finally:
        kill(proc)
    acked = int(seen[-1].split()[1])
    assert acked >= kill_after  # every live report was delivered before the next was offered
    recs = restart_and_finish(tmp_path, kill_after + 25)
    assert_exactly_once_in_order(recs, kill_after + 25)


def test_sigkill_between_journal_write_and_ack(tmp_path: Path) -> None:
    proc = start_child(tmp_path, "journaled")
    try:
        line = read_line(proc)
    finally:
        kill(proc)
    assert line == "journaled 30 acked 20"
    with ExecutionLedger.open(tmp_path / "state", ACCOUNT, now=T0) as lg:
        assert lg.acked_through == 20  # the ack never happened...
    recs = restart_and_finish(tmp_path, 40)  # ...yet 21-30 are not journaled twice
    assert_exactly_once_in_order(recs, 40)


def test_sigkill_in_the_middle_of_a_journal_write(tmp_path: Path) -> None:
    proc = start_child(tmp_path, "torn")
    try:
        line = read_line(proc)
    finally:
        kill(proc)
    assert line == "torn 21"
    assert not (tmp_path / "journal.jsonl").read_bytes().endswith(b"\n")
    recs = restart_and_finish(tmp_path, 30)
    assert_exactly_once_in_order(recs, 30)
