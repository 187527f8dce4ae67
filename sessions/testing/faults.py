"""Deterministic fault injection for the simulated Kalshi FIX gateway.

The vocabulary (:class:`FaultKind`, :class:`Fault`), scripted and seeded plans
(:class:`FaultPlan`), the record of what fired (:class:`FaultLog`, plus :class:`WireLog` for the
bytes) and :class:`FaultyStream`, which applies the byte-level kinds to one accepted connection.
The gateway applies the session- and gateway-level kinds itself, from the same plan.

Determinism is the point: a plan's randomness comes only from its seed, time only from the
clock the gateway injects (derived from ``trio.current_time()``, so exact under ``MockClock``),
and nothing here reads the wall clock. Same seed and same client behaviour give the same wire
log, timestamps included.

Triggers, shared by every kind that happens on one connection:

* ``after_messages=N``: once N outbound messages (as the gateway wrote them, duplicates not
  counted twice) have gone out on the connection. DROP and STALL fire right after the Nth
  message; per-message kinds (GARBLE, DUPLICATE, DELAY) hit message N+1 and, with ``count``,
  the ones after it.
* ``at=T``: at the first opportunity at or after gateway time T (seconds since the gateway
  started): the next outbound message, the next read, or :meth:`FaultyStream.run_timers`.
* neither: at once (the first message, the first read, or when the timers start).

A fault with a ``key_id`` fires only once the connection's key is known and equal to it.
"""

from __future__ import annotations

import difflib
import enum
import math
import random
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import ClassVar

import attrs
import trio

from ..codec import checksum
from ..errors import ConfigError
from .wirelog import WireLog, WireRecord, render_bytes

__all__ = [
    "Fault",
    "FaultKind",
    "FaultLog",
    "FaultPlan",
    "FaultyStream",
    "GARBLE_VARIANTS",
    "InjectedFault",
    "garble",
    "WireLog",
    "WireRecord",
    "render_bytes",
]


class FaultKind(enum.Enum):
    """What goes wrong. The value is the name used in specs and config files."""

    #: Close the connection abruptly (no Logout): after N outbound messages, or at a time.
    DROP = "drop"
    #: Half-open: stop reading and writing, send no FIN, for ``duration`` (None: until the peer
    #: gives up and closes its end).
    STALL = "stall"
    #: Session level (gateway): stop sending Heartbeats and answering TestRequests.
    STOP_HEARTBEATS = "stop_heartbeats"
    #: Hold outbound bytes for ``duration`` seconds before sending them.
    DELAY = "delay"
    #: Send the next outbound message twice, byte-identical (a raw duplicate, no PossDup).
    DUPLICATE = "duplicate"
    #: Session level (gateway): skip ``count`` outbound sequence numbers.
    SKIP_SEQ = "skip_seq"
    #: Corrupt the next outbound message; ``variant`` is one of :data:`GARBLE_VARIANTS`.
    GARBLE = "garble"
    #: Gateway level: answer the next Logon with a Logout carrying ``text``.
    REJECT_LOGON = "reject_logon"
    #: Gateway level: every session is lost, executions are kept.
    RESTART = "restart"
    #: Gateway level: refuse TCP connections for ``duration``.
    REFUSE_CONNECTIONS = "refuse_connections"
    #: Read from the client slowly (small chunks with pauses) for ``duration``.
    SLOW_READER = "slow_reader"
    #: Session level (gateway, endpoints with retransmission): forget every message sent so far
    #: on the session, as if it had aged out of the retention period; a ResendRequest for them is
    #: then gap-filled (the gateway's answer past retention), application messages included.
    FORGET_SENT = "forget_sent"
    #: Session level (gateway, endpoints with retransmission): treat every message sent so far
    #: as past the retention period and answer a ResendRequest for any of them with a Reject
    #: (373=5), Kalshi's documented answer (REFERENCE §3.3).
    REJECT_RESEND = "reject_resend"


#: GARBLE variants: a wrong CheckSum, a BodyLength one short of the truth (CheckSum recomputed so
#: the length is the only defect), or the message cut off half way (at a field boundary).
GARBLE_VARIANTS = ("checksum", "body_length", "truncated")

#: Read size and pause of SLOW_READER.
SLOW_READ_CHUNK = 16
SLOW_READ_PAUSE = 0.05

_K = FaultKind

