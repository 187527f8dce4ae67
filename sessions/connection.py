"""The sans-IO FIXT.1.1 session core: bytes and ``now`` in; bytes, events and a deadline out.

One :class:`FixConnection` lives for one transport connection; the sequence numbers that outlive
it are in the :class:`~sessions.store.MessageStore`. Nothing here touches a socket or reads a
clock: the driver feeds ``receive_data(data, now)``, calls ``tick(now)`` at ``next_deadline()``,
and writes ``data_to_send()`` to the wire. Both roles are served: the initiator (our client) and
the acceptor (the simulated gateway), which learns its counterparty from the Logon and lets the
application accept or reject it (a Logon resetting the numbers of a logged-on session, through
``SessionSettings.review_reset_logon``).

The rules follow the FIX session layer (FIXT.1.1): MsgSeqNum gaps, PossDup handling,
ResendRequest/SequenceReset, TestRequest/Heartbeat, Logon/Logout handshakes and session-level
Reject. Session messages (and only they) are also checked field by field against the session
dictionary (:mod:`sessions.dictionary`): required, allowed, format and range. Kalshi's own
choices are in the settings (no retransmission on most endpoints, 30 s SendingTime tolerance,
signed Logon).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Sequence
from operator import itemgetter

from . import dictionary
from . import tags as T
from .codec import Garbled, StreamDecoder, decode, encode_message
from .errors import CodecError, LocalProtocolError
from .events import (
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
    classify_logout_text,
)
from .message import FixMessage, parse_utc_timestamp, to_bytes, utc_timestamp
from .settings import LogonRefusal, Role, SessionSettings
from .store import MemoryStore, MessageStore
from .tags import MsgType, SessionRejectReason

Pairs = Sequence[tuple[int, bytes]]

# Header fields the core writes itself; stripped from messages the application hands us.
_value_of = itemgetter(1)  # a (tag, value) pair's value
_HEADER_TAGS = frozenset({8, 9, 10, 35, 49, 56, 34, 52, 43, 97, 122})


class State(enum.Enum):
    """Where the session is. Transitions are listed in :data:`TRANSITIONS`."""

    IDLE = "idle"  # transport up, nothing exchanged yet
    LOGON_SENT = "logon_sent"  # initiator: our Logon is out, waiting for the answer
    AWAITING_LOGON = "awaiting_logon"  # acceptor: waiting for the peer's Logon
    LOGON_RECEIVED = "logon_received"  # acceptor: the application is checking the Logon
    ACTIVE = "active"  # logged on: application messages flow
    LOGOUT_SENT = "logout_sent"  # we sent Logout and wait (bounded) for the answer
    CLOSED = "closed"  # over: flush data_to_send() and close the transport


#: Every legal transition. ``_goto`` refuses anything else, so a bug shows up as an error
#: at the faulty step rather than as a session in a state nobody planned for.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.LOGON_SENT, State.AWAITING_LOGON, State.CLOSED}),
    State.LOGON_SENT: frozenset({State.ACTIVE, State.CLOSED}),
    State.AWAITING_LOGON: frozenset({State.LOGON_RECEIVED, State.CLOSED}),
    State.LOGON_RECEIVED: frozenset({State.ACTIVE, State.CLOSED}),
    State.ACTIVE: frozenset({State.LOGOUT_SENT, State.CLOSED}),
    State.LOGOUT_SENT: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}

#: Inbound MsgTypes a state can make sense of before the session is active; anything else
#: there is a protocol violation (FIX: the first message must be a Logon).
_ADMISSIBLE_BEFORE_ACTIVE: dict[State, frozenset[bytes]] = {
    State.LOGON_SENT: frozenset({MsgType.LOGON, MsgType.LOGOUT, MsgType.REJECT}),
    State.AWAITING_LOGON: frozenset({MsgType.LOGON}),
}


class FixConnection:
    """One FIX session over one transport connection, in either role.

    Typical initiator use::

        conn = FixConnection(settings, store)
        conn.start(now)                      # queues the Logon
        send(conn.data_to_send())
        for event in conn.receive_data(bytes_from_wire, now): ...
        conn.send_app(b"D", body_pairs, now)
    """

    def __init__(self, settings: SessionSettings, store: MessageStore | None = None) -> None:
        if settings.role is Role.INITIATOR and (store is None or settings.target_comp_id is None):
            raise LocalProtocolError("an initiator needs a store and a target_comp_id")
        self.settings = settings
        self.state = State.IDLE
        self._store: MessageStore | None = store
        self._decoder = StreamDecoder(settings.max_message_size)
        self._out = bytearray()
        self._events: list[Event] = []
        self._sender = settings.sender_comp_id.encode()
        self._target: bytes | None = (
            settings.target_comp_id.encode() if settings.target_comp_id else None
        )
        self._peer_ids: frozenset[bytes] = frozenset(
            c.encode() for c in settings.accepted_peer_comp_ids
        )
        self.heartbeat_interval = settings.heartbeat_interval
        self._last_sent = 0.0
        self._last_received = 0.0
        self._test_request: tuple[bytes, float] | None = None  # (TestReqID, sent at)
        self._test_counter = 0
        self._logon_deadline: float | None = None
        self._logout_deadline: float | None = None
        self._reset_requested = False
        # Initiator: we answered a mid-session reset Logon and the acceptor may answer that.
        self._reset_answer_pending = False
        # Resend bookkeeping: while we wait for the peer to fill a gap, later messages wait here.
        self._resend_through: int | None = None
        self._resend_progress_at = 0.0  # when the gap last shrank (or was first requested)
        # MsgSeqNums of the ResendRequests sent for the current gap: a Reject naming one of
        # them means the peer will not fill the gap.
        self._resend_requests: set[int] = set()
        #: A ResendRequest with a BeginSeqNo below this is rejected (373=5), as Kalshi answers
        #: one reaching past its retention period (REFERENCE §3.3); the simulated gateway raises
        #: it for its ``reject_resend`` fault. 1: every request is served.
        self.resend_floor = 1
        # seq -> (message, received at, already handled): a ResendRequest that arrived ahead of
        # the gap is answered at once and waits here only to be counted in its turn.
        self._queue: dict[int, tuple[FixMessage, float, bool]] = {}
        # Acceptor: the Logon under review and anything that arrived behind it.
        self._pending_logon: FixMessage | None = None
        self._held: list[FixMessage] = []
        self._was_logged_on = False

    # ------------------------------------------------------------------ public: inspection
    @property
    def store(self) -> MessageStore | None:
        """The sequence/message store (acceptor: set by :meth:`accept_logon`)."""
        return self._store

    @property
    def peer_comp_id(self) -> str | None:
        """The counterparty's CompID (acceptor: known once a Logon arrived)."""
        return None if self._target is None else self._target.decode()

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def next_sender_seq(self) -> int:
        return self._store.next_sender_seq if self._store else 1

    @property
    def next_target_seq(self) -> int:
        return self._store.next_target_seq if self._store else 1

    @property
    def resend_in_progress(self) -> bool:
        """True while we wait for the peer to answer our ResendRequest."""
        return self._resend_through is not None

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport, in sequence order; drains the buffer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """The time at which :meth:`tick` has work to do, or ``None`` when no timer runs."""
        if self.state is State.CLOSED:
            return None
        if self.state in (State.LOGON_SENT, State.AWAITING_LOGON, State.LOGON_RECEIVED):
            return self._logon_deadline
        hb = self.heartbeat_interval
        limit = hb * (1 + self.settings.heartbeat_grace)
        deadlines = [self._last_sent + hb]
        if self._test_request is None:
            deadlines.append(self._last_received + limit)
        else:
            deadlines.append(self._test_request[1] + limit)
        if self._logout_deadline is not None:
            deadlines.append(self._logout_deadline)
        if self._resend_through is not None:
            deadlines.append(self._resend_progress_at + hb)
        return min(deadlines)

    # ------------------------------------------------------------------ public: commands
    def start(self, now: float) -> None:
        """Begin the handshake: the initiator queues its Logon; the acceptor starts waiting."""
        self._last_sent = self._last_received = now
        self._logon_deadline = now + self.settings.logon_timeout
        if self.settings.role is Role.ACCEPTOR:
            self._goto(State.AWAITING_LOGON)
            return
        self._goto(State.LOGON_SENT)
        self._send_logon(now, reset=self.settings.reset_seq_num_on_logon)

    def send_app(self, msg_type: bytes, body: Pairs, now: float) -> int:
        """Send an application message; returns its MsgSeqNum (persisted before it is queued).

        ``body`` is ``(tag, bytes)`` pairs without header fields.
        """
        if self.state is not State.ACTIVE:
            raise LocalProtocolError(
                f"cannot send MsgType {msg_type.decode()!r}: session is {self.state.value}, "
                "application messages need an active (logged-on) session"
            )
        if msg_type in T.ADMIN_MSG_TYPES:
            raise LocalProtocolError(
                f"MsgType {msg_type.decode()!r} is a session message; the session sends those itself"
            )
        return self._send(msg_type, body, now, application=True)

    def send_message(self, message: FixMessage, now: float) -> int:
        """Send a :class:`FixMessage` (or simplefix-like message); header fields are replaced."""
        msg_type = message.get(T.MSG_TYPE)
        if msg_type is None:
            raise LocalProtocolError("message has no MsgType(35)")
        body = [(int(t), to_bytes(v)) for t, v in message.pairs if int(t) not in _HEADER_TAGS]
        return self.send_app(msg_type, body, now)

    def test_request(self, now: float, test_req_id: str | None = None) -> str:
        """Send a TestRequest; a matching Heartbeat produces :class:`TestResponse`."""
        self._require_active("send a TestRequest")
        if test_req_id is None:
            self._test_counter += 1
            test_req_id = f"TEST-{self._test_counter}"
        self._send(MsgType.TEST_REQUEST, [(T.TEST_REQ_ID, test_req_id.encode())], now)
        self._test_request = (test_req_id.encode(), now)
        return test_req_id

    def send_reject(
        self,
        now: float,
        ref_seq_num: int,
        reason: int | None,
        text: str,
        *,
        ref_tag: int | None = None,
        ref_msg_type: bytes | None = None,
    ) -> list[Event]:
        """Reject an inbound message at the session level (35=3) on the application's behalf:
        the core took it in sequence, but the application found a field missing, malformed or
        undefined (e.g. Kalshi's ``373=3 Undefined tag received``). Returns the events caused
        (a :class:`~sessions.events.RejectSent`)."""
        self._require_active("send a Reject")
        body: list[tuple[int, bytes]] = [(T.REF_SEQ_NUM, str(ref_seq_num).encode())]
        if ref_tag is not None:
            body.append((T.REF_TAG_ID, str(ref_tag).encode()))
        if ref_msg_type:
            body.append((T.REF_MSG_TYPE, ref_msg_type))
        if reason is not None:
            body.append((T.SESSION_REJECT_REASON, str(reason).encode()))
        body.append((T.TEXT, text.encode("ascii", "replace")))
        self._send(MsgType.REJECT, body, now)
        self._events.append(RejectSent(ref_seq_num, reason, text, ref_tag, ref_msg_type))
        return self._take_events()

    def logout(self, now: float, text: str | None = None) -> list[Event]:
        """Start a graceful Logout; the session closes on the peer's answer or after
        ``logout_timeout``. Before logon completes it simply closes. Returns events caused."""
        if self.state in (State.CLOSED, State.LOGOUT_SENT):
            return self._take_events()
        if self.state is State.ACTIVE:
            self._send_logout(now, text)
            self._goto(State.LOGOUT_SENT)
            self._logout_deadline = now + self.settings.logout_timeout
            return self._take_events()
        if self.state is State.LOGON_SENT:
            self._send_logout(now, text)
        self._close("local", clean=False)
        return self._take_events()

    def accept_logon(
        self, now: float, *, store: MessageStore | None = None, fields: Pairs = ()
    ) -> list[Event]:
        """Acceptor: answer the pending Logon with ours. ``store`` holds this client's sequence
        numbers (a fresh in-memory one if omitted); ``fields`` go into our Logon body.
        Returns the events caused, including those of messages that arrived behind the Logon."""
        if self.state is not State.LOGON_RECEIVED or self._pending_logon is None:
            raise LocalProtocolError(f"no Logon is waiting for a decision (state {self.state.value})")
        logon = self._pending_logon
        self._pending_logon = None
        if store is not None:
            self._store = store
        elif self._store is None:
            self._store = MemoryStore()
        store_ = self._store
        seq = int(logon.get(T.MSG_SEQ_NUM) or b"0")
        reset = logon.get(T.RESET_SEQ_NUM_FLAG) == b"Y"
        if reset:
            store_.reset(now)
            if seq != 1:
                self._fatal(now, f"Logon with ResetSeqNumFlag=Y must have MsgSeqNum 1, got {seq}")
                return self._take_events()
        elif seq < store_.next_target_seq:
            # FIX (test case 1B): a Logon numbered below what we expect is answered with a
            # Logout alone, never our Logon first. REFERENCE does not say which Kalshi does; an
            # independent engine expects the standard, and our client treats both alike.
            self._fatal(
                now, f"MsgSeqNum too low, expecting {store_.next_target_seq} but received {seq}"
            )
            return self._take_events()
        self._reset_requested = reset
        body = self._logon_body(reset=reset)
        body.extend(fields)
        self._send(MsgType.LOGON, body, now)
        self._become_active(logon, seq, now)
        held, self._held = self._held, []
        for msg in held:
            if self.state is State.CLOSED:
                break
            self._on_message(msg, now)
        return self._take_events()

    def reject_logon(
        self,
        now: float,
        text: str,
        *,
        session_reject_reason: int | None = None,
        ref_tag: int | None = None,
    ) -> list[Event]:
        """Acceptor: refuse the pending Logon with a Logout carrying ``text`` (preceded by a
        session-level Reject when ``session_reject_reason`` is given), then close. The same
        rules as a :class:`~sessions.settings.LogonRefusal`: ``text`` not empty, and
        ``ref_tag`` only with a reason (RefTagID travels in the Reject alone)."""
        if self.state is not State.LOGON_RECEIVED or self._pending_logon is None:
            raise LocalProtocolError(f"no Logon is waiting for a decision (state {self.state.value})")
        try:
            refusal = LogonRefusal(text, session_reject_reason, ref_tag)
        except ValueError as e:
            # Refused before anything is sent: the Logon still waits for a valid decision.
            raise LocalProtocolError(f"reject_logon: {e}") from None
        self._reject_logon(
            now, self._pending_logon, refusal.text, refusal.session_reject_reason, refusal.ref_tag
        )
        return self._take_events()

    # ------------------------------------------------------------------ public: input
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the wire; returns the events they caused, in order."""
        if self.state is State.CLOSED:
            return self._take_events()
        if self.state is State.IDLE:
            raise LocalProtocolError("call start() before feeding data to the session")
        self._decoder.feed(data)
        with self._batch():
            for item in self._decoder:
                if self.state is State.CLOSED:
                    break
                if isinstance(item, Garbled):
                    self._events.append(GarbledMessage(item.reason, item.data))
                    continue
                self._last_received = now
                self._test_request = None
                self._on_message(item, now)
        return self._take_events()

    def connection_lost(self, now: float) -> list[Event]:
        """The transport closed (EOF or error). Ends the session unless it already ended."""
        if self.state is not State.CLOSED:
            clean = self.state is State.LOGOUT_SENT
            self._close("local" if clean else "transport", clean=clean)
        return self._take_events()

    def tick(self, now: float) -> list[Event]:
        """Run the timers due at ``now`` (heartbeat, TestRequest, logon/logout timeouts)."""
        state = self.state
        if state in (State.LOGON_SENT, State.AWAITING_LOGON, State.LOGON_RECEIVED):
            if self._logon_deadline is not None and now >= self._logon_deadline:
                what = "Logon answer" if state is State.LOGON_SENT else "Logon"
                self._events.append(
                    ProtocolViolation(f"no {what} within {self.settings.logon_timeout:g} s")
                )
                self._close("error")
        elif state in (State.ACTIVE, State.LOGOUT_SENT):
            if self._logout_deadline is not None and now >= self._logout_deadline:
                self._close("local", clean=False)
                return self._take_events()
            hb = self.heartbeat_interval
            limit = hb * (1 + self.settings.heartbeat_grace)
            if self._test_request is not None and now - self._test_request[1] >= limit:
                silent = now - self._last_received
                self._events.append(HeartbeatTimeout(silent))
                if state is State.ACTIVE:
                    self._send_logout(now, f"no message for {silent:.1f} s, TestRequest unanswered")
                self._close("error", reason_text="heartbeat timeout")
                return self._take_events()
            if self._test_request is None and now - self._last_received >= limit:
                self._test_counter += 1
                req_id = f"HB-{self._test_counter}".encode()
                self._send(MsgType.TEST_REQUEST, [(T.TEST_REQ_ID, req_id)], now)
                self._test_request = (req_id, now)
            if self._resend_through is not None and now - self._resend_progress_at >= hb:
                # The answer to our ResendRequest stalled (part of it was lost or garbled):
                # ask again from where we are rather than wait for ever.
                self._request_resend(self._store_().next_target_seq, self._resend_through, now)
            if now - self._last_sent >= hb:
                self._send(MsgType.HEARTBEAT, (), now)
        return self._take_events()

    # ------------------------------------------------------------------ inbound dispatch
    def _on_message(self, msg: FixMessage, now: float) -> None:
        # One index of the fields for every check below (a scan per tag would cost more).
        f = msg.first_values()
        msg_type = f.get(T.MSG_TYPE)
        if msg_type is None or msg.pairs[2][0] != T.MSG_TYPE:
            # FIX: BeginString, BodyLength and MsgType must be the first three fields (the codec
            # checks the first two); a message without MsgType, or with it elsewhere, is garbled:
            # ignored, not counted, no Reject (Session Layer Test Cases 2d/2m).
            self._events.append(GarbledMessage(
                "missing MsgType(35)" if msg_type is None else "MsgType(35) is not the third field",
                b"",
            ))
            return
        if f.get(T.BEGIN_STRING) != self.settings.begin_string:
            got = (f.get(T.BEGIN_STRING) or b"").decode("latin-1")
            self._fatal(
                now,
                f"Incorrect BeginString {got!r}, expected {self.settings.begin_string.decode()}",
                send_logout=self.state is not State.AWAITING_LOGON,
            )
            return
        state = self.state
        if state is State.LOGON_RECEIVED:
            self._held.append(msg)
            return
        admissible = _ADMISSIBLE_BEFORE_ACTIVE.get(state)
        if admissible is not None and msg_type not in admissible:
            # FIX: a session must start with Logon; anything else is answered by disconnecting.
            self._events.append(
                ProtocolViolation(
                    f"expected Logon first, got MsgType {msg_type.decode('latin-1')!r}"
                )
            )
            self._close("error")
            return
        seq_raw = f.get(T.MSG_SEQ_NUM)
        if seq_raw is None or not seq_raw.isdigit() or seq_raw.startswith(b"0"):
            # Kalshi and FIX both end the session on a missing/invalid MsgSeqNum.
            what = "missing" if seq_raw is None else f"invalid ({seq_raw.decode('latin-1')!r})"
            self._fatal(now, f"MsgSeqNum(34) {what}", send_logout=state is not State.AWAITING_LOGON)
            return
        seq = int(seq_raw)
        if state is State.AWAITING_LOGON:
            self._on_logon_request(msg, seq, now)
            return
        if state is State.LOGON_SENT:
            self._on_logon_answer(msg, msg_type, seq, now)
            return
        self._sequence(msg, msg_type, seq, now, f)

    def _sequence(
        self, msg: FixMessage, msg_type: bytes, seq: int, now: float, fields: dict[int, bytes]
    ) -> None:
        """Apply the MsgSeqNum rules to a message of an active session (``fields``: its
        ``first_values()``)."""
        if msg_type in _SEQUENCE_EXEMPT:
            if msg_type == MsgType.SEQUENCE_RESET:
                if fields.get(T.GAP_FILL_FLAG) != b"Y":
                    # Reset mode ignores MsgSeqNum by definition.
                    if self._out_of_turn_ok(msg, msg_type, seq, now):
                        self._on_sequence_reset(msg, seq, now, gap_fill=False)
                    return
            elif fields.get(T.RESET_SEQ_NUM_FLAG) == b"Y":
                # FIX: a Logon with ResetSeqNumFlag=Y during a session restarts both numbers at
                # 1; its own MsgSeqNum is 1, so it must not meet the "too low" rule first.
                if self._out_of_turn_ok(msg, msg_type, seq, now):
                    self._on_reset_logon(msg, seq, now)
                return
        expected = self._store_().next_target_seq
        if seq == expected:
            self._process(msg, msg_type, seq, now, fields=fields)
            self._drain_queue(now)
        elif seq > expected:
            self._too_high(msg, msg_type, seq, expected, now)
        else:
            self._too_low(msg, msg_type, seq, expected, now)

    def _too_high(
        self, msg: FixMessage, msg_type: bytes, seq: int, expected: int, now: float
    ) -> None:
        if msg_type == MsgType.LOGOUT:
            # A Logout is honoured even across a gap: nothing would be gained by resending.
            if self._out_of_turn_ok(msg, msg_type, seq, now):
                self._on_logout(msg, seq, now)
            return
        if not self.settings.retransmission:
            # No resend service (Kalshi NR/DC/RFQ): report the hole, then carry on from here.
            self._events.append(SequenceGap(expected, seq))
            self._store_().set_next_target_seq(seq)
            self._process(msg, msg_type, seq, now)
            return
        if (
            msg_type == MsgType.REJECT and self._resend_through is not None
            and self._refuses_our_resend(_reject_received(msg))
        ):
            # The peer's Reject of our ResendRequest is numbered after the gap it refuses to
            # fill: waiting for the gap first would wait for ever. Like a ResendRequest it is
            # handled now and queued as handled, so its number is counted in turn.
            f = self._header_ok(msg, msg_type, seq, now, count=False)
            if f is not None:
                self._queue[seq] = (msg, now, True)
                if self._session_message_ok(msg, msg_type, f, now):
                    self._events.append(_reject_received(msg))
                    self._abandon_resend(now)
            return
        if msg_type == MsgType.RESEND_REQUEST:
            # FIX: answer the peer's ResendRequest first, then ask for our own gap. It is also
            # queued, as handled, so that its number is counted once the gap is filled even if
            # the peer's fill stops short of it (as QuickFIX engines do).
            f = self._header_ok(msg, msg_type, seq, now, count=False)
            if f is not None:
                if self._session_message_ok(msg, msg_type, f, now):
                    self._on_resend_request(msg, seq, now)
                self._queue[seq] = (msg, now, True)
            elif self.state is State.CLOSED:
                return  # a CompID or SendingTime problem: logged out, nothing to request
        else:
            self._queue[seq] = (msg, now, False)
            if len(self._queue) > self.settings.resend_queue_limit:
                self._fatal(now, f"more than {self.settings.resend_queue_limit} messages "
                                 "queued behind a sequence gap")
                return
        if self._resend_through is None:
            self._request_resend(expected, seq, now)
        else:
            self._resend_through = max(self._resend_through, seq)

    def _request_resend(self, begin: int, through: int, now: float) -> None:
        # EndSeqNo=0 asks for everything from ``begin`` on, so one request covers later gaps.
        self._resend_requests.add(self._send(
            MsgType.RESEND_REQUEST,
            [(T.BEGIN_SEQ_NO, str(begin).encode()), (T.END_SEQ_NO, b"0")], now,
        ))
        self._events.append(ResendRequestSent(begin, 0))
        self._resend_through = through
        self._resend_progress_at = now

    def _too_low(
        self, msg: FixMessage, msg_type: bytes, seq: int, expected: int, now: float
    ) -> None:
        if msg.get(T.POSS_DUP_FLAG) == b"Y":
            if msg_type != MsgType.SEQUENCE_RESET and msg.get(T.ORIG_SENDING_TIME) is None:
                self._send_reject(
                    now, msg, SessionRejectReason.REQUIRED_TAG_MISSING,
                    "OrigSendingTime(122) required when PossDupFlag=Y", ref_tag=T.ORIG_SENDING_TIME
                )
            return  # a duplicate we already processed: drop it silently
        self._fatal(now, f"MsgSeqNum too low, expecting {expected} but received {seq}")

    def _drain_queue(self, now: float) -> None:
        if not self._queue and self._resend_through is None:
            return
        store = self._store_()
        while self.state in (State.ACTIVE, State.LOGOUT_SENT):
            expected = store.next_target_seq
            for stale in [s for s in self._queue if s < expected]:
                del self._queue[stale]
            queued = self._queue.pop(expected, None)
            if queued is None:
                break
            msg, received_at, handled = queued
            if handled:
                store.set_next_target_seq(expected + 1)
                continue
            self._process(msg, msg.get(T.MSG_TYPE) or b"", expected, now, received_at)
        if self._resend_through is not None:
            if store.next_target_seq > self._resend_through:
                self._resend_through = None
                self._resend_requests.clear()
            else:
                self._resend_progress_at = now

    def _process(
        self, msg: FixMessage, msg_type: bytes, seq: int, now: float,
        received_at: float | None = None, *, fields: dict[int, bytes] | None = None,
    ) -> None:
        """Handle an in-sequence message: validate, count, dispatch. ``received_at`` is when a
        queued message arrived: its SendingTime is judged against that, not against ``now``."""
        f = self._header_ok(
            msg, msg_type, seq, now, count=True, received_at=received_at, fields=fields
        )
        if f is None:
            return
        self._store_().set_next_target_seq(seq + 1)
        handler = _ADMIN_HANDLERS.get(msg_type)
        if handler is not None:
            if len(f) != len(msg.pairs) and msg_type in _GROUPLESS_ADMIN:
                # A tag seen twice (the index kept one): session messages have no repeating
                # group, so FIX rejects it with 373=13. Application messages are left to the
                # application, which knows their groups.
                self._reject_repeated_tag(msg, now)
                return
            if self._session_message_ok(msg, msg_type, f, now):
                handler(self, msg, seq, now)
            return
        allowed = self.settings.application_msg_types
        if allowed is not None and msg_type not in allowed:
            self._send_reject(
                now, msg, SessionRejectReason.INVALID_MSG_TYPE,
                f"Invalid MsgType {msg_type.decode('latin-1')!r}", ref_tag=T.MSG_TYPE
            )
            return
        self._events.append(
            ApplicationMessage(msg, seq, f.get(T.POSS_DUP_FLAG) == b"Y", f)
        )

    def _out_of_turn_ok(self, msg: FixMessage, msg_type: bytes, seq: int, now: float) -> bool:
        """The header and session-dictionary checks of a session message acted on outside the
        sequence rules (its number is not counted here); False once it was answered."""
        f = self._header_ok(msg, msg_type, seq, now, count=False)
        return f is not None and self._session_message_ok(msg, msg_type, f, now)

    def _session_message_ok(
        self, msg: FixMessage, msg_type: bytes, f: dict[int, bytes], now: float
    ) -> bool:
        """Check a session message of a logged-on session against the session dictionary.
        On a violation: Reject (373 and the tag) and False, so that the message goes no further
        (its number is consumed all the same); a Logon ends the session instead. True: go on
        (Logout and Reject go on after the Reject, see below)."""
        violation = dictionary.check(msg_type, msg.pairs, f)
        if violation is None:
            return True
        if msg_type == MsgType.LOGON:
            # FIX: an invalid Logon is answered with a Logout and a disconnect, never a Reject.
            self._fatal(now, violation.text)
            return False
        if msg_type == MsgType.REJECT and f.get(T.REF_MSG_TYPE) == MsgType.REJECT:
            # A Reject of one of our Rejects is not rejected in turn: that is how two engines
            # whose dictionaries disagree would reject each other for ever.
            return True
        self._send_reject(now, msg, violation.reason, violation.text, ref_tag=violation.tag)
        # Our choice where FIX leaves one: a Logout or a Reject is the peer's word about the
        # session and is heard even when malformed, after our Reject has said what is wrong.
        # Ignoring a Logout would only leave the peer waiting for our answer until it drops
        # the line; ignoring a Reject would lose what it says about our messages (one without
        # RefSeqNum(45) refusing our ResendRequest would leave the gap stalled for ever).
        return msg_type in _HEARD_WHEN_MALFORMED

    def _reject_repeated_tag(self, msg: FixMessage, now: float) -> None:
        seen: set[int] = set()
        for tag, _ in msg.pairs:
            if tag in seen:
                self._send_reject(
                    now, msg, SessionRejectReason.TAG_REPEATED,
                    f"Tag appears more than once: {tag}", ref_tag=tag,
                )
                return
            seen.add(tag)

    def _header_ok(
        self, msg: FixMessage, msg_type: bytes, seq: int, now: float, *, count: bool,
        received_at: float | None = None, fields: dict[int, bytes] | None = None,
    ) -> dict[int, bytes] | None:
        """Check header fields; on a problem send the Reject (and Logout where FIX requires),
        count the message when ``count`` and return None; else the message's fields
        (``first_values()``, reused when given as ``fields``)."""
        # One index of the fields instead of a scan per tag: absent tags such as PossDupFlag
        # would otherwise cost a full scan each.
        f = msg.first_values() if fields is None else fields
        for tag in (T.SENDER_COMP_ID, T.TARGET_COMP_ID, T.SENDING_TIME):
            if not f.get(tag):
                name = {49: "SenderCompID", 56: "TargetCompID", 52: "SendingTime"}[tag]
                self._send_reject(
                    now, msg, SessionRejectReason.REQUIRED_TAG_MISSING,
                    f"Required tag missing: {name}({tag})", ref_tag=tag
                )
                if count:
                    self._store_().set_next_target_seq(seq + 1)
                return None
        sender = f.get(T.SENDER_COMP_ID)
        if f.get(T.TARGET_COMP_ID) != self._sender or not (
            sender == self._target or sender in self._peer_ids
        ):
            self._send_reject(
                now, msg, SessionRejectReason.COMPID_PROBLEM,
                f"CompID problem: got 49={sender.decode('latin-1') if sender else ''} "
                f"56={(f.get(T.TARGET_COMP_ID) or b'').decode('latin-1')}",
            )
            self._fatal(now, "CompID problem", reject_already_sent=True)
            return None
        if not self._sending_time_ok(
            msg, f[T.SENDING_TIME], now, now if received_at is None else received_at
        ):
            return None
        if not all(map(_value_of, msg.pairs)):
            for tag, value in msg.pairs:
                if not value:
                    self._send_reject(
                        now, msg, SessionRejectReason.TAG_WITHOUT_VALUE,
                        f"Tag specified without a value: {tag}", ref_tag=tag,
                    )
                    if count:
                        self._store_().set_next_target_seq(seq + 1)
                    return None
        poss_dup = f.get(T.POSS_DUP_FLAG)
        if poss_dup is not None and not self._poss_dup_ok(msg, msg_type, poss_dup, f, seq, now,
                                                          count=count):
            return None
        return f

    def _poss_dup_ok(
        self, msg: FixMessage, msg_type: bytes, poss_dup: bytes, f: dict[int, bytes], seq: int,
        now: float, *, count: bool,
    ) -> bool:
        """The PossDupFlag rules of an in-sequence message that carries the flag (rare: off the
        common path). False when the message was rejected (and counted when ``count``)."""

        def rejected(reason: int, text: str, ref_tag: int) -> bool:
            self._send_reject(now, msg, reason, text, ref_tag=ref_tag)
            if count:
                self._store_().set_next_target_seq(seq + 1)
            return False

        if poss_dup != b"Y":
            if poss_dup == b"N":
                return True
            # FIX: a Boolean is Y or N; anything else is a value out of range (373=5).
            return rejected(
                SessionRejectReason.VALUE_INCORRECT,
                f"Value is incorrect (out of range) for this tag: PossDupFlag(43)="
                f"{poss_dup.decode('latin-1')}", T.POSS_DUP_FLAG,
            )
        if msg_type == MsgType.SEQUENCE_RESET:
            return True  # a gap fill needs no OrigSendingTime (FIX exempts it)
        orig = f.get(T.ORIG_SENDING_TIME)
        if orig is None:
            return rejected(
                SessionRejectReason.REQUIRED_TAG_MISSING,
                "OrigSendingTime(122) required when PossDupFlag=Y", T.ORIG_SENDING_TIME,
            )
        try:
            orig_at = parse_utc_timestamp(orig)
        except ValueError:
            return rejected(
                SessionRejectReason.INCORRECT_DATA_FORMAT,
                f"OrigSendingTime(122) is not a UTCTimestamp: {orig.decode('latin-1')!r}",
                T.ORIG_SENDING_TIME,
            )
        # SendingTime was parsed (and found in range) just before, so it parses here.
        if orig_at > parse_utc_timestamp(f[T.SENDING_TIME]):
            # FIX (test case 2f): a resend cannot have been first sent after it was resent.
            # Reject with 373=10, count the message, then Logout and disconnect, as for any
            # other SendingTime accuracy problem.
            rejected(
                SessionRejectReason.SENDING_TIME_ACCURACY,
                "SendingTime accuracy problem: OrigSendingTime(122) is later than "
                "SendingTime(52)", T.ORIG_SENDING_TIME,
            )
            self._fatal(now, "SendingTime accuracy problem", reject_already_sent=True)
            return False
        return True

    def _sending_time_ok(
        self, msg: FixMessage, raw: bytes, now: float, received_at: float
    ) -> bool:
        try:
            sent = parse_utc_timestamp(raw)
        except ValueError:
            self._send_reject(
                now, msg, SessionRejectReason.INCORRECT_DATA_FORMAT,
                f"SendingTime(52) is not a UTCTimestamp: {raw.decode('latin-1')!r}",
                ref_tag=T.SENDING_TIME,
            )
            self._fatal(now, "SendingTime accuracy problem", reject_already_sent=True)
            return False
        tol = self.settings.sending_time_tolerance
        if tol is not None and abs(sent - received_at) > tol:
            # FIX: Reject with 373=10, then Logout; Kalshi enforces 30 s.
            self._send_reject(
                now, msg, SessionRejectReason.SENDING_TIME_ACCURACY,
                f"SendingTime accuracy problem: {abs(sent - received_at):.1f} s off "
                f"(limit {tol:g} s)",
                ref_tag=T.SENDING_TIME,
            )
            self._fatal(now, "SendingTime accuracy problem", reject_already_sent=True)
            return False
        return True

    # ------------------------------------------------------------------ logon
    def _send_logon(self, now: float, *, reset: bool) -> None:
        store = self._store_()
        if reset:
            store.reset(now)
        self._reset_requested = reset
        seq = store.next_sender_seq
        sending_time = utc_timestamp(now)
        body = self._logon_body(reset=reset)
        body.extend(self.settings.logon_fields)
        signer = self.settings.sign_logon
        if signer is not None:
            assert self._target is not None
            pre_hash = b"\x01".join(
                (sending_time, MsgType.LOGON, str(seq).encode(), self._sender, self._target)
            )
            raw_data = signer(pre_hash)
            # RawDataLength right before RawData, as FIX requires for data fields (§11 #1).
            body.append((T.RAW_DATA_LENGTH, str(len(raw_data)).encode()))
            body.append((T.RAW_DATA, raw_data))
        self._send(MsgType.LOGON, body, now, sending_time=sending_time)

    def _on_logon_answer(self, msg: FixMessage, msg_type: bytes, seq: int, now: float) -> None:
        if msg_type == MsgType.REJECT:
            # Kalshi may precede a Logout with a Reject (e.g. 373=10); keep it as data.
            self._events.append(_reject_received(msg))
            return
        if msg_type == MsgType.LOGOUT:
            text = msg.get_str(T.TEXT)
            self._close("peer", text=text, clean=True)
            return
        f = self._header_ok(msg, msg_type, seq, now, count=False)
        if f is None:
            return
        # Kalshi (REFERENCE §2.3, §11 #7): what the answer holds is undocumented and the client
        # must rely on nothing but MsgType, header and MsgSeqNum, so a field FIX requires on a
        # Logon may be absent here; what is present must still be a well-formed Logon field.
        violation = dictionary.check(msg_type, msg.pairs, f, require=False)
        if violation is not None:
            # FIX: an invalid Logon is answered with a Logout and a disconnect.
            self._fatal(now, violation.text)
            return
        hb = f.get(T.HEART_BT_INT)
        if hb is not None and int(hb) > 0:
            self.heartbeat_interval = int(hb)
        if f.get(T.RESET_SEQ_NUM_FLAG) == b"Y" and not self._reset_requested:
            self._on_unrequested_reset_answer(msg, seq, now)
            return
        self._become_active(msg, seq, now)

    def _on_unrequested_reset_answer(self, msg: FixMessage, seq: int, now: float) -> None:
        """The acceptor answered our Logon (sent without ResetSeqNumFlag) with 141=Y.

        FIX defines 141=Y on a Logon as "both sides restart at 1", acknowledged by a Logon that
        also carries 141=Y, and has no separate rule for one that comes as the answer. A
        disconnect would only bring the next Logon to the same answer, so it is taken as the
        acceptor's reset, the way the standard treats a reset Logon: its MsgSeqNum must be 1,
        both our numbers restart at 1, and, unless our own Logon already was number 1, we
        acknowledge with a reset Logon (34=1, 141=Y) so that the acceptor knows where our
        numbering stands (the Logon we sent under the old count is void). The acceptor's answer
        to that acknowledgement is not answered again (as after a mid-session reset).
        """
        if seq != 1:
            self._fatal(now, f"Logon with ResetSeqNumFlag=Y must have MsgSeqNum 1, got {seq}")
            return
        store = self._store_()
        moved = (store.next_sender_seq, store.next_target_seq) != (2, 1)
        if store.next_sender_seq == 2:
            # Our Logon was number 1: the acceptor's count of our messages is already right.
            store.set_next_target_seq(1)
            self._reset_requested = True
        else:
            self._send_logon(now, reset=True)  # resets the store, signs as any Logon of ours
            self._reset_answer_pending = True
        self._become_active(msg, seq, now)
        if moved and self.state is State.ACTIVE:
            # Whatever was missing under the old numbering can no longer be asked for.
            store = self._store_()
            self._events.append(
                SequenceNumbersReset(store.next_sender_seq, store.next_target_seq)
            )

    def _on_logon_request(self, msg: FixMessage, seq: int, now: float) -> None:
        """Acceptor: basic checks, then hand the decision to the application."""
        sender = msg.get(T.SENDER_COMP_ID)
        target = msg.get(T.TARGET_COMP_ID)
        hb = msg.get(T.HEART_BT_INT)
        problem = None
        if not sender:
            problem = "Required tag missing: SenderCompID(49)"
        elif not target:
            problem = "Required tag missing: TargetCompID(56)"
        elif (violation := dictionary.check(
            MsgType.LOGON, msg.pairs, msg.first_values()
        )) is not None:
            # FIX: an invalid Logon is answered with a Logout (its text says what is wrong) and
            # a disconnect, never a Reject; EncryptMethod, HeartBtInt and DefaultApplVerID are
            # present and well-formed past this point.
            problem = violation.text
        elif (encrypt := msg.get(T.ENCRYPT_METHOD)) != b"0":
            # We (like Kalshi, REFERENCE §2.1) support only EncryptMethod 0 = none: any other
            # method is refused rather than misread.
            problem = f"EncryptMethod(98)={(encrypt or b'').decode('latin-1')} is not supported"
        elif int(hb or b"0") < self.settings.min_heartbeat_interval:
            problem = (f"HeartBtInt(108) must be at least {self.settings.min_heartbeat_interval}, "
                       f"got {int(hb or b'0')}")
        self._target = sender or b"?"
        self._goto(State.LOGON_RECEIVED)
        self._pending_logon = msg
        if problem is None and target != self._sender:
            problem = (f"CompID problem: TargetCompID {(target or b'').decode('latin-1')!r} is not "
                       f"{self.settings.sender_comp_id!r}")
        if problem is None:
            raw = msg.get(T.SENDING_TIME) or b""
            try:
                sent = parse_utc_timestamp(raw)
            except ValueError:
                problem = f"SendingTime(52) is not a UTCTimestamp: {raw.decode('latin-1')!r}"
            else:
                tol = self.settings.sending_time_tolerance
                if tol is not None and abs(sent - now) > tol:
                    self._reject_logon(
                        now, msg, f"SendingTime accuracy problem: {abs(sent - now):.1f} s off",
                        SessionRejectReason.SENDING_TIME_ACCURACY, T.SENDING_TIME,
                    )
                    return
        if problem is not None:
            self._reject_logon(now, msg, problem, None, None)
            return
        assert sender is not None and target is not None and hb is not None
        self.heartbeat_interval = int(hb)
        self._events.append(
            LogonRequested(
                message=msg,
                sender_comp_id=sender.decode("latin-1"),
                target_comp_id=target.decode("latin-1"),
                heartbeat_interval=int(hb),
                reset_seq_num=msg.get(T.RESET_SEQ_NUM_FLAG) == b"Y",
            )
        )

    def _reject_logon(
        self, now: float, logon: FixMessage, text: str, reject_reason: int | None,
        ref_tag: int | None,
    ) -> None:
        """Refuse ``logon`` (the first of the connection or a reset Logon): Reject when there
        is a reason, Logout with ``text``, close."""
        self._pending_logon = None
        if self._store is None:
            self._store = MemoryStore()
        if reject_reason is not None:
            self._send_reject(now, logon, reject_reason, text, ref_tag=ref_tag)
        self._send_logout(now, text)
        self._close("local", text=text)

    def _become_active(self, logon: FixMessage, seq: int, now: float) -> None:
        """Enter ACTIVE and apply the Logon's own MsgSeqNum; LoggedOn (reporting the numbers
        after that) comes before any gap event the Logon revealed."""
        self._goto(State.ACTIVE)
        self._logon_deadline = None
        mark = len(self._events)
        self._after_logon_sequence(logon, seq, now)
        if self.state is not State.ACTIVE:
            return  # the Logon itself broke a sequence rule; the session never started
        self._was_logged_on = True
        store = self._store_()
        self._events.insert(
            mark,
            LoggedOn(
                heartbeat_interval=self.heartbeat_interval,
                reset_seq_num=self._reset_requested,
                next_sender_seq=store.next_sender_seq,
                next_target_seq=store.next_target_seq,
            ),
        )

    def _after_logon_sequence(self, msg: FixMessage, seq: int, now: float) -> None:
        """MsgSeqNum rules for the Logon itself (it may reveal a gap or a too-low number)."""
        store = self._store_()
        if self._reset_requested and msg.get(T.RESET_SEQ_NUM_FLAG) == b"Y":
            store.set_next_target_seq(1)
        expected = store.next_target_seq
        if seq == expected:
            store.set_next_target_seq(seq + 1)
        elif seq < expected:
            self._fatal(now, f"MsgSeqNum too low, expecting {expected} but received {seq}")
        elif not self.settings.retransmission:
            self._events.append(SequenceGap(expected, seq))
            store.set_next_target_seq(seq + 1)
        else:
            # The peer will resend expected..seq-1 and gap-fill the Logon's own number.
            self._request_resend(expected, seq, now)

    # ------------------------------------------------------------------ admin handlers
    def _on_heartbeat(self, msg: FixMessage, seq: int, now: float) -> None:
        test_id = msg.get(T.TEST_REQ_ID)
        if test_id is not None:
            self._events.append(TestResponse(test_id.decode("latin-1")))

    def _on_test_request(self, msg: FixMessage, seq: int, now: float) -> None:
        test_id = msg.get(T.TEST_REQ_ID)
        assert test_id is not None  # required by the session dictionary
        self._send(MsgType.HEARTBEAT, [(T.TEST_REQ_ID, test_id)], now)

    def _on_resend_request(self, msg: FixMessage, seq: int, now: float) -> None:
        if not self.settings.retransmission:
            # Kalshi's sessions without retransmission answer 373=11 and go on (§11 #22); we
            # never answer with a SequenceReset towards such an endpoint.
            self._send_reject(now, msg, SessionRejectReason.INVALID_MSG_TYPE,
                              "ResendRequest is not supported on this session", ref_tag=T.MSG_TYPE)
            return
        # Both present, integers, BeginSeqNo >= 1 and EndSeqNo >= 0: the session dictionary.
        begin = int(msg.get(T.BEGIN_SEQ_NO) or b"1")
        end = int(msg.get(T.END_SEQ_NO) or b"0")
        if end != 0 and begin > end:
            # FIX: an empty range is a value out of range for EndSeqNo, answered with a Reject
            # alone (not with an empty resend).
            self._send_reject(
                now, msg, SessionRejectReason.VALUE_INCORRECT,
                f"Value is incorrect (out of range) for this tag: EndSeqNo(16)={end} is below "
                f"BeginSeqNo(7)={begin}", ref_tag=T.END_SEQ_NO,
            )
            return
        if begin < self.resend_floor:
            self._send_reject(now, msg, SessionRejectReason.VALUE_INCORRECT,
                              f"BeginSeqNo {begin} is older than the retention period",
                              ref_tag=T.BEGIN_SEQ_NO)
            return
        self._serve_resend(begin, end, now)

    def _serve_resend(self, begin: int, end: int, now: float) -> None:
        store = self._store_()
        last = store.next_sender_seq - 1
        if end == 0 or end > last:
            end = last
        begin = max(begin, 1)
        if begin > end:
            self._events.append(ResendServed(begin, end, 0, 0))
            return
        resent = gap_filled = 0
        next_seq = begin
        for seq, raw in store.get_sent(begin, end):
            if seq > next_seq:
                self._gap_fill(next_seq, seq, now)
                gap_filled += seq - next_seq
            try:
                self._out += self._as_poss_dup(raw, now)
                resent += 1
            except CodecError:
                # A stored message we cannot re-read is replaced by a gap fill, never dropped
                # silently: the peer's sequence stays whole.
                self._gap_fill(seq, seq + 1, now)
                gap_filled += 1
            next_seq = seq + 1
        if next_seq <= end:
            self._gap_fill(next_seq, end + 1, now)
            gap_filled += end + 1 - next_seq
        self._last_sent = now
        self._events.append(ResendServed(begin, end, resent, gap_filled))

    def _gap_fill(self, seq: int, new_seq: int, now: float) -> None:
        stamp = utc_timestamp(now)
        header = self._header(seq, stamp) + [(T.POSS_DUP_FLAG, b"Y"), (T.ORIG_SENDING_TIME, stamp)]
        self._out += encode_message(
            MsgType.SEQUENCE_RESET, header,
            [(T.GAP_FILL_FLAG, b"Y"), (T.NEW_SEQ_NO, str(new_seq).encode())],
            self.settings.begin_string,
        )

    def _as_poss_dup(self, raw: bytes, now: float) -> bytes:
        old = decode(raw)
        orig_time = old.get(T.SENDING_TIME) or utc_timestamp(now)
        seq = old.get(T.MSG_SEQ_NUM) or b"0"
        header = [
            (T.SENDER_COMP_ID, old.get(T.SENDER_COMP_ID) or self._sender),
            (T.TARGET_COMP_ID, old.get(T.TARGET_COMP_ID) or self._target or b""),
            (T.MSG_SEQ_NUM, seq),
            (T.POSS_DUP_FLAG, b"Y"),
            (T.SENDING_TIME, utc_timestamp(now)),
            (T.ORIG_SENDING_TIME, orig_time),
        ]
        body = [(t, v) for t, v in old.pairs if t not in _HEADER_TAGS]
        return encode_message(old.get(T.MSG_TYPE) or b"", header, body, self.settings.begin_string)

    def _on_reject(self, msg: FixMessage, seq: int, now: float) -> None:
        event = _reject_received(msg)
        self._events.append(event)
        if self._resend_through is not None and self._refuses_our_resend(event):
            self._abandon_resend(now)

    def _refuses_our_resend(self, reject: RejectReceived) -> bool:
        """Whether a Reject names one of the ResendRequests sent for the current gap (by
        RefSeqNum; by RefMsgType=2 only when RefSeqNum is missing)."""
        if reject.ref_seq_num is None:
            return reject.ref_msg_type == MsgType.RESEND_REQUEST
        return reject.ref_seq_num in self._resend_requests

    def _abandon_resend(self, now: float) -> None:
        """The peer rejected our ResendRequest (e.g. Kalshi: BeginSeqNo older than the
        retention period): the gap will never be filled. Report it as a SequenceGap, as on a
        session without retransmission, and deliver what waited behind it; asking again would
        only be rejected again while live messages pile up."""
        through = self._resend_through
        assert through is not None
        store = self._store_()
        expected = store.next_target_seq
        self._resend_through = None
        self._resend_requests.clear()
        # A gap revealed by a Logon has nothing queued: the Logon's own number is the last one
        # the peer was to fill.
        resume = min(self._queue) if self._queue else through + 1
        if resume > expected:
            self._events.append(SequenceGap(expected, resume, resend_rejected=True))
            store.set_next_target_seq(resume)
        self._drain_queue(now)

    def _on_sequence_reset(
        self, msg: FixMessage, seq: int, now: float, *, gap_fill: bool = True
    ) -> None:
        if not self.settings.retransmission and self.settings.role is Role.ACCEPTOR:
            # Kalshi (REFERENCE §3.3, §11 #22): an endpoint without retransmission does not
            # support SequenceReset; the simulated one answers 373=11 and carries on. Our client
            # still honours a SequenceReset from such an endpoint: refusing it would only turn
            # the numbers it skips into a spurious SequenceGap.
            self._send_reject(now, msg, SessionRejectReason.INVALID_MSG_TYPE,
                              "SequenceReset is not supported on this session", ref_tag=T.MSG_TYPE)
            return
        # Present, an integer, at least 1: the session dictionary.
        new_seq = int(msg.get(T.NEW_SEQ_NO) or b"1")
        store = self._store_()
        expected = store.next_target_seq
        if new_seq < expected:
            # FIX forbids moving the expected number backwards.
            self._send_reject(
                now, msg, SessionRejectReason.VALUE_INCORRECT,
                f"NewSeqNo {new_seq} would lower the expected MsgSeqNum {expected}",
                ref_tag=T.NEW_SEQ_NO,
            )
            return
        store.set_next_target_seq(new_seq)
        # A GapFill marked PossDup that arrives in sequence while our resend is outstanding
        # answers it: the numbers it skips are ones we asked for and will never see.
        requested = (
            seq if gap_fill and self._resend_through is not None and new_seq > seq
            and msg.get(T.POSS_DUP_FLAG) == b"Y" else None
        )
        self._events.append(SequenceResetReceived(new_seq, gap_fill, requested))
        if not gap_fill:
            self._drain_queue(now)

    def _on_logout(self, msg: FixMessage, seq: int, now: float) -> None:
        text = msg.get_str(T.TEXT)
        if self.state is State.LOGOUT_SENT:
            self._close("local", text=text, clean=True)
            return
        self._send_logout(now, None)
        self._close("peer", text=text, clean=True)

    def _on_logon_while_active(self, msg: FixMessage, seq: int, now: float) -> None:
        # Only a Logon without ResetSeqNumFlag=Y gets here (see _sequence): FIX has no use for
        # it on a logged-on session.
        self._fatal(now, "Logon received on an already active session")

    def _on_reset_logon(self, msg: FixMessage, seq: int, now: float) -> None:
        """The peer reset the sequence numbers with a Logon (141=Y) while logged on: FIX has us
        reset both numbers to 1 and answer with our own Logon carrying 141=Y (MsgSeqNum 1).
        An acceptor first lets ``settings.review_reset_logon`` refuse it."""
        review = self.settings.review_reset_logon
        if review is not None and self.settings.role is Role.ACCEPTOR:
            # A reset Logon is a Logon: the application checks it as it checks a first one (a
            # gateway verifies its signature again). Asked before anything below changes the
            # store or the resend state, so a refusal leaves the old numbering whole: the
            # Reject and Logout go out under it.
            refusal = review(msg)
            if refusal is not None:
                self._reject_logon(
                    now, msg, refusal.text, refusal.session_reject_reason, refusal.ref_tag
                )
                return
        if seq != 1:
            self._fatal(now, f"Logon with ResetSeqNumFlag=Y must have MsgSeqNum 1, got {seq}")
            return
        # Whatever a resend was filling belongs to the numbering that just ended.
        self._queue.clear()
        self._resend_through = None
        self._resend_requests.clear()
        store = self._store_()
        if self.settings.role is Role.INITIATOR:
            if self._reset_answer_pending:
                # The acceptor's answer to our reset Logon. As QuickFIX's initiator does, we do
                # not answer it again: the acceptor always answers a reset Logon, so two of us
                # would reset each other for ever (a replayed Logon starts exactly that).
                self._reset_answer_pending = False
                store.set_next_target_seq(seq + 1)
                self._events.append(
                    SequenceNumbersReset(store.next_sender_seq, store.next_target_seq)
                )
                return
            self._send_logon(now, reset=True)  # resets the store, signs as any Logon of ours
            self._reset_answer_pending = True
        else:
            store.reset(now)
            self._reset_requested = True
            self._send(MsgType.LOGON, self._logon_body(reset=True), now)
        store.set_next_target_seq(seq + 1)
        self._events.append(
            SequenceNumbersReset(store.next_sender_seq, store.next_target_seq)
        )

    def _logon_body(self, *, reset: bool) -> list[tuple[int, bytes]]:
        body: list[tuple[int, bytes]] = [
            (T.ENCRYPT_METHOD, b"0"),
            (T.HEART_BT_INT, str(self.heartbeat_interval).encode()),
        ]
        if reset:
            body.append((T.RESET_SEQ_NUM_FLAG, b"Y"))
        # FIXT.1.1: DefaultApplVerID(1137) is required on the Logon, in both directions.
        body.append((T.DEFAULT_APPL_VER_ID, self.settings.default_appl_ver_id))
        return body

    # ------------------------------------------------------------------ outbound helpers
    def _header(self, seq: int, sending_time: bytes) -> list[tuple[int, bytes]]:
        return [
            (T.SENDER_COMP_ID, self._sender),
            (T.TARGET_COMP_ID, self._target or b""),
            (T.MSG_SEQ_NUM, str(seq).encode()),
            (T.SENDING_TIME, sending_time),
        ]

    def _send(
        self,
        msg_type: bytes,
        body: Pairs,
        now: float,
        *,
        application: bool = False,
        sending_time: bytes | None = None,
    ) -> int:
        store = self._store_()
        seq = store.next_sender_seq
        raw = encode_message(
            msg_type,
            self._header(seq, sending_time or utc_timestamp(now)),
            body,
            self.settings.begin_string,
        )
        # Persist first: a message only counts as sent once its number is durable.
        store.record_sent(seq, now, raw, application=application)
        self._out += raw
        self._last_sent = now
        return seq

    def _send_logout(self, now: float, text: str | None) -> None:
        body = [] if not text else [(T.TEXT, text.encode("ascii", "replace"))]
        self._send(MsgType.LOGOUT, body, now)

    def _send_reject(
        self,
        now: float,
        msg: FixMessage,
        reason: int,
        text: str,
        *,
        ref_tag: int | None = None,
    ) -> None:
        ref_seq = msg.get(T.MSG_SEQ_NUM)
        ref_seq_num = int(ref_seq) if ref_seq and ref_seq.isdigit() else 0
        ref_type = msg.get(T.MSG_TYPE)
        body: list[tuple[int, bytes]] = [(T.REF_SEQ_NUM, str(ref_seq_num).encode())]
        if ref_tag is not None:
            body.append((T.REF_TAG_ID, str(ref_tag).encode()))
        if ref_type:
            body.append((T.REF_MSG_TYPE, ref_type))
        body.append((T.SESSION_REJECT_REASON, str(reason).encode()))
        body.append((T.TEXT, text.encode("ascii", "replace")))
        self._send(MsgType.REJECT, body, now)
        self._events.append(RejectSent(ref_seq_num, reason, text, ref_tag, ref_type))

    def _fatal(
        self,
        now: float,
        text: str,
        *,
        send_logout: bool = True,
        reject_already_sent: bool = False,
    ) -> None:
        """A violation that ends the session: Logout with the reason, then close at once."""
        self._events.append(ProtocolViolation(text))
        if send_logout and self.state is not State.CLOSED and self._store is not None:
            self._send_logout(now, text)
        self._close("error", reason_text=text)

    # ------------------------------------------------------------------ plumbing
    def _close(
        self,
        initiated_by: str,
        *,
        text: str | None = None,
        clean: bool = False,
        reason_text: str | None = None,
    ) -> None:
        if self.state is State.CLOSED:
            return
        self._goto(State.CLOSED)
        self._queue.clear()
        self._held.clear()
        self._events.append(
            SessionEnded(
                initiated_by=initiated_by,
                text=text,
                reason=classify_logout_text(text if text is not None else reason_text),
                clean=clean,
                was_logged_on=self._was_logged_on,
            )
        )

    def _goto(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"illegal session transition {self.state.value} -> {new.value}")
        self.state = new

    def _require_active(self, what: str) -> None:
        if self.state is not State.ACTIVE:
            raise LocalProtocolError(f"cannot {what}: session is {self.state.value}")

    def _store_(self) -> MessageStore:
        if self._store is None:
            self._store = MemoryStore()
        return self._store

    def _batch(self) -> contextlib.AbstractContextManager[object]:
        batch = getattr(self._store, "batch", None)
        return batch() if batch is not None else contextlib.nullcontext()

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events


def _reject_received(msg: FixMessage) -> RejectReceived:
    def _int(tag: int) -> int | None:
        v = msg.get(tag)
        return int(v) if v is not None and v.isdigit() else None

    return RejectReceived(
        ref_seq_num=_int(T.REF_SEQ_NUM),
        reason=_int(T.SESSION_REJECT_REASON),
        text=msg.get_str(T.TEXT),
        ref_tag=_int(T.REF_TAG_ID),
        ref_msg_type=msg.get(T.REF_MSG_TYPE),
        message=msg,
    )


#: MsgTypes whose MsgSeqNum may legitimately be out of line: SequenceReset in Reset mode and a
#: Logon with ResetSeqNumFlag=Y (one set test on the common path instead of two compares).
_SEQUENCE_EXEMPT = frozenset({MsgType.SEQUENCE_RESET, MsgType.LOGON})

#: Session MsgTypes still acted on after a dictionary Reject (see _session_message_ok).
_HEARD_WHEN_MALFORMED = frozenset({MsgType.LOGOUT, MsgType.REJECT})

#: Session MsgTypes with no repeating group, where a repeated tag is an error (373=13). Logon
#: may carry NoMsgTypes(384), Logout must end the session whatever it holds, and a Reject is
#: left to the session dictionary's rules, which never reject a Reject of our Reject.
_GROUPLESS_ADMIN = frozenset({
    MsgType.HEARTBEAT, MsgType.TEST_REQUEST, MsgType.RESEND_REQUEST, MsgType.SEQUENCE_RESET,
})

_Handler = Callable[[FixConnection, FixMessage, int, float], None]

#: Session-level MsgTypes and what an in-sequence one does; everything else is application data.
_ADMIN_HANDLERS: dict[bytes, _Handler] = {
    MsgType.HEARTBEAT: FixConnection._on_heartbeat,
    MsgType.TEST_REQUEST: FixConnection._on_test_request,
    MsgType.RESEND_REQUEST: FixConnection._on_resend_request,
    MsgType.REJECT: FixConnection._on_reject,
    MsgType.SEQUENCE_RESET: FixConnection._on_sequence_reset,  # in sequence: GapFill mode
    MsgType.LOGOUT: FixConnection._on_logout,
    MsgType.LOGON: FixConnection._on_logon_while_active,
}
