"""Record framing shared by the offer log and the request log: data round-trips; reading stops
at a torn record, at a record of another owner (seed), and at a payload that would load a class."""

from __future__ import annotations

import pickle
import struct
import zlib
from decimal import Decimal
from pathlib import Path

from supervisor.records import frame, read_frames, replace_file

SEED = zlib.crc32(b"owner")


def test_records_round_trip_in_order() -> None:
    data = [("a", b"\x01x", 1.5, None, ((1, b"y"),)), [1, 2, 3]]
    buffer = b"".join(frame(d, SEED) for d in data)
    assert list(read_frames(buffer, SEED)) == [data[0], [1, 2, 3]]


def test_reading_stops_at_a_torn_or_foreign_record() -> None:
    first, second = frame(("a",), SEED), frame(("b",), SEED)
    assert list(read_frames(first + second[:-1], SEED)) == [("a",)]
    assert list(read_frames(first + second, zlib.crc32(b"someone else"))) == []
    assert list(read_frames(first + b"\x00" * 3, SEED)) == [("a",)]


def test_a_payload_that_would_load_a_class_is_not_loaded() -> None:
    payload = pickle.dumps(Decimal("1.5"), protocol=4)  # needs decimal.Decimal: refused
    planted = struct.pack("<II", len(payload), zlib.crc32(payload, SEED)) + payload
    assert list(read_frames(frame(("ok",), SEED) + planted + frame(("after",), SEED), SEED)) == [
        ("ok",)
    ]


def test_replace_file_swaps_the_whole_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    replace_file(path, b"old")
    replace_file(path, b"new contents", mode=0o600)
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
