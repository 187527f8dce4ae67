"""Interoperability with an independent FIXT.1.1 engine: QuickFIX (its Python bindings).

Opt-in: skipped unless ``import quickfix`` works. QuickFIX is not a project dependency; build it
in a separate venv and put its site-packages on the path (README, "Testing")::

    python3 -m venv /tmp/qfvenv && /tmp/qfvenv/bin/pip install quickfix==1.16.0
    PYTHONPATH=/tmp/qfvenv/lib/python3.11/site-packages .venv/bin/python -m pytest tests/interop

Two roles, over loopback TCP through a relay that records every message and can drop one or
go silent in one direction:

* our client (``sessions.driver``) against a QuickFIX acceptor;
* a QuickFIX initiator, signing its Logon in ``toAdmin`` (REFERENCE §2.2), against the simulated
  gateway (``python -m sessions.testing.cli --plain``).

And both over TLS, without the relay: our client (trusting a ``trustme`` CA) against QuickFIX's
SSLSocketAcceptor, and QuickFIX's SSLSocketInitiator against the gateway serving TLS. Those need
bindings built with SSL support; the PyPI build of quickfix 1.16.0 has none (its SSL engines
raise ``ConfigError("HAVE_SSL not enabled")``), and the TLS tests then skip saying so. Built
from the sdist with HAVE_SSL and OpenSSL linked in (README, "Testing")::

    python3 -m venv /tmp/qfsslvenv && CPPFLAGS=-DHAVE_SSL=1 \
        LDFLAGS="-Wl,--no-as-needed -lssl -lcrypto" /tmp/qfsslvenv/bin/pip install \
        --no-cache-dir --no-binary :all: quickfix==1.16.0

QuickFIX validates with its own FIXT11.xml / FIX50SP2.xml when they are found (next to the
bindings' install prefix, or in ``$QUICKFIX_SPEC_DIR``); Kalshi's own tags are user-defined
(5000-9999, 20000+) and are not validated, and standard tags Kalshi adds to messages whose
FIX 5.0 SP2 definition lacks them are allowed (``AllowUnknownMsgFields``).
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import trio

fix: Any = pytest.importorskip("quickfix")

import trustme  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from sessions.connection import FixConnection, State  # noqa: E402
from sessions.driver import FixSession, open_fix_session  # noqa: E402
from sessions.errors import TlsError  # noqa: E402
from sessions.events import (  # noqa: E402
    ApplicationMessage,
    Event,
    HeartbeatTimeout,
    LogoutReason,
    RejectReceived,
    SessionEnded,
)
from sessions.settings import Role, SessionSettings  # noqa: E402
from sessions.signature import LogonSigner  # noqa: E402
from sessions.store import MemoryStore  # noqa: E402
from sessions.transport import open_transport  # noqa: E402

SOH = "\x01"
SYMBOL = "KXHIGHNY-26JUL14-B85"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
# QuickFIX keeps every session it ever created registered while its acceptor lives, and its
# Acceptor.stop() can hang (below): a fresh SenderCompID per test keeps them apart.
_KEY_IDS = (f"3f1c2a9e-0000-4000-8000-{n:012x}" for n in itertools.count(0xA000))
_FRAME = re.compile(rb"8=[^\x01]*\x019=(\d+)\x01")
# Kalshi's gateways speak TLS 1.2 or newer only (REFERENCE §1.5); QuickFIX's SSLProtocol syntax.
_TLS_12_UP = "-all +TLSv1_2 +TLSv1_3"
# QuickFIX calls back into these from its threads, possibly after stop(): never freed.
_KEEP: list[Any] = []


def _spec_dir() -> Path | None:
    env = os.environ.get("QUICKFIX_SPEC_DIR")
    candidates = [Path(env)] if env else []
    # site-packages -> python3.X -> lib -> prefix; the sdist installs its specs in share/.
    candidates.append(Path(fix.__file__).resolve().parents[3] / "share" / "quickfix")
    return next((c for c in candidates if (c / "FIXT11.xml").exists()), None)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _field(msg: bytes, tag: int) -> bytes | None:
    m = re.search(rb"(?:^|\x01)" + str(tag).encode() + rb"=([^\x01]*)\x01", msg)
    return m.group(1) if m else None


class Relay:
    """initiator <-> relay <-> acceptor: keeps (direction, message) in order, and in ``at`` the
    Trio time each was seen; ``drop_next`` swallows the next message in a direction that
    matches, ``mute`` every message in a direction from then on (logged as ``DIR-muted``),
    the TCP connection staying open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.log: list[tuple[str, bytes]] = []
        self.at: list[float] = []
        self._drops: list[tuple[str, Callable[[bytes], bool]]] = []
        self._muted: set[str] = set()

    def drop_next(self, direction: str, pred: Callable[[bytes], bool]) -> None:
        self._drops.append((direction, pred))

    def mute(self, direction: str) -> None:
        self._muted.add(direction)

    def timed(self) -> list[tuple[float, str, bytes]]:
        return [(t, d, m) for t, (d, m) in zip(self.at, self.log)]

    def _record(self, direction: str, msg: bytes) -> None:
        self.log.append((direction, msg))
        self.at.append(trio.current_time())

    def dropped(self, direction: str) -> int:
        """How many messages ``drop_next`` has swallowed in ``direction`` so far."""
        return sum(1 for d, _ in self.log if d == direction + "-dropped")

    def types(self, direction: str, since: int = 0) -> list[bytes]:
        return [_field(m, 35) or b"" for d, m in self.log[since:] if d == direction]

    def dump(self) -> str:
        return "\n".join(f"{d} {m.decode('latin-1').replace(SOH, '|')}" for d, m in self.log)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        # Closed on the way out, cancelled or not: QuickFIX 1.16 crashes or spins in
        # Acceptor.stop() while one of its connections is still open.
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, "c2s", nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, "s2c", nursery.cancel_scope)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, direction: str,
                    scope: trio.CancelScope) -> None:
        buf = b""
        try:
            while data := await src.receive_some(65536):
                buf += data
                while (m := _FRAME.search(buf)) and len(buf) >= m.end() + int(m.group(1)) + 7:
                    end = m.end() + int(m.group(1)) + 7
                    msg, buf = buf[m.start():end], buf[end:]
                    if direction in self._muted:
                        self._record(direction + "-muted", msg)
                        continue
                    drop = next((r for r in self._drops if r[0] == direction and r[1](msg)), None)
                    if drop is not None:
                        self._drops.remove(drop)
                        self._record(direction + "-dropped", msg)
                        continue
                    self._record(direction, msg)
                    await dst.send_all(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                await dst.aclose()
        scope.deadline = min(scope.deadline, trio.current_time() + 2)


class Recorder(fix.Application):  # type: ignore[misc]
    """The QuickFIX application: records messages; the acceptor verifies our Logon signature
    and answers each NewOrderSingle with an ExecutionReport; the initiator signs its Logon."""

    def __init__(self, *, sign: rsa.RSAPrivateKey | None = None,
                 verify: rsa.RSAPublicKey | None = None) -> None:
        super().__init__()
        self.sign, self.verify = sign, verify
        self.lock = threading.Lock()
        self.app_in: list[str] = []
        self.admin_in: list[str] = []  # MsgTypes: without a relay (TLS) the only wire view
        self.signatures: list[bool] = []
        self.orders = 0

    def onCreate(self, sid: Any) -> None: ...
    def onLogon(self, sid: Any) -> None: ...
    def onLogout(self, sid: Any) -> None: ...
    def toApp(self, msg: Any, sid: Any) -> None: ...

    @staticmethod
    def _pre_hash(header: Any) -> bytes:
        return SOH.join([header.getField(52), "A", header.getField(34), header.getField(49),
                         header.getField(56)]).encode()

    def toAdmin(self, msg: Any, sid: Any) -> None:
        header = msg.getHeader()
        if header.getField(35) == "A" and self.sign is not None:
            # SendingTime and MsgSeqNum are stamped by now: the signature covers those values.
            sig = base64.b64encode(self.sign.sign(self._pre_hash(header), _PSS, hashes.SHA256()))
            msg.setField(fix.RawDataLength(len(sig)))
            msg.setField(fix.RawData(sig.decode()))

    def fromAdmin(self, msg: Any, sid: Any) -> None:
        header = msg.getHeader()
        with self.lock:
            self.admin_in.append(header.getField(35))
        if header.getField(35) == "A" and self.verify is not None:
            try:
                self.verify.verify(base64.b64decode(msg.getField(96)), self._pre_hash(header),
                                   _PSS, hashes.SHA256())
                self.signatures.append(True)
            except Exception:
                self.signatures.append(False)
                raise fix.RejectLogon("signature check failed")

    def fromApp(self, msg: Any, sid: Any) -> None:
        with self.lock:
            self.app_in.append(msg.toString().replace(SOH, "|"))
        if self.verify is None or msg.getHeader().getField(35) != "D":
            return
        self.orders += 1
        er = fix.Message()
        er.getHeader().setField(fix.MsgType("8"))
        for f in (fix.OrderID(f"O{self.orders}"), fix.ExecID(f"E{self.orders}"),
                  fix.ExecType("0"), fix.OrdStatus("0"), fix.ClOrdID(msg.getField(11)),
                  fix.Side("1"), fix.Symbol(SYMBOL), fix.LeavesQty(1), fix.CumQty(0)):
            er.setField(f)
        fix.Session.sendToTarget(er, sid)

    def clordids(self) -> list[str]:
        with self.lock:
            return [m.split("|11=")[1].split("|")[0] for m in self.app_in]


def _write_config(path: Path, *, role: str, port: int, session: dict[str, str],
                  defaults: dict[str, str] | None = None) -> Any:
    spec = _spec_dir()
    values = {
        "ConnectionType": role, "FileStorePath": str(path / "store"),
        "StartTime": "00:00:00", "EndTime": "00:00:00", "DefaultApplVerID": "FIX.5.0SP2",
        "TimestampPrecision": "3", "ReconnectInterval": "1", "LogonTimeout": "5",
        "LogoutTimeout": "3", "UseDataDictionary": "N" if spec is None else "Y",
        "SocketAcceptHost" if role == "acceptor" else "SocketConnectHost": "127.0.0.1",
        "SocketAcceptPort" if role == "acceptor" else "SocketConnectPort": str(port),
    }
    if spec is not None:
        values.update({
            "TransportDataDictionary": str(spec / "FIXT11.xml"),
            "AppDataDictionary": str(spec / "FIX50SP2.xml"),
            "ValidateUserDefinedFields": "N", "AllowUnknownMsgFields": "Y",
        })
    # QuickFIX reads its SSL settings from [DEFAULT] only (settings.get() in UtilitySSL.cpp).
    values.update(defaults or {})
    cfg = path / "qf.cfg"
    session = {"BeginString": "FIXT.1.1", **session}
    cfg.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items())
                   + "[SESSION]\n" + "".join(f"{k}={v}\n" for k, v in session.items()))
    return fix.SessionSettings(str(cfg))


