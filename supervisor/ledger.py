"""The execution ledger: exactly-once delivery of the account's executions, across crashes.

Every ExecutionReport the supervisor receives — live from an order-entry session, or replayed by
the drop copy — is *offered* to the ledger. The ledger de-duplicates, persists, orders and queues
it for the application; the application *acks* what it has consumed. All of it lives in one
SQLite file (with an offer log and a small acknowledgement file beside it, see "The offer log"
and "Acks"), so a SIGKILL at any point neither loses nor repeats an execution.

**One file per account** (not per order-entry session): ExecIDs are unique per exchange index
across the whole account, and a drop-copy replay returns the account's reports whichever session
entered the orders. One ledger per account is therefore one de-duplication space, and one
resume point per exchange index for the single drop-copy session that serves the account.

Identity (what "the same report" means):

* A real execution (ExecID other than ``-1;-1``, ExecType not Rejected) is identified by its
  ExecID. The first copy wins, whichever stream brought it; later copies are duplicates.
* Pending reports (``-1;-1``), rejects (150=8) and OrderCancelRejects (35=9) have no ExecID
  identity. The drop copy never replays them (REFERENCE §6), so they are taken **from the live
  stream only** (a drop-copy copy is ignored: it could not be told from the live one). Their
  identity is the carrying message: ClOrdID, ExecType, OrdStatus and the *original* SendingTime
  (OrigSendingTime(122) on a PossDup retransmission, else SendingTime(52)) with MsgSeqNum(34) —
  so a KalshiRT retransmission is recognised, while a second reject for a retried request (same
  ClOrdID, new message) is delivered. Without 52/34 the Text(58) stands in for them.

Order of delivery: reports are *released* into the delivery queue in arrival order, except that
within one order (OrderID, or ClOrdID when there is none) the real executions of a release take
the order's slots in ExecID order. Between a gap (disconnect, sequence gap, restart) and the end
of its drop-copy recovery the supervisor calls :meth:`ExecutionLedger.hold`: offers are stored
but not released, and :meth:`ExecutionLedger.release` then merges the replay with the live reports
that arrived meanwhile. A report older than one of its order's already released ones can only
arrive if no hold covered the gap; it is still delivered (exactly once), flagged ``late``.

Delivery contract: :meth:`~ExecutionLedger.next_undelivered` returns released, un-acked items
in delivery order; :meth:`~ExecutionLedger.ack` persists progress. Delivery is at-least-once
until ack; a consumer that acks each item when it asks for the next one (:class:`DeliveryCursor`,
the model for the application's async iterator) sees every execution exactly once, provided
processing an item is finished before asking for the next. The journal of standalone mode makes
that last step durable too (see :mod:`supervisor.journal`).

Resume points: :meth:`~ExecutionLedger.last_exec_id` is the highest ExecID stored per exchange
index (durable with the report it came from; see "Marks" below). While a hold is in force it is the value
from when the hold began: live reports received during a recovery must not move the resume
point past the gap still being replayed (a crash mid-recovery would otherwise skip it).

Group commit (durability). A commit costs far more than the statements in it (each page it
writes goes through the WAL), so offers may be *deferred*: ``offer_many(..., defer_commit=True)``
stores them in an open transaction that later offers join (a live burst: in a record not yet
appended to the offer log), and one commit makes the whole group
durable — :meth:`~ExecutionLedger.commit`, or whichever call comes first that hands items out
(:meth:`~ExecutionLedger.next_undelivered`, :meth:`~ExecutionLedger.get`,
:meth:`~ExecutionLedger.history`) or changes state (ack, hold, release, prune, close). The
rules that keep exactly-once:

* nothing is handed to the application before it is committed — otherwise a crash would lose
  the row, the drop copy would replay the execution and the application would see it twice;
* an ack that finds deferred offers commits with them (one commit for both). An ack is durable
  before the call returns, so before the next item can be handed out;
* the executions stream (:mod:`supervisor.streams`) commits at the end of every burst of
  events at the latest, and reconciliation commits before it writes its own resume points;
* a failed commit rolls the whole group back and reloads the in-memory state from the file.

What a crash can lose is only what was received and not yet committed. That window already
existed: the session core commits a chunk's inbound sequence numbers before the observers see
its messages, so a report read from the socket but not yet in the ledger is not resent by the
session. Real executions in it are recovered from the drop copy, which replays from the
persisted resume points (every resume point on disk is covered by committed reports).
Pending reports and rejects, which the drop copy never replays, are lost in that window as they
were before; the group only widens it from one message to one burst of messages.

Marks. The resume point per exchange index and the mark per order (its highest released ExecID,
which the ``late`` flag compares against) live in memory and are written to their tables only
when something is about to depend on the tables: at :meth:`~ExecutionLedger.hold` (the anchors
copy the resume points) and at :meth:`~ExecutionLedger.prune` (the reports they came from are
deleted). Opening a ledger rebuilds them from the stored reports, so a crash loses nothing, and
an offer writes only the report and its queue entry.

Delivery from memory. Reading back what this process has just stored would cost a query and
a decode per item, so the ledger keeps the reports it released (and those staged under a hold)
in memory, as the offered messages, until they are acked; :meth:`~ExecutionLedger.next_undelivered`
serves them from there — after the same commit, so nothing undurable is handed out. Whatever
memory does not hold is read from the file: after a restart, after the reload that follows a
failed commit, and beyond a bound of 16,384 items (about 4 KB each, so a large backlog costs at
most some 70 MB). The file stays the only source of truth; memory is only a copy of committed
rows, dropped as they are acked.

Acks. With ack-on-next every item handed out waits for the previous ack to be durable, so an
ack that had to be a transaction of its own (an UPDATE of the meta row: a page through the WAL)
cost more than everything else of a delivery. When no group is pending, an ack of an item held
in memory is instead one ``pwrite`` of a 28-byte record into ``<ledger>-ack``: durable against
a process crash as soon as the call returns (the kernel has it), like a commit under
``synchronous=NORMAL``. The record names the acked delivery id and that item's arrival, with a
CRC-32 over them and the ledger's identity (creation time, account); at open it counts only if
it is whole, is this ledger's and names an item this file has queued with that arrival — a
leftover file beside a replaced ledger, or a record torn by a power loss, is ignored and the
meta row's older ack holds. The meta row catches up with every commit (so a prune never deletes
rows only the ack file covers) and at close. With ``synchronous="FULL"`` acks stay
transactions: power-loss safety needs SQLite's synced commit.

The offer log. A transaction per live burst (BEGIN, an insert per report and per queue entry,
COMMIT: some seven pages through the WAL) was most of what an order's reports cost the client.
A live burst (source ``"live"``, at most 64 reports, no group open) is instead one ``write`` of
a record to ``<ledger>-log``: the burst's rows and queue entries, pickled (plain tuples; the
loader refuses anything else), framed with their length and a CRC-32 over them and the ledger's
identity. Durable against a process crash once the call returns, as the ack file is. Whether a
report is new is decided without writing: a key the log holds is known; an execution whose
ExecID is above its index's highest cannot be stored; anything else is one indexed lookup. The
log's rows are *written behind* into the tables, in one transaction, when it holds 128 of them
(:meth:`~ExecutionLedger.write_behind`; the executions stream does it after the burst's
delivery, in steps of 16 rows with the scheduler in between,
:meth:`~ExecutionLedger.write_behind_step`: one transaction held open across the steps and
committed by the last, while new offers keep going to the log), and at the start of every
transaction (hold, release, prune, close, an ack that commits a group, an offer joining an open
group), and before anything reads the tables (an item
beyond the delivery memory, :meth:`~ExecutionLedger.get`, :meth:`~ExecutionLedger.history`);
after that commit the log is emptied. Opening a ledger (and the reload after a failed commit)
first writes the log's whole records into the tables: a torn last record (a power loss in the
middle of an append) or a log left by another ledger (the CRC's identity) ends the replay, and
a row already stored (the process died after a write-behind's commit, before the log was
emptied) is skipped. Prune writes the log behind in a transaction of its own first, so a replay
never brings back rows it deleted. An append that fails or is cut short falls back to a
transaction with every logged row, which also empties the log. Deferred live offers (group
commit) collect their records in memory; the commit is then one append. With
``synchronous="FULL"`` there is no log: power-loss safety needs SQLite's synced commit.

Same SQLite discipline as :mod:`sessions.store`: WAL, ``synchronous=NORMAL`` by default (process
crashes lose nothing committed; ``FULL`` adds power-loss safety), errors as
:class:`LedgerError` naming the file. An advisory lock on ``<ledger>-lock``, held while the
ledger is open, keeps a second process out (one supervisor per account). Not thread-safe, except
:meth:`~ExecutionLedger.checkpoint`.

Checkpoints. SQLite copies the WAL back into the database file at a checkpoint; run by the
commit that crosses ``wal_autocheckpoint`` (10,000 pages), that was a pause of ~80 ms of the
event loop every ~20,000 reports. :meth:`~ExecutionLedger.checkpoint` does it through a
connection of its own, in PASSIVE mode (it neither waits for the ledger's transactions nor
blocks them), so the executions stream runs it in a worker thread every
:data:`CHECKPOINT_ROWS` rows (~1,000 pages) while the loop goes on; SQLite's automatic
checkpoint stays as a backstop.
"""

