"""Tests of sessions/store.py: both stores through one fixture, then SQLite durability, files,
errors and SIGKILL."""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from sessions.errors import StoreError
from sessions.store import (
    SCHEMA_VERSION,
    MemoryStore,
    MessageStore,
    SqliteStore,
    open_store,
    store_file_name,
)

TARGET = "KalshiRT"
SENDER = "4f0c2a9e-7d1b-4c3e-9a55-0e2b6f1d8c77"
T0 = 1_800_000_000.0

StoreFactory = Callable[..., Any]


def msg(seq: int) -> bytes:
    return b"8=FIXT.1.1\x0135=D\x0134=%d\x0111=cl-%d\x01" % (seq, seq)


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[Any] = []

    def make(*, retention_s: float = 24 * 3600, now: float = T0) -> Any:
        if request.param == "memory":
            store: Any = MemoryStore(now=now, retention_s=retention_s)
        else:
            store = SqliteStore.open(
                tmp_path / "store", TARGET, SENDER, retention_s=retention_s, now=now
            )
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Any:
    return make_store()


def send(store: Any, seq: int, *, application: bool = True, t: float | None = None) -> None:
    store.record_sent(seq, T0 + seq if t is None else t, msg(seq), application=application)


def snapshot(store: Any) -> tuple[int, int, float, list[tuple[int, bytes]]]:
    return (store.next_sender_seq, store.next_target_seq, store.creation_time, store.get_sent(1, 0))


# ----------------------------------------------------------------------------- both stores


def test_fresh_store_starts_at_one(store: Any) -> None:
    assert isinstance(store, MessageStore)
    assert store.next_sender_seq == 1
    assert store.next_target_seq == 1
    assert store.creation_time == T0
    assert store.get_sent(1, 0) == []


def test_record_sent_stores_application_messages_only(store: Any) -> None:
    send(store, 1, application=False)  # Logon
    send(store, 2)
    send(store, 3)
    send(store, 4, application=False)  # Heartbeat
    send(store, 5)
    assert store.next_sender_seq == 6
    assert store.get_sent(1, 0) == [(2, msg(2)), (3, msg(3)), (5, msg(5))]


def test_record_sent_accepts_bytes_like_and_copies(store: Any) -> None:
    buf = bytearray(msg(1))
    store.record_sent(1, T0, buf, application=True)
    buf[:] = b"changed"
    assert store.get_sent(1, 1) == [(1, msg(1))]


@pytest.mark.parametrize("bad", [4, 2, 1, 0, -1, True, 3.0])
def test_record_sent_with_wrong_seq_raises_and_changes_nothing(store: Any, bad: Any) -> None:
    send(store, 1)
    send(store, 2, application=False)
    before = snapshot(store)
    with pytest.raises(StoreError, match="next outgoing number is 3"):
        store.record_sent(bad, T0 + 9, b"bad", application=True)
    assert snapshot(store) == before
    send(store, 3)  # the right number is still accepted
    assert store.next_sender_seq == 4


def test_get_sent_ranges_and_gaps(store: Any) -> None:
    for seq in range(1, 11):
        send(store, seq, application=seq % 3 != 0)  # 3, 6, 9 are admin: gaps
    assert [s for s, _ in store.get_sent(1, 0)] == [1, 2, 4, 5, 7, 8, 10]
    assert [s for s, _ in store.get_sent(2, 5)] == [2, 4, 5]  # inclusive both ends
    assert [s for s, _ in store.get_sent(3, 3)] == []  # an admin message alone
    assert [s for s, _ in store.get_sent(7, 0)] == [7, 8, 10]
    assert [s for s, _ in store.get_sent(8, 1000)] == [8, 10]  # end past the latest
    assert store.get_sent(11, 0) == []
    assert store.get_sent(6, 4) == []  # end before begin
    assert store.get_sent(4, 4) == [(4, msg(4))]


@pytest.mark.parametrize(("begin", "end"), [(0, 5), (-1, 0), (1, -1)])
def test_get_sent_rejects_bad_range(store: Any, begin: int, end: int) -> None:
    with pytest.raises(StoreError, match="SeqNo"):
        store.get_sent(begin, end)


