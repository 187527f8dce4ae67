"""Logon validation as the Kalshi gateway does it (REFERENCE §2.1–§2.3, §1.4, §1.6, §1.8).

The session core has already checked what FIX itself requires before it hands the Logon over as
:class:`~sessions.events.LogonRequested`: SenderCompID/TargetCompID present, TargetCompID equal
to the endpoint's name, HeartBtInt ≥ 4, DefaultApplVerID present and SendingTime within 30 s
(Reject 373=10). :func:`check_logon` adds Kalshi's own rules, in this order, stopping at the
first failure:

1. SenderCompID is a registered API key (else Reject 373=9 + Logout, CompID problem);
2. RawData(96) verifies against that key's public key over the pre-hash of the received
   52/35/34/49/56 values (RawDataLength(95) optional, but must match when present);
3. the key may use this endpoint (subaccount-restricted keys, §1.8);
4. EncryptMethod(98)=0 and DefaultApplVerID(1137)=9;
5. no tag outside the Logon's dictionary, option values well-formed (Y/N, whole hours);
6. ResetSeqNumFlag(141)=Y where mandatory (and, under the old "reset after maintenance"
   policy, on the first Logon after a window);
7. the option combination (:meth:`~sessions.logon.LogonOptions.validate`);
8. the maintenance window (logons are refused while it lasts);
9. the key already has a live connection: exactly ``already exists`` (§1.4).

The exact texts are undocumented except ``already exists`` (§11 #7); ours are descriptive and
chosen so that :func:`sessions.events.classify_logout_text` files each under the right reason.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import tags as T
from ..errors import LocalProtocolError, LogonOptionsError
from ..logon import OPTIONS, LogonOptions
from ..maintenance import Window
from ..message import FixMessage
from ..settings import LogonRefusal
from ..signature import logon_pre_hash, verify_logon_signature
from ..tags import SessionRejectReason
from .endpoints import EndpointSpec

__all__ = ["ALREADY_EXISTS", "ApiKey", "LogonDecision", "check_logon", "logon_options"]

#: The one documented Logout text (REFERENCE §1.4).
ALREADY_EXISTS = "already exists"

# Tags a Logon may carry: the standard header and trailer, the Logon body of dictionary v1.03
# (including the standard optional tags Kalshi does not document, §2.1) and Kalshi's options.
# 21003 is the pre-1.0.17 SkipPendingExecReports, still accepted (Appendix C); 21006 appears on
# the Logon in the dictionary only and is ignored there (§2.1).
_HEADER_TRAILER = frozenset(
    {8, 9, 35, 49, 56, 34, 52, 43, 97, 122, 50, 57, 115, 116, 128, 129, 142, 143, 144, 145,
     369, 1128, 1129, 10, 89, 93}
)
_LOGON_BODY = frozenset(
    {98, 95, 96, 108, 141, 1137, 789, 383, 464, 553, 554, 1407, 1408, 21003, 21006}
    | {o.tag for o in OPTIONS}
)
_ALLOWED_TAGS = _HEADER_TRAILER | _LOGON_BODY
_OPTION_BY_TAG = {o.tag: o for o in OPTIONS}
_LEGACY_SKIP_PENDING = 21003


@attrs.frozen
class ApiKey:
    """An API key registered with the simulated exchange.

    ``endpoints`` limits the endpoints the key may log on to (``None`` = all). ``subaccount`` marks
    a subaccount-restricted key (§1.8): no listener, drop-copy or KalshiRT sessions.
    ``drop_copy`` says whether replays (U1) are enabled for the key (else U3 reason 5, §6).
    """

    key_id: str
    account_id: str
    public_key: rsa.RSAPublicKey = attrs.field(eq=False, repr=False)
    drop_copy: bool = True
    endpoints: frozenset[str] | None = None
    subaccount: int | None = None


@attrs.frozen
class LogonDecision:
    """The outcome of :func:`check_logon`. ``text`` is ``None`` when the Logon is accepted."""

    key: ApiKey | None
    options: LogonOptions | None
    text: str | None = None
    session_reject_reason: int | None = None
    ref_tag: int | None = None

    @property
    def accepted(self) -> bool:
        return self.text is None

    def refusal(self) -> LogonRefusal | None:
        """The session core's form of a refusal (``None`` when the Logon is accepted)."""
        if self.text is None:
            return None
        return LogonRefusal(self.text, self.session_reject_reason, self.ref_tag)


def _refuse(
    text: str, key: ApiKey | None = None, reason: int | None = None, ref_tag: int | None = None
) -> LogonDecision:
    return LogonDecision(key, None, text, reason, ref_tag)


def logon_options(logon: FixMessage) -> LogonOptions | tuple[str, int]:
    """The Kalshi options of a received Logon, or ``(problem, tag)`` for a malformed value."""
    values: dict[str, Any] = {}
    for tag, option in _OPTION_BY_TAG.items():
        raw = logon.get(tag)
        if raw is None:
            continue
        if tag == T.MESSAGE_RETENTION_PERIOD:
            if not raw.isdigit() or len(raw) > 6:
                return (f"{option.fix_name}({tag}) must be a whole number of hours", tag)
            values[option.field] = int(raw)
        elif raw in (b"Y", b"N"):
            values[option.field] = raw == b"Y"
        else:
            return (f"{option.fix_name}({tag}) must be Y or N", tag)
    legacy = logon.get(_LEGACY_SKIP_PENDING)
    if legacy is not None:
        if legacy not in (b"Y", b"N"):
            return (f"SkipPendingExecReports({_LEGACY_SKIP_PENDING}) must be Y or N",
                    _LEGACY_SKIP_PENDING)
        values.setdefault("skip_pending_exec_reports", legacy == b"Y")
    try:
        return LogonOptions(**values)
    except LogonOptionsError as exc:  # pragma: no cover - values are typed above
        return (str(exc), 0)


