"""The FIX message as the application sees it: an ordered list of ``(tag, value)`` pairs.

It keeps simplefix's vocabulary (``append_pair``, ``get(tag, nth)``, ``encode``) so code written
against ``simplefix.FixMessage`` reads the same, and converts to and from it losslessly. Tags are
``int``; values are ``bytes`` exactly as on the wire (no decoding on the hot path).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # pragma: no cover
    import simplefix

Value = Union[bytes, str, int, Decimal, float, bool]

# Tags that simplefix treats as header fields; used only to place header pairs on append.
_HEADER_TAGS = frozenset({8, 9, 35, 49, 56, 34, 52, 43, 97, 122, 115, 128, 1128, 1129})


def to_bytes(value: Value) -> bytes:
    """Render a Python value as FIX wire bytes (``True`` → ``Y``; Decimal without exponent)."""
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("ascii")
    if value is True:
        return b"Y"
    if value is False:
        return b"N"
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, Decimal):
        return format(value, "f").encode("ascii")
    if isinstance(value, float):
        return repr(value).encode("ascii")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("ascii")
    raise TypeError(f"cannot put a {type(value).__name__} into a FIX field")


def wire_pairs(pairs: Iterable[tuple[int, Value]]) -> list[tuple[int, bytes]]:
    """A new list of ``(int, bytes)`` pairs from ``pairs`` (values rendered by
    :func:`to_bytes`). Pairs that already have that shape are taken as they are: checking
    them is several times cheaper than rebuilding each one."""
    out = list(pairs)
    for t, v in out:
        if type(v) is not bytes or type(t) is not int:
            return [(int(t), to_bytes(v)) for t, v in out]
    return out  # type: ignore[return-value]


class FixMessage:
    """An ordered FIX message. Equality compares the pairs (order matters, as on the wire)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: Iterable[tuple[int, Value]] | None = None) -> None:
        self.pairs: list[tuple[int, bytes]] = [] if pairs is None else wire_pairs(pairs)

    # --- simplefix-compatible API -------------------------------------------------------
    def append_pair(self, tag: int | str | bytes, value: Value, header: bool = False) -> None:
        """Append a field. With ``header=True`` the field goes after the last header field."""
        t = int(tag)
        v = to_bytes(value)
        if header:
            i = 0
            for i_, (pt, _) in enumerate(self.pairs):
                if pt in _HEADER_TAGS:
                    i = i_ + 1
            self.pairs.insert(i, (t, v))
        else:
            self.pairs.append((t, v))

    def get(self, tag: int | str | bytes, nth: int = 1) -> bytes | None:
        """The value of the ``nth`` occurrence of ``tag`` (1-based), or ``None``."""
        t = int(tag)
        for pt, pv in self.pairs:
            if pt == t:
                nth -= 1
                if nth == 0:
                    return pv
        return None

    def first_values(self) -> dict[int, bytes]:
        """Tag → the value of its first occurrence (what :meth:`get` returns), in one pass: for
        code that reads many tags of one message, where each ``get`` would scan it again."""
        # Reversed, so that the first occurrence is written last and wins.
        return dict(reversed(self.pairs))

    def remove(self, tag: int | str | bytes, nth: int = 1) -> bytes | None:
        """Remove the ``nth`` occurrence of ``tag`` and return its value (``None`` if absent)."""
        t = int(tag)
        for i, (pt, pv) in enumerate(self.pairs):
            if pt == t:
                nth -= 1
                if nth == 0:
                    del self.pairs[i]
                    return pv
        return None

    def encode(self, begin_string: bytes | None = None) -> bytes:
        """Wire bytes with BodyLength and CheckSum computed; existing 9/10 pairs are ignored."""
        from .codec import encode_pairs  # local import: codec imports this module

        bs = begin_string or self.get(8) or b"FIXT.1.1"
        return encode_pairs(
            [(t, v) for t, v in self.pairs if t not in (8, 9, 10)], begin_string=bs
        )

    # --- conveniences -------------------------------------------------------------------
    @property
    def msg_type(self) -> bytes | None:
        """MsgType(35), or ``None``."""
        return self.get(35)

    def get_str(self, tag: int, nth: int = 1) -> str | None:
        v = self.get(tag, nth)
        return None if v is None else v.decode("latin-1")

    def get_int(self, tag: int, nth: int = 1) -> int | None:
        """The field as an int; ``None`` if absent; ``ValueError`` if not an integer."""
        v = self.get(tag, nth)
        return None if v is None else int(v)

    def get_decimal(self, tag: int, nth: int = 1) -> Decimal | None:
        v = self.get(tag, nth)
        return None if v is None else Decimal(v.decode("ascii"))

    def get_bool(self, tag: int, nth: int = 1) -> bool | None:
        v = self.get(tag, nth)
        return None if v is None else v == b"Y"

    def count(self, tag: int) -> int:
        return sum(1 for t, _ in self.pairs if t == tag)

    def __contains__(self, tag: object) -> bool:
        return any(t == tag for t, _ in self.pairs)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FixMessage):
            return NotImplemented
        return self.pairs == other.pairs

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> FixMessage:
        m = FixMessage()
        m.pairs = list(self.pairs)
        return m

    def __repr__(self) -> str:
        body = "|".join(f"{t}={v.decode('latin-1')}" for t, v in self.pairs)
        return f"FixMessage({body})"

    # --- simplefix interop --------------------------------------------------------------
    def to_simplefix(self) -> simplefix.FixMessage:
        """The same pairs as a ``simplefix.FixMessage``."""
        import simplefix

        m = simplefix.FixMessage()
        for t, v in self.pairs:
            m.append_pair(t, v)
        return m

    @classmethod
    def from_simplefix(cls, message: simplefix.FixMessage) -> FixMessage:
        """Copy a ``simplefix.FixMessage`` (its pairs are ``(bytes, bytes)``)."""
        m = cls()
        m.pairs = [(int(t), bytes(v)) for t, v in message.pairs]
        return m


