"""The sans-IO session core, one scripted peer message at a time.

The peer is played by hand-built wire bytes so each FIX rule is exercised exactly; a final group
wires two cores (initiator and acceptor) back to back.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pytest

from sessions.codec import StreamDecoder, encode_message
from sessions.connection import FixConnection, State
from sessions.errors import LocalProtocolError
from sessions.events import (
    ApplicationMessage,
    GarbledMessage,
    HeartbeatTimeout,
    LoggedOn,
    LogonRequested,
    LogoutReason,
    ProtocolViolation,
    RejectReceived,
    RejectSent,
    ResendRequestSent,
    ResendServed,
    SequenceGap,
    SequenceNumbersReset,
    SequenceResetReceived,
    SessionEnded,
    TestResponse,
)
from sessions.message import FixMessage, utc_timestamp
from sessions.settings import LogonRefusal, Role, SessionSettings
from sessions.store import MemoryStore
from sessions.tags import SessionRejectReason

NOW = 1_790_000_000.0
KEY = b"3f1c2a9e-0000-4000-8000-000000000001"


def settings(**kw: object) -> SessionSettings:
    base: dict[str, object] = dict(
        role=Role.INITIATOR,
        sender_comp_id=KEY.decode(),
        target_comp_id="KalshiRT",
        heartbeat_interval=30,
        reset_seq_num_on_logon=True,
        retransmission=True,
        accepted_peer_comp_ids=frozenset({"Kalshi"}),
    )
    base.update(kw)
    return SessionSettings(**base)  # type: ignore[arg-type]


def wire(
    msg_type: bytes,
    seq: int,
    body: Sequence[tuple[int, bytes]] = (),
    *,
    sender: bytes = b"KalshiRT",
    target: bytes = KEY,
    now: float = NOW,
    poss_dup: bool = False,
    orig: float | None = None,
    drop: Sequence[int] = (),
    begin: bytes = b"FIXT.1.1",
) -> bytes:
    header = [(49, sender), (56, target), (34, str(seq).encode()), (52, utc_timestamp(now))]
    if poss_dup:
        header.append((43, b"Y"))
        if orig is not None:
            header.append((122, utc_timestamp(orig)))
    header = [(t, v) for t, v in header if t not in drop]
    return encode_message(msg_type, header, list(body), begin)


def sent(conn: FixConnection) -> list[FixMessage]:
    dec = StreamDecoder()
    dec.feed(conn.data_to_send())
    out = list(dec)
    assert all(isinstance(m, FixMessage) for m in out)
    return out  # type: ignore[return-value]


def types(msgs: list[FixMessage]) -> list[bytes]:
    return [m.get(35) or b"" for m in msgs]


LOGON_ACK = [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]


def logged_on(**kw: object) -> FixConnection:
    conn = FixConnection(settings(**kw), MemoryStore())
    conn.start(NOW)
    sent(conn)
    peer = str(kw.get("target_comp_id", "KalshiRT")).encode()
    events = conn.receive_data(wire(b"A", 1, LOGON_ACK, sender=peer), NOW)
    assert any(isinstance(e, LoggedOn) for e in events)
    assert conn.state is State.ACTIVE
    return conn


# --------------------------------------------------------------------------- logon
def test_logon_carries_options_and_signs_the_exact_header_values() -> None:
    seen: list[bytes] = []

    def signer(pre_hash: bytes) -> bytes:
        seen.append(pre_hash)
        return b"c2lnbmF0dXJl"

    conn = FixConnection(
        settings(sign_logon=signer, logon_fields=((21011, b"Y"),)), MemoryStore()
    )
    conn.start(NOW)
    (logon,) = sent(conn)
    assert logon.get(35) == b"A" and logon.get(34) == b"1"
    tags = [t for t, _ in logon.pairs]
    assert tags[-3:] == [95, 96, 10], "RawDataLength must come right before RawData"
    assert logon.get(95) == b"12" and logon.get(96) == b"c2lnbmF0dXJl"
    assert logon.get(141) == b"Y" and logon.get(1137) == b"9" and logon.get(98) == b"0"
    assert logon.get(21011) == b"Y"
    assert seen == [b"\x01".join([logon.get(52), b"A", b"1", KEY, b"KalshiRT"])]  # type: ignore[list-item]


def test_logon_without_reset_uses_stored_sequence_numbers() -> None:
    store = MemoryStore()
    store.set_next_sender_seq(41)
    store.set_next_target_seq(17)
    conn = FixConnection(settings(reset_seq_num_on_logon=False), store)
    conn.start(NOW)
    (logon,) = sent(conn)
    assert logon.get(34) == b"41" and logon.get(141) is None
    events = conn.receive_data(wire(b"A", 17, [(98, b"0"), (108, b"30")]), NOW)
    assert [type(e) for e in events] == [LoggedOn]
    assert store.next_target_seq == 18 and store.next_sender_seq == 42


def test_logon_ack_adopts_heartbeat_and_accepts_kalshi_sender() -> None:
    conn = FixConnection(settings(), MemoryStore())
    conn.start(NOW)
    events = conn.receive_data(
        wire(b"A", 1, [(98, b"0"), (108, b"20"), (141, b"Y")], sender=b"Kalshi"), NOW
    )
    (ev,) = events
    assert isinstance(ev, LoggedOn) and ev.heartbeat_interval == 20 and ev.reset_seq_num


@pytest.mark.parametrize(
    "text,reason",
    [
        ("already exists", LogoutReason.ALREADY_EXISTS),
        ("Invalid signature", LogoutReason.SIGNATURE),
        ("Invalid SenderCompID", LogoutReason.COMP_ID),
        ("MsgSeqNum too low, expecting 5", LogoutReason.SEQUENCE),
        ("ResetSeqNumFlag=Y required", LogoutReason.RESET_REQUIRED),
        ("something else", LogoutReason.OTHER),
    ],
)
def test_logon_rejection_text_is_classified(text: str, reason: LogoutReason) -> None:
    conn = FixConnection(settings(), MemoryStore())
    conn.start(NOW)
    sent(conn)
    (ended,) = conn.receive_data(wire(b"5", 1, [(58, text.encode())]), NOW)
    assert isinstance(ended, SessionEnded)
    assert ended.text == text and ended.reason is reason and ended.initiated_by == "peer"
    assert not ended.was_logged_on and conn.closed


def test_reject_before_logout_on_logon_is_surfaced() -> None:
    conn = FixConnection(settings(), MemoryStore())
    conn.start(NOW)
    events = conn.receive_data(
        wire(b"3", 1, [(45, b"1"), (373, b"10"), (58, b"SendingTime accuracy problem")])
        + wire(b"5", 2, [(58, b"SendingTime accuracy problem")]),
        NOW,
    )
    assert isinstance(events[0], RejectReceived) and events[0].reason == 10
    assert isinstance(events[1], SessionEnded) and events[1].reason is LogoutReason.SENDING_TIME


def test_logon_answer_timeout_closes() -> None:
    conn = FixConnection(settings(logon_timeout=10), MemoryStore())
    conn.start(NOW)
    assert conn.next_deadline() == NOW + 10
    assert conn.tick(NOW + 9) == []
    events = conn.tick(NOW + 10)
    assert isinstance(events[0], ProtocolViolation) and conn.closed


def test_non_logon_first_message_is_a_violation() -> None:
    conn = FixConnection(settings(), MemoryStore())
    conn.start(NOW)
    sent(conn)
    events = conn.receive_data(wire(b"8", 1, [(17, b"1;1")]), NOW)
    assert isinstance(events[0], ProtocolViolation) and conn.closed


def test_application_send_before_logon_is_refused() -> None:
    conn = FixConnection(settings(), MemoryStore())
    conn.start(NOW)
    with pytest.raises(LocalProtocolError, match="logon_sent"):
        conn.send_app(b"D", [(11, b"x")], NOW)


def test_session_messages_cannot_be_sent_as_application_messages() -> None:
    conn = logged_on()
    with pytest.raises(LocalProtocolError, match="session message"):
        conn.send_app(b"4", [(36, b"100")], NOW)


# --------------------------------------------------------------------------- heartbeats
def test_heartbeat_after_outbound_silence() -> None:
    conn = logged_on()
    assert conn.next_deadline() == NOW + 30
    assert conn.tick(NOW + 29) == [] and sent(conn) == []
    conn.tick(NOW + 30)
    (hb,) = sent(conn)
    assert hb.get(35) == b"0" and hb.get(34) == b"2"


def test_test_request_after_inbound_silence_then_timeout() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"0", 2), NOW + 25)  # keep inbound alive until 25
    conn.tick(NOW + 30)
    assert types(sent(conn)) == [b"0"]
    conn.tick(NOW + 25 + 36)  # 30 s + 20 % grace of silence
    msgs = sent(conn)
    assert b"1" in types(msgs)
    assert conn.state is State.ACTIVE
    events = conn.tick(NOW + 25 + 72)
    assert any(isinstance(e, HeartbeatTimeout) for e in events)
    assert isinstance(events[-1], SessionEnded) and events[-1].reason is LogoutReason.HEARTBEAT
    assert b"5" in types(sent(conn)) and conn.closed


def test_any_inbound_message_satisfies_a_pending_test_request() -> None:
    conn = logged_on()
    conn.tick(NOW + 36)
    assert b"1" in types(sent(conn))
    conn.receive_data(wire(b"0", 2, now=NOW + 40), NOW + 40)
    events = conn.tick(NOW + 72)
    assert not any(isinstance(e, HeartbeatTimeout) for e in events) and not conn.closed


def test_test_request_is_answered_with_its_id() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"1", 2, [(112, b"ping-7")]), NOW)
    (hb,) = sent(conn)
    assert hb.get(35) == b"0" and hb.get(112) == b"ping-7"


def test_test_request_without_id_is_rejected() -> None:
    conn = logged_on()
    events = conn.receive_data(wire(b"1", 2), NOW)
    (rej,) = sent(conn)
    assert rej.get(35) == b"3" and rej.get(373) == b"1" and rej.get(371) == b"112"
    assert isinstance(events[0], RejectSent)
    assert conn.next_target_seq == 3


def test_explicit_test_request_round_trip() -> None:
    conn = logged_on()
    req_id = conn.test_request(NOW)
    (tr,) = sent(conn)
    assert tr.get(35) == b"1" and tr.get(112) == req_id.encode()
    (ev,) = conn.receive_data(wire(b"0", 2, [(112, req_id.encode())]), NOW + 0.01)
    assert ev == TestResponse(req_id)


# --------------------------------------------------------------------------- sequencing
def test_in_sequence_application_message_is_delivered_and_counted() -> None:
    conn = logged_on()
    (ev,) = conn.receive_data(wire(b"8", 2, [(17, b"4;7")]), NOW)
    assert isinstance(ev, ApplicationMessage) and ev.seq_num == 2 and not ev.poss_dup
    assert ev.message.get(17) == b"4;7"
    assert conn.next_target_seq == 3


def test_too_low_without_possdup_logs_out() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"8", 2), NOW)
    events = conn.receive_data(wire(b"8", 2), NOW)
    assert isinstance(events[0], ProtocolViolation)
    (logout,) = sent(conn)
    assert logout.get(35) == b"5"
    assert logout.get(58) == b"MsgSeqNum too low, expecting 3 but received 2"
    assert conn.closed


def test_possdup_duplicate_is_dropped_silently() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"8", 2), NOW)
    events = conn.receive_data(wire(b"8", 2, poss_dup=True, orig=NOW - 1), NOW)
    assert events == [] and sent(conn) == [] and conn.next_target_seq == 3


def test_possdup_without_orig_sending_time_is_rejected() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"8", 2), NOW)
    conn.receive_data(wire(b"8", 2, poss_dup=True), NOW)
    (rej,) = sent(conn)
    assert rej.get(373) == b"1" and rej.get(371) == b"122"


@pytest.mark.parametrize("target", ["KalshiNR", "KalshiDC", "KalshiRFQ"])
def test_gap_without_retransmission_is_reported_never_requested(target: str) -> None:
    conn = logged_on(retransmission=False, target_comp_id=target)
    peer = target.encode()
    events = conn.receive_data(wire(b"8", 5, [(17, b"9;9")], sender=peer), NOW)
    assert events[0] == SequenceGap(expected=2, received=5)
    assert isinstance(events[1], ApplicationMessage) and events[1].seq_num == 5
    out = types(sent(conn))
    assert b"2" not in out and b"4" not in out
    assert conn.next_target_seq == 6


def test_gap_with_retransmission_requests_and_fills_in_order() -> None:
    conn = logged_on()
    events = conn.receive_data(wire(b"8", 4, [(17, b"c")]) + wire(b"8", 5, [(17, b"d")]), NOW)
    assert events == [ResendRequestSent(2, 0)]
    (rr,) = sent(conn)
    assert rr.get(35) == b"2" and rr.get(7) == b"2" and rr.get(16) == b"0"
    assert conn.resend_in_progress
    # The peer resends 2 and 3 and gap-fills nothing; then the queued 4 and 5 follow.
    events = conn.receive_data(
        wire(b"8", 2, [(17, b"a")], poss_dup=True, orig=NOW - 5)
        + wire(b"4", 3, [(123, b"Y"), (36, b"4")], poss_dup=True, orig=NOW),
        NOW,
    )
    delivered = [e.message.get(17) for e in events if isinstance(e, ApplicationMessage)]
    assert delivered == [b"a", b"c", b"d"]
    assert any(isinstance(e, SequenceResetReceived) and e.gap_fill for e in events)
    assert conn.next_target_seq == 6 and not conn.resend_in_progress
    # Duplicates of the queued messages resent by the peer are dropped.
    assert conn.receive_data(wire(b"8", 4, [(17, b"c")], poss_dup=True, orig=NOW), NOW) == []


def test_only_one_resend_request_per_gap() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"8", 4), NOW)
    conn.receive_data(wire(b"8", 6), NOW)
    assert types(sent(conn)) == [b"2"]


def test_logon_ack_with_higher_seq_triggers_resend_on_rt() -> None:
    conn = FixConnection(settings(reset_seq_num_on_logon=False), MemoryStore())
    conn.start(NOW)
    sent(conn)
    events = conn.receive_data(wire(b"A", 5, [(98, b"0"), (108, b"30")]), NOW)
    assert isinstance(events[0], LoggedOn) and events[1] == ResendRequestSent(1, 0)
    # Peer gap-fills 1..5 (its Logon is session-level): we are in sync again at 6.
    conn.receive_data(wire(b"4", 1, [(123, b"Y"), (36, b"6")], poss_dup=True), NOW)
    assert conn.next_target_seq == 6 and not conn.resend_in_progress


def test_logon_ack_with_higher_seq_is_a_gap_on_nr() -> None:
    conn = FixConnection(
        settings(reset_seq_num_on_logon=False, retransmission=False, target_comp_id="KalshiNR"),
        MemoryStore(),
    )
    conn.start(NOW)
    sent(conn)
    events = conn.receive_data(wire(b"A", 5, [(98, b"0"), (108, b"30")], sender=b"KalshiNR"), NOW)
    assert events[1] == SequenceGap(1, 5)
    assert types(sent(conn)) == [] and conn.next_target_seq == 6


def test_sequence_reset_reset_mode_ignores_seq_and_cannot_lower() -> None:
    conn = logged_on()
    (ev,) = conn.receive_data(wire(b"4", 99, [(36, b"20")]), NOW)
    assert ev == SequenceResetReceived(20, False) and conn.next_target_seq == 20
    conn.receive_data(wire(b"4", 1, [(36, b"10")]), NOW)
    (rej,) = sent(conn)
    assert rej.get(373) == b"5" and rej.get(371) == b"36"
    assert conn.next_target_seq == 20


def test_logout_across_a_gap_is_honoured() -> None:
    conn = logged_on()
    events = conn.receive_data(wire(b"5", 9, [(58, b"bye")]), NOW)
    assert isinstance(events[-1], SessionEnded) and events[-1].text == "bye"
    assert types(sent(conn)) == [b"5"]


# --------------------------------------------------------------------------- answering resends
def test_resend_request_is_answered_from_the_store() -> None:
    conn = logged_on()
    conn.send_app(b"D", [(11, b"o1")], NOW + 1)  # 2
    conn.send_app(b"D", [(11, b"o2")], NOW + 2)  # 3
    conn.tick(NOW + 40)  # heartbeat: 4
    conn.send_app(b"F", [(11, b"o3")], NOW + 41)  # 5
    sent(conn)
    events = conn.receive_data(wire(b"2", 2, [(7, b"2"), (16, b"0")], now=NOW + 42), NOW + 42)
    assert events == [ResendServed(2, 5, resent=3, gap_filled=1)]
    out = sent(conn)
    assert [(m.get(35), m.get(34)) for m in out] == [
        (b"D", b"2"), (b"D", b"3"), (b"4", b"4"), (b"F", b"5")
    ]
    first = out[0]
    assert first.get(43) == b"Y" and first.get(122) == utc_timestamp(NOW + 1)
    assert first.get(52) == utc_timestamp(NOW + 42) and first.get(11) == b"o1"
    gap = out[2]
    assert gap.get(123) == b"Y" and gap.get(36) == b"5" and gap.get(43) == b"Y"
    assert conn.next_sender_seq == 6, "resending must not consume sequence numbers"


def test_resend_request_on_a_session_without_retransmission_is_rejected() -> None:
    conn = logged_on(retransmission=False, target_comp_id="KalshiNR")
    conn.receive_data(wire(b"2", 2, [(7, b"1"), (16, b"0")], sender=b"KalshiNR"), NOW)
    out = sent(conn)
    assert types(out) == [b"3"] and out[0].get(373) == b"11"


# --------------------------------------------------------------------------- header checks
def test_wrong_comp_id_is_rejected_then_logged_out() -> None:
    conn = logged_on()
    events = conn.receive_data(wire(b"8", 2, sender=b"SomeoneElse"), NOW)
    out = sent(conn)
    assert types(out) == [b"3", b"5"] and out[0].get(373) == b"9"
    assert isinstance(events[-1], SessionEnded) and conn.closed


def test_sending_time_out_of_range_is_rejected_then_logged_out() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"8", 2, now=NOW - 31), NOW)
    out = sent(conn)
    assert types(out) == [b"3", b"5"] and out[0].get(373) == b"10" and out[0].get(371) == b"52"


def test_missing_sending_time_is_rejected_and_counted() -> None:
    conn = logged_on()
    events = conn.receive_data(wire(b"8", 2, drop=[52]), NOW)
    (rej,) = sent(conn)
    assert rej.get(373) == b"1" and rej.get(371) == b"52" and rej.get(45) == b"2"
    assert isinstance(events[0], RejectSent) and conn.next_target_seq == 3
    assert not conn.closed


def test_missing_msg_seq_num_ends_the_session() -> None:
    conn = logged_on()
    events = conn.receive_data(wire(b"8", 2, drop=[34]), NOW)
    assert isinstance(events[0], ProtocolViolation) and "MsgSeqNum" in events[0].text
    assert types(sent(conn)) == [b"5"] and conn.closed


def test_wrong_begin_string_ends_the_session() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"8", 2, begin=b"FIX.4.4"), NOW)
    (logout,) = sent(conn)
    assert logout.get(35) == b"5" and b"BeginString" in (logout.get(58) or b"")
    assert conn.closed


def test_unknown_msg_type_is_rejected_when_types_are_declared() -> None:
    conn = logged_on(application_msg_types=frozenset({b"8"}))
    conn.receive_data(wire(b"ZZ", 2), NOW)
    (rej,) = sent(conn)
    assert rej.get(373) == b"11" and rej.get(372) == b"ZZ"
    assert conn.next_target_seq == 3


def test_garbled_bytes_are_reported_and_skipped() -> None:
    conn = logged_on()
    good = wire(b"8", 2, [(17, b"ok")])
    bad = bytearray(wire(b"8", 3))
    bad[-4:-1] = b"000" if bad[-4:-1] != b"000" else b"001"
    events = conn.receive_data(bytes(bad) + good, NOW)
    assert isinstance(events[0], GarbledMessage) and "CheckSum" in events[0].reason
    assert isinstance(events[1], ApplicationMessage) and events[1].message.get(17) == b"ok"
    assert conn.next_target_seq == 3


def test_reject_from_peer_is_an_event() -> None:
    conn = logged_on()
    (ev,) = conn.receive_data(wire(b"3", 2, [(45, b"1"), (371, b"333"), (372, b"D"), (373, b"3")]), NOW)
    assert isinstance(ev, RejectReceived)
    assert (ev.ref_seq_num, ev.ref_tag, ev.ref_msg_type, ev.reason) == (1, 333, b"D", 3)


# --------------------------------------------------------------------------- logout
def test_graceful_logout_handshake() -> None:
    conn = logged_on()
    conn.logout(NOW, "done")
    (lo,) = sent(conn)
    assert lo.get(35) == b"5" and lo.get(58) == b"done" and conn.state is State.LOGOUT_SENT
    (ev,) = conn.receive_data(wire(b"5", 2), NOW + 0.1)
    assert isinstance(ev, SessionEnded) and ev.clean and ev.initiated_by == "local"


def test_logout_wait_is_bounded() -> None:
    conn = logged_on(logout_timeout=5)
    conn.logout(NOW)
    assert conn.next_deadline() == NOW + 5
    (ev,) = conn.tick(NOW + 5)
    assert isinstance(ev, SessionEnded) and not ev.clean


def test_peer_logout_is_answered() -> None:
    conn = logged_on()
    (ev,) = conn.receive_data(wire(b"5", 2, [(58, b"Exchange closed for maintenance")]), NOW)
    assert isinstance(ev, SessionEnded) and ev.initiated_by == "peer"
    assert ev.reason is LogoutReason.MAINTENANCE and ev.was_logged_on
    (lo,) = sent(conn)
    assert lo.get(35) == b"5" and lo.get(58) is None


def test_transport_loss_ends_the_session() -> None:
    conn = logged_on()
    (ev,) = conn.connection_lost(NOW)
    assert isinstance(ev, SessionEnded) and ev.initiated_by == "transport" and not ev.clean


# --------------------------------------------------------------------------- acceptor
def acceptor(**kw: object) -> FixConnection:
    conn = FixConnection(
        settings(role=Role.ACCEPTOR, sender_comp_id="KalshiRT", target_comp_id=None, **kw)
    )
    conn.start(NOW)
    return conn


def client_logon(seq: int = 1, hb: bytes = b"30", **kw: object) -> bytes:
    return wire(
        b"A", seq, [(98, b"0"), (108, hb), (141, b"Y"), (1137, b"9")],
        sender=KEY, target=b"KalshiRT", **kw,  # type: ignore[arg-type]
    )


def test_acceptor_hands_logon_to_the_application_and_answers() -> None:
    conn = acceptor()
    (req,) = conn.receive_data(client_logon(), NOW)
    assert isinstance(req, LogonRequested) and req.sender_comp_id == KEY.decode()
    assert req.reset_seq_num and req.heartbeat_interval == 30
    store = MemoryStore()
    conn.accept_logon(NOW, store=store)
    (ack,) = sent(conn)
    assert ack.get(35) == b"A" and ack.get(141) == b"Y" and ack.get(108) == b"30"
    assert ack.get(56) == KEY and ack.get(49) == b"KalshiRT"
    assert conn.state is State.ACTIVE and store.next_target_seq == 2


def test_acceptor_holds_messages_behind_a_pending_logon() -> None:
    conn = acceptor()
    events = conn.receive_data(
        client_logon() + wire(b"D", 2, [(11, b"x")], sender=KEY, target=b"KalshiRT"), NOW
    )
    assert [type(e) for e in events] == [LogonRequested]
    events = conn.accept_logon(NOW)
    assert [type(e) for e in events] == [LoggedOn, ApplicationMessage]
    assert events[1].message.get(11) == b"x"


def test_acceptor_rejects_logon_with_text() -> None:
    conn = acceptor()
    conn.receive_data(client_logon(), NOW)
    (ended,) = conn.reject_logon(NOW, "already exists")
    assert isinstance(ended, SessionEnded) and ended.reason is LogoutReason.ALREADY_EXISTS
    (lo,) = sent(conn)
    assert lo.get(35) == b"5" and lo.get(58) == b"already exists" and conn.closed


@pytest.mark.parametrize(
    "text,kw,match",
    [
        ("", {}, "text"),
        ("no", {"ref_tag": 96}, "ref_tag needs a session_reject_reason"),
    ],
)
def test_acceptor_reject_logon_refuses_what_a_logon_refusal_refuses(
    text: str, kw: dict[str, int], match: str
) -> None:
    conn = acceptor()
    conn.receive_data(client_logon(), NOW)
    with pytest.raises(LocalProtocolError, match=match):
        conn.reject_logon(NOW, text, **kw)
    # Nothing was sent and the Logon still waits for a decision.
    assert sent(conn) == [] and conn.state is State.LOGON_RECEIVED
    conn.reject_logon(NOW, "signature verification failed", session_reject_reason=5, ref_tag=96)
    reject, logout = sent(conn)
    assert reject.get(35) == b"3" and reject.get(371) == b"96" and logout.get(35) == b"5"


@pytest.mark.parametrize(
    "data,expect",
    [
        (client_logon(hb=b"3"), b"HeartBtInt"),
        (wire(b"A", 1, [(98, b"0"), (108, b"30"), (1137, b"9")], sender=KEY, target=b"KalshiNR"),
         b"CompID"),
        (wire(b"A", 1, [(98, b"0"), (108, b"30")], sender=KEY, target=b"KalshiRT"), b"1137"),
    ],
)
def test_acceptor_refuses_bad_logons(data: bytes, expect: bytes) -> None:
    conn = acceptor()
    events = conn.receive_data(data, NOW)
    assert isinstance(events[-1], SessionEnded)
    lo = sent(conn)[-1]
    assert lo.get(35) == b"5" and expect in (lo.get(58) or b"")


def test_acceptor_rejects_stale_logon_sending_time_with_373_10() -> None:
    conn = acceptor()
    conn.receive_data(client_logon(now=NOW - 45), NOW)
    out = sent(conn)
    assert types(out) == [b"3", b"5"] and out[0].get(373) == b"10"


def test_acceptor_disconnects_when_first_message_is_not_logon() -> None:
    conn = acceptor()
    events = conn.receive_data(wire(b"D", 1, sender=KEY, target=b"KalshiRT"), NOW)
    assert isinstance(events[0], ProtocolViolation) and conn.closed
    assert sent(conn) == []


def test_acceptor_waits_for_logon_boundedly() -> None:
    conn = acceptor(logon_timeout=10)
    events = conn.tick(NOW + 10)
    assert isinstance(events[-1], SessionEnded) and conn.closed


# --------------------------------------------------------------------------- reset Logon review
RESET_BODY = [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]


class Review:
    """A ``review_reset_logon`` hook that records what it was shown and answers ``answer``."""

    def __init__(self, answer: LogonRefusal | None) -> None:
        self.answer = answer
        self.seen: list[FixMessage] = []

    def __call__(self, logon: FixMessage) -> LogonRefusal | None:
        self.seen.append(logon)
        return self.answer


def active_acceptor(**kw: object) -> tuple[FixConnection, MemoryStore]:
    """An acceptor logged on with the client, numbers moved off their start: we sent 2
    messages (next 3), the client 2 (next 3)."""
    conn = acceptor(**kw)
    conn.receive_data(client_logon(), NOW)
    store = MemoryStore()
    conn.accept_logon(NOW, store=store)
    conn.send_app(b"8", [(17, b"e1")], NOW)
    conn.receive_data(wire(b"0", 2, sender=KEY, target=b"KalshiRT"), NOW)
    sent(conn)
    assert (store.next_sender_seq, store.next_target_seq) == (3, 3)
    return conn, store


def reset_logon(seq: int = 1, extra: Sequence[tuple[int, bytes]] = ()) -> bytes:
    return wire(b"A", seq, [*RESET_BODY, *extra], sender=KEY, target=b"KalshiRT")


@pytest.mark.parametrize("seq", [1, 4])
def test_reset_logon_accepted_by_the_review_is_answered_as_without_one(seq: int) -> None:
    review = Review(None)
    hooked, hooked_store = active_acceptor(review_reset_logon=review)
    plain, plain_store = active_acceptor()
    hooked_events = hooked.receive_data(reset_logon(seq), NOW)
    plain_events = plain.receive_data(reset_logon(seq), NOW)
    assert [m.get(34) for m in review.seen] == [str(seq).encode()]
    assert hooked_events == plain_events
    assert hooked.data_to_send() == plain.data_to_send()
    assert hooked.state is plain.state
    assert (hooked_store.next_sender_seq, hooked_store.next_target_seq) == (
        plain_store.next_sender_seq, plain_store.next_target_seq
    )
    if seq == 1:
        # The core's own reset went ahead: our 141=Y Logon numbered 1, both counts restarted.
        assert hooked_events == [SequenceNumbersReset(2, 2)]
        assert hooked.state is State.ACTIVE
    else:
        # The core's MsgSeqNum rule for a reset Logon still applies after an acceptance.
        assert isinstance(hooked_events[0], ProtocolViolation) and hooked.closed


def test_reset_logon_refused_with_a_reason_gets_reject_then_logout_under_the_old_numbers() -> None:
    refusal = LogonRefusal(
        "Invalid signature", SessionRejectReason.VALUE_INCORRECT, ref_tag=96
    )
    conn, store = active_acceptor(review_reset_logon=Review(refusal))
    events = conn.receive_data(reset_logon(), NOW)
    rej, lo = sent(conn)
    assert types([rej, lo]) == [b"3", b"5"]
    assert (rej.get(373), rej.get(371), rej.get(45), rej.get(372)) == (b"5", b"96", b"1", b"A")
    assert rej.get(58) == lo.get(58) == b"Invalid signature"
    # Nothing was reset: the answers are numbered on from 3 and the reset Logon is not counted.
    assert (rej.get(34), lo.get(34)) == (b"3", b"4")
    assert (store.next_sender_seq, store.next_target_seq) == (5, 3)
    assert [type(e) for e in events] == [RejectSent, SessionEnded]
    ended = events[-1]
    assert isinstance(ended, SessionEnded) and ended.initiated_by == "local"
    assert ended.text == "Invalid signature" and ended.reason is LogoutReason.SIGNATURE
    assert ended.was_logged_on and conn.closed


def test_reset_logon_refused_without_a_reason_gets_a_logout_only() -> None:
    conn, store = active_acceptor(review_reset_logon=Review(LogonRefusal("exchange closed")))
    events = conn.receive_data(reset_logon(), NOW)
    (lo,) = sent(conn)
    assert (lo.get(35), lo.get(34), lo.get(58)) == (b"5", b"3", b"exchange closed")
    assert (store.next_sender_seq, store.next_target_seq) == (4, 3)
    assert [type(e) for e in events] == [SessionEnded] and conn.closed


@pytest.mark.parametrize(
    "refusal",
    [
        LogonRefusal("Invalid signature"),
        LogonRefusal("SendingTime accuracy problem", SessionRejectReason.SENDING_TIME_ACCURACY, 52),
    ],
)
def test_refused_reset_logon_is_answered_as_a_refused_first_logon(refusal: LogonRefusal) -> None:
    first = acceptor()
    first.receive_data(client_logon(), NOW)
    first.reject_logon(
        NOW, refusal.text, session_reject_reason=refusal.session_reject_reason,
        ref_tag=refusal.ref_tag,
    )
    again, _ = active_acceptor(review_reset_logon=Review(refusal))
    again.receive_data(reset_logon(), NOW)

    def shape(msgs: list[FixMessage]) -> list[tuple[bytes | None, ...]]:
        return [(m.get(35), m.get(58), m.get(373), m.get(371), m.get(45)) for m in msgs]

    refused_first = shape(sent(first))
    assert shape(sent(again)) == refused_first
    assert len(refused_first) == (1 if refusal.session_reject_reason is None else 2)


def test_review_is_not_asked_for_a_first_logon() -> None:
    review = Review(LogonRefusal("never"))
    conn = acceptor(review_reset_logon=review)
    (req,) = conn.receive_data(client_logon(), NOW)
    assert isinstance(req, LogonRequested) and review.seen == []
    conn.accept_logon(NOW)
    assert conn.state is State.ACTIVE and review.seen == []


def test_review_is_not_asked_for_a_reset_logon_the_core_refuses_itself() -> None:
    review = Review(None)
    conn, _ = active_acceptor(review_reset_logon=review)
    events = conn.receive_data(reset_logon(extra=[(11, b"o1")]), NOW)
    assert isinstance(events[0], ProtocolViolation) and conn.closed
    assert review.seen == []


def test_initiator_never_asks_the_review() -> None:
    review = Review(LogonRefusal("never"))
    conn = logged_on(review_reset_logon=review)
    events = conn.receive_data(wire(b"A", 1, LOGON_ACK), NOW)
    assert events == [SequenceNumbersReset(2, 2)] and conn.state is State.ACTIVE
    (answer,) = sent(conn)
    assert (answer.get(35), answer.get(34), answer.get(141)) == (b"A", b"1", b"Y")
    assert review.seen == []


def test_refused_reset_logon_keeps_the_signature_and_the_hook_out_of_texts_and_reprs() -> None:
    signature = b"c2lnbmF0dXJlLW9mLXRoZS1wZWVy"  # what a signed Logon carries in RawData(96)
    secret = "-----BEGIN PRIVATE KEY-----MIIEvQ"

    def refuse(private_key: str, logon: FixMessage) -> LogonRefusal:
        return LogonRefusal(f"Invalid signature for key {KEY.decode()}", 5, 96)

    # A hook holding key material, whose own repr shows it.
    hook = functools.partial(refuse, secret)
    assert secret in repr(hook)
    conn, _ = active_acceptor(review_reset_logon=hook)
    assert secret not in repr(conn.settings)
    signed = [(95, str(len(signature)).encode()), (96, signature)]
    events = conn.receive_data(reset_logon(extra=signed), NOW)
    out = conn.data_to_send()
    assert b"Invalid signature for key" in out  # the refusal did go out
    assert signature not in out and secret.encode() not in out
    assert signature.decode() not in repr(events) and secret not in repr(events)


# --------------------------------------------------------------------------- back to back
def pump(a: FixConnection, b: FixConnection, now: float) -> tuple[list, list]:
    ea: list = []
    eb: list = []
    for _ in range(10):
        da, db = a.data_to_send(), b.data_to_send()
        if not da and not db:
            break
        if da:
            eb += b.receive_data(da, now)
        if db:
            ea += a.receive_data(db, now)
    return ea, eb


def test_initiator_and_acceptor_talk_to_each_other() -> None:
    client = FixConnection(settings(), MemoryStore())
    server = acceptor()
    client.start(NOW)
    _, sev = pump(client, server, NOW)
    assert isinstance(sev[0], LogonRequested)
    assert isinstance(server.accept_logon(NOW, store=MemoryStore())[0], LoggedOn)
    cev, _ = pump(client, server, NOW)
    assert isinstance(cev[0], LoggedOn)
    client.send_app(b"D", [(11, b"a")], NOW)
    _, sev = pump(client, server, NOW)
    assert isinstance(sev[0], ApplicationMessage) and sev[0].message.get(11) == b"a"
    server.send_app(b"8", [(17, b"1;1")], NOW)
    cev, _ = pump(client, server, NOW)
    assert isinstance(cev[0], ApplicationMessage) and cev[0].message.get(17) == b"1;1"
    client.logout(NOW)
    cev, sev = pump(client, server, NOW)
    assert isinstance(cev[-1], SessionEnded) and cev[-1].clean
    assert isinstance(sev[-1], SessionEnded) and sev[-1].initiated_by == "peer"


def test_sequence_continues_across_connections_without_reset() -> None:
    store = MemoryStore()
    first = FixConnection(settings(reset_seq_num_on_logon=False), store)
    first.start(NOW)
    first.receive_data(wire(b"A", 1, [(98, b"0"), (108, b"30")]), NOW)
    first.send_app(b"D", [(11, b"a")], NOW)
    first.connection_lost(NOW)
    second = FixConnection(settings(reset_seq_num_on_logon=False), store)
    second.start(NOW + 1)
    (logon,) = sent(second)[-1:]
    assert logon.get(34) == b"3"
    assert store.next_target_seq == 2


def test_tag_without_value_is_rejected_with_373_4() -> None:
    conn = logged_on()
    conn.receive_data(wire(b"8", 2, [(17, b"1;1"), (58, b"")]), NOW)
    (rej,) = sent(conn)
    assert rej.get(373) == b"4" and rej.get(371) == b"58"
    assert conn.next_target_seq == 3


def test_logged_on_reports_numbers_after_the_logon_is_counted() -> None:
    conn = FixConnection(settings(), MemoryStore())
    conn.start(NOW)
    (ev,) = conn.receive_data(wire(b"A", 1, LOGON_ACK), NOW)
    assert isinstance(ev, LoggedOn)
    assert (ev.next_sender_seq, ev.next_target_seq) == (2, 2) == (
        conn.next_sender_seq, conn.next_target_seq
    )


def test_logon_answer_with_too_low_seq_never_logs_on() -> None:
    store = MemoryStore()
    store.set_next_target_seq(9)
    conn = FixConnection(settings(reset_seq_num_on_logon=False), store)
    conn.start(NOW)
    events = conn.receive_data(wire(b"A", 3, [(98, b"0"), (108, b"30")]), NOW)
    assert not any(isinstance(e, LoggedOn) for e in events)
    assert isinstance(events[-1], SessionEnded) and not events[-1].was_logged_on
