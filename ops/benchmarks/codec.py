"""Codec throughput against simplefix, measured in the same run on the same messages.

Parse: feed one message's bytes, take one message out (``StreamDecoder.feed`` + ``next_message``
against ``FixParser.append_buffer`` + ``get_message``), cycling through one order's traffic: the
NewOrderSingle and its two ExecutionReports (ack and fill) with Kalshi's full field set. Parse stream: the same, but 20 messages per fed chunk, drained. Encode:
``encode_message`` from ready pairs against a prepared ``simplefix.FixMessage.encode()``.

Each side is timed in short interleaved rounds and the best round counts, so load on the machine
hits both sides alike; the garbage collector is paused inside a round (as ``timeit`` does).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable

import simplefix

from sessions.codec import StreamDecoder, decode, encode_message
from sessions.message import FixMessage

ROUNDS = 15
ROUND_SECONDS = 0.08
STREAM_CHUNK_MESSAGES = 20

BEGIN_STRING = b"FIXT.1.1"

# One order's round trip as it crosses the codec: the NewOrderSingle the gateway parses, and the
# two ExecutionReports the client parses for it (the acknowledgement, then the fill). The reports
# carry every field Kalshi puts on them (REFERENCE §4.7): on a fill that includes the position,
# trade-match, fee and collateral groups, which is why a fill is the longest message on the wire.
EXEC_REPORT_HEADER: list[tuple[int, bytes]] = [
    (49, b"KalshiNR"),
    (56, b"6b1c9d1e-2f3a-4b5c-8d7e-9f0a1b2c3d4e"),
    (34, b"18342"),
    (52, b"20260825-14:03:27.512"),
]
ACK_REPORT_BODY: list[tuple[int, bytes]] = [
    (37, b"a3f7c2d1-88e0-4b6f-9a51-0c7e2b4d6f18"),
    (11, b"7c2d0e2f-3a4b-4c5d-9e8f-0a1b2c3d4e5f"),
    (17, b"4821;16"),
    (150, b"0"),
    (39, b"0"),
    (54, b"1"),
    (55, b"KXHIGHNY-26AUG25-B85.5"),
    (38, b"100.00"),
    (44, b"56"),
    (14, b"0.00"),
    (151, b"100.00"),
    (6, b"0"),
    (60, b"20260825-14:03:27.509"),
    (30, b"0"),
]
EXEC_REPORT_BODY: list[tuple[int, bytes]] = [
    (37, b"a3f7c2d1-88e0-4b6f-9a51-0c7e2b4d6f18"),
    (11, b"7c2d0e2f-3a4b-4c5d-9e8f-0a1b2c3d4e5f"),
    (17, b"4821;17"),
    (150, b"F"),
    (39, b"1"),
    (54, b"1"),
    (55, b"KXHIGHNY-26AUG25-B85.5"),
    (38, b"100.00"),
    (44, b"56"),
    (14, b"25.00"),
    (151, b"75.00"),
    (6, b"56"),
    (31, b"56"),
    (32, b"25.00"),
    (60, b"20260825-14:03:27.509"),
    (30, b"0"),
    (704, b"25.00"),
    (705, b"0.00"),
    (880, b"23a7711a-8133-4876-b7eb-dcd9e87a1613"),
    (1057, b"Y"),
    (136, b"1"),
    (137, b"0.43"),
    (138, b"USD"),
    (139, b"4"),
    (891, b"0"),
    (1703, b"1"),
    (1704, b"-14.43"),
    (1705, b"BALANCE"),
]
NEW_ORDER_HEADER: list[tuple[int, bytes]] = [
    (49, b"6b1c9d1e-2f3a-4b5c-8d7e-9f0a1b2c3d4e"),
    (56, b"KalshiNR"),
    (34, b"20417"),
    (52, b"20260825-14:03:27.488"),
]
NEW_ORDER_BODY: list[tuple[int, bytes]] = [
    (11, b"7c2d0e2f-3a4b-4c5d-9e8f-0a1b2c3d4e5f"),
    (55, b"KXHIGHNY-26AUG25-B85.5"),
    (54, b"1"),
    (38, b"100"),
    (40, b"2"),
    (44, b"56"),
    (59, b"1"),
]

# (msg_type, header, body) for each benchmark message.
MESSAGES = [
    (b"8", EXEC_REPORT_HEADER, EXEC_REPORT_BODY),
    (b"D", NEW_ORDER_HEADER, NEW_ORDER_BODY),
    (b"8", EXEC_REPORT_HEADER, ACK_REPORT_BODY),
]


def _simplefix_message(
    msg_type: bytes, header: list[tuple[int, bytes]], body: list[tuple[int, bytes]]
) -> simplefix.FixMessage:
    m = simplefix.FixMessage()
    m.append_pair(8, BEGIN_STRING)
    m.append_pair(35, msg_type)
    for tag, value in [*header, *body]:
        m.append_pair(tag, value)
    return m


Loop = Callable[[], None]


def _best_rate(make_loop: Callable[[int], Loop], per_loop: int) -> Callable[[], float]:
    """A round runner: times one round and returns the best msgs/s seen so far."""
    # Calibrate the loop count so a round lasts about ROUND_SECONDS.
    n = 16
    while True:
        loop = make_loop(n)
        t0 = time.perf_counter()
        loop()
        elapsed = time.perf_counter() - t0
        if elapsed >= ROUND_SECONDS / 4 or n >= 1 << 22:
            break
        n *= 4
    n = max(1, int(n * ROUND_SECONDS / max(elapsed, 1e-9)))
    loop = make_loop(n)
    best = 0.0

    def one_round() -> float:
        nonlocal best
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            loop()
            elapsed = time.perf_counter() - t0
        finally:
            if was_enabled:
                gc.enable()
        best = max(best, n * per_loop / elapsed)
        return best

    return one_round


def _parse_ours(wires: list[bytes]) -> Callable[[int], Callable[[], None]]:
    def make(n: int) -> Callable[[], None]:
        stream = wires * n

        def loop() -> None:
            decoder = StreamDecoder()
            feed = decoder.feed
            next_message = decoder.next_message
            for data in stream:
                feed(data)
                next_message()

        return loop

    return make


def _parse_simplefix(wires: list[bytes]) -> Callable[[int], Callable[[], None]]:
    def make(n: int) -> Callable[[], None]:
        stream = wires * n

        def loop() -> None:
            parser = simplefix.FixParser()
            append_buffer = parser.append_buffer
            get_message = parser.get_message
            for data in stream:
                append_buffer(data)
                get_message()

        return loop

    return make


def _parse_ours_stream(chunk: bytes) -> Callable[[int], Callable[[], None]]:
    def make(n: int) -> Callable[[], None]:
        def loop() -> None:
            decoder = StreamDecoder()
            for _ in range(n):
                decoder.feed(chunk)
                for _msg in decoder:
                    pass

        return loop

    return make


def _parse_simplefix_stream(chunk: bytes) -> Callable[[int], Callable[[], None]]:
    def make(n: int) -> Callable[[], None]:
        def loop() -> None:
            parser = simplefix.FixParser()
            for _ in range(n):
                parser.append_buffer(chunk)
                while parser.get_message() is not None:
                    pass

        return loop

    return make


def _encode_ours() -> Callable[[int], Callable[[], None]]:
    def make(n: int) -> Callable[[], None]:
        work = MESSAGES * n

        def loop() -> None:
            for msg_type, header, body in work:
                encode_message(msg_type, header, body)

        return loop

    return make


def _encode_simplefix(messages: list[simplefix.FixMessage]) -> Callable[[int], Callable[[], None]]:
    def make(n: int) -> Callable[[], None]:
        work = messages * n

        def loop() -> None:
            for m in work:
                m.encode()

        return loop

    return make


def _check_same_results(wires: list[bytes], sf_messages: list[simplefix.FixMessage]) -> None:
    """Refuse to report figures unless both libraries produce the same bytes and pairs."""
    for wire, sf_msg in zip(wires, sf_messages):
        if sf_msg.encode() != wire:
            raise RuntimeError(f"encoders disagree:\n{sf_msg.encode()!r}\n{wire!r}")
        parser = simplefix.FixParser()
        parser.append_buffer(wire)
        theirs = FixMessage.from_simplefix(parser.get_message())
        if decode(wire) != theirs:
            raise RuntimeError(f"decoders disagree on {wire!r}")


def run() -> Iterable[tuple[str, float, str]]:
    """Parse and encode rates for us and simplefix, and their ratios."""
    wires = [encode_message(t, h, b, BEGIN_STRING) for t, h, b in MESSAGES]
    sf_messages = [_simplefix_message(t, h, b) for t, h, b in MESSAGES]
    _check_same_results(wires, sf_messages)
    per = len(wires)
    # Several messages per received chunk, as a busy connection delivers them.
    in_chunk = per * (STREAM_CHUNK_MESSAGES // per)
    chunk = b"".join(wires * (STREAM_CHUNK_MESSAGES // per))
    sides = {
        "parse": _best_rate(_parse_ours(wires), per),
        "parse_simplefix": _best_rate(_parse_simplefix(wires), per),
        "parse_stream": _best_rate(_parse_ours_stream(chunk), in_chunk),
        "parse_stream_simplefix": _best_rate(_parse_simplefix_stream(chunk), in_chunk),
        "encode": _best_rate(_encode_ours(), per),
        "encode_simplefix": _best_rate(_encode_simplefix(sf_messages), per),
    }
    rates = dict.fromkeys(sides, 0.0)
    for _ in range(ROUNDS):
        for name, one_round in sides.items():
            rates[name] = one_round()
    yield ("codec_exec_report_bytes", float(len(wires[0])), "B")
    yield ("codec_new_order_bytes", float(len(wires[1])), "B")
    yield ("codec_ack_report_bytes", float(len(wires[2])), "B")
    for kind in ("parse", "parse_stream", "encode"):
        yield (f"{kind}_msgs_per_s", rates[kind], "msg/s")
        yield (f"{kind}_simplefix_msgs_per_s", rates[f"{kind}_simplefix"], "msg/s")
        yield (f"{kind}_vs_simplefix", rates[kind] / rates[f"{kind}_simplefix"], "x")
