"""How a session attempt ended → what the supervisor does next.

The supervisor hands :func:`classify_outcome` either the :class:`~sessions.events.SessionEnded`
event of a finished session or the exception a session attempt raised, and gets a
:class:`RestartDecision`:

* ``stop`` — retrying cannot help and would only spend Logon attempts, which Kalshi rate limits
  (REFERENCE §2.3): a signature that does not verify, a CompID problem, a refused ResetSeqNumFlag,
  a clock more than 30 s off, a certificate pin mismatch, an unloadable key, a bad configuration,
  a broken store or a bug on our side (a local protocol error).
* ``retry`` — after the backoff delay, and never sooner than ``min_delay``: transport failures,
  heartbeat timeouts, sequence problems (with a reset on the next Logon), ``already exists``,
  and anything unrecognised.
* ``wait_for_window`` — the exchange refused us for maintenance: reconnect when the window ends
  (the supervisor's maintenance calendar knows when). Not an error, so it is not counted.

Only the text classes of :class:`~sessions.events.LogoutReason` are used, never a raw text match,
so what Kalshi's undocumented texts look like is decided in one place (``sessions/events.py``).
This module does not read the clock: whether a plain disconnect happened inside the maintenance
window is for the supervisor to check against its calendar.
"""

from __future__ import annotations

from typing import Literal

import attrs
import trio

from sessions.config import SessionConfig
from sessions.errors import (
    CertificatePinMismatch,
    ConfigError,
    KalshiFixError,
    KeyLoadError,
    LocalProtocolError,
    LogonRejected,
    SessionClosed,
    StoreError,
    TlsError,
    TransportError,
)
from sessions.events import LogoutReason, SessionEnded, classify_logout_text
from sessions.profiles import PROFILES

from .errors import KeyInUse, KeyLockedByOtherProcess

Action = Literal["retry", "stop", "wait_for_window"]

#: Kalshi's guidance: a half-dead connection frees its key within about a minute (§1.4) — for
#: the usual HeartBtInt of 30 s or less. Not a cap: see :func:`key_busy_delay`.
KALSHI_KEY_FREE_GUIDANCE = 60.0


@attrs.frozen
class RestartDecision:
    """What to do after a session attempt ended.

    ``min_delay`` is a floor in seconds that the backoff delay must not undercut (the caller
    waits ``max(min_delay, backoff)``). ``counts_toward_intensity`` says whether the restart is
    an unplanned one for :class:`~supervisor.intensity.RestartIntensity`. ``reset_next_logon``
    asks for ResetSeqNumFlag(141)=Y on the next Logon. ``normal`` marks an end we asked for
    ourselves (a clean local Logout): a *transient* child is not restarted after it.
    ``cause`` is a short machine-readable label, ``explanation`` the sentence for the operator.
    """

    action: Action
    cause: str
    explanation: str
    min_delay: float = 0.0
    counts_toward_intensity: bool = True
    reset_next_logon: bool = False
    normal: bool = False

    @property
    def retryable(self) -> bool:
        """Whether the child will be started again (now or after the window)."""
        return self.action != "stop"


def key_busy_delay(heartbeat_interval: float) -> float:
    """The wait before a re-Logon when the key may still be held by an old connection.

    Kalshi frees the key when its heartbeat timeout for the old connection fires; two heartbeat
    intervals cover that timeout (§1.4: back off >= 2 x HeartBtInt).
    """
    # Rule: max(2 x HeartBtInt, the former min(60 s, 2 x HeartBtInt)) = 2 x HeartBtInt. The
    # ~60 s Kalshi quotes (KALSHI_KEY_FREE_GUIDANCE) is the worst case for HeartBtInt <= 30 s;
    # the gateway's timeout grows with HeartBtInt, so capping the wait at 60 s with a longer
    # interval (45 s -> 60 s < 90 s) re-logged on while the old connection still held the key
    # and earned another "already exists" (and spent a rate-limited Logon) every time.
    two_heartbeats = 2.0 * heartbeat_interval
    return max(two_heartbeats, min(KALSHI_KEY_FREE_GUIDANCE, two_heartbeats))


