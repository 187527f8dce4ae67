"""Kalshi's optional Logon fields (REFERENCE §2.1, §7) and the rules that tie them together.

:class:`LogonOptions` holds what a session asks for at Logon; :meth:`LogonOptions.validate` checks
it against an :class:`~sessions.profiles.EndpointProfile` before anything is sent, so a combination
the gateway would refuse is caught at configuration time with the rule named.
"""

from __future__ import annotations

from typing import Any

import attrs

from . import tags
from .errors import ConfigError, LogonOptionsError
from .profiles import PROFILES, EndpointProfile

#: HeartBtInt(108) bounds in seconds. Kalshi (prediction) requires more than 3 (REFERENCE §2.1).
MIN_HEARTBEAT_INTERVAL = 4
# Not a Kalshi limit: the gateway notices a dead connection only after about HeartBtInt, and until
# then the API key stays busy ("already exists") and CancelOrdersOnDisconnect does not fire. A
# minute keeps both waits within what the docs describe (~60 s).
MAX_HEARTBEAT_INTERVAL = 60

#: MessageRetentionPeriod(20200) bounds in hours (documented maximum 72).
MIN_RETENTION_HOURS = 1
MAX_RETENTION_HOURS = 72


@attrs.frozen
class _Option:
    field: str
    tag: int
    fix_name: str


# Wire order of the options: ascending tag, so to_pairs() is stable whatever was set.
OPTIONS: tuple[_Option, ...] = (
    _Option("cancel_orders_on_disconnect", tags.CANCEL_ORDERS_ON_DISCONNECT, "CancelOrdersOnDisconnect"),
    _Option("listener_session", tags.LISTENER_SESSION, "ListenerSession"),
    _Option("receive_settlement_reports", tags.RECEIVE_SETTLEMENT_REPORTS, "ReceiveSettlementReports"),
    _Option("message_retention_period", tags.MESSAGE_RETENTION_PERIOD, "MessageRetentionPeriod"),
    _Option("use_dollars", tags.USE_DOLLARS, "UseDollars"),
    _Option("enable_ioc_cancel_report", tags.ENABLE_IOC_CANCEL_REPORT, "EnableIocCancelReport"),
    _Option("preserve_original_order_qty", tags.PRESERVE_ORIGINAL_ORDER_QTY, "PreserveOriginalOrderQty"),
    _Option("skip_pending_exec_reports", tags.SKIP_PENDING_EXEC_REPORTS, "SkipPendingExecReports"),
    _Option("use_expired_ord_status", tags.USE_EXPIRED_ORD_STATUS, "UseExpiredOrdStatus"),
    _Option("always_emit_new_before_trade", tags.ALWAYS_EMIT_NEW_BEFORE_TRADE, "AlwaysEmitNewBeforeTrade"),
    _Option("split_collateral_return", tags.SPLIT_COLLATERAL_RETURN, "SplitCollateralReturn"),
)
_BY_FIELD = {o.field: o for o in OPTIONS}


def _optional_bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and type(value) is not bool:
        o = _BY_FIELD[attribute.name]
        raise LogonOptionsError(
            f"{o.fix_name} ({o.tag}) must be true, false or unset, got {type(value).__name__}"
        )


def _optional_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and type(value) is not int:
        o = _BY_FIELD[attribute.name]
        raise LogonOptionsError(
            f"{o.fix_name} ({o.tag}) must be a whole number of hours or unset, "
            f"got {type(value).__name__}"
        )


