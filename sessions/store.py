"""The durable sequence/message store of one FIX session.

Per SessionID (TargetCompID + SenderCompID) the store keeps the next outgoing sequence number,
the next expected incoming one, the time the sequence was last reset, and the application
messages we sent within a retention period, so that a peer's ResendRequest can be answered.

The sans-IO session core calls it synchronously and passes time in as float epoch seconds; the
store never reads the clock except in :meth:`SqliteStore.open` when a brand-new file is created
and no ``now`` was given (opening a file is a driver/supervisor action, not a core one).

Two implementations share the :class:`MessageStore` protocol:

* :class:`MemoryStore` — in memory, for tests and endpoints that need no durability.
* :class:`SqliteStore` — one SQLite file per SessionID, WAL mode. Every call is one committed
  transaction before it returns, so a process killed with SIGKILL loses nothing it was told
  about and never skips or repeats a number. ``synchronous="NORMAL"`` (default) survives process
  crashes; surviving power loss or a kernel crash needs ``synchronous="FULL"``, which adds an
  fsync per commit.

Opening the same session twice in one process is refused with :class:`StoreError`: two instances
would each cache the sequence numbers and silently hand out the same number twice. Share the one
instance, or close it before reopening. Exclusion between processes is the supervisor's job (it
holds an OS lock); the store does not add one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Literal, Protocol, runtime_checkable

from sessions.errors import StoreError

__all__ = [
    "DEFAULT_RETENTION_S",
    "MemoryStore",
    "MessageStore",
    "SCHEMA_VERSION",
    "SqliteStore",
    "open_store",
    "store_file_name",
]

#: Kalshi's default MessageRetentionPeriod (24 h); the exchange's maximum is 72 h.
DEFAULT_RETENTION_S: float = 24 * 3600.0

#: Version of the on-disk layout, kept in SQLite's ``user_version``. Bump on any schema change.
SCHEMA_VERSION = 1

# SQLite's application_id marks a file as ours, so a foreign SQLite database that happens to sit
# in the store directory is refused instead of being "upgraded" with our tables. ASCII "KFXS".
_APPLICATION_ID = 0x4B465853

# record_sent prunes once per this many calls: often enough to bound the file, rarely enough that
# the indexed range delete costs nothing noticeable per message.
_PRUNE_EVERY = 1000

_Synchronous = Literal["NORMAL", "FULL"]


@runtime_checkable
class MessageStore(Protocol):
    """What the session core needs from a sequence/message store (see module docstring)."""

    @property
    def next_sender_seq(self) -> int:
        """The MsgSeqNum our next outgoing message will carry (starts at 1)."""
        ...

    @property
    def next_target_seq(self) -> int:
        """The MsgSeqNum we expect on the next incoming message (starts at 1)."""
        ...

    @property
    def creation_time(self) -> float:
        """When the sequence numbers were last reset (epoch seconds)."""
        ...

    def set_next_sender_seq(self, n: int) -> None:
        """Set the next outgoing MsgSeqNum. Lowering it drops stored messages numbered ``>= n``."""
        ...

    def set_next_target_seq(self, n: int) -> None:
        """Set the next expected incoming MsgSeqNum."""
        ...

    def record_sent(self, seq: int, sending_time: float, raw: bytes, *, application: bool) -> None:
        """Persist that message ``seq`` was sent: store ``raw`` (application messages only) and
        set ``next_sender_seq = seq + 1``, atomically. ``seq`` must equal ``next_sender_seq``."""
        ...

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """Stored messages with ``begin <= seq <= end`` (``end == 0``: through the latest),
        ascending by seq. Admin messages were never stored, so the result may have gaps."""
        ...

    def reset(self, now: float) -> None:
        """Both sequence numbers back to 1, all messages dropped, ``creation_time = now``."""
        ...

    def prune(self, older_than: float) -> int:
        """Drop messages whose sending time is before ``older_than``; return how many."""
        ...

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group the calls made inside the ``with`` block into one all-or-nothing transaction."""
        ...

    def close(self) -> None:
        """Release the store. Idempotent."""
        ...