# Which spec keys each kind uses; any other key is an error, so a typo or a misunderstanding
# ("count" on a drop) is caught instead of silently ignored.
_USES: dict[FaultKind, frozenset[str]] = {
    _K.DROP: frozenset({"after", "at"}),
    _K.STALL: frozenset({"after", "at", "duration"}),
    _K.STOP_HEARTBEATS: frozenset({"after", "at", "duration"}),
    _K.DELAY: frozenset({"after", "at", "duration", "count"}),
    _K.DUPLICATE: frozenset({"after", "at", "count"}),
    _K.SKIP_SEQ: frozenset({"after", "at", "count"}),
    _K.GARBLE: frozenset({"after", "at", "count", "variant"}),
    _K.REJECT_LOGON: frozenset({"at", "count", "text"}),
    _K.RESTART: frozenset({"at"}),
    _K.REFUSE_CONNECTIONS: frozenset({"at", "duration"}),
    _K.SLOW_READER: frozenset({"after", "at", "duration"}),
    _K.FORGET_SENT: frozenset({"after", "at"}),
    _K.REJECT_RESEND: frozenset({"after", "at"}),
}
#: Kinds :meth:`FaultPlan.random` draws from by default: those that existed when the seeded
#: plans of the test suites were chosen (a new kind in the pool would redraw every seed's plan).
_RANDOM_KINDS: tuple[FaultKind, ...] = tuple(
    k for k in FaultKind if k not in (_K.FORGET_SENT, _K.REJECT_RESEND)
)
_REQUIRED: dict[FaultKind, frozenset[str]] = {
    _K.DELAY: frozenset({"duration"}),
    _K.REFUSE_CONNECTIONS: frozenset({"duration"}),
}
# Gateway-wide events that no Logon (hence no key) is attached to.
_NO_KEY = frozenset({_K.RESTART, _K.REFUSE_CONNECTIONS})
# Kinds applied to individual outbound messages, where ``count`` means "this many messages".
_PER_MESSAGE = frozenset({_K.DELAY, _K.DUPLICATE, _K.GARBLE})

# Spec key → Fault field. "after_messages" is accepted too, being the field's own name.
_FIELD = {
    "endpoint": "endpoint",
    "key_id": "key_id",
    "after": "after_messages",
    "after_messages": "after_messages",
    "at": "at",
    "duration": "duration",
    "count": "count",
    "text": "text",
    "variant": "variant",
}
_SPEC_KEY = {"after_messages": "after"}  # field → the key named in messages
_INT_FIELDS = frozenset({"after_messages", "count"})
_FLOAT_FIELDS = frozenset({"at", "duration"})
_STR_FIELDS = frozenset({"endpoint", "key_id", "text", "variant"})
_FIELD_ORDER = ("endpoint", "key_id", "after_messages", "at", "duration", "count", "variant", "text")


def _key(field: str) -> str:
    return _SPEC_KEY.get(field, field)


def _kind_names() -> str:
    return ", ".join(k.value for k in FaultKind)


def _suggest(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_kind(text: str) -> FaultKind:
    name = text.strip().lower().replace("-", "_")
    try:
        return FaultKind(name)
    except ValueError:
        raise ConfigError(
            f"unknown fault kind {text.strip()!r}{_suggest(name, [k.value for k in FaultKind])}; "
            f"kinds are {_kind_names()}"
        ) from None


def _validate(kind: object, values: Mapping[str, object]) -> None:
    """Raise ConfigError (message without context) if ``values`` (Fault fields) are not a fault."""
    if not isinstance(kind, FaultKind):
        raise ConfigError(f"kind must be a FaultKind, got {kind!r}")
    for name in _STR_FIELDS:
        v = values.get(name)
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"{name} must be a non-empty string")
    for name in _INT_FIELDS:
        v = values.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ConfigError(f"{_key(name)} must be a whole number, got {type(v).__name__}")
    for name in _FLOAT_FIELDS:
        v = values.get(name)
        if v is not None:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"{name} must be a number of seconds, got {type(v).__name__}")
            if not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number of seconds, got {v}")
    uses = _USES[kind]
    given = {
        _key(n)
        for n in _FIELD_ORDER
        if n not in ("endpoint", "key_id") and values.get(n) is not None
    }
    if values.get("count") == 1:
        given.discard("count")  # the default, whether written or not
    for key in sorted(given - uses):
        hint = "; use at" if key == "after" and "at" in uses else ""
        raise ConfigError(f"{key} does not apply to {kind.value}{hint}")
    for key in sorted(_REQUIRED.get(kind, frozenset()) - given):
        raise ConfigError(f"{kind.value} needs {key}")
    if kind in _NO_KEY and values.get("key_id") is not None:
        raise ConfigError(f"key_id does not apply to {kind.value}: it concerns the whole gateway")
    if values.get("after_messages") is not None and values.get("at") is not None:
        raise ConfigError("give either after or at, not both")
    after = values.get("after_messages")
    if isinstance(after, int) and after < 0:
        raise ConfigError(f"after must be 0 or more, got {after}")
    at = values.get("at")
    if isinstance(at, (int, float)) and at < 0:
        raise ConfigError(f"at must be 0 or more seconds, got {at}")
    duration = values.get("duration")
    if isinstance(duration, (int, float)) and duration <= 0:
        raise ConfigError(f"duration must be more than 0 seconds, got {duration}")
    count = values.get("count", 1)
    if isinstance(count, int) and count < 1:
        raise ConfigError(f"count must be 1 or more, got {count}")
    variant = values.get("variant")
    if variant is not None and variant not in GARBLE_VARIANTS:
        raise ConfigError(
            f"variant must be one of {', '.join(GARBLE_VARIANTS)}, got {variant!r}"
            f"{_suggest(str(variant), GARBLE_VARIANTS)}"
        )


