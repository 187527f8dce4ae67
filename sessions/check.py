"""Operator commands behind the CLI: ``kalshi-fix check`` and ``kalshi-fix keygen``.

``check CONFIG --session NAME`` walks one configured session through every step a live session
needs and prints each with its timing: load the config, load the private key, open the store,
TCP connect, TLS handshake (and certificate pin), Logon, a TestRequest round trip, Logout. When a
step fails it says which one and lists the likely causes from Kalshi's troubleshooting notes.

It uses the session's real store, so on an endpoint with sequence continuity (KalshiRT) the check
advances the stored sequence numbers like any session would. Kalshi allows one connection per
API key: the ``kalshi-fix check`` command (``supervisor/cli.py``) therefore takes the key's
process lock, the one a running supervisor holds, and refuses (exit 7) while another process
holds it; :func:`run_check` itself, called directly, takes no lock.

Exit codes of ``check``:

====  ==================================================================================
0     every step succeeded
2     local setup: config file, session name, private key or store — nothing was sent
3     transport: TCP connect, TLS handshake, certificate pin, or the connection dropped
4     Logon rejected (Logout/Reject from the gateway) or not answered
5     the gateway did not answer the TestRequest in time
6     the gateway did not confirm the Logout (the session itself worked)
7     (the ``kalshi-fix check`` command only) the API key is locked by another process, such
      as a running supervisor: nothing was sent
====  ==================================================================================

``keygen --out-dir DIR --name NAME`` writes ``NAME.pem`` (private, PKCS#8, mode 0600) and
``NAME.pub.pem``; it exits 0, or 2 when the files cannot be written.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO, Union

import trio

from .config import SessionConfig, load_config
from .connection import FixConnection
from .driver import (
    Clock,
    FixSession,
    TestRequestTimeout,
    build_settings,
    default_clock,
    open_fix_session,
    open_session_store,
)
from .errors import (
    CertificatePinMismatch,
    ConfigError,
    KalshiFixError,
    KeyLoadError,
    LogonRejected,
    SessionClosed,
    StoreError,
    TlsError,
    TransportError,
)
from .events import LogoutReason
from .profiles import PROFILES
from .signature import generate_key_pair
from .transport import certificate_fingerprint, connect_tcp, start_tls

PathLike = Union[str, "os.PathLike[str]"]

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_TRANSPORT = 3
EXIT_LOGON = 4
EXIT_TEST_REQUEST = 5
EXIT_LOGOUT = 6

__all__ = [
    "EXIT_CONFIG",
    "EXIT_LOGON",
    "EXIT_LOGOUT",
    "EXIT_OK",
    "EXIT_TEST_REQUEST",
    "EXIT_TRANSPORT",
    "keygen_command",
    "logon_hints",
    "run_check",
]

_PORTS = ", ".join(f"{p.name} {p.port}" for p in PROFILES.values())

_SIGNATURE_HINTS = (
    "the private key does not match the public key registered for this key id in the Kalshi "
    "account (key_id and private_key must belong together)",
    "this machine's clock is more than 30 s off: SendingTime is signed and checked (sync NTP)",
)
_COMP_ID_HINTS = (
    "SenderCompID must be the API key id (key_id in the config), exactly as Kalshi shows it",
    f"TargetCompID must match the port's endpoint ({_PORTS})",
)
_RESET_HINT = (
    "ResetSeqNumFlag=Y (141=Y) is mandatory on endpoints without retransmission "
    "(KalshiNR, KalshiDC, KalshiRFQ, KalshiMD)"
)
_ALREADY_EXISTS_HINT = (
    "another connection holds this API key (Kalshi allows one connection per key): stop it, "
    "or after an unclean drop wait ~60 s until the gateway's heartbeat timeout frees the key"
)


def logon_hints(reason: str, session: SessionConfig | None = None) -> list[str]:
    """Likely causes of a refused Logon, from the :class:`LogoutReason` value ``reason``."""
    try:
        cls = LogoutReason(reason)
    except ValueError:
        cls = LogoutReason.OTHER
    if cls is LogoutReason.ALREADY_EXISTS:
        return [_ALREADY_EXISTS_HINT]
    if cls is LogoutReason.SIGNATURE:
        return list(_SIGNATURE_HINTS)
    if cls is LogoutReason.SENDING_TIME:
        return [_SIGNATURE_HINTS[1]]
    if cls is LogoutReason.COMP_ID:
        hints = list(_COMP_ID_HINTS)
        if session is not None:
            hints.append(
                f"this session sends SenderCompID {session.key_id} and TargetCompID "
                f"{session.target_comp_id} to port {session.port}"
            )
        return hints
    if cls is LogoutReason.RESET_REQUIRED:
        return [_RESET_HINT]
    if cls is LogoutReason.SEQUENCE:
        return [
            "sequence numbers disagree with the gateway's: on KalshiRT/KalshiPT set "
            "reset_seq_num_on_logon = true once (then reconcile through drop copy)"
        ]
    if cls is LogoutReason.MAINTENANCE:
        return ["the exchange is in its maintenance window (Thursday 03:00-05:00 US Eastern)"]
    return [*_COMP_ID_HINTS, _RESET_HINT, *_SIGNATURE_HINTS, _ALREADY_EXISTS_HINT]


class _Report:
    """Prints one line per step: status, name, duration, detail."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = trio.current_time()

    def line(self, text: str) -> None:
        print(text, file=self.out)

    def step(self, ok: bool, name: str, started: float, detail: str) -> None:
        ms = (trio.current_time() - started) * 1000
        status = "ok" if ok else "FAILED"
        self.line(f"  {status:<6} {name:<13} {ms:9.1f} ms  {detail}")

    def fail(self, name: str, started: float, error: BaseException, hints: list[str], code: int) -> int:
        self.step(False, name, started, str(error))
        if hints:
            self.line("likely cause:")
            for hint in hints:
                self.line(f"  - {hint}")
        self.line(f"check failed at step '{name}' (exit {code})")
        return code


