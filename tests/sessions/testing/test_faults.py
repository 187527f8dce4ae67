"""The fault vocabulary, plans, logs and the byte-level injector, observed from the client's end.

Every stream test puts a :class:`FaultyStream` on the gateway half of an in-memory stream pair
and checks what the other half (the client) sees, under trio's autojumping ``MockClock`` (which
starts at 0, so trio time is gateway time here).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from sessions.codec import Garbled, StreamDecoder, encode_message
from sessions.errors import ConfigError
from sessions.message import FixMessage
from sessions.testing.faults import (
    GARBLE_VARIANTS,
    Fault,
    FaultKind,
    FaultLog,
    FaultPlan,
    FaultyStream,
    InjectedFault,
    WireLog,
    garble,
)
from sessions.testing.wirelog import render_bytes

K = FaultKind
EP = "KalshiNR"


def msg(seq: int, msg_type: bytes = b"0", text: bytes = b"") -> bytes:
    body = [(58, text)] if text else []
    header = [(49, EP.encode()), (56, b"key-1"), (34, b"%d" % seq), (52, b"20260101-00:00:00.000")]
    return encode_message(msg_type, header, body)


# Long enough that a reader of a truncated message before it finds the message's bytes in them.
FILLER = b"x" * 60


class Harness:
    """A FaultyStream on the gateway side of a memory stream pair, and the client's side."""

    def __init__(self, faults: Sequence[Fault], *, key: str | None = None) -> None:
        gateway_side, self.client = trio.testing.memory_stream_pair()
        self.fault_log = FaultLog()
        self.wire_log = WireLog()
        self.key = key
        self.stream = FaultyStream(
            gateway_side,
            faults,
            endpoint=EP,
            connection_id=7,
            clock=trio.current_time,
            fault_log=self.fault_log,
            wire_log=self.wire_log,
            key_id=lambda: self.key,
        )

    async def read_all(self) -> bytes:
        """Everything the client receives until EOF."""
        chunks = []
        while data := await self.client.receive_some():
            chunks.append(data)
        return b"".join(chunks)

    async def read_timed(self) -> list[tuple[float, FixMessage | Garbled]]:
        """Decoded items with the trio time each arrived, until EOF."""
        decoder = StreamDecoder()
        items = []
        while data := await self.client.receive_some():
            decoder.feed(data)
            items += [(trio.current_time(), item) for item in decoder]
        return items


def decoded(data: bytes) -> list[FixMessage | Garbled]:
    decoder = StreamDecoder()
    decoder.feed(data)
    return list(decoder)


# --------------------------------------------------------------------------- pass-through


async def test_without_faults_bytes_pass_unchanged_and_are_logged_both_ways(autojump_clock):
    h = Harness([])
    await h.stream.send_all(msg(1) + msg(2))
    await h.client.send_all(b"hello")
    assert await h.stream.receive_some() == b"hello"
    await h.stream.aclose()
    assert await h.read_all() == msg(1) + msg(2)
    assert h.stream.sent_messages == 2
    assert [(e.direction, e.data, e.connection_id) for e in h.wire_log] == [
        ("out", msg(1) + msg(2), 7),
        ("in", b"hello", 7),
    ]
    assert h.fault_log.entries == []


async def test_faults_of_other_endpoints_and_gateway_kinds_are_ignored(autojump_clock):
    h = Harness(
        [
            Fault(K.DROP, endpoint="KalshiRT"),
            Fault(K.SKIP_SEQ),
            Fault(K.REJECT_LOGON, text="no"),
            Fault(K.DUPLICATE, endpoint=EP),
        ]
    )
    assert h.stream.faults == (Fault(K.DUPLICATE, endpoint=EP),)
    await h.stream.send_all(msg(1))
    await h.stream.aclose()
    assert await h.read_all() == msg(1) * 2


# --------------------------------------------------------------------------- DROP


async def test_drop_after_n_closes_right_after_the_nth_message(autojump_clock):
    h = Harness([Fault(K.DROP, after_messages=3)])
    for seq in (1, 2, 3):
        await h.stream.send_all(msg(seq))
    assert h.stream.dropped
    with pytest.raises(trio.BrokenResourceError):
        await h.stream.send_all(msg(4))
    assert await h.read_all() == msg(1) + msg(2) + msg(3)
    assert await h.stream.receive_some() == b""
    (entry,) = h.fault_log.of_kind(K.DROP)
    assert "after 3 outbound messages" in entry.detail
    assert b"".join(e.data for e in h.wire_log if e.direction == "out") == msg(1) + msg(2) + msg(3)


