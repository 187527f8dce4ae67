"""FIX session-layer conformance of the sans-IO core, case by case, in both roles.

Each test is one scenario of the FIX "Session Layer Test Cases" for FIXT.1.1, named after the
case with the letters the QuickFIX acceptance suites also use: 1S/1B logon; 2a-2t standard header;
3b trailer; 4-6 heartbeat and TestRequest; 7 Reject; 8 ResendRequest; 10 SequenceReset-GapFill;
11 SequenceReset-Reset; 12/13 Logout; 14a-14h field-level rejects; 19 PossResend; 20 simultaneous
resends. Queueing behind a gap and the mid-session reset Logon have no number of their own. The counterparty is
played with hand-built wire bytes, and what the core writes back is compared byte for byte with
the message the rule calls for. Time is the ``now`` handed to the core: no test sleeps.

Cases already pinned down for the initiator in ``test_connection.py`` are not repeated here; the
test of the case's other role (usually the acceptor, i.e. the simulated gateway) says which test
covers the initiator. Where Kalshi's REFERENCE deliberately departs from the generic rule (no
retransmission on NR/DC/RFQ/MD), the Kalshi profile has its own test next to the standard one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
import pytest

from sessions.codec import checksum, encode_message, encode_pairs
from sessions.connection import FixConnection, State
from sessions.dictionary import SESSION_FIELDS, SESSION_MESSAGES
from sessions.events import (
    ApplicationMessage,
    Event,
    GarbledMessage,
    HeartbeatTimeout,
    LoggedOn,
    LogonRequested,
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
from sessions.message import utc_timestamp
from sessions.settings import Role, SessionSettings
from sessions.store import MemoryStore

T0 = 1_790_000_000.0  # the logon instant of every scripted session
CLIENT = b"6b0e2f3c-1111-4aaa-9bbb-00000000c11e"  # an API key id: the client's CompID
GATEWAY = b"KalshiRT"  # the endpoint's CompID
Pairs = Sequence[tuple[int, bytes]]


# --------------------------------------------------------------------------- the scripted peer
@attrs.define
class Session:
    """A logged-on core plus the CompIDs of both ends, with a builder for the peer's messages
    and one for the exact bytes the core must answer with."""

    conn: FixConnection
    us: bytes
    them: bytes

    def peer(
        self,
        msg_type: bytes,
        seq: int,
        body: Pairs = (),
        *,
        at: float = T0,
        poss_dup: bytes | None = None,
        orig: bytes | None = None,
        sender: bytes | None = None,
        begin: bytes = b"FIXT.1.1",
    ) -> bytes:
        """Wire bytes the counterparty sends us: header 49/56/34/52 (+43/122)."""
        header: list[tuple[int, bytes]] = [
            (49, self.them if sender is None else sender),
            (56, self.us),
            (34, b"%d" % seq),
            (52, utc_timestamp(at)),
        ]
        if poss_dup is not None:
            header.append((43, poss_dup))
        if orig is not None:
            header.append((122, orig))
        return encode_message(msg_type, header, list(body), begin)

    def ours(self, msg_type: bytes, seq: int, body: Pairs = (), *, at: float = T0) -> bytes:
        """The exact bytes of a message the core sends fresh at ``at``."""
        header = [(49, self.us), (56, self.them), (34, b"%d" % seq), (52, utc_timestamp(at))]
        return encode_message(msg_type, header, list(body))

    def resent(self, msg_type: bytes, seq: int, body: Pairs, *, first: float, at: float) -> bytes:
        """The exact bytes of our message ``seq`` resent at ``at`` (first sent at ``first``)."""
        header = [
            (49, self.us), (56, self.them), (34, b"%d" % seq), (43, b"Y"),
            (52, utc_timestamp(at)), (122, utc_timestamp(first)),
        ]
        return encode_message(msg_type, header, list(body))

    def gap_fill(self, seq: int, new_seq: int, *, at: float = T0) -> bytes:
        """The exact bytes of our SequenceReset-GapFill ``seq`` -> ``new_seq``."""
        stamp = utc_timestamp(at)
        header = [
            (49, self.us), (56, self.them), (34, b"%d" % seq), (52, stamp), (43, b"Y"),
            (122, stamp),
        ]
        return encode_message(b"4", header, [(123, b"Y"), (36, b"%d" % new_seq)])

    def out(self) -> bytes:
        return self.conn.data_to_send()


def _settings(role: Role, **kw: object) -> SessionSettings:
    base: dict[str, object] = dict(
        role=role,
        sender_comp_id=(CLIENT if role is Role.INITIATOR else GATEWAY).decode(),
        target_comp_id=GATEWAY.decode() if role is Role.INITIATOR else None,
        heartbeat_interval=30,
        retransmission=True,
    )
    base.update(kw)
    return SessionSettings(**base)  # type: ignore[arg-type]


def client_logon(seq: int = 1, *, reset: bool = True, at: float = T0, hb: bytes = b"30",
                 appl_ver: bool = True) -> bytes:
    """A client's Logon as the acceptor receives it."""
    body = [(98, b"0"), (108, hb)]
    if reset:
        body.append((141, b"Y"))
    if appl_ver:
        body.append((1137, b"9"))
    header = [(49, CLIENT), (56, GATEWAY), (34, b"%d" % seq), (52, utc_timestamp(at))]
    return encode_message(b"A", header, body)


def gateway_logon(seq: int = 1, *, reset: bool = True, appl_ver: bool = True,
                  sender: bytes = GATEWAY) -> bytes:
    """The gateway's Logon answer as the initiator receives it."""
    body = [(98, b"0"), (108, b"30")]
    if reset:
        body.append((141, b"Y"))
    if appl_ver:
        body.append((1137, b"9"))
    header = [(49, sender), (56, CLIENT), (34, b"%d" % seq), (52, utc_timestamp(T0))]
    return encode_message(b"A", header, body)


def initiator(**kw: object) -> Session:
    conn = FixConnection(_settings(Role.INITIATOR, **kw), MemoryStore())
    conn.start(T0)
    conn.data_to_send()
    events = conn.receive_data(gateway_logon(), T0)
    assert [type(e) for e in events] == [LoggedOn]
    return Session(conn, CLIENT, GATEWAY)


def acceptor(**kw: object) -> Session:
    conn = FixConnection(_settings(Role.ACCEPTOR, **kw))
    conn.start(T0)
    assert [type(e) for e in conn.receive_data(client_logon(), T0)] == [LogonRequested]
    assert [type(e) for e in conn.accept_logon(T0, store=MemoryStore())] == [LoggedOn]
    conn.data_to_send()
    return Session(conn, GATEWAY, CLIENT)


ROLES = {"initiator": initiator, "acceptor": acceptor}


@pytest.fixture(params=sorted(ROLES))
def s(request: pytest.FixtureRequest) -> Iterator[Session]:
    """A logged-on session in either role; both next sequence numbers are 2."""
    session = ROLES[request.param]()
    assert (session.conn.next_sender_seq, session.conn.next_target_seq) == (2, 2)
    yield session


def reject(s: Session, seq: int, ref_seq: int, ref_type: bytes, reason: int, text: str,
           ref_tag: int | None = None, *, at: float = T0) -> bytes:
    """Our session-level Reject (35=3), field order as the core writes it."""
    body: list[tuple[int, bytes]] = [(45, b"%d" % ref_seq)]
    if ref_tag is not None:
        body.append((371, b"%d" % ref_tag))
    body += [(372, ref_type), (373, b"%d" % reason), (58, text.encode())]
    return s.ours(b"3", seq, body, at=at)


def logout(s: Session, seq: int, text: str | None = None, *, at: float = T0) -> bytes:
    return s.ours(b"5", seq, [] if text is None else [(58, text.encode())], at=at)


def kinds(events: list[Event]) -> list[type]:
    return [type(e) for e in events]


# --------------------------------------------------------------------------- 1S / 1B: logon
def test_1s_valid_logon_answer_logs_on_and_sends_fixt_logon() -> None:
    conn = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    conn.start(T0)
    # FIXT.1.1: DefaultApplVerID(1137) is required on the Logon we send.
    assert conn.data_to_send() == Session(conn, CLIENT, GATEWAY).ours(
        b"A", 1, [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]
    )
    events = conn.receive_data(gateway_logon(), T0)
    assert events == [LoggedOn(30, True, 2, 2)]
    assert conn.data_to_send() == b"" and conn.state is State.ACTIVE


def test_1s_logon_answer_without_default_appl_ver_id_is_tolerated() -> None:
    # Kalshi (REFERENCE §2.3): the answer's content is unconfirmed and the client must depend
    # on nothing but MsgType, header and MsgSeqNum, so a missing 1137 does not fail the logon.
    conn = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    conn.start(T0)
    conn.data_to_send()
    assert kinds(conn.receive_data(gateway_logon(appl_ver=False), T0)) == [LoggedOn]


