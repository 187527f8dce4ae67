"""A deterministic model of the Kalshi exchange behind the simulated FIX gateway.

The network part of the simulator (TCP/TLS, logon checks, sequence numbers, fault injection on the
wire) lives elsewhere and drives this model: it tells the :class:`Exchange` which API keys are
logged on to which endpoint (:meth:`Exchange.connect` / :meth:`Exchange.disconnect`), passes every
application message in (:meth:`Exchange.handle`), calls :meth:`Exchange.tick` when
:meth:`Exchange.next_deadline` comes, and sends the :class:`Outbound` messages it gets back.

The model is pure: no I/O, no clock reads (every call takes ``now`` as epoch seconds), no
randomness except from the injected :class:`random.Random` (which only mints identifiers). The same
calls in the same order give the same messages, byte for byte.

What it covers (REFERENCE §4–§10): order entry with the report sequences of §4.7, cancel/replace
and their rejects (§4.8), mass cancel (§4.9), business rejects (§4.10), order groups (§5), the
drop copy (§6), listener sessions (§7), settlement reports (§8), the RFQ lifecycle (§9, in
:mod:`sessions.testing.rfq`) and the token-bucket rate limits (§10.1, in
:mod:`sessions.testing.ratelimit`). Choices made where the reference says UNCONFIRMED are noted
next to the code that makes them.

Example::

    ex = Exchange(rng=random.Random(7))
    ex.add_account("acct")
    ex.add_key("key-1", "acct")
    ex.add_market("HIGHNY-23DEC31")
    ex.add_liquidity("HIGHNY-23DEC31", "sell", 60, 10)
    ex.connect("key-1", "KalshiNR", LogonFlags(skip_pending_exec_reports=True), now=0.0)
    out = ex.handle("key-1", FixMessage([(35, "D"), (11, "c1"), (38, 5), (40, 2), (44, 60),
                                         (54, 1), (55, "HIGHNY-23DEC31"), (59, 1)]), 2, now=1.0)
    # out[0]: 35=8 150=F 39=2 ... to key-1
"""

from __future__ import annotations

import bisect
import datetime as _dt
import heapq
import random
import re
from collections import deque
from collections.abc import Callable, Mapping
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

import attrs

from ..errors import ConfigError, KalshiFixError, LocalProtocolError
from ..message import FixMessage, parse_utc_timestamp, utc_timestamp
from .orderbook import (
    BUY,
    CENT,
    ONE,
    SELL,
    ZERO,
    Order,
    OrderBook,
    ceil_cents,
    fmt_money,
    fmt_qty,
    price_printer,
)
from .ratelimit import WRITE, RateLimiter, check_tier

if TYPE_CHECKING:  # pragma: no cover
    from ..logon import LogonOptions

__all__ = [
    "DC",
    "ENDPOINTS",
    "LIQUIDITY_ACCOUNT",
    "NR",
    "PT",
    "RFQ",
    "RT",
    "ExchangeConfig",
    "ExecRecord",
    "Exchange",
    "LogonFlags",
    "Outbound",
    "render_execution_report",
]

NR = "KalshiNR"
DC = "KalshiDC"
RT = "KalshiRT"
PT = "KalshiPT"
RFQ = "KalshiRFQ"
#: Endpoints (TargetCompIDs) the model knows, in port order.
ENDPOINTS = (NR, DC, RT, PT, RFQ)
_ORDER_ENTRY = (NR, RT)

#: The account behind :meth:`Exchange.add_liquidity`.
LIQUIDITY_ACCOUNT = "__liquidity__"

# Application messages each endpoint takes (REFERENCE §4.1, §5, §6, §9.1). KalshiPT is read-only.
_SUPPORTED: dict[str, tuple[bytes, ...]] = {
    NR: (b"D", b"F", b"G", b"q", b"UOG"),
    RT: (b"D", b"F", b"G", b"UOG", b"R", b"UA", b"UE"),
    DC: (b"U1",),
    PT: (),
    RFQ: (b"S", b"Z", b"U7"),
}
# Everything an order-entry session may send changes orders or RFQs, so a listener refuses all.
# Write-bucket messages (REFERENCE §10.1, §9.10); U1 has its own limit (U3 21004=1).
_WRITE_MSGS = (b"D", b"F", b"G", b"q", b"UOG", b"R", b"UA", b"UE", b"S", b"Z", b"U7")
# Messages whose ExDestination(100) picks the write bucket's shard.
_SHARDED = (b"D", b"F", b"G")
# Where a refused message's own ID is, for BusinessRejectRefID(379).
_REF_ID_TAGS = (11, 131, 117, 20130, 21023, 21001)

_CL_ORD_ID_RE = re.compile(r"^[\-\w:+=/]*$", re.ASCII)
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_TIFS = (b"0", b"1", b"3", b"4", b"6")
_MARKET_STATUSES = ("open", "paused", "closed", "settled")
_ET = ZoneInfo("America/New_York")
_PENDING_EXEC_ID = "-1;-1"
# The Trade-only fields of a report that is no Trade. Shared by every call, never written to;
# a plain dict because ``**`` unpacks a dict faster than any other mapping.
_NO_FILL: Mapping[str, Any] = {}
_NO_ORDER_ID = "NONE"


# --- public value types ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LogonFlags:
    """The Kalshi Logon options of one session that change what the exchange sends it.

    Resolved booleans (absent = Kalshi's default), except ``receive_settlement_reports`` whose
    default depends on the endpoint (Y on KalshiPT, N on KalshiRT): ``None`` means "not sent".
    """

    #: 8013
    cancel_orders_on_disconnect: bool = False
    #: 20126
    listener_session: bool = False
    #: 20127 (None = endpoint default)
    receive_settlement_reports: bool | None = None
    #: 21005
    use_dollars: bool = False
    #: 21007
    enable_ioc_cancel_report: bool = False
    #: 21008
    preserve_original_order_qty: bool = False
    #: 21011 (legacy tag 21003 on a Logon means the same)
    skip_pending_exec_reports: bool = False
    #: 21012
    use_expired_ord_status: bool = False
    #: 21026
    always_emit_new_before_trade: bool = False
    #: 21027
    split_collateral_return: bool = False

    @classmethod
    def from_logon(cls, msg: FixMessage) -> LogonFlags:
        """Read the flags off a received Logon (35=A). Anything but ``Y`` counts as ``N``."""

        def flag(tag: int) -> bool:
            return msg.get(tag) == b"Y"

        rsr = msg.get(20127)
        return cls(
            cancel_orders_on_disconnect=flag(8013),
            listener_session=flag(20126),
            receive_settlement_reports=None if rsr is None else rsr == b"Y",
            use_dollars=flag(21005),
            enable_ioc_cancel_report=flag(21007),
            preserve_original_order_qty=flag(21008),
            # Before FIX 1.0.17 SkipPendingExecReports was tag 21003, still accepted on Logon.
            skip_pending_exec_reports=flag(21011) or flag(21003),
            use_expired_ord_status=flag(21012),
            always_emit_new_before_trade=flag(21026),
            split_collateral_return=flag(21027),
        )

    @classmethod
    def from_options(cls, options: LogonOptions) -> LogonFlags:
        """The flags a client configured with ``options`` (:class:`sessions.logon.LogonOptions`)."""
        kw: dict[str, Any] = {}
        for f in attrs.fields(cls):
            value = getattr(options, f.name, None)
            if value is not None:
                kw[f.name] = value
        return cls(**kw)

    @property
    def prints_as_default(self) -> bool:
        """Whether ExecutionReports print for these flags exactly as for the default flags:
        none of the flags :func:`render_execution_report` looks at is set."""
        return not (
            self.use_dollars
            or self.preserve_original_order_qty
            or self.use_expired_ord_status
            or self.split_collateral_return
        )

    def wants_settlement_reports(self, endpoint: str) -> bool:
        """Whether a session on ``endpoint`` with these flags receives UMS (REFERENCE §8)."""
        if endpoint == PT:
            return self.receive_settlement_reports is not False
        if endpoint == RT:
            return self.receive_settlement_reports is True
        return False


_DEFAULT_FLAGS = LogonFlags()


class Outbound(NamedTuple):
    """One message the gateway must send: body fields only, in wire order (no header).

    A named tuple rather than an attrs class: the exchange makes one per message sent, and a
    frozen attrs instance costs several times as much to build (each field set through
    ``object.__setattr__``). Immutable all the same.
    """

    #: The API key whose session receives it.
    key_id: str
    #: MsgType(35), e.g. ``b"8"``.
    msg_type: bytes
    body: tuple[tuple[int, bytes], ...]

    def get(self, tag: int, nth: int = 1) -> bytes | None:
        """The value of the ``nth`` occurrence of ``tag`` in the body, or ``None``."""
        for t, v in self.body:
            if t == tag:
                nth -= 1
                if nth == 0:
                    return v
        return None

    def to_message(self) -> FixMessage:
        """The message as a :class:`FixMessage` starting with MsgType (the gateway adds the rest)."""
        m = FixMessage()
        m.pairs = [(35, self.msg_type), *self.body]
        return m


# `_new_tuple(Outbound, fields)` builds an Outbound without the generated __new__'s Python
# frame (the ExecutionReports of the order path).
_new_tuple = tuple.__new__