def _check_seq(name: str, n: int) -> None:
    if type(n) is not int or n < 1:
        raise StoreError(f"{name} must be an integer >= 1, got {n!r}")


def _check_retention(retention_s: float) -> None:
    if not retention_s > 0:
        raise StoreError(f"retention_s must be > 0 seconds, got {retention_s!r}")


_ABSENT = object()  # undo-log marker: the message slot was empty before the batch


class MemoryStore:
    """:class:`MessageStore` kept in memory only: same rules as :class:`SqliteStore`, no file.

    Use it in tests and for sessions that always log on with ResetSeqNumFlag=Y (KalshiNR, DC,
    RFQ, MD), where nothing needs to survive a restart. With ``keep_messages=False`` it counts
    sequence numbers only and keeps no sent message (:meth:`get_sent` finds none): for a session
    that answers no ResendRequest, which would otherwise hold a day of messages it never reads.
    """

    def __init__(
        self,
        *,
        now: float = 0.0,
        retention_s: float = DEFAULT_RETENTION_S,
        keep_messages: bool = True,
    ) -> None:
        _check_retention(retention_s)
        self._retention_s = float(retention_s)
        self._keep = keep_messages
        self._sender = 1
        self._target = 1
        self._creation_time = float(now)
        self._messages: dict[int, tuple[float, bytes]] = {}
        self._since_prune = 0
        self._batch_depth = 0
        # Inside a batch: the original entry of every message slot touched (or _ABSENT), so a
        # rollback restores them. An undo log rather than a snapshot keeps a batch O(changes),
        # not O(messages retained).
        self._undo: dict[int, object] | None = None
        self._closed = False

    def _remember(self, seq: int) -> None:
        undo = self._undo
        if undo is not None and seq not in undo:
            undo[seq] = self._messages.get(seq, _ABSENT)

    def __repr__(self) -> str:
        return (
            f"MemoryStore(next_sender_seq={self._sender}, next_target_seq={self._target}, "
            f"messages={len(self._messages)})"
        )

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def retention_s(self) -> float:
        """How long sent application messages are kept for resends (seconds)."""
        return self._retention_s

    @property
    def next_sender_seq(self) -> int:
        """The MsgSeqNum our next outgoing message will carry."""
        return self._sender

    @property
    def next_target_seq(self) -> int:
        """The MsgSeqNum we expect on the next incoming message."""
        return self._target

    @property
    def creation_time(self) -> float:
        """When the sequence numbers were last reset (epoch seconds)."""
        return self._creation_time

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the in-memory message store is closed; create a new one")

    def set_next_sender_seq(self, n: int) -> None:
        """Set the next outgoing MsgSeqNum. Lowering it drops stored messages numbered ``>= n``
        (those numbers will be reused, so their old contents must never be resent)."""
        self._check_open()
        _check_seq("next_sender_seq", n)
        if n < self._sender:
            for seq in [s for s in self._messages if s >= n]:
                self._remember(seq)
                del self._messages[seq]
        self._sender = n

    def set_next_target_seq(self, n: int) -> None:
        """Set the next expected incoming MsgSeqNum."""
        self._check_open()
        _check_seq("next_target_seq", n)
        self._target = n

    def record_sent(self, seq: int, sending_time: float, raw: bytes, *, application: bool) -> None:
        """Record message ``seq`` as sent; see :meth:`MessageStore.record_sent`."""
        self._check_open()
        if seq != self._sender or type(seq) is not int:
            raise StoreError(
                f"record_sent got MsgSeqNum {seq!r} but the next outgoing number is "
                f"{self._sender}; a skipped or repeated number is a bug in the caller"
            )
        if application and self._keep:
            self._remember(seq)
            self._messages[seq] = (float(sending_time), bytes(raw))
        self._sender = seq + 1
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            self.prune(sending_time - self._retention_s)

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """Stored messages in ``[begin, end]`` (``end == 0``: through the latest), ascending."""
        self._check_open()
        _check_range(begin, end)
        return [
            (seq, self._messages[seq][1])
            for seq in sorted(self._messages)
            if seq >= begin and (end == 0 or seq <= end)
        ]

    def reset(self, now: float) -> None:
        """Both sequence numbers back to 1, messages dropped, ``creation_time = now``."""
        self._check_open()
        for seq in self._messages:
            self._remember(seq)
        self._messages.clear()
        self._sender = 1
        self._target = 1
        self._creation_time = float(now)

    def prune(self, older_than: float) -> int:
        """Drop messages sent before ``older_than``; return how many were dropped."""
        self._check_open()
        # The messages are held in the order they were sent, so the old ones lead: stop at the
        # first young one. Walking all of them ran every _PRUNE_EVERY sends over everything
        # retained (a day of an order session's messages). One left behind a younger one (the
        # clock stepped back) goes at a later prune.
        old = []
        for seq, (t, _) in self._messages.items():
            if t >= older_than:
                break
            old.append(seq)
        for seq in old:
            self._remember(seq)
            del self._messages[seq]
        return len(old)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """All calls inside the block take effect together, or (on an exception) not at all.
        Nested batches join the outermost one."""
        self._check_open()
        if self._batch_depth:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
            return
        saved = (self._sender, self._target, self._creation_time)
        self._undo = {}
        self._batch_depth = 1
        try:
            yield
        except BaseException:
            self._sender, self._target, self._creation_time = saved
            for seq, old in self._undo.items():
                if old is _ABSENT:
                    self._messages.pop(seq, None)
                else:
                    self._messages[seq] = old  # type: ignore[assignment]
            raise
        finally:
            self._batch_depth = 0
            self._undo = None

    def close(self) -> None:
        """Mark the store closed; later calls raise :class:`StoreError`. Idempotent."""
        self._closed = True


