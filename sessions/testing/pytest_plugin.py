"""pytest plugin (registered through the ``pytest11`` entry point): the ``kalshi_gateway`` fixture.

Installing kalshi-fix-supervisor makes the fixture available to every trio-mode test suite
(``trio_mode = true``, pytest-trio). Each test gets its own in-process simulated Kalshi gateway
(:class:`~sessions.testing.gateway.Gateway`) with all five endpoints on OS-chosen ports of
127.0.0.1, TLS with a throw-away CA, two accounts with one API key per role, two markets with
resting liquidity, and its clock tied to Trio's — so under ``autojump_clock`` a test can sit
out heartbeat timeouts or cross the Thursday maintenance window in milliseconds::

    async def test_reconnect(kalshi_gateway, autojump_clock):
        gw = kalshi_gateway
        async with gw.connect("KalshiNR") as session:       # the "nr" key, TLS, Logon done
            await session.wait_logged_on()
            gw.inject("drop:endpoint=KalshiNR,after=2")     # cut it after two more messages
            session.send_app("D", order_fields)
            ...
        assert gw.ground_truth() == ...                      # what really happened

What the fixture yields (:class:`GatewayFixture`):

* ``ports`` / ``port(endpoint)``, ``host``, ``tls``, ``ca_file`` (the CA to trust);
* ``keys`` — :class:`~sessions.testing.keys.TestKey` by role: ``nr``, ``rt``, ``dc``, ``pt``,
  ``listener`` (account ``ACCT-1``) and ``rfq``, ``maker`` (account ``ACCT-2``); each has
  ``key_id``, ``private_key_path`` and a ready ``signer``. Keys are generated once per test run;
* ``session_config(endpoint, key=...)`` — a :class:`~sessions.config.SessionConfig` for the
  endpoint (what a user's own code would load from its TOML), and ``connect(endpoint, key=...)``
  — :func:`~sessions.driver.connect_session` with the gateway's clock and a per-(endpoint, key)
  in-memory store that survives reconnects (so KalshiRT continuity works);
* ``clock`` — the gateway's epoch clock. Code that connects by itself must pass
  ``clock=kalshi_gateway.clock`` so its SendingTime agrees with the gateway's (30 s rule);
* ``inject(fault)`` (a :class:`~sessions.testing.faults.Fault` or a spec string such as
  ``"stall:endpoint=KalshiNR,duration=90"``), ``fault_log``, ``wire_log``, ``restart()``;
* ``exchange``, ``ground_truth(account)``, ``settle(ticker, result)``, ``markets``;
* ``gateway`` itself for anything else.

Options come from the ``kalshi_gateway`` marker (or by overriding the
``kalshi_gateway_options`` fixture); the keywords are the fields of :class:`GatewayOptions`::

    @pytest.mark.kalshi_gateway(tls=False, seed=7, faults=["garble:after=3"],
                                start=THURSDAY_0659_ET)

At teardown the gateway is stopped and the test fails if the gateway caught an internal error.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay lazy: this module loads in every run
    from ..config import SessionConfig
    from ..driver import FixSession
    from ..store import MemoryStore
    from .exchange import ExecRecord
    from .faults import Fault, FaultLog, WireLog
    from .gateway import Gateway
    from .keys import TestKey
    from .tls import GatewayTls

__all__ = [
    "BASE_EPOCH",
    "DEFAULT_MARKETS",
    "GatewayFixture",
    "GatewayOptions",
    "KEY_ROLES",
    "kalshi_gateway",
    "kalshi_gateway_options",
]

#: Default gateway start: Monday 2026-07-13 10:00 New York time (EDT), well clear of the
#: Thursday maintenance window. A fixed start keeps wire logs reproducible.
BASE_EPOCH = _dt.datetime(2026, 7, 13, 14, 0, tzinfo=_dt.timezone.utc).timestamp()

#: Role → (key slot, account). Kalshi allows one connection per key, so each concurrent session
#: of a test needs its own role.
KEY_ROLES: dict[str, tuple[str, str]] = {
    "nr": ("gw-trader-nr", "ACCT-1"),
    "rt": ("gw-trader-rt", "ACCT-1"),
    "dc": ("gw-trader-dc", "ACCT-1"),
    "pt": ("gw-trader-pt", "ACCT-1"),
    "listener": ("gw-trader-listener", "ACCT-1"),
    "rfq": ("gw-maker-rfq", "ACCT-2"),
    "maker": ("gw-maker-nr", "ACCT-2"),
}
#: The key used for an endpoint when a test names none.
DEFAULT_ROLE = {
    "KalshiNR": "nr", "KalshiRT": "rt", "KalshiDC": "dc", "KalshiPT": "pt", "KalshiRFQ": "rfq"
}
#: Markets listed by default: (ticker, exchange index).
DEFAULT_MARKETS: tuple[tuple[str, int], ...] = (
    ("KXHIGHNY-26JUL14-B85", 0),
    ("KXBTC-26JUL14-T60000", 2),
)
# Resting liquidity per market: (side, price in cents, quantity).
_LIQUIDITY = (("sell", 60, 10), ("sell", 62, 100), ("buy", 40, 10), ("buy", 38, 100))


@attrs.frozen(kw_only=True)
class GatewayOptions:
    """What the ``kalshi_gateway`` fixture sets up (marker keywords use these names)."""

    tls: bool = True
    seed: int = 0
    #: Faults of the run: :class:`Fault` objects or spec strings.
    faults: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    #: The gateway clock's reading when the test starts (epoch seconds).
    start: float = BASE_EPOCH
    #: ``None``: Kalshi's Thursday 03:00–05:00 New York window.
    maintenance: Any = None
    reset_after_maintenance: bool = False
    markets: tuple[tuple[str, int], ...] = attrs.field(default=DEFAULT_MARKETS, converter=tuple)
    #: Rest the default liquidity on every market.
    liquidity: bool = True
    #: Account balance in dollars (``None`` = unlimited).
    balance: Any = None
    exchange: Any = None
    #: Record every byte (``wire_log``).
    record_wire: bool = True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kalshi_gateway(**options): options of the kalshi_gateway fixture "
        "(tls, seed, faults, start, maintenance, reset_after_maintenance, markets, liquidity, "
        "balance, exchange, record_wire)",
    )


@pytest.fixture(scope="session")
def _kalshi_gateway_material(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, TestKey], GatewayTls, Path]:
    """Keys (slow to generate) and TLS material, once per test run."""
    from .keys import make_test_key
    from .tls import GatewayTls

    directory = tmp_path_factory.mktemp("kalshi-gateway")
    keys = {role: make_test_key(slot, directory) for role, (slot, _) in KEY_ROLES.items()}
    tls = GatewayTls.generate()
    ca_file = tls.write_ca(directory / "gateway-ca.pem")
    return keys, tls, ca_file


@pytest.fixture
def kalshi_gateway_options(request: pytest.FixtureRequest) -> GatewayOptions:
    """The options of the test's gateway: the ``kalshi_gateway`` marker's keywords."""
    marker = request.node.get_closest_marker("kalshi_gateway")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    return GatewayOptions(**kwargs)


class GatewayFixture:
    """What the ``kalshi_gateway`` fixture yields (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway,
        keys: dict[str, TestKey],
        ca_file: Path | None,
        store_dir: Path,
        options: GatewayOptions,
    ) -> None:
        self.gateway = gateway
        self.keys = keys
        self.ca_file = ca_file
        self.options = options
        self._store_dir = store_dir
        self._stores: dict[tuple[str, str], MemoryStore] = {}

    # --- where and who ------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.gateway.config.host

    @property
    def ports(self) -> dict[str, int]:
        return self.gateway.ports

    def port(self, endpoint: str) -> int:
        return self.gateway.ports[endpoint]

    @property
    def tls(self) -> bool:
        return self.gateway.tls is not None

    @property
    def markets(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.options.markets)

    def key(self, role: str | TestKey) -> TestKey:
        """A key by role (``"nr"``, ``"rt"`` …) or the key itself."""
        if isinstance(role, str):
            return self.keys[role]
        return role

    # --- time -------------------------------------------------------------------------------
    def clock(self) -> float:
        """The gateway's clock (epoch seconds); give it to anything that connects."""
        return self.gateway.clock()

    # --- sessions -----------------------------------------------------------------------------
    def session_config(
        self, endpoint: str, key: str | TestKey | None = None, **overrides: Any
    ) -> SessionConfig:
        """A :class:`SessionConfig` for ``endpoint`` with ``key`` (default: the endpoint's role).

        ``overrides`` are SessionConfig fields (``heartbeat_interval``, ``logon``, …).
        """
        from ..config import SessionConfig
        from ..profiles import get_profile

        k = self.key(key if key is not None else DEFAULT_ROLE[endpoint])
        values: dict[str, Any] = dict(
            name=f"{endpoint}-{k.slot}",
            profile=get_profile(endpoint),
            host=self.host,
            port=self.port(endpoint),
            key_id=k.key_id,
            private_key=k.private_key_path,
            tls=self.tls,
            ca_file=self.ca_file if self.tls else None,
            store_dir=self._store_dir,
        )
        values.update(overrides)
        return SessionConfig(**values)

    def client_store(self, endpoint: str, key: str | TestKey | None = None) -> MemoryStore:
        """The client-side store ``connect`` uses for (endpoint, key); kept across connects."""
        from ..store import MemoryStore

        k = self.key(key if key is not None else DEFAULT_ROLE[endpoint])
        store = self._stores.get((endpoint, k.key_id))
        if store is None:
            store = self._stores[(endpoint, k.key_id)] = MemoryStore(now=self.clock())
        return store

    @asynccontextmanager
    async def connect(
        self,
        endpoint: str,
        key: str | TestKey | None = None,
        *,
        store: Any = None,
        signer: Any = None,
        **overrides: Any,
    ) -> AsyncIterator[FixSession]:
        """Connect and start a session (Logon sent; ``await session.wait_logged_on()``).

        Uses the gateway's clock, the key's signer and :meth:`client_store` unless given.
        """
        from ..driver import connect_session

        k = self.key(key if key is not None else DEFAULT_ROLE[endpoint])
        config = self.session_config(endpoint, k, **overrides)
        async with connect_session(
            config,
            store=store if store is not None else self.client_store(endpoint, k),
            signer=signer if signer is not None else k.signer,
            clock=self.clock,
        ) as session:
            yield session

    # --- faults and state -------------------------------------------------------------------
    def inject(self, fault: Fault | str) -> None:
        """Inject a fault now (see :meth:`Gateway.inject`)."""
        self.gateway.inject(fault)

    @property
    def fault_log(self) -> FaultLog:
        return self.gateway.fault_log

    @property
    def wire_log(self) -> WireLog | None:
        return self.gateway.wire_log

    def restart(self) -> None:
        """Cut every connection and forget session state; executions are kept."""
        self.gateway.restart()

    @property
    def exchange(self) -> Any:
        return self.gateway.exchange

    def ground_truth(self, account: str = "ACCT-1") -> list[ExecRecord]:
        """Every execution the gateway generated for ``account``."""
        return self.gateway.ground_truth(account)

    def settle(self, ticker: str, result: str, **kwargs: Any) -> None:
        """Settle a market now (MarketSettlementReports go out on KalshiPT)."""
        self.gateway.settle(ticker, result, **kwargs)