async def test_drop_in_the_middle_of_one_write_sends_what_precedes_only(autojump_clock):
    h = Harness([Fault(K.DROP, after_messages=2)])
    with pytest.raises(trio.BrokenResourceError):
        await h.stream.send_all(msg(1) + msg(2) + msg(3) + msg(4))
    assert await h.read_all() == msg(1) + msg(2)
    assert h.wire_log.data("out") == msg(1) + msg(2)


async def test_drop_at_a_time_fires_without_traffic_through_run_timers(autojump_clock):
    h = Harness([Fault(K.DROP, at=5.0)], key="key-1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.stream.run_timers)
        assert await h.read_all() == b""
        closed_at = trio.current_time()
    assert closed_at == 5.0
    assert h.fault_log.entries == [
        InjectedFault(5.0, EP, "key-1", K.DROP, h.fault_log.entries[0].detail)
    ]
    assert h.fault_log.entries[0].detail.startswith("at 5.000")


async def test_drop_wakes_a_gateway_read_that_was_waiting(autojump_clock):
    h = Harness([Fault(K.DROP, at=2.0)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.stream.run_timers)
        assert await h.stream.receive_some() == b""
        assert trio.current_time() == 2.0
    with pytest.raises(trio.BrokenResourceError):
        await h.client.send_all(msg(1))


async def test_drop_at_a_time_also_fires_at_the_next_write_without_timers(autojump_clock):
    h = Harness([Fault(K.DROP, at=3.0)])
    await h.stream.send_all(msg(1))
    await trio.sleep(3.0)
    with pytest.raises(trio.BrokenResourceError):
        await h.stream.send_all(msg(2))
    assert await h.read_all() == msg(1)


async def test_drop_with_no_trigger_closes_before_the_first_read(autojump_clock):
    h = Harness([Fault(K.DROP)])
    await h.client.send_all(msg(1))
    assert await h.stream.receive_some() == b""
    assert await h.read_all() == b""
    assert h.wire_log.entries == []


async def test_a_keyed_fault_waits_for_that_key(autojump_clock):
    h = Harness([Fault(K.DROP, key_id="key-2", after_messages=1)])
    await h.stream.send_all(msg(1))
    h.key = "key-1"
    await h.stream.send_all(msg(2))
    assert not h.stream.dropped
    h.key = "key-2"
    with pytest.raises(trio.BrokenResourceError):
        await h.stream.send_all(msg(3))
    assert await h.read_all() == msg(1) + msg(2)
    (entry,) = h.fault_log.entries
    assert entry.key_id == "key-2"


# --------------------------------------------------------------------------- DUPLICATE


async def test_duplicate_sends_the_next_message_twice_byte_identical(autojump_clock):
    h = Harness([Fault(K.DUPLICATE, after_messages=1)])
    await h.stream.send_all(msg(1) + msg(2) + msg(3))
    await h.stream.aclose()
    assert await h.read_all() == msg(1) + msg(2) + msg(2) + msg(3)
    (entry,) = h.fault_log.of_kind(K.DUPLICATE)
    assert entry.detail == "message 2 (0) sent twice"
    assert h.stream.sent_messages == 3


async def test_duplicate_with_count_hits_that_many_messages(autojump_clock):
    h = Harness([Fault(K.DUPLICATE, count=2)])
    for seq in (1, 2, 3):
        await h.stream.send_all(msg(seq))
    await h.stream.aclose()
    assert await h.read_all() == msg(1) * 2 + msg(2) * 2 + msg(3)
    assert len(h.fault_log.of_kind(K.DUPLICATE)) == 2


# --------------------------------------------------------------------------- GARBLE


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("checksum", r"bad CheckSum: expected (\d{3}), got (\d{3})"),
        ("body_length", r"BodyLength \d+ does not end at a CheckSum field"),
        ("truncated", r"BodyLength \d+ does not end at a CheckSum field"),
    ],
)
async def test_garble_is_seen_as_garbled_and_the_reader_resynchronises(
    autojump_clock, variant: str, reason: str
):
    h = Harness([Fault(K.GARBLE, variant=variant, after_messages=1)])
    first, second, third = msg(1), msg(2, b"1", FILLER), msg(3, b"1", FILLER)
    await h.stream.send_all(first + second + third)
    await h.stream.aclose()
    received = await h.read_all()
    items = decoded(received)
    assert len(items) == 3
    assert items[0] == decoded(first)[0]
    assert isinstance(items[1], Garbled)
    match = re.fullmatch(reason, items[1].reason)
    assert match, items[1].reason
    if variant == "checksum":
        assert match.group(1) != match.group(2)
    assert items[2] == decoded(third)[0]
    # The wire log holds the corrupted bytes, as they went out.
    assert h.wire_log.data("out") == received
    (entry,) = h.fault_log.of_kind(K.GARBLE)
    assert entry.detail.startswith(f"{variant}: message 2 (1) ")