async def _stop(engine: Any) -> None:
    # QuickFIX 1.16's Acceptor.stop() can spin for ever in SocketServer::close: bounded.
    with trio.move_on_after(5):
        await trio.to_thread.run_sync(engine.stop, abandon_on_cancel=True)


async def _until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class ServerTls(NamedTuple):
    """A server certificate and its key, PEM files, for QuickFIX's SSLSocketAcceptor."""

    cert_file: Path
    key_file: Path

    def settings(self) -> dict[str, str]:
        # QuickFIX C++ 1.16's names (SessionSettings.h); SSL is on by choosing the SSL engine
        # (there is no SSLEnable key, that is QuickFIX/J and QuickFIX/n). No
        # CertificationAuthoritiesFile: asking clients for certificates is not what Kalshi does.
        return {"ServerCertificateFile": str(self.cert_file),
                "ServerCertificateKeyFile": str(self.key_file), "SSLProtocol": _TLS_12_UP}


class Pki(NamedTuple):
    """A trustme CA, a certificate it issued for 127.0.0.1, and an unrelated CA's file."""

    ca_file: Path
    server: ServerTls
    wrong_ca_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "wrong-ca.pem"))
    # trustme's CA signs the leaf directly: QuickFIX serves just the leaf (it loads only the
    # first certificate of ServerCertificateFile), and that is a complete chain.
    leaf.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    return Pki(d / "ca.pem", ServerTls(d / "server.pem", d / "server.key"), d / "wrong-ca.pem")