@attrs.frozen
class Fault:
    """One scripted fault: what, where (endpoint, key) and when (after N messages, or at a time).

    Which fields apply depends on the kind (see :class:`FaultKind`); constructing a fault with a
    field its kind does not use, or a value out of range, raises
    :class:`~sessions.errors.ConfigError`. ``count`` is the number of messages hit for GARBLE,
    DUPLICATE and DELAY, of sequence numbers skipped for SKIP_SEQ and of Logons rejected for
    REJECT_LOGON. A GARBLE without ``variant`` corrupts the CheckSum.
    """

    kind: FaultKind
    #: TargetCompID of the gateway endpoint, e.g. ``"KalshiNR"``; None = any endpoint.
    endpoint: str | None = None
    #: The client's key id (its SenderCompID); None = any key.
    key_id: str | None = None
    after_messages: int | None = None
    #: Gateway time in seconds since the gateway started.
    at: float | None = None
    duration: float | None = None
    count: int = 1
    text: str | None = None
    variant: str | None = None

    #: The kinds :class:`FaultyStream` applies.
    BYTE_LEVEL: ClassVar[frozenset[FaultKind]] = frozenset(
        {_K.DROP, _K.STALL, _K.DELAY, _K.DUPLICATE, _K.GARBLE, _K.SLOW_READER}
    )
    #: The kinds the gateway applies to one session.
    SESSION_LEVEL: ClassVar[frozenset[FaultKind]] = frozenset(
        {_K.STOP_HEARTBEATS, _K.SKIP_SEQ, _K.FORGET_SENT, _K.REJECT_RESEND}
    )
    #: The kinds the gateway applies to itself.
    GATEWAY_LEVEL: ClassVar[frozenset[FaultKind]] = frozenset(
        {_K.REJECT_LOGON, _K.RESTART, _K.REFUSE_CONNECTIONS}
    )

    def __attrs_post_init__(self) -> None:
        try:
            _validate(self.kind, {n: getattr(self, n) for n in _FIELD_ORDER})
        except ConfigError as e:
            name = self.kind.value if isinstance(self.kind, FaultKind) else "fault"
            raise ConfigError(f"{name}: {e}") from None

    def matches(self, endpoint: str, key_id: str | None) -> bool:
        """Whether the fault concerns a connection to ``endpoint`` logged on with ``key_id``.

        Strict about keys: a fault naming a key does not match ``key_id=None`` (not known yet).
        """
        return (self.endpoint is None or self.endpoint == endpoint) and (
            self.key_id is None or self.key_id == key_id
        )

    def spec(self) -> str:
        """The fault in the command-line form :meth:`FaultPlan.parse` reads back."""
        parts = []
        for name in _FIELD_ORDER:
            v = getattr(self, name)
            if v is None or (name == "count" and v == 1):
                continue
            parts.append(f"{_key(name)}={float(v)!r}" if name in _FLOAT_FIELDS else f"{_key(name)}={v}")
        return self.kind.value + (":" + ",".join(parts) if parts else "")


# A comma starts a new key=value pair only when a name and "=" follow, so Text may hold commas.
_PAIR_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")

# Logout texts for random REJECT_LOGON faults; "already exists" is Kalshi's documented text for
# a key that is already connected (REFERENCE §3), the others are plausible failures.
_REJECT_TEXTS = ("already exists", "Invalid signature", "Kalshi exchange unavailable")


def _spec_value(field: str, raw: str) -> object:
    value = raw.strip()
    if field in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{_key(field)}={raw!r} is not a whole number") from None
    if field in _FLOAT_FIELDS:
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{field}={raw!r} is not a number of seconds") from None
        if not math.isfinite(number):
            raise ConfigError(f"{field}={raw!r} is not a finite number of seconds")
        return number
    return value


def _config_value(field: str, key: str, value: object) -> object:
    # TOML has real types; only ints are widened (at = 5 means 5.0 seconds).
    if field in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if field in _INT_FIELDS and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"{key} must be a whole number, got {type(value).__name__}")
    if field in _FLOAT_FIELDS and not isinstance(value, float):
        raise ConfigError(f"{key} must be a number of seconds, got {type(value).__name__}")
    if field in _STR_FIELDS and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {type(value).__name__}")
    return value


def _build(kind: FaultKind, values: dict[str, object]) -> Fault:
    _validate(kind, values)
    return Fault(kind, **values)  # type: ignore[arg-type]