def _who(session: SessionConfig | None) -> str:
    if session is None:
        return "the configured API key"
    return f"API key {session.key_id}"


def _endpoint(session: SessionConfig | None) -> str:
    if session is None:
        return "the endpoint"
    return f"{session.profile.name} (port {session.port})"


def _port_table() -> str:
    return ", ".join(f"{p.name} on {p.port}" for p in PROFILES.values())


def _stop(cause: str, explanation: str) -> RestartDecision:
    # A stop is not a restart, so it never counts towards the intensity.
    return RestartDecision("stop", cause, explanation, counts_toward_intensity=False)


def _retry(cause: str, explanation: str, *, min_delay: float = 0.0,
           reset_next_logon: bool = False) -> RestartDecision:
    return RestartDecision(
        "retry", cause, explanation, min_delay=min_delay, reset_next_logon=reset_next_logon
    )


def _from_reason(
    reason: LogoutReason,
    text: str | None,
    heartbeat_interval: float,
    session: SessionConfig | None,
    *,
    during_logon: bool,
) -> RestartDecision:
    """The decision for a Logout/Reject whose text was classified as ``reason``."""
    said = f" (Text(58): {text!r})" if text else ""
    who = _who(session)
    if reason is LogoutReason.ALREADY_EXISTS:
        wait = key_busy_delay(heartbeat_interval)
        return _retry(
            reason.value,
            f"Kalshi refused the Logon because another connection holds {who}{said}: either "
            "an earlier connection that has not timed out yet (the key frees itself after the "
            "gateway's heartbeat timeout) or another program or host using the same key. "
            f"Retrying after at least {wait:g} s; if it keeps happening, find the other user of "
            "the key — each session needs its own API key",
            min_delay=wait,
        )
    if reason is LogoutReason.SIGNATURE:
        return _stop(
            reason.value,
            f"Kalshi could not verify the Logon signature{said}: the private key does not "
            f"belong to {who} (SenderCompID must be the id of the key whose private half signs "
            "RawData), or the clock is off (SendingTime(52) goes into the signed text and must "
            "be within 30 s of Kalshi's clock). Check private_key against the key id and keep "
            "the host's clock NTP-synchronised",
        )
    if reason is LogoutReason.COMP_ID:
        return _stop(
            reason.value,
            f"Kalshi rejected the CompIDs{said}: SenderCompID(49) must be the API key id "
            f"({who} was sent) and TargetCompID(56) must match the port you connect to "
            f"({_endpoint(session)} was used; {_port_table()}). Check key_id, endpoint and port",
        )
    if reason is LogoutReason.RESET_REQUIRED:
        return _stop(
            reason.value,
            f"Kalshi refused the Logon's sequence reset setting{said}: endpoints without "
            "retransmission (KalshiNR, KalshiDC, KalshiRFQ, KalshiMD) need "
            "ResetSeqNumFlag(141)=Y on every Logon. Check reset_seq_num_on_logon for "
            f"{_endpoint(session)}",
        )
    if reason is LogoutReason.SENDING_TIME and not during_logon:
        # After a Logon Kalshi accepted, our clock agreed with Kalshi's to 30 s (SendingTime is
        # in the signed Logon text). A later complaint means our messages sat in a stalled
        # connection, not that the clock drifted 30 s within a session: retry.
        return _retry(
            reason.value,
            f"Kalshi logged the session out for SendingTime(52){said} after accepting its "
            "Logon: our messages reached it late (a stalled connection). Logging on again; "
            "if this repeats, check the network path and the host's NTP synchronisation",
            min_delay=key_busy_delay(heartbeat_interval),
        )
    if reason is LogoutReason.SENDING_TIME:
        # Not retried: a clock 30 s off at Logon does not fix itself between attempts, and
        # every attempt spends a rate-limited Logon.
        return _stop(
            reason.value,
            f"Kalshi rejected SendingTime(52){said}: this host's clock is more than 30 s off. "
            "Synchronise it with NTP and start the session again",
        )
    if reason is LogoutReason.MAINTENANCE:
        return RestartDecision(
            "wait_for_window",
            reason.value,
            f"the exchange is in its maintenance window{said}; reconnecting when the window "
            "ends (Thursday 03:00–05:00 America/New_York unless configured otherwise)",
            counts_toward_intensity=False,
        )
    if reason is LogoutReason.SEQUENCE:
        return _retry(
            reason.value,
            f"Kalshi objected to our sequence numbers{said}; logging on again with "
            "ResetSeqNumFlag(141)=Y, and messages missed in between are recovered through "
            "drop copy",
            reset_next_logon=True,
        )
    if reason is LogoutReason.HEARTBEAT:
        return _retry(
            reason.value,
            f"the connection stopped answering heartbeats{said}; the old connection may still "
            f"hold {who} at Kalshi, so retrying after at least "
            f"{key_busy_delay(heartbeat_interval):g} s",
            min_delay=key_busy_delay(heartbeat_interval),
        )
    stage = "refused the Logon" if during_logon else "logged the session out"
    return _retry(
        reason.value,
        f"Kalshi {stage}{said or ' without giving a reason'}; retrying with backoff",
    )