def _quickfix_without_ssl() -> str | None:
    """Why QuickFIX's SSL engines cannot run here, or None when they can.

    The bindings compile SSLSocketAcceptor/SSLSocketInitiator as stubs unless built with
    HAVE_SSL (swig/SSLStubs.h), and quickfix 1.16.0's setup.py never defines it (the module
    docstring shows how to): the stubs' constructors raise ConfigError("HAVE_SSL not
    enabled"). Constructing one (not starting it) tells, without a port or a certificate: the
    real engines read their certificates only in start()."""
    app = Recorder()
    _KEEP.append(app)
    refused: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qf-ssl-probe-") as tmp:
        for role, factory in (("acceptor", fix.SSLSocketAcceptor),
                              ("initiator", fix.SSLSocketInitiator)):
            session = {"SenderCompID": f"SSLPROBE-{role}", "TargetCompID": "SSLPROBE"}
            if role == "initiator":
                session["HeartBtInt"] = "30"
            settings = _write_config(Path(tmp), role=role, port=1, session=session)
            try:
                factory(app, fix.FileStoreFactory(settings), settings)
            except fix.ConfigError as exc:
                if "HAVE_SSL" not in str(exc):
                    raise  # some other setup problem: let the test show it
                refused.append(f"fix.{factory.__name__}() raised ConfigError({str(exc)!r})")
    if not refused:
        return None
    return ("QuickFIX bindings built without SSL support (HAVE_SSL undefined): "
            + "; ".join(refused))


@pytest.fixture(scope="module")
def quickfix_ssl() -> None:
    """Skips the test when QuickFIX has no TLS (see _quickfix_without_ssl)."""
    reason = _quickfix_without_ssl()
    if reason is not None:
        pytest.skip(reason)


