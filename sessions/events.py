"""Events the session core hands to its driver and application (frozen, comparable, printable).

Like h11's events: the core never calls back into the application; it returns these from
``receive_data``, ``tick`` and ``connection_lost``, in the order things happened on the wire.
"""

from __future__ import annotations

import enum

import attrs

from .message import FixMessage


class LogoutReason(enum.Enum):
    """Why a counterparty logged us out, read from the Logout/Reject text (REFERENCE §2.3).

    Kalshi documents only ``already exists``; the other texts are not fixed, so the classes are
    found by keywords and anything unrecognised is ``OTHER`` (the raw text is always kept).
    """

    ALREADY_EXISTS = "already_exists"  # another connection holds the API key: retry later
    SIGNATURE = "signature"  # RawData did not verify: wrong key or clock; do not retry
    COMP_ID = "comp_id"  # SenderCompID not a key / TargetCompID not this port; do not retry
    RESET_REQUIRED = "reset_required"  # ResetSeqNumFlag=Y missing where mandatory
    SEQUENCE = "sequence"  # MsgSeqNum too low/high: reset or reconcile
    SENDING_TIME = "sending_time"  # clock more than 30 s off
    MAINTENANCE = "maintenance"  # exchange closed for the weekly window
    HEARTBEAT = "heartbeat"  # heartbeat/test request timeout
    OTHER = "other"


_KEYWORDS: tuple[tuple[LogoutReason, tuple[str, ...]], ...] = (
    (LogoutReason.ALREADY_EXISTS, ("already exists", "already logged", "already connected")),
    (LogoutReason.SIGNATURE, ("signature", "rawdata", "raw data", "authenticat")),
    (LogoutReason.RESET_REQUIRED, ("resetseqnumflag", "reset seq", "141")),
    (LogoutReason.SEQUENCE, ("msgseqnum", "sequence", "seqnum")),
    (LogoutReason.SENDING_TIME, ("sendingtime", "sending time", "clock")),
    (LogoutReason.COMP_ID, ("compid", "comp id", "api key", "unknown key", "targetcompid", "sendercompid")),
    (LogoutReason.MAINTENANCE, ("maintenance", "closed", "unavailable")),
    (LogoutReason.HEARTBEAT, ("heartbeat", "test request", "testrequest")),
)


def classify_logout_text(text: str | None) -> LogoutReason:
    """Map a Logout/Reject ``Text(58)`` to a :class:`LogoutReason` (case-insensitive)."""
    if not text:
        return LogoutReason.OTHER
    low = text.lower()
    for reason, words in _KEYWORDS:
        if any(w in low for w in words):
            return reason
    return LogoutReason.OTHER


class Event:
    """Base class of all session events."""

    __slots__ = ()


@attrs.frozen
class LogonRequested(Event):
    """Acceptor only: a peer sent Logon. Call ``accept_logon`` or ``reject_logon``.

    ``message`` holds the wire values needed to check the signature (52, 34, 49, 56, 96).
    """

    message: FixMessage = attrs.field(eq=False)
    sender_comp_id: str
    target_comp_id: str
    heartbeat_interval: int
    reset_seq_num: bool


@attrs.frozen
class LoggedOn(Event):
    """The Logon handshake completed; application messages may flow."""

    heartbeat_interval: int
    reset_seq_num: bool
    next_sender_seq: int
    next_target_seq: int


@attrs.frozen
class ApplicationMessage(Event):
    """An in-sequence application message (PossDup ones are resends the peer made for us)."""

    message: FixMessage
    seq_num: int
    poss_dup: bool = False
    #: ``message.first_values()`` as the core read it to check the message (``None`` when the
    #: event was built by hand): observers read tags from it instead of scanning the message
    #: again. Shared, so treat it as read-only; see :meth:`field_map`.
    fields: dict[int, bytes] | None = attrs.field(default=None, eq=False, repr=False)

    def field_map(self) -> dict[int, bytes]:
        """Tag → value of its first occurrence (what ``message.get`` returns), read once."""
        f = self.fields
        return self.message.first_values() if f is None else f


