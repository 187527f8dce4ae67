"""The application interface: every component for one configuration, built and wired together.

:meth:`Components.build` turns a ``(Config, SupervisorConfig)`` pair into the components that live
on the supervisor's sessions, and :attr:`Components.observers` is the list to hand to the tree::

    config, sup_config = load_supervisor_config("firm.toml")
    app = Components.build(config, sup_config)
    async with Supervisor((config, sup_config), observers=app.observers) as sup:
        app.follow(sup)                                   # status events into app.status
        ticket = await app.orders.new_order("KXHIGHNY-26JUL14-B85", "buy", 5, 41)
        async for item in app.executions:                 # exactly once, in order per order
            ...
    app.close()

:func:`open_app` does the same in one ``async with`` (it owns the Supervisor and closes the
components afterwards). Coordination with the tree (``supervisor/tree.py``, ``kalshi-fix run``):
the tree only needs ``Components.build(config, supervisor_config, clock=..., journal=True)`` and
``.observers`` — standalone mode passes ``journal=True`` so executions are appended to the
``[supervisor.reconciliation] journal`` file — and :meth:`Components.close` after the supervisor
shut down.

What is built:

* ``executions`` — :class:`~supervisor.streams.ExecutionStream` over the account's
  :class:`~supervisor.ledger.ExecutionLedger` in ``state_dir`` (the exactly-once stream; the
  journal in standalone mode), with the shared :class:`~supervisor.orders.OrderTracker`;
* ``recovery`` — :class:`~supervisor.recovery.RecoveryObserver` on the drop-copy session named by
  ``[supervisor.reconciliation]`` (``None`` when reconciliation is disabled);
* ``orders`` — :class:`~supervisor.orderentry.OrderEntry` (new, cancel, replace, mass cancel,
  order groups, the own-order tracker);
* ``kill_switch`` — :class:`~supervisor.killswitch.KillSwitch`, its engaged state kept in
  ``state_dir/killswitch.json`` across restarts;
* ``rfq`` / ``maker`` — :class:`~supervisor.rfq.RfqCreator` (KalshiRT) and
  :class:`~supervisor.rfq.RfqMaker` (KalshiRFQ);
* ``settlements`` — :class:`~supervisor.streams.SettlementStream` (UMS reassembled by Symbol);
* ``status`` — :class:`~supervisor.streams.StatusStream` fed from the tree (:meth:`follow`);
* ``limiter`` — the client-side :class:`~supervisor.ratelimit.RateLimiter` shared by all of them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from sessions.config import Config

from .config import SupervisorConfig, load_supervisor_config
from .errors import SupervisorError
from .journal import FsyncPolicy, JournalWriter
from .killswitch import KillSwitch, TradingGate
from .ledger import ExecutionLedger
from .observer import SessionObserver
from .orderentry import OrderEntry
from .ratelimit import RateLimiter
from .recovery import RecoveryObserver
from .requestlog import RequestLog
from .rfq import RfqCreator, RfqMaker
from .streams import ExecutionStream, SettlementStream, StatusStream

if TYPE_CHECKING:  # pragma: no cover
    from .tree import Supervisor

__all__ = ["Components", "open_app"]

#: File of the reconciliation observer's marks and open gaps, in ``state_dir``.
RECOVERY_STATE_FILE = "recovery-state.json"
#: File of the kill switch's engaged state (survives a restart), in ``state_dir``.
KILL_SWITCH_STATE_FILE = "killswitch.json"
#: The request log's file: the ledger's path plus this (:mod:`supervisor.requestlog`).
REQUEST_LOG_SUFFIX = "-requests"


def _default_account(config: Config, sup: SupervisorConfig) -> str:
    # The ledger is per account (one de-duplication space, one drop copy). The configuration
    # does not name the account; the drop-copy session serves exactly one, so its name is a
    # stable identity for the file (the key id could be rotated).
    dc = sup.reconciliation.drop_copy_session
    if dc is not None:
        return f"dropcopy-{dc}"
    return "default"


@attrs.define(eq=False)
class Components:
    """Every component for one configuration (module docstring). Build with :meth:`build`."""

    executions: ExecutionStream
    orders: OrderEntry
    kill_switch: KillSwitch
    settlements: SettlementStream
    status: StatusStream
    limiter: RateLimiter
    ledger: ExecutionLedger
    recovery: RecoveryObserver | None = None
    rfq: RfqCreator | None = None
    maker: RfqMaker | None = None
    journal: JournalWriter | None = None
    request_log: RequestLog | None = None
    _closed: bool = False

    @classmethod
    def build(
        cls,
        config: Config,
        supervisor_config: SupervisorConfig,
        *,
        clock: Callable[[], float] | None = None,
        journal: bool = False,
        journal_fsync: FsyncPolicy = "always",
        account: str | None = None,
        tier: str | None = None,
        rate_share: float | None = None,
        indexes: Iterable[int] | None = None,
        retry_ambiguous: bool = False,
        recovery_options: dict[str, Any] | None = None,
    ) -> Components:
        """Open the ledger (and the journal when ``journal``) in the configured state
        directory and build every component.

        ``clock`` (epoch seconds) is only used before the supervisor attaches the components;
        ``account`` names the ledger (default: derived from the drop-copy session); ``tier`` and
        ``rate_share`` shape the rate limiter (REFERENCE §10.1), by default ``[supervisor]
        rate_tier`` and ``rate_share``; ``indexes`` are the exchange
        indexes the drop copy always replays, by default ``[supervisor.reconciliation] indexes``
        (all of Kalshi's shards);
        ``retry_ambiguous`` is the default for resending requests a complete replay shows never
        arrived; ``recovery_options`` go to :class:`~supervisor.recovery.RecoveryObserver`.
        """
        state_dir = Path(supervisor_config.state_dir)
        rec = supervisor_config.reconciliation
        now = clock() if clock is not None else None
        ledger = ExecutionLedger.open(
            state_dir, account or _default_account(config, supervisor_config), now=now
        )
        writer: JournalWriter | None = None
        requests: RequestLog | None = None
        try:
            # Beside the ledger, for the same account: requests sent survive a restart.
            requests = RequestLog.open(ledger.path + REQUEST_LOG_SUFFIX, ledger.account)
            if journal:
                writer = JournalWriter.open(rec.journal, fsync=journal_fsync)
            executions = ExecutionStream(ledger, journal=writer, clock=clock)
            recovery: RecoveryObserver | None = None
            if rec.enabled and rec.drop_copy_session is not None:
                recovery = RecoveryObserver(
                    executions,
                    drop_copy=rec.drop_copy_session,
                    state_path=state_dir / RECOVERY_STATE_FILE,
                    indexes=rec.indexes if indexes is None else indexes,
                    lookback_s=rec.lookback_hours * 3600.0,
                    **(recovery_options or {}),
                )
            limiter = RateLimiter(
                supervisor_config.rate_tier if tier is None else tier,
                share=supervisor_config.rate_share if rate_share is None else rate_share,
            )
            gate = TradingGate()
            orders = OrderEntry(
                executions,
                limiter=limiter,
                gate=gate,
                recovery=recovery,
                retry_ambiguous=retry_ambiguous,
                request_log=requests,
            )
            # Loaded now: an engaged switch closes the gate before any session is up.
            kill = KillSwitch(orders, state_path=state_dir / KILL_SWITCH_STATE_FILE)
            profiles = {s.profile.name for s in config.sessions.values()}
            rfq = RfqCreator(gate=gate, limiter=limiter) if "KalshiRT" in profiles else None
            maker = RfqMaker(gate=gate, limiter=limiter) if "KalshiRFQ" in profiles else None
        except BaseException:
            if writer is not None:
                writer.close()
            if requests is not None:
                requests.close()
            ledger.close()
            raise
        return cls(
            executions=executions,
            orders=orders,
            kill_switch=kill,
            settlements=SettlementStream(),
            status=StatusStream(),
            limiter=limiter,
            ledger=ledger,
            recovery=recovery,
            rfq=rfq,
            maker=maker,
            journal=writer,
            request_log=requests,
        )

    @property
    def tracker(self) -> Any:
        """The own-order tracker (open orders, cumulative quantity, average price, status)."""
        return self.executions.tracker

    @property
    def observers(self) -> list[SessionObserver]:
        """The components to attach to the tree, in the order they must hear each event:
        the executions stream first (ledger and tracker are up to date before anyone looks),
        then reconciliation, order entry, the kill switch, RFQ and settlements."""
        out: list[Any] = [self.executions]
        if self.recovery is not None:
            out.append(self.recovery)
        out += [self.orders, self.kill_switch]
        if self.rfq is not None:
            out.append(self.rfq)
        if self.maker is not None:
            out.append(self.maker)
        out.append(self.settlements)
        return out

    def follow(self, supervisor: Supervisor) -> None:
        """Forward the tree's status events into :attr:`status` (a task in the supervisor's
        component nursery, ending with the supervisor)."""
        subscription = supervisor.status_events()

        async def pump() -> None:
            async for event in subscription:
                self.status.publish(event)

        supervisor.spawn(pump)

    def close(self) -> None:
        """Close the journal and the ledger (after the supervisor has shut down). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.journal is not None:
                self.journal.close()
            if self.request_log is not None:
                self.request_log.close()
        finally:
            self.ledger.close()


