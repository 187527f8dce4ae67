"""Small helpers for tests that talk to the simulated gateway through a
:class:`~sessions.driver.FixSession`: wait for application messages, build orders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import attrs

from ..connection import FixConnection
from ..driver import FixSession
from ..errors import SessionClosed
from ..events import ApplicationMessage, Event, SessionEnded
from ..message import FixMessage, Value
from ..store import MemoryStore, MessageStore

__all__ = ["collect", "connect_with_settings", "next_app", "new_order", "wait_event"]


async def next_app(session: FixSession, msg_types: Collection[bytes] | None = None) -> FixMessage:
    """The next application message (of ``msg_types``, if given); other events are skipped.

    Raises :class:`~sessions.errors.SessionClosed` if the session ends first.
    """
    while True:
        event = await session.next_event()
        if isinstance(event, ApplicationMessage) and (
            msg_types is None or event.message.msg_type in msg_types
        ):
            return event.message
        if isinstance(event, SessionEnded):
            raise SessionClosed(f"session ended while waiting for a message: {event}")


async def collect(
    session: FixSession, count: int, msg_types: Collection[bytes] | None = None
) -> list[FixMessage]:
    """The next ``count`` application messages (of ``msg_types``, if given)."""
    return [await next_app(session, msg_types) for _ in range(count)]


async def wait_event(session: FixSession, kind: type[Event]) -> Event:
    """The next event of type ``kind`` (raises ``SessionClosed`` if the session ends first)."""
    while True:
        event = await session.next_event()
        if isinstance(event, kind):
            return event


def new_order(
    cl_ord_id: str,
    symbol: str,
    side: str | int,
    qty: int | Decimal | str,
    price: int | Decimal | str,
    *,
    tif: str = "1",
    **extra: Value,
) -> list[tuple[int, Value]]:
    """NewOrderSingle (35=D) body fields: limit order, ``side`` 1 buy Yes / 2 sell Yes, price
    in cents (or dollars under UseDollars). ``extra`` maps tag numbers (as ``t<tag>=``) to values,
    e.g. ``t21006="Y"``."""
    fields: list[tuple[int, Value]] = [
        (11, cl_ord_id), (38, str(qty)), (40, "2"), (44, str(price)), (54, str(side)),
        (55, symbol), (59, tif),
    ]
    for name, value in extra.items():
        if not name.startswith("t") or not name[1:].isdigit():
            raise ValueError(f"extra fields are given as t<tag>=value, got {name!r}")
        fields.append((int(name[1:]), value))
    return fields


@asynccontextmanager
async def connect_with_settings(
    gateway: Any,
    endpoint: str,
    key: Any = None,
    *,
    signer: Any = None,
    clock: Callable[[], float] | None = None,
    store: MessageStore | None = None,
    **changes: Any,
) -> AsyncIterator[FixSession]:
    """Connect to the fixture's gateway with hand-tuned :class:`SessionSettings` — for clients
    that break the rules on purpose (no 141=Y where it is mandatory, a wrong TargetCompID, …),
    which a validated :class:`~sessions.config.SessionConfig` would refuse to build.

    ``gateway`` is the ``kalshi_gateway`` fixture; ``changes`` are SessionSettings fields.
    """
    from ..driver import build_settings, open_fix_session
    from ..transport import open_transport

    k = gateway.key(key if key is not None else _DEFAULT_ROLE[endpoint])
    config = gateway.session_config(endpoint, k)
    settings = attrs.evolve(build_settings(config, (signer or k.signer).sign), **changes)
    stream = await open_transport(config.host, config.port, tls=config.tls, ca_file=config.ca_file)
    connection = FixConnection(settings, store if store is not None else MemoryStore())
    async with open_fix_session(
        stream, connection, clock=clock or gateway.clock, peer_name=endpoint
    ) as session:
        yield session


_DEFAULT_ROLE = {
    "KalshiNR": "nr", "KalshiRT": "rt", "KalshiDC": "dc", "KalshiPT": "pt", "KalshiRFQ": "rfq"
}