from __future__ import annotations

import hashlib
import json
try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]
import os
import re
import sqlite3
import struct
import sys
import threading
import time
import weakref
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple

import attrs

from sessions.errors import StoreError
from sessions.message import FixMessage

from .execid import ExecId, ExecIdError
from .orders import ReportError
from .reconcile import LOOKBACK_S
from .records import frame, read_all, read_frames

__all__ = [
    "DEFAULT_KEEP_S",
    "DeliveredExecution",
    "DeliveryCursor",
    "ExecutionLedger",
    "CHECKPOINT_ROWS",
    "LOG_BATCH_ROWS",
    "WRITE_BEHIND_STEP_ROWS",
    "LOOKBACK_S",
    "LedgerError",
    "SCHEMA_VERSION",
    "Source",
    "ledger_file_name",
]

#: Default age after which delivered rows are pruned: the lookback plus an hour of margin, so
#: any report the drop copy can still replay is recognised as a duplicate.
DEFAULT_KEEP_S: float = LOOKBACK_S + 3600.0

#: Version of the on-disk layout (SQLite ``user_version``).
SCHEMA_VERSION = 1
_APPLICATION_ID = 0x4B46584C  # "KFXL": marks the file as a kalshi-fix execution ledger

Source = Literal["live", "dropcopy"]
_Synchronous = Literal["NORMAL", "FULL"]
_SOURCES = ("live", "dropcopy")
_CHUNK = 500  # keys per "IN (...)" query: well under SQLite's variable limit
_WAL_CHECKPOINT_PAGES = 10_000
#: Rows written into the tables after which :meth:`ExecutionLedger.checkpoint` is due (about
#: 1,000 WAL pages: ~8 ms of copying, in a worker thread; see "Checkpoints").
CHECKPOINT_ROWS = 2048
# The process lock beside the ledger: one supervisor process per account.
_LOCK_SUFFIX = "-lock"
# Offers of at most this many reports insert each one "if new" instead of looking them up first.
_INSERT_EACH_MAX = 8
# Live offers of at most this many reports go to the offer log (module docstring): also a
# burst under load, when one read brings the reports of dozens of orders. Drop-copy replays go
# to the tables, a batch in one statement (their reports are often known: a lookup each).
_LOG_OFFER_MAX = 64
# The acknowledgement file next to the ledger ("Acks" in the module docstring): one record,
# rewritten in place — magic, acked delivery id, that item's arrival, CRC-32 of those and of
# the ledger's identity (its creation time and account).
_ACK_SUFFIX = "-ack"
_ACK_MAGIC = b"KFXLACK1"
_ACK_RECORD = struct.Struct("<8sqqI")
# The offer log next to the ledger ("The offer log" in the module docstring): records framed
# by supervisor.records, the CRC seeded with the ledger's identity.
_LOG_SUFFIX = "-log"
#: Rows the offer log holds before they are due to be written behind into the tables, in one
#: transaction. Per report, a batch costs about a quarter of what a transaction per live burst
#: did (~25 vs ~100 us in process); a larger batch saves little more and stalls longer.
LOG_BATCH_ROWS = 128
#: Rows (and queue entries) one :meth:`ExecutionLedger.write_behind_step` writes: about 0.1 ms of
#: the event loop at a time, where a whole batch in one go held it for about 1 ms.
WRITE_BEHIND_STEP_ROWS = 16
# Released and staged reports kept in memory for delivery ("Delivery from memory" in the module
# docstring): the messages as offered, about 4 KB each.
_MEMORY_ITEMS = 16384
_MAX_INT64 = 2**63 - 1


class LedgerError(StoreError):
    """The execution ledger failed, is damaged, or was used wrongly (the message names the file
    and what to do)."""


@attrs.frozen
class DeliveredExecution:
    """One item of the delivery queue.

    ``key`` is the de-duplication identity (the ExecID's wire form for executions); ``exec_id``
    is ``None`` for pending reports, rejects and OrderCancelRejects. ``late`` marks a report
    released after a newer one of the same order (see module docstring).
    """

    delivery_id: int
    key: str
    exec_id: ExecId | None
    order_key: str
    source: str
    session: str | None
    received: float
    late: bool
    message: FixMessage = attrs.field(eq=False, repr=False)


# ----------------------------------------------------------------------------- encoding

_BIG_ENDIAN = sys.byteorder == "big"
# The stored tag column is int32; "i" is 4 bytes on every platform CPython supports today, but a
# different size would silently corrupt reads, so refuse to run instead.
if array("i").itemsize != 4:  # pragma: no cover
    raise ImportError("supervisor.ledger needs a 4-byte C int for its stored tag arrays")


def _encode(msg: FixMessage) -> tuple[bytes | None, bytes]:
    """Lossless, compact storage of a report: the tags as little-endian int32 and the values
    SOH-joined, so decoding is two C-level operations (a 10k replay is read back in ~50 ms);
    or ``(None, JSON)`` when a value itself contains SOH (data fields; reports have none)."""
    pairs = msg.pairs
    values = b"\x01".join([v for _, v in pairs])
    if values.count(b"\x01") == len(pairs) - 1:
        tags = array("i", [t for t, _ in pairs])
        if _BIG_ENDIAN:
            tags.byteswap()
        return tags.tobytes(), values
    return None, json.dumps([[t, v.decode("latin-1")] for t, v in pairs]).encode("ascii")


def _decode(tags: bytes | None, raw: bytes) -> FixMessage:
    m = FixMessage()
    if tags is not None:
        t = array("i")
        t.frombytes(tags)
        if _BIG_ENDIAN:
            t.byteswap()
        m.pairs = list(zip(t, raw.split(b"\x01")))
    else:
        m.pairs = [(int(t), v.encode("latin-1")) for t, v in json.loads(raw)]
    return m


def _log_record(rows: Sequence[Sequence[Any]], queue: Sequence[tuple[int, int, int]],
                seed: int) -> bytes:
    """One record of the offer log: the rows (columns of ``_INSERT``) and queue entries
    (columns of ``_ENQUEUE``) of one offer."""
    return frame((tuple(rows), tuple(queue)), seed)


class _Offer(NamedTuple):
    """One classified report (a named tuple: one is made per report offered)."""

    key: str
    exec_id: ExecId | None
    order_key: str
    tags: bytes | None
    raw: bytes
    message: FixMessage


def _classify(msg: FixMessage, fields: dict[int, bytes] | None = None) -> _Offer:
    """The identity and order key of a report (raises ReportError when it has none);
    ``fields`` is ``msg.first_values()`` if the caller has it."""
    f: dict[int, bytes] = msg.first_values() if fields is None else fields
    mt = f.get(35)
    if mt not in (b"8", b"9"):
        raise ReportError(
            f"the ledger takes ExecutionReports (35=8) and OrderCancelRejects (35=9), got "
            f"MsgType {mt!r}"
        )
    cl = f.get(11, b"").decode("latin-1")
    order_id = f.get(37, b"").decode("latin-1")
    exec_type = f.get(150, b"").decode("latin-1")
    exec_id: ExecId | None = None
    if mt == b"8":
        raw_exec = f.get(17)
        if raw_exec is None:
            raise ReportError(f"ExecutionReport without ExecID(17) (ClOrdID {cl!r})")
        try:
            exec_id = ExecId.parse(raw_exec)
        except ExecIdError as e:
            raise ReportError(f"ExecutionReport with a bad ExecID(17): {e}") from None
        if exec_id.is_pending or exec_type == "8":
            exec_id = None
    if exec_id is not None:
        if exec_id.clock > _MAX_INT64 or exec_id.event > _MAX_INT64:
            raise ReportError(f"ExecID {exec_id} does not fit the ledger's 64-bit columns")
        key = str(exec_id)
        order_key = f"id:{order_id}" if order_id else f"cl:{cl}"
        return _Offer(key, exec_id, order_key, *_encode(msg), msg)
    if not cl:
        raise ReportError(
            f"a report without a real ExecID needs a ClOrdID(11) to be identified: {msg!r}"
        )
    sending = f.get(122) if f.get(43) == b"Y" and f.get(122) else f.get(52)
    seq = f.get(34)
    if sending is not None or seq is not None:
        stamp = f"{(sending or b'').decode('latin-1')}|{(seq or b'').decode('latin-1')}"
    else:
        stamp = "text:" + f.get(58, b"").decode("latin-1")
    ord_status = f.get(39, b"").decode("latin-1")
    key = f"N|{mt.decode()}|{cl}|{exec_type}|{ord_status}|{stamp}"
    # Placeholder OrderIDs on rejects (REFERENCE §4.7) must not tie unrelated requests together.
    order_key = f"id:{order_id}" if order_id and mt == b"8" and exec_type != "8" else f"cl:{cl}"
    return _Offer(key, None, order_key, *_encode(msg), msg)