def test_1s_logon_answer_with_wrong_comp_id_is_rejected_and_logged_out() -> None:
    conn = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    conn.start(T0)
    conn.data_to_send()
    s = Session(conn, CLIENT, GATEWAY)
    events = conn.receive_data(gateway_logon(sender=b"Impostor"), T0)
    assert conn.data_to_send() == reject(
        s, 2, 1, b"A", 9, f"CompID problem: got 49=Impostor 56={CLIENT.decode()}"
    ) + logout(s, 3, "CompID problem")
    assert not any(isinstance(e, LoggedOn) for e in events)
    assert isinstance(events[-1], SessionEnded) and not events[-1].was_logged_on
    assert conn.closed


# 1S with a too-high answer: test_connection.test_logon_ack_with_higher_seq_triggers_resend_on_rt;
# 1S with a too-low answer: test_connection.test_logon_answer_with_too_low_seq_never_logs_on;
# 1S first message not a Logon: test_connection.test_non_logon_first_message_is_a_violation.

LOGON_BODY = [(98, b"0"), (108, b"30"), (1137, b"9")]
RESET_LOGON_BODY = [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]


def continuing_initiator(sender: int, target: int) -> tuple[Session, bytes]:
    """An initiator that logs on without a reset from stored numbers, and its Logon."""
    store = MemoryStore()
    store.set_next_sender_seq(sender)
    store.set_next_target_seq(target)
    conn = FixConnection(_settings(Role.INITIATOR, reset_seq_num_on_logon=False), store)
    conn.start(T0)
    s = Session(conn, CLIENT, GATEWAY)
    logon = s.out()
    assert logon == s.ours(b"A", sender, LOGON_BODY)
    return s, logon


def test_1s_unrequested_reset_in_the_logon_answer_is_acknowledged_and_taken() -> None:
    # We logged on as MsgSeqNum 5 without 141; the acceptor answers 34=1 141=Y: it restarted
    # both numbers. We follow, acknowledge with our own reset Logon (34=1) so that the acceptor
    # knows where our numbering stands, and are logged on at (2, 2).
    s, _ = continuing_initiator(5, 7)
    events = s.conn.receive_data(gateway_logon(), T0)
    assert s.out() == s.ours(b"A", 1, RESET_LOGON_BODY)
    assert events == [LoggedOn(30, True, 2, 2), SequenceNumbersReset(2, 2)]
    assert s.conn.state is State.ACTIVE
    # The acceptor's answer to the acknowledgement ends the exchange: it is not answered again.
    assert s.conn.receive_data(gateway_logon(), T0) == [SequenceNumbersReset(2, 2)]
    assert s.out() == b""
    (ev,) = s.conn.receive_data(s.peer(b"8", 2, [(17, b"e1")]), T0)
    assert isinstance(ev, ApplicationMessage) and ev.seq_num == 2


def test_1s_unrequested_reset_answer_to_our_logon_numbered_1_needs_no_acknowledgement() -> None:
    s, _ = continuing_initiator(1, 1)
    assert s.conn.receive_data(gateway_logon(), T0) == [LoggedOn(30, True, 2, 2)]
    assert s.out() == b"" and s.conn.state is State.ACTIVE


def test_1s_unrequested_reset_answer_numbered_above_1_logs_out() -> None:
    s, _ = continuing_initiator(5, 7)
    events = s.conn.receive_data(gateway_logon(3), T0)
    assert s.out() == logout(s, 6, "Logon with ResetSeqNumFlag=Y must have MsgSeqNum 1, got 3")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed
    assert not events[-1].was_logged_on  # type: ignore[attr-defined]


def test_1s_unrequested_reset_acknowledgement_settles_with_an_acceptor_core() -> None:
    # Our acceptor never answers with an unasked 141=Y, so the answer is played by hand; the
    # acknowledgement then meets a real acceptor core, which takes it as a reset Logon.
    client, logon = continuing_initiator(5, 7)
    gateway = FixConnection(_settings(Role.ACCEPTOR))
    gateway.start(T0)
    gateway.receive_data(logon, T0)
    store = MemoryStore()
    store.set_next_target_seq(5)
    gateway.accept_logon(T0, store=store)
    gateway.data_to_send()  # replaced by the hand-made 141=Y answer below
    client.conn.receive_data(gateway_logon(), T0)
    assert gateway.receive_data(client.out(), T0) == [SequenceNumbersReset(2, 2)]
    assert client.conn.receive_data(gateway.data_to_send(), T0) == [SequenceNumbersReset(2, 2)]
    assert client.out() == b""
    assert (client.conn.next_sender_seq, client.conn.next_target_seq) == (2, 2)
    assert (gateway.next_sender_seq, gateway.next_target_seq) == (2, 2)


def test_1b_valid_logon_is_answered_with_a_fixt_logon() -> None:
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    (req,) = conn.receive_data(client_logon(), T0)
    assert isinstance(req, LogonRequested) and req.reset_seq_num
    assert conn.data_to_send() == b"", "nothing is sent before the application decides"
    assert conn.accept_logon(T0, store=MemoryStore()) == [LoggedOn(30, True, 2, 2)]
    assert conn.data_to_send() == Session(conn, GATEWAY, CLIENT).ours(
        b"A", 1, [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]
    )


def test_1b_logon_with_seq_too_high_is_answered_then_resend_requested() -> None:
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    conn.receive_data(client_logon(5, reset=False), T0)
    events = conn.accept_logon(T0, store=MemoryStore())
    # LoggedOn reports the numbers after the ResendRequest it caused went out.
    assert events == [LoggedOn(30, False, 3, 1), ResendRequestSent(1, 0)]
    s = Session(conn, GATEWAY, CLIENT)
    assert conn.data_to_send() == s.ours(
        b"A", 1, [(98, b"0"), (108, b"30"), (1137, b"9")]
    ) + s.ours(b"2", 2, [(7, b"1"), (16, b"0")])
    # The client gap-fills 1..4 and its Logon's own number: in sync at 6.
    events = conn.receive_data(
        s.peer(b"4", 1, [(123, b"Y"), (36, b"6")], poss_dup=b"Y"), T0
    )
    # requested_from: the numbers 1..5 we asked for were skipped, not resent.
    assert events == [SequenceResetReceived(6, True, requested_from=1)]
    assert conn.next_target_seq == 6 and not conn.resend_in_progress


def test_1b_logon_with_seq_too_low_gets_a_logout_and_no_logon() -> None:
    store = MemoryStore()
    store.set_next_target_seq(10)
    store.set_next_sender_seq(7)
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    conn.receive_data(client_logon(3, reset=False), T0)
    events = conn.accept_logon(T0, store=store)
    assert conn.data_to_send() == logout(
        Session(conn, GATEWAY, CLIENT), 7, "MsgSeqNum too low, expecting 10 but received 3"
    )
    assert kinds(events) == [ProtocolViolation, SessionEnded]
    assert not events[-1].was_logged_on and conn.closed  # type: ignore[attr-defined]


def test_1b_logon_without_default_appl_ver_id_is_refused() -> None:
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    events = conn.receive_data(client_logon(appl_ver=False), T0)
    assert conn.data_to_send() == logout(
        Session(conn, GATEWAY, CLIENT), 1, "Required tag missing: DefaultApplVerID(1137)"
    )
    assert kinds(events) == [SessionEnded] and conn.closed


def test_1b_logon_with_reset_flag_and_seq_above_1_is_refused() -> None:
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    conn.receive_data(client_logon(4, reset=True), T0)
    events = conn.accept_logon(T0, store=MemoryStore())
    assert conn.data_to_send() == logout(
        Session(conn, GATEWAY, CLIENT), 1, "Logon with ResetSeqNumFlag=Y must have MsgSeqNum 1, got 4"
    )
    assert not any(isinstance(e, LoggedOn) for e in events) and conn.closed


def test_1b_first_message_not_logon_disconnects_without_answer() -> None:
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    hb = encode_message(
        b"0", [(49, CLIENT), (56, GATEWAY), (34, b"1"), (52, utc_timestamp(T0))], []
    )
    events = conn.receive_data(hb, T0)
    assert kinds(events) == [ProtocolViolation, SessionEnded]
    assert conn.data_to_send() == b"" and conn.closed


# --------------------------------------------------------------------------- 2/3: standard header, trailer
def test_2a_seq_as_expected_is_accepted_and_counted(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"8", 2, [(17, b"e1")]), T0)
    assert len(events) == 1 and isinstance(events[0], ApplicationMessage)
    assert (events[0].seq_num, events[0].poss_dup, events[0].message.get(17)) == (2, False, b"e1")
    assert s.conn.next_target_seq == 3 and s.out() == b""


def test_2b_seq_too_high_requests_resend(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"8", 5, [(17, b"e5")]), T0)
    assert events == [ResendRequestSent(2, 0)]
    assert s.out() == s.ours(b"2", 2, [(7, b"2"), (16, b"0")])
    assert s.conn.next_target_seq == 2 and s.conn.resend_in_progress


def test_2c_seq_too_low_without_poss_dup_logs_out(s: Session) -> None:
    # Initiator side also: test_connection.test_too_low_without_possdup_logs_out.
    s.conn.receive_data(s.peer(b"0", 2), T0)
    events = s.conn.receive_data(s.peer(b"0", 2), T0)
    assert s.out() == logout(s, 2, "MsgSeqNum too low, expecting 3 but received 2")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed


def test_2d_garbled_message_is_ignored_and_not_counted(s: Session) -> None:
    # A header whose BodyLength does not reach a CheckSum, then noise: all discarded up to the
    # next "8=" that follows an SOH.
    junk = b"8=FIXT.1.1\x019=5\x0135=0\x01\x01noise\x01"
    events = s.conn.receive_data(junk + s.peer(b"0", 2), T0)
    assert events and all(isinstance(e, GarbledMessage) for e in events)
    assert s.conn.next_target_seq == 3, "the good message after the junk is taken, as 2"
    assert s.out() == b"" and s.conn.state is State.ACTIVE


def test_3b_bad_checksum_is_garbled_and_not_counted(s: Session) -> None:
    # Initiator side also: test_connection.test_garbled_bytes_are_reported_and_skipped.
    good = s.peer(b"0", 2)
    bad = good[:-4] + (b"000" if good[-4:-1] != b"000" else b"001") + b"\x01"
    events = s.conn.receive_data(bad, T0)
    assert kinds(events) == [GarbledMessage] and "CheckSum" in events[0].reason  # type: ignore[attr-defined]
    assert s.conn.next_target_seq == 2 and s.out() == b""
    assert s.conn.receive_data(good, T0) == [] and s.conn.next_target_seq == 3


def test_2e_poss_dup_with_seq_too_low_is_ignored(s: Session) -> None:
    s.conn.receive_data(s.peer(b"8", 2, [(17, b"e2")]), T0)
    again = s.peer(b"8", 2, [(17, b"e2")], at=T0 + 1, poss_dup=b"Y", orig=utc_timestamp(T0))
    assert s.conn.receive_data(again, T0 + 1) == []
    assert s.out() == b"" and s.conn.next_target_seq == 3


def test_2e_poss_dup_with_seq_as_expected_is_delivered_as_poss_dup(s: Session) -> None:
    msg = s.peer(b"8", 2, [(17, b"e2")], at=T0 + 1, poss_dup=b"Y", orig=utc_timestamp(T0))
    (ev,) = s.conn.receive_data(msg, T0 + 1)
    assert isinstance(ev, ApplicationMessage) and ev.poss_dup and ev.seq_num == 2
    assert s.conn.next_target_seq == 3


def test_2f_poss_dup_orig_sending_time_later_than_sending_time_rejects_and_logs_out(
    s: Session,
) -> None:
    msg = s.peer(b"0", 2, poss_dup=b"Y", orig=utc_timestamp(T0 + 5))
    events = s.conn.receive_data(msg, T0)
    assert s.out() == reject(
        s, 2, 2, b"0", 10,
        "SendingTime accuracy problem: OrigSendingTime(122) is later than SendingTime(52)", 122,
    ) + logout(s, 3, "SendingTime accuracy problem")
    assert kinds(events) == [RejectSent, ProtocolViolation, SessionEnded]
    assert s.conn.next_target_seq == 3, "the rejected message is counted"
    assert s.conn.closed


def test_2f_poss_dup_orig_sending_time_equal_to_sending_time_is_accepted(s: Session) -> None:
    msg = s.peer(b"0", 2, poss_dup=b"Y", orig=utc_timestamp(T0))
    assert s.conn.receive_data(msg, T0) == [] and s.out() == b""
    assert s.conn.next_target_seq == 3


def test_2g_poss_dup_without_orig_sending_time_is_rejected_and_counted(s: Session) -> None:
    # The too-low variant: test_connection.test_possdup_without_orig_sending_time_is_rejected.
    events = s.conn.receive_data(s.peer(b"8", 2, [(17, b"e2")], poss_dup=b"Y"), T0)
    assert s.out() == reject(s, 2, 2, b"8", 1, "OrigSendingTime(122) required when PossDupFlag=Y", 122)
    assert events == [RejectSent(2, 1, "OrigSendingTime(122) required when PossDupFlag=Y", 122, b"8")]
    assert s.conn.next_target_seq == 3 and not s.conn.closed


def test_2i_wrong_begin_string_logs_out(s: Session) -> None:
    # Initiator side also: test_connection.test_wrong_begin_string_ends_the_session.
    events = s.conn.receive_data(s.peer(b"0", 2, begin=b"FIX.4.4"), T0)
    assert s.out() == logout(s, 2, "Incorrect BeginString 'FIX.4.4', expected FIXT.1.1")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed


def test_2k_wrong_comp_id_rejects_with_373_9_and_logs_out(s: Session) -> None:
    # Initiator side also: test_connection.test_wrong_comp_id_is_rejected_then_logged_out.
    events = s.conn.receive_data(s.peer(b"0", 2, sender=b"Mallory"), T0)
    text = f"CompID problem: got 49=Mallory 56={s.us.decode()}"
    assert s.out() == reject(s, 2, 2, b"0", 9, text) + logout(s, 3, "CompID problem")
    assert kinds(events) == [RejectSent, ProtocolViolation, SessionEnded] and s.conn.closed


def test_2m_wrong_body_length_is_garbled_and_not_counted(s: Session) -> None:
    good = s.peer(b"0", 2)
    length = good.split(b"\x01")[1]  # b"9=<n>"
    short = good.replace(length, b"9=%d" % (int(length[2:]) - 3), 1)
    events = s.conn.receive_data(short + good, T0)
    assert isinstance(events[0], GarbledMessage) and "BodyLength" in events[0].reason
    assert s.conn.next_target_seq == 3, "only the intact copy was counted"
    assert s.out() == b""


def test_2o_sending_time_out_of_range_rejects_with_373_10_and_logs_out(s: Session) -> None:
    # Initiator side also: test_connection.test_sending_time_out_of_range_is_rejected_then_logged_out.
    events = s.conn.receive_data(s.peer(b"0", 2, at=T0 - 31), T0)
    assert s.out() == reject(
        s, 2, 2, b"0", 10, "SendingTime accuracy problem: 31.0 s off (limit 30 s)", 52
    ) + logout(s, 3, "SendingTime accuracy problem")
    assert kinds(events) == [RejectSent, ProtocolViolation, SessionEnded]


def test_2q_invalid_msg_type_rejects_with_373_11_and_counts() -> None:
    # Initiator side also: test_connection.test_unknown_msg_type_is_rejected_when_types_are_declared.
    s = acceptor(application_msg_types=frozenset({b"D", b"F"}))
    events = s.conn.receive_data(s.peer(b"ZZ", 2), T0)
    assert s.out() == reject(s, 2, 2, b"ZZ", 11, "Invalid MsgType 'ZZ'", 35)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_2t_first_three_fields_out_of_order_is_garbled(s: Session) -> None:
    # MsgType after SenderCompID: BeginString, BodyLength, MsgType must open every message.
    swapped = encode_pairs(
        [(49, s.them), (35, b"0"), (56, s.us), (34, b"2"), (52, utc_timestamp(T0))]
    )
    events = s.conn.receive_data(swapped, T0)
    assert events == [GarbledMessage("MsgType(35) is not the third field", b"")]
    assert s.conn.next_target_seq == 2 and s.out() == b""
    assert s.conn.receive_data(s.peer(b"0", 2), T0) == [] and s.conn.next_target_seq == 3


def test_2t_begin_string_not_first_is_garbled(s: Session) -> None:
    raw = s.peer(b"0", 2)
    events = s.conn.receive_data(b"9=5\x01" + raw, T0)
    assert isinstance(events[0], GarbledMessage)
    assert s.conn.next_target_seq == 3 and s.out() == b""


def test_2_missing_msg_seq_num_logs_out() -> None:
    # Initiator side: test_connection.test_missing_msg_seq_num_ends_the_session.
    s = acceptor()
    raw = encode_message(b"0", [(49, CLIENT), (56, GATEWAY), (52, utc_timestamp(T0))], [])
    events = s.conn.receive_data(raw, T0)
    assert s.out() == logout(s, 2, "MsgSeqNum(34) missing")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed


# --------------------------------------------------------------------------- 4-6: heartbeats
def test_5_heartbeat_is_accepted_and_counted(s: Session) -> None:
    assert s.conn.receive_data(s.peer(b"0", 2), T0 + 1) == []
    assert s.conn.next_target_seq == 3 and s.out() == b""


def test_4_heartbeat_after_heartbeat_interval_of_outbound_silence(s: Session) -> None:
    # Initiator side: test_connection.test_heartbeat_after_outbound_silence.
    s.conn.receive_data(s.peer(b"0", 2, at=T0 + 29), T0 + 29)
    assert s.conn.next_deadline() == T0 + 30
    assert s.conn.tick(T0 + 29.9) == [] and s.out() == b""
    assert s.conn.tick(T0 + 30) == []
    assert s.out() == s.ours(b"0", 2, at=T0 + 30)


def test_4_test_request_is_answered_with_a_heartbeat_echoing_its_id(s: Session) -> None:
    # Initiator side: test_connection.test_test_request_is_answered_with_its_id.
    assert s.conn.receive_data(s.peer(b"1", 2, [(112, b"probe-1")]), T0) == []
    assert s.out() == s.ours(b"0", 2, [(112, b"probe-1")])


