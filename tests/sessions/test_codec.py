"""The wire codec: encoding, strict decoding, and the stream decoder's framing and recovery."""

from __future__ import annotations

import random

import pytest
import simplefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simplefix.data import RAW_DATA

from sessions.codec import (
    GARBLED_KEEP,
    Garbled,
    StreamDecoder,
    checksum,
    decode,
    encode_message,
    encode_pairs,
)
from sessions.errors import CodecError, ConfigError
from sessions.message import FixMessage

SOH = b"\x01"
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEADER = [(49, b"KalshiNR"), (56, b"6b1c9d1e-2f3a"), (34, b"17"), (52, b"20260825-14:03:27.512")]
BODY = [(11, b"cl-1"), (55, b"KXHIGHNY-26AUG25-B85.5"), (54, b"1"), (38, b"10"), (44, b"0.56")]


def wire(*fields: bytes, begin: bytes = b"FIXT.1.1", length: int | None = None,
         check: bytes | None = None) -> bytes:
    """Hand-built message from ``tag=value`` strings, with BodyLength/CheckSum overridable."""
    body = b"".join(f + SOH for f in fields)
    head = b"8=" + begin + SOH + b"9=%d" % (len(body) if length is None else length) + SOH
    msg = head + body
    return msg + b"10=" + (check if check is not None else b"%03d" % (sum(msg) % 256)) + SOH


def drain(decoder: StreamDecoder) -> list[FixMessage | Garbled]:
    return list(decoder)


def decode_stream(*chunks: bytes, max_message_size: int = 65536) -> list[FixMessage | Garbled]:
    decoder = StreamDecoder(max_message_size)
    out: list[FixMessage | Garbled] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out += drain(decoder)
    return out


def garbled(items: list[FixMessage | Garbled]) -> list[Garbled]:
    return [i for i in items if isinstance(i, Garbled)]


def messages(items: list[FixMessage | Garbled]) -> list[FixMessage]:
    return [i for i in items if isinstance(i, FixMessage)]


# --- checksum and encoding ----------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=3000))
def test_checksum_is_the_byte_sum_mod_256(data: bytes) -> None:
    assert checksum(data) == sum(data) % 256


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 514, 515, 516, 1030, 70000])
@pytest.mark.parametrize("fill", [b"\x7f", b"\xff"])
def test_checksum_at_the_adler_chunk_edges(size: int, fill: bytes) -> None:
    data = fill * size
    assert checksum(data) == sum(data) % 256


def test_encode_pairs_computes_body_length_and_checksum() -> None:
    raw = encode_pairs([(35, b"0"), (49, b"A"), (112, b"x=y")])
    body = b"35=0\x0149=A\x01112=x=y\x01"
    head = b"8=FIXT.1.1\x019=%d\x01" % len(body)
    assert raw == head + body + b"10=%03d\x01" % (sum(head + body) % 256)


def test_encode_message_puts_msg_type_then_header_then_body() -> None:
    raw = encode_message(b"D", HEADER, BODY)
    assert raw == encode_pairs([(35, b"D"), *HEADER, *BODY])
    assert decode(raw).pairs[2:-1] == [(35, b"D"), *HEADER, *BODY]


def test_encode_uses_the_given_begin_string() -> None:
    raw = encode_message(b"0", [], [], begin_string=b"FIX.4.4")
    assert raw.startswith(b"8=FIX.4.4\x019=5\x0135=0\x01")
    assert decode(raw).get(8) == b"FIX.4.4"


def test_encode_of_no_pairs_is_an_empty_body() -> None:
    raw = encode_pairs([])
    assert raw.startswith(b"8=FIXT.1.1\x019=0\x0110=")
    assert decode(raw).pairs == [(8, b"FIXT.1.1"), (9, b"0"), (10, raw[-4:-1])]


@pytest.mark.parametrize("tag", [0, -5, "35", 3.0, None])
def test_encode_rejects_a_tag_that_is_not_a_positive_int(tag: object) -> None:
    with pytest.raises(CodecError, match="positive int"):
        encode_pairs([(35, b"0"), (tag, b"x")])  # type: ignore[list-item]
    with pytest.raises(CodecError, match="positive int"):
        encode_message(b"0", [(tag, b"x")], [])  # type: ignore[list-item]


