"""Kalshi ExecIDs (tag 17): ``clock;event`` on exchange index 0, ``clock;event;index`` elsewhere.

ExecIDs increase monotonically *within one exchange index* (REFERENCE §4.7); nothing relates
ExecIDs of different indexes (§11 #10). :class:`ExecId` therefore orders only against ExecIDs of
its own index and raises ``TypeError`` otherwise, so an accidental cross-index ``max()`` or sort
fails loudly instead of silently picking the wrong resume point.

PENDING reports (ExecType A/6/E) carry the placeholder ``-1;-1``; :data:`PENDING` stands for it.
It is not a position in the execution sequence, so it is never ordered against anything either.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from sessions.errors import KalshiFixError

__all__ = ["EXCHANGE_INDEXES", "ExecId", "ExecIdError", "PENDING"]

#: The exchange's shards (REFERENCE §1.7: 0 default, 1 combos, 2 crypto, 3 tennis and baseball).
#: An order sent without ExDestination(100) is routed by its symbol to a shard the client cannot
#: tell, so only a replay of every one of these can say what happened to it.
EXCHANGE_INDEXES: tuple[int, ...] = (0, 1, 2, 3)

# ASCII digits only (``\d`` would admit other scripts' digits), no signs, blanks or exponents:
# every accepted value has exactly one wire form, so two spellings of one id cannot dodge
# de-duplication. The pending placeholder is the only negative form; an index suffix on it
# ("-1;-1;2") is tolerated because whether a shard's pending reports carry one is undocumented.
_WIRE = re.compile(r"(?:(-1);(-1)|([0-9]+);([0-9]+))(?:;([0-9]+))?")


# Every report's ExecID is parsed by the ledger, the order tracker and reconciliation in turn;
# ExecId is immutable, so they share one parse through this memo (cleared when it is full, so
# it stays a few hundred kilobytes; a miss only costs the parse).
_PARSED: dict[str | bytes, ExecId] = {}
_PARSED_MAX = 4096


class ExecIdError(KalshiFixError, ValueError):
    """A value is not a Kalshi ExecID (the message quotes it)."""


def _check_int(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int:
        raise ExecIdError(f"ExecId.{attribute.name} must be an int, got {value!r}")


@attrs.frozen(order=False)
class ExecId:
    """One ExecID, parsed. Build with :meth:`parse`; ``str()`` gives the wire form back.

    Equal ids hash alike; ``<``/``>`` work only between ids of the same exchange index and
    compare ``(clock, event)`` numerically.
    """

    clock: int = attrs.field(validator=_check_int)
    event: int = attrs.field(validator=_check_int)
    index: int = attrs.field(default=0, validator=_check_int)

    def __attrs_post_init__(self) -> None:
        pending = self.clock == -1 and self.event == -1
        if not pending and (self.clock < 0 or self.event < 0):
            raise ExecIdError(
                f"ExecID parts must be >= 0 (only -1;-1 marks a pending report), "
                f"got clock={self.clock} event={self.event}"
            )
        if self.index < 0:
            raise ExecIdError(f"exchange index must be >= 0, got {self.index}")

    @classmethod
    def parse(cls, value: str | bytes) -> ExecId:
        """Parse the wire form. ``"4;7;0"`` is accepted as index 0 (its wire form is ``4;7``).

        Raises :class:`ExecIdError` (a ``ValueError``) quoting the value when it is malformed.
        """
        kind = type(value)
        if kind is bytes or kind is str:
            known = _PARSED.get(value)
            if known is not None:
                return known
            parsed = cls._parse(value)
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[value] = parsed
            return parsed
        return cls._parse(value)

    @classmethod
    def _parse(cls, value: str | bytes) -> ExecId:
        if type(value) is bytes:
            # The usual wire form, without decoding or the pattern: "clock;event" or
            # "clock;event;index", each part non-empty ASCII digits (bytes.isdigit() accepts
            # exactly [0-9]+). Anything else, the pending placeholder included, takes the
            # general path below with its error messages.
            parts = value.split(b";")
            if len(parts) == 2:
                clock, event = parts
                if clock.isdigit() and event.isdigit():
                    return _trusted(int(clock), int(event), 0)
            elif len(parts) == 3:
                clock, event, index = parts
                if clock.isdigit() and event.isdigit() and index.isdigit():
                    return _trusted(int(clock), int(event), int(index))
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value).decode("ascii", "replace")
        elif isinstance(value, str):
            text = value
        else:
            raise ExecIdError(f"an ExecID must be str or bytes, got {type(value).__name__}")
        m = _WIRE.fullmatch(text)
        if m is None:
            raise ExecIdError(
                f"not a Kalshi ExecID: {text!r} (expected 'clock;event' or "
                "'clock;event;exchange_index' with non-negative integers, or '-1;-1')"
            )
        shard = int(m.group(5)) if m.group(5) is not None else 0
        if m.group(1) is not None:
            return _trusted(-1, -1, shard)
        return _trusted(int(m.group(3)), int(m.group(4)), shard)

    @classmethod
    def from_parts(cls, clock: int, event: int, index: int) -> ExecId:
        """Rebuild an ExecId from parts that were validated before (e.g. read back from the
        ledger): skips the validators, which dominate the cost of 10k-report replays."""
        return _trusted(clock, event, index)

    @property
    def is_pending(self) -> bool:
        """True for the ``-1;-1`` placeholder of pending reports (never a real execution)."""
        return self.clock == -1 and self.event == -1

    @property
    def key(self) -> tuple[int, int]:
        """``(clock, event)``: the sort key within one exchange index."""
        return (self.clock, self.event)

    def __str__(self) -> str:
        if self.index == 0:
            return f"{self.clock};{self.event}"
        return f"{self.clock};{self.event};{self.index}"

    def _comparable(self, other: object) -> ExecId | None:
        if not isinstance(other, ExecId):
            return None
        if self.index != other.index:
            raise TypeError(
                f"cannot order ExecID {self} (exchange index {self.index}) against {other} "
                f"(exchange index {other.index}): ExecIDs are only sequenced within one index"
            )
        if self.is_pending or other.is_pending:
            raise TypeError(
                f"cannot order {self} against {other}: -1;-1 marks a pending report, which has "
                "no place in the execution sequence"
            )
        return other

    def __lt__(self, other: object) -> bool:
        o = self._comparable(other)
        return NotImplemented if o is None else self.key < o.key

    def __le__(self, other: object) -> bool:
        o = self._comparable(other)
        return NotImplemented if o is None else self.key <= o.key

    def __gt__(self, other: object) -> bool:
        o = self._comparable(other)
        return NotImplemented if o is None else self.key > o.key

    def __ge__(self, other: object) -> bool:
        o = self._comparable(other)
        return NotImplemented if o is None else self.key >= o.key


def _trusted(clock: int, event: int, index: int) -> ExecId:
    obj = object.__new__(ExecId)
    object.__setattr__(obj, "clock", clock)
    object.__setattr__(obj, "event", event)
    object.__setattr__(obj, "index", index)
    return obj


#: The ``-1;-1`` ExecID of pending reports (ExecType A, 6, E).
PENDING = ExecId(-1, -1, 0)