class Acceptor:
    """A QuickFIX acceptor for one Kalshi endpoint name, and the relay in front of it (none
    over TLS: the relay reads FIX in the clear, so a TLS client talks to QuickFIX directly)."""

    def __init__(self, endpoint: str, key_id: str, app: Recorder, relay: Relay | None,
                 engine_port: int) -> None:
        self.sid = fix.SessionID("FIXT.1.1", endpoint, key_id)
        self.endpoint = endpoint
        self.app, self._relay = app, relay
        self.engine_port = engine_port

    @property
    def relay(self) -> Relay:
        assert self._relay is not None, "no relay in front of a TLS acceptor"
        return self._relay

    @property
    def has_relay(self) -> bool:
        return self._relay is not None

    @property
    def port(self) -> int:
        """Where clients connect: the relay, or QuickFIX itself when there is none."""
        return self.engine_port if self._relay is None else self._relay.port

    def dump(self) -> str:
        return "(TLS: no relay, no wire log)" if self._relay is None else self._relay.dump()

    @property
    def session(self) -> Any:
        return fix.Session.lookupSession(self.sid)

    def logged_on(self) -> bool:
        s = self.session
        return s is not None and bool(s.isLoggedOn())

    def send(self, msg_type: str, fields: list[Any]) -> None:
        msg = fix.Message()
        msg.getHeader().setField(fix.MsgType(msg_type))
        for f in fields:
            msg.setField(f)
        fix.Session.sendToTarget(msg, self.sid)


@asynccontextmanager
async def quickfix_acceptor(tmp_path: Path, endpoint: str, key_id: str, key: rsa.RSAPrivateKey,
                            *, tls: ServerTls | None = None) -> AsyncIterator[Acceptor]:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Recorder(verify=key.public_key())
    _KEEP.append(app)
    settings = _write_config(tmp_path, role="acceptor", port=port,
                             session={"SenderCompID": endpoint, "TargetCompID": key_id},
                             defaults=None if tls is None else tls.settings())
    # The bindings offer no threaded SSL acceptor; SSLSocketAcceptor runs its own thread too.
    factory = fix.ThreadedSocketAcceptor if tls is None else fix.SSLSocketAcceptor
    engine = factory(app, fix.FileStoreFactory(settings), settings)
    engine.start()
    relay = Relay(port) if tls is None else None
    try:
        async with trio.open_nursery() as nursery:
            if relay is not None:
                await nursery.start(relay.run)
            yield Acceptor(endpoint, key_id, app, relay, port)
            nursery.cancel_scope.cancel()
    finally:
        # QuickFIX must see its connections close before it stops (see Relay._handle).
        with trio.move_on_after(5):
            while any(fix.Session.lookupSession(s).isLoggedOn() for s in engine.getSessions()):
                await trio.sleep(0.02)
        await _stop(engine)


class Client:
    """Our side: settings per Kalshi profile, one store across connections, events kept."""

    def __init__(self, acceptor: Acceptor, key: rsa.RSAPrivateKey, key_id: str, *, rt: bool,
                 heartbeat: int = 30, ca_file: Path | None = None) -> None:
        self.acceptor = acceptor
        self.ca_file = ca_file  # set: TLS, trusting only this CA
        self.store = MemoryStore()
        self.events: list[Event] = []
        self.conn: FixConnection | None = None
        self.stream: trio.abc.Stream | None = None
        self.settings = SessionSettings(
            role=Role.INITIATOR, sender_comp_id=key_id,
            target_comp_id=acceptor.endpoint,
            heartbeat_interval=heartbeat, reset_seq_num_on_logon=not rt, retransmission=rt,
            # Kalshi Logon options, all in the user-defined range.
            logon_fields=((21011, b"Y"), (21005, b"Y"), (8013, b"N")),
            sign_logon=LogonSigner.from_private_key(key, key_id).sign, logout_timeout=3.0,
        )

    @asynccontextmanager
    async def connect(self, **changes: Any) -> AsyncIterator[FixSession]:
        import attrs

        stream = self.stream = await open_transport(
            "127.0.0.1", self.acceptor.port, tls=self.ca_file is not None, ca_file=self.ca_file)
        self.conn = FixConnection(attrs.evolve(self.settings, **changes), self.store)
        async with open_fix_session(stream, self.conn) as session:
            await session.wait_logged_on()
            session.hand_events_to(self.events.extend)
            await _until(self.acceptor.logged_on, "QuickFIX logged on")
            yield session

    def received(self) -> list[tuple[bytes | None, bool]]:
        return [(e.message.get(11), e.poss_dup) for e in self.events
                if isinstance(e, ApplicationMessage)]

    async def agree(self) -> None:
        """Both sides come to expect what the other will send next (a resend may still be
        in flight when the application message it carried has arrived)."""
        qf = self.acceptor.session

        def numbers() -> tuple[tuple[int, int], tuple[int, int]]:
            return ((self.store.next_sender_seq, self.store.next_target_seq),
                    (qf.getExpectedTargetNum(), qf.getExpectedSenderNum()))

        with trio.move_on_after(2):
            while (pair := numbers())[0] != pair[1]:
                await trio.sleep(0.02)
        ours, theirs = numbers()
        assert ours == theirs, self.acceptor.dump()

    async def logout(self, session: FixSession) -> None:
        ended = await session.logout("bye")
        assert ended is not None and ended.clean, self.acceptor.dump()
        await _until(lambda: not self.acceptor.logged_on(), "QuickFIX logged off")
        if not self.acceptor.has_relay:
            return  # TLS: no relay saw the wire (`ended.clean` says both Logouts passed)
        relay = self.acceptor.relay
        assert relay.types("c2s")[-1:] == [b"5"] and relay.types("s2c")[-1:] == [b"5"]