# ----------------------------------------------------------------------------- schema

_SCHEMA = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    account TEXT NOT NULL,
    hold_from INTEGER,
    acked_through INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE reports (
    arrival INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    idx INTEGER,
    clock INTEGER,
    event INTEGER,
    order_key TEXT NOT NULL,
    source TEXT NOT NULL,
    session TEXT,
    received REAL NOT NULL,
    tags BLOB,
    raw BLOB NOT NULL
);
CREATE INDEX reports_by_received ON reports (received);
CREATE TABLE queue (
    delivery_id INTEGER PRIMARY KEY,
    arrival INTEGER NOT NULL UNIQUE,
    late INTEGER NOT NULL
);
CREATE TABLE exec_marks (
    idx INTEGER PRIMARY KEY,
    last_clock INTEGER NOT NULL,
    last_event INTEGER NOT NULL,
    anchor_clock INTEGER,
    anchor_event INTEGER,
    pruned_clock INTEGER,
    pruned_event INTEGER
);
CREATE TABLE order_marks (
    order_key TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    clock INTEGER NOT NULL,
    event INTEGER NOT NULL,
    updated REAL NOT NULL
);
"""

_INSERT = (
    "INSERT INTO reports (arrival, key, idx, clock, event, order_key, source, session, "
    "received, tags, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_IF_NEW = _INSERT + " ON CONFLICT (key) DO NOTHING"
_SELECT_KEY = "SELECT 1 FROM reports WHERE key = ?"
_ENQUEUE = "INSERT INTO queue (delivery_id, arrival, late) VALUES (?, ?, ?)"
_UPSERT_MARK = (
    "INSERT INTO exec_marks (idx, last_clock, last_event) VALUES (?, ?, ?) "
    "ON CONFLICT (idx) DO UPDATE SET last_clock = excluded.last_clock, "
    "last_event = excluded.last_event"
)
_UPSERT_ORDER = (
    "INSERT INTO order_marks (order_key, idx, clock, event, updated) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (order_key) DO UPDATE SET idx = excluded.idx, clock = excluded.clock, "
    "event = excluded.event, updated = excluded.updated"
)
_ITEM_COLUMNS = (
    "q.delivery_id, r.key, r.idx, r.clock, r.event, r.order_key, r.source, r.session, "
    "r.received, q.late, r.tags, r.raw FROM queue AS q JOIN reports AS r ON r.arrival = q.arrival"
)
_SELECT_ITEMS = (
    f"SELECT {_ITEM_COLUMNS} WHERE q.delivery_id > ? ORDER BY q.delivery_id LIMIT ?"
)


def _row(o: _Offer, arrival: int, source: str, session: str | None, received: float) -> tuple[
    Any, ...
]:
    """The ``reports`` row (columns of ``_INSERT``) of a new report."""
    e = o.exec_id
    if e is None:
        return (arrival, o.key, None, None, None, o.order_key, source, session, received,
                o.tags, o.raw)
    return (arrival, o.key, e.index, e.clock, e.event, o.order_key, source, session,
            received, o.tags, o.raw)


def _item(row: tuple[Any, ...]) -> DeliveredExecution:
    did, key, idx, clock, event, order_key, source, session, received, late, tags, raw = row
    return DeliveredExecution(
        delivery_id=did,
        key=key,
        exec_id=None if idx is None else ExecId.from_parts(clock, event, idx),
        order_key=order_key,
        source=source,
        session=session,
        received=received,
        late=bool(late),
        message=_decode(tags, raw),
    )


def _memory_item(
    delivery_id: int, row: Sequence[Any], late: int, message: FixMessage
) -> DeliveredExecution:
    """An item kept in memory: its row (columns as in ``_INSERT``) and the offered message."""
    idx = row[2]
    return DeliveredExecution(
        delivery_id=delivery_id,
        key=row[1],
        exec_id=None if idx is None else ExecId.from_parts(row[3], row[4], idx),
        order_key=row[5],
        source=row[6],
        session=row[7],
        received=row[8],
        late=bool(late),
        message=message,
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def ledger_file_name(account: str) -> str:
    """The ledger's file name (no directory) for ``account``: sanitized like the session store's
    names, with a hash of the exact name so distinct accounts never share a file."""
    if not isinstance(account, str) or not account:
        raise LedgerError(f"the ledger's account name must be a non-empty string, got {account!r}")
    digest = hashlib.sha256(account.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{_UNSAFE.sub('_', account)[:64]}--{digest}.ledger.sqlite3"


_open_lock = threading.Lock()
_open_ledgers: dict[tuple[int, int], weakref.ref[ExecutionLedger]] = {}


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _translate(e: sqlite3.Error, path: str, what: str) -> LedgerError:
    code = getattr(e, "sqlite_errorname", "") or ""
    family = "_".join(code.split("_", 2)[:2])
    text = str(e)
    if family in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "not a database" in text:
        advice = (
            "the file is damaged or not a ledger; move it (and its -wal, -shm, -ack and -log "
            "files) aside"
        )
    elif family in ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM") or "readonly" in text:
        advice = "check that the file and its directory are readable and writable by this user"
    elif family in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        advice = "another process holds the file; only one supervisor may run an account"
    elif family == "SQLITE_FULL":
        advice = "the disk is full; free space"
    elif isinstance(e, sqlite3.ProgrammingError):
        advice = "use the ledger only from the thread that opened it, and only until close()"
    else:
        advice = "see the SQLite error"
    return LedgerError(f"execution ledger {path!r}: {what} failed ({e}); {advice}")


def _pair(clock: int | None, event: int | None, idx: int) -> ExecId | None:
    if clock is None or event is None:
        return None
    return ExecId(int(clock), int(event), int(idx))


# ----------------------------------------------------------------------------- the ledger


class ExecutionLedger:
    """Durable de-duplication and exactly-once delivery queue of one account (module docstring).

    Open with :meth:`open`. Every method that changes state commits before it returns, except
    offers with ``defer_commit=True`` (group commit, module docstring).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        account: str,
        synchronous: _Synchronous = "NORMAL",
    ) -> None:
        """Internal: use :meth:`ExecutionLedger.open`."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._account = account
        self._key: tuple[int, int] | None = None
        self._lock_fd: int | None = None
        # Checkpoints from a worker thread, through a connection of their own ("Checkpoints"
        # in the module docstring); the lock keeps close() from closing it under them.
        self._ckpt_conn: sqlite3.Connection | None = None
        self._ckpt_lock = threading.Lock()
        self._rows_since_checkpoint = 0
        # The acknowledgement file (module docstring, "Acks"); not with FULL, where an ack
        # must survive a power loss and SQLite's synced commit is what gives that, nor where
        # the platform has no positioned write.
        self._ack_fd: int | None = None
        # The offer log (module docstring, "The offer log"): under the same conditions.
        self._log_fd: int | None = None
        # Records of deferred offers not yet appended to the log (group commit).
        self._log_buf = bytearray()
        #: Rows the offer log may hold before an offer writes them behind itself. A caller
        #: that writes them behind at a better moment (:meth:`write_behind`, as the executions
        #: stream does once a burst is delivered) raises it, keeping it as a backstop.
        self.write_behind_at = LOG_BATCH_ROWS
        if synchronous == "NORMAL" and hasattr(os, "pwrite"):
            try:
                self._ack_fd = os.open(path + _ACK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o644)
                self._log_fd = os.open(
                    path + _LOG_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644
                )
            except OSError as e:
                self._close_side_files()
                raise LedgerError(
                    f"execution ledger {path!r}: cannot open its acknowledgement file or offer "
                    f"log ({e.filename!r}): {e.strerror or e}; check that the directory is "
                    "writable by this user"
                ) from e
        try:
            self._load()
        except BaseException:
            self._close_side_files()
            raise

    def _close_side_files(self) -> None:
        fds = (self._ack_fd, self._log_fd)
        self._ack_fd = self._log_fd = None
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass  # nothing is written through it any more

    def _load(self) -> None:
        """(Re)build the in-memory state from the file: at open, and after a rolled-back
        group transaction (whatever it did in memory is forgotten with it)."""
        conn = self._connection()
        # True while a write transaction is open: offers in it are not durable yet (group
        # commit, module docstring) and nothing in it is handed out before it commits.
        self._open_tx = False
        # True while the open transaction is a write-behind in steps (write_behind_step):
        # it holds only rows durable in the offer log, so it is no group of deferred offers —
        # offers keep going to the log, and commit() and ack() need not wait for it.
        self._stepping = False
        # How many of the log's rows and queue entries the open transaction has inserted.
        self._tx_log_rows = 0
        self._tx_log_queue = 0
        # Marks live in memory and are written behind (hold, prune, close; see "Marks" in the
        # module docstring): the exchange indexes whose resume point moved, and the orders
        # whose mark moved since they were last written.
        self._marks_dirty: set[int] = set()
        self._order_dirty: set[str] = set()
        # Per order: the highest (index, clock, event) released, and its last activity.
        self._order_marks: dict[str, tuple[tuple[int, int, int], float]] = {}
        # Delivery from memory (module docstring): released items by delivery id (their row,
        # columns of _INSERT, late flag and message); staged ones by arrival. Whatever is
        # missing (a restart, this reload, the bound) is read from the file instead.
        self._memory: dict[int, tuple[Sequence[Any], int, FixMessage]] = {}
        self._staged: dict[int, tuple[Sequence[Any], FixMessage]] = {}
        # Offers durable in the log and not yet in the tables (module docstring, "The offer
        # log"): their rows, queue entries and keys. _begin writes them into its transaction.
        self._log_rows: list[Sequence[Any]] = []
        self._log_queue: list[tuple[int, int, int]] = []
        self._log_keys: set[str] = set()
        self._log_buf.clear()
        try:
            created = conn.execute("SELECT created FROM meta WHERE id = 1").fetchone()[0]
            self._ack_seed = zlib.crc32(
                struct.pack("<d", float(created)) + self._account.encode("utf-8", "surrogatepass")
            )
            # Before anything is read from the tables: the log's offers belong in them.
            self._replay_log(conn)
            hold_from, acked = conn.execute(
                "SELECT hold_from, acked_through FROM meta WHERE id = 1"
            ).fetchone()
            self._hold_from: int | None = hold_from
            # What the meta row says; the acknowledgement file may be ahead of it.
            self._acked_stored = int(acked)
            self._acked = max(self._acked_stored, self._read_ack_file(conn))
            newest = conn.execute("SELECT coalesce(max(arrival), 0) FROM reports").fetchone()[0]
            # Arrival numbers may be reused once pruning emptied the table, but never below the
            # start of a hold in force: everything from hold_from on is what release() queues.
            self._next_arrival = max(int(newest) + 1, hold_from or 0)
            self._next_delivery = max(
                int(conn.execute("SELECT coalesce(max(delivery_id), 0) FROM queue").fetchone()[0]),
                self._acked,
            ) + 1
            self._last: dict[int, ExecId] = {}
            self._anchor: dict[int, ExecId | None] = {}
            self._pruned: dict[int, ExecId] = {}
            for idx, lc, le, ac, ae, pc, pe in conn.execute(
                "SELECT idx, last_clock, last_event, anchor_clock, anchor_event, pruned_clock, "
                "pruned_event FROM exec_marks"
            ):
                last = _pair(lc, le, idx)
                assert last is not None
                self._last[idx] = last
                self._anchor[idx] = _pair(ac, ae, idx)
                p = _pair(pc, pe, idx)
                if p is not None:
                    self._pruned[idx] = p
            marks = self._order_marks
            for ok, idx, clock, event, updated in conn.execute(
                "SELECT order_key, idx, clock, event, updated FROM order_marks"
            ):
                marks[ok] = ((idx, clock, event), updated)
            self._rebuild_marks(conn)
        except (sqlite3.Error, TypeError) as e:
            if isinstance(e, sqlite3.Error):
                raise _translate(e, self._path, "open") from e
            raise LedgerError(
                f"execution ledger {self._path!r} has no meta row: the file is damaged; move it "
                "aside (the drop copy can replay the last 3 hours into a fresh ledger)"
            ) from None

    def _replay_log(self, conn: sqlite3.Connection) -> None:
        """Write the offer log's whole records into the tables and empty the log (at open,
        and at the reload after a failed commit). Idempotent: a row already stored — the
        process died between a write-behind's commit and the log's truncation — is skipped,
        as is its queue entry."""
        fd = self._log_fd
        if fd is None:
            return
        try:
            data = read_all(fd)
        except OSError as e:
            raise LedgerError(
                f"execution ledger {self._path!r}: cannot read its offer log: {e.strerror or e}"
            ) from e
        if not data:
            return
        rows: list[Sequence[Any]] = []
        queue: list[tuple[int, int, int]] = []
        for r, q in read_frames(data, self._ack_seed):
            rows.extend(r)
            queue.extend(q)
        if rows or queue:
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT.replace("INSERT", "INSERT OR IGNORE", 1), rows)
                conn.executemany(_ENQUEUE.replace("INSERT", "INSERT OR IGNORE", 1), queue)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Empty the offer log: everything in it is in the tables (committed)."""
        if self._log_fd is None:
            return
        try:
            os.ftruncate(self._log_fd, 0)
        except OSError as e:
            # Its offers are committed; but a log that cannot be emptied would be replayed
            # again (harmless) and grow without bound: stop here, naming the file.
            raise LedgerError(
                f"execution ledger {self._path!r}: cannot empty its offer log "
                f"{self._path + _LOG_SUFFIX!r}: {e.strerror or e}; check the disk"
            ) from e

    def _ack_record(self, acked: int, arrival: int) -> bytes:
        body = _ACK_MAGIC + struct.pack("<qq", acked, arrival)
        return _ACK_RECORD.pack(_ACK_MAGIC, acked, arrival, zlib.crc32(body, self._ack_seed))

    def _read_ack_file(self, conn: sqlite3.Connection) -> int:
        """The ack the acknowledgement file vouches for, or 0. It counts only if the record is
        whole, belongs to this ledger (identity in the CRC) and names an item this file has
        queued with that arrival: a leftover file next to a replaced ledger, or a torn write
        after a power loss, is ignored (the meta row's older ack then holds)."""
        if self._ack_fd is None:
            return 0
        try:
            data = os.pread(self._ack_fd, _ACK_RECORD.size, 0)
        except OSError as e:
            raise LedgerError(
                f"execution ledger {self._path!r}: cannot read its acknowledgement file: "
                f"{e.strerror or e}"
            ) from e
        if len(data) != _ACK_RECORD.size:
            return 0
        magic, acked, arrival, crc = _ACK_RECORD.unpack(data)
        if magic != _ACK_MAGIC or data != self._ack_record(acked, arrival) or acked < 1:
            return 0
        row = conn.execute(
            "SELECT arrival FROM queue WHERE delivery_id = ?", (acked,)
        ).fetchone()
        return acked if row is not None and row[0] == arrival else 0

    def _rebuild_marks(self, conn: sqlite3.Connection) -> None:
        """Bring the marks read from their tables up to date with the stored reports: the
        tables are written behind, the reports are the marks' source (a crash loses only the
        tables' lag). A 10k-report file takes a few milliseconds."""
        last = self._last
        marks = self._order_marks
        rows = conn.execute(
            "SELECT r.idx, r.clock, r.event, r.order_key, r.received, q.delivery_id "
            "FROM reports AS r LEFT JOIN queue AS q ON q.arrival = r.arrival "
            "WHERE r.idx IS NOT NULL"
        )
        for idx, clock, event, ok, received, released in rows:
            cur = last.get(idx)
            if cur is None or (clock, event) > (cur.clock, cur.event):
                last[idx] = ExecId.from_parts(clock, event, idx)
                self._marks_dirty.add(idx)
            if released is None:
                continue  # staged under a hold: an order's mark counts released reports only
            e = (idx, clock, event)
            mark = marks.get(ok)
            if mark is None or e > mark[0] or received > mark[1]:
                marks[ok] = (e, received) if mark is None else (
                    max(mark[0], e), max(mark[1], received)
                )
                self._order_dirty.add(ok)

    # ----------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        account: str,
        *,
        now: float | None = None,
        synchronous: _Synchronous = "NORMAL",
    ) -> ExecutionLedger:
        """Open (creating if needed) the ledger of ``account`` in ``directory``.

        ``now`` is the creation time recorded in a new file (the clock is read if ``None``).
        Raises :class:`LedgerError` naming the file when it cannot be created or opened, is not
        a ledger, has another schema version or account, or is already open in this process.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise LedgerError(f'synchronous must be "NORMAL" or "FULL", got {synchronous!r}')
        name = ledger_file_name(account)
        directory = os.fspath(directory)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise LedgerError(
                f"cannot create the ledger directory {directory!r}: {e.strerror or e}; create it "
                "(writable by this user) or configure another state directory"
            ) from e
        path = os.path.join(directory, name)
        with _open_lock:
            key = _file_key(path)
            if key is not None:
                _refuse_if_open(key, path)
            lock_fd = _lock_process(path)
            try:
                conn = sqlite3.connect(path, isolation_level=None, timeout=1.0)
            except sqlite3.Error as e:
                _unlock_process(lock_fd)
                raise _translate(e, path, "open") from e
            try:
                _initialise(conn, path, account, now, synchronous)
                ledger = cls(conn, path, account, synchronous)
                ledger._lock_fd = lock_fd
                key = _file_key(path)
                if key is not None:
                    _refuse_if_open(key, path)
                    _open_ledgers[key] = weakref.ref(ledger)
                    ledger._key = key
            except BaseException:
                conn.close()
                _unlock_process(lock_fd)
                raise
        return ledger

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return (
            f"ExecutionLedger({self._path!r}, {state}, account={self._account!r}, "
            f"acked_through={self._acked}, holding={self.holding})"
        )

    def __enter__(self) -> ExecutionLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The ledger's file."""
        return self._path

    @property
    def account(self) -> str:
        """The account this ledger belongs to."""
        return self._account

    @property
    def holding(self) -> bool:
        """True between :meth:`hold` and :meth:`release` (persisted across restarts)."""
        return self._hold_from is not None

    @property
    def acked_through(self) -> int:
        """The highest delivery id the application acknowledged (0 = none)."""
        return self._acked

    @property
    def last_delivery_id(self) -> int:
        """The highest delivery id released so far (0 = none)."""
        return self._next_delivery - 1

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise LedgerError(f"execution ledger {self._path!r} is closed; open it again")
        return conn

    def _begin(self, what: str) -> sqlite3.Connection:
        """The write transaction: the open group of deferred offers if there is one (the
        caller's work joins it and commits with it), else a new one — which starts by writing
        the offer log's rows behind, so the caller's statements see every offer. A write-behind
        in steps (:meth:`write_behind_step`) that holds the transaction is finished first and
        becomes the caller's transaction."""
        conn = self._connection()
        try:
            if not self._open_tx:
                self._open(conn)
            self._stepping = False
            self._catch_up(conn)
        except sqlite3.Error as e:
            self._abort(conn)
            raise _translate(e, self._path, what) from e
        return conn

    def _open(self, conn: sqlite3.Connection) -> None:
        """Begin the write transaction; it holds none of the offer log's rows yet."""
        conn.execute("BEGIN")
        self._open_tx = True
        self._tx_log_rows = self._tx_log_queue = 0

    @property
    def _group_open(self) -> bool:
        """A transaction is open that is not only a write-behind in steps: deferred offers
        (or other work) wait in it for a commit."""
        return self._open_tx and not self._stepping

    def _catch_up(self, conn: sqlite3.Connection, limit: int | None = None) -> bool:
        """Insert the offer log's rows and queue entries the open transaction does not hold
        yet (at most ``limit`` of each); True when it then holds them all."""
        rows, queue = self._log_rows, self._log_queue
        r0, q0 = self._tx_log_rows, self._tx_log_queue
        r1 = len(rows) if limit is None else min(len(rows), r0 + limit)
        q1 = len(queue) if limit is None else min(len(queue), q0 + limit)
        if r1 > r0:
            conn.executemany(_INSERT, rows[r0:r1])
            self._rows_since_checkpoint += r1 - r0
        if q1 > q0:
            conn.executemany(_ENQUEUE, queue[q0:q1])
        self._tx_log_rows, self._tx_log_queue = r1, q1
        return r1 == len(rows) and q1 == len(queue)

    def _settle(self) -> None:
        """Write the offer log behind into the tables (one transaction), for a caller about to
        read them."""
        if self._log_rows or self._log_queue or self._log_buf:
            self._begin("write-behind")
            self.commit()

    @property
    def log_rows(self) -> int:
        """Rows in the offer log, not yet written behind into the tables."""
        return len(self._log_rows)

    def write_behind(self) -> None:
        """Write the offer log's rows into the tables now, in one transaction, and empty the
        log (no-op when it is empty). Offers do it themselves at :attr:`write_behind_at`."""
        self._settle()

    def write_behind_step(self, rows: int = WRITE_BEHIND_STEP_ROWS) -> bool:
        """Write up to ``rows`` more of the offer log's rows (and as many queue entries) into
        the tables; True once the log is written behind and emptied (or there was nothing to
        do, or the ledger is closed), False while rows are left for the next step.

        The steps share one transaction, left open between them, and the step that has
        written the last row commits it: the same single commit as :meth:`write_behind`, but
        the event loop is held for a step at a time (~0.1 ms at the default) instead of the
        whole batch (~1 ms for 128 reports; "The offer log" in the module docstring). Offers
        made between steps still go to the offer log, durable there; the steps write them
        too before committing. Anything else that needs the tables or a commit (hold, release,
        prune, an offer that takes a transaction, a read past the delivery memory, close)
        finishes the write-behind first; :meth:`commit` and :meth:`ack` do not wait for it,
        since everything it writes is durable in the log already."""
        if rows < 1:
            raise LedgerError(f"write_behind_step needs rows >= 1, got {rows!r}")
        if self._conn is None:
            return True  # closed: close() wrote everything behind
        if not (self._log_rows or self._log_queue or self._log_buf):
            return True
        if self._group_open:
            self._settle()  # a group of deferred offers holds the transaction: commit it all
            return True
        conn = self._conn
        try:
            if not self._open_tx:
                self._open(conn)
                self._stepping = True
            done = self._catch_up(conn, rows)
        except sqlite3.Error as e:
            self._abort(conn)
            raise _translate(e, self._path, "write-behind") from e
        if not done:
            return False
        self._commit(conn, "write-behind")
        return True

    @property
    def checkpoint_due(self) -> bool:
        """True once :data:`CHECKPOINT_ROWS` rows went into the tables since the last
        :meth:`checkpoint`."""
        return self._rows_since_checkpoint >= CHECKPOINT_ROWS

    def checkpoint(self) -> int:
        """Copy what the WAL holds back into the database file and return how many pages it
        copied ("Checkpoints" in the module docstring). Safe to call from a worker thread
        (``trio.to_thread.run_sync``) while the ledger goes on being used: it runs through a
        connection of its own, and in PASSIVE mode, which neither waits for nor blocks the
        ledger's transactions. One at a time; a no-op (0) where the platform has no process
        lock (the ledger then keeps SQLite's exclusive lock, and SQLite checkpoints itself)."""
        if self._lock_fd is None:
            return 0
        self._rows_since_checkpoint = 0
        with self._ckpt_lock:
            if self._conn is None:
                return 0  # closed meanwhile
            try:
                conn = self._ckpt_conn
                if conn is None:
                    conn = self._ckpt_conn = sqlite3.connect(
                        self._path, isolation_level=None, timeout=1.0, check_same_thread=False
                    )
                _busy, _log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as e:
                raise _translate(e, self._path, "checkpoint") from e
        return max(int(copied), 0)

    def _write_behind(self, conn: sqlite3.Connection) -> None:
        """Write the resume points and order marks that moved since they were last written
        (inside the caller's transaction)."""
        if self._marks_dirty:
            last = self._last
            conn.executemany(
                _UPSERT_MARK,
                [(i, last[i].clock, last[i].event) for i in sorted(self._marks_dirty)],
            )
            self._marks_dirty.clear()
        if self._order_dirty:
            marks = self._order_marks
            conn.executemany(
                _UPSERT_ORDER,
                [(ok, *marks[ok][0], marks[ok][1]) for ok in sorted(self._order_dirty)],
            )
            self._order_dirty.clear()

    def _commit(self, conn: sqlite3.Connection, what: str) -> None:
        try:
            # The log is emptied below: every one of its rows must be in this commit, also
            # those a write-behind in steps had not reached yet.
            self._catch_up(conn)
            # An ack recorded only in the acknowledgement file rides along: the meta row then
            # covers every row a prune in this transaction deletes, and the file's lead stays
            # short.
            acked = self._acked
            if acked > self._acked_stored:
                conn.execute("UPDATE meta SET acked_through = ? WHERE id = 1", (acked,))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._abort(conn)
            raise _translate(e, self._path, what) from e
        self._open_tx = False
        self._stepping = False
        self._acked_stored = acked
        # The transaction began by writing the log's offers behind (_begin): they are in the
        # tables now, and so are those of the deferred records never appended.
        self._log_buf.clear()
        if self._log_rows or self._log_queue:
            self._log_rows = []
            self._log_queue = []
            self._log_keys = set()
            self._truncate_log()

    def _abort(self, conn: sqlite3.Connection) -> None:
        """Roll the open transaction back — the whole group of deferred offers with it — and
        reload the in-memory state from the file, so memory and file agree again. What was
        rolled back was never handed out; as after a crash, the drop copy recovers it."""
        self._open_tx = False
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                raise _translate(e, self._path, "rollback") from e
        # The log's appended offers are durable: the reload writes them into the tables.
        # Deferred records not appended yet are forgotten with the rest of the group.
        self._load()

    def commit(self) -> None:
        """Make the offers stored with ``defer_commit=True`` durable (no-op when there are
        none). Every method that hands items out commits first, so a caller only needs this
        to bound how long offers stay volatile (the executions stream calls it at the end of
        each burst of events)."""
        if self._group_open:
            self._commit(self._connection(), "commit")
        elif self._log_buf:
            self._append_log(bytes(self._log_buf))

    @property
    def uncommitted(self) -> bool:
        """True while offers stored with ``defer_commit=True`` wait for a commit."""
        return self._group_open or bool(self._log_buf)

    def _append_log(self, record: bytes) -> None:
        """Make logged offers durable: one append (durable against a process crash once the
        kernel has it, as a commit under ``synchronous=NORMAL``). Should the append fail, the
        offers go into the tables instead, in a transaction of their own."""
        assert self._log_fd is not None
        self._log_buf.clear()
        try:
            written = os.write(self._log_fd, record)
        except OSError:
            written = -1
        if written != len(record):
            # Nothing or a torn record reached the log (a full disk, say): the transaction
            # makes every logged offer durable, then empties the log, torn tail included.
            self._begin("offer")
            self._commit(self._connection(), "offer")
        elif len(self._log_rows) >= self.write_behind_at:
            self._settle()

    # ----------------------------------------------------------------------------- offering

    def offer(
        self,
        report: FixMessage,
        *,
        source: Source,
        session: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Store one report unless it is a duplicate; True if it was new.

        ``source`` is ``"live"`` (an order-entry or listener session) or ``"dropcopy"``;
        ``session`` names the session it came from (kept for the journal); ``now`` is the
        receive time used for pruning (the clock is read if ``None``). Drop-copy copies of
        reports without a real ExecID are ignored (False): the drop copy never replays them.
        Raises :class:`~supervisor.orders.ReportError` for a message the ledger cannot identify.
        """
        return self.offer_many((report,), source=source, session=session, now=now) == 1

    def offer_many(
        self,
        reports: Iterable[FixMessage],
        *,
        source: Source,
        session: str | None = None,
        now: float | None = None,
        defer_commit: bool = False,
        fields: Sequence[dict[int, bytes]] | None = None,
    ) -> int:
        """Store every new report of ``reports`` in one transaction; return how many were new.

        A malformed report raises before anything is stored (the whole call has no effect).
        With ``defer_commit`` the transaction stays open: later offers join it, and it commits
        at :meth:`commit` or with the next call that hands items out or changes state
        (group commit; the durability argument is in the module docstring). ``fields`` are
        the reports' ``first_values()``, in the same order, when the caller has them already.
        """
        if source not in _SOURCES:
            raise LedgerError(f'source must be "live" or "dropcopy", got {source!r}')
        received = float(time.time() if now is None else now)
        offers: list[_Offer] = []
        if fields is None:
            classified = [_classify(msg) for msg in reports]
        else:
            msgs = list(reports)
            if len(fields) != len(msgs):
                raise LedgerError(
                    f"offer_many got {len(fields)} field maps for {len(msgs)} reports"
                )
            classified = [_classify(msg, f) for msg, f in zip(msgs, fields)]
        for o in classified:
            if o.exec_id is None and source != "live":
                continue
            offers.append(o)
        if not offers:
            return 0
        if (
            self._log_fd is not None and source == "live" and len(offers) <= _LOG_OFFER_MAX
            and not self._group_open
        ):
            return self._offer_logged(offers, source, session, received, defer_commit)
        conn = self._begin("offer")
        try:
            # A few reports (joining an open group): let each insert find out whether its
            # report is known (ON CONFLICT) instead of asking first; a replay's hundreds are
            # looked up in one query and inserted in one statement.
            each = len(offers) <= _INSERT_EACH_MAX
            candidates = self._fresh(conn, offers, probe=not each)
            fresh: list[_Offer] = []
            rows: list[tuple[Any, ...]] = []
            arrival = self._next_arrival
            for o in candidates:
                row = _row(o, arrival, source, session, received)
                if each and conn.execute(_INSERT_IF_NEW, row).rowcount != 1:
                    continue  # stored already
                fresh.append(o)
                rows.append(row)
                arrival += 1
            if not each and rows:
                conn.executemany(_INSERT, rows)
            self._rows_since_checkpoint += len(rows)
            queue = self._take(fresh, rows)
            if queue:
                conn.executemany(_ENQUEUE, queue)
            if not defer_commit:
                self._commit(conn, "offer")
        except sqlite3.Error as e:
            self._abort(conn)
            raise _translate(e, self._path, "offer") from e
        except BaseException:
            self._abort(conn)
            raise
        return len(fresh)

    def _offer_logged(
        self,
        offers: Sequence[_Offer],
        source: str,
        session: str | None,
        received: float,
        defer_commit: bool,
    ) -> int:
        """A live burst through the offer log (module docstring, "The offer log"): new reports
        are told from known ones without writing, and the offer is one append."""
        conn = self._connection()
        logged = self._log_keys
        last = self._last
        fresh: list[_Offer] = []
        rows: list[tuple[Any, ...]] = []
        arrival = self._next_arrival
        try:
            for o in self._fresh(conn, offers, probe=False):
                if o.key in logged:
                    continue
                e = o.exec_id
                if e is not None:
                    cur = last.get(e.index)
                    # Above the highest ExecID stored for its index: stored it cannot be.
                    known = cur is not None and (e.clock, e.event) <= (cur.clock, cur.event)
                else:
                    known = True  # a pending report or a reject: only the file can tell
                if known and conn.execute(_SELECT_KEY, (o.key,)).fetchone() is not None:
                    continue
                fresh.append(o)
                rows.append(_row(o, arrival, source, session, received))
                arrival += 1
        except sqlite3.Error as e:
            raise _translate(e, self._path, "offer") from e
        if not fresh:
            if not defer_commit:
                self.commit()  # as a transaction would: earlier deferred offers commit with it
            return 0
        queue = self._take(fresh, rows)
        self._log_rows.extend(rows)
        self._log_queue.extend(queue)
        logged.update(o.key for o in fresh)
        self._log_buf += _log_record(rows, queue, self._ack_seed)
        if not defer_commit:
            self._append_log(bytes(self._log_buf))
        return len(fresh)

    def _take(self, fresh: Sequence[_Offer], rows: Sequence[tuple[Any, ...]]) -> list[
        tuple[int, int, int]
    ]:
        """Account for the new reports ``fresh`` (their ``rows``, arrivals from
        ``_next_arrival`` on) in memory: resume points, arrival and delivery counters, the
        delivery memory or the staged set under a hold. Returns their queue entries (none
        under a hold) for the caller to store. A failure after this reloads memory."""
        if not fresh:
            return []
        # An index first seen during a hold has no anchor: last_exec_id() answers None for
        # it, as the file does after a restart (its anchor columns are NULL).
        last = self._last
        for o in fresh:
            e = o.exec_id
            if e is not None:
                cur = last.get(e.index)
                # Tuple comparison: same index by construction, and 10k ExecId.__gt__ calls
                # would be a noticeable part of a large replay.
                if cur is None or (e.clock, e.event) > (cur.clock, cur.event):
                    last[e.index] = e
                    self._marks_dirty.add(e.index)
        self._next_arrival = rows[-1][0] + 1
        if self._hold_from is None:
            self._next_delivery, queue = self._enqueue(
                rows, self._next_delivery, [o.message for o in fresh]
            )
            return queue
        staged = self._staged
        room = _MEMORY_ITEMS - len(staged) - len(self._memory)
        if room > 0:
            for row, o in zip(rows[:room], fresh):
                staged[row[0]] = (row, o.message)
        return []

    def _fresh(
        self, conn: sqlite3.Connection, offers: Sequence[_Offer], *, probe: bool = True
    ) -> list[_Offer]:
        """The offers that are neither stored, nor repeated earlier in ``offers``, nor older
        than a pruned ExecID of their index (pruned ⇒ delivered long ago). Without ``probe``
        the stored ones are not looked up (the caller's insert must skip them)."""
        keys = list({o.key for o in offers}) if probe else []
        known: set[str] = set()
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            q = f"SELECT key FROM reports WHERE key IN ({','.join('?' * len(chunk))})"
            known.update(k for (k,) in conn.execute(q, chunk))
        out = []
        for o in offers:
            if o.key in known:
                continue
            e = o.exec_id
            if e is not None:
                p = self._pruned.get(e.index)
                if p is not None and (e.clock, e.event) <= (p.clock, p.event):
                    continue
            known.add(o.key)
            out.append(o)
        return out

    def _enqueue(
        self,
        rows: Sequence[Sequence[Any]],
        first: int,
        messages: Sequence[FixMessage | None] = (),
    ) -> tuple[int, list[tuple[int, int, int]]]:
        """Queue ``rows`` (arrival order; columns as in ``_INSERT``, at least through
        ``received``) under delivery ids from ``first``: arrival order, except that each
        order's real executions fill that order's slots in ExecID order. Flags rows older than
        a previously released report of their order. Returns the next free delivery id and
        the queue entries (columns of ``_ENQUEUE``) for the caller to store. ``messages`` (by
        position in ``rows``; ``None`` where unknown) are kept in memory for delivery, within
        the bound."""
        groups: dict[str, list[int]] = {}
        for pos, row in enumerate(rows):
            if row[2] is not None:
                groups.setdefault(row[5], []).append(pos)
        ordered = list(range(len(rows)))
        for slots in groups.values():
            if len(slots) > 1:
                members = sorted(slots, key=lambda p: (rows[p][2], rows[p][3], rows[p][4]))
                for p, m in zip(slots, members):
                    ordered[p] = m
        # Per order: the highest (index, clock, event) released so far. One order lives on one
        # exchange index; should reports of one order ever span two, the larger index wins and
        # no late flag is raised across them (ExecIDs of different indexes are unrelated).
        marks = self._order_marks
        dirty = self._order_dirty
        # The reload after a failed commit forgets what is kept here, as it forgets the rows.
        memory = self._memory
        room = _MEMORY_ITEMS - len(memory) - len(self._staged)
        queue = []
        did = first
        for pos in ordered:
            row = rows[pos]
            late = 0
            if row[2] is not None:
                e = (row[2], row[3], row[4])
                ok: str = row[5]
                mark = marks.get(ok)
                best = None if mark is None else mark[0]
                if best is not None and best[0] == e[0] and e < best:
                    late = 1
                elif best is None or e > best:
                    best = e
                # The time is the order's last activity, which pruning of quiet orders goes by.
                marks[ok] = (best, row[8])
                dirty.add(ok)
            queue.append((did, row[0], late))
            if room > 0 and messages:
                message = messages[pos]
                if message is not None:
                    memory[did] = (row, late, message)
                    room -= 1
            did += 1
        return did, queue

    # ----------------------------------------------------------------------------- holding

    def hold(self) -> None:
        """Stop releasing offers until :meth:`release` (a gap is being recovered). Freezes
        :meth:`last_exec_id` at its current values. Persisted; calling it again while holding
        changes nothing (the earliest resume point is the one that must survive)."""
        if self._hold_from is not None:
            return
        hold_from = self._next_arrival
        conn = self._begin("hold")
        try:
            # The anchors copy the resume points: pending ones must be in the table first.
            self._write_behind(conn)
            conn.execute("UPDATE meta SET hold_from = ? WHERE id = 1", (hold_from,))
            conn.execute(
                "UPDATE exec_marks SET anchor_clock = last_clock, anchor_event = last_event"
            )
            self._commit(conn, "hold")
        except sqlite3.Error as e:
            self._abort(conn)
            raise _translate(e, self._path, "hold") from e
        self._hold_from = hold_from
        self._anchor = dict(self._last)

    def release(self) -> int:
        """End a hold: queue every report stored since it began (arrival order, each order's
        executions in ExecID order) and unfreeze the resume points. Returns how many were
        queued (0 when not holding). Call it once the drop-copy recovery of the gap completed."""
        if self._hold_from is None:
            return 0
        conn = self._begin("release")
        staged = self._staged
        try:
            rows: list[Sequence[Any]]
            messages: list[FixMessage | None]
            if len(staged) == self._next_arrival - self._hold_from:
                # Every staged report was offered in this process and kept: no need to read
                # them back (the arrivals from hold_from on are contiguous).
                kept = [staged[a] for a in range(self._hold_from, self._next_arrival)]
                rows = [row for row, _ in kept]
                messages = [m for _, m in kept]
            else:
                rows = conn.execute(
                    "SELECT arrival, key, idx, clock, event, order_key, source, session, "
                    "received FROM reports WHERE arrival >= ? ORDER BY arrival",
                    (self._hold_from,),
                ).fetchall()
                messages = [None] * len(rows)
                for i, r in enumerate(rows):
                    found = staged.get(r[0])
                    if found is not None:
                        rows[i], messages[i] = found
            # They move to the delivery memory now (a failure below reloads both).
            self._staged = {}
            next_delivery, queue = self._enqueue(rows, self._next_delivery, messages)
            conn.executemany(_ENQUEUE, queue)
            conn.execute("UPDATE meta SET hold_from = NULL WHERE id = 1")
            conn.execute("UPDATE exec_marks SET anchor_clock = NULL, anchor_event = NULL")
            self._commit(conn, "release")
        except sqlite3.Error as e:
            self._abort(conn)
            raise _translate(e, self._path, "release") from e
        except BaseException:
            self._abort(conn)
            raise
        self._hold_from = None
        self._anchor = {}
        self._next_delivery = next_delivery
        return len(rows)

    # ----------------------------------------------------------------------------- delivery

    def next_undelivered(
        self, limit: int = 1000, *, after: int | None = None
    ) -> list[DeliveredExecution]:
        """Up to ``limit`` released, un-acked items in delivery order. ``after`` skips items up
        to that delivery id (a consumer that holds un-acked items it already received)."""
        if type(limit) is not int or limit < 1:
            raise LedgerError(f"limit must be an integer >= 1, got {limit!r}")
        start = self._acked if after is None else max(self._acked, int(after))
        # Never hand out what is not durable: a crash would deliver it again from the replay.
        self.commit()
        conn = self._connection()
        out: list[DeliveredExecution] = []
        memory = self._memory
        did = start + 1
        end = min(start + limit, self._next_delivery - 1)
        while did <= end:
            kept = memory.get(did)
            if kept is None:
                break
            out.append(_memory_item(did, *kept))
            did += 1
        if did > end:
            return out
        self._settle()  # the rest is read from the tables
        try:
            rows = conn.execute(_SELECT_ITEMS, (did - 1, limit - len(out))).fetchall()
        except sqlite3.Error as e:
            raise _translate(e, self._path, "next_undelivered") from e
        out.extend(_item(r) for r in rows)
        return out

    def undelivered_count(self) -> int:
        """How many released items wait for an ack."""
        return self.last_delivery_id - self._acked

    def staged_count(self) -> int:
        """How many stored items wait for :meth:`release`."""
        if self._hold_from is None:
            return 0
        self._settle()
        try:
            return int(
                self._connection()
                .execute("SELECT count(*) FROM reports WHERE arrival >= ?", (self._hold_from,))
                .fetchone()[0]
            )
        except sqlite3.Error as e:
            raise _translate(e, self._path, "staged_count") from e

    def ack(self, through_delivery_id: int) -> None:
        """Persist that the application has consumed every item up to ``through_delivery_id``.
        Idempotent; a lower value than already acked changes nothing. Acking beyond the last
        released item raises :class:`LedgerError` (it would hide items not yet delivered)."""
        n = through_delivery_id
        if type(n) is not int or n < 0:
            raise LedgerError(f"ack needs a delivery id >= 0, got {n!r}")
        if n <= self._acked:
            return
        if n > self.last_delivery_id:
            raise LedgerError(
                f"execution ledger {self._path!r}: ack({n}) is beyond the last released item "
                f"({self.last_delivery_id}); ack only delivery ids you received"
            )
        conn = self._connection()
        memory = self._memory
        kept = memory.get(n)
        if memory:
            if len(memory) > n - self._acked:
                for d in range(self._acked + 1, n + 1):
                    memory.pop(d, None)
            else:
                self._memory = {d: k for d, k in memory.items() if d > n}
        if self._group_open:
            # Deferred offers are waiting: one commit makes them and the ack durable
            # (_commit writes the ack into the meta row).
            self._acked = n  # restored by the reload if the commit fails
            self._commit(conn, "ack")
            return
        if self._log_buf:
            self.commit()  # deferred offers in the log first: an ack never outruns them
        fd = self._ack_fd
        if fd is not None and kept is not None:
            # Everything released is durable (no group is open), so the item is in the
            # file or its log; one write() the next delivery waits for, durable once it
            # returns (the kernel has it), instead of a transaction.
            try:
                os.pwrite(fd, self._ack_record(n, kept[0][0]), 0)
            except OSError:
                pass  # the meta row below records it instead
            else:
                self._acked = n
                return
        if self._open_tx:
            # A write-behind in steps holds the transaction, so the UPDATE below would not be
            # durable on its own: the ack commits with the rest of the write-behind.
            self._acked = n  # restored by the reload if the commit fails
            self._commit(conn, "ack")
            return
        try:
            # Autocommit: one small transaction, which the next item's delivery must wait for.
            conn.execute("UPDATE meta SET acked_through = ? WHERE id = 1", (n,))
        except sqlite3.Error as e:
            raise _translate(e, self._path, "ack") from e
        self._acked = n
        self._acked_stored = n

    def cursor(self) -> DeliveryCursor:
        """A consumer with ack-on-next semantics (exactly-once; see :class:`DeliveryCursor`)."""
        return DeliveryCursor(self)

    def get(self, delivery_id: int) -> DeliveredExecution | None:
        """The released item with ``delivery_id`` if still stored (not pruned), else None."""
        self._settle()
        conn = self._connection()
        try:
            row = conn.execute(
                f"SELECT {_ITEM_COLUMNS} WHERE q.delivery_id = ?", (delivery_id,)
            ).fetchone()
        except sqlite3.Error as e:
            raise _translate(e, self._path, "get") from e
        return None if row is None else _item(row)

    def history(self) -> Iterator[FixMessage]:
        """Every stored, released report in delivery order (acked or not): feed it to a fresh
        :class:`~supervisor.orders.OrderTracker` after a restart."""
        self._settle()
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT r.tags, r.raw FROM queue AS q JOIN reports AS r ON r.arrival = q.arrival "
                "ORDER BY q.delivery_id"
            ).fetchall()
        except sqlite3.Error as e:
            raise _translate(e, self._path, "history") from e
        for tags, raw in rows:
            yield _decode(tags, raw)

    # ----------------------------------------------------------------------------- resume points

    def last_exec_id(self, index: int) -> ExecId | None:
        """Where a drop-copy replay of ``index`` must begin (inclusive): the highest ExecID
        stored for it — frozen at its value when the current :meth:`hold` began."""
        if self._hold_from is not None:
            return self._anchor.get(index)
        return self._last.get(index)

    def indexes(self) -> list[int]:
        """Exchange indexes that have at least one stored execution, ascending."""
        return sorted(self._last)

    def resume_points(self) -> dict[int, ExecId | None]:
        """``{index: last_exec_id(index)}`` for every known index (input of
        :func:`supervisor.reconcile.plan_recovery`)."""
        return {i: self.last_exec_id(i) for i in self.indexes()}

    # ----------------------------------------------------------------------------- retention

    def prune(self, now: float, *, keep_s: float = DEFAULT_KEEP_S) -> int:
        """Delete acked items received before ``now - keep_s``; return how many.

        A pruned execution is still recognised: any later copy with an ExecID at or below the
        highest pruned one of its index is a duplicate. Pending/reject identities are
        forgotten, so ``keep_s`` must cover the longest window in which a KalshiRT session
        could retransmit them (its MessageRetentionPeriod) where that matters.
        """
        if not keep_s > 0:
            raise LedgerError(f"keep_s must be > 0 seconds, got {keep_s!r}")
        cutoff = float(now) - float(keep_s)
        # Rows that are old enough *and* acked (a queue entry at or below acked_through).
        doomed = (
            "FROM reports AS r JOIN queue AS q ON q.arrival = r.arrival "
            "WHERE q.delivery_id <= ? AND r.received < ?"
        )
        args = (self._acked, cutoff)
        # The log's offers go into the tables in a transaction of their own first: should the
        # process die after the prune's commit and before the log is emptied, a replay must
        # not bring back rows the prune deleted.
        self._settle()
        conn = self._begin("prune")
        pruned = dict(self._pruned)
        try:
            # Order marks written behind must be in the table the quiet-order DELETE reads.
            self._write_behind(conn)
            tops = conn.execute(
                f"SELECT r.idx, max(r.clock) {doomed} AND r.idx IS NOT NULL GROUP BY r.idx", args
            ).fetchall()
            for idx, clock in tops:
                event = conn.execute(
                    f"SELECT max(r.event) {doomed} AND r.idx = ? AND r.clock = ?",
                    (*args, idx, clock),
                ).fetchone()[0]
                e = ExecId.from_parts(clock, event, idx)
                if idx not in pruned or (e.clock, e.event) > (pruned[idx].clock, pruned[idx].event):
                    pruned[idx] = e
            count = conn.execute(
                "DELETE FROM reports WHERE received < ? AND arrival IN "
                "(SELECT arrival FROM queue WHERE delivery_id <= ?)",
                (cutoff, self._acked),
            ).rowcount
            conn.execute(
                "DELETE FROM queue WHERE delivery_id <= ? AND NOT EXISTS "
                "(SELECT 1 FROM reports AS r WHERE r.arrival = queue.arrival)",
                (self._acked,),
            )
            conn.executemany(
                "UPDATE exec_marks SET pruned_clock = ?, pruned_event = ? WHERE idx = ?",
                [(e.clock, e.event, i) for i, e in pruned.items()],
            )
            # An order quiet for the whole keep window will not see a late report either.
            conn.execute("DELETE FROM order_marks WHERE updated < ?", (cutoff,))
            self._commit(conn, "prune")
        except sqlite3.Error as e:
            self._abort(conn)
            raise _translate(e, self._path, "prune") from e
        self._order_marks = {
            ok: m for ok, m in self._order_marks.items() if not m[1] < cutoff
        }
        self._pruned = pruned
        return int(count)

    def close(self) -> None:
        """Commit deferred offers and close the file. Idempotent."""
        failure: LedgerError | None = None
        if self._conn is not None and (
            self._open_tx or self._log_rows or self._log_queue or self._log_buf
            or self._acked > self._acked_stored
        ):
            try:
                # The meta row gets the last ack too, and the tables the log's offers: a
                # closed ledger needs neither side file.
                self._begin("close")
                self.commit()
            except LedgerError as e:
                failure = e  # still close; then report it
        self._close_side_files()
        with self._ckpt_lock:  # waits for a checkpoint in progress
            ckpt, self._ckpt_conn = self._ckpt_conn, None
            if ckpt is not None:
                try:
                    ckpt.close()
                except sqlite3.Error:
                    pass  # it only ever read and copied pages
        conn, self._conn = self._conn, None
        with _open_lock:
            if self._key is not None and _open_ledgers.get(self._key) is not None:
                if _open_ledgers[self._key]() in (self, None):
                    del _open_ledgers[self._key]
            self._key = None
        try:
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as e:
                    raise _translate(e, self._path, "close") from e
        finally:
            lock_fd, self._lock_fd = self._lock_fd, None
            _unlock_process(lock_fd)
        if failure is not None:
            raise failure


class DeliveryCursor:
    """Exactly-once consumption of a ledger: :meth:`next` first acks the item it returned
    last time, then returns the next one (or ``None`` when nothing is released).

    The application's async iterator follows the same rule: asking for the next execution
    acknowledges the previous one. If the process dies while an item is being processed, that
    item is delivered again after the restart (it was never acked); no acked item ever is.
    """

    def __init__(self, ledger: ExecutionLedger, *, prefetch: int = 256) -> None:
        self._ledger = ledger
        self._prefetch = prefetch
        self._buffer: list[DeliveredExecution] = []
        self._last: int | None = None

    def next(self) -> DeliveredExecution | None:
        """Ack the previously returned item, then return the next released one (or None)."""
        if self._last is not None:
            self._ledger.ack(self._last)
        if not self._buffer:
            self._buffer = self._ledger.next_undelivered(self._prefetch)
            self._buffer.reverse()
        if not self._buffer:
            return None
        item = self._buffer.pop()
        self._last = item.delivery_id
        return item


def _refuse_if_open(key: tuple[int, int], path: str) -> None:
    ref = _open_ledgers.get(key)
    other = ref() if ref is not None else None
    if other is not None and other._conn is not None:
        raise LedgerError(
            f"execution ledger {path!r} is already open in this process; share that instance "
            "or close it first"
        )


def _initialise(
    conn: sqlite3.Connection, path: str, account: str, now: float | None, synchronous: str
) -> None:
    try:
        # A new file gets 1 KiB pages (an existing one keeps its own: SQLite fixes the size
        # when the file is created). Every commit writes each page it touched to the WAL, and
        # an offer touches a few: at 4 KiB that was most of a commit's cost (a 2-report offer
        # plus its delivery, in process: ~400 -> ~270 us).
        conn.execute("PRAGMA page_size = 1024")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(
                f"execution ledger {path!r}: SQLite refused WAL mode (got {mode!r}); put the "
                "state directory on a local filesystem"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # One supervisor per account: the process lock (_lock_process) keeps other processes
        # out. SQLite's own locking stays NORMAL so that the checkpoint connection can work
        # beside this one; live offers no longer run transactions (the offer log), so its
        # per-transaction locking is paid once per write-behind. Without a process lock (no
        # fcntl), SQLite's exclusive lock keeps other processes out instead.
        if fcntl is None:  # pragma: no cover - not POSIX
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        # A checkpoint syncs the WAL and the database file (two fsyncs under NORMAL) and copies
        # pages back; SQLite's default of one per 1,000 WAL pages made one every ~170 live
        # commits, the largest part of a commit's cost on average (live offers, ack-on-next:
        # 345 -> 250 us per report). At 10,000 pages the WAL file grows to about 10 MB (40 MB
        # for a file made with 4 KiB pages).
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id == 0 and version == 0 and tables == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta VALUES (1, ?, NULL, 0, ?)",
                    (account, float(time.time() if now is None else now)),
                )
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif app_id != _APPLICATION_ID:
                raise LedgerError(
                    f"{path!r} is an SQLite database but not a kalshi-fix execution ledger "
                    f"(application_id {app_id:#x}); move it out of the state directory"
                )
            elif version != SCHEMA_VERSION:
                raise LedgerError(
                    f"execution ledger {path!r} has schema version {version}, this program "
                    f"expects {SCHEMA_VERSION}; run the matching program version"
                )
            else:
                row = conn.execute("SELECT account FROM meta WHERE id = 1").fetchone()
                if row is not None and row[0] != account:
                    raise LedgerError(
                        f"execution ledger {path!r} belongs to account {row[0]!r}, not "
                        f"{account!r}; the file was renamed or copied — move it aside"
                    )
                # A read-only file would open fine and fail at the first offer; fail here.
                conn.execute("UPDATE meta SET id = id WHERE id = 1")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        raise _translate(e, path, "open") from e


def _lock_process(path: str) -> int | None:
    """Take the ledger's process lock (``<ledger>-lock``, an advisory ``flock`` held while the
    ledger is open): a second supervisor process for the same account is refused here."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return None
    lock_path = path + _LOCK_SUFFIX
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise LedgerError(
            f"execution ledger {path!r}: cannot open its lock file {lock_path!r}: "
            f"{e.strerror or e}; check that the directory is writable by this user"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LedgerError(
            f"execution ledger {path!r}: another process holds the file; only one supervisor "
            "may run an account"
        ) from None
    return fd


def _unlock_process(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)  # releases the flock
        except OSError:
            pass