def test_encode_rejects_a_value_that_is_not_bytes() -> None:
    with pytest.raises(CodecError, match="tag 58 must be bytes, got str"):
        encode_pairs([(35, b"0"), (58, "text")])  # type: ignore[list-item]
    with pytest.raises(CodecError, match="tag 35 must be bytes"):
        encode_message("0", [], [])  # type: ignore[arg-type]


def test_encode_rejects_soh_inside_an_ordinary_value() -> None:
    with pytest.raises(CodecError, match=r"value of tag 58 contains SOH"):
        encode_message(b"3", HEADER, [(58, b"bad\x01value")])


def test_encode_allows_soh_in_a_data_field_announced_by_its_length() -> None:
    data = b"a\x01b=c\x01"
    raw = encode_message(b"A", HEADER, [(95, b"%d" % len(data)), (96, data), (58, b"x")])
    assert decode(raw).get(96) == data
    with pytest.raises(CodecError, match="tag 96 contains SOH"):
        encode_message(b"A", HEADER, [(95, b"3"), (96, data)])  # wrong length
    with pytest.raises(CodecError, match="tag 96 contains SOH"):
        encode_message(b"A", HEADER, [(96, data)])  # no length field
    with pytest.raises(CodecError, match="tag 96 contains SOH"):
        encode_message(b"A", HEADER, [(95, b"6"), (58, b"x"), (96, data)])  # not right after


# --- strict decode ------------------------------------------------------------------------------


