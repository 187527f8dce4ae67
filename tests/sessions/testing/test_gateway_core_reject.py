"""FixConnection.send_reject: the session-level Reject the gateway sends for application
messages its exchange model found malformed (e.g. Kalshi's "Undefined tag received")."""

from __future__ import annotations

import pytest

from sessions.codec import StreamDecoder, encode_message
from sessions.connection import FixConnection
from sessions.errors import LocalProtocolError
from sessions.events import ApplicationMessage, LogonRequested, RejectSent
from sessions.message import FixMessage, utc_timestamp
from sessions.settings import Role, SessionSettings

NOW = 1_790_000_000.0
KEY = b"key-1"


def wire(msg_type: bytes, seq: int, body: list[tuple[int, bytes]]) -> bytes:
    header = [(49, KEY), (56, b"KalshiNR"), (34, str(seq).encode()), (52, utc_timestamp(NOW))]
    return encode_message(msg_type, header, body)


def sent(conn: FixConnection) -> list[FixMessage]:
    dec = StreamDecoder()
    dec.feed(conn.data_to_send())
    return [m for m in dec if isinstance(m, FixMessage)]


def test_send_reject_for_an_application_message() -> None:
    conn = FixConnection(SessionSettings(role=Role.ACCEPTOR, sender_comp_id="KalshiNR"))
    conn.start(NOW)
    with pytest.raises(LocalProtocolError):
        conn.send_reject(NOW, 1, 3, "too early")
    events = conn.receive_data(
        wire(b"A", 1, [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]), NOW
    )
    assert isinstance(events[0], LogonRequested)
    conn.accept_logon(NOW)
    sent(conn)
    (app,) = conn.receive_data(wire(b"D", 2, [(11, b"c1"), (333333, b"x")]), NOW)
    assert isinstance(app, ApplicationMessage) and app.seq_num == 2
    events = conn.send_reject(
        NOW, 2, 3, "Undefined tag received", ref_tag=333333, ref_msg_type=b"D"
    )
    assert events == [RejectSent(2, 3, "Undefined tag received", 333333, b"D")]
    (reject,) = sent(conn)
    # The documented example: 35=3|45=5|58=Undefined tag received|371=333333|372=D|373=3.
    body = [(t, v) for t, v in reject.pairs if t in (45, 58, 371, 372, 373)]
    assert reject.get(35) == b"3" and reject.get(34) == b"2"
    assert sorted(body) == [
        (45, b"2"), (58, b"Undefined tag received"), (371, b"333333"), (372, b"D"), (373, b"3")
    ]
    assert conn.next_sender_seq == 3
