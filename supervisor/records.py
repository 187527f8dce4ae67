"""Durable side files: the record framing shared by the ledger's offer log and the request log,
and the atomic replacement of a whole small file (:func:`replace_file`: the request log's
compaction, the kill switch's and the reconciliation's state).

A record is ``length (u32) | CRC-32 (u32) | payload``, the payload a pickle of plain data
(tuples, lists, strings, bytes, numbers, None). The CRC covers the payload and starts from a
*seed* that names the file's owner (a ledger's identity, an account), so a file left beside
another owner reads as empty rather than as foreign data. Reading stops at the first record
that is cut short or does not check out — what a crash in the middle of an append leaves —
and keeps everything before it. The loader refuses classes and functions, so a damaged or
planted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = ["frame", "read_all", "read_frames", "replace_file"]

_HEADER = struct.Struct("<II")


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a record holds data only, not {module}.{name}")


def frame(data: Any, seed: int) -> bytes:
    """One record holding ``data`` (plain data only), checksummed from ``seed``."""
    payload = pickle.dumps(data, protocol=4)
    return _HEADER.pack(len(payload), zlib.crc32(payload, seed)) + payload


def read_all(fd: int) -> bytes:
    """Everything in the file open as ``fd`` (raises ``OSError``)."""
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def read_frames(buffer: bytes, seed: int) -> Iterator[Any]:
    """The data of each whole record in ``buffer``, in order, up to the first torn or foreign
    one."""
    pos = 0
    header = _HEADER.size
    while pos + header <= len(buffer):
        size, crc = _HEADER.unpack_from(buffer, pos)
        payload = buffer[pos + header : pos + header + size]
        if len(payload) != size or zlib.crc32(payload, seed) != crc:
            return
        try:
            data = _DataOnly(io.BytesIO(payload)).load()
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError):
            return
        yield data
        pos += header + size


def replace_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace the file at ``path`` with ``data``, atomically and durably: a temporary file
    beside it is written and fsynced, renamed over it, and the directory fsynced, so a crash
    leaves the old file or the new one, never a mix or nothing. Raises ``OSError``."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