def _bool_field() -> Any:
    return attrs.field(default=None, validator=_optional_bool)


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@attrs.frozen(kw_only=True)
class LogonOptions:
    """Kalshi's optional Logon fields. ``None`` = not sent (the gateway's default applies).

    Booleans go on the wire as ``Y``/``N``; an explicit ``False`` is sent as ``N``.
    """

    #: 8013: cancel this session's open orders on any disconnect, even a clean Logout.
    cancel_orders_on_disconnect: bool | None = _bool_field()
    #: 20126: read-only listener mode (KalshiNR/KalshiRT; needs 21011=Y, excludes 8013=Y).
    listener_session: bool | None = _bool_field()
    #: 20127: receive MarketSettlementReport (RT default N; PT default Y).
    receive_settlement_reports: bool | None = _bool_field()
    #: 20200: hours the gateway keeps messages for resend (1..72; gateway default 24).
    message_retention_period: int | None = attrs.field(default=None, validator=_optional_int)
    #: 21005: prices in fixed-point dollars instead of integer cents.
    use_dollars: bool | None = _bool_field()
    #: 21007: explicit cancel report for the unfilled rest of an IOC order.
    enable_ioc_cancel_report: bool | None = _bool_field()
    #: 21008: OrderQty(38) keeps the original quantity in every ExecutionReport.
    preserve_original_order_qty: bool | None = _bool_field()
    #: 21011: no PENDING_NEW / PENDING_REPLACE / PENDING_CANCEL reports.
    skip_pending_exec_reports: bool | None = _bool_field()
    #: 21012: expiry-style system cancels reported as Expired (150=C/39=C).
    use_expired_ord_status: bool | None = _bool_field()
    #: 21026: a standalone New report always precedes the first Trade report.
    always_emit_new_before_trade: bool | None = _bool_field()
    #: 21027: trade reports carry the collateral-return split (21030/21031).
    split_collateral_return: bool | None = _bool_field()

    def is_set(self, field: str) -> bool:
        """Whether the option ``field`` (a field name) will be sent."""
        return getattr(self, field) is not None

    def validate(self, profile: EndpointProfile) -> None:
        """Check the options against Kalshi's rules for ``profile``.

        Raises :class:`LogonOptionsError` naming the first rule broken.
        """
        for o in OPTIONS:
            if self.is_set(o.field) and not profile.admits(o.field):
                allowed = [p.name for p in PROFILES.values() if p.admits(o.field)]
                raise LogonOptionsError(
                    f"{o.fix_name} ({o.tag}) is only allowed on {_join(allowed)}, "
                    f"not on {profile.name}"
                )
        hours = self.message_retention_period
        if hours is not None and not MIN_RETENTION_HOURS <= hours <= MAX_RETENTION_HOURS:
            raise LogonOptionsError(
                "MessageRetentionPeriod (20200) must be "
                f"{MIN_RETENTION_HOURS}..{MAX_RETENTION_HOURS} hours, got {hours}"
            )
        if self.listener_session:
            if self.skip_pending_exec_reports is not True:
                raise LogonOptionsError(
                    "ListenerSession (20126=Y) requires SkipPendingExecReports (21011=Y)"
                )
            if self.cancel_orders_on_disconnect:
                raise LogonOptionsError(
                    "ListenerSession cannot be combined with CancelOrdersOnDisconnect (8013=Y): "
                    "a listener places no orders"
                )

    def to_pairs(self) -> list[tuple[int, bytes]]:
        """The set options as Logon body fields, in ascending tag order."""
        pairs: list[tuple[int, bytes]] = []
        for o in OPTIONS:
            value = getattr(self, o.field)
            if value is None:
                continue
            if type(value) is bool:
                pairs.append((o.tag, b"Y" if value else b"N"))
            else:
                pairs.append((o.tag, str(value).encode("ascii")))
        return pairs

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The option names accepted by the constructor (and in a config's logon table)."""
        return tuple(o.field for o in OPTIONS)


def validate_heartbeat_interval(seconds: object) -> int:
    """Check a HeartBtInt(108) value and return it.

    Kalshi (prediction) requires more than 3 seconds; above :data:`MAX_HEARTBEAT_INTERVAL` a dead
    connection would go unnoticed too long. Raises :class:`ConfigError`.
    """
    if type(seconds) is not int:
        raise ConfigError(
            f"must be an integer >= {MIN_HEARTBEAT_INTERVAL}, got {type(seconds).__name__}"
        )
    if seconds < MIN_HEARTBEAT_INTERVAL:
        raise ConfigError(
            f"must be an integer >= {MIN_HEARTBEAT_INTERVAL}, got {seconds} "
            "(Kalshi requires HeartBtInt > 3)"
        )
    if seconds > MAX_HEARTBEAT_INTERVAL:
        raise ConfigError(
            f"must be at most {MAX_HEARTBEAT_INTERVAL} seconds, got {seconds} "
            "(a longer interval leaves a dead connection undetected and the API key blocked)"
        )
    return seconds
