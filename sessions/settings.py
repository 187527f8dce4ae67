"""What the session core needs to know about one FIX session (no I/O, no file paths)."""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from .message import FixMessage


class Role(enum.Enum):
    """Which side of the Logon handshake we play."""

    INITIATOR = "initiator"  # our client: dials out and sends Logon first
    ACCEPTOR = "acceptor"  # the simulated gateway: answers Logon


def _ref_tag_needs_reason(instance: LogonRefusal, attribute: object, value: int | None) -> None:
    # RefTagID(371) travels only in the session-level Reject, which exists only with a reason.
    if value is not None and instance.session_reject_reason is None:
        raise ValueError("a LogonRefusal with a ref_tag needs a session_reject_reason")


@attrs.frozen
class LogonRefusal:
    """An acceptor application's "no" to a Logon, answered as a refused first Logon is (see
    :meth:`~sessions.connection.FixConnection.reject_logon`): a session-level Reject (35=3)
    with ``session_reject_reason`` (373) and ``ref_tag`` (371) when a reason is given, then a
    Logout whose Text(58) is ``text``, then the end of the connection.

    ``text`` goes on the wire to the peer as it is: name the problem (and a key id if need be),
    never key material.
    """

    text: str = attrs.field(validator=attrs.validators.min_len(1))
    session_reject_reason: int | None = None
    ref_tag: int | None = attrs.field(default=None, validator=_ref_tag_needs_reason)


def _fields(value: object) -> tuple[tuple[int, bytes], ...]:
    return tuple((int(t), v if isinstance(v, bytes) else str(v).encode()) for t, v in value)  # type: ignore[attr-defined]


@attrs.frozen
class SessionSettings:
    """The knobs of one :class:`~sessions.connection.FixConnection`.

    Initiator: ``sender_comp_id`` is the API key id, ``target_comp_id`` the endpoint's name.
    Acceptor: ``sender_comp_id`` is the endpoint's name; ``target_comp_id`` is learned from each
    client's Logon, so leave it ``None``.
    """

    role: Role
    sender_comp_id: str
    target_comp_id: str | None = None
    heartbeat_interval: int = 30
    #: Send ResetSeqNumFlag=Y on Logon (initiator) — both sides then start again at 1.
    reset_seq_num_on_logon: bool = True
    #: Whether the peer offers ResendRequest/SequenceReset. When False we never send either;
    #: a gap is reported as :class:`~sessions.events.SequenceGap` instead.
    retransmission: bool = False
    begin_string: bytes = b"FIXT.1.1"
    default_appl_ver_id: bytes = b"9"
    #: Extra Logon body fields (Kalshi options), already validated, in wire order.
    logon_fields: tuple[tuple[int, bytes], ...] = attrs.field(default=(), converter=_fields)
    #: Computes RawData(96) (Base64 text) from the pre-hash; ``None`` sends no signature.
    sign_logon: Callable[[bytes], bytes] | None = attrs.field(default=None, repr=False)
    #: Acceptor only: reviews a Logon with ResetSeqNumFlag=Y received while the session is
    #: logged on, which the core otherwise answers by itself (the first Logon of a connection
    #: goes to the application as :class:`~sessions.events.LogonRequested` instead). Called
    #: once the core found the message's header and fields well-formed, before the reset
    #: touches the store. ``None`` accepts: both numbers restart at 1, the core answers with
    #: its own reset Logon and reports :class:`~sessions.events.SequenceNumbersReset`. A
    #: :class:`LogonRefusal` ends the session as a refused first Logon does, under the old
    #: numbers. The initiator never calls it. Must not raise (it runs inside ``receive_data``).
    review_reset_logon: Callable[[FixMessage], LogonRefusal | None] | None = attrs.field(
        default=None, repr=False
    )
    #: CompIDs other than ``target_comp_id`` accepted in the peer's SenderCompID(49).
    #: Kalshi's documentation names both the session name and the literal ``Kalshi``
    #: (REFERENCE §3.1, UNCONFIRMED), so the client accepts either.
    accepted_peer_comp_ids: frozenset[str] = frozenset()
    #: Largest accepted |SendingTime - now| in seconds (Kalshi: 30 s); ``None`` disables the check.
    sending_time_tolerance: float | None = 30.0
    logon_timeout: float = 10.0
    logout_timeout: float = 5.0
    #: Extra silence allowed beyond HeartBtInt before a TestRequest, as a fraction of it
    #: (the usual "reasonable transmission time" of 20%).
    heartbeat_grace: float = 0.2
    max_message_size: int = 65536
    #: Application MsgTypes this side understands; others get Reject 373=11. ``None`` = all.
    application_msg_types: frozenset[bytes] | None = None
    #: Out-of-order messages held while a ResendRequest is answered; beyond it we disconnect.
    resend_queue_limit: int = 10_000
    #: Smallest HeartBtInt an acceptor accepts from a Logon (Kalshi prediction: > 3).
    min_heartbeat_interval: int = 4
