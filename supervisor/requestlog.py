"""The request log: every order request the supervisor sends, durable before it is sent.

The execution ledger keeps what the exchange *answered*; what was *asked* lived only in memory,
so a request sent just before the process died (a crash, a SIGKILL) was forgotten: after the
restart nothing marked it ambiguous, and the application, which saw no report of it, could not
tell whether the order exists. The request log closes that window.
:class:`~supervisor.orderentry.OrderEntry` appends each NewOrderSingle, OrderCancelRequest and
OrderCancelReplaceRequest here after the tracker recorded it and before the session sends it;
at the next start, every logged request the ledger has no report of is put back into the
tracker as *ambiguous* and goes through the same resolution as a request in flight at a
disconnect: the first complete drop-copy replay tells whether the exchange has it (``"known"``)
or not (``"not_received"``; never resent after a restart — the application decides).

Format: one file beside the ledger (``<ledger>-requests``), records appended with one ``write``
each (:mod:`supervisor.records`, the CRC seeded with the account's name) — ClOrdID, session,
MsgType, send time and the request's fields (or, to forget a request closed without any report,
its ClOrdID with an empty MsgType). Durable against a process crash once the write returns,
like the ledger's offer log; a torn last record (power loss) ends the reading. The file is
rewritten (to a temporary file, then renamed over it) with only the requests still unanswered:
at start, and every :data:`COMPACT_EVERY` appends. The rewrite takes the records from memory
(the last one of each ClOrdID the file holds), not from the file: reading and unpickling 8,192
records back stalled the order path for ~75 ms.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator

import attrs

from sessions.errors import StoreError

from .records import frame, read_all, read_frames, replace_file

__all__ = ["COMPACT_EVERY", "LoggedRequest", "RequestLog", "RequestLogError"]

#: Appends between two rewrites of the file with only the unanswered requests.
COMPACT_EVERY = 8192


class RequestLogError(StoreError):
    """The request log cannot be read or written (the message names the file)."""


@attrs.frozen
class LoggedRequest:
    """One request as it was sent: ``pairs`` are its body fields (MsgType not included)."""

    cl_ord_id: str
    session: str
    msg_type: bytes
    sent_at: float
    pairs: tuple[tuple[int, bytes], ...] = attrs.field(repr=False)


def _frame(req: LoggedRequest, seed: int) -> bytes:
    return frame((req.cl_ord_id, req.session, req.msg_type, req.sent_at, req.pairs), seed)


def _records(data: bytes, seed: int) -> Iterator[LoggedRequest]:
    for cl, session, msg_type, sent_at, pairs in read_frames(data, seed):
        yield LoggedRequest(cl, session, msg_type, sent_at, tuple(pairs))


def _latest(records: Iterator[LoggedRequest]) -> dict[str, LoggedRequest]:
    """The last record of each ClOrdID, without those a later record forgets."""
    out: dict[str, LoggedRequest] = {}
    for r in records:
        if r.msg_type:
            out[r.cl_ord_id] = r
        else:
            out.pop(r.cl_ord_id, None)
    return out


class RequestLog:
    """The request log of one account (module docstring). Open with :meth:`open`.

    :attr:`recovered` holds the requests the file had at open, by ClOrdID (the last record of
    a ClOrdID wins: a retry of the same request logs it again). Not thread-safe.
    """

    def __init__(self, path: str, fd: int, seed: int, recovered: dict[str, LoggedRequest]) -> None:
        """Internal: use :meth:`RequestLog.open`."""
        self._path = path
        self._fd: int | None = fd
        self._seed = seed
        #: Requests found in the file at open (ClOrdID → request).
        self.recovered = recovered
        self._appends = 0
        # What the file holds, as _latest() would read it back: the last record of each
        # ClOrdID not forgotten since, already framed — what a compaction keeps is copied from
        # here.
        self._frames: dict[str, bytes] = {cl: _frame(r, seed) for cl, r in recovered.items()}

    @classmethod
    def open(cls, path: str | os.PathLike[str], account: str) -> RequestLog:
        """Open (creating if needed) the request log at ``path`` for ``account`` and read it."""
        path = os.fspath(path)
        seed = zlib.crc32(account.encode("utf-8", "surrogatepass"))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise RequestLogError(
                f"cannot open the request log {path!r}: {e.strerror or e}; check that the "
                "state directory is writable by this user"
            ) from e
        try:
            data = read_all(fd)
        except OSError as e:
            os.close(fd)
            raise RequestLogError(
                f"cannot read the request log {path!r}: {e.strerror or e}"
            ) from e
        return cls(path, fd, seed, _latest(_records(data, seed)))

    @property
    def path(self) -> str:
        """The log's file."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else "open"
        return f"RequestLog({self._path!r}, {state}, recovered={len(self.recovered)})"

    def record(self, request: LoggedRequest) -> None:
        """Append ``request``; durable against a process crash when this returns. Raises
        :class:`RequestLogError` when the write fails: the caller must not send it then."""
        fd = self._fd
        if fd is None:
            raise RequestLogError(f"the request log {self._path!r} is closed")
        record = _frame(request, self._seed)
        try:
            written = os.write(fd, record)
        except OSError as e:
            raise RequestLogError(
                f"cannot write the request log {self._path!r}: {e.strerror or e}; the request "
                f"{request.cl_ord_id!r} was not sent"
            ) from e
        if written != len(record):
            # A torn record would end every later reading: rewrite what was whole instead.
            self._rewrite_after_torn_write(written)
            raise RequestLogError(
                f"the request log {self._path!r} took only {written} of {len(record)} bytes "
                f"(disk full?); the request {request.cl_ord_id!r} was not sent"
            )
        self._appends += 1
        if request.msg_type:
            self._frames[request.cl_ord_id] = record
        else:
            self._frames.pop(request.cl_ord_id, None)

    def forget(self, cl_ord_id: str) -> None:
        """Record that the request ``cl_ord_id`` is settled although the ledger has no report
        of it (closed locally: it never reached the exchange), so that a restart does not make
        it ambiguous again."""
        self.record(LoggedRequest(cl_ord_id, "", b"", 0.0, ()))

    @property
    def compaction_due(self) -> bool:
        """True once :data:`COMPACT_EVERY` requests were appended since the last rewrite."""
        return self._appends >= COMPACT_EVERY

    def compact(self, keep: Callable[[str], bool]) -> int:
        """Rewrite the file with only the requests whose ClOrdID ``keep`` accepts (the ones
        still unanswered); returns how many were kept. Atomic: a crash leaves the old file or
        the new one."""
        if self._fd is None:
            raise RequestLogError(f"the request log {self._path!r} is closed")
        kept = {cl: f for cl, f in self._frames.items() if keep(cl)}
        self._replace(b"".join(kept.values()))
        self._frames = kept
        self._appends = 0
        return len(kept)

    def _rewrite_after_torn_write(self, written: int) -> None:
        fd = self._fd
        assert fd is not None
        try:
            os.ftruncate(fd, os.fstat(fd).st_size - max(written, 0))
        except OSError:
            pass  # the torn tail stays; reading stops at it (the requests before it are read)

    def _replace(self, content: bytes) -> None:
        try:
            replace_file(self._path, content)
            new_fd = os.open(self._path, os.O_RDWR | os.O_APPEND)
        except OSError as e:
            raise RequestLogError(
                f"cannot rewrite the request log {self._path!r}: {e.strerror or e}; check the "
                "disk"
            ) from e
        old, self._fd = self._fd, new_fd
        if old is not None:
            os.close(old)

    def close(self) -> None:
        """Close the file. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
