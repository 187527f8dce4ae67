"""Benchmarks, run with ``python -m ops.benchmarks [name ...]`` (or ``bash ops/bench``).

Each benchmark is a module with ``run() -> Iterable[tuple[str, float, str]]`` that yields
``(name, value, unit)`` figures; :data:`BENCHMARKS` lists them in the order they run. To add one,
write ``ops/benchmarks/<name>.py`` with a ``run()`` and add its name here.
"""

from __future__ import annotations

#: Benchmark module names (in this package), in run order.
# roundtrip before floor: it measures the floor in the same run, and floor prints that one.
BENCHMARKS: tuple[str, ...] = ("codec", "core", "roundtrip", "floor", "reconcile", "rss")

Figure = tuple[str, float, str]
"""One measured figure: ``(name, value, unit)``, printed as ``name value unit``."""

__all__ = ["BENCHMARKS", "Figure", "format_figure"]


def format_figure(figure: Figure) -> str:
    """``name value unit`` with a readable number: integers for rates, 2 decimals for ratios."""
    name, value, unit = figure
    if abs(value) >= 100 or float(value).is_integer():
        text = f"{value:.0f}"
    else:
        text = f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"
    return f"{name} {text} {unit}"