def _check_range(begin: int, end: int) -> None:
    if type(begin) is not int or begin < 1:
        raise StoreError(f"get_sent: BeginSeqNo must be an integer >= 1, got {begin!r}")
    if type(end) is not int or end < 0:
        raise StoreError(f"get_sent: EndSeqNo must be an integer >= 0 (0 = latest), got {end!r}")


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def store_file_name(target_comp_id: str, sender_comp_id: str) -> str:
    """The file name (no directory) of a session's store.

    CompIDs come from configuration and the wire, so they are never used verbatim: every run of
    characters outside ``[A-Za-z0-9_-]`` becomes ``_`` (no dots, so no ``..`` and no hidden
    files; no separators), each part is capped at 64 characters, and a hash of the exact pair is
    appended so that IDs which sanitize alike ("a/b", "a.b") or differ only in case still get
    different files.
    """
    for label, value in (("TargetCompID", target_comp_id), ("SenderCompID", sender_comp_id)):
        if not isinstance(value, str) or not value:
            raise StoreError(f"{label} must be a non-empty string, got {value!r}")
    digest = hashlib.sha256(
        f"{len(sender_comp_id)}:{sender_comp_id}|{target_comp_id}".encode("utf-8", "surrogatepass")
    ).hexdigest()[:16]
    sender = _UNSAFE.sub("_", sender_comp_id)[:64]
    target = _UNSAFE.sub("_", target_comp_id)[:64]
    return f"{sender}--{target}--{digest}.fixstore.sqlite3"


# Stores open in this process, by (st_dev, st_ino) of their file, to refuse a second instance.
_open_lock = threading.Lock()
_open_stores: dict[tuple[int, int], weakref.ref[SqliteStore]] = {}

_SQL_SENDER_ONLY = "UPDATE session SET next_sender_seq = ? WHERE id = 1"
_SQL_TARGET = "UPDATE session SET next_target_seq = ? WHERE id = 1"
_SQL_INSERT = "INSERT INTO messages (seq, sending_time, raw) VALUES (?, ?, ?)"
_SQL_PRUNE = "DELETE FROM messages WHERE sending_time < ?"
_SQL_DROP_FROM = "DELETE FROM messages WHERE seq >= ?"
_SQL_GET_RANGE = "SELECT seq, raw FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq"
_SQL_GET_FROM = "SELECT seq, raw FROM messages WHERE seq >= ? ORDER BY seq"
# The persisted next_sender_seq is the larger of the session row's value and the newest stored
# message + 1: an application message is persisted by its INSERT alone (one statement, one
# commit), and every operation that deletes messages first writes the session row.
_SQL_LOAD_SENDER = (
    "SELECT max(s.next_sender_seq, coalesce((SELECT max(seq) FROM messages), 0) + 1) "
    "FROM session AS s WHERE s.id = 1"
)