def test_4_heartbeat_answering_our_test_request_is_reported(s: Session) -> None:
    req_id = s.conn.test_request(T0, "tr-9")
    assert s.out() == s.ours(b"1", 2, [(112, b"tr-9")])
    assert s.conn.receive_data(s.peer(b"0", 2, [(112, req_id.encode())]), T0) == [
        TestResponse("tr-9")
    ]


def test_6_inbound_silence_sends_test_request_then_disconnects(s: Session) -> None:
    # Initiator side: test_connection.test_test_request_after_inbound_silence_then_timeout.
    s.conn.receive_data(s.peer(b"0", 2, at=T0 + 20), T0 + 20)
    s.conn.tick(T0 + 30)
    assert s.out() == s.ours(b"0", 2, at=T0 + 30)
    # 30 s plus the 20 % transmission allowance of silence: a TestRequest.
    assert s.conn.tick(T0 + 55.9) == [] and s.out() == b""
    assert s.conn.tick(T0 + 56) == []
    assert s.out() == s.ours(b"1", 3, [(112, b"HB-1")], at=T0 + 56)
    # No answer within the same allowance: Logout and disconnect.
    events = s.conn.tick(T0 + 92)
    assert events[0] == HeartbeatTimeout(72.0)
    assert s.out() == logout(s, 4, "no message for 72.0 s, TestRequest unanswered", at=T0 + 92)
    assert isinstance(events[-1], SessionEnded) and s.conn.closed


def test_6_any_message_answers_an_outstanding_test_request(s: Session) -> None:
    s.conn.tick(T0 + 36)
    s.out()
    s.conn.receive_data(s.peer(b"8", 2, [(17, b"e2")], at=T0 + 40), T0 + 40)
    assert s.conn.tick(T0 + 72) == [] and not s.conn.closed


# --------------------------------------------------------------------------- 7: Reject received
def test_7_reject_received_is_counted_and_the_session_goes_on(s: Session) -> None:
    msg = s.peer(b"3", 2, [(45, b"1"), (371, b"58"), (372, b"D"), (373, b"5"), (58, b"bad")])
    (ev,) = s.conn.receive_data(msg, T0)
    assert isinstance(ev, RejectReceived)
    assert (ev.ref_seq_num, ev.ref_tag, ev.ref_msg_type, ev.reason, ev.text) == (
        1, 58, b"D", 5, "bad"
    )
    assert s.conn.next_target_seq == 3 and s.out() == b"" and s.conn.state is State.ACTIVE


# --------------------------------------------------------------------------- 8: ResendRequest
def _history(s: Session) -> None:
    """Our messages 2..6: application D (T0+1), D (T0+2), Heartbeat, F (T0+41), TestRequest."""
    s.conn.send_app(b"D", [(11, b"o1")], T0 + 1)
    s.conn.send_app(b"D", [(11, b"o2")], T0 + 2)
    s.conn.tick(T0 + 32)  # Heartbeat 4 (and nothing else: inbound is not silent long enough)
    s.conn.receive_data(s.peer(b"0", 2, at=T0 + 32), T0 + 32)
    s.conn.send_app(b"F", [(11, b"o3")], T0 + 41)
    s.conn.test_request(T0 + 42, "t")
    s.out()
    assert s.conn.next_sender_seq == 7


def test_8_resend_request_end_0_resends_application_and_gap_fills_admin(s: Session) -> None:
    # Initiator side: test_connection.test_resend_request_is_answered_from_the_store.
    _history(s)
    at = T0 + 50
    events = s.conn.receive_data(s.peer(b"2", 3, [(7, b"2"), (16, b"0")], at=at), at)
    assert events == [ResendServed(2, 6, resent=3, gap_filled=2)]
    assert s.out() == (
        s.resent(b"D", 2, [(11, b"o1")], first=T0 + 1, at=at)
        + s.resent(b"D", 3, [(11, b"o2")], first=T0 + 2, at=at)
        + s.gap_fill(4, 5, at=at)
        + s.resent(b"F", 5, [(11, b"o3")], first=T0 + 41, at=at)
        + s.gap_fill(6, 7, at=at)
    )
    assert s.conn.next_sender_seq == 7, "a resend consumes no sequence number"


def test_8_resend_request_with_explicit_end_stops_there(s: Session) -> None:
    _history(s)
    at = T0 + 50
    events = s.conn.receive_data(s.peer(b"2", 3, [(7, b"3"), (16, b"4")], at=at), at)
    assert events == [ResendServed(3, 4, resent=1, gap_filled=1)]
    assert s.out() == s.resent(b"D", 3, [(11, b"o2")], first=T0 + 2, at=at) + s.gap_fill(
        4, 5, at=at
    )


def test_8_resend_request_end_beyond_last_sent_is_served_through_last(s: Session) -> None:
    _history(s)
    at = T0 + 50
    events = s.conn.receive_data(s.peer(b"2", 3, [(7, b"5"), (16, b"999999")], at=at), at)
    assert events == [ResendServed(5, 6, resent=1, gap_filled=1)]
    assert s.out() == s.resent(b"F", 5, [(11, b"o3")], first=T0 + 41, at=at) + s.gap_fill(
        6, 7, at=at
    )


def test_8_resend_request_with_begin_above_end_rejects_373_5_naming_end_seq_no(
    s: Session,
) -> None:
    _history(s)
    at = T0 + 50
    events = s.conn.receive_data(s.peer(b"2", 3, [(7, b"5"), (16, b"3")], at=at), at)
    text = "Value is incorrect (out of range) for this tag: EndSeqNo(16)=3 is below BeginSeqNo(7)=5"
    assert s.out() == reject(s, 7, 3, b"2", 5, text, 16, at=at), "a Reject and nothing else"
    assert kinds(events) == [RejectSent]
    assert (s.conn.next_sender_seq, s.conn.next_target_seq) == (8, 4)


def test_8_resend_request_of_admin_messages_only_is_one_gap_fill(s: Session) -> None:
    # Our Logon (1) and nothing else: a single SequenceReset-GapFill to 2, never the Logon.
    events = s.conn.receive_data(s.peer(b"2", 2, [(7, b"1"), (16, b"0")]), T0)
    assert events == [ResendServed(1, 1, resent=0, gap_filled=1)]
    assert s.out() == s.gap_fill(1, 2)


def test_8_resend_request_kalshi_profile_without_retransmission_rejects_373_11() -> None:
    # Kalshi (REFERENCE §3.3, §11 #22): NR/DC/RFQ/MD take no ResendRequest: Reject 373=11 and
    # carry on. Initiator side: test_connection.test_resend_request_on_a_session_without_...
    s = acceptor(retransmission=False)
    events = s.conn.receive_data(s.peer(b"2", 2, [(7, b"1"), (16, b"0")]), T0)
    assert s.out() == reject(s, 2, 2, b"2", 11, "ResendRequest is not supported on this session", 35)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3 and not s.conn.closed


# --------------------------------------------------------------------------- 10: SequenceReset-GapFill
def test_10a_gap_fill_with_seq_too_high_requests_resend(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"4", 4, [(123, b"Y"), (36, b"9")]), T0)
    assert events == [ResendRequestSent(2, 0)]
    assert s.out() == s.ours(b"2", 2, [(7, b"2"), (16, b"0")])
    assert s.conn.next_target_seq == 2
    # The resend fills 2..3; the queued gap fill then takes the count to 9.
    events = s.conn.receive_data(
        s.peer(b"4", 2, [(123, b"Y"), (36, b"4")], poss_dup=b"Y", orig=utc_timestamp(T0)), T0
    )
    # The resend's fill of 2..3 names what it skipped; the live gap fill at 4 was not asked for.
    assert events == [
        SequenceResetReceived(4, True, requested_from=2), SequenceResetReceived(9, True)
    ]
    assert s.conn.next_target_seq == 9 and not s.conn.resend_in_progress


def test_10b_gap_fill_with_seq_as_expected_moves_the_expected_number(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"4", 2, [(123, b"Y"), (36, b"12")]), T0)
    assert events == [SequenceResetReceived(12, True)]
    assert s.conn.next_target_seq == 12 and s.out() == b""
    (ev,) = s.conn.receive_data(s.peer(b"8", 12, [(17, b"e12")]), T0)
    assert isinstance(ev, ApplicationMessage) and ev.seq_num == 12


def test_10c_gap_fill_with_seq_too_low_and_poss_dup_is_ignored(s: Session) -> None:
    s.conn.receive_data(s.peer(b"0", 2) + s.peer(b"0", 3), T0)
    msg = s.peer(b"4", 2, [(123, b"Y"), (36, b"3")], poss_dup=b"Y", orig=utc_timestamp(T0))
    assert s.conn.receive_data(msg, T0) == []
    assert s.conn.next_target_seq == 4 and s.out() == b""


def test_10d_gap_fill_with_seq_too_low_without_poss_dup_logs_out(s: Session) -> None:
    s.conn.receive_data(s.peer(b"0", 2) + s.peer(b"0", 3), T0)
    events = s.conn.receive_data(s.peer(b"4", 2, [(123, b"Y"), (36, b"10")]), T0)
    assert s.out() == logout(s, 2, "MsgSeqNum too low, expecting 4 but received 2")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed
    assert s.conn.next_target_seq == 4