def check_logon(
    logon: FixMessage,
    spec: EndpointSpec,
    keys: Mapping[str, ApiKey],
    *,
    maintenance: Window | None = None,
    busy: Callable[[str], bool] | None = None,
    reset_required: bool = False,
) -> LogonDecision:
    """Decide a Logon the session core handed over (see the module docstring for the order).

    ``maintenance`` is the window in force now, if any; ``busy(key_id)`` says whether the key has
    a live connection; ``reset_required`` demands 141=Y even where it is optional.
    """
    sender = logon.get(T.SENDER_COMP_ID) or b""
    key_id = sender.decode("latin-1")
    key = keys.get(key_id)
    if key is None:
        return _refuse(
            # Key ids stay out of texts: a UUID may hold digits a client's text classifier
            # reads as something else (e.g. "141").
            "CompID problem: SenderCompID(49) is not a registered API key",
            None, SessionRejectReason.COMPID_PROBLEM, T.SENDER_COMP_ID,
        )

    problem = _signature_problem(logon, key)
    if problem is not None:
        return _refuse(problem, key)

    if key.endpoints is not None and spec.name not in key.endpoints:
        return _refuse(f"CompID problem: this API key is not enabled for {spec.name}", key)
    if key.subaccount is not None and spec.name in ("KalshiRT", "KalshiDC"):
        return _refuse(
            f"CompID problem: a subaccount-restricted API key may not use {spec.name}", key
        )

    encrypt = logon.get(T.ENCRYPT_METHOD)
    if encrypt is None:
        return _refuse("Required tag missing: EncryptMethod(98)", key,
                       SessionRejectReason.REQUIRED_TAG_MISSING, T.ENCRYPT_METHOD)
    if encrypt != b"0":
        return _refuse("EncryptMethod(98) must be 0 (none)", key,
                       SessionRejectReason.VALUE_INCORRECT, T.ENCRYPT_METHOD)
    if logon.get(T.DEFAULT_APPL_VER_ID) != b"9":
        return _refuse("DefaultApplVerID(1137) must be 9 (FIX.5.0SP2)", key,
                       SessionRejectReason.VALUE_INCORRECT, T.DEFAULT_APPL_VER_ID)

    for tag, _value in logon.pairs:
        if tag not in _ALLOWED_TAGS:
            return _refuse("Undefined tag received", key, SessionRejectReason.UNDEFINED_TAG, tag)
    reset_flag = logon.get(T.RESET_SEQ_NUM_FLAG)
    if reset_flag not in (None, b"Y", b"N"):
        return _refuse("ResetSeqNumFlag(141) must be Y or N", key,
                       SessionRejectReason.VALUE_INCORRECT, T.RESET_SEQ_NUM_FLAG)
    parsed = logon_options(logon)
    if isinstance(parsed, tuple):
        text, tag = parsed
        return _refuse(text, key, SessionRejectReason.VALUE_INCORRECT, tag or None)

    if reset_flag != b"Y":
        if spec.reset_mandatory:
            return _refuse(f"ResetSeqNumFlag(141)=Y is required on every Logon to {spec.name}", key)
        if reset_required:
            return _refuse(
                "ResetSeqNumFlag(141)=Y is required on the first Logon after maintenance", key
            )

    try:
        parsed.validate(spec.profile)
    except LogonOptionsError as exc:
        return _refuse(f"Invalid Logon options: {exc}", key)
    if parsed.listener_session and key.subaccount is not None:
        return _refuse(
            "CompID problem: a subaccount-restricted API key may not open a listener session", key
        )

    if maintenance is not None:
        until = _dt.datetime.fromtimestamp(maintenance.end, _dt.timezone.utc)
        return _refuse(
            "Exchange closed for scheduled maintenance until "
            f"{until:%Y-%m-%d %H:%M} UTC; log on again after the window", key
        )
    if busy is not None and busy(key_id):
        return _refuse(ALREADY_EXISTS, key)
    return LogonDecision(key, parsed)


def _signature_problem(logon: FixMessage, key: ApiKey) -> str | None:
    raw = logon.get(T.RAW_DATA)
    if raw is None:
        return "Invalid signature: RawData(96) missing"
    length = logon.get(T.RAW_DATA_LENGTH)
    if length is not None and (not length.isdigit() or int(length) != len(raw)):
        return "Invalid signature: RawDataLength(95) does not match the length of RawData(96)"
    try:
        pre_hash = logon_pre_hash(
            logon.get(T.SENDING_TIME) or b"",
            logon.get(T.MSG_TYPE) or b"",
            logon.get(T.MSG_SEQ_NUM) or b"",
            logon.get(T.SENDER_COMP_ID) or b"",
            logon.get(T.TARGET_COMP_ID) or b"",
        )
    except LocalProtocolError:
        return "Invalid signature: a signed header field is empty"
    if not verify_logon_signature(key.public_key, pre_hash, raw):
        return (
            "Invalid signature: RawData(96) does not verify with the API key's public key over "
            "52|35|34|49|56 (RSA-PSS SHA-256)"
        )
    return None