def build_gateway(
    options: GatewayOptions,
    keys: dict[str, TestKey],
    tls_material: GatewayTls | None,
    clock: Any,
) -> Gateway:
    """A configured, not yet running gateway as the fixture sets it up."""
    from .exchange import ExchangeConfig
    from .gateway import Gateway, GatewayConfig
    from ..maintenance import KALSHI_MAINTENANCE

    config = GatewayConfig(
        tls=options.tls,
        tls_material=tls_material if options.tls else None,
        seed=options.seed,
        faults=options.faults,
        maintenance=options.maintenance if options.maintenance is not None else KALSHI_MAINTENANCE,
        reset_after_maintenance=options.reset_after_maintenance,
        exchange=options.exchange if options.exchange is not None else ExchangeConfig(),
        record_wire=options.record_wire,
    )
    gateway = Gateway(config, clock=clock)
    for account in sorted({acct for _, acct in KEY_ROLES.values()}):
        gateway.add_account(account, balance=options.balance)
    for role, (_, account) in KEY_ROLES.items():
        gateway.add_key(keys[role].key_id, account, keys[role].public_key)
    for ticker, index in options.markets:
        gateway.add_market(ticker, exchange_index=index)
        if options.liquidity:
            for side, price, qty in _LIQUIDITY:
                gateway.add_liquidity(ticker, side, price, qty)
    return gateway


@pytest.fixture
async def kalshi_gateway(
    _kalshi_gateway_material: tuple[dict[str, TestKey], GatewayTls, Path],
    kalshi_gateway_options: GatewayOptions,
    tmp_path: Path,
) -> AsyncIterator[GatewayFixture]:
    """A running simulated Kalshi gateway for this test (see the module docstring)."""
    import trio

    keys, tls, ca_file = _kalshi_gateway_material
    options = kalshi_gateway_options
    t0 = trio.current_time()
    start = options.start

    def clock() -> float:
        return start + (trio.current_time() - t0)

    gateway = build_gateway(options, keys, tls, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        fixture = GatewayFixture(
            gateway, keys, ca_file if options.tls else None, tmp_path / "client-stores", options
        )
        try:
            yield fixture
        finally:
            gateway.stop()
    if gateway.internal_errors:
        pytest.fail("simulated gateway caught internal errors:\n" + "\n".join(gateway.internal_errors))