@asynccontextmanager
async def open_app(
    config: str | os.PathLike[str] | tuple[Config, SupervisorConfig],
    *,
    clock: Callable[[], float] | None = None,
    supervisor_options: dict[str, Any] | None = None,
    **build_options: Any,
) -> AsyncIterator[App]:
    """Build the components, run the supervisor with them, and yield an :class:`App`;
    on exit the supervisor shuts down (every session logs out) and the components close.

    ``build_options`` go to :meth:`Components.build`; ``supervisor_options`` to
    :class:`~supervisor.tree.Supervisor` (``connect``, ``rng`` …).
    """
    from .tree import Supervisor  # the tree imports nothing from here; keep it that way

    if isinstance(config, tuple):
        cfg, sup_cfg = config
    else:
        cfg, sup_cfg = load_supervisor_config(config)
    components = Components.build(cfg, sup_cfg, clock=clock, **build_options)
    try:
        async with Supervisor(
            (cfg, sup_cfg), observers=components.observers, clock=clock,
            **(supervisor_options or {}),
        ) as sup:
            components.follow(sup)
            yield App(components, sup)
    finally:
        components.close()


@attrs.define(eq=False)
class App:
    """What :func:`open_app` yields: the components plus the running supervisor."""

    components: Components
    supervisor: Supervisor

    @property
    def orders(self) -> OrderEntry:
        """Order entry and the own-order tracker."""
        return self.components.orders

    @property
    def executions(self) -> ExecutionStream:
        """The exactly-once executions stream."""
        return self.components.executions

    @property
    def kill_switch(self) -> KillSwitch:
        """The kill switch."""
        return self.components.kill_switch

    @property
    def rfq(self) -> RfqCreator:
        """RFQ creator handles (needs a KalshiRT session)."""
        if self.components.rfq is None:
            raise SupervisorError("no KalshiRT session is configured: RFQ creation needs one")
        return self.components.rfq

    @property
    def maker(self) -> RfqMaker:
        """RFQ maker handles (needs a KalshiRFQ session)."""
        if self.components.maker is None:
            raise SupervisorError("no KalshiRFQ session is configured: quoting needs one")
        return self.components.maker

    @property
    def settlements(self) -> SettlementStream:
        """Settlement reports reassembled per market."""
        return self.components.settlements

    @property
    def status(self) -> StatusStream:
        """Session status events from the tree."""
        return self.components.status

    def handle(self, name: str) -> Any:
        """The session handle ``name`` (to ``await handle.wait_active()``)."""
        return self.supervisor.handle(name)

    async def wait_active(self, *names: str) -> None:
        """Wait until the named sessions (default: all) are logged on."""
        for name in names or tuple(self.supervisor.handles):
            await self.supervisor.handle(name).wait_active()

    async def sleep_until_quiet(self) -> None:  # pragma: no cover - convenience
        """Wait until no drop-copy recovery is pending."""
        if self.components.recovery is not None:
            await self.components.recovery.wait_idle()
        await trio.lowlevel.checkpoint()
