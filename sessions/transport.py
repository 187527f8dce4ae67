"""Opening the byte stream a FIX session runs over: TCP, optionally TLS, optionally pinned.

Kalshi's gateways speak TLS 1.2+ only (REFERENCE §1.5); a plain TCP connection to them fails in the
handshake, and engines without TLS put a local stunnel in front. Both setups end up here:
``tls=True`` talks TLS to the gateway (or to a TLS terminator), ``tls=False`` talks plain TCP to a
local stunnel. Every failure becomes a :class:`~sessions.errors.TransportError` (or its
:class:`~sessions.errors.TlsError` / :class:`~sessions.errors.CertificatePinMismatch` subclasses)
whose message names ``host:port`` and the most likely cause.

The certificate pin is the SHA-256 of the server certificate in DER form (what
``openssl s_client -connect HOST:PORT | openssl x509 -outform DER | sha256sum`` prints). It is
checked after the handshake and before the stream is handed out, so a mismatching server never
sees a Logon.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import ssl
from typing import Union

import trio

from .errors import CertificatePinMismatch, ConfigError, TlsError, TransportError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "certificate_fingerprint",
    "connect_tcp",
    "looks_like_tls",
    "make_ssl_context",
    "normalize_fingerprint",
    "open_transport",
    "start_tls",
]

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")

# Give the TLS close_notify this long before the socket is simply closed.
_CLOSE_GRACE = 1.0

# OpenSSL verify codes (X509_V_ERR_*) that mean "the chain does not lead to a CA we trust".
_UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21})
_EXPIRED_CODES = frozenset({9, 10})
_HOSTNAME_MISMATCH = 62


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (upper case and ``:`` accepted).

    Raises :class:`ConfigError` for anything else.
    """
    digits = value.strip().replace(":", "").lower()
    if not _HEX64.match(digits):
        raise ConfigError(
            "certificate pin must be the SHA-256 of the server certificate (DER) as 64 hex "
            f"digits, colons allowed (got {len(digits)} characters)"
        )
    return digits