@attrs.frozen
class SequenceGap(Event):
    """Inbound messages ``expected`` .. ``received - 1`` were never seen and will not be resent:
    the endpoint has no retransmission, or (``resend_rejected``) it rejected our ResendRequest
    for them. The supervisor must recover them elsewhere (drop copy). The message at
    ``received``, if one arrived, was delivered normally after this event."""

    expected: int
    received: int
    resend_rejected: bool = False


@attrs.frozen
class ResendRequestSent(Event):
    """We asked the peer to retransmit ``begin`` .. ``end`` (0 = through the latest)."""

    begin: int
    end: int


@attrs.frozen
class ResendServed(Event):
    """We answered a peer's ResendRequest: ``resent`` messages from the store, ``gap_filled`` seqs
    covered by SequenceReset-GapFill."""

    begin: int
    end: int
    resent: int
    gap_filled: int


@attrs.frozen
class SequenceNumbersReset(Event):
    """The peer sent a Logon with ResetSeqNumFlag=Y on a logged-on session, or (initiator) answered
    our Logon with 141=Y we had not asked for: both sequence numbers restarted at 1 and we
    answered with our own reset Logon where the peer needed one. Messages numbered under the old
    count that never arrived are not recoverable through resend any more."""

    next_sender_seq: int
    next_target_seq: int


@attrs.frozen
class SequenceResetReceived(Event):
    """The peer moved our expected inbound sequence number to ``new_seq_num``.

    ``requested_from`` is set when this was a GapFill answering our ResendRequest: numbers
    ``requested_from`` .. ``new_seq_num - 1``, which we had asked to be resent, were skipped
    instead. The peer gap-fills session messages that way, but also application messages it no
    longer has; the core cannot tell which, so a supervisor that must not lose executions
    reconciles through another channel (drop copy)."""

    new_seq_num: int
    gap_fill: bool
    requested_from: int | None = None


@attrs.frozen
class RejectSent(Event):
    """We rejected an inbound message at the session level (35=3)."""

    ref_seq_num: int
    reason: int | None
    text: str
    ref_tag: int | None = None
    ref_msg_type: bytes | None = None


@attrs.frozen
class RejectReceived(Event):
    """The peer rejected one of our messages at the session level (35=3): a bug on our side."""

    ref_seq_num: int | None
    reason: int | None
    text: str | None
    ref_tag: int | None
    ref_msg_type: bytes | None
    message: FixMessage = attrs.field(eq=False)


@attrs.frozen
class GarbledMessage(Event):
    """Bytes that were not a valid FIX message; they were discarded and the stream goes on."""

    reason: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen
class TestResponse(Event):
    """A Heartbeat answered one of our TestRequests (``test_req_id`` echoed)."""

    __test__ = False  # not a pytest test class, despite the name

    test_req_id: str


@attrs.frozen
class HeartbeatTimeout(Event):
    """Nothing arrived for too long, even after a TestRequest; the connection is being dropped."""

    silent_for: float


@attrs.frozen
class ProtocolViolation(Event):
    """The peer broke a session rule serious enough to end the session (text says which)."""

    text: str


@attrs.frozen
class SessionEnded(Event):
    """The session is over; the driver should flush ``data_to_send()`` and close the transport.

    ``initiated_by`` is ``"local"`` (we logged out), ``"peer"`` (peer's Logout), ``"error"``
    (a protocol violation or timeout) or ``"transport"`` (the connection was lost).
    ``text`` is the peer's Logout text when there was one; ``reason`` classifies it.
    """

    initiated_by: str
    text: str | None = None
    reason: LogoutReason = LogoutReason.OTHER
    clean: bool = False
    was_logged_on: bool = False
