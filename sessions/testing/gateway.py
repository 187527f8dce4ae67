"""The simulated Kalshi FIX gateway: five endpoints, Kalshi's logon rules, the exchange model
behind them, the weekly maintenance window and a deterministic fault injector.

It is built on the project's own session engine in the acceptor role: each accepted connection
is a :class:`~sessions.connection.FixConnection` driven by the Trio driver
(:func:`~sessions.driver.open_fix_session`); this module only decides Logons, routes application
messages to and from :class:`~sessions.testing.exchange.Exchange`, and applies faults.

Run it in-process (tests, with an injectable clock so ``trio.testing.MockClock`` can cross a
maintenance window in milliseconds)::

    gateway = Gateway(GatewayConfig(tls=False), clock=lambda: BASE + trio.current_time())
    gateway.add_account("acct")
    gateway.add_key(key_id, "acct", public_key)
    gateway.add_market("HIGHNY-23DEC31")
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        port = gateway.ports["KalshiNR"]
        ...
        gateway.stop()

or as a process with ``kalshi-fix gateway`` (:mod:`sessions.testing.cli`), or through the pytest
fixture ``kalshi_gateway`` (:mod:`sessions.testing.pytest_plugin`).

Time: ``clock`` returns epoch seconds; it stamps SendingTime, drives the maintenance calendar and
the exchange. Fault triggers (``at=``) and the fault and wire logs use *gateway time*: seconds
since :meth:`Gateway.run` started.

Faults (:mod:`sessions.testing.faults`) fire once: a fault is attached to every matching
connection (open, or opened later) until it has fired somewhere. Byte-level kinds are applied by
:class:`~sessions.testing.faults.FaultyStream` layers under the session; STOP_HEARTBEATS and
SKIP_SEQ, FORGET_SENT and REJECT_RESEND by the gateway on the session; REJECT_LOGON, RESTART and REFUSE_CONNECTIONS by the
gateway itself. A fault injected while a connection is open counts ``after`` from that moment,
and a STALL or SLOW_READER injected then takes hold from the gateway's next read (the read
already waiting completes normally).

The wire log has one record per FIX message (bytes that are no message get records of their
own), stamped with the gateway time of the read or write that completed it: how two messages
written at the same instant are split into reads depends on task scheduling, and a log that
must repeat from run to run cannot depend on that.

Simplifications: messages for a key that is offline are not kept for a later resend (only what
was sent on a session can be resent; the drop copy is the way back to lost executions); a
ResendRequest reaching past the retention period is gap-filled rather than rejected.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import tags as T
from ..connection import FixConnection, State
from ..driver import FixSession, open_fix_session
from ..errors import ConfigError, LocalProtocolError
from ..events import (
    ApplicationMessage,
    Event,
    LoggedOn,
    LogonRequested,
    SessionEnded,
)
from ..maintenance import KALSHI_MAINTENANCE, MaintenanceCalendar, Window
from ..message import FixMessage
from ..settings import LogonRefusal
from ..signature import load_public_key
from ..store import MemoryStore
from ..tags import SessionRejectReason
from .endpoints import ENDPOINTS, EndpointSpec, acceptor_settings, endpoint_spec
from .exchange import Exchange, ExchangeConfig, ExecRecord, LogonFlags, Outbound
from .faults import Fault, FaultKind, FaultLog, FaultPlan, FaultyStream, WireLog
from .logon_check import ApiKey, check_logon
from .tls import GatewayTls

__all__ = [
    "ConnectionRecord",
    "Gateway",
    "GatewayConfig",
    "MAINTENANCE_TEXT",
    "open_gateway",
]

Clock = Callable[[], float]
_K = FaultKind

#: Logout text for sessions ended by the maintenance window (a logon refused during it gets the
#: same wording with the end time; REFERENCE §1.6).
MAINTENANCE_TEXT = "Exchange closed for scheduled maintenance"

# Kalshi's own tags (REFERENCE Appendix B, §2.1). Any tag from 5000 up that is not one of these is
# not in Kalshi's dictionary and gets Reject 373=3 "Undefined tag received" (the documented example,
# §3.4). Standard FIX tags below 5000 are left to the exchange model's field checks.
_KALSHI_TAGS = frozenset(
    {8013, 20105, 20106, 20107, 20108, 20109, 20110, 20126, 20127, 20130, 20131, 20132}
    | set(range(20180, 20188))
    | {20200}
    | set(range(21001, 21017))
    | set(range(21022, 21028))
    | {21030, 21031}
)
_FIRST_CUSTOM_TAG = 5000
_REJECT = T.MsgType.REJECT
# A ResendRequest's answer and the messages behind it are kept this long at most (20200 ≤ 72 h).
_MAX_RETENTION_S = 72 * 3600.0
_DEFAULT_RETENTION_H = 24
# How often a retransmitting store is pruned to the session's MessageRetentionPeriod.
_PRUNE_INTERVAL = 60.0
# Messages encoded between two chances for the session's writer to send them (a drop-copy
# replay's chunks; ~250 bytes a report, so a chunk is a few dozen kilobytes).
_ROUTE_CHUNK = 256


def _default_ports() -> dict[str, int]:
    return {name: 0 for name in ENDPOINTS}


def _ports(value: Mapping[str, int]) -> Mapping[str, int]:
    out: dict[str, int] = {}
    for name, port in dict(value).items():
        endpoint_spec(name)  # raises ConfigError naming the valid endpoints
        if type(port) is not int or not 0 <= port <= 65535:
            raise ConfigError(f"port of {name} must be 0..65535 (0 = any free port), got {port!r}")
        out[name] = port
    if not out:
        raise ConfigError("the gateway needs at least one endpoint to serve")
    return out


def _plan(value: FaultPlan | Iterable[Fault | str]) -> FaultPlan:
    if isinstance(value, FaultPlan):
        return value
    items = list(value)
    faults = [f for f in items if isinstance(f, Fault)]
    specs = [s for s in items if isinstance(s, str)]
    return FaultPlan((*faults, *FaultPlan.parse(specs).faults))


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """How the gateway listens and behaves. Accounts, keys and markets are added on the
    :class:`Gateway` (or from a config file by :mod:`sessions.testing.cli`)."""

    host: str = "127.0.0.1"
    #: Endpoint → port (0 = chosen by the OS). Only the endpoints listed are served.
    ports: Mapping[str, int] = attrs.field(factory=_default_ports, converter=_ports)
    #: TLS as Kalshi requires (REFERENCE §1.5); ``False`` serves plain TCP.
    tls: bool = True
    #: Certificate and key to serve; generated on the fly (a throw-away CA) when ``None``.
    tls_material: GatewayTls | None = None
    #: Seeds the exchange's identifiers (order ids, …).
    seed: int = 0
    #: Faults of the run, from a plan, :class:`Fault` objects or command-line specs.
    faults: FaultPlan = attrs.field(factory=FaultPlan, converter=_plan)
    maintenance: MaintenanceCalendar = KALSHI_MAINTENANCE
    #: The older reading of §1.6: after each window every key must log on with 141=Y once (and
    #: the gateway forgets its sequence numbers). Default: the current pages — no reset by
    #: Kalshi, KalshiRT keeps continuity (§11 #4).
    reset_after_maintenance: bool = False
    exchange: ExchangeConfig = attrs.field(factory=ExchangeConfig)
    max_message_size: int = 65536
    logon_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    #: Keep a :class:`~sessions.testing.faults.WireLog` of every byte (tests; costs memory).
    record_wire: bool = True


@attrs.define
class ConnectionRecord:
    """One accepted connection, as the gateway saw it (for tests and diagnostics); updated
    while the connection lives."""

    connection_id: int
    endpoint: str
    opened_at: float
    key_id: str | None = None
    logged_on: bool = False
    closed_at: float | None = None
    #: Why it ended: the session's ``initiated_by`` (local/peer/error/transport), ``refused``
    #: (REFUSE_CONNECTIONS), ``tls`` (handshake failed) or ``aborted`` (RESTART / DROP).
    ended: str | None = None
    text: str | None = None


# --------------------------------------------------------------------------- fault bookkeeping
@attrs.define(eq=False)
class _Armed:
    """A fault of the plan (or injected) and whether it fired anywhere yet."""

    fault: Fault
    fired: bool = False
    #: Logons still to reject (REJECT_LOGON).
    left: int = 1


class _FiringLog(FaultLog):
    """A :class:`FaultLog` view for one fault: records go to the shared log, and the first one
    marks the fault as fired (so it is not attached to later connections)."""

    def __init__(self, shared: FaultLog, armed: _Armed) -> None:
        super().__init__()
        self._shared = shared
        self._armed = armed

    def record(self, time: float, endpoint: str, key_id: str | None, kind: FaultKind,
               detail: str) -> Any:
        self._armed.fired = True
        return self._shared.record(time, endpoint, key_id, kind, detail)


_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


# What _GatewayStore.batch hands out: a context that does nothing, shared (a generator-based
# one would cost a generator and two resumptions per inbound chunk).
_NO_ROLLBACK: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


class _GatewayStore(MemoryStore):
    """The gateway's per-(endpoint, key) store: a :class:`MemoryStore` whose ``batch`` does not
    snapshot for a rollback. MemoryStore copies every retained message on each batch (each
    inbound chunk), which a gateway keeping a day of KalshiRT traffic cannot afford; a failure
    half way through a batch here is a bug that ends the connection anyway.

    ``keep_sent=False`` (endpoints without retransmission) is MemoryStore's
    ``keep_messages=False``: sent messages are numbered but not kept, since no ResendRequest is
    ever served there."""

    def __init__(self, *, now: float, retention_s: float, keep_sent: bool = True) -> None:
        super().__init__(now=now, retention_s=retention_s, keep_messages=keep_sent)

    def batch(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        self._check_open()
        return _NO_ROLLBACK


def _count_messages(data: bytes) -> int:
    # The gateway writes well-formed messages only, and no data field, so the trailer marker
    # appears once per message.
    return data.count(b"\x0110=")


def _split_messages(buf: bytes, limit: float = math.inf) -> tuple[list[bytes], bytes]:
    """Cut the complete FIX messages off the front of ``buf``, and runs of bytes that cannot
    start one (garbage, up to the next ``8=`` after an SOH); return them and the unfinished
    tail. A message announcing more than ``limit`` bytes counts as garbage."""
    pieces: list[bytes] = []
    pos = 0
    n = len(buf)

    def garbage(at: int) -> int:
        nxt = buf.find(b"\x018=", at + 1)
        stop = n if nxt < 0 else nxt + 1
        pieces.append(buf[at:stop])
        return stop

    while pos < n:
        if not buf.startswith(b"8=", pos):
            if buf[pos:] == b"8":
                break
            pos = garbage(pos)
            continue
        soh1 = buf.find(b"\x01", pos)
        if soh1 < 0:
            if n - pos > 64:
                pos = garbage(pos)
                continue
            break
        if n - soh1 - 1 < 2:
            break
        if not buf.startswith(b"9=", soh1 + 1):
            pos = garbage(pos)
            continue
        soh2 = buf.find(b"\x01", soh1 + 3)
        if soh2 < 0:
            if n - soh1 > 16:
                pos = garbage(pos)
                continue
            break
        digits = buf[soh1 + 3 : soh2]
        if not digits.isdigit() or len(digits) > 10:
            pos = garbage(pos)
            continue
        end = soh2 + 1 + int(digits) + 7  # body, then "10=NNN<SOH>"
        if end - pos > limit:
            pos = garbage(pos)
            continue
        if end > n:
            break
        pieces.append(buf[pos:end])
        pos = end
    return pieces, buf[pos:]


def _drop_test_requests(data: bytes) -> bytes:
    """``data`` without the whole FIX messages of MsgType 1 (TestRequest) in it."""
    pieces, rest = _split_messages(data)
    return b"".join(p for p in pieces if not p.startswith(b"8=") or b"\x0135=1\x01" not in p) + rest


class _SocketBottom(trio.abc.HalfCloseableStream):
    """A plain TCP connection read and written with non-blocking system calls on its file
    descriptor, waiting for readiness only when the socket would block.

    ``trio.SocketStream`` passes through Trio's scheduler once more after every write that
    completed at once, and wraps each read and write in two context managers; with a message or
    two per read, that costs the gateway a good part of what its exchange model does. A read
    is a full checkpoint; a write honours cancellation and yields only when it has to wait (the
    session's writer task then parks anyway, until there is more to write).
    """

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self._socket = inner.socket

    def _fileno(self) -> int:
        fd = self._socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        return fd

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self._fileno(), view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._socket)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            view = view[sent:]

    def send_nowait(self, data: bytes) -> int:
        """Write what the socket takes at once; 0 when it would block or is gone (send_all
        then waits, or reports the failure)."""
        try:
            return os.write(self._fileno(), data)
        except (OSError, trio.ClosedResourceError):
            return 0

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        # A full checkpoint, as Trio's streams make (the session driver relies on it), and
        # nothing lost to a cancellation. Between messages the socket is usually empty: the
        # read comes first, and the wait for readiness is then the checkpoint (a checkpoint
        # before it cost a pass of the scheduler per message). Data read at once is returned
        # after a yield that cannot be cancelled, so it is never dropped.
        await trio.lowlevel.checkpoint_if_cancelled()
        size = 65536 if max_bytes is None else max_bytes
        waited = False
        while True:
            try:
                data = os.read(self._fileno(), size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._socket)
                waited = True
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class _WireRecorder(trio.abc.HalfCloseableStream):
    """The bottom of a connection's stack: records the bytes on the wire (plaintext side of
    TLS) in the gateway's :class:`WireLog`, one record per FIX message.

    Per message rather than per read or write: how the bytes of two messages written at the
    same instant are split into reads depends on task scheduling, not on the client, and a
    reproducible log must not depend on it (REFERENCE-free choice, documented in the gateway).
    Only in the stack when the gateway keeps a wire log.
    """

    def __init__(self, inner: trio.abc.Stream, conn: _Conn, log: WireLog, limit: int) -> None:
        self.inner = inner
        self._conn = conn
        self._log = log
        self._limit = limit
        self._pending = b""

    def _record(self, direction: str, data: bytes) -> None:
        self._log.record(
            self._conn.gateway.gateway_time(), self._conn.endpoint, self._conn.connection_id,
            direction, data,
        )

    def send_nowait(self, data: bytes) -> int:
        """Always 0 (the driver then writes through :meth:`send_all`): a write the socket
        takes only in part would split a message's record, and the log must not depend on
        that."""
        return 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        await self.inner.send_all(data)
        if data:
            pieces, rest = _split_messages(data)
            for piece in (*pieces, rest) if rest else pieces:
                self._record("out", piece)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = bytes(await self.inner.receive_some(max_bytes))
        if not data:
            if self._pending:
                self._record("in", self._pending)
                self._pending = b""
            self._record("in", b"")
            return data
        pieces, self._pending = _split_messages(self._pending + data, 2 * self._limit)
        for piece in pieces:
            self._record("in", piece)
        if len(self._pending) > 2 * self._limit:
            self._record("in", self._pending)
            self._pending = b""
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class _ConnStream(trio.abc.HalfCloseableStream):
    """The top of one connection's stream stack, the one the session driver owns.

    Fault layers injected at run time are pushed under it; it counts outbound messages for the
    session-level triggers, hides inbound TestRequests while STOP_HEARTBEATS is in force, and
    can abort the whole stack at once (RESTART).
    """

    def __init__(self, inner: trio.abc.Stream, conn: _Conn) -> None:
        self.inner: trio.abc.Stream = inner
        self._conn = conn
        self.sent_messages = 0
        self.aborted = False

    def push(self, layer: trio.abc.Stream) -> None:
        self.inner = layer

    async def abort(self) -> None:
        self.aborted = True
        await trio.aclose_forcefully(self.inner)

    def send_nowait(self, data: bytes) -> int:
        """The session driver's direct write (no task switch per answer), while nothing can
        fire on it: no session fault armed (firing one acts on the session, which is in the
        middle of a call here) and no fault layer pushed (those have no send_nowait)."""
        send = getattr(self.inner, "send_nowait", None)
        if send is None or self._conn.session_faults or self.aborted:
            return 0
        sent = int(send(data))
        if sent:
            # What went out: whole messages plus a message cut by a partial write, which the
            # rest (sent later) then no longer contains.
            self.sent_messages += _count_messages(data) - _count_messages(data[sent:])
        return sent

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        await self.inner.send_all(data)
        self.sent_messages += _count_messages(data)
        self._conn.after_send()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            data = bytes(await self.inner.receive_some(max_bytes))
            if not data or not self._conn.hiding_test_requests():
                return data
            kept = _drop_test_requests(data)
            if len(kept) != len(data):
                self._conn.gateway._record_fault(
                    self._conn.endpoint, self._conn.key_id, _K.STOP_HEARTBEATS,
                    "TestRequest from the client left unanswered",
                )
            if kept:
                return kept

    async def aclose(self) -> None:
        await self.inner.aclose()


# --------------------------------------------------------------------------- one connection
class _Conn:
    """Runtime state of one accepted connection."""

    def __init__(self, gateway: Gateway, spec: EndpointSpec, connection_id: int) -> None:
        self.gateway = gateway
        self.spec = spec
        self.endpoint = spec.name
        self.connection_id = connection_id
        self.key_id: str | None = None
        self.key: ApiKey | None = None
        self.session: FixSession | None = None
        self.stream: _ConnStream | None = None
        self.nursery: trio.Nursery | None = None
        #: Claimed the key in the registry (from an accepted Logon until the session ends).
        self.claimed = False
        self.exchange_connected = False
        self.logged_on = False
        self.retention_s = _DEFAULT_RETENTION_H * 3600.0
        self.last_prune = -math.inf
        self.hide_test_requests_until: float | None = None  # trio time
        #: Session-level faults attached here and not applied yet.
        self.session_faults: list[tuple[_Armed, int]] = []  # (fault, sent_messages at attach)
        #: Chunks of a long answer still to route (see Gateway._route_in_chunks), oldest first.
        self.backlog: deque[Sequence[Outbound]] = deque()
        #: An error raised while handling this connection's events (see Gateway._on_events).
        self.failure: Exception | None = None
        self.wait_scope: trio.CancelScope | None = None
        self.record = ConnectionRecord(connection_id, spec.name, gateway.gateway_time())

    def hiding_test_requests(self) -> bool:
        until = self.hide_test_requests_until
        return until is not None and trio.current_time() < until

    def after_send(self) -> None:
        self.gateway._session_faults_due(self)

    @property
    def active(self) -> bool:
        return self.session is not None and self.session.state is State.ACTIVE


# --------------------------------------------------------------------------- the gateway
class Gateway:
    """The simulated gateway. Configure it (``add_*``), then run :meth:`run` in a nursery."""

    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        clock: Clock | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        self.config = config or GatewayConfig()
        #: Epoch seconds; default: the real time.
        self.clock: Clock = clock or time.time
        self.exchange = exchange or Exchange(
            rng=random.Random(self.config.seed), config=self.config.exchange
        )
        #: Registered API keys by key id.
        self.keys: dict[str, ApiKey] = {}
        #: Every fault firing (gateway time).
        self.fault_log = FaultLog()
        #: Every byte exchanged with clients (``None`` unless ``record_wire``).
        self.wire_log: WireLog | None = WireLog() if self.config.record_wire else None
        #: Every connection accepted, in order.
        self.connections: list[ConnectionRecord] = []
        #: Unexpected errors caught at a connection's boundary (a bug somewhere); tests assert
        #: this stays empty.
        self.internal_errors: list[str] = []
        #: Bound address per endpoint, once :meth:`run` reported ready.
        self.addresses: dict[str, tuple[str, int]] = {}
        self.tls: GatewayTls | None = None
        if self.config.tls:
            self.tls = self.config.tls_material or GatewayTls.generate()
        self._ssl_context: ssl.SSLContext | None = None
        self._armed: list[_Armed] = [_Armed(f, left=f.count) for f in self.config.faults]
        self._live: dict[str, _Conn] = {}  # key id -> the connection holding it
        self._conns: dict[int, _Conn] = {}  # every open connection
        self._stores: dict[tuple[str, str], _GatewayStore] = {}
        self._must_reset: set[str] = set()
        self._next_connection_id = 1
        self._started_at: float | None = None
        self._maintenance: Window | None = None
        # Endpoint (None: all) -> gateway time until which connections are refused.
        self._refuse_until: dict[str | None, float] = {}
        self._exchange_wake = trio.Event()
        # The exchange deadline the timer task is waiting for (NaN, equal to nothing, until it
        # has looked): see _route.
        self._timer_deadline: float | None = math.nan
        self._maintenance_wake = trio.Event()
        self._faults_wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._handler_nursery: trio.Nursery | None = None
        self._cancel_scope: trio.CancelScope | None = None
        #: Set once every endpoint listens; :attr:`stopped` once :meth:`run` has returned.
        self.ready = trio.Event()
        self.stopped = trio.Event()
        self._connection_closed = trio.lowlevel.ParkingLot()

    # ------------------------------------------------------------------ setup
    def add_account(
        self, account_id: str, *, tier: str = "Premier", balance: Decimal | int | str | None = None
    ) -> None:
        """Create an account (see :meth:`Exchange.add_account`)."""
        self.exchange.add_account(account_id, tier=tier, balance=balance)

    def add_key(
        self,
        key_id: str,
        account_id: str,
        public_key: rsa.RSAPublicKey | str | Path,
        *,
        drop_copy: bool = True,
        endpoints: Iterable[str] | None = None,
        subaccount: int | None = None,
    ) -> ApiKey:
        """Register an API key: its public key (an RSA key or a PEM file) verifies Logons.

        ``endpoints`` limits where it may log on; ``subaccount`` makes it a restricted key (§1.8).
        """
        if key_id in self.keys:
            raise ConfigError(f"API key {key_id} is registered twice")
        key = public_key if isinstance(public_key, rsa.RSAPublicKey) else load_public_key(
            public_key, key_id
        )
        allowed = None if endpoints is None else frozenset(endpoints)
        for name in allowed or ():
            endpoint_spec(name)
        self.exchange.add_key(key_id, account_id, drop_copy=drop_copy)
        api_key = ApiKey(key_id, account_id, key, drop_copy=drop_copy, endpoints=allowed,
                         subaccount=subaccount)
        self.keys[key_id] = api_key
        return api_key

    def add_market(self, ticker: str, **kwargs: Any) -> None:
        """List a market (see :meth:`Exchange.add_market` for the options)."""
        self.exchange.add_market(ticker, **kwargs)

    def add_liquidity(self, ticker: str, side: str | int, price_cents: int | Decimal | str,
                      qty: int | Decimal | str) -> None:
        """Rest an order of the scripted liquidity provider (its fills reach the clients)."""
        self._route(self.exchange.add_liquidity(ticker, side, price_cents, qty, now=self.clock()))

    # ------------------------------------------------------------------ inspection
    @property
    def ports(self) -> dict[str, int]:
        """Bound port per endpoint (after :meth:`run` reported ready)."""
        return {name: addr[1] for name, addr in self.addresses.items()}

    def gateway_time(self) -> float:
        """Seconds since :meth:`run` started (0 before): the time of faults and logs."""
        return 0.0 if self._started_at is None else self.clock() - self._started_at

    def is_connected(self, key_id: str) -> bool:
        """Whether ``key_id`` holds a connection (a Logon accepted, session not over)."""
        return key_id in self._live

    def ground_truth(self, account_id: str) -> list[ExecRecord]:
        """Every execution the exchange generated for the account (see
        :meth:`Exchange.ground_truth`): what a client should have received."""
        return self.exchange.ground_truth(account_id)

    async def wait_idle(self) -> None:
        """Wait until every accepted connection is closed and accounted for in
        :attr:`connections` (the gateway may finish a connection after its client did)."""
        while any(r.closed_at is None for r in self.connections):
            await self._connection_closed.park()

    def in_maintenance(self) -> bool:
        """Whether the maintenance window is in force (as last applied)."""
        return self._maintenance is not None

    # ------------------------------------------------------------------ control
    def settle(self, ticker: str, result: str, **kwargs: Any) -> None:
        """Settle a market now: MarketSettlementReports go to KalshiPT (and RT with 20127=Y)."""
        self._route(self.exchange.settle_market(ticker, result, self.clock(), **kwargs))

    def inject(self, fault: Fault | str) -> None:
        """Add a fault now (a :class:`Fault` or a spec such as ``"drop:endpoint=KalshiNR"``).

        It fires once: on a matching open connection (``after`` counted from now) or, if none
        fires it, on the next matching connection.
        """
        if isinstance(fault, str):
            (fault,) = FaultPlan.parse([fault]).faults
        armed = _Armed(fault, left=fault.count)
        self._armed.append(armed)
        if fault.kind in Fault.GATEWAY_LEVEL:
            self._faults_wake.set()
            return
        for conn in list(self._conns.values()):
            self._attach(conn, armed, live=True)

    def restart(self) -> None:
        """Restart now: every connection is cut, session state (sequence numbers, stored
        messages) is lost; the exchange (orders, executions) is kept."""
        self._restart("requested")

    def set_maintenance(self, calendar: MaintenanceCalendar) -> None:
        """Replace the maintenance calendar (e.g. add an ad-hoc window) while running."""
        self.config = attrs.evolve(self.config, maintenance=calendar)
        self._maintenance_wake.set()

    def stop(self) -> None:
        """Stop serving: sessions are logged out gracefully, then :meth:`run` returns."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    # ------------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on every configured endpoint and serve until cancelled or :meth:`stop`.

        Reports ready (``task_status.started(self)``, :attr:`ready`) once every port is bound.
        """
        self._started_at = self.clock()
        if self.tls is not None:
            self._ssl_context = self.tls.server_context()
        listeners: dict[str, list[trio.SocketListener]] = {}
        try:
            for name, port in self.config.ports.items():
                try:
                    listeners[name] = await trio.open_tcp_listeners(port, host=self.config.host)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot listen for {name} on {self.config.host}:{port}: "
                        f"{exc.strerror or exc}"
                    ) from None
                sockname = listeners[name][0].socket.getsockname()
                self.addresses[name] = (self.config.host, int(sockname[1]))
            with trio.CancelScope() as self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    async with trio.open_nursery() as handlers:
                        self._handler_nursery = handlers
                        for name, ls in listeners.items():
                            await nursery.start(
                                functools.partial(
                                    trio.serve_listeners, handler_nursery=handlers
                                ),
                                self._handler(name),
                                ls,
                            )
                        nursery.start_soon(self._exchange_timer)
                        nursery.start_soon(self._maintenance_loop)
                        nursery.start_soon(self._gateway_faults)
                        self.ready.set()
                        task_status.started(self)
                        await trio.sleep_forever()
        finally:
            for ls in listeners.values():
                for listener in ls:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(listener)
            self.stopped.set()

    def _handler(self, endpoint: str) -> Callable[[trio.abc.Stream], Any]:
        async def handle(stream: trio.abc.Stream) -> None:
            await self._serve_connection(endpoint, stream)

        return handle

    def connect_memory(self, endpoint: str) -> trio.abc.Stream:
        """A client stream to ``endpoint`` over memory instead of TCP (no TLS): the gateway
        serves it exactly like an accepted socket. Needs :meth:`run` to be running."""
        if self._handler_nursery is None:
            raise LocalProtocolError("the gateway is not running; start Gateway.run first")
        spec = endpoint_spec(endpoint)
        client, server = trio.testing.memory_stream_pair()
        self._handler_nursery.start_soon(self._serve_connection, spec.name, server, False)
        return client

    def memory_connector(self) -> Callable[..., Any]:
        """A ``connect`` hook for the supervision tree that dials :meth:`connect_memory`
        instead of TCP; everything above the byte stream is the production path."""

        @asynccontextmanager
        async def connect(
            cfg: Any, *, store: Any, signer: Any, clock: Any
        ) -> AsyncIterator[FixSession]:
            from ..driver import build_settings

            stream = self.connect_memory(cfg.profile.name)
            connection = FixConnection(build_settings(cfg, signer.sign), store)
            async with open_fix_session(
                stream, connection, clock=clock, peer_name=cfg.name
            ) as session:
                yield session

        return connect

    # ------------------------------------------------------------------ one connection
    async def _serve_connection(
        self, endpoint: str, stream: trio.abc.Stream, tls: bool = True
    ) -> None:
        spec = ENDPOINTS[endpoint]
        cid = self._next_connection_id
        self._next_connection_id += 1
        conn = _Conn(self, spec, cid)
        record = conn.record
        self.connections.append(record)
        if self._refusing(endpoint):
            self._record_fault(endpoint, None, _K.REFUSE_CONNECTIONS, f"connection {cid} refused")
            record.closed_at, record.ended = self.gateway_time(), "refused"
            self._connection_closed.unpark_all()
            await trio.aclose_forcefully(stream)
            return
        try:
            if tls and self._ssl_context is not None:
                ssl_stream = trio.SSLStream(stream, self._ssl_context, server_side=True)
                shaken = False
                with trio.move_on_after(self.config.tls_handshake_timeout):
                    try:
                        await ssl_stream.do_handshake()
                        shaken = True
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                if not shaken:
                    # Plain TCP spoken to a TLS port (or a handshake that never finished): the
                    # client sees the connection fail, as at Kalshi (REFERENCE §1.5).
                    record.closed_at, record.ended = self.gateway_time(), "tls"
                    await trio.aclose_forcefully(ssl_stream)
                    return
                stream = ssl_stream
            await self._run_session(conn, stream)
        except Exception as exc:  # noqa: BLE001
            # Whatever one connection does must not take the gateway (and every other client)
            # down: a client going away is normal; anything else is a bug, recorded and confined
            # to this connection (tests assert internal_errors stays empty).
            for leaf in _leaves(exc):
                if not isinstance(leaf, _TRANSPORT_ERRORS):
                    self.internal_errors.append(
                        f"connection {cid} ({endpoint}): {type(leaf).__name__}: {leaf}"
                    )
        finally:
            self._conns.pop(cid, None)
            self._release(conn)
            if record.ended is None:
                ended = conn.session.ended if conn.session is not None else None
                aborted = conn.stream is not None and conn.stream.aborted
                record.closed_at = self.gateway_time()
                record.ended = (
                    "aborted" if aborted else (ended.initiated_by if ended else "transport")
                )
                record.text = ended.text if ended else None
            self._connection_closed.unpark_all()

    async def _run_session(self, conn: _Conn, stream: trio.abc.Stream) -> None:
        if type(stream) is trio.SocketStream:
            stream = _SocketBottom(stream)
        base: trio.abc.Stream = stream
        if self.wire_log is not None:
            # Without a wire log the recorder would only pass every read and write through: a
            # layer (a coroutine per read) less.
            base = _WireRecorder(stream, conn, self.wire_log, self.config.max_message_size)
        conn.stream = _ConnStream(base, conn)
        settings = attrs.evolve(
            acceptor_settings(
                conn.spec,
                max_message_size=self.config.max_message_size,
                logon_timeout=self.config.logon_timeout,
            ),
            # The core answers a reset Logon on a logged-on session itself; Kalshi checks every
            # Logon (REFERENCE §2.2: each is signed), so that one goes through the check too.
            review_reset_logon=functools.partial(self._review_reset_logon, conn),
        )
        connection = FixConnection(settings)
        self._conns[conn.connection_id] = conn
        async with trio.open_nursery() as nursery:
            conn.nursery = nursery
            for armed in list(self._armed):
                self._attach(conn, armed, live=False)
            async with open_fix_session(
                conn.stream, connection, clock=self.clock,
                peer_name=f"{conn.endpoint} connection {conn.connection_id}",
            ) as session:
                conn.session = session
                with trio.CancelScope() as conn.wait_scope:
                    # Events are handled by the task that caused them (the session's reader,
                    # for what arrives), as they come: no task switch per read between decoding
                    # and the exchange.
                    session.hand_events_to(functools.partial(self._on_events, conn))
                    await session.wait_finished()
                if conn.failure is not None:
                    raise conn.failure  # ends the session here, as if raised by this task
            nursery.cancel_scope.cancel()  # fault timers and backlog of this connection

    def _on_events(self, conn: _Conn, events: list[Event]) -> None:
        for event in events:
            if conn.failure is not None:
                return  # the connection is ending on an error: nothing more is handled
            try:
                if isinstance(event, ApplicationMessage):
                    self._on_application(conn, event)
                else:
                    self._on_event(conn, event)
            except Exception as exc:  # noqa: BLE001
                # The session's driver calls this from its own tasks and must not see it raise:
                # the connection's task raises it instead (see _run_session).
                conn.failure = exc
                if conn.wait_scope is not None:
                    conn.wait_scope.cancel()

    def _on_event(self, conn: _Conn, event: Event) -> None:
        if isinstance(event, LogonRequested):
            self._on_logon(conn, event)
        elif isinstance(event, LoggedOn):
            conn.logged_on = conn.record.logged_on = True
            self._session_faults_due(conn)
        elif isinstance(event, SessionEnded):
            self._release(conn)

    # ------------------------------------------------------------------ logon
    def _on_logon(self, conn: _Conn, event: LogonRequested) -> None:
        session = conn.session
        assert session is not None
        key_id = event.sender_comp_id
        conn.record.key_id = key_id  # as claimed; conn.key_id only once the Logon is accepted
        now = self.clock()
        for armed in self._armed:
            f = armed.fault
            if (
                f.kind is _K.REJECT_LOGON and armed.left > 0
                and (f.at is None or self.gateway_time() >= f.at)
                and f.matches(conn.endpoint, key_id)
            ):
                armed.left -= 1
                armed.fired = True
                text = f.text or "Logon rejected"
                self._record_fault(conn.endpoint, key_id, f.kind, f"Logon refused: {text!r}")
                session.reject_logon(text)
                return
        decision = check_logon(
            event.message,
            conn.spec,
            self.keys,
            maintenance=self._maintenance,
            busy=self.is_connected,
            reset_required=key_id in self._must_reset,
        )
        if not decision.accepted:
            assert decision.text is not None
            session.reject_logon(
                decision.text,
                session_reject_reason=decision.session_reject_reason,
                ref_tag=decision.ref_tag,
            )
            return
        assert decision.key is not None and decision.options is not None
        conn.key_id = conn.record.key_id = key_id
        conn.key = decision.key
        conn.claimed = True
        self._live[key_id] = conn
        self._must_reset.discard(key_id)
        hours = decision.options.message_retention_period or _DEFAULT_RETENTION_H
        conn.retention_s = hours * 3600.0
        store = self._store(conn.endpoint, key_id, now)
        store.prune(now - conn.retention_s)
        conn.last_prune = now
        # The exchange learns of the session before any message behind the Logon is handled.
        self.exchange.connect(key_id, conn.endpoint, LogonFlags.from_logon(event.message), now)
        conn.exchange_connected = True
        session.accept_logon(store=store)

    def _review_reset_logon(self, conn: _Conn, logon: FixMessage) -> LogonRefusal | None:
        """Kalshi's Logon check, the one a first Logon gets (signature, CompIDs, tags,
        maintenance), for a Logon with ResetSeqNumFlag=Y on ``conn``'s logged-on session; a
        refusal is answered as the refused first Logon would be. The key is held by this very
        connection, so it does not count as busy; the core has already checked the CompIDs
        and SendingTime against the session."""
        decision = check_logon(
            logon,
            conn.spec,
            self.keys,
            maintenance=self._maintenance,
            busy=lambda key_id: self._live.get(key_id, conn) is not conn,
        )
        return decision.refusal()

    def _store(self, endpoint: str, key_id: str, now: float) -> _GatewayStore:
        store = self._stores.get((endpoint, key_id))
        if store is None:
            store = _GatewayStore(
                now=now, retention_s=_MAX_RETENTION_S,
                keep_sent=ENDPOINTS[endpoint].retransmission,
            )
            self._stores[(endpoint, key_id)] = store
        return store

    def _release(self, conn: _Conn) -> None:
        """The connection's session is over: free its key and tell the exchange."""
        if conn.claimed and conn.key_id is not None:
            conn.claimed = False
            if self._live.get(conn.key_id) is conn:
                del self._live[conn.key_id]
        if conn.exchange_connected and conn.key_id is not None:
            conn.exchange_connected = False
            self._route(self.exchange.disconnect(conn.key_id, self.clock()))

    # ------------------------------------------------------------------ application traffic
    def _on_application(self, conn: _Conn, event: ApplicationMessage) -> None:
        if conn.key_id is None or not conn.exchange_connected:
            return
        msg = event.message
        # The largest tag first (one pass in C): nearly every message has no custom tag at all,
        # and only one that has needs the scan for the first undefined one in wire order.
        if max(msg.pairs, default=(0, b""))[0] >= _FIRST_CUSTOM_TAG:
            for tag, _ in msg.pairs:
                if tag >= _FIRST_CUSTOM_TAG and tag not in _KALSHI_TAGS:
                    self._send_reject(
                        conn, event.seq_num, msg.msg_type, SessionRejectReason.UNDEFINED_TAG,
                        "Undefined tag received", tag,
                    )
                    return
        outbound = self.exchange.handle(conn.key_id, msg, event.seq_num, self.clock())
        self._route_in_chunks(conn, outbound)

    def _send_reject(
        self, conn: _Conn, ref_seq: int, ref_msg_type: bytes | None, reason: int | None,
        text: str, ref_tag: int | None,
    ) -> None:
        if conn.session is None or not conn.active:
            return
        conn.session.send_reject(
            ref_seq, reason, text, ref_tag=ref_tag, ref_msg_type=ref_msg_type
        )

    def _route_in_chunks(self, conn: _Conn, outbound: Sequence[Outbound]) -> None:
        """:meth:`_route` the answer to one of ``conn``'s messages, a chunk at a time when it is
        long, letting the session's writer put each chunk on the wire before the next is
        encoded.

        A drop-copy replay answers one EventResendRequest with up to tens of thousands of
        reports; encoded all at once, the client would wait for the last before it got the
        first. The first chunk goes at once, the rest from a task of the connection with a
        checkpoint between chunks; an answer to a later message of the connection waits behind
        them, so the order on the wire is that of the requests. Only checkpoints separate the
        chunks: the clock (a MockClock in tests) does not move, and an answer that fits in one
        chunk (nearly every answer) goes out at once.
        """
        if not conn.backlog and len(outbound) <= _ROUTE_CHUNK:
            self._route(outbound)
            return
        start = 0
        if not conn.backlog:
            self._route(outbound[:_ROUTE_CHUNK])
            start = _ROUTE_CHUNK
            assert conn.nursery is not None
            conn.nursery.start_soon(self._route_backlog, conn)
        for i in range(start, len(outbound), _ROUTE_CHUNK):
            conn.backlog.append(outbound[i : i + _ROUTE_CHUNK])

    async def _route_backlog(self, conn: _Conn) -> None:
        while conn.backlog:
            await trio.lowlevel.checkpoint()
            self._route(conn.backlog.popleft())

    def _route(self, outbound: Sequence[Outbound]) -> None:
        """Send the exchange's messages to the sessions of their keys (dropped if offline:
        the drop copy is how a client recovers executions it missed)."""
        live = self._live
        i, n = 0, len(outbound)
        while i < n:
            out = outbound[i]
            key_id = out.key_id
            conn = live.get(key_id)
            if out.msg_type == _REJECT:
                i += 1
                if conn is None or conn.session is None or conn.session.state is not State.ACTIVE:
                    continue
                ref_seq = out.get(T.REF_SEQ_NUM)
                reason = out.get(T.SESSION_REJECT_REASON)
                tag = out.get(T.REF_TAG_ID)
                self._send_reject(
                    conn,
                    int(ref_seq) if ref_seq and ref_seq.isdigit() else 0,
                    out.get(T.REF_MSG_TYPE),
                    int(reason) if reason and reason.isdigit() else None,
                    (out.get(T.TEXT) or b"").decode("latin-1"),
                    int(tag) if tag and tag.isdigit() else None,
                )
                continue
            # The run of application messages to this key (an order's reports) goes to its
            # session in one call: one pass through the session's driver instead of one each.
            j = i + 1
            while j < n and outbound[j].key_id == key_id and outbound[j].msg_type != _REJECT:
                j += 1
            run = outbound[i:j]
            i = j
            if conn is None or conn.session is None or conn.session.state is not State.ACTIVE:
                continue
            if conn.spec.retransmission:
                self._maybe_prune(conn)
            try:
                conn.session.send_app_many([(o.msg_type, o.body) for o in run])
            except LocalProtocolError:
                # The session ended between the check and the send (sending application
                # messages does not change its state, so the rest of the run would fail too).
                continue
        # Wake the timer task only when the exchange's next deadline is no longer the one it
        # waits for: most messages set no timer, and a wake-up costs a task switch each.
        if self.exchange.next_deadline() != self._timer_deadline:
            self._exchange_wake.set()

    def _maybe_prune(self, conn: _Conn) -> None:
        if conn.key_id is None or not conn.spec.retransmission:
            return  # without retransmission the store keeps no message (see _GatewayStore)
        now = self.clock()
        if now - conn.last_prune < _PRUNE_INTERVAL:
            return
        conn.last_prune = now
        store = self._stores.get((conn.endpoint, conn.key_id))
        if store is not None:
            store.prune(now - conn.retention_s)

    # ------------------------------------------------------------------ background tasks
    async def _sleep_until_epoch(self, when: float, wake: trio.Event) -> None:
        """Sleep until the injectable clock reads ``when`` (or ``wake`` is set)."""
        with trio.move_on_after(max(0.0, when - self.clock())):
            await wake.wait()

    async def _exchange_timer(self) -> None:
        while True:
            wake = self._exchange_wake = trio.Event()
            deadline = self._timer_deadline = self.exchange.next_deadline()
            if deadline is None:
                await wake.wait()
                continue
            if deadline > self.clock():
                await self._sleep_until_epoch(deadline, wake)
                if wake.is_set():
                    continue
            self._route(self.exchange.tick(self.clock()))
            if self.exchange.next_deadline() == deadline and deadline <= self.clock():
                # A timer the exchange does not clear when run would spin this loop for ever;
                # report it and wait for the next change instead.
                error = f"exchange timer at {deadline} did not clear"
                if error not in self.internal_errors:
                    self.internal_errors.append(error)
                wake = self._exchange_wake = trio.Event()
                await wake.wait()
            await trio.lowlevel.checkpoint()

    async def _maintenance_loop(self) -> None:
        while True:
            wake = self._maintenance_wake = trio.Event()
            now = self.clock()
            calendar = self.config.maintenance
            window = calendar.window_at(now)
            if window is not None and self._maintenance is None:
                self._enter_maintenance(window)
            elif window is None and self._maintenance is not None:
                self._leave_maintenance()
            elif window is not None:
                self._maintenance = window  # a merged window may have grown
            change = calendar.next_change(now)
            if change is None:
                await wake.wait()
            else:
                await self._sleep_until_epoch(change, wake)
                # Float rounding could wake us a hair early: never spin on the same boundary.
                if not wake.is_set() and self.clock() < change:
                    await trio.sleep(max(change - self.clock(), 1e-6))

    def _enter_maintenance(self, window: Window) -> None:
        self._maintenance = window
        now = self.clock()
        self._route(self.exchange.set_trading_pause(True, now))
        assert self._nursery is not None
        for conn in list(self._conns.values()):
            if conn.session is not None and not conn.session.finished:
                self._nursery.start_soon(conn.session.logout, MAINTENANCE_TEXT)

    def _leave_maintenance(self) -> None:
        self._maintenance = None
        self._route(self.exchange.set_trading_pause(False, self.clock()))
        if self.config.reset_after_maintenance:
            # Older reading (REFERENCE §1.6): everyone starts again at 1 after the window.
            self._must_reset.update(self.keys)
            self._stores.clear()

    # ------------------------------------------------------------------ faults
    def _record_fault(self, endpoint: str, key_id: str | None, kind: FaultKind,
                      detail: str) -> None:
        self.fault_log.record(self.gateway_time(), endpoint, key_id, kind, detail)

    def _refusing(self, endpoint: str) -> bool:
        now = self.gateway_time()
        return any(
            now < self._refuse_until.get(name, -math.inf) for name in (None, endpoint)
        )

    def _attach(self, conn: _Conn, armed: _Armed, *, live: bool) -> None:
        """Put an unfired fault on a connection (byte level: a FaultyStream layer)."""
        f = armed.fault
        if armed.fired or (f.endpoint is not None and f.endpoint != conn.endpoint):
            return
        if f.kind in Fault.SESSION_LEVEL:
            assert conn.stream is not None
            conn.session_faults.append((armed, conn.stream.sent_messages))
            if live or f.at is not None or f.after_messages is None:
                self._session_faults_due(conn)
            if f.at is not None and conn.nursery is not None:
                conn.nursery.start_soon(self._session_fault_timer, conn, f.at)
            return
        if f.kind not in Fault.BYTE_LEVEL or conn.stream is None or conn.nursery is None:
            return
        layer = FaultyStream(
            conn.stream.inner, (f,), endpoint=conn.endpoint, connection_id=conn.connection_id,
            clock=self.gateway_time, fault_log=_FiringLog(self.fault_log, armed),
            key_id=lambda: conn.key_id,
        )
        conn.stream.push(layer)
        conn.nursery.start_soon(layer.run_timers)

    async def _session_fault_timer(self, conn: _Conn, at: float) -> None:
        await trio.sleep(max(0.0, at - self.gateway_time()))
        self._session_faults_due(conn)

    def _session_faults_due(self, conn: _Conn) -> None:
        if not conn.session_faults or conn.stream is None:
            return
        now = self.gateway_time()
        keep: list[tuple[_Armed, int]] = []
        for armed, base in conn.session_faults:
            f = armed.fault
            due = (
                conn.logged_on and conn.active
                and (f.after_messages is None
                     or conn.stream.sent_messages - base >= f.after_messages)
                and (f.at is None or now >= f.at)
                and (f.key_id is None or f.key_id == conn.key_id)
            )
            if armed.fired:
                continue
            if not due:
                keep.append((armed, base))
                continue
            armed.fired = True
            self._apply_session_fault(conn, f)
        conn.session_faults = keep

    def _apply_session_fault(self, conn: _Conn, fault: Fault) -> None:
        session = conn.session
        assert session is not None
        if fault.kind is _K.SKIP_SEQ:
            store = session.connection.store
            assert store is not None
            before = store.next_sender_seq
            store.set_next_sender_seq(before + fault.count)
            self._record_fault(
                conn.endpoint, conn.key_id, fault.kind,
                f"MsgSeqNum {before}..{before + fault.count - 1} skipped",
            )
        elif fault.kind is _K.FORGET_SENT:
            store = session.connection.store
            assert store is not None
            # Pruning "older than infinity" drops every kept message: a ResendRequest for any
            # of them is gap-filled, the gateway's answer past the retention period.
            forgotten = store.prune(math.inf)
            self._record_fault(
                conn.endpoint, conn.key_id, fault.kind,
                f"{forgotten} sent messages forgotten (a resend of them is gap-filled)",
            )
        elif fault.kind is _K.REJECT_RESEND:
            store = session.connection.store
            assert store is not None
            floor = session.connection.resend_floor = store.next_sender_seq
            self._record_fault(
                conn.endpoint, conn.key_id, fault.kind,
                f"a ResendRequest from below MsgSeqNum {floor} is rejected",
            )
        elif fault.kind is _K.STOP_HEARTBEATS:
            duration = fault.duration
            conn.hide_test_requests_until = (
                math.inf if duration is None else trio.current_time() + duration
            )
            session.pause_timers(duration)
            span = "the rest of the connection" if duration is None else f"{duration}s"
            self._record_fault(
                conn.endpoint, conn.key_id, fault.kind,
                f"no Heartbeats or TestRequest answers for {span}",
            )

    async def _gateway_faults(self) -> None:
        """Apply RESTART and REFUSE_CONNECTIONS when their time comes."""
        while True:
            wake = self._faults_wake = trio.Event()
            now = self.gateway_time()
            next_at: float | None = None
            for armed in self._armed:
                f = armed.fault
                if armed.fired or f.kind not in (_K.RESTART, _K.REFUSE_CONNECTIONS):
                    continue
                if f.at is None or now >= f.at:
                    armed.fired = True
                    if f.kind is _K.RESTART:
                        self._restart("fault")
                    else:
                        duration = f.duration or 0.0
                        until = max(self._refuse_until.get(f.endpoint, -math.inf), now + duration)
                        self._refuse_until[f.endpoint] = until
                        self._record_fault(
                            f.endpoint or "*", None, f.kind,
                            f"connections refused for {duration}s",
                        )
                elif next_at is None or f.at < next_at:
                    next_at = f.at
            if next_at is None:
                await wake.wait()
            else:
                with trio.move_on_after(max(0.0, next_at - self.gateway_time())):
                    await wake.wait()

    def _restart(self, why: str) -> None:
        self._record_fault(
            "*", None, _K.RESTART,
            f"{why}: {len(self._conns)} connection(s) cut, session state dropped",
        )
        self._stores.clear()
        assert self._nursery is not None
        for conn in list(self._conns.values()):
            if conn.stream is not None:
                self._nursery.start_soon(conn.stream.abort)


@asynccontextmanager
async def open_gateway(
    config: GatewayConfig | None = None,
    *,
    clock: Clock | None = None,
    exchange: Exchange | None = None,
    setup: Callable[[Gateway], None] | None = None,
) -> AsyncIterator[Gateway]:
    """Run a :class:`Gateway` for the duration of the block (``setup`` adds accounts, keys and
    markets before it listens); on exit it stops and logs everyone out."""
    gateway = Gateway(config, clock=clock, exchange=exchange)
    if setup is not None:
        setup(gateway)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        try:
            yield gateway
        finally:
            gateway.stop()