def _order(clordid: str, *, side: bool = True) -> list[tuple[int, str]]:
    body = [(11, clordid), (55, SYMBOL), (60, time.strftime("%Y%m%d-%H:%M:%S.000", time.gmtime())),
            (38, "5"), (40, "2"), (44, "41"), (59, "1")]
    return body + [(54, "1")] if side else body


# ----------------------------------------------------------------------- our client, QF acceptor
@pytest.mark.parametrize("profile", ["RT", "NR"])
async def test_client_logon_order_logout(tmp_path: Path, key: rsa.RSAPrivateKey,
                                         profile: str) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, f"Kalshi{profile}", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=profile == "RT")
        async with client.connect() as session:
            assert qf.app.signatures == [True]
            session.send_app(b"D", _order("c1"))
            await _until(lambda: bool(client.received()), "ExecutionReport")
            assert client.received() == [(b"c1", False)]
            await client.agree()
            await client.logout(session)
        logon = next(m for d, m in qf.relay.log if d == "c2s" and _field(m, 35) == b"A")
        assert _field(logon, 141) == (b"Y" if profile == "NR" else None)


async def test_client_heartbeats_and_test_requests(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=True, heartbeat=2)
        async with client.connect() as session:
            mark = len(qf.relay.log)
            await _until(lambda: min(qf.relay.types("c2s", mark).count(b"0"),
                                     qf.relay.types("s2c", mark).count(b"0")) >= 2,
                         "two heartbeats each way", 10)
            await session.test_request(timeout=3)
            # We fall silent: QuickFIX probes with a TestRequest, which the core still answers.
            mark = len(qf.relay.log)
            session.pause_timers(5.5)

            def probe_answered() -> bool:
                probes = [_field(m, 112) for d, m in qf.relay.log[mark:]
                          if d == "s2c" and _field(m, 35) == b"1"]
                answers = [_field(m, 112) for d, m in qf.relay.log[mark:]
                           if d == "c2s" and _field(m, 35) == b"0"]
                return bool(probes) and probes[0] in answers

            await _until(probe_answered, "QuickFIX's TestRequest answered", 10)
            assert qf.logged_on() and client.conn is not None and client.conn.state is State.ACTIVE
            await client.agree()
            await client.logout(session)


async def test_client_drops_a_silent_quickfix(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    """QuickFIX stays logged on and keeps sending, the TCP connection stays open, but nothing
    reaches us: after HeartBtInt plus the grace of silence we probe with a TestRequest, and when
    no Heartbeat answers it within as long again we log out and drop the connection."""
    key_id = next(_KEY_IDS)
    hb = 1  # seconds: HeartBtInt(108) of our Logon, which QuickFIX adopts
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=True, heartbeat=hb)
        relay = qf.relay
        async with client.connect() as session:
            mark = len(relay.log)
            # Traffic flows both ways first, so the silence below is the relay's doing alone.
            await _until(lambda: b"0" in relay.types("s2c", mark)
                         and b"0" in relay.types("c2s", mark), "a Heartbeat each way")
            relay.mute("s2c")
            await _until(lambda: session.finished, "our side giving up on QuickFIX", 10)
            ended = session.ended
            events = list(client.events)
        wire = relay.timed()
        last_heard = max(t for t, d, _ in wire if d == "s2c")
        probes = [(t, m) for t, d, m in wire if d == "c2s" and _field(m, 35) == b"1"]
        assert len(probes) == 1, relay.dump()
        probed_at, probe = probes[0]
        # FIX: a TestRequest only once HeartBtInt plus a reasonable transmission time passed
        # without a message; same clock (Trio's) for the relay and the session.
        assert probed_at - last_heard >= hb
        # QuickFIX did answer the probe; the answer never got through.
        answer = (b"0", _field(probe, 112))
        assert any(d == "s2c-muted" and (_field(m, 35), _field(m, 112)) == answer
                   for _, d, m in wire), relay.dump()
        # Our last words: a Logout saying why, no earlier than another HeartBtInt after the probe.
        logout_at, logout = next((t, m) for t, d, m in wire
                                 if d == "c2s" and _field(m, 35) == b"5")
        assert logout_at - probed_at >= hb
        assert b"TestRequest unanswered" in (_field(logout, 58) or b""), relay.dump()
        assert relay.types("c2s")[-1:] == [b"5"]
        timeouts = [e for e in events if isinstance(e, HeartbeatTimeout)]
        assert len(timeouts) == 1 and timeouts[0].silent_for >= 2 * hb
        assert [e for e in events if isinstance(e, SessionEnded)] == [ended]
        assert ended is not None and ended.initiated_by == "error" and not ended.clean
        assert ended.reason is LogoutReason.HEARTBEAT and ended.was_logged_on
        # Our side closed the connection: QuickFIX sees the session end.
        await _until(lambda: not qf.logged_on(), "QuickFIX logged off")