# Not slotted: a frozen slotted class sets each field through object.__setattr__, a frozen dict
# class stores them straight into its __dict__ — half the cost, on every report generated.
@attrs.frozen(kw_only=True, slots=False)
class ExecRecord:
    """One ExecutionReport the exchange generated, with everything needed to print it.

    Records with a real ExecID form the ground truth (:meth:`Exchange.ground_truth`) and what the
    drop copy replays. ``body`` is the report as a session with default Logon flags sees it,
    rendered once when the record is made; other sessions get :func:`render_execution_report`
    with their own flags (which hands back ``body`` itself when their flags print the same).
    """

    exec_id: str
    #: Exchange index (shard) that produced the report, ``None`` for a reject without a market.
    exchange_index: int | None
    account_id: str
    #: The API key that entered the order (``None`` for the liquidity provider).
    key_id: str | None
    order_id: str
    cl_ord_id: str
    orig_cl_ord_id: str | None
    exec_type: str
    ord_status: str
    symbol: str
    side: str
    #: OrderQty of the last accepted request (what 21008=Y prints).
    order_qty: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    #: In dollars.
    avg_px: Decimal
    #: Limit price in dollars (``None`` on a reject whose price did not parse).
    price: Decimal | None
    last_qty: Decimal | None = None
    last_px: Decimal | None = None
    time: float
    expire_time: float | None = None
    rej_reason: int | None = None
    text: str | None = None
    sub: int = 0
    parties: tuple[tuple[int, bytes], ...] = ()
    #: An expiry-style system cancel (CloseCancel / OrderExpiryCancel): 150=C/39=C under 21012=Y.
    expiry: bool = False
    long_qty: Decimal | None = None
    short_qty: Decimal | None = None
    trd_match_id: str | None = None
    aggressor: bool | None = None
    fee: Decimal | None = None
    balance_change: Decimal | None = None
    single_market_return: Decimal | None = None
    #: Derived from the fields above (never passed in), so it cannot disagree with them.
    body: tuple[tuple[int, bytes], ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Every report is sent at least once, most of them only to sessions with default
        # flags: rendering here, once, is what lets those sessions share it.
        object.__setattr__(self, "body", _render(self, _DEFAULT_FLAGS))

    @property
    def exec_key(self) -> tuple[int, int]:
        """(clock, event) of the ExecID, for ordering within one exchange index."""
        return _parse_exec_id(self.exec_id)[:2]


# Every ExecRecord field, in declaration order, with the value a report that is no Trade has
# where it has one (see Exchange._record, which copies it and fills in the rest).
_NO_TRADE_FIELDS: dict[str, Any] = {
    f.name: None if f.default is attrs.NOTHING else f.default
    for f in attrs.fields(ExecRecord)
    if f.init
}


def _new_record(fields: dict[str, Any]) -> ExecRecord:
    """The ExecRecord whose fields are ``fields`` (every field but ``body``, which is added),
    as ``ExecRecord(**fields)`` would make it.

    The generated __init__ binds thirty keyword arguments and stores them one by one into a
    dict that outgrows the class's shared keys and resizes on the way; a dict built in one go
    and installed whole costs half as much, on every report the exchange generates.
    """
    rec = object.__new__(ExecRecord)
    object.__setattr__(rec, "__dict__", fields)
    fields["body"] = _render(rec, _DEFAULT_FLAGS)
    return rec


def _derive(rec: ExecRecord, exec_id: str, exec_type: str, ord_status: str) -> ExecRecord:
    """``rec`` with another ExecID, ExecType and OrdStatus: what :meth:`Exchange._record` would
    make of the same order state. The default body is ``rec.body`` with those three fields
    replaced rather than printed again (neither record may be a reject, whose OrderQty prints
    differently)."""
    new = object.__new__(ExecRecord)
    # A copy of the whole dict then three writes: a fraction of what the generated __init__
    # (thirty keyword arguments) and a second rendering would cost.
    d = rec.__dict__.copy()
    object.__setattr__(new, "__dict__", d)
    d["exec_id"] = exec_id
    d["exec_type"] = exec_type
    d["ord_status"] = ord_status
    # 17, 150 and 39 follow 37, 11 and the optional 41 (see _render); the default flags print
    # ExecType and OrdStatus as they are.
    i = 2 if rec.orig_cl_ord_id is None else 3
    body = rec.body
    d["body"] = (
        body[:i]
        + ((17, exec_id.encode()), (150, exec_type.encode()), (39, ord_status.encode()))
        + body[i + 3 :]
    )
    return new


def render_execution_report(
    rec: ExecRecord, flags: LogonFlags = _DEFAULT_FLAGS
) -> tuple[tuple[int, bytes], ...]:
    """The body of ``rec`` as a session with ``flags`` receives it (REFERENCE §4.7)."""
    if flags.prints_as_default:
        return rec.body
    return _render(rec, flags)


def _render(rec: ExecRecord, flags: LogonFlags) -> tuple[tuple[int, bytes], ...]:
    exec_type, ord_status = rec.exec_type, rec.ord_status
    if rec.expiry and flags.use_expired_ord_status:
        exec_type = ord_status = "C"
    price_text = price_printer(flags.use_dollars)
    cum, leaves = rec.cum_qty, rec.leaves_qty
    if flags.preserve_original_order_qty or exec_type == "8":
        qty = rec.order_qty  # a reject shows the quantity that was asked for
    else:
        qty = cum + leaves
    b: list[tuple[int, bytes]] = [(37, rec.order_id.encode()), (11, rec.cl_ord_id.encode())]
    if rec.orig_cl_ord_id is not None:
        b.append((41, rec.orig_cl_ord_id.encode()))
    b += [
        (17, rec.exec_id.encode()),
        (150, exec_type.encode()),
        (39, ord_status.encode()),
        (54, rec.side.encode()),
        (55, rec.symbol.encode()),
        (38, fmt_qty(qty)),
    ]
    if rec.price is not None:
        b.append((44, price_text(rec.price)))
    if rec.expire_time is not None:
        b.append((126, utc_timestamp(rec.expire_time)))
    b += [(14, fmt_qty(cum)), (151, fmt_qty(leaves)), (6, price_text(rec.avg_px))]
    if rec.last_qty is not None and rec.last_px is not None:
        b += [(31, price_text(rec.last_px)), (32, fmt_qty(rec.last_qty))]
    b.append((60, utc_timestamp(rec.time)))
    if rec.rej_reason is not None:
        b.append((103, str(rec.rej_reason).encode()))
    if rec.text is not None:
        b.append((58, rec.text.encode()))
    if rec.exchange_index is not None:
        b.append((30, str(rec.exchange_index).encode()))
    if rec.sub:
        b.append((79, str(rec.sub).encode()))
    b += rec.parties
    if rec.trd_match_id is not None:
        b += [
            (704, fmt_qty(rec.long_qty or ZERO)),
            (705, fmt_qty(rec.short_qty or ZERO)),
            (880, rec.trd_match_id.encode()),
            # AggressorIndicator: Y = this order was the taker (REFERENCE §11 #15).
            (1057, b"Y" if rec.aggressor else b"N"),
            (136, b"1"),
            (137, fmt_money(rec.fee or ZERO)),
            (138, b"USD"),
            (139, b"4"),
            (891, b"0"),
            (1703, b"1"),
            (1704, fmt_money(rec.balance_change or ZERO)),
            (1705, b"BALANCE"),
        ]
        # Only the single-market part exists in this model (no ranged market groups).
        if flags.split_collateral_return and rec.single_market_return:
            b.append((21030, fmt_money(rec.single_market_return)))
    return tuple(b)


@attrs.frozen(kw_only=True)
class ExchangeConfig:
    """Knobs of the simulated exchange. Defaults follow REFERENCE §4–§10."""

    #: Tokens per application message (REFERENCE §10.1).
    message_cost: int = 10
    #: OrdStatus(39) on Replaced reports: ``"5"`` as documented, or ``"live"`` for the FIX 5.0
    #: reading (0/1, the order's live status) — REFERENCE §11 #9.
    replaced_ord_status: str = "5"
    #: Minimum seconds between two EventResendRequests of one key (else U3 21004=1).
    drop_copy_min_interval: float = 1.0
    #: How far back the drop copy reaches (3 hours).
    drop_copy_lookback: float = 3 * 3600.0
    #: Minimum seconds between two OrderMassCancelRequests of one key (1 per second).
    mass_cancel_min_interval: float = 1.0
    #: Order-group rolling window (15 s).
    order_group_window: float = 15.0
    #: Fee per contract = rate × p × (1 − p), rounded up to the cent, per fill. A simplification of
    #: Kalshi's fee schedule: takers pay 7 %, makers nothing.
    taker_fee_rate: Decimal = Decimal("0.07")
    maker_fee_rate: Decimal = Decimal("0")
    #: Parties per MarketSettlementReport page (larger batches are split with 893=N).
    settlement_parties_per_report: int = 50
    #: RFQ confirmation window and execution timer, standard / high-volatility markets (§9.1).
    rfq_confirm_window: float = 30.0
    rfq_confirm_window_hvm: float = 3.0
    rfq_execution_delay: float = 15.0
    rfq_execution_delay_hvm: float = 1.0
    #: TimeInForce when 59 is absent: GTC (REFERENCE §11 #13).
    default_tif: str = "1"


# --- internal state --------------------------------------------------------------------------


class _FieldProblem(KalshiFixError):
    """A field is missing or malformed: answered with a session-level Reject (35=3)."""

    def __init__(self, tag: int, reason: int, text: str) -> None:
        super().__init__(text)
        self.tag = tag
        self.reason = reason
        self.text = text


@attrs.define(eq=False)
class _Account:
    account_id: str
    tier: str
    #: Spending limit in dollars; ``None`` = unlimited (no INSUFFICIENT_BALANCE checks).
    balance: Decimal | None
    public_id: str
    #: Cash movements from trades and settlements (added to ``balance`` when one is set).
    cash: Decimal = ZERO
    #: ClOrdID (any of an open order's chain) → open order.
    open_by_cl: dict[str, Order] = attrs.Factory(dict)
    #: ClOrdID → closed order, to tell "too late" from "unknown".
    closed_by_cl: dict[str, Order] = attrs.Factory(dict)
    #: Open orders by OrderID, in entry order.
    orders: dict[str, Order] = attrs.Factory(dict)


@attrs.define(eq=False)
class _Key:
    key_id: str
    account_id: str
    drop_copy: bool


@attrs.define(eq=False)
class _Session:
    key_id: str
    account_id: str
    endpoint: str
    flags: LogonFlags
    connected_at: float
    last_drop_copy: float | None = None
    last_mass_cancel: float | None = None
    #: ``flags.prints_as_default``, asked for every report the session gets.
    plain: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.plain = self.flags.prints_as_default

    def report(self, rec: ExecRecord) -> Outbound:
        """``rec`` as this session receives it."""
        body = rec.body if self.plain else _render(rec, self.flags)
        return _new_tuple(Outbound, (self.key_id, b"8", body))

    @property
    def is_listener(self) -> bool:
        return self.endpoint in _ORDER_ENTRY and self.flags.listener_session


@attrs.define(eq=False)
class _Market:
    ticker: str
    status: str
    exchange_index: int
    high_volatility: bool
    tick: Decimal
    book: OrderBook = attrs.Factory(OrderBook)
    #: What :meth:`Exchange._parse_price` made of a price field's text, cents sessions [0] and
    #: dollars sessions [1] (see _on_new_order). Bounded like _DECIMALS.
    prices: tuple[dict[bytes, Decimal | None], dict[bytes, Decimal | None]] = attrs.Factory(
        lambda: ({}, {})
    )


@attrs.define(eq=False)
class _OrderGroup:
    group_id: str
    account_id: str
    sub: int
    exchange_index: int
    limit: int
    triggered: bool = False
    #: (time, contracts) of fills inside the rolling window.
    fills: deque[tuple[float, Decimal]] = attrs.Factory(deque)
    #: Open orders of the group by OrderID.
    orders: dict[str, Order] = attrs.Factory(dict)

    def volume(self, now: float, window: float) -> Decimal:
        while self.fills and self.fills[0][0] <= now - window:
            self.fills.popleft()
        return sum((q for _, q in self.fills), ZERO)


@attrs.define
class _Fault:
    text: str
    applied: bool


def _parse_exec_id(value: str) -> tuple[int, int, int]:
    """(clock, event, exchange index) of an ExecID; ``ValueError`` when malformed."""
    parts = value.split(";")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"not an ExecID: {value!r}")
    clock, event = int(parts[0]), int(parts[1])
    return clock, event, int(parts[2]) if len(parts) == 3 else 0


def _fmt_exec_id(clock: int, event: int, index: int) -> str:
    return f"{clock};{event}" if index == 0 else f"{clock};{event};{index}"


# --- field parsing (raise _FieldProblem → 35=3) ---------------------------------------------


class _Fields(Protocol):
    """Where a handler reads fields from: a :class:`FixMessage`, or its
    :meth:`~sessions.message.FixMessage.first_values`."""

    def get(self, tag: int) -> bytes | None: ...


