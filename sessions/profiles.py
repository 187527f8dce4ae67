"""One :class:`EndpointProfile` per Kalshi FIX endpoint (prediction exchange, REFERENCE §1.2).

A profile says what the gateway behind one TargetCompID/port accepts: whether it retransmits,
whether every Logon must reset sequence numbers, what traffic it carries and which Kalshi Logon
options may be sent to it. The session layer and the config loader take their defaults from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from .errors import ConfigError

# What an endpoint carries (REFERENCE §1.2, §6, §8, §9.1).
ORDER_ENTRY = "order_entry"
DROP_COPY = "drop_copy"
POST_TRADE = "post_trade"
RFQ_MAKER = "rfq_maker"
RFQ_CREATOR = "rfq_creator"
CAPABILITIES = frozenset({ORDER_ENTRY, DROP_COPY, POST_TRADE, RFQ_MAKER, RFQ_CREATOR})

# Logon options by their sessions.logon.LogonOptions field names.
_EXEC_REPORT_OPTIONS = frozenset(
    {
        "use_dollars",
        "enable_ioc_cancel_report",
        "preserve_original_order_qty",
        "skip_pending_exec_reports",
        "use_expired_ord_status",
        "always_emit_new_before_trade",
        "split_collateral_return",
    }
)
_ORDER_ENTRY_OPTIONS = _EXEC_REPORT_OPTIONS | {"cancel_orders_on_disconnect", "listener_session"}
_RETENTION_OPTIONS = frozenset({"receive_settlement_reports", "message_retention_period"})


@attrs.frozen
class EndpointProfile:
    """What one Kalshi FIX endpoint accepts. ``name`` is its TargetCompID(56)."""

    name: str
    port: int
    #: ResendRequest (35=2) and SequenceReset (35=4) may be sent toward this endpoint.
    retransmission: bool
    #: Default for ResetSeqNumFlag(141)=Y on our Logon.
    reset_seq_num_on_logon: bool
    #: The gateway rejects a Logon without 141=Y; no configuration may turn the reset off.
    reset_mandatory: bool
    #: Whether any reading of Kalshi's pages has this endpoint retransmit, i.e. whether an
    #: operator may switch ``retransmission`` on for it. Never on NR and DC (they answer a
    #: ResendRequest with a Reject, REFERENCE §11 #22).
    retransmission_possible: bool
    #: What the endpoint carries: a subset of :data:`CAPABILITIES`.
    carries: frozenset[str]
    #: The :class:`~sessions.logon.LogonOptions` fields that may be sent to it.
    logon_options: frozenset[str]
    description: str = ""

    @property
    def target_comp_id(self) -> str:
        """TargetCompID(56) of our messages, the same as :attr:`name`."""
        return self.name

    @property
    def order_entry(self) -> bool:
        """Carries NewOrderSingle / cancel / replace (and listener mode)."""
        return ORDER_ENTRY in self.carries

    @property
    def drop_copy(self) -> bool:
        """Answers EventResendRequest (U1) with replayed ExecutionReports."""
        return DROP_COPY in self.carries

    @property
    def post_trade(self) -> bool:
        """Can deliver MarketSettlementReport (UMS)."""
        return POST_TRADE in self.carries

    @property
    def rfq_maker(self) -> bool:
        """Receives RFQ broadcasts and takes quotes from market makers."""
        return RFQ_MAKER in self.carries

    @property
    def rfq_creator(self) -> bool:
        """Takes RFQ creation (R) and quote acceptance (UA)."""
        return RFQ_CREATOR in self.carries

    def admits(self, option: str) -> bool:
        """Whether the Logon option (a ``LogonOptions`` field name) may be sent here."""
        return option in self.logon_options


# Retransmission and 141=Y: Kalshi's pages disagree (REFERENCE §1.2, §1.6, §11 #3). The newer pages
# (May–Aug 2026) have RT and PT retransmit and NR, DC, RFQ require 141=Y; the older ones (and the
# customer's document) have RT and RFQ retransmit and PT require 141=Y. We default to what works
# under both readings:
#   * ResendRequest only toward KalshiRT — the one endpoint both readings agree retransmits.
#   * 141=Y on NR, DC, PT and RFQ. On NR, DC and RFQ the current pages make it mandatory; on PT only
#     the older page does, so PT keeps reset_mandatory=False and an operator may opt into
#     continuity there (a logon refused for it falls back to 141=Y, REFERENCE §1.6).
#   * KalshiRT defaults to continuity (141=N with stored sequence numbers): both readings allow
#     it, and it is what lets messages missed across a disconnect be recovered.
# MessageRetentionPeriod and ReceiveSettlementReports go to RT and PT only (current pages); the
# older "RT and RFQ" reading for 20200 is not followed because RFQ now requires 141=Y.
# ExecutionReport-shaping options are admitted on DC too, because DC replays ExecutionReports
# (REFERENCE §6). RFQ admits UseDollars only: it carries quotes, not ExecutionReports (§11 #23).
_PROFILE_LIST = (
    EndpointProfile(
        name="KalshiNR",
        port=8228,
        retransmission=False,
        reset_seq_num_on_logon=True,
        reset_mandatory=True,
        retransmission_possible=False,
        carries=frozenset({ORDER_ENTRY}),
        logon_options=_ORDER_ENTRY_OPTIONS,
        description="order entry without retransmission; listener mode allowed",
    ),
    EndpointProfile(
        name="KalshiDC",
        port=8229,
        retransmission=False,
        reset_seq_num_on_logon=True,
        reset_mandatory=True,
        retransmission_possible=False,
        carries=frozenset({DROP_COPY}),
        logon_options=_EXEC_REPORT_OPTIONS,
        description="drop copy: replay of historical ExecutionReports on request (U1/U2/U3)",
    ),
    EndpointProfile(
        name="KalshiRT",
        port=8230,
        retransmission=True,
        reset_seq_num_on_logon=False,
        reset_mandatory=False,
        retransmission_possible=True,
        carries=frozenset({ORDER_ENTRY, RFQ_CREATOR, POST_TRADE}),
        logon_options=_ORDER_ENTRY_OPTIONS | _RETENTION_OPTIONS,
        description="order entry with retransmission; RFQ creation; optional settlement reports",
    ),
    EndpointProfile(
        name="KalshiPT",
        port=8231,
        retransmission=False,
        reset_seq_num_on_logon=True,
        reset_mandatory=False,
        retransmission_possible=True,
        carries=frozenset({POST_TRADE}),
        logon_options=_RETENTION_OPTIONS,
        description="post trade: read-only stream of market settlement reports (UMS)",
    ),
    EndpointProfile(
        name="KalshiRFQ",
        port=8232,
        retransmission=False,
        reset_seq_num_on_logon=True,
        reset_mandatory=True,
        # Older pages listed "RFQ (with retransmission)"; an operator may opt in.
        retransmission_possible=True,
        carries=frozenset({RFQ_MAKER}),
        logon_options=frozenset({"use_dollars"}),
        description="market-maker RFQ session: RFQ broadcasts, quotes, confirmations",
    ),
)

#: Every endpoint by TargetCompID, in port order.
PROFILES: Mapping[str, EndpointProfile] = MappingProxyType({p.name: p for p in _PROFILE_LIST})

#: Order-entry host per environment (prediction exchange; ports 8228–8232).
HOSTS: Mapping[str, str] = MappingProxyType(
    {"demo": "fix.demo.kalshi.co", "production": "mm.fix.elections.kalshi.com"}
)


def get_profile(name: str) -> EndpointProfile:
    """The profile of endpoint ``name`` (a TargetCompID such as ``"KalshiNR"``).

    Raises :class:`ConfigError` listing the valid names for anything else.
    """
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        pass
    hint = ""
    if isinstance(name, str):
        lowered = {n.lower(): n for n in PROFILES}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        if close:
            hint = f" (did you mean {lowered[close[0]]}?)"
    raise ConfigError(
        f"unknown endpoint {name!r}{hint}; valid endpoints: {', '.join(PROFILES)}"
    )