async def test_garble_without_variant_corrupts_the_checksum(autojump_clock):
    h = Harness([Fault(K.GARBLE)])
    await h.stream.send_all(msg(1))
    await h.stream.aclose()
    (item,) = decoded(await h.read_all())
    assert isinstance(item, Garbled) and item.reason.startswith("bad CheckSum")


async def test_garble_at_a_time_hits_the_first_message_at_or_after_it(autojump_clock):
    h = Harness([Fault(K.GARBLE, at=5.0)])
    await h.stream.send_all(msg(1))
    await trio.sleep(5.0)
    await h.stream.send_all(msg(2))
    await h.stream.send_all(msg(3))
    await h.stream.aclose()
    items = decoded(await h.read_all())
    assert [type(i) for i in items] == [FixMessage, Garbled, FixMessage]
    assert h.fault_log.entries[0].time == 5.0


def test_garble_variants_change_exactly_what_they_say() -> None:
    frame = msg(1, b"1", FILLER)
    bad_sum, _ = garble(frame, "checksum")
    assert bad_sum[:-4] == frame[:-4] and bad_sum[-4:] != frame[-4:]
    short, detail = garble(frame, "body_length")
    assert detail.startswith("BodyLength ") and len(short) == len(frame)
    cut, detail = garble(frame, "truncated")
    assert frame.startswith(cut) and len(cut) < len(frame) and cut.endswith(b"\x01")
    with pytest.raises(ValueError, match="unknown garble variant"):
        garble(frame, "nope")
    assert set(GARBLE_VARIANTS) == {"checksum", "body_length", "truncated"}


# --------------------------------------------------------------------------- DELAY


async def test_delay_holds_the_message_for_its_duration(autojump_clock):
    h = Harness([Fault(K.DELAY, after_messages=1, duration=2.5)])

    async def gateway() -> None:
        await h.stream.send_all(msg(1))
        await h.stream.send_all(msg(2))
        await h.stream.send_all(msg(3))
        await h.stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gateway)
        arrivals = await h.read_timed()
    assert [(t, m.get(34)) for t, m in arrivals] == [(0.0, b"1"), (2.5, b"2"), (2.5, b"3")]
    assert [(e.time, e.data) for e in h.wire_log] == [(0.0, msg(1)), (2.5, msg(2)), (2.5, msg(3))]
    (entry,) = h.fault_log.entries
    assert (entry.time, entry.detail) == (0.0, "message 2 (0) held 2.5s")


async def test_delay_inside_one_write_sends_what_precedes_at_once(autojump_clock):
    h = Harness([Fault(K.DELAY, after_messages=1, duration=1.0)])
    async with trio.open_nursery() as nursery:

        async def gateway() -> None:
            await h.stream.send_all(msg(1) + msg(2))
            await h.stream.aclose()

        nursery.start_soon(gateway)
        arrivals = await h.read_timed()
    assert [(t, m.get(34)) for t, m in arrivals] == [(0.0, b"1"), (1.0, b"2")]


# --------------------------------------------------------------------------- STALL