def _unknown_key(key: str) -> ConfigError:
    return ConfigError(
        f"unknown key {key!r}{_suggest(key, _FIELD)}; keys are "
        "endpoint, key_id, after, at, duration, count, text, variant"
    )


def _fault_tuple(faults: Iterable[Fault]) -> tuple[Fault, ...]:
    return tuple(faults)


@attrs.frozen
class FaultPlan:
    """The faults of one run, in order, and the seed they were drawn from (if random)."""

    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_fault_tuple)
    seed: int | None = None

    @classmethod
    def random(
        cls,
        seed: int,
        *,
        endpoints: Sequence[str],
        keys: Sequence[str] = (),
        count: int = 3,
        horizon: float = 120.0,
        kinds: Collection[FaultKind] = _RANDOM_KINDS,
    ) -> FaultPlan:
        """``count`` faults drawn from ``random.Random(seed)`` alone: the same arguments always
        give the same plan.

        Each fault gets one of ``endpoints`` and, for half of them when ``keys`` is given, one
        of the keys. Connection-level faults trigger either after 1–20 messages or at a time in
        ``[0, horizon]``; gateway-level ones at a time. Durations stay short enough for a test:
        DELAY 0.05–5 s, STALL 2–90 s, STOP_HEARTBEATS 5–120 s, REFUSE_CONNECTIONS and
        SLOW_READER 1–30 s. Times are rounded to milliseconds so specs print cleanly.
        """
        if count < 0:
            raise ConfigError(f"FaultPlan.random: count must be 0 or more, got {count}")
        if not horizon > 0:
            raise ConfigError(f"FaultPlan.random: horizon must be more than 0 seconds, got {horizon}")
        # Sorted by name: iterating a set of enum members follows string hashing, which differs
        # between processes, and would make the draw depend on PYTHONHASHSEED.
        pool = sorted(set(kinds), key=lambda k: k.value)
        if not pool:
            raise ConfigError("FaultPlan.random: kinds is empty")
        endpoint_pool = list(endpoints)
        key_pool = list(keys)
        rng = random.Random(seed)

        def seconds(low: float, high: float) -> float:
            return round(rng.uniform(low, high), 3)

        faults = []
        for _ in range(count):
            kind = rng.choice(pool)
            values: dict[str, object] = {}
            values["endpoint"] = rng.choice(endpoint_pool) if endpoint_pool else None
            if key_pool and kind not in _NO_KEY and rng.random() < 0.5:
                values["key_id"] = rng.choice(key_pool)
            if "after" in _USES[kind] and rng.random() < 0.5:
                values["after_messages"] = rng.randint(1, 20)
            else:
                values["at"] = seconds(0.0, horizon)
            if kind is _K.STALL:
                values["duration"] = seconds(2.0, 90.0)
            elif kind is _K.STOP_HEARTBEATS:
                values["duration"] = seconds(5.0, 120.0)
            elif kind is _K.DELAY:
                values["duration"] = seconds(0.05, 5.0)
                values["count"] = rng.randint(1, 3)
            elif kind is _K.DUPLICATE:
                values["count"] = rng.randint(1, 3)
            elif kind is _K.SKIP_SEQ:
                values["count"] = rng.randint(1, 5)
            elif kind is _K.GARBLE:
                values["variant"] = rng.choice(GARBLE_VARIANTS)
                values["count"] = rng.randint(1, 2)
            elif kind is _K.REJECT_LOGON:
                values["text"] = rng.choice(_REJECT_TEXTS)
            elif kind in (_K.REFUSE_CONNECTIONS, _K.SLOW_READER):
                values["duration"] = seconds(1.0, 30.0)
            faults.append(Fault(kind, **values))  # type: ignore[arg-type]
        return cls(tuple(faults), seed)

    @classmethod
    def parse(cls, specs: Sequence[str]) -> FaultPlan:
        """Faults from command-line specs, one per string: ``KIND`` or ``KIND:key=value,...``.

        Keys: endpoint, key_id, after, at, duration, count, text, variant. For example
        ``"drop:endpoint=KalshiNR,after=10"``, ``"garble:variant=checksum,after=3"``,
        ``"reject_logon:text=already exists"``, ``"refuse_connections:at=5,duration=10"``.
        Text may contain commas unless one is followed by ``name=``. Errors raise
        :class:`~sessions.errors.ConfigError` quoting the spec and naming the bad part.
        """
        if isinstance(specs, str):
            raise ConfigError(f"fault specs must be a list of strings, got the single string {specs!r}")
        faults = []
        for spec in specs:
            try:
                faults.append(cls._parse_one(spec))
            except ConfigError as e:
                raise ConfigError(f"fault spec {spec!r}: {e}") from None
        return cls(tuple(faults))

    @staticmethod
    def _parse_one(spec: str) -> Fault:
        if not isinstance(spec, str):
            raise ConfigError(f"must be a string, got {type(spec).__name__}")
        head, colon, rest = spec.partition(":")
        if not head.strip():
            raise ConfigError(f"no fault kind; write KIND or KIND:key=value,... (kinds: {_kind_names()})")
        kind = _parse_kind(head)
        values: dict[str, object] = {}
        seen: dict[str, str] = {}
        if colon and not rest.strip():
            raise ConfigError("nothing after ':'; write key=value pairs or leave the colon out")
        for piece in _PAIR_SPLIT.split(rest) if rest.strip() else ():
            key, eq, raw = piece.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ConfigError(f"{piece.strip()!r} is not key=value")
            field = _FIELD.get(key)
            if field is None:
                raise _unknown_key(key)
            if field in seen:
                raise ConfigError(f"{key} given twice")
            seen[field] = key
            values[field] = _spec_value(field, raw)
        return _build(kind, values)

    @classmethod
    def from_config(cls, items: Sequence[Mapping[str, object]], *, where: str) -> FaultPlan:
        """Faults from TOML tables (an array of ``[[fault]]`` tables), e.g.::

            [[fault]]
            kind = "drop"
            endpoint = "KalshiNR"
            after = 10

        Same keys as :meth:`parse`, plus ``kind``. Errors raise
        :class:`~sessions.errors.ConfigError` starting with ``where`` and the fault's position.
        """
        if isinstance(items, Mapping) or not isinstance(items, Sequence) or isinstance(items, str):
            raise ConfigError(
                f"{where}: faults must be an array of tables ([[fault]]), got {type(items).__name__}"
            )
        faults = []
        for n, item in enumerate(items, 1):
            try:
                faults.append(cls._config_one(item))
            except ConfigError as e:
                raise ConfigError(f"{where}: fault #{n}: {e}") from None
        return cls(tuple(faults))

    @staticmethod
    def _config_one(item: object) -> Fault:
        if not isinstance(item, Mapping):
            raise ConfigError(f"must be a table, got {type(item).__name__}")
        if "kind" not in item:
            raise ConfigError(f"kind is missing (one of {_kind_names()})")
        kind_value = item["kind"]
        if not isinstance(kind_value, str):
            raise ConfigError(f"kind must be a string, got {type(kind_value).__name__}")
        kind = _parse_kind(kind_value)
        values: dict[str, object] = {}
        for key, value in item.items():
            if key == "kind":
                continue
            field = _FIELD.get(str(key))
            if field is None:
                raise _unknown_key(str(key))
            if field in values:
                raise ConfigError(f"{key} given twice (after and after_messages are the same key)")
            values[field] = _config_value(field, str(key), value)
        return _build(kind, values)

    def for_connection(self, endpoint: str, key_id: str | None) -> list[Fault]:
        """The faults matching a connection (see :meth:`Fault.matches`), in plan order."""
        return [f for f in self.faults if f.matches(endpoint, key_id)]

    def for_endpoint(self, endpoint: str) -> list[Fault]:
        """The faults for ``endpoint`` whatever their key: what to hand a new
        :class:`FaultyStream`, which checks keys itself once the Logon names one."""
        return [f for f in self.faults if f.endpoint is None or f.endpoint == endpoint]

    def of_kind(self, kind: FaultKind) -> list[Fault]:
        """The faults of one kind, in plan order."""
        return [f for f in self.faults if f.kind is kind]

    def specs(self) -> list[str]:
        """Every fault in command-line form: ``FaultPlan.parse(plan.specs())`` gives the faults back."""
        return [f.spec() for f in self.faults]

    def __iter__(self) -> Iterator[Fault]:
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)