# (epoch second, its b"YYYYMMDD-HH:MM:SS") last printed: every message sent carries a
# SendingTime and every simulated report a TransactTime, many to a second, so the date and time
# of day are printed once per second. One tuple, replaced whole, so threads never see halves.
_last_second: tuple[int | None, bytes] = (None, b"")
# b".000" … b".999": the milliseconds of a timestamp, looked up rather than formatted.
_MILLIS = [b".%03d" % i for i in range(1000)]


def utc_timestamp(now: float) -> bytes:
    """UTCTimestamp with millisecond precision, ``YYYYMMDD-HH:MM:SS.mmm``, from epoch seconds."""
    global _last_second
    secs, milli = divmod(int(round(now * 1000)), 1000)
    second, text = _last_second
    if secs != second:
        t = _dt.datetime.fromtimestamp(secs, _dt.timezone.utc)
        text = b"%04d%02d%02d-%02d:%02d:%02d" % (
            t.year, t.month, t.day, t.hour, t.minute, t.second
        )
        _last_second = (secs, text)
    return text + _MILLIS[milli]


# Epoch seconds at the start of recently seen minutes, keyed by b"YYYYMMDD-HH:MM": every
# received message's SendingTime is parsed, and consecutive ones nearly always share the minute,
# so only the seconds and fraction need reading. Bounded; cleared when full.
_MINUTES: dict[bytes, float] = {}
_MINUTES_LIMIT = 256


def parse_utc_timestamp(value: bytes) -> float:
    """Epoch seconds from a UTCTimestamp (seconds, millis, micros or nanos precision).

    Raises ``ValueError`` with the offending value when it is not a UTCTimestamp.
    """
    base = _MINUTES.get(value[:14])
    if base is not None:
        # The minute is known valid; check the rest exactly as the full parse below does.
        tail = value[14:]
        n = len(tail)
        if n >= 3 and tail[0] == 58 and tail[1:3].isdigit() and tail[1:3] < b"60":  # ":SS"
            if n == 3:
                return base + int(tail[1:3])
            if tail[3] == 46 and 5 <= n <= 13 and tail[4:].isdigit():  # ".fff…", 1–9 digits
                return base + int(tail[1:3]) + int(tail[4:]) / 10 ** (n - 4)
    result = _parse_utc_timestamp(value)
    if len(_MINUTES) >= _MINUTES_LIMIT:
        _MINUTES.clear()
    _MINUTES[value[:14]] = _minute_start(value)
    return result


def _minute_start(value: bytes) -> float:
    # Called only after value parsed as a whole, so its first 14 bytes are a valid minute.
    return _dt.datetime(
        int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]), int(value[12:14]),
        tzinfo=_dt.timezone.utc,
    ).timestamp()


def _parse_utc_timestamp(value: bytes) -> float:
    s = value.decode("ascii", "replace")
    try:
        date, _, clock = s.partition("-")
        if len(date) != 8 or len(clock) < 8 or clock[2] != ":" or clock[5] != ":":
            raise ValueError
        # int() alone would let signs and spaces through ("2026+825", "1 :03:27").
        if not (date + clock[0:2] + clock[3:5] + clock[6:8]).isdigit():
            raise ValueError
        frac = 0.0
        if len(clock) > 8:
            if clock[8] != "." or not clock[9:].isdigit() or len(clock) - 9 > 9:
                raise ValueError
            frac = int(clock[9:]) / 10 ** (len(clock) - 9)
        t = _dt.datetime(
            int(date[0:4]), int(date[4:6]), int(date[6:8]),
            int(clock[0:2]), int(clock[3:5]), int(clock[6:8]), tzinfo=_dt.timezone.utc,
        )
    except (ValueError, IndexError):
        raise ValueError(f"not a UTCTimestamp: {s!r}") from None
    return t.timestamp() + frac