async def test_client_gap_from_quickfix_is_resent(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=True)
        async with client.connect() as session:
            qf.relay.drop_next("s2c", lambda m: _field(m, 35) == b"8")
            session.send_app(b"D", _order("c1"))
            await _until(lambda: qf.relay.dropped("s2c") == 1, "c1's report dropped")
            # QuickFIX skips numbers too: its resend mixes a resent message and a GapFill.
            qf.session.setNextSenderMsgSeqNum(qf.session.getExpectedSenderNum() + 3)
            session.send_app(b"D", _order("c2"))
            await _until(lambda: len(client.received()) == 2, "both ExecutionReports")
            assert client.received() == [(b"c1", True), (b"c2", False)], qf.relay.dump()
            assert qf.relay.types("c2s").count(b"2") == 1
            await client.agree()
            await client.logout(session)


async def test_client_gap_to_quickfix_is_resent(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=True)
        async with client.connect() as session:
            qf.relay.drop_next("c2s", lambda m: _field(m, 35) == b"D")
            session.send_app(b"D", _order("c1"))
            await _until(lambda: qf.relay.dropped("c2s") == 1, "c1 dropped")
            client.store.set_next_sender_seq(client.store.next_sender_seq + 3)
            session.send_app(b"D", _order("c2"))
            await _until(lambda: len(qf.app.clordids()) == 2, "both orders at QuickFIX")
            assert qf.app.clordids() == ["c1", "c2"], qf.relay.dump()
            resent = [m for d, m in qf.relay.log if d == "c2s" and _field(m, 43) == b"Y"]
            assert [_field(m, 35) for m in resent] == [b"D", b"4", b"D"]
            assert all(_field(m, 122) for m in resent)
            await _until(lambda: len(client.received()) == 2, "ExecutionReports")
            await client.agree()
            await client.logout(session)


async def test_client_takes_sequence_reset_reset(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=True)
        async with client.connect() as session:
            new = qf.session.getExpectedSenderNum() + 10
            qf.send("4", [fix.NewSeqNo(new)])
            await _until(lambda: client.store.next_target_seq == new, "reset applied")
            qf.session.setNextSenderMsgSeqNum(new)
            session.send_app(b"D", _order("c1"))
            await _until(lambda: bool(client.received()), "ExecutionReport")
            assert not [t for t in qf.relay.types("c2s") if t in (b"2", b"3")]
            await client.agree()
            await client.logout(session)


async def test_rejects_both_ways(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiNR", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=False)
        async with client.connect() as session:
            qf.send("1", [])  # a TestRequest without its TestReqID: ours to reject
            await _until(lambda: b"3" in qf.relay.types("c2s"), "our Reject")
            ours = next(m for d, m in qf.relay.log if d == "c2s" and _field(m, 35) == b"3")
            assert (_field(ours, 373), _field(ours, 371), _field(ours, 372)) == (b"1", b"112", b"1")
            if _spec_dir() is not None:
                session.send_app(b"D", _order("bad", side=False))
                await _until(lambda: any(isinstance(e, RejectReceived) for e in client.events),
                             "QuickFIX's Reject")
                reject = next(e for e in client.events if isinstance(e, RejectReceived))
                assert (reject.reason, reject.ref_tag) == (1, 54)
            assert qf.logged_on() and client.conn is not None and client.conn.state is State.ACTIVE
            await client.agree()
            await client.logout(session)


async def test_client_answers_quickfix_logout(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=True)
        async with client.connect():
            qf.session.logout("from QuickFIX")
            await _until(lambda: client.conn is not None and client.conn.closed, "our end")
        ended = [e for e in client.events if isinstance(e, SessionEnded)]
        assert len(ended) == 1 and ended[0].clean and ended[0].initiated_by == "peer"
        assert ended[0].text == "from QuickFIX"
        assert qf.relay.types("c2s")[-1:] == [b"5"]
        await _until(lambda: not qf.logged_on(), "QuickFIX logged off")


async def test_client_reconnects_continuing_then_resetting(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key) as qf:
        client = Client(qf, key, key_id, rt=True)
        async with client.connect(reset_seq_num_on_logon=False) as session:
            session.send_app(b"D", _order("c1"))
            await _until(lambda: bool(client.received()), "ExecutionReport")
            await client.logout(session)
        # Sent by QuickFIX while we are away: numbered and stored, recovered by ResendRequest.
        qf.send("8", [fix.OrderID("O9"), fix.ExecID("E9"), fix.ExecType("4"), fix.OrdStatus("4"),
                      fix.ClOrdID("c1"), fix.Side("1"), fix.Symbol(SYMBOL), fix.LeavesQty(0),
                      fix.CumQty(0)])
        client.events.clear()
        continuing = client.store.next_sender_seq
        mark = len(qf.relay.log)
        async with client.connect(reset_seq_num_on_logon=False) as session:
            await _until(lambda: bool(client.received()), "the missed ExecutionReport")
            assert client.received() == [(b"c1", True)]
            logon = next(m for d, m in qf.relay.log[mark:] if d == "c2s" and _field(m, 35) == b"A")
            assert _field(logon, 34) == str(continuing).encode() and _field(logon, 141) is None
            await client.agree()
            await client.logout(session)
        mark = len(qf.relay.log)
        async with client.connect(reset_seq_num_on_logon=True) as session:
            answer = next(m for d, m in qf.relay.log[mark:] if d == "s2c" and _field(m, 35) == b"A")
            assert (_field(answer, 34), _field(answer, 141)) == (b"1", b"Y")
            await client.agree()
            await client.logout(session)


# ----------------------------------------------------------------------- our client, QF over TLS
@pytest.mark.usefixtures("quickfix_ssl")
async def test_client_over_tls(tmp_path: Path, key: rsa.RSAPrivateKey, pki: Pki) -> None:
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key, tls=pki.server) as qf:
        client = Client(qf, key, key_id, rt=True, ca_file=pki.ca_file)
        async with client.connect() as session:
            assert isinstance(client.stream, trio.SSLStream)
            assert client.stream.version() in ("TLSv1.2", "TLSv1.3")
            assert qf.app.signatures == [True]
            session.send_app(b"D", _order("c1"))
            await _until(lambda: bool(client.received()), "ExecutionReport")
            assert client.received() == [(b"c1", False)]
            assert qf.app.clordids() == ["c1"]
            await client.agree()
            await client.logout(session)  # clean: QuickFIX's Logout answer came back
        assert qf.app.admin_in[-1:] == ["5"]  # and QuickFIX had ours


