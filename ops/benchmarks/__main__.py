"""Run the benchmarks: ``python -m ops.benchmarks [name ...]``; prints ``name value unit`` lines.

Without arguments every benchmark in :data:`ops.benchmarks.BENCHMARKS` runs; with names, only
those. ``--list`` prints the available names.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import BENCHMARKS, format_figure


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m ops.benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=f"one of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; available: {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"{__package__}.{name}")
        for figure in module.run():
            name_, _value, unit = figure
            if not name_ or " " in name_ or " " in unit:
                raise ValueError(f"benchmark {name} produced a malformed figure {figure!r}")
            print(format_figure(figure), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
