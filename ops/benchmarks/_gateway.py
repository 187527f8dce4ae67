"""``kalshi-fix gateway`` as the benchmarks run it: ``python -m ops.benchmarks._gateway``.

The same command-line (``--key KEY=PUB.pem --plain``, ``--config FILE`` …), the same setup
(:func:`sessions.testing.cli.build_from_args`) and the same serving loop
(:func:`sessions.testing.cli.serve`: ``ENDPOINT HOST:PORT`` ready lines, SIGTERM stops it), with
two additions the benchmarks need:

* ``--message-cost N`` (default 0): tokens the simulated exchange charges per application
  message. The quick start's accounts are Premier tier, whose write bucket allows 100 orders/s
  (REFERENCE §10.1); at the benchmark's 1,000 orders/s the gateway would answer with rate-limit
  rejects and the figures would describe the rate limiter, not the stack. Cost 0 still runs the
  bucket code for every order — it just never runs dry.
* ``--preload-fills N --preload-key KEY``: before serving, KEY's account gets N executions —
  N one-lot IOC buys against N lots of resting liquidity, entered straight into the exchange
  model while KEY has no connection (so none of the reports reaches any session: they are the
  executions a client missed). Prints ``PRELOADED <executions of the account>`` before the
  endpoint lines.

Profiling: with ``KALSHI_GATEWAY_PROFILE=PATH`` in the environment the gateway runs under
:mod:`cProfile` and writes its statistics to PATH when it exits (``python -m pstats PATH``), so
the gateway's share of a benchmark can be looked into without changing the benchmark.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
from collections.abc import Callable, Sequence

import attrs
import trio

from sessions.errors import ConfigError, KeyLoadError
from sessions.message import FixMessage
from sessions.testing import cli as gateway_cli
from sessions.testing.exchange import NR, LogonFlags
from sessions.testing.gateway import Gateway

__all__ = ["main"]

# The preload trades here (below the quick start's 60/62 offers, above its 40/38 bids, so the
# IOC buys match only the preloaded liquidity).
_PRELOAD_PRICE_CENTS = 50


@attrs.frozen
class _PreloadedSetup(gateway_cli.GatewaySetup):
    """A gateway setup whose exchange gets ``fills`` executions for ``key`` before serving."""

    fills: int = 0
    key: str | None = None
    ticker: str | None = None

    def build(self, clock: Callable[[], float] | None = None) -> Gateway:
        gateway = super().build(clock)
        if self.fills and self.key is not None:
            count = _preload(gateway, self.key, self.ticker, self.fills)
            print(f"PRELOADED {count}", flush=True)
        return gateway


def _preload(gateway: Gateway, key_id: str, ticker: str | None, fills: int) -> int:
    """Trade ``fills`` one-lot IOC buys for ``key_id``; return its account's execution count."""
    api_key = gateway.keys.get(key_id)
    if api_key is None:
        raise ConfigError(f"--preload-key {key_id}: no such key is registered")
    if ticker is None:
        raise ConfigError("--preload-fills needs --preload-ticker (a listed market)")
    ex = gateway.exchange
    now = gateway.clock()
    ex.add_liquidity(ticker, "sell", _PRELOAD_PRICE_CENTS, fills, now=now)
    ex.connect(key_id, NR, LogonFlags(), now=now)
    price = str(_PRELOAD_PRICE_CENTS).encode()
    symbol = ticker.encode()
    for i in range(fills):
        order = FixMessage()
        order.pairs = [
            (35, b"D"), (11, f"preload-{i}".encode()), (38, b"1"), (40, b"2"), (44, price),
            (54, b"1"), (55, symbol), (59, b"3"),
        ]
        ex.handle(key_id, order, i + 2, now)
    ex.disconnect(key_id, now)
    return len(ex.ground_truth(api_key.account_id))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: bad configuration)."""
    parser = argparse.ArgumentParser(
        prog="python -m ops.benchmarks._gateway",
        description="The simulated Kalshi gateway for the benchmarks (see the module docstring).",
    )
    gateway_cli.add_arguments(parser)
    parser.add_argument("--message-cost", type=int, default=0, metavar="TOKENS",
                        help="tokens charged per application message (default 0: no rate limit)")
    parser.add_argument("--preload-fills", type=int, default=0, metavar="N",
                        help="executions to give the --preload-key's account before serving")
    parser.add_argument("--preload-key", metavar="KEY_ID", help="the key whose account trades")
    parser.add_argument("--preload-ticker", metavar="TICKER", help="market of the preload")
    args = parser.parse_args(argv)
    try:
        setup = gateway_cli.build_from_args(args)
        exchange = attrs.evolve(setup.config.exchange, message_cost=args.message_cost)
        config = attrs.evolve(setup.config, exchange=exchange)
        fields = {f.name: getattr(setup, f.name) for f in attrs.fields(gateway_cli.GatewaySetup)}
        fields["config"] = config
        preloaded = _PreloadedSetup(
            **fields, fills=args.preload_fills, key=args.preload_key, ticker=args.preload_ticker
        )
        return trio.run(
            lambda: gateway_cli.serve(preloaded, out=sys.stdout, err=sys.stderr)
        )
    except (ConfigError, KeyLoadError) as exc:
        print(f"benchmark gateway: {exc}", file=sys.stderr)
        return 2


def _profiled_main() -> int:
    """:func:`main`, under :mod:`cProfile` when ``KALSHI_GATEWAY_PROFILE`` names a file."""
    path = os.environ.get("KALSHI_GATEWAY_PROFILE")
    if not path:
        return main()
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(main)
    finally:
        profiler.dump_stats(path)


if __name__ == "__main__":
    sys.exit(_profiled_main())