def _from_session_ended(
    ended: SessionEnded, heartbeat_interval: float, session: SessionConfig | None
) -> RestartDecision:
    reason = ended.reason
    if reason is LogoutReason.OTHER and ended.text:
        reason = classify_logout_text(ended.text)
    key_busy = key_busy_delay(heartbeat_interval)
    if ended.initiated_by == "local":
        # We asked for the end (shutdown, planned stop): a normal exit. If our Logout went
        # unanswered, Kalshi may still count the connection as live for a while.
        unclean = ended.was_logged_on and not ended.clean
        return RestartDecision(
            "retry",
            "local_logout",
            "the session logged out at our request"
            + (" (the Logout was not answered)" if unclean else ""),
            min_delay=key_busy if unclean else 0.0,
            normal=True,
        )
    if ended.initiated_by == "transport":
        if ended.was_logged_on:
            return _retry(
                "transport",
                "the connection was lost without a Logout; Kalshi may keep "
                f"{_who(session)} busy until its heartbeat timeout, so retrying after at "
                f"least {key_busy:g} s",
                min_delay=key_busy,
            )
        return _retry(
            "transport",
            "the connection was lost before the Logon completed; retrying with backoff",
        )
    if ended.initiated_by == "error":
        return _from_local_verdict(reason, ended, heartbeat_interval, session)
    return _from_reason(
        reason, ended.text, heartbeat_interval, session, during_logon=not ended.was_logged_on
    )