def test_set_next_sender_seq_forward_keeps_messages(store: Any) -> None:
    for seq in range(1, 4):
        send(store, seq)
    store.set_next_sender_seq(10)
    assert store.next_sender_seq == 10
    send(store, 10)
    assert [s for s, _ in store.get_sent(1, 0)] == [1, 2, 3, 10]


def test_set_next_sender_seq_backward_drops_reused_numbers(store: Any) -> None:
    for seq in range(1, 6):
        send(store, seq)
    store.set_next_sender_seq(3)
    assert store.next_sender_seq == 3
    assert [s for s, _ in store.get_sent(1, 0)] == [1, 2]
    store.record_sent(3, T0, b"new 3", application=True)
    assert store.get_sent(3, 0) == [(3, b"new 3")]


@pytest.mark.parametrize("bad", [0, -5, 1.0, "2"])
def test_set_seqs_reject_bad_values(store: Any, bad: Any) -> None:
    with pytest.raises(StoreError, match=">= 1"):
        store.set_next_sender_seq(bad)
    with pytest.raises(StoreError, match=">= 1"):
        store.set_next_target_seq(bad)
    assert (store.next_sender_seq, store.next_target_seq) == (1, 1)


def test_set_next_target_seq(store: Any) -> None:
    store.set_next_target_seq(42)
    assert store.next_target_seq == 42
    assert store.next_sender_seq == 1


def test_reset(store: Any) -> None:
    for seq in range(1, 5):
        send(store, seq)
    store.set_next_target_seq(17)
    store.reset(T0 + 500)
    assert snapshot(store) == (1, 1, T0 + 500, [])
    send(store, 1)
    assert store.get_sent(1, 0) == [(1, msg(1))]


def test_prune_drops_only_older_messages(store: Any) -> None:
    for seq in range(1, 7):
        send(store, seq, t=T0 + seq * 10)  # 10, 20, ... 60
    assert store.prune(T0 + 30) == 2  # 10 and 20; 30 is not *before* 30
    assert [s for s, _ in store.get_sent(1, 0)] == [3, 4, 5, 6]
    assert store.prune(T0 + 30) == 0
    assert store.next_sender_seq == 7  # pruning never touches the sequence
    assert store.prune(T0 + 1000) == 4
    assert store.get_sent(1, 0) == []
    assert store.next_sender_seq == 7


def test_memory_prune_stops_at_the_first_young_message() -> None:
    # Messages are pruned in the order they were sent: one sent after a younger one (the clock
    # stepped back) waits for the younger one to go, instead of every prune walking them all.
    store = MemoryStore(now=T0)
    for seq, t in [(1, 10), (2, 50), (3, 20), (4, 60)]:
        send(store, seq, t=T0 + t)
    assert store.prune(T0 + 30) == 1
    assert [s for s, _ in store.get_sent(1, 0)] == [2, 3, 4]
    assert store.prune(T0 + 55) == 2  # 50, then 20 behind it
    assert [s for s, _ in store.get_sent(1, 0)] == [4]


def test_memory_store_without_messages_counts_sequence_numbers_only() -> None:
    store = MemoryStore(now=T0, keep_messages=False)
    for seq in range(1, 4):
        send(store, seq, t=T0 + seq)
    assert store.next_sender_seq == 4
    assert store.get_sent(1, 0) == []


def test_a_session_without_retransmission_gets_a_store_that_keeps_no_message() -> None:
    from types import SimpleNamespace

    from sessions.driver import open_session_store

    for retransmission, kept in ((False, []), (True, [1])):
        cfg = SimpleNamespace(uses_durable_store=False, retransmission=retransmission)
        store = open_session_store(cfg, T0)
        send(store, 1, t=T0)
        assert [s for s, _ in store.get_sent(1, 0)] == kept


