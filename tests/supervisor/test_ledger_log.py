"""ExecutionLedger offer log: a live burst is one append to the ledger's ``-log`` file, written
behind into the tables in batches; a crash at any point (with the log torn, or after a
write-behind's commit but before the log was emptied) loses and repeats nothing; a log that
belongs to another ledger is ignored; a failed append falls back to a transaction."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from test_ledger_group_commit import fill, stored_keys
from test_orders import er

from supervisor import ledger as ledger_module
from supervisor.execid import ExecId
from supervisor.ledger import ExecutionLedger, LedgerError

T0 = 1_900_000_000.0
ACCOUNT = "acct-log"


def open_ledger(directory: Path, *, now: float = T0) -> ExecutionLedger:
    return ExecutionLedger.open(directory, ACCOUNT, now=now)


def files(directory: Path) -> dict[str, Path]:
    (db,) = directory.glob("*.ledger.sqlite3")
    return {"db": db, "log": Path(f"{db}-log"), "ack": Path(f"{db}-ack")}


def crash_copy(src: Path, dst: Path) -> Path:
    """What a SIGKILL leaves: every file of the (still open) ledger as it is on disk now."""
    dst.mkdir()
    for path in src.iterdir():
        shutil.copy(path, dst / path.name)
    return dst


def keys(lg: ExecutionLedger) -> list[str]:
    return [i.key for i in lg.next_undelivered(1000)]


def table_keys(lg: ExecutionLedger) -> list[str]:
    return [k for (k,) in lg._connection().execute("SELECT key FROM reports ORDER BY arrival")]


def pending(cl: str, seq: int) -> object:
    """A pending report (ExecID -1;-1): identified by its message, not an ExecID."""
    return er("-1;-1", "A", "A", cl=cl, order_id=None, header=[(34, seq), (52, f"t{seq}")])


def test_a_live_burst_is_one_append_and_the_tables_follow_in_batches(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        log = files(tmp_path)["log"]
        assert lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0) == 2
        assert log.stat().st_size > 0 and table_keys(lg) == []
        assert keys(lg) == ["1;1", "1;2"]  # delivered from memory, durable in the log
        # At the batch size the log is written behind into the tables and emptied.
        n = ledger_module.LOG_BATCH_ROWS
        for i in range(3, n + 1):
            lg.offer(fill(f"1;{i}"), source="live", now=T0)
        assert log.stat().st_size == 0
        assert table_keys(lg) == [f"1;{i}" for i in range(1, n + 1)]
        lg.offer(fill(f"1;{n + 1}"), source="live", now=T0)
        assert log.stat().st_size > 0
    # A clean close leaves the log empty: everything is in the tables.
    assert log.stat().st_size == 0
    with open_ledger(tmp_path) as lg:
        assert len(keys(lg)) == n + 1


def test_duplicates_of_logged_and_of_stored_reports_are_recognised(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer_many([fill("1;1"), pending("a", 5)], source="live", now=T0)
        # In the log only: known by key, for an execution and for a pending report alike.
        assert lg.offer_many([fill("1;1"), pending("a", 5)], source="live", now=T0) == 0
        assert lg.offer(fill("1;1"), source="dropcopy", now=T0) is False
        list(lg.history())  # written behind into the tables
        assert table_keys(lg)[0] == "1;1"
        # In the tables only: an ExecID not above its index's highest, and a pending report,
        # are looked up there.
        assert lg.offer_many([fill("1;1"), pending("a", 5)], source="live", now=T0) == 0
        assert lg.offer(pending("a", 6), source="live", now=T0) is True
        assert len(keys(lg)) == 3


def test_a_crash_after_logged_offers_keeps_them_and_the_ack(tmp_path: Path) -> None:
    live = tmp_path / "live"
    with open_ledger(live) as lg:
        lg.offer_many([fill("1;1"), fill("1;2")], source="live", now=T0)
        lg.offer(fill("2;1", cl="b", order_id="O2"), source="live", now=T0)
        cursor = lg.cursor()
        assert cursor.next() is not None and cursor.next() is not None  # acks 1;1
        assert table_keys(lg) == []  # nothing in the tables yet: log and ack file only
        crashed = crash_copy(live, tmp_path / "crashed")
    with open_ledger(crashed) as lg:
        assert lg.acked_through == 1
        assert keys(lg) == ["1;2", "2;1"]
        assert lg.last_exec_id(0) == ExecId(2, 1)
        assert files(crashed)["log"].stat().st_size == 0  # replayed into the tables
        # A drop-copy replay from the resume point repeats nothing.
        assert lg.offer_many([fill("1;2"), fill("2;1", cl="b", order_id="O2")],
                             source="dropcopy", now=T0) == 0


def test_a_torn_last_record_is_ignored_and_the_whole_ones_are_kept(tmp_path: Path) -> None:
    live = tmp_path / "live"
    with open_ledger(live) as lg:
        lg.offer(fill("1;1"), source="live", now=T0)
        size = files(live)["log"].stat().st_size
        lg.offer(fill("1;2"), source="live", now=T0)
        crashed = crash_copy(live, tmp_path / "crashed")
    log = files(crashed)["log"]
    full = log.stat().st_size
    os.truncate(log, size + (full - size) // 2)  # the second append was cut in the middle
    with open_ledger(crashed) as lg:
        assert keys(lg) == ["1;1"]
        assert lg.last_exec_id(0) == ExecId(1, 1)
        # The drop copy brings the torn one back, once.
        assert lg.offer_many([fill("1;1"), fill("1;2")], source="dropcopy", now=T0) == 1
        assert keys(lg) == ["1;1", "1;2"]


def test_a_crash_between_the_write_behind_and_emptying_the_log_repeats_nothing(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    with open_ledger(live) as lg:
        lg.offer_many([fill("1;1"), fill("1;2"), pending("a", 3)], source="live", now=T0)
        log_bytes = files(live)["log"].read_bytes()
        list(lg.history())  # written behind and committed; the log emptied
        assert files(live)["log"].stat().st_size == 0
        lg.cursor().next()
        crashed = crash_copy(live, tmp_path / "crashed")
    # As if the process had died before the log was emptied.
    files(crashed)["log"].write_bytes(log_bytes)
    with open_ledger(crashed) as lg:
        assert len(table_keys(lg)) == 3
        assert [k[:3] for k in keys(lg)] == ["1;1", "1;2", "N|8"]


def test_a_log_left_by_another_ledger_is_ignored(tmp_path: Path) -> None:
    other = tmp_path / "other"
    with open_ledger(other, now=T0) as lg:
        lg.offer(fill("9;9"), source="live", now=T0)
        stray = files(other)["log"].read_bytes()
    mine = tmp_path / "mine"
    with open_ledger(mine, now=T0 + 1):  # same account, another file (created later)
        pass
    files(mine)["log"].write_bytes(stray)
    with open_ledger(mine) as lg:
        assert keys(lg) == [] and lg.last_exec_id(0) is None


@pytest.mark.parametrize("failure", ["refused", "torn"])
def test_a_failed_append_makes_the_offers_durable_by_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    live = tmp_path / "live"
    with open_ledger(live) as lg:
        lg.offer(fill("1;1"), source="live", now=T0)
        real_write = os.write

        def full_disk(fd: int, data: bytes) -> int:
            if fd != lg._log_fd:
                return real_write(fd, data)
            if failure == "torn":
                return real_write(fd, data[: len(data) // 2])  # and no room for the rest
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ledger_module.os, "write", full_disk)
        assert lg.offer(fill("1;2"), source="live", now=T0)
        # Both offers (the logged one too) are in the tables; the log, torn tail and all,
        # is empty.
        assert table_keys(lg) == ["1;1", "1;2"]
        assert files(live)["log"].stat().st_size == 0
        crashed = crash_copy(live, tmp_path / "crashed")
    with open_ledger(crashed) as lg:
        assert keys(lg) == ["1;1", "1;2"]


def test_a_log_that_cannot_be_emptied_is_an_error_naming_it(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        lg.offer(fill("1;1"), source="live", now=T0)
        assert lg._log_fd is not None
        os.close(lg._log_fd)
        lg._log_fd = os.open(files(tmp_path)["log"], os.O_RDONLY)
        with pytest.raises(LedgerError, match="cannot empty its offer log"):
            list(lg.history())
        # The offer itself was committed to the tables before the error.
        assert table_keys(lg) == ["1;1"]


def test_a_checkpoint_runs_in_a_thread_beside_the_ledgers_own_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setattr(ledger_module, "CHECKPOINT_ROWS", 64)
    with open_ledger(tmp_path) as lg:
        cursor = lg.cursor()
        for i in range(1, 65):
            lg.offer(fill(f"1;{i}"), source="live", now=T0)
        list(lg.history())  # written behind: 64 rows went into the tables
        assert lg.checkpoint_due
        copied: list[int] = []
        worker = threading.Thread(target=lambda: copied.append(lg.checkpoint()))
        worker.start()
        # The ledger goes on meanwhile (PASSIVE: the checkpoint blocks none of this).
        for i in range(65, 200):
            lg.offer(fill(f"1;{i}"), source="live", now=T0)
            assert cursor.next() is not None
        worker.join()
        assert copied and copied[0] > 0
        assert lg.checkpoint_due  # 128 more rows were written behind meanwhile
        assert lg.checkpoint() > 0 and not lg.checkpoint_due  # from this thread too
        acked = lg.acked_through
    with open_ledger(tmp_path) as lg:
        assert len(keys(lg)) == 199 - acked  # nothing lost, nothing acked comes again


def test_a_second_ledger_of_the_account_in_another_process_is_refused_by_the_lock_file(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    with open_ledger(tmp_path):
        lock = Path(f"{files(tmp_path)['db']}-lock")
        assert lock.exists()
        code = (
            "import sys; from supervisor.ledger import ExecutionLedger, LedgerError\n"
            "try:\n"
            f"    ExecutionLedger.open({str(tmp_path)!r}, {ACCOUNT!r})\n"
            "except LedgerError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        repo = Path(__file__).resolve().parents[2]
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=repo, timeout=30)
        assert done.returncode == 3
        assert "another process holds the file" in done.stdout
    # Closed: the lock is released, the next process may open it.
    with open_ledger(tmp_path):
        pass


# --------------------------------------------------------------------------- write-behind in steps


def _logged(lg: ExecutionLedger, first: int, count: int) -> None:
    for i in range(first, first + count):
        lg.offer(fill(f"1;{i}"), source="live", now=T0)


def test_a_write_behind_in_steps_commits_once_with_the_last_row(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        _logged(lg, 1, 40)
        log = files(tmp_path)["log"]
        assert lg.write_behind_step(16) is False
        # Inside the open transaction: written, not committed, and the log still holds them.
        assert len(table_keys(lg)) == 16 and stored_keys(tmp_path) == []
        assert lg.log_rows == 40 and log.stat().st_size > 0
        assert lg.write_behind_step(16) is False
        assert lg.write_behind_step(16) is True
        assert stored_keys(tmp_path) == [f"1;{i}" for i in range(1, 41)]
        assert lg.log_rows == 0 and log.stat().st_size == 0
        assert lg.write_behind_step(16) is True  # nothing left to do


def test_offers_between_steps_go_to_the_log_and_are_written_by_the_last_step(
    tmp_path: Path,
) -> None:
    with open_ledger(tmp_path) as lg:
        _logged(lg, 1, 20)
        assert lg.write_behind_step(16) is False
        log = files(tmp_path)["log"]
        size = log.stat().st_size
        _logged(lg, 21, 5)  # each one an append to the log, durable at once
        assert log.stat().st_size > size and not lg.uncommitted
        assert lg.log_rows == 25
        assert lg.write_behind_step(16) is True
        assert stored_keys(tmp_path) == [f"1;{i}" for i in range(1, 26)]
        assert keys(lg) == [f"1;{i}" for i in range(1, 26)]
        # A duplicate of a row written in an earlier step is still recognised.
        assert lg.offer(fill("1;3"), source="live", now=T0) is False


def test_commit_and_ack_between_steps_neither_wait_for_nor_cut_short_the_write_behind(
    tmp_path: Path,
) -> None:
    with open_ledger(tmp_path) as lg:
        _logged(lg, 1, 20)
        assert lg.write_behind_step(8) is False
        lg.commit()
        cursor = lg.cursor()
        assert cursor.next() is not None and cursor.next() is not None  # acks the first
        assert lg.acked_through == 1
        # The ack went to the acknowledgement file; the write-behind is where it was.
        assert files(tmp_path)["ack"].stat().st_size > 0
        assert stored_keys(tmp_path) == [] and lg.log_rows == 20
        while not lg.write_behind_step(8):
            pass
        assert len(stored_keys(tmp_path)) == 20
    with open_ledger(tmp_path) as lg:
        assert lg.acked_through == 1 and len(keys(lg)) == 19


def test_a_crash_in_the_middle_of_a_write_behind_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    with open_ledger(live) as lg:
        _logged(lg, 1, 40)
        cursor = lg.cursor()
        assert cursor.next() is not None and cursor.next() is not None  # acks 1;1
        assert lg.write_behind_step(16) is False
        assert lg.write_behind_step(16) is False
        _logged(lg, 41, 3)
        crashed = crash_copy(live, tmp_path / "crashed")
    with open_ledger(crashed) as lg:
        assert lg.acked_through == 1
        assert keys(lg) == [f"1;{i}" for i in range(2, 44)]
        assert len(table_keys(lg)) == 43  # the log replayed; the uncommitted steps gone
        assert lg.offer_many([fill("1;43")], source="dropcopy", now=T0) == 0


def test_what_needs_the_tables_finishes_a_write_behind_in_steps(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        _logged(lg, 1, 30)
        assert lg.write_behind_step(16) is False
        lg.hold()
        assert stored_keys(tmp_path) == [f"1;{i}" for i in range(1, 31)]
        assert lg.log_rows == 0 and files(tmp_path)["log"].stat().st_size == 0
        assert lg.write_behind_step(16) is True
    with open_ledger(tmp_path) as lg:
        _logged(lg, 31, 20)
        assert lg.write_behind_step(4) is False
        # A drop-copy offer takes a transaction: it joins the write-behind and finishes it.
        assert lg.offer(fill("1;60"), source="dropcopy", now=T0) is True
        assert len(stored_keys(tmp_path)) == 51 and lg.log_rows == 0


def test_a_step_with_a_group_of_deferred_offers_open_commits_the_group(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        _logged(lg, 1, 3)
        lg.offer_many([fill("2;1", cl="b", order_id="O2")], source="dropcopy", now=T0,
                      defer_commit=True)
        assert lg.uncommitted
        assert lg.write_behind_step(1) is True
        assert not lg.uncommitted
        assert len(stored_keys(tmp_path)) == 4


def test_a_failed_step_rolls_back_and_reloads_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_ledger(tmp_path) as lg:
        _logged(lg, 1, 20)
        assert lg.write_behind_step(8) is False
        real = ExecutionLedger._catch_up

        def failing(self: ExecutionLedger, conn: sqlite3.Connection, limit: int | None = None
                    ) -> bool:
            real(self, conn, limit)
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(ExecutionLedger, "_catch_up", failing)
        with pytest.raises(LedgerError, match="write-behind failed .disk I/O error"):
            lg.write_behind_step(8)
        monkeypatch.setattr(ExecutionLedger, "_catch_up", real)
        # The reload replayed the log into the tables: every offer is there, once.
        assert len(stored_keys(tmp_path)) == 20 and lg.log_rows == 0
        assert keys(lg) == [f"1;{i}" for i in range(1, 21)]


def test_write_behind_step_refuses_a_step_of_no_rows(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as lg:
        with pytest.raises(LedgerError, match="rows >= 1"):
            lg.write_behind_step(0)
