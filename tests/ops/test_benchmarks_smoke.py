"""Smoke tests of the stack benchmarks: each runs in a tiny configuration (seconds) with its real
helper processes, and must print its figures under the expected names and units with positive
values. Speed is never asserted here; ``bash ops/bench`` reports it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from ops.benchmarks import BENCHMARKS, Figure, format_figure
from ops.benchmarks import floor, reconcile, roundtrip, rss
from ops.benchmarks._procs import ROOT

TINY_LOAD = dict(orders=40, rate=1000.0, throughput_orders=60, window=10, warmup=10)


def printed(figures: list[Figure]) -> dict[str, tuple[float, str]]:
    """What ``bash ops/bench`` would print, read back: name → (value, unit)."""
    out: dict[str, tuple[float, str]] = {}
    for figure in figures:
        name, value, unit = format_figure(figure).split(" ")
        assert name not in out, f"{name} printed twice"
        out[name] = (float(value), unit)
    return out


def assert_figures(got: dict[str, tuple[float, str]], expected: dict[str, str]) -> None:
    for name, unit in expected.items():
        assert name in got, f"{name} missing from {sorted(got)}"
        value, got_unit = got[name]
        assert got_unit == unit, f"{name}: unit {got_unit}, expected {unit}"
        assert value > 0 and math.isfinite(value), f"{name} = {value}"


def test_the_benchmarks_are_registered_roundtrip_before_floor() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "ops.benchmarks", "--list"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    assert listed == list(BENCHMARKS)
    for name in ("roundtrip", "floor", "reconcile", "rss"):
        assert name in listed
    assert listed.index("roundtrip") < listed.index("floor")


def test_roundtrip_reports_the_stack_the_core_and_their_ratios_and_floor_prints_the_same_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(floor, "last_result", None)
    got = printed(list(roundtrip.run(**TINY_LOAD)))
    assert_figures(got, {
        "roundtrip_p50_us": "us",
        "roundtrip_p99_us": "us",
        "orders_per_s": "orders/s",
        "roundtrip_vs_floor_p50": "x",
        "orders_vs_floor": "x",
        "roundtrip_client_cpu_us": "us/order",
        "core_roundtrip_p50_us": "us",
        "core_vs_floor_p50": "x",
        "core_orders_per_s": "orders/s",
        "core_orders_vs_floor": "x",
    })
    # The core-only link's figures come after the stack's, which keep their order.
    core_names = [
        "core_roundtrip_p50_us", "core_vs_floor_p50", "core_orders_per_s", "core_orders_vs_floor",
    ]
    assert list(got)[-4:] == core_names
    assert list(got)[:5] == [
        "roundtrip_p50_us", "roundtrip_p99_us", "orders_per_s", "roundtrip_vs_floor_p50",
        "orders_vs_floor",
    ]
    assert got["roundtrip_p99_us"][0] >= got["roundtrip_p50_us"][0]
    same_run = floor.last_result
    assert same_run is not None
    # The real messages crossed the wire: an order and its report have their FIX sizes.
    assert same_run.request_size > 100 and same_run.response_size > 100
    floor_figures = printed(list(floor.run()))
    assert_figures(floor_figures, {
        "floor_p50_us": "us", "floor_p99_us": "us", "floor_msgs_per_s": "msg/s",
    })
    assert floor.last_result is same_run  # printed, not measured again
    ratio = got["roundtrip_vs_floor_p50"][0]
    expected = got["roundtrip_p50_us"][0] / floor_figures["floor_p50_us"][0]
    assert ratio == pytest.approx(expected, rel=0.02)
    # The core-only link is measured against the same floor measurement.
    core_ratio = got["core_vs_floor_p50"][0]
    expected = got["core_roundtrip_p50_us"][0] / floor_figures["floor_p50_us"][0]
    assert core_ratio == pytest.approx(expected, rel=0.02)
    core_rate_ratio = got["core_orders_vs_floor"][0]
    expected = got["core_orders_per_s"][0] / floor_figures["floor_msgs_per_s"][0]
    assert core_rate_ratio == pytest.approx(expected, rel=0.02)


def test_floor_alone_measures_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(floor, "last_result", None)
    got = printed(list(floor.run(**TINY_LOAD)))
    assert_figures(got, {
        "floor_p50_us": "us", "floor_p99_us": "us", "floor_msgs_per_s": "msg/s",
    })
    assert floor.last_result is not None
    assert len(floor.last_result.paced.latencies_ns) == TINY_LOAD["orders"]
    assert len(floor.last_result.windowed.latencies_ns) == TINY_LOAD["throughput_orders"]


def test_reconcile_recovers_and_delivers_every_missed_execution() -> None:
    # The benchmark raises unless the application received exactly the preloaded executions.
    got = printed(list(reconcile.run(executions=120)))
    assert_figures(got, {
        "reconcile_120_s": "s",
        "reconcile_first_report_s": "s",
        "reconcile_receive_s": "s",
        "reconcile_release_s": "s",
        "reconcile_deliver_s": "s",
    })
    parts = sum(got[n][0] for n in got if n != "reconcile_120_s")
    assert parts == pytest.approx(got["reconcile_120_s"][0], rel=0.05, abs=0.01)


def test_rss_reports_the_clients_memory() -> None:
    got = printed(list(rss.run(messages=3000)))
    # Growth may be zero or negative (memory returned); it is a percentage, not a speed.
    assert "rss_growth_pct" in got and got["rss_growth_pct"][1] == "%"
    assert math.isfinite(got["rss_growth_pct"][0])
    assert_figures(got, {"rss_end_mib": "MiB", "rss_inbound_msgs_per_s": "msg/s"})
    assert got["rss_end_mib"][0] > 5  # a Python process with trio and the session loaded


def test_core_reports_receive_and_send_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from ops.benchmarks import core

    monkeypatch.setattr(core, "ROUNDS", 1)
    monkeypatch.setattr(core, "PER_ROUND", 50)
    got = printed(list(core.run()))
    assert_figures(got, {"core_receive_us": "us/msg", "core_send_us": "us/msg"})