async def test_stall_blocks_writes_and_reads_for_its_duration_then_resumes(autojump_clock):
    h = Harness([Fault(K.STALL, after_messages=1, duration=10.0)])
    await h.stream.send_all(msg(1))  # the stall starts right after this message
    got: list[tuple[float, bytes]] = []

    async def gateway_reader() -> None:
        data = await h.stream.receive_some()
        got.append((trio.current_time(), data))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gateway_reader)
        await trio.sleep(1.0)
        await h.client.send_all(b"ping")
        await h.stream.send_all(msg(2))
        assert trio.current_time() == 10.0
    assert got == [(10.0, b"ping")]
    await h.stream.aclose()
    arrivals = await h.read_all()
    assert arrivals == msg(1) + msg(2)
    (entry,) = h.fault_log.of_kind(K.STALL)
    assert entry.detail == "after 1 outbound messages: no reads or writes for 10.0s"


async def test_stall_sends_no_fin_and_ends_when_the_peer_gives_up(autojump_clock):
    h = Harness([Fault(K.STALL, at=1.0)])
    outcome: list[tuple[float, object]] = []

    async def gateway_writer() -> None:
        await trio.sleep(2.0)
        try:
            await h.stream.send_all(msg(1))
        except trio.BrokenResourceError as e:
            outcome.append((trio.current_time(), type(e)))

    async def gateway_reader() -> None:
        data = await h.stream.receive_some()
        outcome.append((trio.current_time(), data))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.stream.run_timers)
        nursery.start_soon(gateway_writer)
        nursery.start_soon(gateway_reader)
        await trio.sleep(1.5)
        await h.client.send_all(b"test request")
        with trio.move_on_after(60) as waited:
            await h.client.receive_some()  # neither data nor EOF: half-open
        assert waited.cancelled_caught
        await h.client.aclose()  # the client gives up at 61.5
    assert sorted(outcome, key=repr) == sorted(
        [(61.5, b""), (61.5, trio.BrokenResourceError)], key=repr
    )
    assert [e.detail for e in h.fault_log.of_kind(K.STALL)] == [
        "at 1.000: no reads or writes until the peer gives up",
        "ended: the peer closed the connection during the stall",
    ]
    assert [e.time for e in h.fault_log.entries] == [1.0, 61.5]
    # What the client sent went over the wire even though the gateway never saw it.
    assert h.wire_log.data("in") == b"test request"


# --------------------------------------------------------------------------- SLOW_READER


async def test_slow_reader_reads_small_chunks_with_pauses_for_its_duration(autojump_clock):
    h = Harness([Fault(K.SLOW_READER, duration=0.2)])
    await h.client.send_all(bytes(range(100)))
    reads = []
    received = b""
    while len(received) < 100:
        data = await h.stream.receive_some(4096)
        reads.append((round(trio.current_time(), 6), len(data)))
        received += data
    assert received == bytes(range(100))
    # Every read that starts within the 0.2 s is slow; the first one after it is not.
    assert reads == [(0.05, 16), (0.1, 16), (0.15, 16), (0.2, 16), (0.2, 36)]
    (entry,) = h.fault_log.of_kind(K.SLOW_READER)
    assert entry.time == 0.0 and "at most 16 bytes every 0.05s for 0.2s" in entry.detail


async def test_slow_reader_after_messages_starts_only_then(autojump_clock):
    h = Harness([Fault(K.SLOW_READER, after_messages=1)])
    await h.client.send_all(b"a" * 40)
    assert len(await h.stream.receive_some(20)) == 20
    await h.stream.send_all(msg(1))
    assert len(await h.stream.receive_some(20)) == 16
    assert trio.current_time() == 0.05


# --------------------------------------------------------------------------- whole-run determinism


def run_scenario() -> tuple[bytes, str]:
    """One scripted connection under a fresh MockClock; returns the wire and fault log dumps."""
    plan = FaultPlan.parse(
        ["duplicate:after=1", "delay:after=2,duration=0.75", "garble:after=3,variant=truncated"]
    )

    async def main() -> tuple[bytes, str]:
        h = Harness(plan.for_endpoint(EP), key="key-1")
        for seq in range(1, 6):
            await h.client.send_all(msg(seq, b"D"))
            await h.stream.receive_some()
            await h.stream.send_all(msg(seq, b"8", FILLER))
            await trio.sleep(0.3)
        await h.stream.aclose()
        return h.wire_log.dump(), h.fault_log.dump()

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_plan_and_client_give_the_same_logs_with_times() -> None:
    wire_a, faults_a = run_scenario()
    wire_b, faults_b = run_scenario()
    assert wire_a == wire_b and faults_a == faults_b
    assert faults_a.splitlines()[1] == "0.600000 KalshiNR key-1 delay message 3 (8) held 0.75s"
    assert len(faults_a.splitlines()) == 3