def test_10e_gap_fill_lowering_the_number_rejects_with_373_5(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"4", 2, [(123, b"Y"), (36, b"2")]), T0)
    text = "NewSeqNo 2 would lower the expected MsgSeqNum 3"
    assert s.out() == reject(s, 2, 2, b"4", 5, text, 36)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_10_gap_fill_kalshi_profile_without_retransmission() -> None:
    # Kalshi (REFERENCE §11 #22): the simulated NR/DC endpoint answers 373=11 and carries on.
    gw = acceptor(retransmission=False)
    events = gw.conn.receive_data(gw.peer(b"4", 2, [(123, b"Y"), (36, b"7")]), T0)
    assert gw.out() == reject(gw, 2, 2, b"4", 11, "SequenceReset is not supported on this session", 35)
    assert kinds(events) == [RejectSent] and gw.conn.next_target_seq == 3
    # Our client on such an endpoint honours one: refusing it would only fake a gap.
    cl = initiator(retransmission=False)
    events = cl.conn.receive_data(cl.peer(b"4", 2, [(123, b"Y"), (36, b"7")]), T0)
    assert events == [SequenceResetReceived(7, True)] and cl.out() == b""


def test_10_live_gap_fill_without_poss_dup_names_no_requested_numbers(s: Session) -> None:
    # Only a fill answering our ResendRequest (PossDup=Y, resend outstanding) skips numbers we
    # asked for; an in-sequence fill with nothing outstanding reports none.
    events = s.conn.receive_data(s.peer(b"4", 2, [(123, b"Y"), (36, b"5")]), T0)
    assert events == [SequenceResetReceived(5, True)] and events[0].requested_from is None


def test_10_gap_fill_over_requested_application_numbers_says_what_it_skipped(
    s: Session,
) -> None:
    # Messages 2..3 (say, ExecutionReports) were lost; the peer no longer has them and fills
    # 2..3 instead of resending. The core cannot tell them from session messages, so the event
    # names the skipped range for the supervisor to reconcile elsewhere.
    s.conn.receive_data(s.peer(b"8", 4, [(17, b"e4")]), T0)
    s.out()
    events = s.conn.receive_data(
        s.peer(b"4", 2, [(123, b"Y"), (36, b"4")], poss_dup=b"Y", orig=utc_timestamp(T0)), T0
    )
    assert events[0] == SequenceResetReceived(4, True, requested_from=2)
    assert kinds(events) == [SequenceResetReceived, ApplicationMessage]
    assert s.conn.next_target_seq == 5 and not s.conn.resend_in_progress


# ------------------------------------------------------ rejected ResendRequest (Kalshi §3.3)
def test_rejected_resend_request_gives_up_the_gap_and_delivers_what_waited(s: Session) -> None:
    # Kalshi rejects a ResendRequest whose BeginSeqNo is older than its retention period. The
    # Reject is numbered after the gap, so it is handled ahead of it: the gap is reported as a
    # SequenceGap (recover it through the drop copy) and the queued messages flow again.
    s.conn.receive_data(s.peer(b"8", 5, [(17, b"e5")]), T0)
    assert s.out() == s.ours(b"2", 2, [(7, b"2"), (16, b"0")])
    events = s.conn.receive_data(
        s.peer(b"3", 6, [(45, b"2"), (372, b"2"), (373, b"5"), (58, b"BeginSeqNo too old")]), T0
    )
    assert kinds(events) == [RejectReceived, SequenceGap, ApplicationMessage]
    assert events[0].ref_seq_num == 2
    assert events[1] == SequenceGap(2, 5, resend_rejected=True)
    assert events[2].message.get(17) == b"e5"
    assert s.conn.next_target_seq == 7 and not s.conn.resend_in_progress
    # Nothing is asked again once the stall timer runs, and the next message is in sequence.
    assert s.conn.tick(T0 + 31) == [] and b"35=2\x01" not in s.out()
    (ev,) = s.conn.receive_data(s.peer(b"8", 7, [(17, b"e7")], at=T0 + 31), T0 + 31)
    assert isinstance(ev, ApplicationMessage) and ev.seq_num == 7


def test_resend_request_below_the_resend_floor_is_rejected_373_5() -> None:
    # Kalshi answers a BeginSeqNo older than its retention period with a Reject (§3.3); the
    # simulated gateway models it by raising resend_floor.
    gw = acceptor()
    gw.conn.resend_floor = 2
    events = gw.conn.receive_data(gw.peer(b"2", 2, [(7, b"1"), (16, b"0")]), T0)
    assert gw.out() == reject(gw, 2, 2, b"2", 5, "BeginSeqNo 1 is older than the retention period", 7)
    assert kinds(events) == [RejectSent] and gw.conn.next_target_seq == 3


def test_rejected_resend_request_without_ref_seq_num_is_known_by_ref_msg_type(
    s: Session,
) -> None:
    s.conn.receive_data(s.peer(b"8", 4, [(17, b"e4")]), T0)
    s.out()
    events = s.conn.receive_data(s.peer(b"3", 5, [(372, b"2"), (58, b"no")]), T0)
    # RefSeqNum(45) is required on a Reject: the peer hears of it (373=1), and the Reject is
    # acted on all the same, or the gap it refuses to fill would stall for ever.
    assert s.out() == reject(s, 3, 5, b"3", 1, "Required tag missing: RefSeqNum(45)", 45)
    assert kinds(events) == [RejectSent, RejectReceived, SequenceGap, ApplicationMessage]
    assert events[2] == SequenceGap(2, 4, resend_rejected=True)
    assert s.conn.next_target_seq == 6


def test_a_reject_of_another_message_during_a_resend_waits_its_turn(s: Session) -> None:
    # A Reject naming something other than our ResendRequest is ordinary: queued behind the gap.
    s.conn.receive_data(s.peer(b"8", 4, [(17, b"e4")]), T0)
    s.out()
    events = s.conn.receive_data(s.peer(b"3", 5, [(45, b"1"), (372, b"A")]), T0)
    assert events == [] and s.conn.resend_in_progress
    events = s.conn.receive_data(
        s.peer(b"4", 2, [(123, b"Y"), (36, b"4")], poss_dup=b"Y", orig=utc_timestamp(T0)), T0
    )
    assert kinds(events) == [SequenceResetReceived, ApplicationMessage, RejectReceived]
    assert s.conn.next_target_seq == 6


def test_rejected_resend_after_a_logon_gap_moves_past_the_logon() -> None:
    # The Logon (MsgSeqNum 5) revealed 1..4 missing; nothing is queued. A rejected resend
    # gives up 1..5 (the Logon's own number included, which the fill would have covered).
    conn = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    conn.start(T0)
    conn.data_to_send()
    events = conn.receive_data(gateway_logon(5, reset=False), T0)
    assert kinds(events) == [LoggedOn, ResendRequestSent]
    s = Session(conn, CLIENT, GATEWAY)
    events = conn.receive_data(s.peer(b"3", 6, [(45, b"2"), (372, b"2")]), T0)
    assert kinds(events) == [RejectReceived, SequenceGap]
    assert events[1] == SequenceGap(1, 6, resend_rejected=True)
    assert conn.next_target_seq == 7 and not conn.resend_in_progress


# --------------------------------------------------------------------------- 11: SequenceReset-Reset
def test_11a_reset_with_higher_new_seq_no_ignores_msg_seq_num(s: Session) -> None:
    # Initiator side: test_connection.test_sequence_reset_reset_mode_ignores_seq_and_cannot_lower.
    events = s.conn.receive_data(s.peer(b"4", 77, [(36, b"40")]), T0)
    assert events == [SequenceResetReceived(40, False)]
    assert s.conn.next_target_seq == 40 and s.out() == b""


def test_11b_reset_with_new_seq_no_equal_to_expected_changes_nothing(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"4", 5, [(36, b"2")]), T0)
    assert events == [SequenceResetReceived(2, False)]
    assert s.conn.next_target_seq == 2 and s.out() == b""


def test_11c_reset_with_lower_new_seq_no_rejects_with_373_5(s: Session) -> None:
    s.conn.receive_data(s.peer(b"4", 1, [(36, b"20")]), T0)
    events = s.conn.receive_data(s.peer(b"4", 1, [(36, b"10")]), T0)
    assert s.out() == reject(s, 2, 1, b"4", 5, "NewSeqNo 10 would lower the expected MsgSeqNum 20", 36)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 20


def test_11_reset_ends_an_outstanding_resend_and_releases_the_queue(s: Session) -> None:
    s.conn.receive_data(s.peer(b"8", 4, [(17, b"e4")]), T0)
    s.out()
    events = s.conn.receive_data(s.peer(b"4", 3, [(36, b"4")]), T0)
    assert kinds(events) == [SequenceResetReceived, ApplicationMessage]
    assert s.conn.next_target_seq == 5 and not s.conn.resend_in_progress