async def _refused_by_wrong_ca(tmp_path: Path, key: rsa.RSAPrivateKey, pki: Pki) -> TlsError:
    """Our TLS error for a QuickFIX acceptor whose certificate another CA issued; checks that
    QuickFIX saw no Logon and that the right CA does pass (the trust check failed, not TLS)."""
    key_id = next(_KEY_IDS)
    async with quickfix_acceptor(tmp_path, "KalshiRT", key_id, key, tls=pki.server) as qf:
        with pytest.raises(TlsError) as refused:
            await open_transport("127.0.0.1", qf.port, tls=True, ca_file=pki.wrong_ca_file)
        assert qf.app.admin_in == [] and not qf.logged_on()
        stream = await open_transport("127.0.0.1", qf.port, tls=True, ca_file=pki.ca_file)
        await stream.aclose()
    return refused.value


@pytest.mark.usefixtures("quickfix_ssl")
async def test_client_refuses_a_certificate_from_another_ca(
    tmp_path: Path, key: rsa.RSAPrivateKey, pki: Pki
) -> None:
    error = await _refused_by_wrong_ca(tmp_path, key, pki)
    assert re.search(r"TLS: the certificate of 127\.0\.0\.1:\d+ is not trusted by ", str(error))


@pytest.mark.usefixtures("quickfix_ssl")
async def test_client_wrong_ca_error_names_the_ca_file(
    tmp_path: Path, key: rsa.RSAPrivateKey, pki: Pki
) -> None:
    error = await _refused_by_wrong_ca(tmp_path, key, pki)
    assert f"not trusted by ca_file {pki.wrong_ca_file}" in str(error), str(error)


# ----------------------------------------------------------------------- QF initiator, our gateway
def _qf_order(sid: Any, clordid: str, price: int) -> None:
    """A QuickFIX initiator's limit buy of one contract at ``price`` cents."""
    msg = fix.Message()
    msg.getHeader().setField(fix.MsgType("D"))
    for f in (fix.ClOrdID(clordid), fix.Symbol(SYMBOL), fix.Side("1"), fix.TransactTime(),
              fix.OrderQty(1), fix.OrdType("2"), fix.Price(price), fix.TimeInForce("1")):
        msg.setField(f)
    fix.Session.sendToTarget(msg, sid)


