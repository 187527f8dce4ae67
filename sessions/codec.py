"""FIX tag=value wire codec: encoding with BodyLength/CheckSum, and a stream decoder.

The decoder splits an arbitrary byte stream into messages (bytes may arrive split at any
boundary), validates the framing (``8=…|9=<len>|…|10=NNN|``, BodyLength, CheckSum) and returns
:class:`~sessions.message.FixMessage` objects. Input that cannot be a message is never raised as
an exception: it is reported as a :class:`Garbled` value and the decoder resynchronises at the
next ``8=`` that follows an SOH, as FIX prescribes for garbled messages (ignore and carry on).
The value of BeginString is not checked here; the session does that.

This is the receive and send hot path, so the common case is written for CPython's fast
built-ins (``bytes.find``/``split``/``replace``, ``zlib.adler32``, ``map``/``zip``) and anything
unusual drops to a slower, careful path that also produces the precise error text.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence

import attrs

from .errors import CodecError, ConfigError
from .message import FixMessage

__all__ = [
    "DATA_FIELDS",
    "checksum",
    "GARBLED_KEEP",
    "Garbled",
    "StreamDecoder",
    "decode",
    "encode_message",
    "encode_pairs",
]

SOH = b"\x01"

#: Length field → data field. A data field's value is exactly the announced number of bytes and
#: may contain SOH. Only RawData is listed: it is the one data field Kalshi uses (the Logon
#: signature); FIX's other data fields would be read as ordinary fields.
DATA_FIELDS: dict[int, int] = {95: 96}

#: Bytes of a discarded chunk kept in :attr:`Garbled.data`, so memory stays bounded however much
#: garbage arrives.
GARBLED_KEEP = 512

# Longest BeginString value we wait for before calling the header garbled. The real value is
# 8 bytes; the bound keeps a stream of junk that happens to start with "8=" from being buffered.
_MAX_BEGIN_STRING = 64
# Longest BodyLength value accepted (digits). Ten digits exceeds any sane maximum size and
# keeps int() away from CPython's limit on huge digit strings.
_MAX_LENGTH_DIGITS = 10
# Longest tag accepted (digits); real tags have at most 5.
_MAX_TAG_DIGITS = 9
# Bytes after "9=<len>|" that are not counted by BodyLength: "10=NNN|".
_TRAILER_LEN = 7
# Headers a decoder remembers (a session sees a few hundred distinct BodyLengths).
_MAX_HEADERS = 4_096
# Messages with up to this many pieces (2 per field) have their layout remembered.
_MAX_PIECES = 256
_NO_LAYOUT: tuple[list[bytes], list[int]] = ([], [])  # never equal to a message's tags
# Smallest max_message_size allowed: above the longest incomplete header the decoder waits on
# (2 + 64 + 1 + 2 + 10 bytes), so "holds less than the maximum" needs no exception.
_MIN_MAX_SIZE = 128

_CHECKSUMS = tuple(b"%03d" % i for i in range(256))
# The exact bytes expected from the SOH that ends the body through the end of the message.
_TRAILERS = tuple(b"\x0110=" + c + SOH for c in _CHECKSUMS)
_CHECKSUM_FIELDS = tuple(b"10=" + c + SOH for c in _CHECKSUMS)
_CHECKSUM_PAIRS = tuple((10, c) for c in _CHECKSUMS)  # shared: tuples are immutable


# --- checksum -----------------------------------------------------------------------------------

_adler32 = zlib.adler32
# Adler-32's low half is (1 + sum of the bytes) mod 65521, computed in C: several times faster
# than sum() over the bytes, which iterates Python ints. When that low half is large enough that
# no reduction can have happened (always so for up to 256 bytes, and for ordinary ASCII messages
# of a few hundred), the byte sum falls out directly; otherwise the bytes are summed in chunks
# small enough never to reduce: 256 of any bytes (255 * 256 = 65280), 515 ASCII ones.
_ADLER_MOD = 65521
_ADLER_CHUNK = 256
_ADLER_CHUNK_ASCII = 515


def checksum(data: bytes | bytearray) -> int:
    """FIX CheckSum of ``data``: the sum of its bytes modulo 256."""
    adler = _adler32(data)
    if (adler & 0xFFFF) - 1 + _ADLER_MOD > 255 * len(data):
        return (adler - 1) & 0xFF  # no reduction: the low 16 bits are 1 + byte sum
    step = _ADLER_CHUNK_ASCII if data.isascii() else _ADLER_CHUNK
    total = 0
    for start in range(0, len(data), step):
        total += _adler32(data[start : start + step]) - 1
    return total & 0xFF


# --- encoding -----------------------------------------------------------------------------------

# tag → b"<tag>=", filled on first use so a tag is formatted once. A plain dict (not one with
# __missing__) because CPython's fast subscript path applies only to exact dicts.
_TAG_PREFIXES: dict[int, bytes] = {}


def _tag_prefix(tag: int) -> bytes:
    prefix = _TAG_PREFIXES.get(tag) if type(tag) is int else None
    if prefix is None:
        if type(tag) is not int or tag <= 0:
            raise CodecError(f"FIX tag must be a positive int, got {tag!r}")
        prefix = _TAG_PREFIXES[tag] = b"%d=" % tag
    return prefix


def _encode_fields_slow(pairs: Sequence[tuple[int, bytes]]) -> list[bytes]:
    """Like the fast comprehension, but checks each pair and names the first bad one."""
    fields = []
    for tag, value in pairs:
        prefix = _tag_prefix(tag)
        if type(value) is not bytes:
            raise CodecError(
                f"value of tag {tag} must be bytes, got {type(value).__name__}; "
                f"convert it with sessions.message.to_bytes()"
            )
        fields.append(prefix + value)
    return fields


def _check_values(pairs: Iterable[tuple[int, bytes]]) -> None:
    """Raise CodecError for a value containing SOH that is not a correctly announced data field."""
    data_tag = 0  # the data field announced by the previous pair, if it was a length field
    data_len = -1
    for tag, value in pairs:
        if SOH in value and not (tag == data_tag and len(value) == data_len):
            raise CodecError(
                f"value of tag {tag} contains SOH (0x01), which would corrupt the message; only a "
                f"data field right after its length field may (e.g. 95=<n> then 96=<n bytes>)"
            )
        data_tag = DATA_FIELDS.get(tag, 0)
        if data_tag and value.isdigit() and len(value) <= _MAX_LENGTH_DIGITS:
            data_len = int(value)
        else:
            data_len = -1


def _frame(payload: bytes, begin_string: bytes) -> bytes:
    """Wrap ``payload`` (the fields after BodyLength) in header and CheckSum trailer."""
    msg = b"8=%s\x019=%d\x01%s" % (begin_string, len(payload), payload)
    return msg + _CHECKSUM_FIELDS[checksum(msg)]


def encode_pairs(pairs: Sequence[tuple[int, bytes]], begin_string: bytes = b"FIXT.1.1") -> bytes:
    """Full wire bytes ``8=…|9=<len>|<pairs>|10=NNN|`` for ``pairs`` (which exclude 8, 9 and 10).

    Pairs are written in the order given, so MsgType(35) must come first. Raises
    :class:`~sessions.errors.CodecError` for a tag that is not a positive int, a value that is
    not bytes, or a value containing SOH that is not a data field announced by its length field.
    """
    try:
        parts = [_TAG_PREFIXES[t] + v for t, v in pairs]
    except (KeyError, TypeError):
        parts = _encode_fields_slow(pairs)
    parts.append(b"")  # so that the payload ends with SOH
    payload = SOH.join(parts)
    # One SOH per field, unless a value brought its own: then look closer.
    if payload.count(SOH) != len(parts) - 1:
        _check_values(pairs)
    return _frame(payload, begin_string)


def encode_message(
    msg_type: bytes,
    header: Sequence[tuple[int, bytes]],
    body: Sequence[tuple[int, bytes]],
    begin_string: bytes = b"FIXT.1.1",
) -> bytes:
    """Wire bytes for ``35=msg_type``, then the ``header`` pairs, then the ``body`` pairs.

    The session's send path: no intermediate message object is built. Same rules and errors as
    :func:`encode_pairs`.
    """
    prefixes = _TAG_PREFIXES
    try:
        parts = [b"35=" + msg_type]
        parts += [prefixes[t] + v for t, v in header]
        parts += [prefixes[t] + v for t, v in body]
    except (KeyError, TypeError):
        parts = _encode_fields_slow([(35, msg_type), *header, *body])
    parts.append(b"")
    payload = SOH.join(parts)
    if payload.count(SOH) != len(parts) - 1:
        _check_values([(35, msg_type), *header, *body])
    return _frame(payload, begin_string)


# --- decoding -----------------------------------------------------------------------------------


@attrs.frozen
class Garbled:
    """A chunk of input the decoder discarded because it is not a valid FIX message.

    Reported as data, never raised: FIX says a garbled message is ignored (not rejected, no
    sequence number consumed), so the session only logs it. ``data`` holds at most the first
    :data:`GARBLED_KEEP` bytes of the chunk; ``size`` is the full number of bytes discarded.
    """

    reason: str
    data: bytes = attrs.field(repr=lambda d: repr(d[:80]) + ("…" if len(d) > 80 else ""))
    size: int = attrs.field(
        default=attrs.Factory(lambda self: len(self.data), takes_self=True)
    )


def _garbled(reason: str, chunk: bytes) -> Garbled:
    return Garbled(reason, chunk[:GARBLED_KEEP], len(chunk))


class _Malformed(Exception):
    """Internal: a frame's fields cannot be represented as (int tag, bytes value) pairs."""


