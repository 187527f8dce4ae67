"""Exponential backoff with proportional (downward) jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions.errors import ConfigError
from supervisor.backoff import Backoff, BackoffCounter


def test_base_schedule_doubles_up_to_the_cap() -> None:
    b = Backoff(minimum=1, maximum=60, multiplier=2, jitter=0.2)
    assert [b.base_delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_without_jitter_the_delay_is_the_base_delay() -> None:
    b = Backoff(minimum=0.5, maximum=10, multiplier=3, jitter=0)
    rng = random.Random(1)
    assert [b.delay(n, rng) for n in range(4)] == [0.5, 1.5, 4.5, 10]


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    seed=st.integers(min_value=0, max_value=2**32),
    minimum=st.floats(min_value=0.01, max_value=30),
    spread=st.floats(min_value=1, max_value=100),
    multiplier=st.floats(min_value=1, max_value=10),
    jitter=st.floats(min_value=0, max_value=0.99),
)
def test_delay_stays_within_the_jitter_band_and_never_exceeds_the_maximum(
    attempt: int, seed: int, minimum: float, spread: float, multiplier: float, jitter: float
) -> None:
    b = Backoff(minimum=minimum, maximum=minimum * spread, multiplier=multiplier, jitter=jitter)
    base = b.base_delay(attempt)
    d = b.delay(attempt, random.Random(seed))
    assert base * (1 - jitter) <= d <= base <= b.maximum
    assert d >= b.minimum * (1 - jitter)


def test_delay_is_deterministic_given_the_rng_and_draws_one_number() -> None:
    b = Backoff()
    first = [b.delay(n, random.Random(42)) for n in range(10)]
    again = [b.delay(n, random.Random(42)) for n in range(10)]
    assert first == again
    rng, twin = random.Random(7), random.Random(7)
    b.delay(3, rng)
    twin.random()
    assert rng.random() == twin.random()


def test_jitter_spreads_sessions_that_reached_the_cap() -> None:
    b = Backoff(minimum=1, maximum=60, jitter=0.2)
    rng = random.Random(3)
    delays = {b.delay(100, rng) for _ in range(50)}
    assert len(delays) == 50
    assert min(delays) >= 48.0 and max(delays) <= 60.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    b = Backoff(minimum=1, maximum=60, multiplier=10)
    assert b.base_delay(10**6) == 60.0


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().base_delay(-1)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"minimum": 0}, "minimum must be a positive"),
        ({"minimum": 5, "maximum": 2}, "maximum must be >= the minimum (5)"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"jitter": 1.0}, "jitter must be a fraction"),
        ({"jitter": -0.1}, "jitter must be a fraction"),
    ],
)
def test_invalid_parameters_raise_config_error(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Backoff(**kwargs)
    assert words in str(info.value)


def test_counter_advances_and_reset_starts_over() -> None:
    counter = BackoffCounter(Backoff(minimum=1, maximum=8, jitter=0), random.Random(0))
    assert [counter.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    assert counter.attempt == 5
    counter.reset()
    assert counter.attempt == 0
    assert counter.next_delay() == 1