# --- what fired -----------------------------------------------------------------------------


@attrs.frozen
class InjectedFault:
    """One firing of a fault: gateway time, the session it hit and what was done."""

    time: float
    endpoint: str
    key_id: str | None
    kind: FaultKind
    detail: str


class FaultLog:
    """Every fault firing, oldest first; shared by the gateway and all its connections."""

    def __init__(self) -> None:
        #: The firings, oldest first.
        self.entries: list[InjectedFault] = []

    def record(
        self, time: float, endpoint: str, key_id: str | None, kind: FaultKind, detail: str
    ) -> InjectedFault:
        """Append one firing and return it."""
        entry = InjectedFault(time, endpoint, key_id, kind, detail)
        self.entries.append(entry)
        return entry

    def of_kind(self, kind: FaultKind) -> list[InjectedFault]:
        """The firings of one kind, oldest first."""
        return [e for e in self.entries if e.kind is kind]

    def dump(self) -> str:
        """One line per firing (time with 6 decimals, endpoint, key, kind, detail); stable."""
        return "".join(
            f"{e.time:.6f} {e.endpoint} {e.key_id or '-'} {e.kind.value} {e.detail}\n"
            for e in self.entries
        )

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[InjectedFault]:
        return iter(self.entries)


# --- the byte-level injector ----------------------------------------------------------------