def _from_local_verdict(
    reason: LogoutReason,
    ended: SessionEnded,
    heartbeat_interval: float,
    session: SessionConfig | None,
) -> RestartDecision:
    """Our session core ended the session because of what the *peer* sent (or did not send).

    The reason then describes the peer's messages, not a Kalshi refusal of ours, so it is read
    differently from a Logout text: wrong CompIDs from the peer mean we reached another endpoint
    than configured, a SendingTime problem means our clock is off.
    """
    key_busy = key_busy_delay(heartbeat_interval) if ended.was_logged_on else 0.0
    if reason is LogoutReason.HEARTBEAT:
        return _from_reason(reason, None, heartbeat_interval, session, during_logon=False)
    if reason is LogoutReason.COMP_ID:
        return _stop(
            "comp_id",
            "the peer's messages carry CompIDs other than expected: the port reached is not "
            f"the configured endpoint {_endpoint(session)} ({_port_table()}). Check endpoint, "
            "host and port",
        )
    if reason is LogoutReason.SENDING_TIME and ended.was_logged_on:
        # The peer's Logon answer was within the tolerance, so the clocks agreed then; a
        # message that arrives too old later sat in a stalled connection (or the simulated
        # gateway held it). Reconnecting is the cure, not stopping the session for good.
        return _retry(
            "sending_time",
            "a message from the peer arrived with a SendingTime(52) beyond the tolerance after "
            "a Logon whose clocks agreed: it was delayed in transit (a stalled connection). "
            "Logging on again; if this repeats, check the network path and NTP",
            min_delay=key_busy,
        )
    if reason is LogoutReason.SENDING_TIME:
        return _stop(
            "sending_time",
            "the peer's SendingTime(52) differs from this host's clock by more than the "
            "tolerance: this host's clock is probably off. Synchronise it with NTP",
        )
    return _retry(
        "sequence" if reason is LogoutReason.SEQUENCE else "protocol",
        "the session was ended because the peer broke a session rule"
        + (" (sequence numbers)" if reason is LogoutReason.SEQUENCE else "")
        + ("; logging on again with ResetSeqNumFlag(141)=Y" if ended.was_logged_on
           else "; retrying with backoff"),
        min_delay=key_busy,
        reset_next_logon=ended.was_logged_on or reason is LogoutReason.SEQUENCE,
    )


def _reason_of(value: str) -> LogoutReason:
    try:
        return LogoutReason(value)
    except ValueError:
        return LogoutReason.OTHER


def _from_exception(
    exc: BaseException, heartbeat_interval: float, session: SessionConfig | None
) -> RestartDecision:
    if not isinstance(exc, Exception):
        # Cancellation, KeyboardInterrupt, SystemExit: not a session outcome; let them propagate.
        raise TypeError(
            f"{type(exc).__name__} is not a session outcome and must not be classified"
        ) from exc
    if isinstance(exc, ExceptionGroup):
        return _most_severe(
            [_from_exception(e, heartbeat_interval, session) for e in exc.exceptions]
        )
    if isinstance(exc, LogonRejected):
        reason = _reason_of(exc.reason)
        if reason is LogoutReason.OTHER and exc.text:
            reason = classify_logout_text(exc.text)
        return _from_reason(reason, exc.text, heartbeat_interval, session, during_logon=True)
    # Our own errors carry messages written for the operator and free of secrets.
    if isinstance(exc, CertificatePinMismatch):
        return _stop(
            "pin_mismatch",
            f"{exc}. The server presented a different certificate than pin_sha256 names: "
            "either Kalshi rotated its certificate (fetch the new one with openssl s_client "
            "-showcerts -connect host:port and update the pin) or something is intercepting "
            "the connection. No Logon was sent",
        )
    if isinstance(exc, TlsError):
        return _retry(
            "tls",
            f"the TLS handshake failed: {exc}. Retrying with backoff; if it persists, check "
            "ca_file and that the port speaks TLS (Kalshi requires TLS 1.2 or newer)",
        )
    if isinstance(exc, TransportError):
        return _retry("transport", f"the connection failed: {exc}; retrying with backoff")
    if isinstance(exc, KeyLoadError):
        return _stop(
            "key_load",
            f"the private key could not be loaded: {exc}. Fix private_key / "
            "private_key_passphrase_env",
        )
    if isinstance(exc, ConfigError):
        return _stop("config", f"the configuration is invalid: {exc}")
    if isinstance(exc, KeyLockedByOtherProcess):
        return _stop("key_locked", str(exc))
    if isinstance(exc, KeyInUse):
        # In-process registry refusals only happen with wait=False; the holder will finish.
        return _retry("key_in_use", f"{exc}; retrying with backoff")
    if isinstance(exc, StoreError):
        return _stop(
            "store",
            f"the sequence store failed: {exc}. Trading on without durable sequence numbers "
            "would risk duplicates or gaps; repair or move the store_dir and start again",
        )
    if isinstance(exc, LocalProtocolError):
        return _stop(
            "local_protocol",
            f"the program broke a FIX session rule: {exc}. This is a bug; restarting would "
            "repeat it",
        )
    if isinstance(exc, SessionClosed):
        return _retry("session_closed", f"{exc}; retrying with backoff")
    if isinstance(exc, KalshiFixError):
        return _retry(type(exc).__name__, f"{type(exc).__name__}: {exc}; retrying with backoff")
    if isinstance(exc, (OSError, trio.BrokenResourceError)):
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return _retry("transport", f"the connection failed: {detail}; retrying with backoff")
    # A foreign exception's text could contain anything, so only its type is shown here; the
    # supervisor logs the traceback. Restarting a crashed child is the OTP way, and the
    # restart intensity stops it if the crash repeats.
    return _retry(
        "unexpected",
        f"the session crashed with an unexpected {type(exc).__name__}; restarting it "
        "(see the traceback in the log)",
    )