# --------------------------------------------------------------------------- logs


def test_wire_log_dump_is_stable_text_and_digest_follows_it() -> None:
    log = WireLog()
    log.record(1.5, EP, 3, "out", b"8=FIXT.1.1\x019=5\x01|\\\x00\x7f")
    log.record(2.0, EP, 3, "in", b"")
    assert log.dump() == (
        b"1.500000 KalshiNR 3 out 19 8=FIXT.1.1|9=5|\\x7c\\x5c\\x00\\x7f\n"
        b"2.000000 KalshiNR 3 in 0 \n"
    )
    same = WireLog()
    same.record(1.5, EP, 3, "out", b"8=FIXT.1.1\x019=5\x01|\\\x00\x7f")
    same.record(2.0, EP, 3, "in", b"")
    assert same.digest() == log.digest() and len(log.digest()) == 64
    later = WireLog()
    later.record(1.500001, EP, 3, "out", b"8=FIXT.1.1\x019=5\x01|\\\x00\x7f")
    later.record(2.0, EP, 3, "in", b"")
    assert later.digest() != log.digest()
    with pytest.raises(ValueError, match="'in' or 'out'"):
        log.record(0.0, EP, 3, "sideways", b"")
    assert render_bytes(b"a\x01b") == "a|b"


def test_fault_log_records_and_filters_by_kind() -> None:
    log = FaultLog()
    first = log.record(1.0, EP, None, K.DROP, "x")
    log.record(2.0, EP, "key-1", K.GARBLE, "y")
    assert first == InjectedFault(1.0, EP, None, K.DROP, "x")
    assert log.of_kind(K.GARBLE) == [InjectedFault(2.0, EP, "key-1", K.GARBLE, "y")]
    assert log.dump() == "1.000000 KalshiNR - drop x\n2.000000 KalshiNR key-1 garble y\n"


# --------------------------------------------------------------------------- plans: parse


def test_parse_reads_the_cli_forms() -> None:
    plan = FaultPlan.parse(
        [
            "drop:endpoint=KalshiNR,after=10",
            "garble:variant=checksum,after=3",
            "reject_logon:text=already exists",
            "refuse_connections:at=5,duration=10",
            "Stall",
            "slow-reader: duration=2.5 , key_id=abc",
            "reject_logon:text=no, really, count=2",
        ]
    )
    assert plan.faults == (
        Fault(K.DROP, endpoint="KalshiNR", after_messages=10),
        Fault(K.GARBLE, variant="checksum", after_messages=3),
        Fault(K.REJECT_LOGON, text="already exists"),
        Fault(K.REFUSE_CONNECTIONS, at=5.0, duration=10.0),
        Fault(K.STALL),
        Fault(K.SLOW_READER, duration=2.5, key_id="abc"),
        Fault(K.REJECT_LOGON, text="no, really", count=2),
    )
    assert plan.seed is None
    assert FaultPlan.parse(plan.specs()) == plan


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dorp:after=1", "unknown fault kind 'dorp' (did you mean 'drop'?)"),
        ("", "no fault kind"),
        ("drop:", "nothing after ':'"),
        ("drop:aftr=1", "unknown key 'aftr' (did you mean 'after'?)"),
        ("drop:after", "'after' is not key=value"),
        ("drop:after=ten", "after='ten' is not a whole number"),
        ("drop:after=-1", "after must be 0 or more, got -1"),
        ("drop:after=1,after=2", "after given twice"),
        ("drop:after=1,at=2", "give either after or at, not both"),
        ("drop:count=2", "count does not apply to drop"),
        ("drop:duration=2", "duration does not apply to drop"),
        ("delay:after=1", "delay needs duration"),
        ("delay:duration=0", "duration must be more than 0 seconds, got 0.0"),
        ("stall:duration=nan", "duration='nan' is not a finite number of seconds"),
        ("stall:at=soon", "at='soon' is not a number of seconds"),
        ("garble:variant=crc", "variant must be one of checksum, body_length, truncated, got 'crc'"),
        ("duplicate:count=0", "count must be 1 or more, got 0"),
        ("restart:after=3", "after does not apply to restart; use at"),
        ("restart:key_id=k", "key_id does not apply to restart"),
        ("drop:text=bye", "text does not apply to drop"),
        ("drop:endpoint=", "endpoint must be a non-empty string"),
    ],
)
def test_parse_errors_quote_the_spec_and_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        FaultPlan.parse(["stall", spec])
    assert str(info.value).startswith(f"fault spec {spec!r}: ")
    assert message in str(info.value)


