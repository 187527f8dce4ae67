"""The execution journal of standalone mode: one JSON line per delivered execution.

The journal is the application's durable copy of the ledger's delivery stream. The crash rule is
**journal first, then ack**:

1. :meth:`JournalWriter.append_many` writes the items (and fsyncs, by default);
2. only then is the ledger acked through the last of them.

A crash between 1 and 2 leaves items journaled but not acked; on restart :func:`sync_ledger`
reads the journal's last ``delivery_id`` and acks the ledger through it, so they are not written
again. A crash in the middle of 1 can leave a torn last line; :meth:`JournalWriter.open` cuts it
off (its items were never acked, so they are written again in full). Either way every delivered
execution appears exactly once, in delivery order.

Line format (keys always present, ``null`` when the report lacks the field; quantities and
prices are strings exactly as on the wire, never floats)::

    {"delivery_id": 17, "exec_id": "4;7;1", "order_id": "...", "cl_ord_id": "...",
     "orig_cl_ord_id": null, "symbol": "...", "side": "1", "msg_type": "8", "exec_type": "F",
     "ord_status": "1", "last_qty": "5.00", "last_px": "0.4100", "cum_qty": "5.00",
     "leaves_qty": "5.00", "avg_px": "0.4100", "transact_time": "20260825-14:03:11.512",
     "text": null, "source": "live", "session": "KalshiNR"}

``exec_id`` is the normalised ExecID for executions, and Tag 17 as received (``-1;-1`` for
pending reports) otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Literal

from sessions.errors import KalshiFixError

from .ledger import DeliveredExecution, ExecutionLedger

__all__ = [
    "FsyncPolicy",
    "JournalError",
    "JournalWriter",
    "drain_to_journal",
    "journal_record",
    "sync_ledger",
]

#: ``"always"``: fsync after every append call (survives power loss); ``"never"``: leave the
#: data to the OS (survives a crash of this process, not of the machine).
FsyncPolicy = Literal["always", "never"]

_FIELDS: tuple[tuple[str, int], ...] = (
    ("order_id", 37),
    ("cl_ord_id", 11),
    ("orig_cl_ord_id", 41),
    ("symbol", 55),
    ("side", 54),
    ("msg_type", 35),
    ("exec_type", 150),
    ("ord_status", 39),
    ("last_qty", 32),
    ("last_px", 31),
    ("cum_qty", 14),
    ("leaves_qty", 151),
    ("avg_px", 6),
    ("transact_time", 60),
    ("text", 58),
)
_TAGS = frozenset(t for _, t in _FIELDS) | {17}
_TAIL_CHUNK = 64 * 1024


class JournalError(KalshiFixError):
    """The journal file cannot be used (the message names the file and what to do)."""


def _exec_id_field(item: DeliveredExecution) -> str | None:
    if item.exec_id is not None:
        return str(item.exec_id)
    v = item.message.get(17)
    return None if v is None else v.decode("latin-1")


def journal_record(item: DeliveredExecution) -> dict[str, Any]:
    """The JSON object written for ``item`` (see the module docstring)."""
    found: dict[int, bytes] = {}
    for t, v in item.message.pairs:
        if t in _TAGS and t not in found:
            found[t] = v
    rec: dict[str, Any] = {"delivery_id": item.delivery_id, "exec_id": _exec_id_field(item)}
    for name, tag in _FIELDS:
        value = found.get(tag)
        rec[name] = None if value is None else value.decode("latin-1")
    rec["source"] = item.source
    rec["session"] = item.session
    return rec


class JournalWriter:
    """Appends delivered executions to a JSON-lines file. Open with :meth:`open`."""

    def __init__(
        self,
        path: str,
        fd: int,
        fsync: FsyncPolicy,
        last: dict[str, Any] | None,
    ) -> None:
        """Internal: use :meth:`JournalWriter.open`."""
        self._path = path
        self._fd: int | None = fd
        self._fsync = fsync
        self._last_delivery_id: int | None = None if last is None else int(last["delivery_id"])
        self._last_exec_id: str | None = None if last is None else last.get("exec_id")

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, fsync: FsyncPolicy = "always") -> JournalWriter:
        """Open ``path`` for appending (created with its directory if missing). A torn last
        line left by a crash mid-write is cut off; the last complete line tells
        :attr:`last_delivery_id`. Raises :class:`JournalError` if the file cannot be opened or
        its last complete line is not a journal record."""
        if fsync not in ("always", "never"):
            raise JournalError(f'fsync must be "always" or "never", got {fsync!r}')
        p = os.fspath(path)
        try:
            parent = os.path.dirname(os.path.abspath(p))
            os.makedirs(parent, exist_ok=True)
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            raise JournalError(
                f"cannot open the execution journal {p!r}: {e.strerror or e}; check that the "
                "directory exists and is writable by this user"
            ) from e
        try:
            last = _repair_and_read_last(fd, p)
        except BaseException:
            os.close(fd)
            raise
        return cls(p, fd, fsync, last)

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else "open"
        return f"JournalWriter({self._path!r}, {state}, last_delivery_id={self._last_delivery_id})"

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The journal file."""
        return self._path

    @property
    def last_delivery_id(self) -> int | None:
        """The ledger delivery id of the last complete line (None for an empty journal)."""
        return self._last_delivery_id

    @property
    def last_exec_id(self) -> str | None:
        """The ``exec_id`` of the last complete line."""
        return self._last_exec_id

    def append(self, item: DeliveredExecution) -> None:
        """Append one item (see :meth:`append_many`)."""
        self.append_many((item,))

    def append_many(self, items: Sequence[DeliveredExecution]) -> None:
        """Append ``items`` (delivery order) as one write, then fsync per the policy. Items at
        or below :attr:`last_delivery_id` are skipped: they are in the journal already."""
        fd = self._fd
        if fd is None:
            raise JournalError(f"execution journal {self._path!r} is closed; open it again")
        last = self._last_delivery_id or 0
        lines = []
        newest: DeliveredExecution | None = None
        for item in items:
            if item.delivery_id <= last:
                continue
            last = item.delivery_id
            newest = item
            lines.append(json.dumps(journal_record(item), separators=(",", ":")))
        if newest is None:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self._fsync == "always":
                os.fsync(fd)
        except OSError as e:
            raise JournalError(
                f"writing the execution journal {self._path!r} failed: {e.strerror or e}; the "
                "items stay un-acked in the ledger and are written again after a restart"
            ) from e
        self._last_delivery_id = last
        self._last_exec_id = _exec_id_field(newest)

    def close(self) -> None:
        """Close the file. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _repair_and_read_last(fd: int, path: str) -> dict[str, Any] | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    # Find the last newline; anything after it is a torn write.
    end = size
    pos = size
    newline = -1
    while pos > 0 and newline < 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            newline += pos
    if newline < 0:
        os.ftruncate(fd, 0)  # a single torn line: nothing complete was ever written
        return None
    if newline + 1 != end:
        os.ftruncate(fd, newline + 1)
        os.fsync(fd)
    # The last complete line ends at `newline`; find where it starts.
    start = newline
    while True:
        lo = max(0, start - _TAIL_CHUNK)
        chunk = os.pread(fd, start - lo, lo)
        i = chunk.rfind(b"\n")
        if i >= 0:
            start = lo + i + 1
            break
        if lo == 0:
            start = 0
            break
        start = lo
    line = os.pread(fd, newline - start, start)
    try:
        rec = json.loads(line)
        int(rec["delivery_id"])
    except (ValueError, KeyError, TypeError):
        raise JournalError(
            f"the last line of the execution journal {path!r} is not a journal record "
            f"({line[:80]!r}); the file was edited or is not a journal — move it aside"
        ) from None
    if not isinstance(rec, dict):
        raise JournalError(f"the last line of the execution journal {path!r} is not an object")
    return rec


def sync_ledger(journal: JournalWriter, ledger: ExecutionLedger) -> int:
    """Ack in ``ledger`` what ``journal`` already holds (after a crash between journal write and
    ack); return how many items that acked. Raises :class:`JournalError` when the journal is
    ahead of the ledger or disagrees with it about its last item (wrong pairing of files)."""
    last = journal.last_delivery_id
    if last is None or last <= ledger.acked_through:
        return 0
    if last > ledger.last_delivery_id:
        raise JournalError(
            f"the execution journal {journal.path!r} ends at delivery {last} but the ledger "
            f"{ledger.path!r} has released only {ledger.last_delivery_id}: they do not belong "
            "together (was the ledger replaced?) — move one of them aside"
        )
    item = ledger.get(last)
    if item is not None and _exec_id_field(item) != journal.last_exec_id:
        raise JournalError(
            f"the execution journal {journal.path!r} and the ledger {ledger.path!r} disagree "
            f"about delivery {last} (exec_id {journal.last_exec_id!r} vs "
            f"{_exec_id_field(item)!r}); they do not belong together — move one aside"
        )
    before = ledger.acked_through
    ledger.ack(last)
    return last - before


def drain_to_journal(ledger: ExecutionLedger, journal: JournalWriter, *, batch: int = 1000) -> int:
    """Write every released, un-acked ledger item to ``journal`` and ack it (journal first);
    return how many items were written. Safe to call at any time, including after a crash."""
    sync_ledger(journal, ledger)
    written = 0
    while True:
        items = ledger.next_undelivered(batch)
        if not items:
            return written
        journal.append_many(items)
        ledger.ack(items[-1].delivery_id)
        written += len(items)