def test_record_sent_prunes_opportunistically(make_store: StoreFactory) -> None:
    store = make_store(retention_s=100.0)
    for seq in range(1, 2501):
        send(store, seq, t=T0 + seq / 8)  # 312.5 s of traffic, 100 s retention
    kept = [s for s, _ in store.get_sent(1, 0)]
    # Pruning runs now and then, so some expired messages may remain; but the oldest are gone,
    # nothing within the retention period of the newest message was dropped, and no gaps.
    assert kept[0] > 1
    assert kept[0] <= 2500 - 100 * 8
    assert kept == list(range(kept[0], 2501))
    assert store.next_sender_seq == 2501


def test_batch_commits_together(store: Any) -> None:
    with store.batch():
        send(store, 1)
        send(store, 2, application=False)
        store.set_next_target_seq(5)
    assert snapshot(store)[:2] == (3, 5)
    assert store.get_sent(1, 0) == [(1, msg(1))]


def test_batch_rolls_back_on_exception(store: Any) -> None:
    send(store, 1)
    store.set_next_target_seq(3)
    before = snapshot(store)
    with pytest.raises(RuntimeError, match="boom"):
        with store.batch():
            send(store, 2)
            send(store, 3, application=False)
            store.set_next_target_seq(9)
            store.set_next_sender_seq(1)  # would drop message 1
            store.reset(T0 + 99)
            send(store, 1)
            raise RuntimeError("boom")
    assert snapshot(store) == before
    send(store, 2)  # and the store carries on from the committed state
    assert [s for s, _ in store.get_sent(1, 0)] == [1, 2]


def test_wrong_seq_inside_batch_aborts_the_batch(store: Any) -> None:
    before = snapshot(store)
    with pytest.raises(StoreError):
        with store.batch():
            send(store, 1)
            send(store, 5)
    assert snapshot(store) == before


def test_nested_batches_join_the_outer_one(store: Any) -> None:
    with pytest.raises(RuntimeError):
        with store.batch():
            with store.batch():
                send(store, 1)
            assert store.next_sender_seq == 2  # visible inside the outer batch
            raise RuntimeError
    assert store.next_sender_seq == 1
    assert store.get_sent(1, 0) == []


def test_close_is_idempotent_and_final(store: Any) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        send(store, 1)
    with pytest.raises(StoreError, match="closed"):
        store.get_sent(1, 0)


def test_bad_retention_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="retention_s"):
        MemoryStore(retention_s=0)
    with pytest.raises(StoreError, match="retention_s"):
        SqliteStore.open(tmp_path, TARGET, SENDER, retention_s=-1)


# ----------------------------------------------------------------------------- SQLite: durability


def open_sqlite(directory: Path, **kw: Any) -> SqliteStore:
    kw.setdefault("now", T0)
    return SqliteStore.open(directory, TARGET, SENDER, **kw)


def test_a_new_file_has_small_pages(tmp_path: Path) -> None:
    # Each commit writes every page it touched to the WAL: 1 KiB pages for new files.
    with open_sqlite(tmp_path) as store:
        send(store, 1, application=True)
        path = store.path
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 1024


def test_state_survives_reopen(tmp_path: Path) -> None:
    with open_sqlite(tmp_path) as store:
        for seq in range(1, 8):
            send(store, seq, application=seq != 4)
        store.set_next_target_seq(12)
    with open_sqlite(tmp_path, now=T0 + 1e6) as store:  # `now` only applies to new files
        assert (store.next_sender_seq, store.next_target_seq, store.creation_time) == (8, 12, T0)
        assert [s for s, _ in store.get_sent(1, 0)] == [1, 2, 3, 5, 6, 7]
        assert store.get_sent(5, 5) == [(5, msg(5))]
        send(store, 8)
    with open_sqlite(tmp_path) as store:
        assert store.next_sender_seq == 9


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.reset(T0 + 7),
        lambda s: s.set_next_sender_seq(2),
        lambda s: s.set_next_sender_seq(40),
        lambda s: s.prune(T0 + 1e9),  # removes the newest message, which carried the seq
        lambda s: [send(s, 6, application=False), send(s, 7, application=False)],
    ],
    ids=["reset", "lower", "raise", "prune-all", "admin"],
)
def test_every_change_survives_reopen(tmp_path: Path, change: Callable[[Any], Any]) -> None:
    with open_sqlite(tmp_path) as store:
        for seq in range(1, 6):
            send(store, seq)
        change(store)
        expected = snapshot(store)
    with open_sqlite(tmp_path) as store:
        assert snapshot(store) == expected