def test_decode_keeps_header_and_trailer_pairs() -> None:
    raw = wire(b"35=0", b"49=A", b"56=B", b"34=1", b"52=20260825-14:03:27.512")
    msg = decode(raw)
    assert msg.pairs[0] == (8, b"FIXT.1.1")
    assert msg.pairs[1] == (9, b"%d" % (len(raw) - len(b"8=FIXT.1.1\x019=52\x01") - 7))
    assert msg.pairs[-1] == (10, raw[-4:-1])
    assert msg.msg_type == b"0" and msg.get(34) == b"1"


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = wire(b"35=0")
    assert decode(bytearray(raw)) == decode(memoryview(raw)) == decode(raw)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "incomplete"),
        (wire(b"35=0")[:-1], "incomplete FIX message: .* the header promises"),
        (b"8=FIXT.1.1\x019=", "incomplete"),
        (wire(b"35=0", check=b"000"), "bad CheckSum"),
        (wire(b"35=0") + b"8", "1 unexpected bytes after"),
        (b"hello", "does not start with 8="),
        (wire(b"35=0", b"abc"), "no '='"),
    ],
)
def test_decode_raises_codec_error_naming_the_problem(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode(data)


# --- stream decoder: every Garbled reason ---------------------------------------------------------


def test_junk_before_a_message_is_reported_and_the_message_follows() -> None:
    good = wire(b"35=0", b"34=1")
    items = decode_stream(b"junk\x01" + good)
    assert isinstance(items[0], Garbled)
    assert items[0].reason == "does not start with 8=" and items[0].data == b"junk\x01"
    assert items[1:] == [decode(good)]


def test_begin_string_longer_than_64_bytes_is_garbled() -> None:
    items = decode_stream(b"8=" + b"F" * 80 + SOH + wire(b"35=0"))
    assert garbled(items)[0].reason == "malformed header: BeginString longer than 64 bytes"
    assert messages(items) == [decode(wire(b"35=0"))]


def test_a_long_begin_string_is_decided_without_waiting_for_its_soh() -> None:
    items = decode_stream(b"8=" + b"F" * 80)
    assert [g.reason for g in garbled(items)] == [
        "malformed header: BeginString longer than 64 bytes"
    ]


def test_second_field_must_be_body_length() -> None:
    items = decode_stream(b"8=FIXT.1.1\x0135=0\x0110=123\x01" + wire(b"35=1"))
    assert garbled(items)[0].reason == "malformed header: second field is not BodyLength(9)"
    assert messages(items) == [decode(wire(b"35=1"))]


@pytest.mark.parametrize("length", [b"", b"1a", b"+5", b" 5", b"12345678901"])
def test_malformed_body_length(length: bytes) -> None:
    items = decode_stream(b"8=FIXT.1.1\x019=" + length + b"\x0135=0\x01" + wire(b"35=1"))
    assert garbled(items)[0].reason.startswith("malformed BodyLength")
    assert messages(items) == [decode(wire(b"35=1"))]


def test_oversized_message_is_reported_as_soon_as_its_header_arrives() -> None:
    decoder = StreamDecoder(max_message_size=1000)
    decoder.feed(b"8=FIXT.1.1\x019=5000\x01")
    items = drain(decoder)
    assert len(items) == 1 and isinstance(items[0], Garbled)
    assert items[0].reason.startswith("message exceeds 1000 bytes")
    assert decoder.buffered == 0
    # The body that follows is junk until the next message start.
    decoder.feed(b"35=D\x01" + b"x" * 3000 + SOH + wire(b"35=0"))
    rest = drain(decoder)
    assert [type(i) for i in rest] == [Garbled, FixMessage]


def test_message_of_exactly_the_maximum_size_is_accepted() -> None:
    raw = wire(b"35=0", b"58=" + b"t" * 100)
    assert messages(decode_stream(raw, max_message_size=len(raw))) == [decode(raw)]
    items = decode_stream(raw, max_message_size=len(raw) - 1)
    assert garbled(items)[0].reason.startswith(f"message exceeds {len(raw) - 1} bytes")


@pytest.mark.parametrize("delta", [-3, -1, 1, 4])
def test_body_length_that_misses_the_checksum_field(delta: int) -> None:
    fields = (b"35=0", b"49=ABC", b"56=DEF")
    true_length = len(b"".join(f + SOH for f in fields))
    bad = wire(*fields, length=true_length + delta)
    good = wire(b"35=1")
    items = decode_stream(bad + good)
    assert garbled(items)[0].reason == (
        f"BodyLength {true_length + delta} does not end at a CheckSum field"
    )
    assert messages(items) == [decode(good)]


@pytest.mark.parametrize("check", [b"12", b"1234", b"1x3", b"-12"])
def test_malformed_checksum_field(check: bytes) -> None:
    good = wire(b"35=1")
    items = decode_stream(wire(b"35=0", check=check) + good)
    assert garbled(items)[0].reason.startswith("malformed CheckSum field")
    assert messages(items) == [decode(good)]


def test_bad_checksum_names_both_values_and_skips_exactly_the_message() -> None:
    bad = wire(b"35=0", check=b"045")
    expected = sum(bad[:-7]) % 256
    good = wire(b"35=1")
    items = decode_stream(bad + good)
    assert items[0] == Garbled(f"bad CheckSum: expected {expected:03d}, got 045", bad)
    assert items[1:] == [decode(good)]


def test_checksum_above_255_is_a_bad_checksum() -> None:
    items = decode_stream(wire(b"35=0", check=b"999"))
    assert garbled(items)[0].reason.endswith("got 999")


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        (b"abc", "malformed field: no '=' in b'abc'"),
        (b"", "malformed field: no '=' in b''"),
        (b"x1=2", "malformed field: tag is not a number (b'x1')"),
        (b"=2", "malformed field: empty tag (b'')"),
        (b"1 =2", "malformed field: tag is not a number (b'1 ')"),
        (b"1234567890=2", "malformed field: tag longer than 9 digits (b'1234567890')"),
    ],
)
def test_malformed_fields_are_garbled(field: bytes, reason: str) -> None:
    bad = wire(b"35=0", b"58=a=b", field, b"34=2")
    good = wire(b"35=1")
    items = decode_stream(bad + good)
    assert items[0] == Garbled(reason, bad)
    assert items[1:] == [decode(good)]


def test_field_without_equals_cannot_shift_tags_and_values() -> None:
    # With one "=" too many in a value and one missing elsewhere, a naive split on "=" and SOH
    # would pair 12 with b"34"; the decoder must see the malformed field instead.
    items = decode_stream(wire(b"35=0", b"58=x=12", b"34"))
    assert [g.reason for g in garbled(items)] == ["malformed field: no '=' in b'34'"]


def test_extra_equals_balanced_by_fields_without_equals_is_still_caught() -> None:
    # As many "=" as fields, and the middle of the value looks like a tag ("12="): only the
    # field-by-field view shows that b"34" and b"35" have no "=".
    items = decode_stream(wire(b"35=0", b"58=x=12=y", b"34", b"35"))
    assert [g.reason for g in garbled(items)] == ["malformed field: no '=' in b'34'"]


