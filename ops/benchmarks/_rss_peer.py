"""The RSS benchmark's peer: a gateway-like FIX acceptor that blasts ExecutionReports,
``python -m ops.benchmarks._rss_peer --messages N``. Prints ``PEER 127.0.0.1:PORT`` when it
listens; SIGTERM stops it.

It is deliberately not the simulated gateway (that one would need an order per report): it
answers the client's Logon (141=Y), then writes ``N`` ExecutionReports — an acknowledgement and
a fill in turn, with Kalshi's full field set (the codec benchmark's messages), each with its
own ClOrdID and ExecID — and a Heartbeat after every 100, as fast as TCP takes them, properly
sequenced and stamped. Then it answers the client's Logout and closes. TestRequests get their
Heartbeat; everything else the client sends is read and dropped.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence

import trio

from sessions.codec import StreamDecoder, encode_message
from sessions.message import FixMessage, utc_timestamp

from .codec import ACK_REPORT_BODY, EXEC_REPORT_BODY

__all__ = ["main"]

# Messages per write; SendingTime is stamped once per chunk.
_CHUNK = 100
_HEARTBEAT_EVERY = 100


class _Peer:
    def __init__(self, stream: trio.SocketStream, messages: int) -> None:
        self.stream = stream
        self.messages = messages
        self.seq = 0
        self.header_ids: tuple[bytes, bytes] = (b"", b"")
        self.lock = trio.Lock()
        self.decoder = StreamDecoder()

    def encode(self, msg_type: bytes, body: list[tuple[int, bytes]], stamp: bytes) -> bytes:
        self.seq += 1
        sender, target = self.header_ids
        header = [(49, sender), (56, target), (34, str(self.seq).encode()), (52, stamp)]
        return encode_message(msg_type, header, body)

    async def next_message(self) -> FixMessage | None:
        while True:
            item = self.decoder.next_message()
            if isinstance(item, FixMessage):
                return item
            if item is None:
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self.decoder.feed(data)

    async def send(self, data: bytes) -> None:
        async with self.lock:
            await self.stream.send_all(data)

    async def serve(self) -> None:
        logon = await self.next_message()
        if logon is None or logon.msg_type != b"A":
            return
        # Answer as the endpoint the client called.
        self.header_ids = (logon.get(56) or b"KalshiNR", logon.get(49) or b"")
        stamp = utc_timestamp(time.time())
        await self.send(
            self.encode(b"A", [(98, b"0"), (108, logon.get(108) or b"30"), (141, b"Y")], stamp)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.blast)
            await self.answer()
            nursery.cancel_scope.cancel()

    async def blast(self) -> None:
        bodies = (ACK_REPORT_BODY, EXEC_REPORT_BODY)
        sent = 0
        while sent < self.messages:
            stamp = utc_timestamp(time.time())
            chunk = []
            for _ in range(min(_CHUNK, self.messages - sent)):
                body = list(bodies[sent % 2])
                # Each report its own ClOrdID (tag 11, second field) and ExecID (tag 17).
                body[1] = (11, b"%036d" % (sent // 2))
                body[2] = (17, b"4821;%d" % sent)
                chunk.append(self.encode(b"8", body, stamp))
                sent += 1
                if sent % _HEARTBEAT_EVERY == 0:
                    chunk.append(self.encode(b"0", [], stamp))
            await self.send(b"".join(chunk))

    async def answer(self) -> None:
        """Answer TestRequests and the Logout; returns when the client logged out or left."""
        while True:
            msg = await self.next_message()
            if msg is None:
                return
            mt = msg.msg_type
            if mt == b"1":
                await self.send(
                    self.encode(b"0", [(112, msg.get(112) or b"")], utc_timestamp(time.time()))
                )
            elif mt == b"5":
                await self.send(self.encode(b"5", [], utc_timestamp(time.time())))
                return


async def _serve(messages: int) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _Peer(stream, messages).serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, listeners)
            print(f"PEER 127.0.0.1:{port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m ops.benchmarks._rss_peer", description=__doc__)
    parser.add_argument("--messages", type=int, required=True, help="ExecutionReports to send")
    args = parser.parse_args(argv)
    trio.run(_serve, args.messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