def test_opportunistic_prune_keeps_sequence_across_reopen(tmp_path: Path) -> None:
    with open_sqlite(tmp_path, retention_s=1.0) as store:
        for seq in range(1, 1001):
            send(store, seq, t=T0)  # the 1000th call prunes with cutoff T0 - 1: nothing
        for seq in range(1001, 2001):
            send(store, seq, application=seq < 1500, t=T0 + 100)  # 2000th prunes 1..1000
        expected = snapshot(store)
    assert [s for s, _ in expected[3]] == list(range(1001, 1500))
    with open_sqlite(tmp_path) as store:
        assert snapshot(store) == expected


def test_rolled_back_batch_is_not_on_disk(tmp_path: Path) -> None:
    with open_sqlite(tmp_path) as store:
        send(store, 1)
        with pytest.raises(RuntimeError), store.batch():
            send(store, 2)
            store.set_next_target_seq(4)
            raise RuntimeError
    with open_sqlite(tmp_path) as store:
        assert snapshot(store) == (2, 1, T0, [(1, msg(1))])


def test_synchronous_option(tmp_path: Path) -> None:
    with open_sqlite(tmp_path / "a", synchronous="FULL") as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        path = store.path
    with open_sqlite(tmp_path / "b") as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreError, match="synchronous"):
        open_sqlite(tmp_path / "c", synchronous="OFF")


class FailingConnection:
    """Wraps the store's connection and fails statements starting with ``fail_on``."""

    def __init__(self, conn: sqlite3.Connection, fail_on: str, error: sqlite3.Error) -> None:
        self.conn, self.fail_on, self.error = conn, fail_on, error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith(self.fail_on):
            raise self.error
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_failed_write_raises_store_error_and_changes_nothing(tmp_path: Path) -> None:
    with open_sqlite(tmp_path) as store:
        send(store, 1)
        real = store._conn
        assert real is not None
        full = sqlite3.OperationalError("database or disk is full")
        store._conn = FailingConnection(real, "INSERT", full)  # type: ignore[assignment]
        before = snapshot(store)
        with pytest.raises(StoreError, match="disk is full") as info:
            send(store, 2)
        assert store.path in str(info.value)
        assert snapshot(store) == before
        store._conn = real
        send(store, 2)
    with open_sqlite(tmp_path) as store:
        assert [s for s, _ in store.get_sent(1, 0)] == [1, 2]


def test_a_failed_call_inside_a_batch_rolls_the_batch_back(tmp_path: Path) -> None:
    with open_sqlite(tmp_path) as store:
        send(store, 1)
        before = snapshot(store)
        real = store._conn
        assert real is not None
        io_error = sqlite3.OperationalError("disk I/O error")
        failing = FailingConnection(real, "UPDATE session SET next_target_seq", io_error)
        store._conn = failing  # type: ignore[assignment]
        with pytest.raises(StoreError, match="whole batch was rolled back"):
            with store.batch():
                send(store, 2)
                with pytest.raises(StoreError, match="I/O error"):
                    store.set_next_target_seq(7)
                send(store, 3)  # the caller carried on regardless
        store._conn = real
        assert snapshot(store) == before
    with open_sqlite(tmp_path) as store:
        assert snapshot(store) == before


# ----------------------------------------------------------------------------- SQLite: files