def test_parse_wants_a_list_of_specs() -> None:
    with pytest.raises(ConfigError, match="list of strings"):
        FaultPlan.parse("drop")


# --------------------------------------------------------------------------- plans: config


def test_from_config_reads_fault_tables() -> None:
    plan = FaultPlan.from_config(
        [
            {"kind": "drop", "endpoint": "KalshiNR", "after": 10},
            {"kind": "delay", "at": 5, "duration": 0.5, "count": 2},
            {"kind": "garble", "after_messages": 0, "variant": "truncated"},
        ],
        where="gw.toml",
    )
    assert plan.faults == (
        Fault(K.DROP, endpoint="KalshiNR", after_messages=10),
        Fault(K.DELAY, at=5.0, duration=0.5, count=2),
        Fault(K.GARBLE, after_messages=0, variant="truncated"),
    )
    assert isinstance(plan.faults[1].at, float)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"after": 1}, "gw.toml: fault #2: kind is missing"),
        ({"kind": 3}, "gw.toml: fault #2: kind must be a string, got int"),
        ({"kind": "drop", "after": "3"}, "gw.toml: fault #2: after must be a whole number, got str"),
        ({"kind": "drop", "at": True}, "gw.toml: fault #2: at must be a number of seconds, got bool"),
        ({"kind": "reject_logon", "text": 5}, "gw.toml: fault #2: text must be a string, got int"),
        ({"kind": "drop", "after": 1, "after_messages": 2}, "gw.toml: fault #2: after_messages given twice"),
        ({"kind": "drop", "when": 1}, "gw.toml: fault #2: unknown key 'when'"),
        ({"kind": "delay"}, "gw.toml: fault #2: delay needs duration"),
        ("drop", "gw.toml: fault #2: must be a table, got str"),
    ],
)
def test_from_config_errors_name_where_and_which_fault(item: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        FaultPlan.from_config([{"kind": "stall"}, item], where="gw.toml")  # type: ignore[list-item]
    assert str(info.value).startswith(message)


def test_from_config_wants_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"gw.toml: faults must be an array of tables"):
        FaultPlan.from_config({"kind": "drop"}, where="gw.toml")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- plans: random


def test_random_plans_depend_on_the_seed_only() -> None:
    kw = dict(endpoints=["KalshiNR", "KalshiRT"], keys=["k1", "k2"], count=6)
    assert FaultPlan.random(11, **kw) == FaultPlan.random(11, **kw)  # type: ignore[arg-type]
    assert FaultPlan.random(11, **kw) != FaultPlan.random(12, **kw)  # type: ignore[arg-type]
    plan = FaultPlan.random(11, **kw)  # type: ignore[arg-type]
    assert plan.seed == 11 and len(plan) == 6
    assert FaultPlan.parse(plan.specs()).faults == plan.faults


