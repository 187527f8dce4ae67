"""ExecId: parsing, wire form, ordering within one exchange index only (REFERENCE §4.7, §11 #10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions.errors import KalshiFixError
from supervisor.execid import PENDING, ExecId, ExecIdError


def test_parse_index_zero_two_parts() -> None:
    e = ExecId.parse("4;7")
    assert (e.clock, e.event, e.index) == (4, 7, 0)
    assert str(e) == "4;7"
    assert not e.is_pending


def test_parse_three_parts_and_bytes() -> None:
    e = ExecId.parse(b"12345;67890;2")
    assert (e.clock, e.event, e.index) == (12345, 67890, 2)
    assert str(e) == "12345;67890;2"


def test_explicit_index_zero_normalises_to_two_parts() -> None:
    e = ExecId.parse("4;7;0")
    assert e == ExecId.parse("4;7")
    assert str(e) == "4;7"
    assert hash(e) == hash(ExecId.parse("4;7"))


def test_pending_placeholder() -> None:
    p = ExecId.parse("-1;-1")
    assert p == PENDING
    assert p.is_pending
    assert str(p) == "-1;-1"


@pytest.mark.parametrize(
    "bad",
    ["", "4", "4;", ";7", "4;7;", "4;7;1;2", "a;b", "4; 7", " 4;7", "+4;7", "-2;-1", "-1;5",
     "4;-7", "4.0;7", "4;7;-1", "4;7\n", "١;٢"],
)
def test_malformed_values_raise_a_value_error_naming_them(bad: str) -> None:
    with pytest.raises(ExecIdError) as info:
        ExecId.parse(bad)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, KalshiFixError)
    assert repr(bad) in str(info.value)


def test_non_string_is_refused() -> None:
    with pytest.raises(ExecIdError):
        ExecId.parse(47)  # type: ignore[arg-type]


def test_constructor_validates() -> None:
    with pytest.raises(ExecIdError):
        ExecId(-3, 1)
    with pytest.raises(ExecIdError):
        ExecId(1, 1, -1)
    with pytest.raises(ExecIdError):
        ExecId("1", 2)  # type: ignore[arg-type]


def test_ordering_is_numeric_not_lexicographic() -> None:
    assert ExecId.parse("9;1") < ExecId.parse("10;0")
    assert ExecId.parse("4;9") < ExecId.parse("4;10")
    assert ExecId.parse("4;10") >= ExecId.parse("4;10")
    assert max([ExecId.parse("4;10;1"), ExecId.parse("10;2;1"), ExecId.parse("9;99;1")]) == (
        ExecId.parse("10;2;1")
    )


def test_comparison_across_indexes_raises_type_error() -> None:
    a, b = ExecId.parse("4;7"), ExecId.parse("4;8;1")
    for op in (lambda: a < b, lambda: a <= b, lambda: a > b, lambda: a >= b):
        with pytest.raises(TypeError, match="exchange index"):
            op()
    assert a != b  # equality is fine across indexes


def test_pending_is_never_ordered() -> None:
    with pytest.raises(TypeError, match="pending"):
        _ = PENDING < ExecId.parse("0;0")


def test_comparison_with_other_types_is_type_error() -> None:
    with pytest.raises(TypeError):
        _ = ExecId.parse("1;1") < (1, 1)  # type: ignore[operator]


def test_frozen() -> None:
    e = ExecId.parse("1;2")
    with pytest.raises(AttributeError):
        e.clock = 5  # type: ignore[misc]


@given(
    st.integers(min_value=0, max_value=10**20),
    st.integers(min_value=0, max_value=10**20),
    st.integers(min_value=0, max_value=64),
)
def test_round_trip(clock: int, event: int, index: int) -> None:
    e = ExecId(clock, event, index)
    assert ExecId.parse(str(e)) == e
    assert ExecId.parse(str(e).encode()) == e


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=20),
    st.integers(0, 3),
)
def test_sorting_matches_integer_tuples(pairs: list[tuple[int, int]], index: int) -> None:
    ids = [ExecId(c, e, index) for c, e in pairs]
    assert [i.key for i in sorted(ids)] == sorted(pairs)


def test_repeated_parses_share_one_value_and_errors_are_never_remembered() -> None:
    first = ExecId.parse(b"77;5;3")
    assert ExecId.parse(b"77;5;3") is first  # the ledger, tracker and reconciliation share it
    assert ExecId.parse(bytearray(b"77;5;3")) == first  # unhashable input still parses
    for _ in range(2):
        with pytest.raises(ExecIdError, match="not a Kalshi ExecID"):
            ExecId.parse(b"77;x")


def answer(value: object) -> object:
    """What the parser makes of ``value``: the ExecId, or "refused"."""
    try:
        return ExecId._parse(value)  # type: ignore[arg-type]
    except ExecIdError:
        return "refused"


@pytest.mark.parametrize(
    "wire",
    [b"1;2", b"01;2", b"1;2;0", b"1;2;3", b"-1;-1", b"-1;-1;2", b"1;", b";1", b"1;2;", b"1;2;3;4",
     b" 1;2", b"1;2 ", b"+1;2", b"1;-2", b"1;2;-3", b"\xd9\xa1;2", b"1", b"", b"1;;2"],
)
def test_bytes_take_the_short_path_with_the_same_answers(wire: bytes) -> None:
    """Plain bytes skip the decode and the pattern; every answer equals the general path's
    (the one str and bytearray take)."""
    assert answer(wire) == answer(bytearray(wire))


@given(st.binary(max_size=12).map(lambda b: bytes(b"0123456789;-+ "[x % 14] for x in b)))
def test_any_wire_spelling_gets_the_same_answer_on_both_paths(wire: bytes) -> None:
    assert answer(wire) == answer(bytearray(wire))