def test_messages_with_the_same_field_count_but_other_tags() -> None:
    raws = [wire(b"35=0", b"34=1", b"58=a"), wire(b"35=0", b"34=2", b"112=b"),
            wire(b"35=0", b"34=3", b"58=c"), wire(b"35=0", b"43=Y", b"95=1", b"96=\x01")]
    assert decode_stream(*raws) == [decode(r) for r in raws]
    assert decode_stream(b"".join(raws))[3].pairs[-3:-1] == [(95, b"1"), (96, b"\x01")]


def test_garbled_data_is_capped_but_size_is_complete() -> None:
    junk = b"z" * 5000
    (item,) = decode_stream(junk)
    assert isinstance(item, Garbled)
    assert item.data == junk[:GARBLED_KEEP] and item.size == 5000
    assert "…" in repr(item)


# --- stream decoder: data fields ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"abc", b"a\x01b", b"\x01", b"x=y==", b"\x0110=123\x01", b"8=FIXT.1.1\x019=5\x01", b""],
)
def test_raw_data_holds_exactly_the_announced_bytes(data: bytes) -> None:
    raw = wire(b"35=A", b"95=%d" % len(data), b"96=" + data, b"58=after")
    items = decode_stream(raw + wire(b"35=0"))
    assert [type(i) for i in items] == [FixMessage, FixMessage]
    msg = items[0]
    assert isinstance(msg, FixMessage)
    assert msg.pairs[2:-1] == [(35, b"A"), (95, b"%d" % len(data)), (96, data), (58, b"after")]


def test_raw_data_as_last_field() -> None:
    raw = wire(b"35=A", b"95=3", b"96=a\x01b")
    assert decode(raw).get(96) == b"a\x01b"


def test_raw_data_without_length_is_an_ordinary_field() -> None:
    assert decode(wire(b"35=A", b"96=c2ln==", b"58=x")).get(96) == b"c2ln=="


def test_raw_data_length_only_applies_to_the_next_field() -> None:
    msg = decode(wire(b"35=A", b"95=2", b"58=x", b"96=abc"))
    assert msg.get(96) == b"abc"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ((b"95=5", b"96=abc"), "data field 96 is not the 5 bytes announced"),
        ((b"95=1", b"96=abc"), "data field 96 is not the 1 bytes announced"),
        ((b"95=x", b"96=abc"), "length field 95=b'x' is not a number"),
        ((b"95=", b"96=abc"), "length field 95=b'' is not a number"),
    ],
)
def test_data_field_that_disagrees_with_its_length_is_garbled(
    fields: tuple[bytes, ...], reason: str
) -> None:
    (item,) = decode_stream(wire(b"35=A", *fields))
    assert isinstance(item, Garbled) and reason in item.reason


# --- stream decoder: boundaries and buffering -----------------------------------------------------


def test_one_byte_at_a_time() -> None:
    raws = [encode_message(b"8", HEADER, BODY), wire(b"35=A", b"95=3", b"96=\x01\x01\x01"),
            wire(b"35=0", begin=b"FIX.4.4")]
    stream = b"".join(raws)
    items = decode_stream(*[stream[i : i + 1] for i in range(len(stream))])
    assert items == [decode(r) for r in raws]


def test_partial_header_waits_and_holds_only_what_it_got() -> None:
    decoder = StreamDecoder()
    for part in (b"8", b"=FIXT.1.1\x01", b"9", b"=1", b"2"):
        decoder.feed(part)
        assert decoder.next_message() is None
    assert decoder.buffered == len(b"8=FIXT.1.1\x019=12")


def test_an_8_that_does_not_follow_soh_is_not_a_message_start() -> None:
    good = wire(b"35=0")
    items = decode_stream(b"xx" + good + good)
    assert [type(i) for i in items] == [Garbled, FixMessage]
    assert items[0].data == b"xx" + good  # type: ignore[union-attr]


def test_junk_arriving_later_still_resyncs_after_soh() -> None:
    good = wire(b"35=0")
    items = decode_stream(b"abc", b"def\x01", good)
    assert [type(i) for i in items] == [Garbled, Garbled, FixMessage]
    items = decode_stream(b"abc\x01", b"8", b"=FIXT.1.1\x01", good[len(b"8=FIXT.1.1\x01"):])
    assert messages(items) == [decode(good)]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    raw = wire(b"35=0")
    decoder = StreamDecoder()
    decoder.feed(bytearray(raw[:10]))
    decoder.feed(memoryview(raw)[10:])
    assert drain(decoder) == [decode(raw)]


