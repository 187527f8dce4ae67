"""What the application reads: the executions stream (exactly once), settlements, status events.

Three components live here.

:class:`ExecutionStream` — the executions component. Every ExecutionReport (35=8) and
OrderCancelReject (35=9) that reaches the supervisor goes through :meth:`ExecutionStream.ingest`:
live ones from the order-entry and listener sessions (this class is a
:class:`~supervisor.observer.SessionObserver` for those), replayed ones from the drop copy (the
reconciliation observer, :mod:`supervisor.recovery`, feeds them in). Each report is offered to the
durable :class:`~supervisor.ledger.ExecutionLedger` — which de-duplicates by ExecID, merges
replays with the live stream and persists delivery progress — and applied to the shared
:class:`~supervisor.orders.OrderTracker`. The application consumes the ledger's delivery queue::

    async for item in components.executions:          # a DeliveredExecution
        handle(item.message)                          # finish before asking for the next one

Asking for the next item acknowledges the previous one (the ledger's ack-on-next rule), so a
crash of the process neither loses nor repeats an execution: the item being processed when the
process died is delivered again, every acknowledged one never is. Only one such consumer may
iterate at a time (there is one acknowledgement pointer per ledger).

Once attached to the supervisor, live offers use the ledger's group commit: a burst of reports
shares one transaction, committed together with the consumer's next ack or, at the latest, by a
task that runs when the session's task has no more events to hand over (the durability argument
is in :mod:`supervisor.ledger`). Nothing reaches the consumer before it is committed.

Standalone mode writes the same stream to a JSON-lines journal (:mod:`supervisor.journal`):
with ``journal=`` the journal is the consumer — items are written (journal first, then ack) as
soon as they are released — and the in-process iterator is refused, because two consumers cannot
share one acknowledgement pointer. :meth:`ExecutionStream.subscribe` is available in both modes:
a live, non-durable copy of everything delivered (dashboards, logs).

:class:`SettlementStream` — MarketSettlementReports (35=UMS, REFERENCE §8) reassembled by Symbol
until LastFragment(893)=Y (or until TotNumMarketSettlementReports pages were seen), one
:class:`Settlement` per market, de-duplicated by MarketSettlementReportID(20105).

:class:`StatusStream` — the tree's :class:`~supervisor.observer.StatusEvent` values, fanned out to
any number of readers. The tree calls :meth:`StatusStream.publish`.

All three fan out through :class:`Fanout`: each subscriber has its own queue, so a slow reader
delays nobody else.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Generic, TypeVar

import attrs
import trio

from sessions.events import ApplicationMessage
from sessions.message import FixMessage

from .errors import SupervisorError
from .journal import JournalWriter, drain_to_journal, sync_ledger
from .ledger import (
    DEFAULT_KEEP_S,
    LOG_BATCH_ROWS,
    DeliveredExecution,
    ExecutionLedger,
    Source,
)
from .observer import ObserverBase, SessionHandle, Spawn, StatusEvent
from .orders import OrderTracker, ReportError

__all__ = [
    "ExecutionIterator",
    "ExecutionStream",
    "Fanout",
    "IngestProblem",
    "Settlement",
    "SettlementStream",
    "StatusStream",
    "Subscription",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_REPORT_TYPES = (b"8", b"9")


class ConsumerBusy(SupervisorError):
    """A second exactly-once consumer was started while one is active (or in journal mode)."""


# ----------------------------------------------------------------------------- fan-out


class Subscription(Generic[T]):
    """One reader's queue of a :class:`Fanout`; iterate it (``async for``) or call
    :meth:`get`. Close it (or leave its ``with`` block) to stop receiving."""

    def __init__(self, fanout: Fanout[T], maxlen: int | None) -> None:
        self._fanout = fanout
        self._items: deque[T] = deque(maxlen=maxlen)
        self._wake = trio.Event()
        self.closed = False
        #: Items dropped because the reader fell more than ``maxlen`` behind.
        self.dropped = 0

    def _put(self, item: T) -> None:
        if self._items.maxlen is not None and len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self._wake.set()

    def get_nowait(self) -> T | None:
        """The next item if one is queued, else ``None``."""
        return self._items.popleft() if self._items else None

    def pending(self) -> list[T]:
        """Take every queued item now."""
        out = list(self._items)
        self._items.clear()
        return out

    async def get(self) -> T:
        """Wait for the next item."""
        while not self._items:
            if self.closed:
                raise trio.EndOfChannel("subscription closed")
            self._wake = trio.Event()
            await self._wake.wait()
        return self._items.popleft()

    def close(self) -> None:
        """Stop receiving (a waiting :meth:`get` ends with ``trio.EndOfChannel``)."""
        if not self.closed:
            self.closed = True
            self._fanout._subscribers.discard(self)
            self._wake.set()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.get()
            except trio.EndOfChannel:
                return


class Fanout(Generic[T]):
    """Synchronous publish, asynchronous per-subscriber consumption. Items published before a
    subscription began are not replayed to it (``history`` keeps the last few for late
    readers that want them)."""

    def __init__(self, *, history: int = 0) -> None:
        self._subscribers: set[Subscription[T]] = set()
        self.history: deque[T] = deque(maxlen=history or None) if history else deque(maxlen=0)

    def publish(self, item: T) -> None:
        """Hand ``item`` to every current subscriber (never blocks)."""
        if self.history.maxlen != 0:
            self.history.append(item)
        for sub in list(self._subscribers):
            sub._put(item)

    def subscribe(self, *, maxlen: int | None = None) -> Subscription[T]:
        """A new reader. ``maxlen`` bounds its queue (oldest items are dropped and counted in
        ``dropped``); ``None`` keeps everything."""
        sub: Subscription[T] = Subscription(self, maxlen)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        """How many readers are subscribed."""
        return len(self._subscribers)


# ----------------------------------------------------------------------------- executions


@attrs.frozen
class IngestProblem:
    """A report the ledger or the tracker could not use (malformed ExecID, ...): it is not
    delivered. Published on :attr:`ExecutionStream.problems` so it is seen, never swallowed."""

    session: str | None
    source: str
    reason: str
    message: FixMessage = attrs.field(eq=False, repr=False)


class ExecutionStream(ObserverBase):
    """The executions component (module docstring).

    ``ledger`` is the account's open :class:`ExecutionLedger`; ``tracker`` the own-order tracker
    to keep up to date (a new one, rebuilt from the ledger's history, when ``None``);
    ``journal`` makes this standalone mode. ``clock`` gives epoch seconds (replaced by the
    supervisor's in :meth:`attach`). Acked rows older than ``keep_s`` are pruned at most every
    ``prune_every`` seconds; so are the tracker's closed orders beyond the
    ``keep_closed_orders`` most recent (:meth:`OrderTracker.forget_closed`).
    """

    def __init__(
        self,
        ledger: ExecutionLedger,
        *,
        tracker: OrderTracker | None = None,
        journal: JournalWriter | None = None,
        clock: Callable[[], float] | None = None,
        keep_s: float = DEFAULT_KEEP_S,
        prune_every: float = 600.0,
        keep_closed_orders: int = 10_000,
    ) -> None:
        self.ledger = ledger
        self.tracker = tracker if tracker is not None else OrderTracker()
        self.journal = journal
        self.clock: Callable[[], float] = clock or _no_clock
        self.handles: dict[str, SessionHandle] = {}
        self._keep_s = keep_s
        self._prune_every = prune_every
        self._keep_closed_orders = keep_closed_orders
        self._last_prune: float | None = None
        # A parking lot rather than an Event replaced at every change: this runs for every
        # burst of reports, and a lot with nobody waiting costs nothing to wake.
        self._changed = trio.lowlevel.ParkingLot()
        self._consumer: ExecutionIterator | None = None
        # Group commit (see the ledger's docstring): once attached, live offers are committed
        # by a task started at the first offer of a burst, which runs when the session's
        # events stop coming (or earlier, by whichever delivery comes first).
        self._spawn: Spawn | None = None
        self._commit_scheduled = False
        self._write_behind_scheduled = False
        self._checkpointing = False
        #: Live copy of every delivered item (not durable; see module docstring).
        self.delivered: Fanout[DeliveredExecution] = Fanout()
        #: Reports that could not be used.
        self.problems: Fanout[IngestProblem] = Fanout(history=100)
        # The tracker is rebuilt from what was released before a restart; reports released later
        # (e.g. a hold that survived the restart) are applied when they are released.
        self._apply_to_tracker(ledger.history())
        self._applied_through = ledger.last_delivery_id
        # A hold that survived a restart has reports staged before it that this tracker never
        # saw; reports staged from now on are applied as they are ingested.
        self._staged_unapplied = ledger.holding
        if journal is not None:
            sync_ledger(journal, ledger)
            drain_to_journal(ledger, journal)
    
    # ------------------------------------------------------------------ observer

    def attach(
        self, handles: dict[str, SessionHandle], spawn: Spawn, clock: Callable[[], float]
    ) -> None:
        super().attach(handles, spawn, clock)
        self._spawn = spawn
        # The offer log is written behind by a task (_write_behind) once a burst is delivered;
        # an offer does it itself only if that task falls far behind.
        self.ledger.write_behind_at = 8 * LOG_BATCH_ROWS

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        reports, fields = self._live_reports(name, (event,))
        if reports:
            self.ingest(reports, source="live", session=name, fields=fields)

    def application_messages(self, name: str, events: Sequence[ApplicationMessage]) -> None:
        """One read's worth: its reports go to the ledger in one offer (one transaction)."""
        reports, fields = self._live_reports(name, events)
        if reports:
            # The burst is whole: commit it now rather than from a task spawned for it.
            self.ingest(reports, source="live", session=name, defer_commit=False, fields=fields)

    def _live_reports(
        self, name: str, events: Iterable[ApplicationMessage]
    ) -> tuple[list[FixMessage], list[dict[int, bytes]]]:
        """The reports among ``events`` and their field maps (the core's, read once)."""
        reports: list[FixMessage] = []
        fields: list[dict[int, bytes]] = []
        handle = self.handles.get(name)
        # Drop-copy replays belong to the reconciliation observer (it counts them per request).
        if handle is not None and handle.config.profile.drop_copy:
            return reports, fields
        for e in events:
            f = e.field_map()
            if f.get(35) in _REPORT_TYPES:
                reports.append(e.message)
                fields.append(f)
        return reports, fields

    # ------------------------------------------------------------------ feeding

    def ingest(
        self,
        reports: Iterable[FixMessage],
        *,
        source: Source,
        session: str | None,
        now: float | None = None,
        fields: list[dict[int, bytes]] | None = None,
        defer_commit: bool = True,
    ) -> int:
        """Offer reports to the ledger and apply them to the tracker; returns how many were new.

        A report neither can identify is published on :attr:`problems` and skipped; the others
        are still taken. ``fields`` are the reports' ``first_values()``, in order, when the
        caller has read them already. ``defer_commit=False`` commits before returning; by
        default, when the stream is attached to a supervisor, a task commits once the caller's
        burst is over (several calls, one transaction).
        """
        when = self.clock() if now is None else now
        msgs = list(reports)
        if fields is None or len(fields) != len(msgs):
            # Read once, for the ledger and the tracker alike.
            fields = [m.first_values() for m in msgs]
        bad: set[int] = set()
        # Without a task to commit later (not attached to a supervisor), commit at once.
        defer = self._spawn is not None and defer_commit
        try:
            fresh = self.ledger.offer_many(
                msgs, source=source, session=session, now=when, defer_commit=defer,
                fields=fields,
            )
        except ReportError:
            # One bad report must not hold back the good ones: offer them one by one.
            fresh = 0
            for m, f in zip(msgs, fields):
                try:
                    fresh += self.ledger.offer_many(
                        (m,), source=source, session=session, now=when, defer_commit=defer,
                        fields=(f,),
                    )
                except ReportError as e:
                    bad.add(id(m))
                    self.problems.publish(IngestProblem(session, source, str(e), m))
        if defer and self.ledger.uncommitted and not self._commit_scheduled:
            assert self._spawn is not None  # defer implies it
            self._commit_scheduled = True
            self._spawn(self._commit_burst)
        if (
            self._spawn is not None and not self._write_behind_scheduled
            and self.ledger.log_rows >= LOG_BATCH_ROWS
        ):
            self._write_behind_scheduled = True
            self._spawn(self._write_behind)
        apply = self.tracker.apply
        for m, f in zip(msgs, fields):
            if bad and id(m) in bad:
                continue
            try:
                apply(m, fields=f)
            except ReportError as e:
                self.problems.publish(IngestProblem(session, source, str(e), m))
        if not self.ledger.holding:
            # Released at once: already applied to the tracker above.
            self._applied_through = self.ledger.last_delivery_id
        self._after_change(when)
        return fresh

    async def _commit_burst(self) -> None:
        """Commit what the burst of events just offered. Trio runs this task only once the
        session's task waits for more input, so one commit covers every report it read."""
        # Step aside once: a consumer woken by the same burst then commits the offers together
        # with its ack (one commit instead of two). Shielded, so a shutdown cannot skip the
        # commit (closing the ledger would commit anyway).
        await trio.lowlevel.cancel_shielded_checkpoint()
        self._commit_scheduled = False
        self.ledger.commit()

    async def _write_behind(self) -> None:
        """Write the ledger's offer log behind into its tables — one transaction now and then,
        about 1 ms for a batch — once the consumer woken by the burst had its turn, rather
        than in the middle of delivering it, and in steps of a few rows with the scheduler in
        between, so that an order or a report arriving meanwhile waits for a step, not for the
        batch (a stall every 128 executions was what the round trip's p99 was made of)."""
        # Two steps aside: the consumer, woken by the burst, runs in the first.
        await trio.lowlevel.cancel_shielded_checkpoint()
        await trio.lowlevel.cancel_shielded_checkpoint()
        try:
            # Shielded like the rest: a shutdown finishes the batch (close() would anyway).
            while not self.ledger.write_behind_step():
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._write_behind_scheduled = False
        if self.ledger.checkpoint_due and not self._checkpointing:
            # Copying ~1,000 pages back takes milliseconds: in a thread, beside the loop.
            self._checkpointing = True
            try:
                await trio.to_thread.run_sync(self.ledger.checkpoint)
            finally:
                self._checkpointing = False

    def hold(self) -> None:
        """Stop releasing until :meth:`release` (a gap is being recovered)."""
        self.ledger.hold()

    def release(self) -> int:
        """Release what arrived during the hold (merged in per-order ExecID order)."""
        n = self.ledger.release()
        if self._staged_unapplied:
            self._staged_unapplied = False
            self._apply_released()
        else:
            self._applied_through = self.ledger.last_delivery_id
        self._after_change(self.clock())
        return n

    @property
    def holding(self) -> bool:
        """Whether a hold is in force."""
        return self.ledger.holding

    def _apply_released(self) -> None:
        while self._applied_through < self.ledger.last_delivery_id:
            items = self.ledger.next_undelivered(500, after=self._applied_through)
            if not items:
                # Acked already (a consumer got there first): nothing left to apply.
                self._applied_through = self.ledger.last_delivery_id
                break
            self._apply_to_tracker(i.message for i in items)
            self._applied_through = items[-1].delivery_id

    def _apply_to_tracker(self, messages: Iterable[FixMessage]) -> None:
        for m in messages:
            try:
                self.tracker.apply(m)
            except ReportError as e:
                self.problems.publish(IngestProblem(None, "ledger", str(e), m))

    def _after_change(self, now: float) -> None:
        if self.journal is not None:
            # Journal first, then ack (drain_to_journal); the live copy follows the journal.
            while True:
                items = self.ledger.next_undelivered(1000)
                if not items:
                    break
                self.journal.append_many(items)
                self.ledger.ack(items[-1].delivery_id)
                for item in items:
                    self.delivered.publish(item)
        self._changed.unpark_all()
        if self._last_prune is None or now - self._last_prune >= self._prune_every:
            self._last_prune = now
            if self.ledger.acked_through and not self.ledger.holding:
                self.ledger.prune(now, keep_s=self._keep_s)
            self.tracker.forget_closed(self._keep_closed_orders)

    async def wait_changed(self) -> None:
        """Return after the next ingest or release."""
        await self._changed.park()

    # ------------------------------------------------------------------ consuming

    def __aiter__(self) -> ExecutionIterator:
        return self.executions()

    def executions(self) -> ExecutionIterator:
        """The exactly-once iterator (module docstring). Raises :class:`ConsumerBusy` when
        another one is active or a journal consumes the stream."""
        if self.journal is not None:
            raise ConsumerBusy(
                f"the executions are consumed by the journal {self.journal.path!r} (standalone "
                "mode); read the journal, or use subscribe() for a live, non-durable copy"
            )
        if self._consumer is not None and not self._consumer.closed:
            raise ConsumerBusy(
                "another exactly-once consumer is iterating the executions; there is one "
                "acknowledgement pointer per ledger — close it first (or use subscribe())"
            )
        self._consumer = ExecutionIterator(self)
        return self._consumer

    def subscribe(self, *, maxlen: int | None = None) -> Subscription[DeliveredExecution]:
        """A live, non-durable copy of every item as it is delivered (to the exactly-once
        consumer or the journal)."""
        return self.delivered.subscribe(maxlen=maxlen)

    @property
    def undelivered(self) -> int:
        """Released items the consumer has not acknowledged yet."""
        return self.ledger.undelivered_count()


class ExecutionIterator:
    """Exactly-once consumption with ack-on-next (see :class:`ExecutionStream`).

    Stop with :meth:`close` (or use it as ``async with``): leaving an ``async for`` with
    ``break`` does not end it, and the stream accepts one consumer at a time. To stop after an
    item was fully processed, :meth:`ack` it first; otherwise it is delivered again to the next
    consumer (the crash rule)."""

    def __init__(self, stream: ExecutionStream) -> None:
        self._stream = stream
        self._cursor = stream.ledger.cursor()
        self._last: int | None = None
        self.closed = False

    def __aiter__(self) -> ExecutionIterator:
        return self

    async def __anext__(self) -> DeliveredExecution:
        while True:
            if self.closed:
                raise StopAsyncIteration
            item = self.next_nowait()  # acknowledges the item returned last time
            if item is not None:
                return item
            await self._stream.wait_changed()

    def next_nowait(self) -> DeliveredExecution | None:
        """Like ``await anext(it)`` but returns ``None`` instead of waiting."""
        if self.closed:
            return None
        item = self._cursor.next()
        if item is not None:
            self._last = item.delivery_id
            self._stream.delivered.publish(item)
        return item

    def ack(self) -> None:
        """Acknowledge the item returned last now (its processing is finished), rather than
        when the next one is asked for."""
        if self._last is not None and not self.closed:
            self._stream.ledger.ack(self._last)

    def close(self) -> None:
        """Stop consuming. The item returned last is *not* acknowledged unless :meth:`ack` was
        called: it is delivered again to the next consumer, as after a crash."""
        self.closed = True

    async def aclose(self) -> None:
        """Async generator-style close."""
        self.close()

    async def __aenter__(self) -> ExecutionIterator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _no_clock() -> float:
    raise SupervisorError(
        "ExecutionStream has no clock yet: pass clock= or attach it to the supervisor first"
    )


# ----------------------------------------------------------------------------- settlement


@attrs.frozen
class Settlement:
    """One market's settlement, reassembled from its MarketSettlementReport pages (REFERENCE §8).

    ``pages`` are the raw messages in arrival order; ``parties`` one dict per
    NoMarketSettlementPartyIDs entry with the party tags as strings (nested groups flattened
    in order: ``collateral`` and ``fees`` are lists of ``(amount, type)``). ``complete`` is
    False only for a settlement published on :meth:`SettlementStream.flush`.
    """

    symbol: str
    result: str | None
    settlement_price: Decimal | None
    clearing_business_date: str | None
    report_ids: tuple[str, ...]
    parties: tuple[dict[str, object], ...]
    pages: tuple[FixMessage, ...] = attrs.field(eq=False, repr=False)
    session: str | None = None
    complete: bool = True


_PARTY_TAGS = {20109: "party_id", 20110: "party_role", 704: "long_qty", 705: "short_qty"}


def _parse_parties(msg: FixMessage) -> list[dict[str, object]]:
    parties: list[dict[str, object]] = []
    current: dict[str, object] | None = None
    pending_collateral: list[str] = []
    pending_fee: list[str] = []
    for tag, value in msg.pairs:
        v = value.decode("latin-1")
        if tag == 20109:
            current = {"party_id": v, "collateral": [], "fees": []}
            parties.append(current)
            continue
        if current is None:
            continue
        if tag in _PARTY_TAGS:
            current[_PARTY_TAGS[tag]] = v
        elif tag == 1704:
            pending_collateral = [v]
        elif tag == 1705 and pending_collateral:
            current["collateral"].append((pending_collateral[0], v))  # type: ignore[attr-defined]
            pending_collateral = []
        elif tag == 137:
            pending_fee = [v]
        elif tag == 139 and pending_fee:
            current["fees"].append((pending_fee[0], v))  # type: ignore[attr-defined]
            pending_fee = []
    return parties


@attrs.define
class _Assembly:
    pages: list[FixMessage] = attrs.Factory(list)
    ids: list[str] = attrs.Factory(list)
    total: int | None = None
    session: str | None = None


class SettlementStream(ObserverBase):
    """Reassembles UMS pages by Symbol (module docstring); read with :meth:`subscribe`.

    Pages are keyed by MarketSettlementReportID(20105), so a retransmitted or duplicated page
    is counted once. An assembly interrupted by a disconnect simply continues when the rest
    arrives (KalshiPT retransmits); :meth:`flush` publishes what is incomplete.
    """

    def __init__(self, *, history: int = 100) -> None:
        self._assemblies: dict[str, _Assembly] = {}
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._seen_limit = 100_000
        #: Every completed settlement.
        self.settlements: Fanout[Settlement] = Fanout(history=history)

    def subscribe(self, *, maxlen: int | None = None) -> Subscription[Settlement]:
        """A reader of completed settlements."""
        return self.settlements.subscribe(maxlen=maxlen)

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        if event.field_map().get(35) != b"UMS":
            return
        self.offer(event.message, session=name)

    def offer(self, msg: FixMessage, *, session: str | None = None) -> Settlement | None:
        """Take one UMS page; returns the settlement it completed, if any."""
        symbol = msg.get_str(55)
        report_id = msg.get_str(20105)
        if symbol is None:
            return None
        if report_id is not None:
            if report_id in self._seen:
                return None
            self._seen.add(report_id)
            self._seen_order.append(report_id)
            if len(self._seen_order) > self._seen_limit:
                self._seen.discard(self._seen_order.popleft())
        asm = self._assemblies.setdefault(symbol, _Assembly(session=session))
        asm.pages.append(msg)
        if report_id is not None:
            asm.ids.append(report_id)
        total = msg.get(20106)
        if total is not None and total.isdigit():
            asm.total = int(total)
        last = msg.get(893)
        # 893 absent on a single-page settlement: it is complete by itself (REFERENCE §8 lists
        # 893 as optional; a missing LastFragment means there is no fragmentation).
        done = last == b"Y" or last is None or (
            asm.total is not None and len(asm.pages) >= asm.total
        )
        if not done:
            return None
        del self._assemblies[symbol]
        return self._publish(symbol, asm, complete=True)

    def flush(self) -> list[Settlement]:
        """Publish every incomplete assembly as it is (``complete=False``)."""
        out = [self._publish(s, a, complete=False) for s, a in list(self._assemblies.items())]
        self._assemblies.clear()
        return out

    def _publish(self, symbol: str, asm: _Assembly, *, complete: bool) -> Settlement:
        first = asm.pages[0]
        price: Decimal | None
        try:
            raw = first.get(730)
            price = None if raw is None else Decimal(raw.decode("ascii"))
        except (InvalidOperation, UnicodeDecodeError):
            price = None
        parties: list[dict[str, object]] = []
        for page in asm.pages:
            parties.extend(_parse_parties(page))
        settlement = Settlement(
            symbol=symbol,
            result=first.get_str(20107),
            settlement_price=price,
            clearing_business_date=first.get_str(715),
            report_ids=tuple(asm.ids),
            parties=tuple(parties),
            pages=tuple(asm.pages),
            session=asm.session,
            complete=complete,
        )
        self.settlements.publish(settlement)
        return settlement


# ----------------------------------------------------------------------------- status


class StatusStream:
    """Fan-out of the tree's :class:`StatusEvent` values. The tree calls :meth:`publish`; the
    application reads with :meth:`subscribe`. ``latest`` keeps the last event per session."""

    def __init__(self, *, history: int = 200) -> None:
        self.events: Fanout[StatusEvent] = Fanout(history=history)
        self.latest: dict[str, StatusEvent] = {}

    def publish(self, event: StatusEvent) -> None:
        """Record and fan out one status change."""
        self.latest[event.name] = event
        self.events.publish(event)

    def subscribe(self, *, maxlen: int | None = None) -> Subscription[StatusEvent]:
        """A reader of status events from now on (see :attr:`latest` for the current state)."""
        return self.events.subscribe(maxlen=maxlen)