# --------------------------------------------------------------------------- 12/13: Logout
def test_12_initiated_logout_waits_for_the_answer_and_processes_messages_meanwhile(
    s: Session,
) -> None:
    # Initiator side of the handshake: test_connection.test_graceful_logout_handshake.
    assert s.conn.logout(T0, "end of day") == []
    assert s.out() == logout(s, 2, "end of day")
    (ev,) = s.conn.receive_data(s.peer(b"8", 2, [(17, b"late")]), T0 + 1)
    assert isinstance(ev, ApplicationMessage) and ev.message.get(17) == b"late"
    (ended,) = s.conn.receive_data(s.peer(b"5", 3), T0 + 1)
    assert ended == SessionEnded("local", None, ended.reason, clean=True, was_logged_on=True)
    assert s.out() == b"" and s.conn.closed


def test_12_logout_answer_timeout_disconnects(s: Session) -> None:
    # Initiator side: test_connection.test_logout_wait_is_bounded.
    s.conn.logout(T0)
    s.out()
    assert s.conn.next_deadline() == T0 + 5
    assert s.conn.tick(T0 + 4.9) == []
    (ended,) = s.conn.tick(T0 + 5)
    assert isinstance(ended, SessionEnded) and not ended.clean and s.conn.closed
    assert s.out() == b""


def test_13_received_logout_is_answered_then_disconnected(s: Session) -> None:
    # Initiator side: test_connection.test_peer_logout_is_answered.
    (ended,) = s.conn.receive_data(s.peer(b"5", 2, [(58, b"bye")]), T0)
    assert s.out() == logout(s, 2)
    assert isinstance(ended, SessionEnded) and ended.initiated_by == "peer" and ended.clean
    assert ended.text == "bye" and s.conn.next_target_seq == 3


# --------------------------------------------------------------------------- 14: field-level
def test_14a_undefined_tag_reject_written_for_the_application(s: Session) -> None:
    # The core holds no application dictionary: the application finds the undefined tag and
    # the core writes the standard Reject (Kalshi's example in REFERENCE §3.4).
    (app,) = s.conn.receive_data(s.peer(b"D", 2, [(11, b"c1"), (333333, b"x")]), T0)
    assert isinstance(app, ApplicationMessage)
    events = s.conn.send_reject(T0, app.seq_num, 3, "Undefined tag received",
                                ref_tag=333333, ref_msg_type=b"D")
    assert s.out() == s.ours(
        b"3", 2, [(45, b"2"), (371, b"333333"), (372, b"D"), (373, b"3"),
                  (58, b"Undefined tag received")],
    )
    assert events == [RejectSent(2, 3, "Undefined tag received", 333333, b"D")]
    assert s.conn.next_target_seq == 3, "the rejected message keeps its number"


def test_14b_required_tag_missing_in_resend_request_rejects_373_1(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"2", 2, [(7, b"1")]), T0)
    assert s.out() == reject(s, 2, 2, b"2", 1, "Required tag missing: EndSeqNo(16)", 16)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14b_required_tag_missing_in_sequence_reset_rejects_373_1(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"4", 2, [(123, b"Y")]), T0)
    assert s.out() == reject(s, 2, 2, b"4", 1, "Required tag missing: NewSeqNo(36)", 36)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14b_required_header_tag_missing_rejects_373_1_and_counts() -> None:
    # Initiator side: test_connection.test_missing_sending_time_is_rejected_and_counted.
    s = acceptor()
    raw = encode_message(b"0", [(49, CLIENT), (56, GATEWAY), (34, b"2")], [])
    events = s.conn.receive_data(raw, T0)
    assert s.out() == reject(s, 2, 2, b"0", 1, "Required tag missing: SendingTime(52)", 52)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14d_tag_without_value_rejects_373_4(s: Session) -> None:
    # Initiator side: test_connection.test_tag_without_value_is_rejected_with_373_4.
    events = s.conn.receive_data(s.peer(b"0", 2, [(112, b"")]), T0)
    assert s.out() == reject(s, 2, 2, b"0", 4, "Tag specified without a value: 112", 112)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14e_value_out_of_range_poss_dup_flag_rejects_373_5(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"0", 2, poss_dup=b"X"), T0)
    text = "Value is incorrect (out of range) for this tag: PossDupFlag(43)=X"
    assert s.out() == reject(s, 2, 2, b"0", 5, text, 43)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14e_poss_dup_flag_n_is_an_ordinary_message(s: Session) -> None:
    (ev,) = s.conn.receive_data(s.peer(b"8", 2, [(17, b"e2")], poss_dup=b"N"), T0)
    assert isinstance(ev, ApplicationMessage) and not ev.poss_dup and s.out() == b""


def test_14f_wrong_data_format_in_resend_request_rejects_373_6(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"2", 2, [(7, b"two"), (16, b"0")]), T0)
    assert s.out() == reject(
        s, 2, 2, b"2", 6, "Incorrect data format for value: BeginSeqNo(7)=two", 7
    )
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14f_wrong_data_format_in_new_seq_no_rejects_373_6(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"4", 2, [(123, b"Y"), (36, b"1e3")]), T0)
    assert s.out() == reject(
        s, 2, 2, b"4", 6, "Incorrect data format for value: NewSeqNo(36)=1e3", 36
    )
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14f_wrong_data_format_in_orig_sending_time_rejects_373_6(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"0", 2, poss_dup=b"Y", orig=b"yesterday"), T0)
    text = "OrigSendingTime(122) is not a UTCTimestamp: 'yesterday'"
    assert s.out() == reject(s, 2, 2, b"0", 6, text, 122)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14h_tag_repeated_in_a_session_message_rejects_373_13(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"1", 2, [(112, b"a"), (112, b"b")]), T0)
    assert s.out() == reject(s, 2, 2, b"1", 13, "Tag appears more than once: 112", 112)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


# ---------------------------------------------------- 14: the session dictionary (dictionary.py)
def raw_message(pairs: Pairs) -> bytes:
    """Wire bytes built by hand, for fields the encoder refuses to write (tag 0)."""
    body = b"".join(b"%d=%s\x01" % (tag, value) for tag, value in pairs)
    head = b"8=FIXT.1.1\x019=%d\x01" % len(body) + body
    return head + b"10=%03d\x01" % checksum(head)


def test_session_dictionary_tables_agree() -> None:
    # A format for a tag no session message may carry, or a required tag outside the allowed
    # set, would be a typo in the table.
    allowed = set().union(*(m.allowed for m in SESSION_MESSAGES.values()))
    assert set(SESSION_FIELDS) <= allowed
    assert all(m.required <= m.allowed for m in SESSION_MESSAGES.values())
    assert set(SESSION_MESSAGES) == {b"0", b"1", b"2", b"3", b"4", b"5", b"A"}


def test_14a_tag_number_0_in_a_session_message_rejects_373_0(s: Session) -> None:
    header = [(35, b"0"), (49, s.them), (56, s.us), (34, b"2"), (52, utc_timestamp(T0))]
    events = s.conn.receive_data(raw_message([*header, (0, b"x")]), T0)
    assert s.out() == reject(s, 2, 2, b"0", 0, "Invalid tag number: 0", 0)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14c_tag_not_defined_for_a_session_message_rejects_373_2_and_goes_no_further(
    s: Session,
) -> None:
    # The TestRequest is counted but not answered with a Heartbeat.
    events = s.conn.receive_data(s.peer(b"1", 2, [(112, b"t"), (55, b"X")]), T0)
    assert s.out() == reject(s, 2, 2, b"1", 2, "Tag not defined for this message type: 55", 55)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 3


def test_14c_user_defined_tags_are_tolerated_on_session_messages(s: Session) -> None:
    body = [(112, b"t"), (5001, b"x"), (21011, b"Y")]
    events = s.conn.receive_data(s.peer(b"1", 2, body), T0)
    assert s.out() == s.ours(b"0", 2, [(112, b"t")])
    assert events == [] and s.conn.next_target_seq == 3


@pytest.mark.parametrize(
    ("msg_type", "body", "reason", "tag", "text"),
    [
        (b"0", [(97, b"maybe")], 6, 97, "Incorrect data format for value: PossResend(97)=maybe"),
        (b"0", [(97, b"X")], 5, 97,
         "Value is incorrect (out of range) for this tag: PossResend(97)=X"),
        (b"2", [(7, b"1"), (16, b"-1")], 5, 16,
         "Value is incorrect (out of range) for this tag: EndSeqNo(16)=-1"),
        (b"2", [(7, b"0"), (16, b"0")], 5, 7,
         "Value is incorrect (out of range) for this tag: BeginSeqNo(7)=0"),
        (b"2", [(7, b"1"), (16, b"x")], 6, 16, "Incorrect data format for value: EndSeqNo(16)=x"),
        (b"4", [(123, b"Y"), (36, b"+5")], 6, 36,
         "Incorrect data format for value: NewSeqNo(36)=+5"),
        (b"3", [(45, b"1"), (373, b"bad")], 6, 373,
         "Incorrect data format for value: SessionRejectReason(373)=bad"),
    ],
)
def test_14e_14f_session_field_value_rejects_and_counts(
    s: Session, msg_type: bytes, body: Pairs, reason: int, tag: int, text: str
) -> None:
    events = s.conn.receive_data(s.peer(msg_type, 2, body), T0)
    assert s.out() == reject(s, 2, 2, msg_type, reason, text, tag)
    assert kinds(events)[0] is RejectSent and s.conn.next_target_seq == 3