_SOH = b"\x01"
_TRAILER_LEN = 7  # "10=NNN<SOH>"


def _split_frames(data: bytes) -> list[tuple[bytes, bool]]:
    """``data`` as consecutive (chunk, is_message) pieces.

    A light framing scan (``8=…|9=<len>|…|10=NNN|``), not a validation: the gateway writes
    well-formed messages, and anything else it writes on purpose is passed through as one
    opaque chunk up to the next ``8=`` that follows an SOH.
    """
    pieces: list[tuple[bytes, bool]] = []
    n = len(data)
    pos = 0
    while pos < n:
        if data.startswith(b"8=", pos):
            soh1 = data.find(_SOH, pos + 2)
            if soh1 > 0 and data.startswith(b"9=", soh1 + 1):
                soh2 = data.find(_SOH, soh1 + 3)
                digits = data[soh1 + 3 : soh2]
                if soh2 > 0 and digits.isdigit():
                    body_end = soh2 + 1 + int(digits)
                    end = body_end + _TRAILER_LEN
                    if end <= n and data.startswith(b"10=", body_end) and data[end - 1] == 1:
                        pieces.append((data[pos:end], True))
                        pos = end
                        continue
        nxt = data.find(b"\x018=", pos)
        stop = nxt + 1 if nxt >= 0 else n
        pieces.append((data[pos:stop], False))
        pos = stop
    return pieces


def _msg_type(frame: bytes) -> str:
    i = frame.find(b"\x0135=")
    if i < 0:
        return "?"
    return frame[i + 4 : frame.find(_SOH, i + 4)].decode("latin-1")