_SEVERITY = {"stop": 2, "wait_for_window": 1, "retry": 0}


def _most_severe(decisions: list[RestartDecision]) -> RestartDecision:
    # Several failures at once (a nursery's exception group): the worst one decides, and among
    # equals the one that asks for the longest wait, so no floor is lost.
    return max(decisions, key=lambda d: (_SEVERITY[d.action], d.min_delay, d.reset_next_logon))


def classify_outcome(
    outcome: SessionEnded | Exception,
    heartbeat_interval: float,
    *,
    session: SessionConfig | None = None,
    kept_sequence: bool = False,
) -> RestartDecision:
    """Decide what to do after a session attempt ended with ``outcome``.

    ``outcome`` is the :class:`~sessions.events.SessionEnded` event or the exception the attempt
    raised (an exception group is judged by its most severe member). ``heartbeat_interval`` is
    the HeartBtInt the session used, in seconds. ``session``, when given, lets the explanation
    name the key id, endpoint and port. ``kept_sequence`` says the attempt's Logon tried to keep
    sequence continuity (ResetSeqNumFlag(141)=N, KalshiRT): a refusal of that is answered with
    one reset Logon instead of a stop (see :func:`_continuity_fallback`).
    """
    if isinstance(outcome, SessionEnded):
        decision = _from_session_ended(outcome, heartbeat_interval, session)
    elif isinstance(outcome, Exception):
        decision = _from_exception(outcome, heartbeat_interval, session)
    else:
        raise TypeError(
            f"outcome must be a SessionEnded event or an exception, got {type(outcome).__name__}"
        )
    return _continuity_fallback(decision) if kept_sequence else decision


def _continuity_fallback(decision: RestartDecision) -> RestartDecision:
    """An attempt that kept its sequence numbers and was refused for them falls back to a reset.

    Kalshi may refuse continuity outright (the older reading of REFERENCE §1.6: every Logon
    after the window needs ResetSeqNumFlag=Y) or accept the Logon and log out at once ("MsgSeqNum
    too low"). Either way the next Logon resets, so this cannot repeat in a row; messages missed
    meanwhile are recovered through the drop copy, which the observers start on the
    session_down / reset session_up pair. A planned fallback: not counted toward the intensity.
    """
    if decision.cause == LogoutReason.RESET_REQUIRED.value:
        return RestartDecision(
            "retry",
            decision.cause,
            "Kalshi wants ResetSeqNumFlag(141)=Y on this Logon (sequence continuity was "
            "attempted); logging on again with a sequence reset, and messages missed in "
            "between are recovered through drop copy",
            counts_toward_intensity=False,
            reset_next_logon=True,
        )
    if decision.cause == LogoutReason.SEQUENCE.value:
        return attrs.evolve(decision, counts_toward_intensity=False, reset_next_logon=True)
    return decision