def test_next_message_none_when_empty_and_buffered_zero_after_drain() -> None:
    decoder = StreamDecoder()
    assert decoder.next_message() is None
    decoder.feed(wire(b"35=0") * 3)
    assert len(drain(decoder)) == 3
    assert decoder.buffered == 0 and decoder.next_message() is None


def test_begin_string_may_change_between_messages() -> None:
    raws = [wire(b"35=0"), wire(b"35=1", begin=b"FIX.4.2"), wire(b"35=2"), wire(b"35=3", begin=b"")]
    assert decode_stream(b"".join(raws)) == [decode(r) for r in raws]


def test_values_with_equals_and_new_tags_go_the_careful_path() -> None:
    raw = wire(b"35=0", b"58=a=b=c", b"987654=x", b"0035=y", b"0=z")
    assert decode(raw).pairs[2:-1] == [(35, b"0"), (58, b"a=b=c"), (987654, b"x"), (35, b"y"),
                                       (0, b"z")]


def test_empty_values_are_kept_for_the_session_to_reject() -> None:
    assert decode(wire(b"35=0", b"58=")).get(58) == b""


def test_too_small_maximum_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 128"):
        StreamDecoder(max_message_size=100)


# --- properties ---------------------------------------------------------------------------------

# Tags simplefix treats specially (header placement, raw data) are left out of the interop runs.
_SIMPLEFIX_SPECIAL = {8, 9, 10, 35} | {t for pair in RAW_DATA for t in pair}
tags = st.integers(min_value=1, max_value=99999).filter(lambda t: t not in _SIMPLEFIX_SPECIAL)
values = st.binary(min_size=1, max_size=30).filter(lambda v: SOH not in v)
pair_lists = st.lists(st.tuples(tags, values), max_size=25)
msg_types = st.sampled_from([b"0", b"8", b"D", b"AE", b"j", b"UA"])
begin_strings = st.sampled_from([b"FIXT.1.1", b"FIX.4.4", b"X"])


@PROPERTY
@given(msg_types, pair_lists, pair_lists, begin_strings)
def test_simplefix_parses_our_encoding_to_the_same_pairs(
    msg_type: bytes, header: list, body: list, begin: bytes
) -> None:
    raw = encode_message(msg_type, header, body, begin)
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    theirs = FixMessage.from_simplefix(parser.get_message())
    assert theirs == decode(raw)
    assert theirs.pairs[2:-1] == [(35, msg_type), *header, *body]


@PROPERTY
@given(msg_types, pair_lists, begin_strings)
def test_we_parse_simplefix_encoding_to_the_same_pairs(
    msg_type: bytes, pairs: list, begin: bytes
) -> None:
    m = simplefix.FixMessage()
    m.append_pair(8, begin)
    m.append_pair(35, msg_type)
    for tag, value in pairs:
        m.append_pair(tag, value)
    raw = m.encode()
    ours = decode(raw)
    assert ours.pairs[:3] == [(8, begin), (9, ours.get(9)), (35, msg_type)]
    assert ours.pairs[3:-1] == pairs
    assert raw == encode_message(msg_type, [], pairs, begin)


