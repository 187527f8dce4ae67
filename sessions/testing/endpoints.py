"""What each simulated Kalshi endpoint accepts and how its acceptor session is set up.

The client-side :mod:`sessions.profiles` says what *we* may send to an endpoint; this module is
the gateway's side of the same table (REFERENCE §1.2, current pages, §11 #3): which endpoints
answer ResendRequest, where ``141=Y`` is mandatory, and which inbound application MsgTypes each
endpoint understands (anything else gets Reject ``373=11`` from the session core).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from ..errors import ConfigError
from ..profiles import PROFILES, EndpointProfile
from ..settings import Role, SessionSettings

__all__ = ["ENDPOINTS", "EndpointSpec", "endpoint_spec", "acceptor_settings"]


@attrs.frozen
class EndpointSpec:
    """The gateway's rules for one endpoint (its TargetCompID is :attr:`name`)."""

    name: str
    profile: EndpointProfile
    #: The gateway keeps sent application messages and answers ResendRequest (RT and PT on the
    #: current pages). Elsewhere a ResendRequest gets Reject 373=11 (§11 #22).
    retransmission: bool
    #: A Logon without ResetSeqNumFlag(141)=Y is refused.
    reset_mandatory: bool
    #: Application MsgTypes a client may send here.
    inbound: frozenset[bytes]
    #: The documented port in production (the simulator binds OS-chosen ports unless told).
    default_port: int


def acceptor_settings(
    spec: EndpointSpec,
    *,
    heartbeat_interval: int = 30,
    max_message_size: int = 65536,
    sending_time_tolerance: float | None = 30.0,
    logon_timeout: float = 10.0,
) -> SessionSettings:
    """:class:`SessionSettings` for the gateway side of a connection to ``spec``.

    The gateway signs nothing and learns the client's CompID from its Logon. ``heartbeat_interval``
    is replaced by the client's HeartBtInt once the Logon arrives.
    """
    return SessionSettings(
        role=Role.ACCEPTOR,
        sender_comp_id=spec.name,
        heartbeat_interval=heartbeat_interval,
        reset_seq_num_on_logon=False,
        retransmission=spec.retransmission,
        sending_time_tolerance=sending_time_tolerance,
        application_msg_types=spec.inbound,
        # Kalshi (prediction) requires HeartBtInt > 3 (REFERENCE §2.1, §11 #6).
        min_heartbeat_interval=4,
        max_message_size=max_message_size,
        logon_timeout=logon_timeout,
    )


# Inbound application traffic per endpoint (REFERENCE §4.1, §5, §6, §8, §9.1). KalshiPT is
# read-only: nothing but session messages may arrive there.
_ORDER_ENTRY = frozenset({b"D", b"F", b"G", b"UOG"})
_INBOUND: dict[str, frozenset[bytes]] = {
    "KalshiNR": _ORDER_ENTRY | {b"q"},
    "KalshiRT": _ORDER_ENTRY | {b"R", b"UA", b"UE"},
    "KalshiDC": frozenset({b"U1"}),
    "KalshiPT": frozenset(),
    "KalshiRFQ": frozenset({b"S", b"Z", b"U7"}),
}
# Current pages (May–Aug 2026): RT and PT retransmit; NR, DC and RFQ require 141=Y (§1.2, §11 #3).
_RETRANSMISSION = {"KalshiRT", "KalshiPT"}
_RESET_MANDATORY = {"KalshiNR", "KalshiDC", "KalshiRFQ"}

#: The five endpoints of the prediction order-entry host, in port order.
ENDPOINTS: Mapping[str, EndpointSpec] = MappingProxyType(
    {
        name: EndpointSpec(
            name=name,
            profile=profile,
            retransmission=name in _RETRANSMISSION,
            reset_mandatory=name in _RESET_MANDATORY,
            inbound=_INBOUND[name],
            default_port=profile.port,
        )
        for name, profile in PROFILES.items()
    }
)


def endpoint_spec(name: str) -> EndpointSpec:
    """The spec of endpoint ``name``; :class:`ConfigError` listing the valid names otherwise."""
    try:
        return ENDPOINTS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown endpoint {name!r}; valid endpoints: {', '.join(ENDPOINTS)}"
        ) from None