# b"<tag>=" → tag number for every well-formed tag seen: a dict subscript is cheaper than
# isdigit() + int() and validates at the same time (the fast path relies on every key ending
# with "="). Bounded, so a peer sending junk tags can push the decoder onto the careful path but
# cannot grow memory. Data-length tags are never entered: the fast path cannot apply the
# data-field rule, so meeting one there must raise KeyError.
_TAG_NUMBERS: dict[bytes, int] = {}
_TAG_NUMBERS_LIMIT = 20_000
_tag_lookup = _TAG_NUMBERS.__getitem__

def _tag_number(raw: bytes) -> int:
    tag = _TAG_NUMBERS.get(raw + b"=")
    if tag is None:
        if not raw.isdigit():
            what = "empty tag" if not raw else "tag is not a number"
            raise _Malformed(f"malformed field: {what} ({raw[:40]!r})")
        if len(raw) > _MAX_TAG_DIGITS:
            raise _Malformed(f"malformed field: tag longer than {_MAX_TAG_DIGITS} digits ({raw!r})")
        tag = int(raw)
        if tag not in DATA_FIELDS and len(_TAG_NUMBERS) < _TAG_NUMBERS_LIMIT:
            _TAG_NUMBERS[raw + b"="] = tag
    return tag


def _parse_fields_slow(frame: bytes) -> list[tuple[int, bytes]]:
    """Field by field, honouring data fields; raises _Malformed naming the first bad field.

    ``frame`` ends with an SOH.
    """
    pairs: list[tuple[int, bytes]] = []
    end = len(frame)
    i = 0
    data_tag = -1  # tag of the data field announced by the previous field, if any
    data_len = 0
    while i < end:
        eq = frame.find(b"=", i)
        soh = frame.find(SOH, i)
        if eq < 0 or soh < eq:
            raise _Malformed(f"malformed field: no '=' in {frame[i:soh][:40]!r}")
        tag = _tag_number(frame[i:eq])
        if tag == data_tag:
            value_end = eq + 1 + data_len
            if value_end >= end or frame[value_end] != 1:
                raise _Malformed(
                    f"malformed field: data field {tag} is not the {data_len} bytes "
                    f"announced by its length field followed by SOH"
                )
            soh = value_end
        value = frame[eq + 1 : soh]
        pairs.append((tag, value))
        data_tag = DATA_FIELDS.get(tag, -1)
        if data_tag >= 0:
            if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                raise _Malformed(
                    f"malformed field: length field {tag}={value[:40]!r} is not a number"
                )
            data_len = int(value)
        i = soh + 1
    return pairs