def test_random_plans_are_the_same_in_another_process() -> None:
    # Kind sets iterate in string-hash order, which PYTHONHASHSEED changes between processes.
    code = (
        "from sessions.testing.faults import FaultPlan, FaultKind as K\n"
        "p = FaultPlan.random(5, endpoints=['KalshiNR', 'KalshiRT'], keys=['k'], count=20,"
        " kinds={K.DROP, K.STALL, K.GARBLE, K.DELAY, K.DUPLICATE})\n"
        "print('\\n'.join(p.specs()))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    (text,) = outputs
    assert text.count("\n") == 20


def test_random_plans_respect_kinds_ranges_and_horizon() -> None:
    for seed in range(30):
        plan = FaultPlan.random(
            seed, endpoints=["KalshiNR"], count=10, horizon=30.0, kinds=[K.DELAY, K.RESTART]
        )
        for fault in plan:
            assert fault.kind in (K.DELAY, K.RESTART)
            assert fault.endpoint == "KalshiNR" and fault.key_id is None
            assert fault.at is None or 0 <= fault.at <= 30.0
            if fault.kind is K.DELAY:
                assert fault.duration is not None and 0.05 <= fault.duration <= 5.0
            else:
                assert fault.at is not None and fault.after_messages is None
    with pytest.raises(ConfigError, match="kinds is empty"):
        FaultPlan.random(1, endpoints=["KalshiNR"], kinds=())


# --------------------------------------------------------------------------- matching


def test_matching_by_endpoint_and_key() -> None:
    any_conn = Fault(K.DROP)
    nr_k1 = Fault(K.DROP, endpoint="KalshiNR", key_id="k1")
    assert any_conn.matches("KalshiRT", None)
    assert nr_k1.matches("KalshiNR", "k1")
    assert not nr_k1.matches("KalshiNR", "k2")
    assert not nr_k1.matches("KalshiNR", None)
    assert not nr_k1.matches("KalshiRT", "k1")
    plan = FaultPlan((any_conn, nr_k1, Fault(K.RESTART)))
    assert plan.for_connection("KalshiNR", "k1") == [any_conn, nr_k1, Fault(K.RESTART)]
    assert plan.for_connection("KalshiNR", None) == [any_conn, Fault(K.RESTART)]
    assert plan.for_endpoint("KalshiNR") == [any_conn, nr_k1, Fault(K.RESTART)]
    assert plan.for_endpoint("KalshiRT") == [any_conn, Fault(K.RESTART)]
    assert plan.of_kind(K.RESTART) == [Fault(K.RESTART)]


def test_constructing_a_bad_fault_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="^garble: variant must be one of"):
        Fault(K.GARBLE, variant="bits")
    with pytest.raises(ConfigError, match="^drop: after must be a whole number, got bool"):
        Fault(K.DROP, after_messages=True)
    assert Fault.BYTE_LEVEL == {K.DROP, K.STALL, K.DELAY, K.DUPLICATE, K.GARBLE, K.SLOW_READER}
    assert Fault.BYTE_LEVEL | Fault.SESSION_LEVEL | Fault.GATEWAY_LEVEL == set(FaultKind)


async def test_concurrent_sends_are_refused_like_any_trio_stream(autojump_clock):
    h = Harness([Fault(K.DELAY, duration=1.0)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.stream.send_all, msg(1))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await h.stream.send_all(msg(2))
    await h.stream.send_all(msg(3))
    await h.stream.aclose()
    assert await h.read_all() == msg(1) + msg(3)
    with pytest.raises(trio.ClosedResourceError):
        await h.stream.receive_some()


async def test_drop_on_a_real_tcp_connection_delivers_n_messages_then_eof():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    fault_log = FaultLog()
    async with trio.open_nursery() as nursery:

        async def gateway(accepted: trio.SocketStream) -> None:
            stream = FaultyStream(
                accepted,
                [Fault(K.DROP, after_messages=2)],
                endpoint=EP,
                connection_id=1,
                clock=trio.current_time,
                fault_log=fault_log,
            )
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(msg(1) + msg(2) + msg(3))

        nursery.start_soon(trio.serve_listeners, gateway, listeners)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        received = b""
        while data := await client.receive_some():
            received += data
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert received == msg(1) + msg(2)
    assert len(fault_log.of_kind(K.DROP)) == 1


async def test_a_drop_during_a_stall_ends_it_at_once(autojump_clock):
    h = Harness([Fault(K.STALL, duration=100.0), Fault(K.DROP, at=3.0)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.stream.run_timers)
        with pytest.raises(trio.BrokenResourceError):
            await h.stream.send_all(msg(1))
        assert trio.current_time() == 3.0
    assert await h.read_all() == b""
    assert [(e.time, e.kind) for e in h.fault_log] == [(0.0, K.STALL), (3.0, K.DROP)]