def _pick_session(config_path: PathLike, session_name: str | None) -> SessionConfig:
    config = load_config(config_path)
    names = list(config.sessions)
    if session_name is None:
        if len(names) == 1:
            return config.sessions[names[0]]
        raise ConfigError(
            f"{config_path}: several sessions ({', '.join(names)}); choose one with --session"
        )
    try:
        return config.sessions[session_name]
    except KeyError:
        raise ConfigError(
            f"{config_path}: no [session.{session_name}]; sessions in this file: {', '.join(names)}"
        ) from None


def _tls_hints(error: TlsError, cfg: SessionConfig) -> list[str]:
    if isinstance(error, CertificatePinMismatch):
        return [
            "the server certificate is not the pinned one: Kalshi may have rotated it, or the "
            "host is not the gateway (fetch it with 'openssl s_client -showcerts -connect "
            f"{cfg.host}:{cfg.port}' and update pin_sha256)"
        ]
    return [
        "certificate/CA: Kalshi's gateways use public certificates; a stunnel or simulator with "
        "its own CA needs ca_file pointing at that CA",
        "is a stunnel needed? A local stunnel (or plain-TCP simulator) speaks plain TCP: set "
        "tls = false for it; Kalshi's own ports need tls = true (TLS 1.2 or newer)",
    ]


def _transport_hints(cfg: SessionConfig) -> list[str]:
    hints = [
        f"host and port: {cfg.host}:{cfg.port} (Kalshi order entry: mm.fix.elections.kalshi.com"
        " or fix.demo.kalshi.co, ports 8228-8232)",
    ]
    if not cfg.tls:
        hints.append(
            "tls = false: only right for a local stunnel or a plain-TCP simulator; Kalshi's "
            "gateways require TLS (plain TCP fails at their handshake)"
        )
    return hints