def _need(msg: _Fields, tag: int) -> bytes:
    v = msg.get(tag)
    if v is None:
        raise _FieldProblem(tag, 1, f"Required tag missing: {tag}")
    if v == b"":
        raise _FieldProblem(tag, 4, f"Tag specified without a value: {tag}")
    return v


def _text(v: bytes) -> str:
    return v.decode("latin-1")


# Decimal of the text of a field, for the texts seen lately: nearly every order repeats a
# quantity and a price that earlier ones had. Decimals are immutable, so one object can serve
# every order; the key is the text (not the number), so 5 and 5.0 stay distinct. Bounded:
# emptied when full.
_DECIMALS: dict[bytes, Decimal] = {}
_DECIMALS_LIMIT = 4096


def _dec(v: bytes | None, tag: int) -> Decimal | None:
    if v is None:
        return None
    d = _DECIMALS.get(v)
    if d is not None:
        return d
    try:
        d = Decimal(v.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        raise _FieldProblem(tag, 6, f"Incorrect data format for value of tag {tag}") from None
    if not d.is_finite():
        raise _FieldProblem(tag, 6, f"Incorrect data format for value of tag {tag}")
    if len(_DECIMALS) >= _DECIMALS_LIMIT:
        _DECIMALS.clear()
    _DECIMALS[v] = d
    return d


def _int(v: bytes | None, tag: int) -> int | None:
    if v is None:
        return None
    s = v.decode("latin-1")
    if not s.lstrip("-").isdigit() or not s.isascii():
        raise _FieldProblem(tag, 6, f"Incorrect data format for value of tag {tag}")
    return int(s)


def _bool(v: bytes | None, tag: int) -> bool | None:
    if v is None:
        return None
    if v not in (b"Y", b"N"):
        raise _FieldProblem(tag, 5, f"Value is incorrect (out of range) for tag {tag}")
    return v == b"Y"


def _parties(msg: _Fields) -> tuple[tuple[int, bytes], ...] | None:
    """The Parties group (453/448/452) as sent, ``()`` if absent, ``None`` if not as Kalshi wants."""
    n = msg.get(453)
    if n is None:
        return ()
    pid, role = msg.get(448), msg.get(452)
    # FCM only; exactly one entry with role 24 (REFERENCE §4.4).
    if n != b"1" or pid is None or role != b"24":
        return None
    return ((453, b"1"), (448, pid), (452, role))


def _same_report_state(
    rec: ExecRecord,
    order: Order,
    now: float,
    orig: str | None,
    text: str | None,
    expiry: bool,
) -> bool:
    """Whether ``rec`` has every field :meth:`Exchange._record` would take from ``order`` at
    ``now`` (with ``orig``, ``text`` and ``expiry``), and no Trade fields."""
    return (
        rec.time == now
        and rec.cl_ord_id == order.cl_ord_id
        and rec.orig_cl_ord_id == orig
        and rec.text == text
        and rec.expiry == expiry
        and rec.cum_qty == order.cum_qty
        and rec.leaves_qty == order.leaves_qty
        and rec.order_qty == order.order_qty
        and rec.avg_px == order.avg_px
        and rec.price == order.price
        and rec.expire_time == order.expire_time
        and rec.sub == order.sub
        and rec.parties == order.parties
        and rec.order_id == order.order_id
        and rec.exchange_index == order.exchange_index
        and rec.account_id == order.account_id
        and rec.key_id == order.key_id
        and rec.symbol == order.symbol
        and rec.side == order.side
        and rec.trd_match_id is None
        and rec.last_qty is None
        and rec.rej_reason is None
    )


def _valid_cl_ord_id(cl: str) -> bool:
    return 0 < len(cl) <= 64 and _CL_ORD_ID_RE.match(cl) is not None


def _on_qty_grid(qty: Decimal) -> bool:
    return qty > 0 and qty == qty.quantize(CENT)


# _on_qty_grid of the Decimal of a quantity field's text, for the texts seen lately (see
# _on_new_order). Bounded like _DECIMALS.
_QTY_ON_GRID: dict[bytes, bool] = {}
# Absent from a cache (None is a cached answer there).
_UNSET: Any = object()


def _end_of_day_et(now: float) -> float:
    """Epoch seconds of 23:59:59.999 US Eastern on the day (in Eastern time) containing ``now``."""
    local = _dt.datetime.fromtimestamp(now, _ET)
    end = _dt.datetime(local.year, local.month, local.day, 23, 59, 59, 999000, tzinfo=_ET)
    return end.timestamp()


def _business_date(now: float) -> bytes:
    local = _dt.datetime.fromtimestamp(now, _ET)
    return local.strftime("%Y%m%d").encode("ascii")


# --- the exchange ----------------------------------------------------------------------------


class Exchange:
    """The simulated Kalshi exchange: accounts, keys, markets, books, and every message flow.

    All public methods that take ``now`` first run the timers that are due (expiries, RFQ
    windows), so a gateway that calls :meth:`tick` late still sees a consistent exchange; their
    messages come first in the returned list.
    """

    def __init__(
        self, *, rng: random.Random | None = None, config: ExchangeConfig | None = None
    ) -> None:
        from .rfq import RfqDesk  # local import: rfq imports this module

        self.config = config or ExchangeConfig()
        if self.config.replaced_ord_status not in ("5", "live"):
            raise ConfigError(
                f"replaced_ord_status must be '5' or 'live', got {self.config.replaced_ord_status!r}"
            )
        self._rng = rng if rng is not None else random.Random(0)
        self._accounts: dict[str, _Account] = {}
        self._keys: dict[str, _Key] = {}
        self._sessions: dict[str, _Session] = {}
        # Account → its sessions in key order (what _sessions_of answers), filled on demand and
        # dropped whenever a session comes or goes: every report asks, sessions rarely change.
        self._account_sessions: dict[str, list[_Session]] = {}
        self._account_listeners: dict[str, list[_Session]] = {}
        self._markets: dict[str, _Market] = {}
        self._groups: dict[str, _OrderGroup] = {}
        self._open_orders: dict[str, Order] = {}
        self._positions: dict[tuple[str, int, str], Decimal] = {}
        self._limiter = RateLimiter(self.config.message_cost)
        self._trading_paused = False
        self._exchange_paused = False
        self._order_seq = 0
        self._cycle = 0
        self._now = 0.0
        # Per exchange index: [clock, event, cycle in which the clock last moved].
        self._exec_clock: dict[int, list[int]] = {}
        # Per exchange index: ExecID keys and generation times of every report (all accounts).
        self._exec_log: dict[int, tuple[list[tuple[int, int]], list[float]]] = {}
        # Per (account, exchange index): ExecID keys and records, in ExecID order.
        self._ground: dict[tuple[str, int], tuple[list[tuple[int, int]], list[ExecRecord]]] = {}
        self._ground_by_account: dict[str, list[ExecRecord]] = {}
        self._timers: list[tuple[float, int, str, str]] = []
        self._timer_seq = 0
        # The last PENDING record and its order: the report that follows a PENDING is often
        # the same but for ExecID, ExecType and OrdStatus, and is then derived from it.
        self._last_pending: tuple[Order, ExecRecord] | None = None
        self._order_faults: deque[_Fault] = deque()
        self._drop_copy_faults = 0
        self._rfq = RfqDesk(self)
        # MsgType → handler, built once rather than for every message.
        self._handlers: dict[bytes, Callable[[_Session, FixMessage, int, list[Outbound]], None]] = {
            b"D": self._on_new_order,
            b"F": self._on_cancel,
            b"G": self._on_replace,
            b"q": self._on_mass_cancel,
            b"UOG": self._on_order_group,
            b"U1": self._on_event_resend,
            b"R": self._rfq.on_quote_request,
            b"UA": self._rfq.on_accept_quote,
            b"UE": self._rfq.on_rfq_cancel,
            b"S": self._rfq.on_quote,
            b"Z": self._rfq.on_quote_cancel,
            b"U7": self._rfq.on_quote_confirm,
        }
        self.add_account(LIQUIDITY_ACCOUNT, tier="Prestige")

    # --- setup -------------------------------------------------------------------------------

    def add_account(
        self, account_id: str, *, tier: str = "Premier", balance: Decimal | int | str | None = None
    ) -> None:
        """Create an account (member). ``balance`` in dollars enables INSUFFICIENT_BALANCE checks."""
        if account_id in self._accounts:
            raise ConfigError(f"account {account_id!r} already exists")
        check_tier(tier)
        self._accounts[account_id] = _Account(
            account_id=account_id,
            tier=tier,
            balance=None if balance is None else Decimal(str(balance)),
            public_id=f"anon-{self._uuid()}",
        )

    def set_tier(self, account_id: str, tier: str) -> None:
        """Change an account's rate-limit tier (its buckets restart full)."""
        self._account(account_id).tier = check_tier(tier)
        self._limiter.forget(account_id)

    def add_key(self, key_id: str, account_id: str, *, drop_copy: bool = True) -> None:
        """Register an API key of ``account_id``. ``drop_copy=False``: its U1 get U3 21004=5."""
        if key_id in self._keys:
            raise ConfigError(f"API key {key_id!r} already exists")
        self._account(account_id)
        self._keys[key_id] = _Key(key_id=key_id, account_id=account_id, drop_copy=drop_copy)

    def add_market(
        self,
        ticker: str,
        *,
        status: str = "open",
        exchange_index: int = 0,
        high_volatility: bool = False,
        tick: Decimal | str = "0.01",
    ) -> None:
        """List a market. ``tick`` is its price grid in dollars (sub-penny: e.g. ``"0.001"``)."""
        if ticker in self._markets:
            raise ConfigError(f"market {ticker!r} already exists")
        if status not in _MARKET_STATUSES:
            raise ConfigError(
                f"market status must be one of {', '.join(_MARKET_STATUSES)}, got {status!r}"
            )
        if exchange_index < 0:
            raise ConfigError(f"exchange_index must be >= 0, got {exchange_index}")
        t = Decimal(str(tick))
        if not ZERO < t < ONE or (ONE / t) != (ONE / t).to_integral_value():
            raise ConfigError(f"tick must divide $1 evenly, got {tick!r}")
        self._markets[ticker] = _Market(
            ticker=ticker,
            status=status,
            exchange_index=exchange_index,
            high_volatility=high_volatility,
            tick=t,
        )

    def add_liquidity(
        self,
        ticker: str,
        side: str | int,
        price_cents: int | Decimal | str,
        qty: int | Decimal | str,
        *,
        now: float | None = None,
    ) -> list[Outbound]:
        """Rest a GTC order of the scripted liquidity provider (its own account, no session).

        ``side``: ``"buy"``/``"1"`` (buy Yes) or ``"sell"``/``"2"`` (sell Yes). If the order
        crosses resting client orders it trades with them; their reports are returned.
        """
        s = {"buy": BUY, "1": BUY, "sell": SELL, "2": SELL}.get(str(side).lower())
        if s is None:
            raise ConfigError(f"liquidity side must be 'buy' or 'sell', got {side!r}")
        market = self._market(ticker)
        price = Decimal(str(price_cents)) / 100
        q = Decimal(str(qty))
        if not ZERO < price < ONE or not _on_qty_grid(q):
            raise ConfigError(
                f"liquidity needs a price in 1..99 cents and a quantity > 0, got {price_cents}, {qty}"
            )
        out = self._begin(now)
        order = self._new_order(
            account_id=LIQUIDITY_ACCOUNT,
            key_id=None,
            market=market,
            side=s,
            price=price,
            qty=q,
            cl_ord_id=f"lp-{self._order_seq + 1}",
            tif="1",
            stp=2,
        )
        self._register(order)
        self._match(order, market, out)
        if order.is_open:
            self._rest(order, market, out)
        return out

    # --- faults ------------------------------------------------------------------------------

    def fail_next_order(self, text: str = "INTERNAL_ERROR", *, applied: bool = False) -> None:
        """Make the next valid NewOrderSingle come back as ``150=8 103=99 58=<text>``.

        ``applied=True`` models ``EXCHANGE_UNAVAILABLE`` after acceptance: the order is really
        placed (the ground truth, listeners and counterparties see it) but the entering key gets
        only the reject.
        """
        self._order_faults.append(_Fault(text=text, applied=applied))

    def fail_next_drop_copy(self) -> None:
        """Answer the next EventResendRequest with U3 21004=2 (server error)."""
        self._drop_copy_faults += 1

    # --- exchange and market state -----------------------------------------------------------

    def set_trading_pause(self, paused: bool, now: float | None = None) -> list[Outbound]:
        """Trading pause (maintenance): no new orders or amends, cancels allowed.

        Starting one cancels every resting order that carried CancelOrderOnPause=Y.
        """
        out = self._begin(now)
        start = paused and not self._trading_paused
        self._trading_paused = paused
        if start:
            self._cancel_on_pause(None, "TRADING_PAUSED", out)
        return out

    def set_exchange_pause(self, paused: bool, now: float | None = None) -> list[Outbound]:
        """Exchange pause: no place, amend or cancel. Cancels CancelOrderOnPause orders."""
        out = self._begin(now)
        start = paused and not self._exchange_paused
        self._exchange_paused = paused
        if start:
            self._cancel_on_pause(None, "EXCHANGE_PAUSED", out)
        return out

    def pause_market(self, ticker: str, now: float | None = None) -> list[Outbound]:
        """Deactivate one market: new orders and amends get ``MARKET_INACTIVE``; cancels work.

        A market-level pause also cancels its CancelOrderOnPause orders (our reading: it is a
        trading pause confined to the market).
        """
        market = self._market(ticker)
        out = self._begin(now)
        start = market.status == "open"
        market.status = "paused"
        if start:
            self._cancel_on_pause(market, "TRADING_PAUSED", out)
        return out

    def open_market(self, ticker: str, now: float | None = None) -> list[Outbound]:
        """(Re)open a paused or not-yet-open market."""
        market = self._market(ticker)
        if market.status == "settled":
            raise ConfigError(f"market {ticker!r} is settled and cannot reopen")
        out = self._begin(now)
        market.status = "open"
        return out

    def close_market(self, ticker: str, now: float | None = None) -> list[Outbound]:
        """Close a market: resting orders are cancelled (CloseCancel, expiry-style, §4.7)."""
        market = self._market(ticker)
        out = self._begin(now)
        if market.status in ("closed", "settled"):
            return out
        market.status = "closed"
        for order in list(self._open_orders.values()):
            if order.symbol == ticker:
                self._cancel(order, out, expiry=True)
        return out

    # --- sessions ----------------------------------------------------------------------------

    def connect(
        self, key_id: str, endpoint: str, flags: LogonFlags | None = None, now: float | None = None
    ) -> None:
        """A session of ``key_id`` logged on to ``endpoint`` (a TargetCompID) with ``flags``."""
        key = self._keys.get(key_id)
        if key is None:
            raise ConfigError(f"unknown API key {key_id!r}; add it with add_key() first")
        if endpoint not in ENDPOINTS:
            raise ConfigError(f"unknown endpoint {endpoint!r}; valid: {', '.join(ENDPOINTS)}")
        if key_id in self._sessions:
            raise LocalProtocolError(
                f"API key {key_id!r} is already connected; Kalshi allows one connection per key "
                "(disconnect() the old session first)"
            )
        self._advance(now)
        self._account_sessions.clear()
        self._account_listeners.clear()
        self._sessions[key_id] = _Session(
            key_id=key_id,
            account_id=key.account_id,
            endpoint=endpoint,
            flags=flags or LogonFlags(),
            connected_at=self._now,
        )

    def disconnect(self, key_id: str, now: float | None = None) -> list[Outbound]:
        """The session of ``key_id`` ended (Logout or transport loss).

        With CancelOrdersOnDisconnect (8013=Y) every open order the key entered is cancelled, on
        all shards; the reports go to the account's listeners and into the ground truth.
        """
        out = self._begin(now)
        sess = self._sessions.pop(key_id, None)
        if sess is None:
            return out
        self._account_sessions.clear()
        self._account_listeners.clear()
        # Scope: orders entered through this key (REFERENCE §11 #26).
        if sess.endpoint in _ORDER_ENTRY and sess.flags.cancel_orders_on_disconnect:
            for order in sorted(self._open_orders.values(), key=lambda o: o.seq):
                if order.key_id == key_id and order.is_open:
                    self._cancel(order, out)
        return out

    def is_connected(self, key_id: str) -> bool:
        """Whether ``key_id`` has a session."""
        return key_id in self._sessions

    # --- timers ------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outbound]:
        """Run every timer due at ``now``: GTD/Day expiry, RFQ confirmation and execution."""
        return self._begin(now)

    def next_deadline(self) -> float | None:
        """Epoch seconds of the next timer, or ``None``."""
        while self._timers and not self._timer_live(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    # --- queries -----------------------------------------------------------------------------

    def ground_truth(self, account_id: str) -> list[ExecRecord]:
        """Every execution of the account (real ExecIDs only), ordered by (index, clock, event)."""
        self._account(account_id)
        recs = self._ground_by_account.get(account_id, [])
        return sorted(recs, key=lambda r: (r.exchange_index or 0, *r.exec_key))

    def position(self, account_id: str, ticker: str, sub: int = 0) -> Decimal:
        """Net Yes position (negative = No contracts)."""
        return self._positions.get((account_id, sub, ticker), ZERO)

    def open_orders(self, account_id: str) -> list[Order]:
        """The account's open orders in entry order (live objects: do not modify)."""
        return list(self._account(account_id).orders.values())

    def cash(self, account_id: str) -> Decimal:
        """Net cash movement of the account from trades, fees and settlements."""
        return self._account(account_id).cash

    # --- the message entry point -------------------------------------------------------------

    def handle(self, key_id: str, msg: FixMessage, seq_num: int, now: float) -> list[Outbound]:
        """Process one application message from ``key_id``'s session; return what to send."""
        sess = self._sessions.get(key_id)
        if sess is None:
            raise LocalProtocolError(f"API key {key_id!r} is not connected; call connect() first")
        out = self._begin(now)
        mt = msg.msg_type or b""
        if mt not in _SUPPORTED[sess.endpoint]:
            out.append(
                self._bmr(key_id, seq_num, msg, 3, f"Unsupported message type for {sess.endpoint}")
            )
            return out
        if sess.is_listener:
            out.append(
                self._bmr(
                    key_id,
                    seq_num,
                    msg,
                    6,
                    "Listener session: order-changing messages are not allowed",
                )
            )
            return out
        account = self._accounts[sess.account_id]
        # Read once here and handed to the NewOrderSingle handler, which reads a dozen tags.
        fields = msg.first_values() if mt in _SHARDED else None
        if mt in _WRITE_MSGS:
            shard: int | None = None
            raw = None if fields is None else fields.get(100)
            if raw is not None and raw.isdigit() and int(raw) >= 1:
                shard = int(raw)
            if not self._limiter.allow(account.account_id, account.tier, WRITE, shard, now):
                out.append(self._bmr(key_id, seq_num, msg, 8, "Rate limit exceeded"))
                return out
        res: list[Outbound] = []
        try:
            if mt == b"D":
                self._on_new_order(sess, msg, seq_num, res, fields)
            else:
                self._handlers[mt](sess, msg, seq_num, res)
        except _FieldProblem as p:
            # Handlers parse everything before they change state, so nothing is half done.
            res = [self._session_reject(key_id, seq_num, mt, p.tag, p.reason, p.text)]
        out.extend(res)
        return out

    # --- settlement --------------------------------------------------------------------------

    def settle_market(
        self,
        ticker: str,
        result: str,
        now: float,
        *,
        settlement_price_cents: Decimal | int | str | None = None,
    ) -> list[Outbound]:
        """Settle a market and send MarketSettlementReports (35=UMS, REFERENCE §8).

        ``result`` is ``"yes"``, ``"no"`` or ``"scalar"`` (then ``settlement_price_cents`` is the
        Yes value in cents, e.g. ``"30.6"``). Resting orders are cancelled first (CloseCancel).
        Each account with a position gets one batch (paged with 893) on its connected KalshiPT
        sessions (unless 20127=N) and KalshiRT sessions that logged on with 20127=Y.
        """
        market = self._market(ticker)
        if market.status == "settled":
            raise ConfigError(f"market {ticker!r} is already settled")
        if result == "yes":
            value = ONE
        elif result == "no":
            value = ZERO
        elif result == "scalar" and settlement_price_cents is not None:
            value = Decimal(str(settlement_price_cents)) / 100
            if not ZERO <= value <= ONE:
                raise ConfigError(
                    f"settlement price must be 0..100 cents, got {settlement_price_cents}"
                )
        else:
            raise ConfigError("result must be 'yes', 'no', or 'scalar' with settlement_price_cents")
        out = self.close_market(ticker, now)
        market.status = "settled"
        per_account: dict[str, list[tuple[int, Decimal]]] = {}
        for (acct, sub, sym), pos in sorted(self._positions.items()):
            if sym == ticker and pos != 0:
                per_account.setdefault(acct, []).append((sub, pos))
        date = _business_date(now)
        price_field = format((value * 100).quantize(CENT), "f").encode()
        size = max(1, self.config.settlement_parties_per_report)
        for acct_id, entries in per_account.items():
            parties: list[tuple[tuple[int, bytes], ...]] = []
            for sub, pos in entries:
                long_q, short_q = max(pos, ZERO), max(-pos, ZERO)
                exact = long_q * value + short_q * (ONE - value)
                payout = exact.quantize(CENT, rounding=ROUND_FLOOR)
                fee = exact - payout  # 1704 + 137 = the unrounded value (REFERENCE §8)
                self._accounts[acct_id].cash += payout
                self._positions[(acct_id, sub, ticker)] = ZERO
                # Party ID: the account, with the subaccount number appended when not primary.
                party_id = acct_id if sub == 0 else f"{acct_id}/{sub}"
                parties.append(
                    (
                        (20109, party_id.encode()),
                        (20110, b"24"),
                        (704, fmt_qty(long_q)),
                        (705, fmt_qty(short_q)),
                        (1703, b"1"),
                        (1704, fmt_money(payout)),
                        (1705, b"PAYOUT"),
                        (136, b"1"),
                        (137, fmt_money(fee)),
                        (138, b"USD"),
                        (139, b"4"),
                        (891, b"0"),
                    )
                )
            pages = [parties[i : i + size] for i in range(0, len(parties), size)]
            recipients = [
                s.key_id
                for s in self._sessions_of(acct_id)
                if s.flags.wants_settlement_reports(s.endpoint)
            ]
            for n, page in enumerate(pages, 1):
                # Field order per the dictionary (893 before the party group); the docs' example
                # puts 893 last, which a group-aware parser reads the same way.
                body: list[tuple[int, bytes]] = [
                    (20105, self._uuid().encode()),
                    (55, ticker.encode()),
                    (715, date),
                    (20106, str(len(pages)).encode()),
                    (20107, result.encode()),
                    (730, price_field),
                    (893, b"Y" if n == len(pages) else b"N"),
                    (20108, str(len(page)).encode()),
                ]
                for p in page:
                    body += p
                for key in recipients:
                    out.append(Outbound(key, b"UMS", tuple(body)))
        return out

    # ==========================================================================================
    # internals
    # ==========================================================================================

    def _uuid(self) -> str:
        """A version-4 UUID from the seeded generator (the text ``uuid.UUID(int=n, version=4)``
        prints, without building the object: one is minted for every order)."""
        n = self._rng.getrandbits(128)
        # RFC 4122 variant (10xx in the clock-sequence octet) and version 4 (0100 in the
        # time_hi_and_version field), the bits uuid.UUID sets for version=4.
        n = (n & ~(0xC000 << 48)) | (0x8000 << 48)
        n = (n & ~(0xF000 << 64)) | (0x4000 << 64)
        h = "%032x" % n
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _account(self, account_id: str) -> _Account:
        try:
            return self._accounts[account_id]
        except KeyError:
            raise ConfigError(
                f"unknown account {account_id!r}; add it with add_account() first"
            ) from None

    def _market(self, ticker: str) -> _Market:
        try:
            return self._markets[ticker]
        except KeyError:
            raise ConfigError(
                f"unknown market {ticker!r}; add it with add_market() first"
            ) from None

    def _advance(self, now: float | None) -> None:
        if now is not None:
            self._now = now

    def _begin(self, now: float | None) -> list[Outbound]:
        """Start a processing cycle at ``now`` (the ExecID clock moves); run due timers."""
        self._advance(now)
        self._cycle += 1
        out: list[Outbound] = []
        while self._timers and self._timers[0][0] <= self._now:
            entry = heapq.heappop(self._timers)
            if self._timer_live(entry):
                self._fire_timer(entry, out)
        return out

    def _sessions_of(self, account_id: str) -> list[_Session]:
        """The account's sessions in key order (shared: callers must not modify the list)."""
        found = self._account_sessions.get(account_id)
        if found is None:
            found = self._account_sessions[account_id] = [
                self._sessions[k]
                for k in sorted(self._sessions)
                if self._sessions[k].account_id == account_id
            ]
        return found

    def _listeners_of(self, account_id: str) -> list[_Session]:
        """The account's listener sessions in key order (shared, like :meth:`_sessions_of`)."""
        found = self._account_listeners.get(account_id)
        if found is None:
            found = self._account_listeners[account_id] = [
                s for s in self._sessions_of(account_id) if s.is_listener
            ]
        return found

    def _add_timer(self, when: float, kind: str, ref: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, ref))

    def _timer_live(self, entry: tuple[float, int, str, str]) -> bool:
        when, _, kind, ref = entry
        if kind == "expire":
            order = self._open_orders.get(ref)
            return order is not None and order.expire_time == when
        return self._rfq.timer_live(kind, ref, when)

    def _fire_timer(self, entry: tuple[float, int, str, str], out: list[Outbound]) -> None:
        when, _, kind, ref = entry
        if kind == "expire":
            # OrderExpiryCancel: expiry-style (150=C/39=C under 21012=Y).
            self._cancel(self._open_orders[ref], out, expiry=True)
        else:
            self._rfq.fire_timer(kind, ref, out)

    # --- message helpers ---------------------------------------------------------------------

    def _bmr(self, key_id: str, seq_num: int, msg: FixMessage, reason: int, text: str) -> Outbound:
        """BusinessMessageReject (35=j) with 45 and 372 always, 379 when the message had an ID."""
        body: list[tuple[int, bytes]] = [(45, str(seq_num).encode()), (372, msg.msg_type or b"")]
        for tag in _REF_ID_TAGS:
            v = msg.get(tag)
            if v:
                body.append((379, v))
                break
        body += [(380, str(reason).encode()), (58, text.encode())]
        return Outbound(key_id, b"j", tuple(body))

    def _business_reject(
        self,
        key_id: str,
        seq_num: int,
        msg_type: bytes,
        reason: int,
        text: str,
        ref_id: bytes | None,
    ) -> Outbound:
        body: list[tuple[int, bytes]] = [(45, str(seq_num).encode()), (372, msg_type)]
        if ref_id:
            body.append((379, ref_id))
        body += [(380, str(reason).encode()), (58, text.encode())]
        return Outbound(key_id, b"j", tuple(body))

    def _session_reject(
        self, key_id: str, seq_num: int, msg_type: bytes, tag: int, reason: int, text: str
    ) -> Outbound:
        return Outbound(
            key_id,
            b"3",
            (
                (45, str(seq_num).encode()),
                (58, text.encode()),
                (371, str(tag).encode()),
                (372, msg_type),
                (373, str(reason).encode()),
            ),
        )

    # --- execution reports -------------------------------------------------------------------

    def _next_exec_id(self, index: int) -> tuple[str, tuple[int, int]]:
        """A new ExecID of ``index`` and its (clock, event) key (what ``exec_key`` parses)."""
        st = self._exec_clock.get(index)
        if st is None:
            st = self._exec_clock[index] = [0, 0, -1]
        # The clock moves once per processing cycle, the event counter once per report: both
        # strictly increase, so ExecIDs compare as (clock, event) tuples (REFERENCE §11 #10).
        if st[2] != self._cycle:
            st[0] += 1
            st[2] = self._cycle
        st[1] += 1
        return _fmt_exec_id(st[0], st[1], index), (st[0], st[1])

    def _recipients(self, order: Order) -> list[_Session]:
        """Sessions that get the order's reports: the entering key and the account's listeners
        (callers must not modify the list: it may be shared).

        Listeners are account-wide (REFERENCE §11 #17). RFQ maker orders go to every order-entry
        session of the account, as the maker's RFQ session carries no ExecutionReports.
        """
        if order.rfq_maker:
            return [s for s in self._sessions_of(order.account_id) if s.endpoint in _ORDER_ENTRY]
        listeners = self._listeners_of(order.account_id)
        s = self._sessions.get(order.key_id) if order.key_id is not None else None
        if s is None or s.endpoint not in _ORDER_ENTRY:
            return listeners
        if not listeners:
            return [s]
        return [s, *(x for x in listeners if x is not s)]

    def _record(
        self,
        order: Order,
        exec_type: str,
        ord_status: str,
        exec_id: str,
        orig: str | None = None,
        text: str | None = None,
        expiry: bool = False,
        fill: Mapping[str, Any] = _NO_FILL,
    ) -> ExecRecord:
        """The record of a report on ``order`` as it stands; ``fill``: a Trade report's own
        fields (``last_qty`` … ``single_market_return``)."""
        last = self._last_pending
        if (
            last is not None
            and last[0] is order
            and fill is _NO_FILL
            and exec_type != "8"
            and _same_report_state(last[1], order, self._now, orig, text, expiry)
        ):
            # Typically the New (150=0) right after the order's PENDING (150=A): the same
            # report but for ExecID, ExecType and OrdStatus.
            return _derive(last[1], exec_id, exec_type, ord_status)
        # A copy of a dict holding every key then a store per order field: a dict display of
        # all thirty-two keys costs twice as much (it is built key by key, resizing on the way).
        fields = _NO_TRADE_FIELDS.copy()
        fields["exec_id"] = exec_id
        fields["exchange_index"] = order.exchange_index
        fields["account_id"] = order.account_id
        fields["key_id"] = order.key_id
        fields["order_id"] = order.order_id
        fields["cl_ord_id"] = order.cl_ord_id
        fields["orig_cl_ord_id"] = orig
        fields["exec_type"] = exec_type
        fields["ord_status"] = ord_status
        fields["symbol"] = order.symbol
        fields["side"] = order.side
        fields["order_qty"] = order.order_qty
        fields["cum_qty"] = order.cum_qty
        fields["leaves_qty"] = order.leaves_qty
        fields["avg_px"] = order.avg_px
        fields["price"] = order.price
        fields["time"] = self._now
        fields["expire_time"] = order.expire_time
        fields["text"] = text
        fields["sub"] = order.sub
        fields["parties"] = order.parties
        fields["expiry"] = expiry
        if fill:
            fields.update(fill)
        return _new_record(fields)

    def _exec(
        self,
        order: Order,
        exec_type: str,
        ord_status: str,
        out: list[Outbound],
        *,
        orig: str | None = None,
        text: str | None = None,
        expiry: bool = False,
        fill: Mapping[str, Any] = _NO_FILL,
    ) -> ExecRecord:
        """Generate a real execution (new ExecID): store it and deliver it."""
        index = order.exchange_index
        exec_id, k = self._next_exec_id(index)
        rec = self._record(order, exec_type, ord_status, exec_id, orig, text, expiry, fill)
        log = self._exec_log.get(index)
        if log is None:
            log = self._exec_log[index] = ([], [])
        log[0].append(k)
        log[1].append(rec.time)
        ground = self._ground.get((order.account_id, index))
        if ground is None:
            ground = self._ground[(order.account_id, index)] = ([], [])
        ground[0].append(k)
        ground[1].append(rec)
        by_account = self._ground_by_account.get(order.account_id)
        if by_account is None:
            by_account = self._ground_by_account[order.account_id] = []
        by_account.append(rec)
        for s in self._recipients(order):
            out.append(s.report(rec))
        return rec

    def _pending(
        self,
        order: Order,
        exec_type: str,
        out: list[Outbound],
        *,
        cl: str | None = None,
        orig: str | None = None,
    ) -> None:
        """A PENDING report (ExecID -1;-1) to the recipients that did not ask to skip them."""
        targets = [s for s in self._recipients(order) if not s.flags.skip_pending_exec_reports]
        if not targets:
            return  # nobody prints it: no record to build
        saved = order.cl_ord_id
        if cl is not None:
            order.cl_ord_id = cl
        rec = self._record(order, exec_type, exec_type, _PENDING_EXEC_ID, orig)
        order.cl_ord_id = saved
        self._last_pending = (order, rec)
        for s in targets:
            out.append(s.report(rec))

    def _reject_order(
        self,
        sess: _Session,
        out: list[Outbound],
        *,
        cl: str,
        side: str,
        symbol: str,
        qty: Decimal | None,
        price: Decimal | None,
        reason: int,
        text: str,
        index: int | None,
        sub: int = 0,
        listeners: bool = True,
    ) -> None:
        """An order reject (150=8/39=8). ExecID -1;-1 and OrderID ``NONE``: a rejected order never
        reaches the matching engine's sequence, and rejects are never replayed (§4.7, UNCONFIRMED
        placeholder values). It goes to the sender and the account's listeners."""
        rec = ExecRecord(
            exec_id=_PENDING_EXEC_ID,
            exchange_index=index,
            account_id=sess.account_id,
            key_id=sess.key_id,
            order_id=_NO_ORDER_ID,
            cl_ord_id=cl,
            orig_cl_ord_id=None,
            exec_type="8",
            ord_status="8",
            symbol=symbol,
            side=side,
            order_qty=qty or ZERO,
            cum_qty=ZERO,
            leaves_qty=ZERO,
            avg_px=ZERO,
            price=price,
            time=self._now,
            rej_reason=reason,
            text=text,
            sub=sub,
        )
        targets = [sess]
        if listeners:
            targets += [
                s for s in self._sessions_of(sess.account_id) if s.is_listener and s is not sess
            ]
        for s in targets:
            out.append(s.report(rec))

    # --- order lifecycle ---------------------------------------------------------------------

    def _new_order(
        self,
        *,
        account_id: str,
        key_id: str | None,
        market: _Market,
        side: str,
        price: Decimal,
        qty: Decimal,
        cl_ord_id: str,
        tif: str,
        stp: int = 1,
        sub: int = 0,
        expire_time: float | None = None,
        post_only: bool = False,
        group_id: str | None = None,
        cancel_on_pause: bool = False,
        parties: tuple[tuple[int, bytes], ...] = (),
        emit_new_before_trade: bool = False,
        ioc_cancel_report: bool = False,
        rfq_maker: bool = False,
        rfq_quote: str | None = None,
    ) -> Order:
        self._order_seq += 1
        # The fields without a default by position, in declaration order, the others set after:
        # a keyword argument costs the call several times what a positional one does, and an
        # order is made for every NewOrderSingle.
        order = Order(
            self._uuid(), account_id, key_id, market.ticker, market.exchange_index, side, price,
            qty, cl_ord_id, tif, self._order_seq,
        )
        order.chain.append(cl_ord_id)
        order.stp = stp
        order.sub = sub
        order.expire_time = expire_time
        order.post_only = post_only
        order.group_id = group_id
        order.cancel_on_pause = cancel_on_pause
        order.parties = parties
        order.emit_new_before_trade = emit_new_before_trade
        order.ioc_cancel_report = ioc_cancel_report
        order.rfq_maker = rfq_maker
        order.rfq_quote = rfq_quote
        return order

    def _register(self, order: Order) -> None:
        acct = self._accounts[order.account_id]
        acct.open_by_cl[order.cl_ord_id] = order
        acct.orders[order.order_id] = order
        self._open_orders[order.order_id] = order
        if order.group_id is not None:
            self._groups[order.group_id].orders[order.order_id] = order

    def _close(self, order: Order, status: str) -> None:
        order.is_open = False
        order.status = status
        self._markets[order.symbol].book.remove(order)
        acct = self._accounts[order.account_id]
        for c in order.chain:
            if acct.open_by_cl.get(c) is order:
                del acct.open_by_cl[c]
            acct.closed_by_cl[c] = order
        acct.orders.pop(order.order_id, None)
        self._open_orders.pop(order.order_id, None)
        if order.group_id is not None and order.group_id in self._groups:
            self._groups[order.group_id].orders.pop(order.order_id, None)

    def _cancel(
        self,
        order: Order,
        out: list[Outbound],
        *,
        text: str | None = None,
        expiry: bool = False,
        request_cl: str | None = None,
    ) -> None:
        """Cancel the rest of ``order`` and report 150=4/39=4 (11/41 chained for an F or G)."""
        orig = None
        if request_cl is not None:
            orig = order.cl_ord_id
            order.cl_ord_id = request_cl
            order.chain.append(request_cl)
        self._close(order, "4")
        self._exec(order, "4", "4", out, orig=orig, text=text, expiry=expiry)

    def _rest(self, order: Order, market: _Market, out: list[Outbound]) -> None:
        market.book.add(order)
        if not order.acked:
            order.acked = True
            self._exec(order, "0", "0", out)
        if order.expire_time is not None:
            self._add_timer(order.expire_time, "expire", order.order_id)

    def _cancel_on_pause(self, market: _Market | None, text: str, out: list[Outbound]) -> None:
        # The docs name no Text for these cancels; the pause's own code is our choice.
        for order in sorted(self._open_orders.values(), key=lambda o: o.seq):
            if (
                order.cancel_on_pause
                and order.is_open
                and (market is None or order.symbol == market.ticker)
            ):
                self._cancel(order, out, text=text)

    def _market_closed_text(self, market: _Market) -> str | None:
        """The 103=2 / CxlRej text that refuses new orders and amends, or ``None``."""
        if self._exchange_paused:
            return "EXCHANGE_PAUSED"
        if self._trading_paused:
            return "TRADING_PAUSED"
        if market.status in ("closed", "settled"):
            return "MARKET_ALREADY_CLOSED"
        if market.status == "paused":
            return "MARKET_INACTIVE"
        return None

    def _parse_price(self, raw: Decimal, dollars: bool, market: _Market) -> Decimal | None:
        """Yes price in dollars, or ``None`` when off the unit's rules or the market's grid."""
        if dollars:
            exp = raw.as_tuple().exponent
            if not isinstance(exp, int) or exp < -4:
                return None
            price = raw
        else:
            if raw != raw.to_integral_value():
                return None
            price = raw / 100
        if not ZERO < price < ONE or price % market.tick != 0:
            return None
        return price

    # --- matching ----------------------------------------------------------------------------

    def _fillable(self, taker: Order, market: _Market) -> tuple[Decimal, Decimal, bool]:
        """(quantity, taker cost) the book would give ``taker`` now, and whether STP stops it."""
        need = taker.leaves_qty
        got, cost = ZERO, ZERO
        for resting in market.book.crossing(taker):
            if resting.account_id == taker.account_id:
                if taker.stp == 2:
                    continue  # the resting order would be cancelled, not traded
                return got, cost, True
            q = min(need - got, resting.leaves_qty)
            got += q
            cost += q * (resting.price if taker.side == BUY else ONE - resting.price)
            if got >= need:
                break
        return got, cost, False

    def _match(
        self,
        taker: Order,
        market: _Market,
        out: list[Outbound],
        *,
        ioc_final: Decimal | None = None,
    ) -> None:
        """Trade ``taker`` against the book at the resting orders' prices, best first."""
        other = SELL if taker.side == BUY else BUY
        while taker.is_open and taker.leaves_qty > 0:
            best = market.book.best(other)
            if best is None or not taker.crosses(best.price):
                return
            if best.account_id == taker.account_id:
                # Self-trade prevention, the taker's choice: 1 taker-at-cross (default), 2 maker.
                # Texts per §4.7; SELF_CROSS_ATTEMPT is kept for replaces that would self-cross.
                if taker.stp == 2:
                    self._cancel(best, out, text="MAKER_CANCEL_FOR_SELF_TRADE_PREVENTION")
                    continue
                self._cancel(taker, out, text="TAKER_CANCEL_FOR_SELF_TRADE_PREVENTION")
                return
            qty = min(taker.leaves_qty, best.leaves_qty)
            self._fill(taker, best, qty, best.price, out, ioc_final=ioc_final)

    def _fill(
        self,
        taker: Order,
        maker: Order,
        qty: Decimal,
        px: Decimal,
        out: list[Outbound],
        *,
        ioc_final: Decimal | None = None,
    ) -> None:
        """One match: both sides' Trade reports (taker first), then order-group accounting."""
        match_id = self._uuid()
        for order, aggressor in ((taker, True), (maker, False)):
            if not order.acked and order.emit_new_before_trade:
                self._exec(order, "0", "0", out)  # 21026=Y: a standalone New first
            order.acked = True
            order.cum_qty += qty
            order.notional += qty * px
            fee, balance, returned = self._book_trade(order, qty, px, aggressor)
            status = "2" if order.cum_qty >= order.order_qty else "1"
            if aggressor and status == "1" and ioc_final is not None and order.cum_qty >= ioc_final:
                # IOC without 21007: the last Trade report closes the order (39=4, LeavesQty 0)
                # so the client never holds a live remainder — REFERENCE §11 #14 leaves this open.
                status = "4"
            if status != "1":
                self._close(order, status)
            else:
                order.status = status
            pos = self._positions.get((order.account_id, order.sub, order.symbol), ZERO)
            self._exec(
                order,
                "F",
                status,
                out,
                fill={
                    "last_qty": qty,
                    "last_px": px,
                    "trd_match_id": match_id,
                    "aggressor": aggressor,
                    "long_qty": max(pos, ZERO),
                    "short_qty": max(-pos, ZERO),
                    "fee": fee,
                    "balance_change": balance,
                    "single_market_return": returned,
                },
            )
        for order in (taker, maker):
            group = self._groups.get(order.group_id) if order.group_id else None
            if group is None:
                continue
            group.fills.append((self._now, qty))
            # "Exceeds" the limit (REFERENCE §5): strictly greater.
            if (
                not group.triggered
                and group.volume(self._now, self.config.order_group_window) > group.limit
            ):
                self._trigger_group(group, out)

    def _book_trade(
        self, order: Order, qty: Decimal, px: Decimal, aggressor: bool
    ) -> tuple[Decimal, Decimal, Decimal]:
        """Move position and cash for one side of a fill: (fee, BALANCE delta, collateral returned).

        Buying Yes costs p per contract; against a held No position the pair is redeemed for $1
        (and vice versa for selling Yes, which buys No at 1 − p).
        """
        k = (order.account_id, order.sub, order.symbol)
        pos = self._positions.get(k, ZERO)
        if order.side == BUY:
            closing = min(qty, max(-pos, ZERO))
            cash = -(qty - closing) * px + closing * (ONE - px)
            self._positions[k] = pos + qty
        else:
            closing = min(qty, max(pos, ZERO))
            cash = -(qty - closing) * (ONE - px) + closing * px
            self._positions[k] = pos - qty
        rate = self.config.taker_fee_rate if aggressor else self.config.maker_fee_rate
        fee = ceil_cents(rate * qty * px * (ONE - px))
        delta = cash - fee
        self._accounts[order.account_id].cash += delta
        return fee, delta, closing

    def _trigger_group(self, group: _OrderGroup, out: list[Outbound]) -> None:
        group.triggered = True
        for order in sorted(group.orders.values(), key=lambda o: o.seq):
            if order.is_open:
                self._cancel(order, out, text="ORDER_GROUP_CANCEL")

    # --- NewOrderSingle ----------------------------------------------------------------------

    def _on_new_order(
        self,
        sess: _Session,
        msg: FixMessage,
        seq_num: int,
        out: list[Outbound],
        fields: dict[int, bytes] | None = None,
    ) -> None:
        acct = self._accounts[sess.account_id]
        flags = sess.flags
        if fields is None:
            fields = msg.first_values()
        get = fields.get
        # `get(tag) or _need(...)`: _need only runs (and raises) when the field is absent or
        # empty; the optional fields below are parsed only when present. One order goes through
        # here for every NewOrderSingle, and most carry none of the optional fields.
        cl = _text(get(11) or _need(fields, 11))
        qty_text = get(38) or _need(fields, 38)
        qty = _dec(qty_text, 38)
        ord_type = get(40) or _need(fields, 40)
        price_text = get(44) or _need(fields, 44)
        raw_price = _dec(price_text, 44)
        side = _text(get(54) or _need(fields, 54))
        symbol = _text(get(55) or _need(fields, 55))
        tif = get(59) or self.config.default_tif.encode()
        expire_raw = get(126)
        expire_time: float | None = None
        if expire_raw is not None:
            try:
                expire_time = parse_utc_timestamp(expire_raw)
            except ValueError:
                raise _FieldProblem(126, 6, "Incorrect data format for value of tag 126") from None
        exec_inst = get(18)
        raw = get(2964)
        stp = None if raw is None else _int(raw, 2964)
        # 526 is the documented group field; 20130 accepted as an alias (REFERENCE §11 #19).
        group_raw = get(526) or get(20130)
        raw = get(21006)
        cancel_on_pause = False if raw is None else (_bool(raw, 21006) or False)
        raw = get(21009)
        max_cost = None if raw is None else _dec(raw, 21009)
        raw = get(100)
        ex_dest = None if raw is None else _int(raw, 100)
        raw = get(79)
        alloc = None if raw is None else _int(raw, 79)
        parties = _parties(fields) if 453 in fields else ()
        quote_id = get(117)
        assert qty is not None and raw_price is not None
        market = self._markets.get(symbol)
        sub = alloc or 0

        def reject(
            reason: int, text: str, price: Decimal | None = None, listeners: bool = True
        ) -> None:
            self._reject_order(
                sess,
                out,
                cl=cl,
                side=side,
                symbol=symbol,
                qty=qty,
                price=price,
                reason=reason,
                text=text,
                index=market.exchange_index if market else None,
                sub=sub if 0 <= sub <= 63 else 0,
                listeners=listeners,
            )

        if not _valid_cl_ord_id(cl):
            return reject(11, "INVALID_ORDER")
        if cl in acct.open_by_cl:
            return reject(6, "ORDER_ALREADY_EXISTS")
        if ord_type != b"2" or side not in (BUY, SELL) or tif not in _TIFS:
            return reject(11, "INVALID_ORDER")
        if tif == b"6" and expire_time is None:
            return reject(11, "INVALID_ORDER")
        post_only = False
        if exec_inst is not None:
            insts = exec_inst.split()
            if not insts or any(i != b"6" for i in insts):
                return reject(11, "INVALID_ORDER")
            post_only = True
        if stp not in (None, 1, 2):
            return reject(11, "INVALID_ORDER")
        if alloc is not None and not 0 <= alloc <= 63:
            return reject(15, "CUSTOMER_ACCOUNT_NOT_FOUND")
        if parties is None:
            return reject(11, "INVALID_ORDER")
        # The grid check and the price rules below cost more than a dict lookup each, and
        # depend on the field's text alone (and the market's fixed tick): memoised by text.
        on_grid = _QTY_ON_GRID.get(qty_text)
        if on_grid is None:
            on_grid = _on_qty_grid(qty)
            if len(_QTY_ON_GRID) >= _DECIMALS_LIMIT:
                _QTY_ON_GRID.clear()
            _QTY_ON_GRID[qty_text] = on_grid
        if not on_grid:
            # 103=13 "incorrect quantity" with the generic text (no quantity text is documented).
            return reject(13, "INVALID_ORDER")
        if max_cost is not None and max_cost <= 0:
            return reject(11, "INVALID_ORDER")
        if market is None or (
            ex_dest is not None and ex_dest >= 0 and ex_dest != market.exchange_index
        ):
            # An explicit ExDestination sends the order to a shard that does not list the market.
            return reject(1, "MARKET_NOT_FOUND")
        prices = market.prices[flags.use_dollars]
        price = prices.get(price_text, _UNSET)
        if price is _UNSET:
            price = self._parse_price(raw_price, flags.use_dollars, market)
            if len(prices) >= _DECIMALS_LIMIT:
                prices.clear()
            prices[price_text] = price
        if price is None:
            return reject(11, "INVALID_ORDER")
        closed = self._market_closed_text(market)
        if closed is not None:
            return reject(2, closed, price)
        if quote_id is not None:
            return self._rfq.on_order_with_quote(sess, msg, cl, side, qty, price, reject, out)
        group: _OrderGroup | None = None
        if group_raw is not None:
            group = self._groups.get(_text(group_raw))
            if (
                group is None
                or group.account_id != acct.account_id
                or group.sub != sub
                or group.exchange_index != market.exchange_index
            ):
                return reject(11, "ORDER_GROUP_NOT_FOUND", price)
            if group.triggered:
                # REFERENCE §11 #16.
                return reject(3, "EXCEEDED_ORDER_GROUP_RISK_LIMIT", price)
        if acct.balance is not None:

            def cost(o_side: str, p: Decimal, q: Decimal) -> Decimal:
                return q * (p if o_side == BUY else ONE - p)

            # Simplified: resting orders reserve their full cost; no netting against positions.
            reserved = sum(
                (cost(o.side, o.price, o.leaves_qty) for o in acct.orders.values()), ZERO
            )
            if reserved + cost(side, price, qty) > acct.balance + acct.cash:
                return reject(3, "INSUFFICIENT_BALANCE", price)
        fault = self._order_faults.popleft() if self._order_faults else None
        if fault is not None and not fault.applied:
            return reject(99, fault.text, price)

        if tif == b"0":
            expire_time = _end_of_day_et(self._now)
        elif tif != b"6":
            expire_time = None
        effective_tif = tif.decode()
        if tif == b"6" and expire_time is not None and expire_time <= self._now:
            effective_tif = "3"  # an ExpireTime already past makes the order IOC (§4.4)
        order = self._new_order(
            account_id=acct.account_id,
            key_id=sess.key_id,
            market=market,
            side=side,
            price=price,
            qty=qty,
            cl_ord_id=cl,
            tif=effective_tif,
            stp=stp or 1,
            sub=sub,
            expire_time=expire_time if effective_tif in ("0", "6") else None,
            post_only=post_only,
            group_id=group.group_id if group else None,
            cancel_on_pause=cancel_on_pause,
            parties=parties,
            emit_new_before_trade=flags.always_emit_new_before_trade,
            ioc_cancel_report=flags.enable_ioc_cancel_report,
        )
        mark = len(out)
        self._register(order)
        self._pending(order, "A", out)
        self._execute_new(order, market, max_cost, out)
        if fault is not None:
            # Applied fault: the order went through but the sender only hears the reject.
            out[mark:] = [o for o in out[mark:] if o.key_id != sess.key_id]
            reject(99, fault.text, price, listeners=False)

    def _execute_new(
        self, order: Order, market: _Market, max_cost: Decimal | None, out: list[Outbound]
    ) -> None:
        best = market.book.best(SELL if order.side == BUY else BUY)
        crosses = best is not None and order.crosses(best.price)
        if order.post_only and crosses:
            return self._cancel(order, out, text="POST_ONLY_CROSS")
        # Nothing on the other side at a price this order takes (most orders that rest): no
        # quantity to find and no trade to make, so neither the book walk nor the matching
        # loop runs.
        got, cost, stp_stop = self._fillable(order, market) if crosses else (ZERO, ZERO, False)
        if order.tif == "4" or max_cost is not None:
            # MaxExecutionCost makes the order all-or-nothing within the cost, as REST's
            # buy_max_cost does (UNCONFIRMED for FIX); it is refused with the FOK text.
            if got < order.leaves_qty or stp_stop or (max_cost is not None and cost > max_cost):
                return self._cancel(order, out, text="FOK_INSUFFICIENT_VOLUME")
        ioc_final = None
        if (
            order.tif == "3"
            and not order.ioc_cancel_report
            and not stp_stop
            and ZERO < got < order.leaves_qty
        ):
            ioc_final = got
        if crosses:
            self._match(order, market, out, ioc_final=ioc_final)
            if not order.is_open:
                return
        if order.tif in ("3", "4"):
            # With 21007=Y, or when nothing traded (there is no Trade report to close it).
            return self._cancel(order, out, text="IMMEDIATE_OR_CANCELLED")
        self._rest(order, market, out)

    # --- OrderCancelRequest / OrderCancelReplaceRequest -------------------------------------

    def _cxl_reject(
        self,
        sess: _Session,
        out: list[Outbound],
        *,
        order: Order | None,
        cl: str,
        orig: str,
        response_to: int,
        reason: int,
        text: str,
    ) -> None:
        body = (
            (37, (order.order_id if order else _NO_ORDER_ID).encode()),
            (11, cl.encode()),
            (41, orig.encode()),
            (39, (order.status if order else "8").encode()),
            (434, str(response_to).encode()),
            (102, str(reason).encode()),
            (58, text.encode()),
        )
        out.append(Outbound(sess.key_id, b"9", body))

    def _find_order(
        self, acct: _Account, orig: str, order_id: str | None
    ) -> tuple[Order | None, Order | None]:
        """(open order, closed order) named by OrigClOrdID (any of its chain) or OrderID."""
        order = acct.open_by_cl.get(orig)
        if order is None and order_id is not None:
            order = acct.orders.get(order_id)
        if order is not None and order_id is not None and order.order_id != order_id:
            return None, None
        closed = None if order is not None else acct.closed_by_cl.get(orig)
        return order, closed

    def _on_cancel(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        self._cancel_or_replace(sess, msg, out, replace=False)

    def _on_replace(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        self._cancel_or_replace(sess, msg, out, replace=True)

    def _cancel_or_replace(
        self, sess: _Session, msg: FixMessage, out: list[Outbound], *, replace: bool
    ) -> None:
        acct = self._accounts[sess.account_id]
        cl = _text(_need(msg, 11))
        orig = _text(_need(msg, 41))
        order_id = msg.get_str(37)
        side = _text(_need(msg, 54))
        symbol = _text(_need(msg, 55))
        alloc = _int(msg.get(79), 79)
        _int(msg.get(100), 100)
        new_qty: Decimal | None = None
        raw_price: Decimal | None = None
        if replace:
            new_qty = _dec(_need(msg, 38), 38)
            ord_type = _need(msg, 40)
            raw_price = _dec(msg.get(44), 44)
        response_to = 2 if replace else 1

        order, closed = self._find_order(acct, orig, order_id)

        def refuse(reason: int, text: str) -> None:
            self._cxl_reject(
                sess,
                out,
                order=order or closed,
                cl=cl,
                orig=orig,
                response_to=response_to,
                reason=reason,
                text=text,
            )

        if order is None:
            if closed is not None and closed.status == "2":
                # Filled: "too late to cancel" (0) for F, "order already fully filled" (2) for G.
                return refuse(2 if replace else 0, "CANNOT_UPDATE_FILLED_ORDER")
            # Unknown, cancelled or expired: the docs name no text; ORDER_NOT_FOUND is ours.
            return refuse(1, "ORDER_NOT_FOUND")
        if (
            order.side != side
            or order.symbol != symbol
            or (alloc is not None and alloc != order.sub)
        ):
            return refuse(1, "ORDER_NOT_FOUND")
        if not _valid_cl_ord_id(cl):
            return refuse(99, "INVALID_ORDER")
        if cl in acct.open_by_cl:
            return refuse(6, "ORDER_ALREADY_EXISTS")
        market = self._markets[order.symbol]
        if self._exchange_paused:
            return refuse(99, "EXCHANGE_PAUSED")
        if not replace:
            self._pending(order, "6", out, cl=cl, orig=order.cl_ord_id)
            self._cancel(order, out, request_cl=cl)
            return
        assert new_qty is not None
        closed_text = self._market_closed_text(market)
        if closed_text is not None:
            return refuse(99, closed_text)
        if ord_type != b"2":
            return refuse(99, "INVALID_ORDER")
        if not _on_qty_grid(new_qty) or new_qty < order.cum_qty:
            return refuse(2, "INVALID_AMEND_QTY_FOR_ORDER")
        price = order.price
        if raw_price is not None:
            parsed = self._parse_price(raw_price, sess.flags.use_dollars, market)
            if parsed is None:
                return refuse(99, "INVALID_PRICE")
            price = parsed
        if order.rfq_quote is not None:
            # An order accepting an RFQ quote waits for the quote's execution; only F applies.
            return refuse(99, "INVALID_ORDER")
        other = SELL if order.side == BUY else BUY
        crossing = [
            o
            for o in market.book.iter_side(other)
            if (o.price <= price if order.side == BUY else o.price >= price)
        ]
        if any(o.account_id == order.account_id and o is not order for o in crossing):
            return refuse(18, "SELF_CROSS_ATTEMPT")
        if order.post_only and crossing:
            # Not documented for amends: refusing keeps the original order, our choice.
            return refuse(99, "POST_ONLY_CROSS")
        prior = order.cl_ord_id
        self._pending(order, "E", out, cl=cl, orig=prior)
        if new_qty == order.cum_qty:
            # Amending down to the filled quantity cancels the order (§4.5).
            self._cancel(order, out, request_cl=cl)
            return
        loses_priority = price != order.price or new_qty > order.order_qty
        market.book.remove(order)
        order.cl_ord_id = cl
        order.chain.append(cl)
        acct.open_by_cl[cl] = order
        order.order_qty = new_qty
        order.price = price
        if loses_priority:
            self._order_seq += 1
            order.seq = self._order_seq
        live = "1" if order.cum_qty > 0 else "0"
        order.status = live
        status = "5" if self.config.replaced_ord_status == "5" else live
        self._exec(order, "5", status, out, orig=prior)
        best = market.book.best(other)
        if best is not None and order.crosses(best.price):
            self._match(order, market, out)
        if order.is_open:
            market.book.add(order)

    # --- OrderMassCancelRequest --------------------------------------------------------------

    def _on_mass_cancel(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        cl = _need(msg, 11)
        req_type = _need(msg, 530)
        last = sess.last_mass_cancel
        if last is not None and self._now - last < self.config.mass_cancel_min_interval:
            out.append(
                self._business_reject(
                    sess.key_id,
                    seq_num,
                    b"q",
                    8,
                    "Rate limit exceeded: 1 mass cancel per second",
                    cl,
                )
            )
            return
        sess.last_mass_cancel = self._now
        op_id = self._uuid().encode()
        if req_type != b"6":
            # 532 values are UNCONFIRMED; standard FIX 0 = mass cancel not supported.
            out.append(
                Outbound(sess.key_id, b"r", ((11, cl), (37, op_id), (531, b"0"), (532, b"0")))
            )
            return
        if self._exchange_paused:
            out.append(
                Outbound(
                    sess.key_id,
                    b"r",
                    ((11, cl), (37, op_id), (531, b"0"), (532, b"99"), (58, b"EXCHANGE_PAUSED")),
                )
            )
            return
        out.append(Outbound(sess.key_id, b"r", ((11, cl), (37, op_id), (531, b"6"))))
        # Scope: orders entered through this session's key, all shards (REFERENCE §11 #26).
        for order in sorted(self._open_orders.values(), key=lambda o: o.seq):
            if order.key_id == sess.key_id and order.is_open:
                self._cancel(order, out)

    # --- order groups ------------------------------------------------------------------------

    def _on_order_group(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        action = _int(_need(msg, 20131), 20131)
        gid_raw = msg.get(20130)
        limit = _int(msg.get(20132), 20132)
        alloc = _int(msg.get(79), 79)
        ex_dest = _int(msg.get(100), 100)
        if action not in (1, 2, 3, 4, 5):
            raise _FieldProblem(20131, 5, "Value is incorrect (out of range) for tag 20131")
        if gid_raw is not None and not _UUID_RE.match(_text(gid_raw)):
            raise _FieldProblem(20130, 5, "Value is incorrect (out of range) for tag 20130")
        if limit is not None and not 1 <= limit <= 1_000_000:
            raise _FieldProblem(20132, 5, "Value is incorrect (out of range) for tag 20132")
        if alloc is not None and not 0 <= alloc <= 63:
            raise _FieldProblem(79, 5, "Value is incorrect (out of range) for tag 79")
        sub = alloc or 0
        index = ex_dest if ex_dest is not None and ex_dest >= 0 else 0

        def bmr(reason: int, text: str) -> None:
            out.append(self._business_reject(sess.key_id, seq_num, b"UOG", reason, text, gid_raw))

        def uoh(group: _OrderGroup, with_limit: bool) -> None:
            body: list[tuple[int, bytes]] = [(20130, group.group_id.encode())]
            if with_limit:
                body.append((20132, str(group.limit).encode()))
            body.append((79, str(group.sub).encode()))
            out.append(Outbound(sess.key_id, b"UOH", tuple(body)))

        if action == 1:
            if gid_raw is not None:
                return bmr(0, "OrderGroupID must not be sent on Create; the exchange assigns it")
            if limit is None:
                return bmr(5, "OrderGroupContractsLimit (20132) is required on Create")
            group = _OrderGroup(
                group_id=self._uuid(),
                account_id=sess.account_id,
                sub=sub,
                exchange_index=index,
                limit=limit,
            )
            self._groups[group.group_id] = group
            return uoh(group, True)
        if gid_raw is None:
            return bmr(5, "OrderGroupID (20130) is required for this action")
        found = self._groups.get(_text(gid_raw))
        if (
            found is None
            or found.account_id != sess.account_id
            or found.sub != sub
            or found.exchange_index != index
        ):
            return bmr(1, "ORDER_GROUP_NOT_FOUND")
        group = found
        window = self.config.order_group_window
        if action == 2:  # Reset
            group.triggered = False
            group.fills.clear()
            uoh(group, False)
        elif action == 3:  # Delete
            uoh(group, False)
            for order in sorted(group.orders.values(), key=lambda o: o.seq):
                self._cancel(order, out, text="ORDER_GROUP_CANCEL")
            del self._groups[group.group_id]
        elif action == 4:  # Trigger
            uoh(group, False)
            self._trigger_group(group, out)
        else:  # Update
            if limit is None:
                return bmr(5, "OrderGroupContractsLimit (20132) is required on Update")
            group.limit = limit
            uoh(group, True)
            if not group.triggered and group.volume(self._now, window) > limit:
                self._trigger_group(group, out)

    # --- drop copy ---------------------------------------------------------------------------

    def _on_event_resend(
        self, sess: _Session, msg: FixMessage, seq_num: int, out: list[Outbound]
    ) -> None:
        begin_raw = _text(_need(msg, 21001))
        end_raw = msg.get_str(21002)
        try:
            begin = _parse_exec_id(begin_raw)
            end = _parse_exec_id(end_raw) if end_raw is not None else None
        except ValueError:
            bad = 21001 if not _valid_exec_id(begin_raw) else 21002
            raise _FieldProblem(bad, 6, f"Incorrect data format for value of tag {bad}") from None
        ref = str(seq_num).encode()

        def u3(reason: int) -> None:
            out.append(Outbound(sess.key_id, b"U3", ((45, ref), (21004, str(reason).encode()))))

        if not self._keys[sess.key_id].drop_copy:
            return u3(5)
        last = sess.last_drop_copy
        if last is not None and self._now - last < self.config.drop_copy_min_interval:
            return u3(1)
        sess.last_drop_copy = self._now
        if self._drop_copy_faults:
            self._drop_copy_faults -= 1
            return u3(2)
        index = begin[2]
        bkey = begin[:2]
        keys, times = self._exec_log.get(index, ([], []))
        i = bisect.bisect_left(keys, bkey)
        if i < len(keys) and times[i] < self._now - self.config.drop_copy_lookback:
            return u3(3)  # part of the requested history has left the 3-hour window
        latest = keys[-1] if keys else None
        if end is not None:
            if end[2] != index or latest is None or end[:2] > latest or end[:2] < bkey:
                return u3(4)
            ekey = end[:2]
        else:
            ekey = latest if latest is not None else bkey
        gk, gr = self._ground.get((sess.account_id, index), ([], []))
        lo = bisect.bisect_left(gk, bkey)
        hi = max(lo, bisect.bisect_right(gk, ekey))
        for rec in gr[lo:hi]:
            out.append(sess.report(rec))
        out.append(Outbound(sess.key_id, b"U2", ((45, ref), (21003, str(hi - lo).encode()))))

    # --- package-internal hooks for the RFQ desk ---------------------------------------------

    def _rfq_trade(
        self,
        *,
        creator_account: str,
        creator_key: str,
        creator_cl: str,
        creator_side: str,
        maker_account: str,
        maker_key: str,
        maker_cl: str,
        maker_sub: int,
        creator_sub: int,
        market: _Market,
        yes_price: Decimal,
        qty: Decimal,
        out: list[Outbound],
        creator_order: Order | None = None,
    ) -> None:
        """Cross an executed RFQ quote: a taker order for the creator against the maker's quote.

        The two orders trade with each other directly at the quote price (the book is not
        consulted) — a simplification of "orders hit the book" (REFERENCE §9.1).
        """
        if creator_order is None:
            sess = self._sessions.get(creator_key)
            flags = sess.flags if sess is not None else _DEFAULT_FLAGS
            creator_order = self._new_order(
                account_id=creator_account,
                key_id=creator_key,
                market=market,
                side=creator_side,
                price=yes_price,
                qty=qty,
                cl_ord_id=creator_cl,
                tif="3",
                sub=creator_sub,
                emit_new_before_trade=flags.always_emit_new_before_trade,
            )
            self._register(creator_order)
        maker_order = self._new_order(
            account_id=maker_account,
            key_id=maker_key,
            market=market,
            side=SELL if creator_side == BUY else BUY,
            price=yes_price,
            qty=qty,
            cl_ord_id=maker_cl,
            tif="3",
            sub=maker_sub,
            rfq_maker=True,
        )
        self._register(maker_order)
        self._fill(creator_order, maker_order, qty, yes_price, out)


def _valid_exec_id(value: str) -> bool:
    try:
        _parse_exec_id(value)
    except ValueError:
        return False
    return True