_SCHEMA = """
CREATE TABLE session (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    target_comp_id TEXT NOT NULL,
    sender_comp_id TEXT NOT NULL,
    next_sender_seq INTEGER NOT NULL CHECK (next_sender_seq >= 1),
    next_target_seq INTEGER NOT NULL CHECK (next_target_seq >= 1),
    creation_time REAL NOT NULL
);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    sending_time REAL NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX messages_by_time ON messages (sending_time);
"""


class SqliteStore:
    """:class:`MessageStore` in one SQLite file per SessionID (WAL mode). Create with :meth:`open`.

    Every method call is its own committed transaction (or part of an enclosing :meth:`batch`).
    The sequence numbers are cached in memory and updated only after the database accepted the
    change, so the properties cost nothing. Not thread-safe: use it from one thread.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        *,
        retention_s: float,
        sender: int,
        target: int,
        creation_time: float,
    ) -> None:
        """Internal: use :meth:`SqliteStore.open`."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._retention_s = retention_s
        self._sender = sender
        self._target = target
        self._creation_time = creation_time
        self._since_prune = 0
        self._batch_depth = 0
        self._batch_failed = False
        self._key: tuple[int, int] | None = None

    # ----------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        target_comp_id: str,
        sender_comp_id: str,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        now: float | None = None,
        synchronous: _Synchronous = "NORMAL",
    ) -> SqliteStore:
        """Open (creating if needed) the store of SessionID ``sender_comp_id``→``target_comp_id``
        in ``directory`` (created if missing).

        ``now`` becomes ``creation_time`` of a new file (the clock is read if it is ``None``); an
        existing file keeps its own. ``synchronous="FULL"`` makes each commit survive power loss
        at the price of an fsync; the default ``"NORMAL"`` survives process crashes only.

        Raises :class:`StoreError` naming the file when it cannot be created, is damaged, is not
        a kalshi-fix store, was written by another schema version or belongs to another session,
        or when this process already has it open.
        """
        _check_retention(retention_s)
        if synchronous not in ("NORMAL", "FULL"):
            raise StoreError(f'synchronous must be "NORMAL" or "FULL", got {synchronous!r}')
        name = store_file_name(target_comp_id, sender_comp_id)
        directory = os.fspath(directory)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the message store directory {directory!r}: {e.strerror or e}; "
                "create it (writable by this user) or configure another directory"
            ) from e
        path = os.path.join(directory, name)
        with _open_lock:
            key = _file_key(path)
            if key is not None:
                _refuse_if_open(key, path)
            conn = _connect(path)
            try:
                store = cls._initialise(
                    conn,
                    path,
                    target_comp_id=target_comp_id,
                    sender_comp_id=sender_comp_id,
                    retention_s=float(retention_s),
                    now=now,
                    synchronous=synchronous,
                )
                key = _file_key(path)
                if key is not None:
                    _refuse_if_open(key, path)
                    _open_stores[key] = weakref.ref(store)
                    store._key = key
            except BaseException:
                conn.close()
                raise
        return store

    @classmethod
    def _initialise(
        cls,
        conn: sqlite3.Connection,
        path: str,
        *,
        target_comp_id: str,
        sender_comp_id: str,
        retention_s: float,
        now: float | None,
        synchronous: str,
    ) -> SqliteStore:
        try:
            # A new file gets 1 KiB pages (an existing one keeps its own): each commit writes
            # every page it touched to the WAL, and a message's row is a few hundred bytes.
            conn.execute("PRAGMA page_size = 1024")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"message store {path!r}: SQLite refused WAL mode (got {mode!r}); the "
                    "directory must be on a local filesystem that supports shared memory — "
                    "configure a directory on a local disk"
                )
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            # Checked and created under one write lock, so a half-created file is impossible.
            conn.execute("BEGIN IMMEDIATE")
            try:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if app_id == 0 and version == 0 and tables == 0:
                    creation = float(time.time() if now is None else now)
                    # Statement by statement: executescript() would COMMIT our transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO session VALUES (1, ?, ?, 1, 1, ?)",
                        (target_comp_id, sender_comp_id, creation),
                    )
                    conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                else:
                    _verify_existing(conn, path, app_id, version)
                try:
                    row = conn.execute(
                        "SELECT target_comp_id, sender_comp_id, next_sender_seq, "
                        "next_target_seq, creation_time FROM session WHERE id = 1"
                    ).fetchone()
                    if row is not None:
                        row = (*row[:2], conn.execute(_SQL_LOAD_SENDER).fetchone()[0], *row[3:])
                except sqlite3.OperationalError:
                    row = None  # our file, but its tables are gone: reported as damaged below
                if row is not None:
                    # A read-only file opens fine and would only fail at the first record_sent;
                    # a no-op write makes open() report it instead.
                    conn.execute("UPDATE session SET id = id WHERE id = 1")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise _translate(e, path, "open") from e
        if row is None:
            raise StoreError(
                f"message store {path!r} has no session row: the file is damaged; move it aside "
                "and log on with ResetSeqNumFlag=Y (141=Y) to start a fresh sequence"
            )
        stored_target, stored_sender, sender, target, creation_time = row
        if (stored_target, stored_sender) != (target_comp_id, sender_comp_id):
            raise StoreError(
                f"message store {path!r} belongs to SenderCompID={stored_sender!r} "
                f"TargetCompID={stored_target!r}, not SenderCompID={sender_comp_id!r} "
                f"TargetCompID={target_comp_id!r}; the file was renamed or copied — move it aside"
            )
        return cls(
            conn,
            path,
            retention_s=retention_s,
            sender=int(sender),
            target=int(target),
            creation_time=float(creation_time),
        )

    # ----------------------------------------------------------------------------- state

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return (
            f"SqliteStore({self._path!r}, {state}, next_sender_seq={self._sender}, "
            f"next_target_seq={self._target})"
        )

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The store's file."""
        return self._path

    @property
    def retention_s(self) -> float:
        """How long sent application messages are kept for resends (seconds)."""
        return self._retention_s

    @property
    def next_sender_seq(self) -> int:
        """The MsgSeqNum our next outgoing message will carry."""
        return self._sender

    @property
    def next_target_seq(self) -> int:
        """The MsgSeqNum we expect on the next incoming message."""
        return self._target

    @property
    def creation_time(self) -> float:
        """When the sequence numbers were last reset (epoch seconds)."""
        return self._creation_time

    # ----------------------------------------------------------------------------- transactions

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreError(f"message store {self._path!r} is closed; open it again")
        return conn

    def _failed(self, e: sqlite3.Error, what: str) -> StoreError:
        """Translate a write error. Inside a batch the failed call may have left part of its
        work in the open transaction, so the batch is marked to roll back even if the caller
        catches the error."""
        if self._batch_depth:
            self._batch_failed = True
        return _translate(e, self._path, what)

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One committed transaction, or just the enclosing batch's. Errors become StoreError
        and leave the database (and, outside a batch, the caches) as they were."""
        conn = self._connection()
        if self._batch_depth:
            try:
                yield conn
            except sqlite3.Error as e:
                raise self._failed(e, what) from e
            return
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise self._failed(e, what) from e
            raise

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group every call inside the ``with`` block into one transaction, committed when the
        block ends. If the block raises (or the process dies before the end) none of its calls
        take effect and the previous committed state stays. Nested batches join the outermost.
        """
        conn = self._connection()
        if self._batch_depth:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
            return
        saved = (self._sender, self._target, self._creation_time, self._since_prune)
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as e:
            raise _translate(e, self._path, "batch") from e
        self._batch_depth = 1
        self._batch_failed = False
        try:
            yield
            if self._batch_failed:
                raise StoreError(
                    f"message store {self._path!r}: a call inside the batch failed, so the whole "
                    "batch was rolled back; nothing in it was stored"
                )
            conn.execute("COMMIT")
        except BaseException as e:
            # Restore the caches first: they must match the database whatever happens next.
            self._sender, self._target, self._creation_time, self._since_prune = saved
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise _translate(e, self._path, "batch commit") from e
            raise
        finally:
            self._batch_depth = 0
            self._batch_failed = False

    # ----------------------------------------------------------------------------- the API

    def set_next_sender_seq(self, n: int) -> None:
        """Set the next outgoing MsgSeqNum. Lowering it drops stored messages numbered ``>= n``
        (those numbers will be reused, so their old contents must never be resent)."""
        _check_seq("next_sender_seq", n)
        with self._transaction("set_next_sender_seq") as conn:
            if n < self._sender:
                conn.execute(_SQL_DROP_FROM, (n,))
            conn.execute(_SQL_SENDER_ONLY, (n,))
        self._sender = n

    def set_next_target_seq(self, n: int) -> None:
        """Set the next expected incoming MsgSeqNum (committed before returning)."""
        _check_seq("next_target_seq", n)
        conn = self._connection()
        try:
            # Outside a batch a lone statement is its own atomic, committed transaction.
            conn.execute(_SQL_TARGET, (n,))
        except sqlite3.Error as e:
            raise self._failed(e, "set_next_target_seq") from e
        self._target = n

    def record_sent(self, seq: int, sending_time: float, raw: bytes, *, application: bool) -> None:
        """Persist that message ``seq`` was sent at ``sending_time``: its bytes when
        ``application`` is true, and ``next_sender_seq = seq + 1`` — in one transaction,
        committed before returning (unless inside :meth:`batch`).

        Raises :class:`StoreError`, changing nothing, if ``seq`` is not ``next_sender_seq``.
        Every 1000 calls it also drops messages older than ``sending_time - retention_s``.
        """
        if seq != self._sender or type(seq) is not int:
            raise StoreError(
                f"record_sent got MsgSeqNum {seq!r} but the next outgoing number is "
                f"{self._sender} ({self._path}); a skipped or repeated number is a bug in the "
                "caller"
            )
        if type(raw) is not bytes:
            raw = bytes(raw)  # bytearray/memoryview: copy now; a str fails here, not in SQLite
        conn = self._connection()
        prune = self._since_prune + 1 >= _PRUNE_EVERY
        if not prune:
            # One statement: outside a batch it is its own atomic, committed transaction, which
            # halves the pages written per commit compared with INSERT + UPDATE. The stored row
            # itself records the sequence number (see _SQL_LOAD_SENDER).
            try:
                if application:
                    conn.execute(_SQL_INSERT, (seq, sending_time, raw))
                else:
                    conn.execute(_SQL_SENDER_ONLY, (seq + 1,))
            except sqlite3.Error as e:
                raise self._failed(e, "record_sent") from e
        else:
            with self._transaction("record_sent") as c:
                if application:
                    c.execute(_SQL_INSERT, (seq, sending_time, raw))
                # The session row must carry the number before pruning can remove the newest
                # message, or the sequence would go backwards on reopen.
                c.execute(_SQL_SENDER_ONLY, (seq + 1,))
                c.execute(_SQL_PRUNE, (sending_time - self._retention_s,))
        self._sender = seq + 1
        self._since_prune = 0 if prune else self._since_prune + 1

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """Stored messages in ``[begin, end]`` (``end == 0``: through the latest), ascending by
        seq. Admin messages were never stored, so expect gaps (answer them with a GapFill)."""
        _check_range(begin, end)
        conn = self._connection()
        try:
            if end == 0:
                rows = conn.execute(_SQL_GET_FROM, (begin,)).fetchall()
            else:
                rows = conn.execute(_SQL_GET_RANGE, (begin, end)).fetchall()
        except sqlite3.Error as e:
            raise _translate(e, self._path, "get_sent") from e
        return [(seq, bytes(raw)) for seq, raw in rows]

    def reset(self, now: float) -> None:
        """Both sequence numbers back to 1, all messages dropped, ``creation_time = now``."""
        with self._transaction("reset") as conn:
            conn.execute("DELETE FROM messages")
            conn.execute(
                "UPDATE session SET next_sender_seq = 1, next_target_seq = 1, creation_time = ? "
                "WHERE id = 1",
                (float(now),),
            )
        self._sender = 1
        self._target = 1
        self._creation_time = float(now)

    def prune(self, older_than: float) -> int:
        """Drop messages sent before ``older_than`` (epoch seconds); return how many."""
        with self._transaction("prune") as conn:
            # As in record_sent: persist the sequence before its newest witness may go.
            conn.execute(_SQL_SENDER_ONLY, (self._sender,))
            count = conn.execute(_SQL_PRUNE, (older_than,)).rowcount
        return int(count)

    def close(self) -> None:
        """Close the file (uncommitted batch work is discarded). Idempotent."""
        conn, self._conn = self._conn, None
        with _open_lock:
            if self._key is not None and _open_stores.get(self._key) is not None:
                if _open_stores[self._key]() in (self, None):
                    del _open_stores[self._key]
            self._key = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as e:
                raise _translate(e, self._path, "close") from e