@pytest.mark.parametrize(
    ("flag", "reason", "text"),
    [(b"X", 5, "Value is incorrect (out of range) for this tag: GapFillFlag(123)=X"),
     (b"YES", 6, "Incorrect data format for value: GapFillFlag(123)=YES")],
)
def test_14e_14f_gap_fill_flag_neither_y_nor_n_rejects(
    s: Session, flag: bytes, reason: int, text: str
) -> None:
    # Not a GapFill, so read as Reset mode, whose MsgSeqNum counts for nothing.
    events = s.conn.receive_data(s.peer(b"4", 2, [(123, flag), (36, b"9")]), T0)
    assert s.out() == reject(s, 2, 2, b"4", reason, text, 123)
    assert kinds(events) == [RejectSent] and s.conn.next_target_seq == 2


def test_14f_malformed_resend_request_ahead_of_a_gap_is_rejected_and_counted_in_turn(
    s: Session,
) -> None:
    # A ResendRequest is handled on arrival even ahead of a gap; rejected, it still holds its
    # number, which the fill of 2..3 then moves past.
    events = s.conn.receive_data(s.peer(b"2", 4, [(7, b"1"), (16, b"x")]), T0)
    text = "Incorrect data format for value: EndSeqNo(16)=x"
    assert s.out() == reject(s, 2, 4, b"2", 6, text, 16) + s.ours(
        b"2", 3, [(7, b"2"), (16, b"0")]
    )
    assert kinds(events) == [RejectSent, ResendRequestSent]
    fill = s.peer(b"4", 2, [(123, b"Y"), (36, b"4")], poss_dup=b"Y", orig=utc_timestamp(T0))
    s.conn.receive_data(fill, T0)
    assert s.conn.next_target_seq == 5 and not s.conn.resend_in_progress


def test_14c_malformed_reject_is_rejected_and_still_heard(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"3", 2, [(45, b"1"), (11, b"o1")]), T0)
    assert s.out() == reject(s, 2, 2, b"3", 2, "Tag not defined for this message type: 11", 11)
    assert kinds(events) == [RejectSent, RejectReceived] and s.conn.next_target_seq == 3


def test_14c_malformed_reject_of_our_reject_is_not_rejected_again(s: Session) -> None:
    body = [(45, b"1"), (372, b"3"), (11, b"o1")]
    events = s.conn.receive_data(s.peer(b"3", 2, body), T0)
    assert s.out() == b"", "two engines must not reject each other's Rejects for ever"
    assert kinds(events) == [RejectReceived] and s.conn.next_target_seq == 3


def test_14c_malformed_logout_is_rejected_and_still_honoured(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"5", 2, [(11, b"o1")]), T0)
    assert s.out() == reject(
        s, 2, 2, b"5", 2, "Tag not defined for this message type: 11", 11
    ) + logout(s, 3)
    assert kinds(events) == [RejectSent, SessionEnded] and s.conn.closed


def test_14c_malformed_reset_logon_mid_session_logs_out(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"A", 1, [*RESET_LOGON_BODY, (11, b"o1")]), T0)
    assert s.out() == logout(s, 2, "Tag not defined for this message type: 11")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed


def test_14_application_messages_are_not_checked_against_the_session_dictionary(
    s: Session,
) -> None:
    # Session tags with values a session message could not carry, on an ExecutionReport or a
    # NewOrderSingle: the application's business, delivered as they are.
    body = [(17, b"e1"), (7, b"x"), (16, b"-1"), (141, b"maybe"), (108, b"abc")]
    header = [(35, b"8"), (49, s.them), (56, s.us), (34, b"2"), (52, utc_timestamp(T0))]
    events = s.conn.receive_data(raw_message([*header, *body, (0, b"z")]), T0)
    assert kinds(events) == [ApplicationMessage] and s.out() == b""


KALSHI_LOGON_BODY = [
    (98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9"),
    (8013, b"N"), (20126, b"N"), (20127, b"N"), (20130, b"g1"), (20200, b"24"), (21003, b"Y"),
    (21005, b"Y"), (21006, b"N"), (21007, b"Y"), (21008, b"Y"), (21011, b"Y"), (21012, b"Y"),
    (21026, b"Y"), (21027, b"Y"), (789, b"1"), (383, b"4096"), (464, b"N"), (553, b"u"),
    (554, b"p"), (58, b"hello"), (95, b"4"), (96, b"c2ln"),
]


def test_1b_logon_with_every_tag_reference_lists_is_handed_to_the_application() -> None:
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    header = [(49, CLIENT), (56, GATEWAY), (34, b"1"), (52, utc_timestamp(T0))]
    events = conn.receive_data(encode_message(b"A", header, KALSHI_LOGON_BODY), T0)
    assert kinds(events) == [LogonRequested] and conn.data_to_send() == b""


def test_1s_logon_answer_with_every_tag_reference_lists_logs_on() -> None:
    conn = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    conn.start(T0)
    conn.data_to_send()
    header = [(49, GATEWAY), (56, CLIENT), (34, b"1"), (52, utc_timestamp(T0))]
    events = conn.receive_data(encode_message(b"A", header, KALSHI_LOGON_BODY), T0)
    assert events == [LoggedOn(30, True, 2, 2)] and conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ([*LOGON_BODY, (11, b"o1")], "Tag not defined for this message type: 11"),
        ([*LOGON_BODY, (58, b"")], "Tag specified without a value: 58"),
        ([*LOGON_BODY, (141, b"X")],
         "Value is incorrect (out of range) for this tag: ResetSeqNumFlag(141)=X"),
        ([*LOGON_BODY, (789, b"next")],
         "Incorrect data format for value: NextExpectedMsgSeqNum(789)=next"),
        ([(98, b"7"), (108, b"30"), (1137, b"9")],
         "Value is incorrect (out of range) for this tag: EncryptMethod(98)=7"),
        ([(98, b"0"), (108, b"abc"), (1137, b"9")],
         "Incorrect data format for value: HeartBtInt(108)=abc"),
        ([(98, b"0"), (1137, b"9")], "Required tag missing: HeartBtInt(108)"),
    ],
)
def test_1b_logon_failing_the_dictionary_gets_a_logout_and_no_logon(body: Pairs, text: str) -> None:
    # FIX: an invalid Logon is answered with a Logout saying why, then a disconnect; no Reject.
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    header = [(49, CLIENT), (56, GATEWAY), (34, b"1"), (52, utc_timestamp(T0))]
    events = conn.receive_data(encode_message(b"A", header, body), T0)
    assert conn.data_to_send() == logout(Session(conn, GATEWAY, CLIENT), 1, text)
    assert kinds(events) == [SessionEnded] and conn.closed


@pytest.mark.parametrize(
    ("extra", "text"),
    [([(108, b"abc")], "Incorrect data format for value: HeartBtInt(108)=abc"),
     ([(11, b"o1")], "Tag not defined for this message type: 11")],
)
def test_1s_logon_answer_failing_the_dictionary_logs_out_and_never_logs_on(
    extra: Pairs, text: str
) -> None:
    conn = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    conn.start(T0)
    conn.data_to_send()
    header = [(49, GATEWAY), (56, CLIENT), (34, b"1"), (52, utc_timestamp(T0))]
    events = conn.receive_data(encode_message(b"A", header, [(98, b"0"), *extra]), T0)
    assert conn.data_to_send() == logout(Session(conn, CLIENT, GATEWAY), 2, text)
    assert kinds(events) == [ProtocolViolation, SessionEnded] and conn.closed
    assert not events[-1].was_logged_on  # type: ignore[attr-defined]


def test_1s_logon_answer_without_the_fields_fix_requires_is_tolerated() -> None:
    # Kalshi's answer is undocumented (REFERENCE §2.3): only the fields present are checked.
    conn = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    conn.start(T0)
    conn.data_to_send()
    header = [(49, GATEWAY), (56, CLIENT), (34, b"1"), (52, utc_timestamp(T0))]
    events = conn.receive_data(encode_message(b"A", header, [(141, b"Y")]), T0)
    assert events == [LoggedOn(30, True, 2, 2)]


# 14i (NumInGroup count mismatch, 373=16) does not apply to the core: no session message it
# handles has a repeating group, and application groups belong to the application's dictionary.


# --------------------------------------------------------------------------- queueing, resends
def test_queued_messages_behind_a_gap_wait_for_the_resend_and_come_in_order(s: Session) -> None:
    assert s.conn.receive_data(s.peer(b"8", 4, [(17, b"e4")]), T0) == [ResendRequestSent(2, 0)]
    s.out()
    # More arrivals while the resend is outstanding: held, no second request, nothing shown.
    assert s.conn.receive_data(s.peer(b"8", 5, [(17, b"e5")]) + s.peer(b"0", 6), T0) == []
    assert s.out() == b"" and s.conn.next_target_seq == 2
    events = s.conn.receive_data(
        s.peer(b"8", 2, [(17, b"e2")], at=T0 + 1, poss_dup=b"Y", orig=utc_timestamp(T0 - 1))
        + s.peer(b"4", 3, [(123, b"Y"), (36, b"4")], at=T0 + 1, poss_dup=b"Y",
                 orig=utc_timestamp(T0 + 1)),
        T0 + 1,
    )
    assert kinds(events) == [
        ApplicationMessage, SequenceResetReceived, ApplicationMessage, ApplicationMessage
    ]
    delivered = [(e.seq_num, e.poss_dup, e.message.get(17)) for e in events
                 if isinstance(e, ApplicationMessage)]
    assert delivered == [(2, True, b"e2"), (4, False, b"e4"), (5, False, b"e5")]
    assert s.conn.next_target_seq == 7 and not s.conn.resend_in_progress
    assert s.out() == b""


