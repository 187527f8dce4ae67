"""The session-level messages of FIXT.1.1, field by field, and the check the core runs on them.

Only the seven session MsgTypes (0, 1, 2, 3, 4, 5, A) are described: application messages belong
to the application's dictionary and never pass through :func:`check`, which keeps the
application receive path free of any per-field work. Tag sets follow the FIXT.1.1 definitions of
those messages; the Logon also admits everything REFERENCE §2.1 and Appendix B list for Kalshi's
Logon, so a Logon our client sends (or Kalshi's gateway might) is never refused for its options.

:func:`check` reports the first problem as a :class:`Violation` carrying the
SessionRejectReason(373), the tag and a text, in the order FIX engines commonly use: per field,
left to right, a value present (373=4: the core's header check finds it first on a logged-on
session, a Logon before logon meets it here), the tag number, whether the tag belongs to the
message, its format, its range; then the required tags. Repeated tags (373=13) and the header
fields the core checks itself (CompIDs, MsgSeqNum, SendingTime, PossDupFlag, OrigSendingTime)
are not repeated here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import attrs

from .tags import MsgType, SessionRejectReason

__all__ = [
    "FieldSpec",
    "Kind",
    "MessageSpec",
    "SESSION_FIELDS",
    "SESSION_MESSAGES",
    "USER_DEFINED_TAG_MIN",
    "Violation",
    "check",
]

#: FIX reserves tag numbers from 5000 up for fields agreed between counterparties.
USER_DEFINED_TAG_MIN = 5000

# Longer digit strings are no sequence number or count anyone sends; they are reported as out
# of range before int() is asked to convert them.
_MAX_INT_DIGITS = 18


class Kind(enum.Enum):
    """The FIX data types the session dictionary checks (the others are free text here)."""

    INT = "int"  # int, SeqNum, Length, NumInGroup, TagNum: optional '-' then digits
    BOOLEAN = "Boolean"  # one character, Y or N


@attrs.frozen
class FieldSpec:
    """A field of a session message: its name, type and the range FIX allows for it."""

    name: str
    kind: Kind
    low: int | None = None
    high: int | None = None


@attrs.frozen
class MessageSpec:
    """A session MsgType: the body tags it requires and every tag it may carry."""

    name: str
    required: frozenset[int]
    body: frozenset[int]
    allowed: frozenset[int] = attrs.field(init=False)

    @allowed.default
    def _allowed(self) -> frozenset[int]:
        return HEADER_TAGS | TRAILER_TAGS | self.body | self.required


@attrs.frozen
class Violation:
    """Why a session message is refused: SessionRejectReason(373), the tag, a text."""

    reason: int
    tag: int
    text: str


#: The FIXT.1.1 standard header, including the optional routing, hop and security fields.
HEADER_TAGS = frozenset({
    8, 9, 35, 49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144, 129, 145, 43, 97, 52,
    122, 212, 213, 347, 369, 627, 628, 629, 630, 1128, 1129, 1156,
})
#: The standard trailer (SignatureLength, Signature, CheckSum).
TRAILER_TAGS = frozenset({93, 89, 10})

_TEXT = frozenset({58, 354, 355})  # Text, EncodedTextLen, EncodedText

# Kalshi's Logon options (REFERENCE §2.1, Appendix B): 21003 is the pre-1.0.17 tag of
# SkipPendingExecReports, still accepted; 21006 and 20130 appear on the Logon in dictionary
# v1.03 (§11 #19). Their values are Kalshi's to check (the gateway's Logon rules), not FIX's.
_KALSHI_LOGON = frozenset({
    8013, 20126, 20127, 20130, 20200, 21003, 21005, 21006, 21007, 21008, 21011, 21012, 21026,
    21027,
})

SESSION_MESSAGES: dict[bytes, MessageSpec] = {
    MsgType.HEARTBEAT: MessageSpec("Heartbeat", frozenset(), frozenset({112})),
    MsgType.TEST_REQUEST: MessageSpec("TestRequest", frozenset({112}), frozenset()),
    MsgType.RESEND_REQUEST: MessageSpec("ResendRequest", frozenset({7, 16}), frozenset()),
    MsgType.REJECT: MessageSpec(
        "Reject", frozenset({45}), frozenset({371, 372, 373}) | _TEXT
    ),
    MsgType.SEQUENCE_RESET: MessageSpec("SequenceReset", frozenset({36}), frozenset({123})),
    MsgType.LOGOUT: MessageSpec("Logout", frozenset(), frozenset({1409}) | _TEXT),
    MsgType.LOGON: MessageSpec(
        "Logon",
        frozenset({98, 108, 1137}),
        # 95/96 RawData (Kalshi's signature), 789 NextExpectedMsgSeqNum, 383 MaxMessageSize,
        # 384 NoMsgTypes with its group 372/385/1130/1131, 464 TestMessageIndicator,
        # 553/554/925 and 1400-1404 the user and password fields, 1409 SessionStatus,
        # 1407/1408 the default application extension and custom version.
        frozenset({
            95, 96, 141, 789, 383, 384, 372, 385, 1130, 1131, 464, 553, 554, 925, 1400, 1401,
            1402, 1403, 1404, 1409, 1407, 1408,
        }) | _TEXT | _KALSHI_LOGON,
    ),
}

#: Formats and ranges FIX defines for the fields above (and PossResend from the header).
#: PossDupFlag(43), SendingTime(52) and OrigSendingTime(122) are the core's header checks.
SESSION_FIELDS: dict[int, FieldSpec] = {
    7: FieldSpec("BeginSeqNo", Kind.INT, low=1),
    16: FieldSpec("EndSeqNo", Kind.INT, low=0),  # 0: through the latest
    36: FieldSpec("NewSeqNo", Kind.INT, low=1),
    45: FieldSpec("RefSeqNum", Kind.INT, low=0),  # 0: the rejected message had no number
    97: FieldSpec("PossResend", Kind.BOOLEAN),
    98: FieldSpec("EncryptMethod", Kind.INT, low=0, high=6),
    108: FieldSpec("HeartBtInt", Kind.INT, low=0),  # 0: no heartbeats
    123: FieldSpec("GapFillFlag", Kind.BOOLEAN),
    141: FieldSpec("ResetSeqNumFlag", Kind.BOOLEAN),
    354: FieldSpec("EncodedTextLen", Kind.INT, low=1),
    371: FieldSpec("RefTagID", Kind.INT, low=0),  # 0: a Reject of tag number 0 names it
    373: FieldSpec("SessionRejectReason", Kind.INT, low=0),
    383: FieldSpec("MaxMessageSize", Kind.INT, low=0),
    384: FieldSpec("NoMsgTypes", Kind.INT, low=0),
    464: FieldSpec("TestMessageIndicator", Kind.BOOLEAN),
    789: FieldSpec("NextExpectedMsgSeqNum", Kind.INT, low=1),
    1409: FieldSpec("SessionStatus", Kind.INT, low=0),
}

_NAMES = {112: "TestReqID", 1137: "DefaultApplVerID"}


def _name(tag: int) -> str:
    spec = SESSION_FIELDS.get(tag)
    return f"{spec.name if spec else _NAMES.get(tag, 'tag')}({tag})"


def _value_problem(tag: int, value: bytes) -> Violation | None:
    spec = SESSION_FIELDS.get(tag)
    if spec is None:
        return None
    shown = value.decode("latin-1")
    if spec.kind is Kind.BOOLEAN:
        if value in (b"Y", b"N"):
            return None
        # FIX: a single character other than Y/N is a value outside the list (373=5); anything
        # longer is not a char at all (373=6).
        if len(value) == 1:
            return _out_of_range(tag, shown)
        return _bad_format(tag, shown)
    digits = value[1:] if value[:1] == b"-" else value
    if not digits.isdigit():
        return _bad_format(tag, shown)
    if len(digits) > _MAX_INT_DIGITS:
        return _out_of_range(tag, shown)
    number = int(value)
    if (spec.low is not None and number < spec.low) or (
        spec.high is not None and number > spec.high
    ):
        return _out_of_range(tag, shown)
    return None


def _out_of_range(tag: int, shown: str) -> Violation:
    return Violation(
        SessionRejectReason.VALUE_INCORRECT, tag,
        f"Value is incorrect (out of range) for this tag: {_name(tag)}={shown}",
    )


def _bad_format(tag: int, shown: str) -> Violation:
    return Violation(
        SessionRejectReason.INCORRECT_DATA_FORMAT, tag,
        f"Incorrect data format for value: {_name(tag)}={shown}",
    )


def check(
    msg_type: bytes,
    pairs: Sequence[tuple[int, bytes]],
    fields: Mapping[int, bytes],
    *,
    require: bool = True,
) -> Violation | None:
    """The first dictionary violation of a session message, or ``None`` (also for a MsgType
    that is not a session message). ``fields`` is the message's ``first_values()``;
    ``require=False`` skips the required-tag rule (the caller tolerates absent fields)."""
    spec = SESSION_MESSAGES.get(msg_type)
    if spec is None:
        return None
    allowed = spec.allowed
    for tag, value in pairs:
        if not value:
            return Violation(
                SessionRejectReason.TAG_WITHOUT_VALUE, tag, f"Tag specified without a value: {tag}"
            )
        if tag not in allowed:
            if tag == 0:
                # Tag numbers start at 1: 0 is the one number that can never be a field.
                return Violation(
                    SessionRejectReason.INVALID_TAG_NUMBER, 0, "Invalid tag number: 0"
                )
            if tag >= USER_DEFINED_TAG_MIN:
                # FIX leaves user-defined fields to bilateral agreement. A counterparty may put
                # its own on any message (Kalshi adds a dozen to the Logon, and its answers are
                # not fully documented, REFERENCE §2.3), so they are tolerated on session
                # messages: refusing one would end a logon or reject a heartbeat over a field
                # that changes nothing at the session level. The application may still refuse
                # them on the messages it owns (the gateway does, with 373=3).
                continue
            # Without FIX's whole tag list the core cannot tell a number FIX never assigned
            # from one assigned to another message; "not defined for this message type" is true
            # of both, so that is the reason given (373=0 is kept for tag 0).
            return Violation(
                SessionRejectReason.TAG_NOT_DEFINED_FOR_MSG_TYPE, tag,
                f"Tag not defined for this message type: {tag}",
            )
        problem = _value_problem(tag, value)
        if problem is not None:
            return problem
    if require:
        for tag in sorted(spec.required):
            if tag not in fields:
                return Violation(
                    SessionRejectReason.REQUIRED_TAG_MISSING, tag,
                    f"Required tag missing: {_name(tag)}",
                )
    return None