async def run_check(
    config_path: PathLike,
    session_name: str | None,
    *,
    out: TextIO | None = None,
    test_request_timeout: float = 10.0,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Check one configured session end to end; returns the exit code (module docstring)."""
    report = _Report(out if out is not None else sys.stdout)

    t = trio.current_time()
    try:
        cfg = _pick_session(config_path, session_name)
    except ConfigError as exc:
        return report.fail("config", t, exc, [], EXIT_CONFIG)
    mode = "TLS" if cfg.tls else "plain TCP"
    report.line(
        f"kalshi-fix check: session {cfg.name} -> {cfg.target_comp_id} at {cfg.host}:{cfg.port} "
        f"({mode}), key id {cfg.key_id}"
    )
    report.step(True, "config", t, f"{config_path}")

    t = trio.current_time()
    try:
        signer = cfg.load_signer(environ)
    except KeyLoadError as exc:
        return report.fail("key", t, exc, [], EXIT_CONFIG)
    report.step(True, "key", t, f"private key for key id {cfg.key_id}")

    session_clock = clock if clock is not None else default_clock()
    t = trio.current_time()
    try:
        store = open_session_store(cfg, session_clock())
    except StoreError as exc:
        return report.fail("store", t, exc, [], EXIT_CONFIG)
    where = (
        str(cfg.store_dir) if cfg.uses_durable_store
        else "in memory (every Logon resets the sequence numbers)"
    )
    report.step(True, "store", t, where)
    try:
        return await _check_online(cfg, signer, store, session_clock, report, test_request_timeout)
    finally:
        store.close()


async def _check_online(
    cfg: SessionConfig,
    signer: Any,
    store: Any,
    clock: Clock,
    report: _Report,
    test_request_timeout: float,
) -> int:
    t = trio.current_time()
    try:
        stream: trio.abc.Stream = await connect_tcp(
            cfg.host, cfg.port, connect_timeout=cfg.connect_timeout
        )
    except TransportError as exc:
        return report.fail("connect", t, exc, _transport_hints(cfg), EXIT_TRANSPORT)
    report.step(True, "connect", t, f"TCP {cfg.host}:{cfg.port}")

    if cfg.tls:
        t = trio.current_time()
        try:
            tls = await start_tls(
                stream,
                cfg.host,
                cfg.port,
                ca_file=cfg.ca_file,
                pin_sha256=cfg.pin_sha256,
                handshake_timeout=cfg.connect_timeout,
            )
        except TlsError as exc:
            return report.fail("tls", t, exc, _tls_hints(exc, cfg), EXIT_TRANSPORT)
        except ConfigError as exc:
            return report.fail("tls", t, exc, [], EXIT_CONFIG)
        trust = f"ca_file {cfg.ca_file}" if cfg.ca_file else "system trust store"
        pin = "pin matches" if cfg.pin_sha256 else f"no pin (sha256 {certificate_fingerprint(tls)})"
        report.step(True, "tls", t, f"{tls.version()}, certificate verified by {trust}, {pin}")
        stream = tls
    else:
        report.line(f"  {'-':<6} {'tls':<13} {'':>12}  off (plain TCP: a local stunnel or simulator)")

    connection = FixConnection(build_settings(cfg, signer.sign), store)
    async with open_fix_session(
        stream, connection, clock=clock, peer_name=f"{cfg.host}:{cfg.port}"
    ) as session:
        return await _check_session(cfg, session, report, test_request_timeout)


async def _check_session(
    cfg: SessionConfig, session: FixSession, report: _Report, test_request_timeout: float
) -> int:
    t = trio.current_time()
    try:
        logged_on = await session.wait_logged_on()
    except LogonRejected as exc:
        return report.fail("logon", t, exc, logon_hints(exc.reason, cfg), EXIT_LOGON)
    except TransportError as exc:
        hints = [
            "plain TCP against a TLS port (tls = true, or run a stunnel), or TLS against a "
            "plain port",
            "the gateway dropped a Logon it could not authenticate: check key_id and private_key",
        ]
        return report.fail("logon", t, exc, hints, EXIT_TRANSPORT)
    reset = "ResetSeqNumFlag=Y" if logged_on.reset_seq_num else "sequence continued"
    conn = session.connection
    report.step(
        True, "logon", t,
        f"HeartBtInt {logged_on.heartbeat_interval}, {reset}, next seq out "
        f"{conn.next_sender_seq} / in {conn.next_target_seq}",
    )

    t = trio.current_time()
    try:
        rtt = await session.test_request(timeout=test_request_timeout)
    except TestRequestTimeout as exc:
        hints = [
            "the gateway or the network path stopped answering (firewall idle timeout, "
            "overloaded link); a live session would be dropped after HeartBtInt"
        ]
        return report.fail("test request", t, exc, hints, EXIT_TEST_REQUEST)
    except SessionClosed as exc:
        return report.fail("test request", t, exc, [], EXIT_TRANSPORT)
    report.step(True, "test request", t, f"round trip {rtt * 1000:.1f} ms")

    t = trio.current_time()
    ended = await session.logout()
    if ended is None or not ended.clean:
        how = "no Logout answer" if ended is None else f"ended {ended.initiated_by}, not clean"
        error = SessionClosed(
            f"{how} within {cfg.logout_timeout:g} s; the connection was closed anyway"
        )
        return report.fail("logout", t, error, [], EXIT_LOGOUT)
    report.step(True, "logout", t, "confirmed by the gateway")
    report.line(f"check passed: session {cfg.name} can log on to {cfg.target_comp_id}")
    return EXIT_OK


# --------------------------------------------------------------------------- keygen
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def keygen_command(
    out_dir: PathLike,
    name: str,
    *,
    passphrase_env: str | None = None,
    out: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Write ``NAME.pem`` / ``NAME.pub.pem`` in ``out_dir``; returns 0, or 2 on failure."""
    stream = out if out is not None else sys.stdout
    env = os.environ if environ is None else environ
    directory = Path(out_dir)
    try:
        if not _KEY_NAME.match(name):
            raise ConfigError(
                f"key name {name!r}: use letters, digits, '_', '-' and '.' (no path separators)"
            )
        passphrase: bytes | None = None
        if passphrase_env is not None:
            value = env.get(passphrase_env)
            if not value:
                raise ConfigError(
                    f"environment variable {passphrase_env} (the passphrase) is not set or empty"
                )
            passphrase = value.encode("utf-8")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {directory}: {exc.strerror or exc}") from None
        private = directory / f"{name}.pem"
        public = directory / f"{name}.pub.pem"
        generate_key_pair(private, public, passphrase=passphrase)
    except KalshiFixError as exc:
        print(f"keygen failed: {exc}", file=stream)
        return EXIT_CONFIG
    print(f"private key: {private} (PKCS#8{', encrypted' if passphrase else ''}; keep it secret)",
          file=stream)
    print(f"public key:  {public}", file=stream)
    print(
        "next: register the public key in your Kalshi account (API keys); Kalshi then shows the "
        "key id. Put it in the session's config as key_id, with "
        f"private_key = \"{private}\""
        + (f" and private_key_passphrase_env = \"{passphrase_env}\"" if passphrase_env else "")
        + ".",
        file=stream,
    )
    return EXIT_OK
