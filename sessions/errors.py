"""One exception hierarchy for the whole session layer.

Every error a user can meet derives from :class:`KalshiFixError`, so ``except KalshiFixError``
is the broad catch; the subclasses say precisely what went wrong and their messages say what to
do about it. Secrets never appear in a message: errors name the key id, never key material.
"""

from __future__ import annotations


class KalshiFixError(Exception):
    """Base class of every error raised by kalshi-fix-supervisor."""


class ConfigError(KalshiFixError):
    """A configuration file, table, key or value is wrong; nothing was started."""


class LogonOptionsError(ConfigError):
    """A combination of Logon options breaks a Kalshi rule (the message names the rule)."""


class KeyLoadError(KalshiFixError):
    """A private or public key could not be loaded (the message names the file and key id)."""


class CodecError(KalshiFixError):
    """Bytes that are not a valid FIX message (raised by the strict decode helpers only;
    the stream decoder reports garbled input as data and never raises on network bytes)."""


class MessageTooLarge(CodecError):
    """A message exceeded the configured maximum size."""


class SessionError(KalshiFixError):
    """The session layer could not carry out a request in the current state."""


class LocalProtocolError(SessionError):
    """The application asked the session to do something the FIX session rules forbid
    (for example send an application message before Logon)."""


class StoreError(KalshiFixError):
    """The durable sequence/message store failed or is corrupt."""


class TransportError(KalshiFixError):
    """The TCP/TLS connection failed, was closed, or timed out."""


class TlsError(TransportError):
    """The TLS handshake failed (certificate, trust, protocol version)."""


class CertificatePinMismatch(TlsError):
    """The server certificate's SHA-256 does not match the configured pin; no Logon was sent."""


class LogonRejected(SessionError):
    """The counterparty refused our Logon. ``text`` is the Logout/Reject text as received."""

    def __init__(self, message: str, *, text: str | None = None, reason: str = "other") -> None:
        super().__init__(message)
        self.text = text
        #: One of the classes of :func:`sessions.events.classify_logout_text`.
        self.reason = reason


class SessionClosed(SessionError):
    """The session ended (Logout or transport loss) while an operation was in flight."""