def garble(frame: bytes, variant: str) -> tuple[bytes, str]:
    """``frame`` (one well-formed message) corrupted as ``variant`` says, and a description.

    Each variant leaves a reader able to resynchronise on the next message: the corrupted bytes
    end with an SOH, so the following ``8=`` is found.
    """
    soh1 = frame.index(_SOH)
    soh2 = frame.index(_SOH, soh1 + 1)
    length = int(frame[soh1 + 3 : soh2])
    body_end = soh2 + 1 + length
    if variant == "checksum":
        good = int(frame[body_end + 3 : body_end + 6])
        bad = (good + 1) % 256
        return frame[: body_end + 3] + b"%03d\x01" % bad, f"CheckSum {good:03d} -> {bad:03d}"
    if variant == "body_length":
        # One short of the truth: the declared end lands inside the last field, so the reader
        # never mistakes it for a shorter valid message, and needs no extra bytes to decide.
        head = frame[: soh1 + 3] + b"%d" % (length - 1) + frame[soh2:body_end]
        return head + b"10=%03d\x01" % checksum(head), f"BodyLength {length} -> {length - 1}"
    if variant == "truncated":
        cut = frame.rfind(_SOH, soh2, soh2 + 1 + length // 2) + 1
        return frame[:cut], f"cut to {cut} of {len(frame)} bytes"
    raise ValueError(f"unknown garble variant {variant!r}; variants are {', '.join(GARBLE_VARIANTS)}")


class FaultyStream(trio.abc.HalfCloseableStream):
    """Wraps the gateway's side of one accepted connection and applies the byte-level faults.

    Give it the plan's faults for the endpoint (:meth:`FaultPlan.for_endpoint`; faults of other
    endpoints or non-byte-level kinds are ignored) and start :meth:`run_timers` in the
    connection's nursery so time-triggered drops and stalls happen without traffic.

    After a DROP (or when the peer gives up during an endless STALL) the inner stream is closed
    abruptly: :meth:`receive_some` returns ``b""`` and :meth:`send_all` raises
    :class:`trio.BrokenResourceError`, exactly as for a client that vanished.
    """

    def __init__(
        self,
        inner: trio.abc.Stream,
        faults: Sequence[Fault],
        *,
        endpoint: str,
        connection_id: int,
        clock: Callable[[], float],
        fault_log: FaultLog,
        wire_log: WireLog | None = None,
        key_id: Callable[[], str | None] = lambda: None,
    ) -> None:
        #: The wrapped stream.
        self.inner = inner
        self.endpoint = endpoint
        self.connection_id = connection_id
        #: The faults this stream applies, in plan order.
        self.faults: tuple[Fault, ...] = tuple(
            f
            for f in faults
            if f.kind in Fault.BYTE_LEVEL and (f.endpoint is None or f.endpoint == endpoint)
        )
        self._clock = clock
        self._fault_log = fault_log
        self._wire_log = wire_log
        self._key_id = key_id
        # Firings left per fault, parallel to self.faults.
        self._left = [f.count if f.kind in _PER_MESSAGE else 1 for f in self.faults]
        self._sent = 0
        self._dead = False  # dropped by a fault, or the peer gave up during an endless stall
        self._closed = False  # closed by the gateway
        self._ended = trio.Event()  # set with _dead or _closed; wakes endless stalls
        # Stall and slow reading end at these trio times; math.inf means no end.
        self._stall_until: float | None = None
        self._slow_until: float | None = None
        # trio streams refuse concurrent sends (or receives); so does this one, because its
        # own pauses (DELAY, STALL, SLOW_READER) sit outside the inner stream's guard.
        self._sending = False
        self._receiving = False

    # --- state ----------------------------------------------------------------------------

    @property
    def sent_messages(self) -> int:
        """Outbound messages written so far (as the gateway wrote them; duplicates count once)."""
        return self._sent

    @property
    def dropped(self) -> bool:
        """Whether the connection was ended by a fault (DROP, or the peer leaving a STALL)."""
        return self._dead

    def _armed(self, i: int, fault: Fault, *, ignore_at: bool = False) -> bool:
        if self._left[i] <= 0:
            return False
        if fault.after_messages is not None and self._sent < fault.after_messages:
            return False
        if fault.at is not None and not ignore_at and self._clock() < fault.at:
            return False
        return fault.key_id is None or fault.key_id == self._key_id()

    def _record(self, kind: FaultKind, detail: str) -> None:
        self._fault_log.record(self._clock(), self.endpoint, self._key_id(), kind, detail)

    def _log_wire(self, direction: str, data: bytes) -> None:
        if self._wire_log is not None:
            self._wire_log.record(self._clock(), self.endpoint, self.connection_id, direction, data)

    def _stalled(self) -> bool:
        return self._stall_until is not None and trio.current_time() < self._stall_until

    def _gone(self) -> bool:
        return self._dead or self._closed

    def _raise_if_gone(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the gateway closed this connection")
        if self._dead:
            raise trio.BrokenResourceError("connection dropped by fault injection")

    # --- firing DROP and STALL -------------------------------------------------------------

    def _trigger(self, fault: Fault) -> str:
        if fault.at is not None:
            return f"at {fault.at:.3f}"
        if fault.after_messages:
            return f"after {fault.after_messages} outbound messages"
        return "at once"

    async def _fire(self, i: int) -> None:
        fault = self.faults[i]
        self._left[i] = 0
        if fault.kind is _K.DROP:
            self._record(
                fault.kind,
                f"{self._trigger(fault)}: connection closed abruptly after {self._sent} outbound messages",
            )
            await self._kill()
        else:
            end = math.inf if fault.duration is None else trio.current_time() + fault.duration
            self._stall_until = end if self._stall_until is None else max(end, self._stall_until)
            span = "until the peer gives up" if fault.duration is None else f"for {fault.duration}s"
            self._record(fault.kind, f"{self._trigger(fault)}: no reads or writes {span}")

    async def _fire_due(self) -> None:
        for i, fault in enumerate(self.faults):
            if self._gone():
                return
            if fault.kind in (_K.DROP, _K.STALL) and self._armed(i, fault):
                await self._fire(i)

    def _connection_fault_due(self) -> bool:
        return any(
            f.kind in (_K.DROP, _K.STALL) and self._armed(i, f) for i, f in enumerate(self.faults)
        )

    async def _kill(self) -> None:
        self._dead = True
        self._ended.set()
        # Forcefully: no TLS close_notify or other goodbye, just the transport going away.
        await trio.aclose_forcefully(self.inner)

    async def run_timers(self) -> None:
        """Fire DROP and STALL faults given ``at`` (or no trigger) when their time comes, even
        with no traffic. Start it in the connection's nursery; it returns when none is left.

        Assumes the injected clock advances with trio's clock, as gateway time does.
        """
        await self._fire_due()
        timed = sorted(
            (f.at, i)
            for i, f in enumerate(self.faults)
            if f.kind in (_K.DROP, _K.STALL) and f.at is not None
        )
        for at, i in timed:
            if self._gone():
                return
            # Deadline in trio time, so float rounding in the gateway clock cannot leave the
            # fault just short of due after the sleep.
            await trio.sleep_until(trio.current_time() + max(0.0, at - self._clock()))
            if not self._gone() and self._armed(i, self.faults[i], ignore_at=True):
                await self._fire(i)
            # A keyed fault whose key has not logged on stays pending for the next read/write.

    # --- sending ---------------------------------------------------------------------------

    async def _sit_out_stall(self) -> None:
        # Until the stall's end, or sooner if a drop or the gateway ends the connection.
        assert self._stall_until is not None
        with trio.move_on_at(self._stall_until):
            await self._ended.wait()

    async def _wait_stall_sending(self) -> None:
        while not self._gone() and self._stalled():
            await self._sit_out_stall()
        self._raise_if_gone()

    async def _flush(self, out: list[bytes]) -> bool:
        if not out:
            return False
        data = b"".join(out)
        out.clear()
        await self._wait_stall_sending()
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._raise_if_gone()  # a fault or the gateway closed it meanwhile
            raise
        self._log_wire("out", data)
        return True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write whole FIX messages (any number), applying the faults due.

        Bytes that are not a complete message are passed through uncounted, so a message split
        across two calls is neither counted nor corrupted.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._sending = True
        try:
            await self._send_all(bytes(data))
        finally:
            self._sending = False

    async def _send_all(self, data: bytes) -> None:
        self._raise_if_gone()
        await self._fire_due()
        await self._wait_stall_sending()
        out: list[bytes] = []
        wrote = False
        for frame, is_message in _split_frames(data):
            if not is_message:
                out.append(frame)
                continue
            number = self._sent + 1
            copies = 1
            for i, fault in enumerate(self.faults):
                if fault.kind not in _PER_MESSAGE or not self._armed(i, fault):
                    continue
                self._left[i] -= 1
                what = f"message {number} ({_msg_type(frame)})"
                if fault.kind is _K.DELAY:
                    self._record(fault.kind, f"{what} held {fault.duration}s")
                    wrote |= await self._flush(out)
                    await trio.sleep(fault.duration or 0.0)
                elif fault.kind is _K.GARBLE:
                    variant = fault.variant or "checksum"
                    frame, change = garble(frame, variant)
                    self._record(fault.kind, f"{variant}: {what} {change}")
                else:
                    copies += 1
                    self._record(fault.kind, f"{what} sent twice")
            out.extend([frame] * copies)
            self._sent += 1
            if self._connection_fault_due():
                # What precedes goes out first; a DROP then makes the next flush raise.
                wrote |= await self._flush(out)
                await self._fire_due()
        if not await self._flush(out) and not wrote:
            await trio.lowlevel.checkpoint()  # send_all is a checkpoint even with nothing to send

    async def wait_send_all_might_not_block(self) -> None:
        """Delegates to the inner stream."""
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Half-close when the inner stream can; otherwise close it entirely."""
        self._raise_if_gone()
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    # --- receiving -------------------------------------------------------------------------

    async def _inner_receive(self, max_bytes: int | None) -> bytes:
        try:
            # bytes, not the bytearray some streams return: callers compare and hash it.
            data = bytes(await self.inner.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._dead:
                return b""  # dropped by a fault while this read waited
            raise
        self._log_wire("in", data)
        return data

    async def _peer_gave_up(self) -> None:
        self._record(_K.STALL, "ended: the peer closed the connection during the stall")
        await self._kill()

    async def _wait_stall_receiving(self, eof: bool = False) -> None:
        """Block while stalled. An endless stall keeps draining the socket (and discards what
        arrives) only to notice the peer giving up; a finite one simply does not read."""
        while not self._gone() and self._stalled():
            if self._stall_until != math.inf:
                await self._sit_out_stall()
            elif eof:
                await self._peer_gave_up()
            else:
                try:
                    eof = not await self._inner_receive(None)
                except trio.BrokenResourceError:
                    eof = True  # the peer reset the connection: it gave up too

    def _slow_reading(self) -> bool:
        now = trio.current_time()
        if self._slow_until is None or now >= self._slow_until:
            for i, fault in enumerate(self.faults):
                if fault.kind is _K.SLOW_READER and self._armed(i, fault):
                    self._left[i] = 0
                    span = "the rest of the connection" if fault.duration is None else f"{fault.duration}s"
                    self._slow_until = math.inf if fault.duration is None else now + fault.duration
                    self._record(
                        fault.kind,
                        f"{self._trigger(fault)}: reads of at most {SLOW_READ_CHUNK} bytes "
                        f"every {SLOW_READ_PAUSE}s for {span}",
                    )
                    break
        return self._slow_until is not None and now < self._slow_until

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read from the client, applying STALL and SLOW_READER; ``b""`` once dropped."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        self._receiving = True
        try:
            return await self._receive_some(max_bytes)
        finally:
            self._receiving = False

    async def _receive_some(self, max_bytes: int | None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the gateway closed this connection")
        await self._fire_due()
        await self._wait_stall_receiving()
        if self._slow_reading():
            await trio.sleep(SLOW_READ_PAUSE)
            max_bytes = SLOW_READ_CHUNK if max_bytes is None else min(max_bytes, SLOW_READ_CHUNK)
            await self._wait_stall_receiving()
        if self._gone():
            await trio.lowlevel.checkpoint()
            return b""
        data = await self._inner_receive(max_bytes)
        if self._stalled():
            # A stall began while this read waited: hold what arrived until it ends.
            await self._wait_stall_receiving(eof=not data)
        return b"" if self._gone() else data

    async def aclose(self) -> None:
        """Close the connection (the gateway's own, graceful close)."""
        self._closed = True
        self._ended.set()
        await self.inner.aclose()