@PROPERTY
@given(st.binary(max_size=400))
def test_raw_data_round_trips_with_any_bytes(data: bytes) -> None:
    raw = encode_message(b"A", HEADER, [(98, b"0"), (95, b"%d" % len(data)), (96, data)])
    assert decode(raw).get(96) == data
    if data:  # simplefix refuses the empty value that follows 95=0
        parser = simplefix.FixParser()
        parser.append_buffer(raw)
        assert parser.get_message().get(96) == data


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@PROPERTY
@given(st.lists(st.tuples(msg_types, pair_lists), min_size=1, max_size=6),
       st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_a_stream_gives_the_same_messages(msgs: list, cuts: list[int]) -> None:
    raws = [encode_message(t, HEADER, body) for t, body in msgs]
    assert decode_stream(*_split(b"".join(raws), cuts)) == [decode(r) for r in raws]


junk = st.one_of(
    st.binary(min_size=1, max_size=80),
    # Junk that looks like the start of a message, so the decoder waits or resyncs inside it.
    st.sampled_from([b"8=FIXT.1.1\x019=40\x01", b"x\x018=FIXT.1.1\x019=3000\x0135=0",
                     b"8=", b"\x018=\x019=\x01", b"10=000", b"8=FIXT.1.1\x019=0\x0110=1"]),
).map(lambda b: b + SOH)


@PROPERTY
@given(
    st.lists(st.tuples(msg_types, pair_lists), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), junk, st.integers(min_value=0)), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_garbage_between_messages_is_reported_and_valid_messages_survive(
    msgs: list, damage: list, cuts: list[int]
) -> None:
    """Junk (ending in SOH) between messages, and single-byte corruption of whole messages.

    Every intact message is recovered, in order; junk and corruption show up as Garbled; no
    exception escapes. The final byte of a corrupted message is left alone: it is the SOH that
    lets the next message be found (a message glued to junk is "adjacent-corrupted").
    """
    max_size = 4096
    stream = b""
    intact: list[FixMessage] = []
    damaged = False
    for i, (msg_type, body) in enumerate(msgs):
        raw = encode_message(msg_type, HEADER, body)
        hurt = damage[i % len(damage)]
        if isinstance(hurt, int):
            at = hurt % (len(raw) - 1)
            flipped = bytes([(raw[at] + 1 + hurt % 255) % 256])  # never the same byte
            raw = raw[:at] + flipped + raw[at + 1:]
            damaged = True
        else:
            intact.append(decode(raw))
        if isinstance(hurt, bytes):
            raw += hurt
            damaged = True
        stream += raw
    # Filler long enough to complete any frame a corrupted header may still be waiting for.
    filler_at = len(stream)
    stream += SOH + b"~" * (max_size + 100)
    decoder = StreamDecoder(max_size)
    items: list[FixMessage | Garbled] = []
    for chunk in _split(stream, cuts):
        decoder.feed(chunk)
        items += drain(decoder)
    assert messages(items) == intact
    # Items come in stream order and every byte is accounted for: in a message, reported as
    # garbled, or still held. Damage must be reported where it is, before the filler.
    offset = 0
    garbled_before_filler = False
    for item in items:
        if isinstance(item, Garbled):
            garbled_before_filler |= offset < filler_at
            offset += item.size
        else:
            offset += len(encode_pairs(item.pairs[2:-1], item.get(8) or b""))
    assert offset + decoder.buffered == len(stream)
    assert garbled_before_filler == damaged


tricky_chunks = st.sampled_from([
    b"8=FIXT.1.1\x019=99999\x01", b"\x018=FIXT.1.1\x019=200\x0135=0\x01", b"\x018",
    encode_message(b"0", HEADER, []),
])


@PROPERTY
@given(
    st.lists(st.one_of(st.binary(max_size=300), tricky_chunks), max_size=30),
    st.integers(min_value=128, max_value=2048),
)
def test_buffer_never_exceeds_the_maximum_after_draining(
    chunks: list[bytes], max_size: int
) -> None:
    decoder = StreamDecoder(max_message_size=max_size)
    for chunk in chunks:
        decoder.feed(chunk)
        for item in decoder:
            if isinstance(item, FixMessage):
                assert len(encode_pairs(item.pairs[2:-1], item.get(8) or b"")) <= max_size
            else:
                assert len(item.data) <= GARBLED_KEEP
        assert decoder.buffered < max_size


def test_a_large_message_arriving_a_byte_at_a_time_is_not_recopied_per_byte() -> None:
    # 60 kB one byte at a time: quadratic copying would take minutes, this takes well under 1 s.
    raw = encode_message(b"B", HEADER, [(58, b"t" * 60_000)])
    decoder = StreamDecoder()
    out = []
    for i in range(len(raw)):
        decoder.feed(raw[i : i + 1])
        out += drain(decoder)
    assert out == [decode(raw)]


def test_random_bytes_never_raise() -> None:
    rng = random.Random(1234)
    alphabet = b"8=9\x011023abc"
    decoder = StreamDecoder(max_message_size=128)
    for _ in range(2000):
        decoder.feed(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))))
        for item in decoder:
            assert isinstance(item, (FixMessage, Garbled))
        assert decoder.buffered < 128
