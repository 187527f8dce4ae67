"""A toy trading strategy, written against the public session API only: buy ``target`` Yes
contracts of one market on KalshiNR, one IOC order at a time, and survive disconnects.

KalshiNR has no retransmission: an ExecutionReport in flight when the connection drops is gone
for this session. So after every (re)connect the strategy asks the drop copy (KalshiDC, its own
API key) for every execution since the last one it saw, de-duplicates by ExecID and only then
trades on — it never buys more than ``target``, whatever was lost.

The test next to it (``test_my_strategy.py``) runs it against the simulated gateway with a
dropped connection.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import attrs
import trio

from sessions.config import SessionConfig
from sessions.driver import FixSession, connect_session
from sessions.errors import KalshiFixError
from sessions.events import ApplicationMessage


@attrs.define
class Accumulator:
    """Buys ``target`` contracts of ``ticker`` at no more than ``limit_cents``."""

    order_entry: SessionConfig
    drop_copy: SessionConfig
    ticker: str
    target: int
    limit_cents: int
    #: Epoch-seconds clock; ``None`` = the driver's default (wall time).
    clock: Callable[[], float] | None = None
    #: Filled quantity per ExecID (so a report seen twice counts once).
    fills: dict[str, Decimal] = attrs.Factory(dict)
    last_exec_id: str = "0;0"
    orders_sent: int = 0
    reconnects: int = 0

    @property
    def position(self) -> Decimal:
        return sum(self.fills.values(), Decimal(0))

    def apply(self, report: dict[int, bytes]) -> None:
        """Count a Trade report once, whichever session it came from."""
        exec_id = report.get(17, b"").decode()
        if report.get(150) == b"F" and exec_id not in self.fills:
            self.fills[exec_id] = Decimal(report[32].decode())
        if exec_id and exec_id != "-1;-1" and _exec_key(exec_id) > _exec_key(self.last_exec_id):
            self.last_exec_id = exec_id

    async def run(self) -> None:
        while self.position < self.target:
            try:
                await self.reconcile()
                async with connect_session(self.order_entry, clock=self.clock) as session:
                    await session.wait_logged_on()
                    while self.position < self.target:
                        await self.buy_one(session)
                    await session.logout()
            except KalshiFixError:
                # Dropped, refused, timed out …: wait a little, then reconcile and go on.
                self.reconnects += 1
                await trio.sleep(2.0)

    async def buy_one(self, session: FixSession) -> None:
        self.orders_sent += 1
        cl_ord_id = f"acc-{self.orders_sent}"
        session.send_app("D", [
            (11, cl_ord_id), (38, "1"), (40, "2"), (44, str(self.limit_cents)), (54, "1"),
            (55, self.ticker), (59, "3"),  # IOC: it fills now or not at all
        ])
        while True:
            event = await session.next_event()
            if not isinstance(event, ApplicationMessage) or event.message.msg_type != b"8":
                continue
            report = dict(event.message.pairs)
            if report.get(11) != cl_ord_id.encode():
                continue
            self.apply(report)
            if report.get(39) in (b"2", b"4", b"8"):  # filled, cancelled or rejected: done
                return

    async def reconcile(self) -> None:
        """Replay executions since the last one seen, through the drop copy."""
        async with connect_session(self.drop_copy, clock=self.clock) as dc:
            await dc.wait_logged_on()
            dc.send_app("U1", [(21001, self.last_exec_id)])
            while True:
                event = await dc.next_event()
                if not isinstance(event, ApplicationMessage):
                    continue
                msg_type = event.message.msg_type
                if msg_type == b"8":
                    self.apply(dict(event.message.pairs))
                elif msg_type in (b"U2", b"U3"):
                    break
            await dc.logout()


def _exec_key(exec_id: str) -> tuple[int, int]:
    clock, _, event = exec_id.partition(";")
    return int(clock), int(event.split(";")[0])