_new_fix_message = FixMessage.__new__


class StreamDecoder:
    """Splits a byte stream into :class:`FixMessage` and :class:`Garbled` items.

    Feed bytes as they arrive and drain with :meth:`next_message` (or iterate) after each feed.
    Sans-IO and deterministic: the same stream yields the same messages however it is split.
    Garbage is reported as soon as it is seen, so the number of :class:`Garbled` items for one
    run of junk can depend on how the bytes arrived. Once drained (``next_message()`` returned
    ``None``), the decoder holds fewer than ``max_message_size`` bytes: a header promising a
    bigger message is reported at once, without waiting for the rest.
    """

    __slots__ = (
        "_buf", "_pos", "_pending", "_pending_len", "_need", "_at_start", "_max", "_headers",
        "_prefix_len", "_layouts",
    )

    def __init__(self, max_message_size: int = 65536) -> None:
        if max_message_size < _MIN_MAX_SIZE:
            raise ConfigError(
                f"max_message_size must be at least {_MIN_MAX_SIZE} bytes, got {max_message_size}"
            )
        self._max = max_message_size
        self._buf = b""  # bytes being parsed; everything before _pos is consumed
        self._pos = 0
        # Chunks fed while an incomplete message waits; joined once at least _need bytes are
        # held, so a large message arriving a byte at a time is not re-copied per byte.
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = 0
        # True when _pos may start a message: stream start, after a message, or after an SOH.
        self._at_start = True
        # Headers seen, b"8=<BeginString>|9=<BodyLength>" → BodyLength (within the maximum),
        # and where the BodyLength digits of the last one started.
        self._headers: dict[bytes, int] = {}
        self._prefix_len = len(b"8=FIXT.1.1\x019=")
        # Piece count → (b"<tag>=" pieces, tag numbers) of the last message with that count.
        self._layouts: list[tuple[list[bytes], list[int]]] = [_NO_LAYOUT] * _MAX_PIECES

    @property
    def buffered(self) -> int:
        """Number of bytes held that have not been returned yet."""
        return len(self._buf) - self._pos + self._pending_len

    @property
    def max_message_size(self) -> int:
        """Largest message accepted, in bytes, from ``8=`` through the CheckSum's SOH."""
        return self._max

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied unless already ``bytes``)."""
        if data.__class__ is not bytes:
            data = bytes(data)
        if self._pos >= len(self._buf) and not self._pending:
            self._buf = data
            self._pos = 0
        elif data:
            self._pending.append(data)
            self._pending_len += len(data)

    def __iter__(self) -> Iterator[FixMessage | Garbled]:
        """Yield messages and garbled chunks until more bytes are needed."""
        while (item := self.next_message()) is not None:
            yield item

    def next_message(self) -> FixMessage | Garbled | None:
        """The next message or garbled chunk, or ``None`` when more bytes are needed."""
        if self._pending:
            if len(self._buf) - self._pos + self._pending_len < self._need:
                return None
            self._buf = b"".join([self._buf[self._pos :], *self._pending])
            self._pos = 0
            self._pending = []
            self._pending_len = 0
            self._need = 0
        buf = self._buf
        pos = self._pos
        # Fast path: the header "8=FIXT.1.1|9=<n>" is one seen before (the BeginString is
        # usually the same each time, so the BodyLength digits start at the same offset), and
        # the headers cache maps it straight to BodyLength, already checked against the maximum.
        # Everything else is sorted out by _header().
        start = pos + self._prefix_len
        soh = buf.find(SOH, start, start + _MAX_LENGTH_DIGITS + 1)
        if soh > 0 and self._at_start:
            try:
                length = self._headers[buf[pos:soh]]
            except KeyError:
                pass
            else:
                body_end = soh + length  # the SOH before "10="
                end = body_end + 1 + _TRAILER_LEN
                if end <= len(buf):
                    # Without its final SOH, so that it splits into tag, value, tag, value.
                    frame = buf[pos:body_end]
                    # checksum() inlined: Adler's "1 +" stands in for the final SOH.
                    check = _adler32(frame)
                    if (check & 0xFFFF) - 1 + _ADLER_MOD > 255 * (body_end - pos):
                        check &= 0xFF
                    else:
                        check = (checksum(frame) + 1) & 0xFF
                    if buf[body_end:end] != _TRAILERS[check]:
                        return self._bad_trailer(buf, pos, body_end + 1, check)
                    self._pos = end
                    # The fields. Cutting after every "=" and at every SOH gives pieces that
                    # alternate b"<tag>=", value, b"<tag>=", value, … when each field holds
                    # exactly one "=". The even pieces are checked against known tags (all
                    # ending with "="), which proves it: a field with an even number of "="
                    # (none included) ends in a piece without "=" that lands on an even place
                    # and fails; so if none fails, every field has an odd number of "=", and
                    # as many "=" as fields means exactly one each.
                    cut = frame.replace(b"=", b"=\x01")
                    pieces = cut.split(SOH)
                    pairs = None
                    if len(pieces) == 2 * (len(cut) - len(frame)):  # pieces == 2 * "=" count
                        tags = pieces[::2]
                        # Messages of one kind repeat their tags: comparing with the last
                        # layout of this many pieces (its tags all known) is cheaper than
                        # looking each tag up.
                        count = len(pieces)
                        layout = self._layouts[count] if count < _MAX_PIECES else _NO_LAYOUT
                        if layout[0] == tags:
                            numbers = layout[1]
                        else:
                            try:
                                numbers = list(map(_tag_lookup, tags))
                            except KeyError:
                                numbers = None  # a new, bad or data-length tag
                            else:
                                if count < _MAX_PIECES:
                                    self._layouts[count] = (tags, numbers)
                        if numbers is not None:
                            pairs = [*zip(numbers, pieces[1::2]), _CHECKSUM_PAIRS[check]]
                    if pairs is None:
                        try:
                            pairs = _parse_fields_slow(frame + SOH)
                        except _Malformed as e:
                            return _garbled(str(e), buf[pos:end])
                        pairs.append(_CHECKSUM_PAIRS[check])
                    msg: FixMessage = _new_fix_message(FixMessage)
                    msg.pairs = pairs  # already (int, bytes): skip __init__'s conversion
                    return msg
                self._need = end - pos
                return None
        return self._header(buf, pos)

    # --- the unusual cases --------------------------------------------------------------------

    def _wait(self, held: int) -> None:
        self._need = held + 1

    def _header(self, buf: bytes, pos: int) -> FixMessage | Garbled | None:
        """Parse the header at ``pos`` carefully: wait for it, report it garbled, or learn it."""
        n = len(buf)
        if pos >= n:
            if buf:
                self._buf = b""  # drop the reference to the consumed chunk
                self._pos = 0
            return None
        if not self._at_start:
            return self._skip(pos, "does not start with 8=")
        if not buf.startswith(b"8=", pos):
            if n - pos == 1 and buf[pos] == 0x38:  # a lone "8": wait for the "="
                self._wait(1)
                return None
            return self._skip(pos, "does not start with 8=")
        soh1 = buf.find(SOH, pos + 2, pos + 3 + _MAX_BEGIN_STRING)
        if soh1 < 0:
            if n - pos < 3 + _MAX_BEGIN_STRING:
                self._wait(n - pos)
                return None
            return self._skip(
                pos, f"malformed header: BeginString longer than {_MAX_BEGIN_STRING} bytes"
            )
        second = buf[soh1 + 1 : soh1 + 3]
        if second != b"9=":
            if len(second) < 2 and b"9=".startswith(second):
                self._wait(n - pos)
                return None
            return self._skip(pos, "malformed header: second field is not BodyLength(9)")
        start = soh1 + 3
        soh2 = buf.find(SOH, start, start + _MAX_LENGTH_DIGITS + 1)
        if soh2 < 0:
            partial = buf[start : start + _MAX_LENGTH_DIGITS + 1]
            if len(partial) <= _MAX_LENGTH_DIGITS and (not partial or partial.isdigit()):
                self._wait(n - pos)
                return None
            return self._skip(pos, f"malformed BodyLength: {partial[:20]!r}")
        digits = buf[start:soh2]
        if not digits.isdigit():
            return self._skip(pos, f"malformed BodyLength: {digits!r}")
        length = int(digits)
        size = soh2 + 1 + length + _TRAILER_LEN - pos
        if size > self._max:
            return self._skip(
                pos, f"message exceeds {self._max} bytes (BodyLength {length} makes it {size})"
            )
        # A sound header: remember it for the fast path and go again, which now takes it.
        if len(self._headers) >= _MAX_HEADERS:
            self._headers.clear()
        self._headers[buf[pos:soh2]] = length
        self._prefix_len = start - pos
        return self.next_message()

    def _bad_trailer(self, buf: bytes, pos: int, body_end: int, expected: int) -> Garbled:
        """The bytes where ``10=NNN|`` should be are not the expected CheckSum field."""
        length = body_end - buf.find(SOH, buf.find(SOH, pos) + 1) - 1
        if buf[body_end - 1 : body_end + 3] != b"\x0110=":
            return self._skip(pos, f"BodyLength {length} does not end at a CheckSum field")
        got = buf[body_end + 3 : body_end + _TRAILER_LEN]
        if len(got) != 4 or not got[:3].isdigit() or got[3] != 1:
            return self._skip(
                pos, f"malformed CheckSum field: {b'10=' + got!r} (want 3 digits and SOH)"
            )
        self._pos = body_end + _TRAILER_LEN
        return _garbled(
            f"bad CheckSum: expected {expected:03d}, got {got[:3].decode()}",
            buf[pos : self._pos],
        )

    def _skip(self, pos: int, reason: str) -> Garbled:
        """Discard from ``pos`` to the next possible message start (an ``8=`` after an SOH)."""
        buf = self._buf
        n = len(buf)
        j = buf.find(b"\x018=", pos)
        if j >= 0:
            stop = j + 1
            self._at_start = True
        elif buf.endswith(b"\x018") and n - 2 >= pos:
            stop = n - 1  # keep the "8": it may begin a message once "=" arrives
            self._at_start = True
        else:
            stop = n
            self._at_start = buf.endswith(SOH)
        self._pos = stop
        return _garbled(reason, buf[pos:stop])


def decode(data: bytes | bytearray | memoryview) -> FixMessage:
    """Decode exactly one complete message; strict, for tests, tools and stored messages.

    Raises :class:`~sessions.errors.CodecError` naming the problem: garbled framing or fields,
    an incomplete message, or bytes after the message.
    """
    raw = bytes(data)
    # No size limit: it defends a stream, and here the whole input is already in memory (and a
    # header promising more than was given is better reported as "incomplete").
    decoder = StreamDecoder(max_message_size=sys.maxsize)
    decoder.feed(raw)
    item = decoder.next_message()
    if item is None:
        raise CodecError(
            f"incomplete FIX message: {len(raw)} bytes given"
            + (f", the header promises {decoder._need}" if decoder._need else "")
        )
    if isinstance(item, Garbled):
        raise CodecError(f"not a valid FIX message: {item.reason}")
    if decoder.buffered:
        raise CodecError(f"{decoder.buffered} unexpected bytes after the FIX message")
    return item
