"""A record of every byte the simulated gateway exchanged, in a stable textual form.

Two runs with the same fault seed and the same client behaviour under trio's ``MockClock`` must
produce the same wire log, timestamps included; :meth:`WireLog.digest` turns that promise into
one string a test can compare, and :meth:`WireLog.dump` into a diff a person can read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import attrs

__all__ = ["WireLog", "WireRecord", "render_bytes"]

DIRECTIONS = ("in", "out")

# Printable ASCII stays as it is, except the characters the rendering itself gives a meaning to:
# "|" stands for SOH and "\" starts an escape, so both are escaped to keep the form unambiguous.
_RENDER = tuple(
    "|" if b == 1 else chr(b) if 0x20 <= b < 0x7F and b not in b"|\\" else f"\\x{b:02x}"
    for b in range(256)
)


def render_bytes(data: bytes) -> str:
    r"""``data`` as one line of ASCII: SOH as ``|``, other unprintable bytes (and ``|``, ``\``) as ``\xNN``."""
    return "".join(map(_RENDER.__getitem__, data))


@attrs.frozen
class WireRecord:
    """Bytes that crossed one connection in one direction at one time.

    ``direction`` is ``"in"`` (client → gateway) or ``"out"`` (gateway → client); empty ``data``
    on ``"in"`` is the end of the stream as the gateway saw it.
    """

    time: float
    endpoint: str
    connection_id: int
    direction: str
    data: bytes = attrs.field(repr=lambda d: repr(d[:80]) + ("…" if len(d) > 80 else ""))

    def line(self) -> str:
        """The record as one line of :meth:`WireLog.dump` (without the newline)."""
        return (
            f"{self.time:.6f} {self.endpoint} {self.connection_id} {self.direction} "
            f"{len(self.data)} {render_bytes(self.data)}"
        )


class WireLog:
    """Every chunk read from or written to the clients, in the order it happened.

    Chunks are recorded as the stream saw them (one record per read or write), so the log is as
    deterministic as the clients' own writes: exact under ``MockClock`` with in-memory streams.
    """

    def __init__(self) -> None:
        #: The records, oldest first.
        self.entries: list[WireRecord] = []

    def record(
        self, time: float, endpoint: str, connection_id: int, direction: str, data: bytes
    ) -> None:
        """Append one chunk; ``direction`` is ``"in"`` or ``"out"``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"wire log direction must be 'in' or 'out', got {direction!r}")
        self.entries.append(WireRecord(time, endpoint, connection_id, direction, bytes(data)))

    def for_connection(self, connection_id: int) -> list[WireRecord]:
        """The records of one connection, oldest first."""
        return [e for e in self.entries if e.connection_id == connection_id]

    def data(self, direction: str, connection_id: int | None = None) -> bytes:
        """All bytes that went one way (on one connection, or on all of them), concatenated."""
        return b"".join(
            e.data
            for e in self.entries
            if e.direction == direction
            and (connection_id is None or e.connection_id == connection_id)
        )

    def dump(self) -> bytes:
        """One line per record: time (6 decimals), endpoint, connection, direction, byte count
        and the bytes rendered by :func:`render_bytes`. Stable across runs and platforms."""
        return "".join(e.line() + "\n" for e in self.entries).encode("ascii")

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`dump`: equal digests mean equal wire logs."""
        return hashlib.sha256(self.dump()).hexdigest()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[WireRecord]:
        return iter(self.entries)