@asynccontextmanager
async def gateway(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey], *,
                  ca_out: Path | None = None) -> AsyncIterator[dict[str, int]]:
    """The simulated gateway as a process: plain TCP, or TLS (its generated CA written to
    ``ca_out``, before it lists its endpoints) when ``ca_out`` is given."""
    args = [sys.executable, "-m", "sessions.testing.cli", "--no-maintenance"]
    args += ["--plain"] if ca_out is None else ["--ca-out", str(ca_out)]
    for key_id, k in keys.items():
        pem = tmp_path / f"{key_id}.pub.pem"
        pem.write_bytes(k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        args += ["--key", f"{key_id}={pem}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        ports: dict[str, int] = {}
        assert proc.stdout is not None
        while not {"KalshiRT", "KalshiNR"} <= ports.keys():
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert line, "the gateway exited before listing its endpoints"
            name, address = line.split()
            ports[name] = int(address.rsplit(":", 1)[1])
        yield ports
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait)


@pytest.mark.parametrize("endpoint", ["KalshiRT", "KalshiNR"])
async def test_quickfix_initiator_against_gateway(
    tmp_path: Path, key: rsa.RSAPrivateKey, endpoint: str
) -> None:
    key_id = next(_KEY_IDS)
    async with gateway(tmp_path, {key_id: key}) as ports, trio.open_nursery() as nursery:
        relay = Relay(ports[endpoint])
        await nursery.start(relay.run)
        app = Recorder(sign=key)
        _KEEP.append(app)
        settings = _write_config(tmp_path, role="initiator", port=relay.port, session={
            "SenderCompID": key_id, "TargetCompID": endpoint, "HeartBtInt": "4",
            # KalshiNR refuses a Logon without ResetSeqNumFlag=Y (REFERENCE §1.2).
            "ResetOnLogon": "Y" if endpoint == "KalshiNR" else "N",
        })
        engine = fix.ThreadedSocketInitiator(app, fix.FileStoreFactory(settings), settings)
        engine.start()
        try:
            sid = fix.SessionID("FIXT.1.1", key_id, endpoint)

            def qf() -> Any:
                return fix.Session.lookupSession(sid)

            await _until(lambda: bool(qf().isLoggedOn()), "logged on to the gateway", 10)

            def order(clordid: str, price: int) -> None:
                _qf_order(sid, clordid, price)

            if endpoint == "KalshiRT":
                relay.drop_next("s2c", lambda m: _field(m, 35) == b"8")
            order("o1", 41)  # rests: PendingNew and New
            if endpoint == "KalshiRT":
                await _until(lambda: relay.dropped("s2c") == 1, "o1's first report dropped")
            else:
                await _until(lambda: app.clordids() == ["o1", "o1"], "o1's two reports")
            order("o2", 42)
            # Two reports per resting order (PendingNew, New); on RT o1's come back by resend.
            await _until(lambda: app.clordids() == ["o1", "o1", "o2", "o2"], "four reports")
            if endpoint == "KalshiRT":
                assert relay.types("c2s").count(b"2") == 1
            assert b"3" not in relay.types("c2s") and b"3" not in relay.types("s2c"), relay.dump()
            probe = fix.Message()
            probe.getHeader().setField(fix.MsgType("1"))
            probe.setField(fix.TestReqID("PROBE"))
            fix.Session.sendToTarget(probe, sid)
            await _until(lambda: any(d == "s2c" and _field(m, 112) == b"PROBE"
                                     for d, m in relay.log), "the gateway's Heartbeat")
            qf().logout("done")
            await _until(lambda: not qf().isLoggedOn(), "logged off")
            assert relay.types("c2s")[-1:] == [b"5"] and relay.types("s2c")[-1:] == [b"5"]
        finally:
            await _stop(engine)
            nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("quickfix_ssl")
async def test_quickfix_initiator_over_tls(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    key_id = next(_KEY_IDS)
    ca = tmp_path / "gateway-ca.pem"
    async with gateway(tmp_path, {key_id: key}, ca_out=ca) as ports:
        app = Recorder(sign=key)
        _KEEP.append(app)
        settings = _write_config(tmp_path, role="initiator", port=ports["KalshiNR"], session={
            "SenderCompID": key_id, "TargetCompID": "KalshiNR", "HeartBtInt": "4",
            "ResetOnLogon": "Y",
        }, defaults={
            # With a CA file QuickFIX's initiator verifies the gateway's chain (SSL_VERIFY_PEER).
            # It checks no host name (it sets none, and SNI not for an IP address); no client
            # certificate: Kalshi authenticates by the signed Logon (REFERENCE §2.2).
            "CertificationAuthoritiesFile": str(ca), "SSLProtocol": _TLS_12_UP,
        })
        engine = fix.SSLSocketInitiator(app, fix.FileStoreFactory(settings), settings)
        engine.start()
        try:
            sid = fix.SessionID("FIXT.1.1", key_id, "KalshiNR")

            def qf() -> Any:
                return fix.Session.lookupSession(sid)

            await _until(lambda: bool(qf().isLoggedOn()), "logged on to the gateway over TLS", 10)
            _qf_order(sid, "o1", 41)  # rests: PendingNew, then New
            await _until(lambda: app.clordids() == ["o1", "o1"], "o1's two reports")
            with app.lock:
                exec_types = [re.search(r"\|150=([^|]*)\|", m) for m in app.app_in]
            assert [m.group(1) if m else None for m in exec_types] == ["A", "0"], app.app_in
            assert "3" not in app.admin_in
            qf().logout("done")
            await _until(lambda: not qf().isLoggedOn(), "logged off")
            assert app.admin_in[-1:] == ["5"]  # the gateway answered the Logout
        finally:
            await _stop(engine)