def make_ssl_context(ca_file: PathLike | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2 or newer, certificate and host name verified.

    Trusts ``ca_file`` (PEM) when given, otherwise the system trust store. Raises
    :class:`ConfigError` when ``ca_file`` cannot be read or holds no certificate.
    """
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca_file is None else os.fspath(ca_file)
        )
    except FileNotFoundError:
        raise ConfigError(f"ca_file {os.fspath(ca_file)!s} does not exist") from None  # type: ignore[arg-type]
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"ca_file {os.fspath(ca_file)!s} cannot be loaded as PEM certificates: "  # type: ignore[arg-type]
            f"{_ssl_reason(exc)}"
        ) from None
    # Kalshi requires TLS 1.2+ (REFERENCE §1.5); never negotiate anything older.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def certificate_fingerprint(stream: trio.SSLStream[trio.abc.Stream]) -> str:
    """SHA-256 (lowercase hex) of the peer certificate in DER, after the handshake."""
    der = stream.getpeercert(binary_form=True)
    if not der:
        raise TlsError("the server presented no certificate")
    return hashlib.sha256(der).hexdigest()


def looks_like_tls(data: bytes) -> bool:
    """Whether ``data`` starts like a TLS record (handshake or alert, version 3.x).

    A FIX engine that gets this back from a port it talks plain TCP to is talking to a TLS
    endpoint: it needs ``tls = true`` or a stunnel in front.
    """
    return len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 0x03 and data[2] <= 0x04


async def connect_tcp(host: str, port: int, *, connect_timeout: float = 10.0) -> trio.SocketStream:
    """Open a TCP connection; failures raise :class:`TransportError` naming ``host:port``."""
    where = f"{host}:{port}"
    with trio.move_on_after(connect_timeout) as scope:
        try:
            return await trio.open_tcp_stream(host, port)
        except socket.gaierror as exc:
            raise TransportError(
                f"cannot resolve {host!r} ({exc.strerror or exc}): check the host name in the "
                "config and this machine's DNS"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {where}: {_connect_cause(exc)}") from None
    assert scope.cancelled_caught
    raise TransportError(
        f"no TCP connection to {where} within {connect_timeout:g} s: the host is unreachable "
        "from here (firewall, wrong host, or private connectivity not set up)"
    )


async def start_tls(
    stream: trio.abc.Stream,
    host: str,
    port: int,
    *,
    ca_file: PathLike | None = None,
    pin_sha256: str | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> trio.SSLStream[trio.abc.Stream]:
    """Run the TLS handshake over ``stream`` and check the pin; returns the TLS stream.

    On any failure ``stream`` is closed and :class:`TlsError` (or
    :class:`CertificatePinMismatch`) is raised.
    """
    where = f"{host}:{port}"
    try:
        pin = None if pin_sha256 is None else normalize_fingerprint(pin_sha256)
        ctx = ssl_context if ssl_context is not None else make_ssl_context(ca_file)
    except ConfigError:
        await trio.aclose_forcefully(stream)
        raise
    name = server_hostname or host
    # Standard TLS closure (close_notify sent and expected), not the HTTPS variant: an EOF
    # without close_notify then surfaces as a broken stream, which the driver reports as a
    # transport loss — the same outcome the FIX session would have from an EOF anyway.
    tls = trio.SSLStream(stream, ctx, server_hostname=name)
    error: TlsError | None = None
    try:
        with trio.move_on_after(handshake_timeout) as scope:
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                error = _handshake_error(exc.__cause__, where, name, ca_file)
            except (ssl.SSLError, OSError) as exc:
                error = _handshake_error(exc, where, name, ca_file)
    except BaseException:
        await trio.aclose_forcefully(tls)  # cancelled from outside: do not leak the socket
        raise
    if scope.cancelled_caught:
        error = TlsError(
            f"TLS handshake with {where} did not complete within {handshake_timeout:g} s: the "
            "port may speak plain TCP (a local stunnel or a simulator without TLS) — "
            "set tls = false for such a port, or check that the endpoint is the TLS one"
        )
    if error is not None:
        await trio.aclose_forcefully(tls)
        raise error
    if pin is not None:
        actual = certificate_fingerprint(tls)
        if actual != pin:
            await _close_quietly(tls)
            raise CertificatePinMismatch(
                f"certificate of {where} does not match the pin: expected SHA-256 {pin}, "
                f"server presented {actual}; no Logon was sent. If Kalshi rotated its "
                f"certificate, fetch the new one with 'openssl s_client -showcerts -connect "
                f"{where}' and update pin_sha256"
            )
    return tls


async def open_transport(
    host: str,
    port: int,
    *,
    tls: bool,
    ca_file: PathLike | None = None,
    pin_sha256: str | None = None,
    server_hostname: str | None = None,
    connect_timeout: float = 10.0,
) -> trio.abc.Stream:
    """Connect to ``host:port`` (TLS when ``tls``), all within ``connect_timeout`` seconds.

    TLS verifies the chain against ``ca_file`` or the system trust store and the host name
    against ``server_hostname`` (default ``host``); ``pin_sha256`` additionally requires the
    server certificate's DER SHA-256. Raises :class:`TransportError`, :class:`TlsError`,
    :class:`CertificatePinMismatch` or, for a bad ``ca_file``/pin, :class:`ConfigError`.
    """
    if not tls and (ca_file is not None or pin_sha256 is not None):
        raise ConfigError("ca_file and pin_sha256 need tls = true")
    # Checked before dialling, so a config mistake is not reported as a network problem.
    ctx = make_ssl_context(ca_file) if tls else None
    if pin_sha256 is not None:
        normalize_fingerprint(pin_sha256)
    deadline = trio.current_time() + connect_timeout
    stream = await connect_tcp(host, port, connect_timeout=connect_timeout)
    if ctx is None:
        return stream
    return await start_tls(
        stream,
        host,
        port,
        # The context is built already; ca_file still goes along so that a failed handshake
        # names the trust source that was used, not the system store.
        ca_file=ca_file,
        pin_sha256=pin_sha256,
        server_hostname=server_hostname,
        handshake_timeout=max(deadline - trio.current_time(), 0.0),
        ssl_context=ctx,
    )


# --------------------------------------------------------------------------- helpers
async def _close_quietly(stream: trio.abc.AsyncResource) -> None:
    with trio.CancelScope(shield=True):
        with trio.move_on_after(_CLOSE_GRACE) as scope:
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
                pass
        if scope.cancelled_caught:
            await trio.aclose_forcefully(stream)


def _errnos(exc: BaseException) -> list[int]:
    """Errnos of an OSError and of the per-address attempts trio attaches as its cause."""
    found: list[int] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None:
            continue
        if isinstance(e, OSError) and e.errno is not None:
            found.append(e.errno)
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        stack.append(e.__cause__)
    return found


def _connect_cause(exc: OSError) -> str:
    codes = _errnos(exc)
    if errno.ECONNREFUSED in codes:
        return (
            "connection refused: nothing listens on that port (wrong port? Kalshi uses "
            "8228-8233; if you connect through a local stunnel, is it running?)"
        )
    if errno.ETIMEDOUT in codes:
        return "connection timed out (firewall or wrong host?)"
    if any(c in codes for c in (errno.EHOSTUNREACH, errno.ENETUNREACH)):
        return "host or network unreachable from this machine"
    return exc.strerror or str(exc) or type(exc).__name__


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.strerror or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def _handshake_error(
    cause: BaseException | None, where: str, name: str, ca_file: PathLike | None
) -> TlsError:
    if isinstance(cause, ssl.SSLCertVerificationError):
        code = cause.verify_code
        detail = cause.verify_message or _ssl_reason(cause)
        if code == _HOSTNAME_MISMATCH:
            return TlsError(
                f"TLS: the certificate of {where} is not valid for {name!r} ({detail}): "
                "check the host name, or set server_hostname to the name on the certificate"
            )
        if code in _EXPIRED_CODES:
            return TlsError(f"TLS: the certificate of {where} is expired or not yet valid ({detail})")
        if code in _UNTRUSTED_CODES:
            trust = f"ca_file {os.fspath(ca_file)}" if ca_file is not None else "the system trust store"
            return TlsError(
                f"TLS: the certificate of {where} is not trusted by {trust} ({detail}): pass "
                "ca_file with the CA that signed it, or check the stunnel setup"
            )
        return TlsError(f"TLS: certificate of {where} rejected ({detail})")
    if isinstance(cause, ssl.SSLError):
        reason = (cause.reason or "").upper()
        if reason in ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
                      "HTTP_REQUEST", "UNKNOWN_PROTOCOL"):
            return TlsError(
                f"TLS: {where} did not answer with TLS ({cause.reason}): the port speaks plain "
                "TCP — set tls = false for a local stunnel, or use the gateway's TLS port"
            )
        if "PROTOCOL_VERSION" in reason or reason in ("UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"):
            return TlsError(
                f"TLS: {where} and this client share no TLS version ({cause.reason}); Kalshi "
                "needs TLS 1.2 or newer"
            )
        if isinstance(cause, ssl.SSLEOFError) or "EOF" in reason:
            return _closed_in_handshake(where)
        return TlsError(f"TLS handshake with {where} failed: {_ssl_reason(cause)}")
    if cause is None:
        return _closed_in_handshake(where)
    return TlsError(f"TLS handshake with {where} failed: {_ssl_reason(cause)}")


def _closed_in_handshake(where: str) -> TlsError:
    return TlsError(
        f"TLS: {where} closed the connection during the handshake: the port may speak plain "
        "TCP (is a stunnel expected there, or should tls be false?) or it refused our TLS "
        "version/ciphers"
    )
