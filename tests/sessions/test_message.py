"""FixMessage, value conversion and UTCTimestamp helpers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import simplefix
from hypothesis import given, settings
from hypothesis import strategies as st

from sessions.codec import decode
from sessions.message import FixMessage, parse_utc_timestamp, to_bytes, utc_timestamp


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (b"raw", b"raw"),
        ("text", b"text"),
        (True, b"Y"),
        (False, b"N"),
        (42, b"42"),
        (-7, b"-7"),
        (Decimal("0.5600"), b"0.5600"),
        (Decimal("1E+2"), b"100"),
        (0.25, b"0.25"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
    ],
)
def test_to_bytes(value: object, wire: bytes) -> None:
    assert to_bytes(value) == wire  # type: ignore[arg-type]


def test_to_bytes_refuses_other_types() -> None:
    with pytest.raises(TypeError, match="cannot put a list into a FIX field"):
        to_bytes([1])  # type: ignore[arg-type]


def test_constructor_converts_tags_and_values() -> None:
    m = FixMessage([("35", "D"), (b"38", 10), (44, Decimal("0.56"))])
    assert m.pairs == [(35, b"D"), (38, b"10"), (44, b"0.56")]
    assert FixMessage().pairs == []


def test_append_pair_in_body_and_header() -> None:
    m = FixMessage()
    m.append_pair(35, "D")
    m.append_pair(11, "c1")
    m.append_pair(49, "me", header=True)
    m.append_pair(34, 7, header=True)
    assert m.pairs == [(35, b"D"), (49, b"me"), (34, b"7"), (11, b"c1")]
    empty = FixMessage()
    empty.append_pair(52, "t", header=True)
    assert empty.pairs == [(52, b"t")]


def test_get_and_remove_nth_occurrence() -> None:
    m = FixMessage([(448, "a"), (452, 24), (448, "b")])
    assert m.get(448) == b"a" and m.get("448", 2) == b"b" and m.get(448, 3) is None
    assert m.get(1) is None
    assert m.remove(448, 2) == b"b"
    assert m.pairs == [(448, b"a"), (452, b"24")]
    assert m.remove(999) is None
    assert m.remove(448) == b"a" and m.count(448) == 0


def test_typed_getters() -> None:
    m = FixMessage([(35, "8"), (38, 10), (44, "0.56"), (43, True), (58, "hé".encode("latin-1"))])
    assert m.msg_type == b"8"
    assert m.get_int(38) == 10 and m.get_int(1) is None
    assert m.get_decimal(44) == Decimal("0.56") and m.get_decimal(1) is None
    assert m.get_bool(43) is True and m.get_bool(1) is None
    assert m.get_str(58) == "hé" and m.get_str(1) is None
    with pytest.raises(ValueError):
        m.get_int(44)
    assert FixMessage().msg_type is None


def test_container_protocol_equality_and_copy() -> None:
    m = FixMessage([(35, "0"), (112, "x")])
    assert 112 in m and 113 not in m
    assert len(m) == 2 and list(m) == [(35, b"0"), (112, b"x")]
    c = m.copy()
    assert c == m and c is not m
    c.append_pair(58, "t")
    assert c != m and len(m) == 2
    assert FixMessage([(1, "a"), (2, "b")]) != FixMessage([(2, "b"), (1, "a")])
    assert m.__eq__(object()) is NotImplemented
    with pytest.raises(TypeError):
        hash(m)


def test_repr_shows_fields_with_bars() -> None:
    assert repr(FixMessage([(35, "0"), (58, "a b")])) == "FixMessage(35=0|58=a b)"


def test_encode_computes_framing_and_ignores_stale_8_9_10() -> None:
    m = FixMessage([(8, "FIX.4.4"), (9, "999"), (35, "0"), (34, 1), (10, "000")])
    raw = m.encode()
    assert raw.startswith(b"8=FIX.4.4\x019=10\x0135=0\x0134=1\x01")
    assert decode(raw).pairs[2:-1] == [(35, b"0"), (34, b"1")]
    assert m.encode(b"FIXT.1.1").startswith(b"8=FIXT.1.1\x01")
    assert FixMessage([(35, "0")]).encode().startswith(b"8=FIXT.1.1\x01")


def test_simplefix_round_trip() -> None:
    m = FixMessage([(8, "FIXT.1.1"), (35, "D"), (11, "c1"), (44, "0.56")])
    sf = m.to_simplefix()
    assert isinstance(sf, simplefix.FixMessage)
    assert FixMessage.from_simplefix(sf) == m
    assert sf.encode() == m.encode()


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=253402300799999))  # through 9999-12-31
def test_utc_timestamp_round_trips_at_millisecond_precision(ms: int) -> None:
    stamp = utc_timestamp(ms / 1000)
    assert len(stamp) == 21 and stamp[8:9] == b"-"
    assert round(parse_utc_timestamp(stamp) * 1000) == ms


def test_utc_timestamp_format() -> None:
    now = dt.datetime(2026, 8, 25, 14, 3, 27, 512000, tzinfo=dt.timezone.utc).timestamp()
    assert utc_timestamp(now) == b"20260825-14:03:27.512"
    assert utc_timestamp(now + 0.0004) == b"20260825-14:03:27.512"
    assert utc_timestamp(now + 0.4996) == b"20260825-14:03:28.012"  # rounds, carrying the second


@pytest.mark.parametrize(
    ("text", "fraction"),
    [
        (b"20260825-14:03:27", 0.0),
        (b"20260825-14:03:27.5", 0.5),
        (b"20260825-14:03:27.512", 0.512),
        (b"20260825-14:03:27.512345", 0.512345),
        (b"20260825-14:03:27.512345678", 0.512345678),
    ],
)
def test_parse_utc_timestamp_precisions(text: bytes, fraction: float) -> None:
    base = dt.datetime(2026, 8, 25, 14, 3, 27, tzinfo=dt.timezone.utc).timestamp()
    assert parse_utc_timestamp(text) == pytest.approx(base + fraction, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"20260825",
        b"2026-08-25T14:03:27",
        b"20260825-14:03",
        b"20260825-14-03-27",
        b"20261325-14:03:27",
        b"20260825-25:03:27",
        b"20260825-14:03:27.",
        b"20260825-14:03:27,5",
        b"20260825-14:03:27.1234567890",
        b"20260825-14:03:27.5x",
        b"2026+825-14:03:27",
        b"20260825-1 :03:27",
        b"20260825-14:03:2\xff",
    ],
)
def test_parse_utc_timestamp_rejects_non_timestamps(text: bytes) -> None:
    # Also once the minute is known (the fast path reads only the seconds and fraction).
    if text[:14] == b"20260825-14:03":
        parse_utc_timestamp(b"20260825-14:03:00")
    with pytest.raises(ValueError, match="not a UTCTimestamp"):
        parse_utc_timestamp(text)


@pytest.mark.parametrize(
    "tail", [b":60", b":6", b":+1", b": 1", b":27.", b":27.1234567890", b":27.-1", b":27.5 ", b":1x"]
)
def test_a_known_minute_does_not_let_bad_seconds_through(tail: bytes) -> None:
    parse_utc_timestamp(b"20260825-14:03:00.000")
    with pytest.raises(ValueError, match="not a UTCTimestamp"):
        parse_utc_timestamp(b"20260825-14:03" + tail)


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=4_000_000_000),
    st.integers(min_value=0, max_value=9),
    st.integers(min_value=0, max_value=999_999_999),
)
def test_parse_utc_timestamp_same_whether_the_minute_is_cached(
    epoch: int, digits: int, frac: int
) -> None:
    t = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    text = t.strftime("%Y%m%d-%H:%M:%S").encode()
    if digits:
        text += b"." + str(frac).zfill(9)[:digits].encode()
    first = parse_utc_timestamp(text)  # may fill the cache
    second = parse_utc_timestamp(text)  # from the cached minute
    assert first == second
    # A float this large holds ~0.5 us: a fraction of .9999999 may round up to the next second.
    assert epoch <= first <= epoch + 1


def test_utc_timestamp_per_second_shortcut_agrees_with_a_full_print() -> None:
    # The date and time of day are printed once per second; the result must agree with a full
    # print everywhere, millisecond rounding across a second boundary included.
    import random

    def full(now: float) -> bytes:
        secs, milli = divmod(int(round(now * 1000)), 1000)
        t = dt.datetime.fromtimestamp(secs, dt.timezone.utc)
        return t.strftime("%Y%m%d-%H:%M:%S").encode() + b".%03d" % milli

    t0 = 1_784_000_000.0
    rng = random.Random(11)
    times = [t0 + rng.random() * 86_400 for _ in range(2000)]
    times += [t0 + i * 0.0004 for i in range(5000)]
    times += [t0 + 0.9995, t0 + 0.9994, t0 + 59.9996, t0 - 0.0005, 0.0]
    for t in times:
        assert utc_timestamp(t) == full(t), t


def test_first_values_answers_like_get_for_every_tag() -> None:
    m = FixMessage([(35, b"8"), (448, b"a"), (452, b"1"), (448, b"b"), (452, b"2"), (58, b"x")])
    f = m.first_values()
    assert f == {35: b"8", 448: b"a", 452: b"1", 58: b"x"}
    assert all(f[tag] == m.get(tag) for tag in f)
