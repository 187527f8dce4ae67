"""The sans-IO session core's own cost per message, without sockets, tasks or a disk.

Two :class:`~sessions.connection.FixConnection` objects (our initiator and an acceptor) are
logged on to each other in memory. Then:

* ``core_receive_us``: the initiator takes in one acknowledgement ExecutionReport per
  ``receive_data`` call (decode, MsgSeqNum and header checks, SendingTime, events) — what every
  report costs the client before any component sees it;
* ``core_send_us``: the initiator sends one NewOrderSingle (header, encode, store) and the bytes
  are taken with ``data_to_send``.

Both use a :class:`~sessions.store.MemoryStore` (what every session whose Logon resets its
numbers runs with), so the figures are the core's CPU alone. Best of several interleaved rounds.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable

from sessions.connection import FixConnection, State
from sessions.settings import Role, SessionSettings
from sessions.store import MemoryStore

from . import Figure
from .codec import ACK_REPORT_BODY

ROUNDS = 7
PER_ROUND = 3000
_NOW = 1_780_000_000.0
_NEW_ORDER = [
    (11, b"7c2d0e2f-3a4b-4c5d-9e8f-0a1b2c3d4e5f"), (38, b"1"), (40, b"2"), (44, b"5"),
    (54, b"1"), (55, b"KXHIGHNY-26JUL14-B85"), (59, b"1"),
]


def _pair() -> tuple[FixConnection, FixConnection]:
    ours = FixConnection(
        SessionSettings(role=Role.INITIATOR, sender_comp_id="KEY", target_comp_id="KalshiNR"),
        MemoryStore(now=_NOW),
    )
    peer = FixConnection(SessionSettings(role=Role.ACCEPTOR, sender_comp_id="KalshiNR"))
    ours.start(_NOW)
    peer.start(_NOW)
    peer.receive_data(ours.data_to_send(), _NOW)
    peer.accept_logon(_NOW)
    ours.receive_data(peer.data_to_send(), _NOW)
    if not (ours.state is State.ACTIVE and peer.state is State.ACTIVE):
        raise RuntimeError("the in-memory Logon did not complete")
    return ours, peer


def _round(ours: FixConnection, peer: FixConnection) -> tuple[float, float]:
    chunks = []
    for _ in range(PER_ROUND):
        peer.send_app(b"8", ACK_REPORT_BODY, _NOW)
        chunks.append(peer.data_to_send())
    gc.disable()
    try:
        t0 = time.perf_counter()
        for chunk in chunks:
            ours.receive_data(chunk, _NOW)
        t1 = time.perf_counter()
        for _ in range(PER_ROUND):
            ours.send_app(b"D", _NEW_ORDER, _NOW)
            ours.data_to_send()
        t2 = time.perf_counter()
    finally:
        gc.enable()
    return (t1 - t0) / PER_ROUND, (t2 - t1) / PER_ROUND


def run() -> Iterable[Figure]:
    """Per-message CPU of the session core, receive and send."""
    ours, peer = _pair()
    rounds = [_round(ours, peer) for _ in range(ROUNDS)]
    yield ("core_receive_us", min(r[0] for r in rounds) * 1e6, "us/msg")
    yield ("core_send_us", min(r[1] for r in rounds) * 1e6, "us/msg")