def test_directory_is_created_and_holds_one_file_per_session(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "er"
    a = open_store(directory, TARGET, SENDER, now=T0)
    b = open_store(directory, SENDER, TARGET, now=T0)  # the mirror session is another session
    try:
        send(a, 1)
        assert b.get_sent(1, 0) == []
        assert Path(a.path).parent == directory
        assert a.path != b.path
    finally:
        a.close()
        b.close()
    stores = sorted(p.name for p in directory.iterdir() if p.name.endswith(".sqlite3"))
    assert stores == sorted([store_file_name(TARGET, SENDER), store_file_name(SENDER, TARGET)])


@pytest.mark.parametrize(
    ("target", "sender"),
    [("../../etc", "passwd"), ("a/b", "..\\c"), (".hidden", "x\x00y"), ("K" * 500, "é€/")],
)
def test_file_name_is_sanitized(tmp_path: Path, target: str, sender: str) -> None:
    name = store_file_name(target, sender)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and ".." not in name
    assert len(name) < 200
    with SqliteStore.open(tmp_path / "d", target, sender, now=T0) as store:
        send(store, 1)
        assert Path(store.path).parent == tmp_path / "d"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [name]
    with SqliteStore.open(tmp_path / "d", target, sender) as store:
        assert store.next_sender_seq == 2


def test_ids_that_sanitize_alike_get_different_files() -> None:
    names = {
        store_file_name("a/b", "s"),
        store_file_name("a.b", "s"),
        store_file_name("a_b", "s"),
        store_file_name("A_B", "s"),
        store_file_name("s", "a_b"),
        store_file_name("a", "b_s"),
    }
    assert len(names) == 6
    assert store_file_name("a_b", "s") == store_file_name("a_b", "s")


@pytest.mark.parametrize(("target", "sender"), [("", SENDER), (TARGET, ""), (None, SENDER)])
def test_empty_comp_ids_are_refused(tmp_path: Path, target: Any, sender: Any) -> None:
    with pytest.raises(StoreError, match="CompID must be a non-empty string"):
        SqliteStore.open(tmp_path, target, sender)


def test_opening_the_same_session_twice_fails_clearly(tmp_path: Path) -> None:
    first = open_sqlite(tmp_path)
    with pytest.raises(StoreError, match="already open in this process"):
        open_sqlite(tmp_path)
    with pytest.raises(StoreError, match="already open in this process"):
        open_sqlite(Path(str(tmp_path) + "/./"))  # same file by another spelling
    send(first, 1)  # the failed attempts did not disturb the first instance
    first.close()
    with open_sqlite(tmp_path) as second:
        assert second.next_sender_seq == 2


def test_an_abandoned_instance_does_not_block_reopening(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path)
    send(store, 1)
    del store
    gc.collect()
    with open_sqlite(tmp_path) as store:
        assert store.next_sender_seq == 2


# ----------------------------------------------------------------------------- SQLite: bad files


def store_path(directory: Path) -> Path:
    return directory / store_file_name(TARGET, SENDER)


def test_garbage_file_is_reported(tmp_path: Path) -> None:
    store_path(tmp_path).write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError) as info:
        open_sqlite(tmp_path)
    assert str(store_path(tmp_path)) in str(info.value)
    assert "move it" in str(info.value)


def test_truncated_database_is_reported(tmp_path: Path) -> None:
    with open_sqlite(tmp_path) as store:
        for seq in range(1, 200):
            send(store, seq)
    data = store_path(tmp_path).read_bytes()
    assert len(data) > 8192
    # Keep a valid header but scribble over the pages after it.
    store_path(tmp_path).write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    with pytest.raises(StoreError) as info:
        with open_sqlite(tmp_path) as store:
            store.get_sent(1, 0)
    assert str(store_path(tmp_path)) in str(info.value)
    assert "damaged" in str(info.value)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(store_path(tmp_path)) as conn:
        conn.execute("CREATE TABLE something_else (x)")
    with pytest.raises(StoreError, match="not a kalshi-fix message store"):
        open_sqlite(tmp_path)
    with sqlite3.connect(store_path(tmp_path)) as conn:  # and it was left untouched
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("something_else",)]


def test_wrong_schema_version_is_refused(tmp_path: Path) -> None:
    open_sqlite(tmp_path).close()
    conn = sqlite3.connect(store_path(tmp_path))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}") as info:
        open_sqlite(tmp_path)
    assert str(store_path(tmp_path)) in str(info.value)


def test_missing_tables_are_reported_as_damage(tmp_path: Path) -> None:
    open_sqlite(tmp_path).close()
    conn = sqlite3.connect(store_path(tmp_path))
    conn.execute("DROP TABLE session")
    conn.close()
    with pytest.raises(StoreError, match="damaged"):
        open_sqlite(tmp_path)