def open_store(
    directory: str | os.PathLike[str],
    target_comp_id: str,
    sender_comp_id: str,
    *,
    retention_s: float = DEFAULT_RETENTION_S,
    now: float | None = None,
    synchronous: _Synchronous = "NORMAL",
) -> SqliteStore:
    """Shorthand for :meth:`SqliteStore.open` (same arguments)."""
    return SqliteStore.open(
        directory,
        target_comp_id,
        sender_comp_id,
        retention_s=retention_s,
        now=now,
        synchronous=synchronous,
    )


# ----------------------------------------------------------------------------- helpers


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _refuse_if_open(key: tuple[int, int], path: str) -> None:
    ref = _open_stores.get(key)
    other = ref() if ref is not None else None
    if other is not None and other._conn is not None:
        raise StoreError(
            f"message store {path!r} is already open in this process; share that SqliteStore "
            "instance or close it first (two instances would hand out the same MsgSeqNum)"
        )


def _connect(path: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so the transaction boundaries
        # are exactly the documented ones. A short busy timeout: the supervisor guarantees a
        # single writer, so waiting long would only hide a misconfiguration.
        return sqlite3.connect(path, isolation_level=None, timeout=1.0, cached_statements=64)
    except sqlite3.Error as e:
        raise _translate(e, path, "open") from e


def _verify_existing(conn: sqlite3.Connection, path: str, app_id: int, version: int) -> None:
    if app_id != _APPLICATION_ID:
        raise StoreError(
            f"{path!r} is an SQLite database but not a kalshi-fix message store "
            f"(application_id {app_id:#x}); move it out of the store directory"
        )
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"message store {path!r} has schema version {version}, this program expects "
            f"{SCHEMA_VERSION}; run the matching program version, or move the file aside and log "
            "on with ResetSeqNumFlag=Y (141=Y)"
        )


