"""Client memory over 1,000,000 inbound messages: does a long-running session leak?

Two helper processes: a gateway-like peer (:mod:`ops.benchmarks._rss_peer`) that answers the
Logon and then writes ExecutionReports (acknowledgements and fills with Kalshi's full field
set, each with its own ClOrdID and ExecID; a Heartbeat after every 100) as fast as TCP takes
them, and the client (:mod:`ops.benchmarks._rss_client`): a KalshiNR session through
:func:`sessions.driver.connect_session` with its durable SQLite store, whose application takes
every event. The client runs in a fresh process so its resident set holds only the session
(the benchmark runner's own memory — other benchmarks, the codec comparison's simplefix — would
dilute the percentage).

* ``rss_growth_pct`` (target ≤ 10 %): resident set growth from the warm-up point (10 % of the
  reports received, after a garbage collection) to the end (all received, after a garbage
  collection), as a percentage of the warm-up value;
* ``rss_end_mib``: the resident set at the end; ``rss_inbound_msgs_per_s``: reports received per
  second after the warm-up (the client is the slower side).

The count is 1,000,000 under ``bash ops/bench``; ``run(messages=...)`` takes a smaller one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import trio

from sessions.testing.keys import make_test_key

from . import Figure
from ._procs import BenchmarkError, address, python_module, spawn

__all__ = ["run"]

MESSAGES = 1_000_000
#: Fraction of the messages received before the first sample.
WARMUP_FRACTION = 0.1
_MIB = 1024 * 1024
_EXIT_TIMEOUT = 30.0


async def _measure(messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kalshi-bench-rss-") as tmp_name:
        tmp = Path(tmp_name)
        key = make_test_key("bench-rss", tmp / "keys")
        peer_args = python_module("ops.benchmarks._rss_peer", "--messages", str(messages))
        async with spawn(peer_args, ["PEER"]) as peer:
            host, port = address(peer.ready["PEER"])
            client_args = python_module(
                "ops.benchmarks._rss_client", "--host", host, "--port", str(port),
                "--messages", str(messages),
                "--warmup", str(max(1, int(messages * WARMUP_FRACTION))),
                "--key-id", key.key_id, "--private-key", str(key.private_key_path),
                "--store-dir", str(tmp / "store"),
            )
            want = ["RSS_WARM", "RSS_END", "RSS_PEAK", "SECONDS"]
            # Generous: a loaded two-core machine takes ~100 s for the million.
            async with spawn(client_args, want, timeout=120 + messages / 2000) as client:
                try:
                    figures = {k: float(client.ready[k]) for k in want}
                except ValueError:
                    raise BenchmarkError(
                        f"the RSS client printed unreadable figures {client.ready!r}"
                    ) from None
                # It logs out and exits by itself; a failure there makes the figures suspect.
                with trio.move_on_after(_EXIT_TIMEOUT):
                    await client.process.wait()
                if client.process.returncode != 0:
                    raise BenchmarkError(
                        f"the RSS client did not end cleanly (exit code "
                        f"{client.process.returncode}); its stderr:\n{client.stderr_tail()}"
                    )
                return figures


def run(*, messages: int = MESSAGES) -> Iterable[Figure]:
    """RSS growth of a client session over ``messages`` inbound ExecutionReports."""
    if messages < 10:
        raise BenchmarkError(f"the RSS benchmark needs at least 10 messages, got {messages}")
    r = trio.run(_measure, messages)
    if r["RSS_WARM"] <= 0:
        raise BenchmarkError("the RSS client could not read its resident set size")
    yield ("rss_growth_pct", 100.0 * (r["RSS_END"] - r["RSS_WARM"]) / r["RSS_WARM"], "%")
    yield ("rss_end_mib", r["RSS_END"] / _MIB, "MiB")
    yield ("rss_inbound_msgs_per_s", messages * (1 - WARMUP_FRACTION) / r["SECONDS"], "msg/s")