def test_queued_kalshi_profile_without_retransmission_reports_the_gap_and_goes_on() -> None:
    # Kalshi (REFERENCE §3.3): nothing to resend on NR/DC/RFQ/MD; the gap is reported instead.
    # Initiator side: test_connection.test_gap_without_retransmission_is_reported_never_requested.
    s = acceptor(retransmission=False)
    events = s.conn.receive_data(s.peer(b"D", 4, [(11, b"c4")]), T0)
    assert events[0] == SequenceGap(2, 4) and kinds(events) == [SequenceGap, ApplicationMessage]
    assert s.out() == b"" and s.conn.next_target_seq == 5


def test_20_simultaneous_resend_requests(s: Session) -> None:
    s.conn.send_app(b"D", [(11, b"o2")], T0 + 1)
    s.conn.send_app(b"D", [(11, b"o3")], T0 + 2)
    s.out()
    # The peer missed our 2..3 and asks for them with its message 4, while we never saw its
    # 2..3: we answer its request first, then ask for ours.
    at = T0 + 3
    events = s.conn.receive_data(s.peer(b"2", 4, [(7, b"2"), (16, b"0")], at=at), at)
    assert events == [ResendServed(2, 3, resent=2, gap_filled=0), ResendRequestSent(2, 0)]
    assert s.out() == (
        s.resent(b"D", 2, [(11, b"o2")], first=T0 + 1, at=at)
        + s.resent(b"D", 3, [(11, b"o3")], first=T0 + 2, at=at)
        + s.ours(b"2", 4, [(7, b"2"), (16, b"0")], at=at)
    )
    # The peer fills 2..3 only (its answer was cut before its own ResendRequest): the request
    # we already answered counts as 4 and is not answered twice.
    events = s.conn.receive_data(
        s.peer(b"4", 2, [(123, b"Y"), (36, b"4")], at=at, poss_dup=b"Y", orig=utc_timestamp(at)),
        at,
    )
    assert events == [SequenceResetReceived(4, True, requested_from=2)]
    assert s.out() == b""
    assert s.conn.next_target_seq == 5 and not s.conn.resend_in_progress
    (ev,) = s.conn.receive_data(s.peer(b"8", 5, [(17, b"e5")], at=at), at)
    assert isinstance(ev, ApplicationMessage) and ev.seq_num == 5


def test_19_poss_resend_message_is_delivered_for_the_application_to_deduplicate(
    s: Session,
) -> None:
    raw = encode_message(
        b"8",
        [(49, s.them), (56, s.us), (34, b"2"), (97, b"Y"), (52, utc_timestamp(T0))],
        [(17, b"e-dup")],
    )
    (ev,) = s.conn.receive_data(raw, T0)
    assert isinstance(ev, ApplicationMessage) and ev.message.get(97) == b"Y"
    assert s.conn.next_target_seq == 3


# --------------------------------------------------------------------------- mid-session reset
def test_logon_with_reset_seq_num_flag_mid_session_resets_both_numbers(s: Session) -> None:
    s.conn.send_app(b"D" if s.us == CLIENT else b"8", [(11, b"x")], T0)
    s.conn.receive_data(s.peer(b"0", 2) + s.peer(b"0", 3), T0)
    s.out()
    assert (s.conn.next_sender_seq, s.conn.next_target_seq) == (3, 4)
    body = [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]
    events = s.conn.receive_data(s.peer(b"A", 1, body, at=T0 + 1), T0 + 1)
    assert events == [SequenceNumbersReset(2, 2)]
    assert s.out() == s.ours(b"A", 1, body, at=T0 + 1)
    assert s.conn.state is State.ACTIVE
    (ev,) = s.conn.receive_data(s.peer(b"8", 2, [(17, b"after")], at=T0 + 1), T0 + 1)
    assert isinstance(ev, ApplicationMessage) and ev.seq_num == 2


def test_logon_with_reset_flag_mid_session_and_seq_above_1_logs_out(s: Session) -> None:
    body = [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]
    events = s.conn.receive_data(s.peer(b"A", 5, body), T0)
    assert s.out() == logout(s, 2, "Logon with ResetSeqNumFlag=Y must have MsgSeqNum 1, got 5")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed


def test_logon_without_reset_flag_mid_session_logs_out(s: Session) -> None:
    events = s.conn.receive_data(s.peer(b"A", 2, [(98, b"0"), (108, b"30"), (1137, b"9")]), T0)
    assert s.out() == logout(s, 2, "Logon received on an already active session")
    assert kinds(events) == [ProtocolViolation, SessionEnded] and s.conn.closed


def test_logon_with_reset_flag_mid_session_settles_between_two_cores() -> None:
    # A replayed Logon answer (141=Y, MsgSeqNum 1) reads as a reset: the client answers it, the
    # gateway answers that, and the client takes the gateway's answer as the end of the
    # exchange instead of answering again (else the two would reset each other for ever).
    client = FixConnection(_settings(Role.INITIATOR), MemoryStore())
    gateway = FixConnection(_settings(Role.ACCEPTOR))
    client.start(T0)
    gateway.start(T0)
    gateway.receive_data(client.data_to_send(), T0)
    gateway.accept_logon(T0, store=MemoryStore())
    answer = gateway.data_to_send()
    client.receive_data(answer, T0)
    client.send_app(b"D", [(11, b"a")], T0)
    gateway.receive_data(client.data_to_send(), T0)
    assert client.receive_data(answer, T0) == [SequenceNumbersReset(2, 2)]
    c_events: list[Event] = []
    g_events: list[Event] = []
    for _ in range(5):
        to_gateway, to_client = client.data_to_send(), gateway.data_to_send()
        if not to_gateway and not to_client:
            break
        g_events += gateway.receive_data(to_gateway, T0)
        c_events += client.receive_data(to_client, T0)
    assert g_events == [SequenceNumbersReset(2, 2)] and c_events == [SequenceNumbersReset(2, 2)]
    assert client.data_to_send() == gateway.data_to_send() == b""
    assert (client.next_sender_seq, client.next_target_seq) == (2, 2)
    assert (gateway.next_sender_seq, gateway.next_target_seq) == (2, 2)
    client.send_app(b"D", [(11, b"b")], T0)
    (ev,) = gateway.receive_data(client.data_to_send(), T0)
    assert isinstance(ev, ApplicationMessage) and ev.seq_num == 2


@pytest.mark.parametrize(
    "encrypt,text",
    [(None, "Required tag missing: EncryptMethod(98)"),
     (b"2", "EncryptMethod(98)=2 is not supported")],
)
def test_1b_logon_without_encrypt_method_none_is_refused(encrypt: bytes | None, text: str) -> None:
    conn = FixConnection(_settings(Role.ACCEPTOR))
    conn.start(T0)
    body = [(108, b"30"), (141, b"Y"), (1137, b"9")]
    if encrypt is not None:
        body.insert(0, (98, encrypt))
    header = [(49, CLIENT), (56, GATEWAY), (34, b"1"), (52, utc_timestamp(T0))]
    events = conn.receive_data(encode_message(b"A", header, body), T0)
    assert conn.data_to_send() == logout(Session(conn, GATEWAY, CLIENT), 1, text)
    assert kinds(events) == [SessionEnded] and conn.closed


def test_queued_messages_behind_a_gap_are_bounded() -> None:
    s = initiator(resend_queue_limit=2)
    events = s.conn.receive_data(s.peer(b"0", 4) + s.peer(b"0", 5) + s.peer(b"0", 6), T0)
    assert s.out() == s.ours(b"2", 2, [(7, b"2"), (16, b"0")]) + logout(
        s, 3, "more than 2 messages queued behind a sequence gap"
    )
    assert kinds(events) == [ResendRequestSent, ProtocolViolation, SessionEnded]


def test_queued_stalled_resend_is_requested_again_from_where_it_stopped(s: Session) -> None:
    s.conn.receive_data(s.peer(b"0", 5), T0)
    s.out()
    # 2 arrives, then nothing for a heartbeat interval: ask again from 3.
    s.conn.receive_data(s.peer(b"0", 2, at=T0 + 1, poss_dup=b"Y", orig=utc_timestamp(T0)),
                        T0 + 1)
    assert s.conn.next_deadline() == T0 + 30  # our outbound heartbeat comes first
    s.conn.tick(T0 + 30)
    assert s.out() == s.ours(b"0", 3, at=T0 + 30)
    assert s.conn.tick(T0 + 31) == [ResendRequestSent(3, 0)]
    assert s.out() == s.ours(b"2", 4, [(7, b"3"), (16, b"0")], at=T0 + 31)
