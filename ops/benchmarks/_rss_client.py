"""The RSS benchmark's client, in a fresh process so nothing else lives in its memory:
``python -m ops.benchmarks._rss_client --host H --port P --messages N --key-id K --private-key F``.

One KalshiNR session as an application would run it (:func:`sessions.driver.connect_session`,
its durable SQLite sequence store in ``--store-dir``) receives ``N`` ExecutionReports from
:mod:`ops.benchmarks._rss_peer`; the application takes every event off the session. The
resident set size (``/proc/self/statm``) is sampled after a garbage collection at the warm-up
point (``--warmup`` reports in) and after the last report, then the session logs out. Prints
``RSS_WARM <bytes>``, ``RSS_END <bytes>``, ``RSS_PEAK <bytes>`` (``ru_maxrss``) and
``SECONDS <receive time after the warm-up>``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from sessions.config import SessionConfig
from sessions.driver import connect_session
from sessions.events import ApplicationMessage, SessionEnded
from sessions.profiles import get_profile
from sessions.signature import LogonSigner

__all__ = ["main", "resident_bytes"]


def resident_bytes() -> int:
    """This process's resident set size now, in bytes."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc: the peak is the best available
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sample() -> int:
    gc.collect()
    return resident_bytes()


async def _run(args: argparse.Namespace) -> None:
    config = SessionConfig(
        name="rss", profile=get_profile("KalshiNR"), host=args.host, port=args.port,
        key_id=args.key_id, private_key=Path(args.private_key), tls=False,
        store_dir=Path(args.store_dir),
    )
    signer = LogonSigner.from_pem_file(config.private_key, config.key_id, None)
    async with connect_session(config, signer=signer) as session:
        await session.wait_logged_on()
        received = 0
        warm = end = 0
        t_warm = time.perf_counter()
        while received < args.messages:
            event = await session.next_event()
            if isinstance(event, ApplicationMessage):
                received += 1
                if received == args.warmup:
                    warm = _sample()
                    t_warm = time.perf_counter()
            elif isinstance(event, SessionEnded):
                raise SystemExit(f"rss client: the session ended after {received} reports: {event}")
        seconds = time.perf_counter() - t_warm
        end = _sample()
        await session.logout()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"RSS_WARM {warm}\nRSS_END {end}\nRSS_PEAK {peak}\nSECONDS {seconds}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m ops.benchmarks._rss_client", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--private-key", required=True)
    parser.add_argument("--store-dir", required=True)
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.messages:
        parser.error("--warmup must be between 0 and --messages")
    trio.run(_run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
