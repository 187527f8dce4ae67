"""The floor's peer: a bare Trio TCP server in its own process, ``python -m ops.benchmarks._echo``.

For every ``--request-size`` bytes it receives it sends ``--response-size`` bytes back (the
sizes of a NewOrderSingle and of the ExecutionReport that answers it), answering whatever a read
completed in one write — nothing else: no parsing, no state. Prints ``ECHO 127.0.0.1:PORT`` when
it listens; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

__all__ = ["main"]


async def _serve(request_size: int, response_size: int) -> None:
    response = b"x" * (response_size - 1) + b"\n"

    async def handle(stream: trio.SocketStream) -> None:
        pending = 0
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                pending += len(data)
                answered, pending = divmod(pending, request_size)
                if answered:
                    await stream.send_all(response * answered)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, listeners)
            print(f"ECHO 127.0.0.1:{port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m ops.benchmarks._echo", description=__doc__)
    parser.add_argument("--request-size", type=int, required=True)
    parser.add_argument("--response-size", type=int, required=True)
    args = parser.parse_args(argv)
    if args.request_size < 1 or args.response_size < 1:
        parser.error("sizes must be at least 1 byte")
    trio.run(_serve, args.request_size, args.response_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