def test_file_of_another_session_is_refused(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path, "KalshiPT", SENDER, now=T0) as other:
        other_path = other.path
    os.replace(other_path, store_path(tmp_path))
    with pytest.raises(StoreError, match="belongs to SenderCompID"):
        open_sqlite(tmp_path)


def test_unopenable_path_is_reported(tmp_path: Path) -> None:
    store_path(tmp_path).mkdir()  # a directory where the file should be
    with pytest.raises(StoreError) as info:
        open_sqlite(tmp_path)
    assert str(store_path(tmp_path)) in str(info.value)


def test_directory_that_cannot_be_created_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the message store directory"):
        open_sqlite(tmp_path / "file" / "sub")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions"
)
def test_read_only_directory_or_file_is_reported(tmp_path: Path) -> None:
    new_dir, old_dir, ro_file = tmp_path / "new", tmp_path / "old", tmp_path / "file"
    new_dir.mkdir()
    for directory in (old_dir, ro_file):
        with open_sqlite(directory) as store:
            send(store, 1)
    new_dir.chmod(0o500)
    old_dir.chmod(0o500)
    store_path(ro_file).chmod(0o400)
    try:
        for directory in (new_dir, old_dir, ro_file):
            with pytest.raises(StoreError, match="writable") as info:
                open_sqlite(directory)
            assert str(store_path(directory)) in str(info.value)
    finally:
        new_dir.chmod(0o700)
        old_dir.chmod(0o700)


# ----------------------------------------------------------------------------- SQLite: SIGKILL

CHILD = Path(__file__).with_name("store_crash_child.py")
REPO = Path(__file__).resolve().parents[2]


def load_child_module() -> Any:
    spec = importlib.util.spec_from_file_location("store_crash_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


child = load_child_module()


def start_child(directory: Path, mode: str) -> subprocess.Popen[bytes]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL  # it died mid-stream, not by finishing


def read_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        assert proc.stderr is not None
        pytest.fail(f"crash child exited early ({proc.returncode}): {proc.stderr.read().decode()}")
    return line.decode().strip()


def open_child_store(directory: Path) -> SqliteStore:
    return SqliteStore.open(directory, child.TARGET, child.SENDER)


@pytest.mark.parametrize("kill_after", [300, 1003, 1777])
def test_sigkill_mid_stream_loses_and_skips_nothing(tmp_path: Path, kill_after: int) -> None:
    proc = start_child(tmp_path, "stream")
    try:
        seen = [int(read_line(proc)) for _ in range(kill_after)]
    finally:
        kill(proc)
    assert seen == list(range(1, kill_after + 1))
    with open_child_store(tmp_path) as store:
        # The child may have committed a few numbers it had not printed yet, never fewer.
        assert store.next_sender_seq >= kill_after + 1
        stored = store.get_sent(1, 0)
        assert [seq for seq, _ in stored] == list(range(1, store.next_sender_seq))
        assert all(raw == child.payload(seq) for seq, raw in stored)
        # And the sequence carries on from there.
        seq = store.next_sender_seq
        store.record_sent(seq, child.sending_time(seq), child.payload(seq), application=True)
        assert store.next_sender_seq == seq + 1


def test_sigkill_inside_a_batch_keeps_the_previous_commit(tmp_path: Path) -> None:
    proc = start_child(tmp_path, "batch")
    try:
        committed = [read_line(proc) for _ in range(child.COMMITTED_BATCHES)]
        open_line = read_line(proc)
    finally:
        kill(proc)
    last_committed = child.COMMITTED_BATCHES * child.BATCH
    assert committed[-1] == f"committed {last_committed} {last_committed + 1}"
    assert open_line == f"open {last_committed + child.BATCH}"
    with open_child_store(tmp_path) as store:
        assert store.next_sender_seq == last_committed + 1
        assert store.next_target_seq == last_committed + 1
        stored = store.get_sent(1, 0)
        assert [seq for seq, _ in stored] == list(range(1, last_committed + 1))
        assert all(raw == child.payload(seq) for seq, raw in stored)
