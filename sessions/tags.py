"""Tag numbers and MsgType values used by the session layer (facts from REFERENCE.md §2–§3)."""

from __future__ import annotations

from typing import Final

BEGIN_STRING: Final = 8
BODY_LENGTH: Final = 9
CHECKSUM: Final = 10
MSG_TYPE: Final = 35
SENDER_COMP_ID: Final = 49
TARGET_COMP_ID: Final = 56
MSG_SEQ_NUM: Final = 34
SENDING_TIME: Final = 52
POSS_DUP_FLAG: Final = 43
POSS_RESEND: Final = 97
ORIG_SENDING_TIME: Final = 122
TEXT: Final = 58

BEGIN_SEQ_NO: Final = 7
END_SEQ_NO: Final = 16
NEW_SEQ_NO: Final = 36
GAP_FILL_FLAG: Final = 123
TEST_REQ_ID: Final = 112
REF_SEQ_NUM: Final = 45
REF_TAG_ID: Final = 371
REF_MSG_TYPE: Final = 372
SESSION_REJECT_REASON: Final = 373
BUSINESS_REJECT_REASON: Final = 380

ENCRYPT_METHOD: Final = 98
HEART_BT_INT: Final = 108
RESET_SEQ_NUM_FLAG: Final = 141
RAW_DATA_LENGTH: Final = 95
RAW_DATA: Final = 96
DEFAULT_APPL_VER_ID: Final = 1137

CANCEL_ORDERS_ON_DISCONNECT: Final = 8013
LISTENER_SESSION: Final = 20126
RECEIVE_SETTLEMENT_REPORTS: Final = 20127
MESSAGE_RETENTION_PERIOD: Final = 20200
USE_DOLLARS: Final = 21005
ENABLE_IOC_CANCEL_REPORT: Final = 21007
PRESERVE_ORIGINAL_ORDER_QTY: Final = 21008
SKIP_PENDING_EXEC_REPORTS: Final = 21011
USE_EXPIRED_ORD_STATUS: Final = 21012
ALWAYS_EMIT_NEW_BEFORE_TRADE: Final = 21026
SPLIT_COLLATERAL_RETURN: Final = 21027


class MsgType:
    """MsgType(35) values of the session layer, as bytes (the codec's value type)."""

    HEARTBEAT: Final = b"0"
    TEST_REQUEST: Final = b"1"
    RESEND_REQUEST: Final = b"2"
    REJECT: Final = b"3"
    SEQUENCE_RESET: Final = b"4"
    LOGOUT: Final = b"5"
    LOGON: Final = b"A"
    BUSINESS_MESSAGE_REJECT: Final = b"j"


ADMIN_MSG_TYPES: Final = frozenset(
    {b"0", b"1", b"2", b"3", b"4", b"5", b"A"}
)


class SessionRejectReason:
    """SessionRejectReason(373) values (REFERENCE §3.4)."""

    INVALID_TAG_NUMBER: Final = 0
    REQUIRED_TAG_MISSING: Final = 1
    TAG_NOT_DEFINED_FOR_MSG_TYPE: Final = 2
    UNDEFINED_TAG: Final = 3
    TAG_WITHOUT_VALUE: Final = 4
    VALUE_INCORRECT: Final = 5
    INCORRECT_DATA_FORMAT: Final = 6
    DECRYPTION_PROBLEM: Final = 7
    SIGNATURE_PROBLEM: Final = 8
    COMPID_PROBLEM: Final = 9
    SENDING_TIME_ACCURACY: Final = 10
    INVALID_MSG_TYPE: Final = 11
    TAG_REPEATED: Final = 13
    TAG_OUT_OF_ORDER: Final = 14
    OTHER: Final = 99