_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FORMAT"}
_ACCESS = {"SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH"}
_BUSY = {"SQLITE_BUSY", "SQLITE_LOCKED"}


def _translate(e: sqlite3.Error, path: str, what: str) -> StoreError:
    """Turn an sqlite3 error into a StoreError naming the file and the remedy."""
    code = getattr(e, "sqlite_errorname", "") or ""
    base = code.split("_", 2)[:2]
    family = "_".join(base)
    if family in _CORRUPT or "not a database" in str(e) or "malformed" in str(e):
        advice = (
            "the file is damaged or not a kalshi-fix store; move it (and its -wal/-shm files) "
            "aside and log on with ResetSeqNumFlag=Y (141=Y) to start a fresh sequence"
        )
    elif family in _ACCESS or "unable to open" in str(e) or "readonly" in str(e):
        advice = (
            "check that the file and its directory exist and are readable and writable by this "
            "user (SQLite also creates -wal and -shm files next to it)"
        )
    elif family in _BUSY:
        advice = "another process holds the file; only one supervisor may run a session"
    elif family == "SQLITE_FULL":
        advice = "the disk is full; free space"
    elif family == "SQLITE_IOERR":
        advice = "the disk or filesystem reported an I/O error; check it before going on"
    elif isinstance(e, sqlite3.ProgrammingError):
        advice = "use the store only from the thread that opened it, and only until close()"
    else:
        advice = "see the SQLite error"
    return StoreError(f"message store {path!r}: {what} failed ({e}); {advice}")
