"""``bash ops/demo``: the product end to end on one machine, in a few seconds.

A simulated Kalshi gateway runs in-process on 127.0.0.1 (TLS with a throw-away CA, every
endpoint on an OS-chosen port). The demo then does what a trading app does with this library:
log on to KalshiNR with an RSA-PSS signed Logon, place orders and read the ExecutionReports, lose
the connection in the middle of the flow (an injected fault), recover the executions it missed
through the drop copy (KalshiDC, EventResendRequest U1), take a settlement on KalshiPT, log out,
and print a short summary. It exits 0 when what the client saw equals the gateway's ground truth.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import trio

from sessions.driver import FixSession
from sessions.events import ApplicationMessage, SessionEnded
from sessions.testing.pytest_plugin import DEFAULT_ROLE, KEY_ROLES, GatewayFixture, GatewayOptions
from sessions.testing.pytest_plugin import build_gateway
from sessions.testing.keys import make_test_key
from sessions.testing.tls import GatewayTls

TICKER = "KXHIGHNY-26JUL14-B85"


def _order(side: bytes, price: int, qty: int) -> tuple[str, list[tuple[int, bytes]]]:
    cl_ord_id = str(uuid.uuid4())
    return cl_ord_id, [
        (11, cl_ord_id.encode()), (55, TICKER.encode()), (54, side), (38, str(qty).encode()),
        (40, b"2"), (44, str(price).encode()), (59, b"1"),
    ]


async def _reports(session: FixSession, want: int, seen: dict[str, bytes]) -> None:
    """Read ExecutionReports until ``want`` real executions (not pending) were seen."""
    count = 0
    while count < want:
        event = await session.next_event()
        if isinstance(event, SessionEnded):
            return
        if isinstance(event, ApplicationMessage) and event.message.get(35) == b"8":
            exec_id = (event.message.get(17) or b"").decode()
            if exec_id != "-1;-1" and exec_id not in seen:
                seen[exec_id] = event.message.get(150) or b""
                count += 1
                print(f"  ExecutionReport {exec_id:>8}  ExecType={seen[exec_id].decode()} "
                      f"OrdStatus={(event.message.get(39) or b'').decode()} "
                      f"CumQty={(event.message.get(14) or b'').decode()}")


async def demo(workdir: Path) -> int:
    keys = {role: make_test_key(slot, workdir) for role, (slot, _) in KEY_ROLES.items()}
    tls = GatewayTls.generate()
    ca_file = tls.write_ca(workdir / "gateway-ca.pem")
    options = GatewayOptions(tls=True, record_wire=False)
    gateway = build_gateway(options, keys, tls, clock=None)
    seen: dict[str, bytes] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        gw = GatewayFixture(gateway, keys, ca_file, workdir / "store", options)
        print("Simulated Kalshi gateway (TLS) on 127.0.0.1:")
        for endpoint, port in sorted(gw.ports.items(), key=lambda kv: kv[1]):
            print(f"  {endpoint:<10} port {port}")

        print("\n1. KalshiNR: signed Logon, three orders")
        async with gw.connect("KalshiNR") as nr:
            logged_on = await nr.wait_logged_on()
            print(f"  logged on, HeartBtInt={logged_on.heartbeat_interval}s, key "
                  f"{keys[DEFAULT_ROLE['KalshiNR']].key_id}")
            for side, price, qty in ((b"1", 60, 5), (b"1", 62, 3), (b"2", 40, 4)):
                nr.send_app(b"D", _order(side, price, qty)[1])
            await _reports(nr, 3, seen)
            rtt = await nr.test_request(timeout=5)
            print(f"  TestRequest round trip {rtt * 1000:.1f} ms")

            print("\n2. The connection drops while orders fill (injected fault)")
            gw.inject("drop:endpoint=KalshiNR,after=1")
            for side, price, qty in ((b"1", 62, 6), (b"2", 38, 7)):
                nr.send_app(b"D", _order(side, price, qty)[1])
            await _reports(nr, 2, seen)  # returns early: the session ended
        missed = [r for r in gw.ground_truth() if r.exec_id not in seen]
        print(f"  session ended; the client missed {len(missed)} execution(s)")

        print("\n3. KalshiDC: EventResendRequest from the last ExecID seen")
        async with gw.connect("KalshiDC") as dc:
            await dc.wait_logged_on()
            last = max(seen, key=lambda e: tuple(int(p) for p in e.split(";")))
            dc.send_app(b"U1", [(21001, last.encode())])
            recovered = 0
            while True:
                event = await dc.next_event()
                if not isinstance(event, ApplicationMessage):
                    continue
                msg = event.message
                if msg.get(35) == b"8":
                    exec_id = (msg.get(17) or b"").decode()
                    if exec_id not in seen:  # the first one is the inclusive duplicate
                        seen[exec_id] = msg.get(150) or b""
                        recovered += 1
                elif msg.get(35) in (b"U2", b"U3"):
                    print(f"  {msg.get(35).decode()}: {recovered} execution(s) recovered, "
                          f"ResendEventCount={(msg.get(21003) or b'-').decode()}")
                    break

        print("\n4. KalshiPT: the market settles")
        async with gw.connect("KalshiPT") as pt:
            await pt.wait_logged_on()
            gw.settle(TICKER, "yes")
            while True:
                event = await pt.next_event()
                if isinstance(event, ApplicationMessage) and event.message.get(35) == b"UMS":
                    m = event.message
                    print(f"  MarketSettlementReport {m.get_str(55)} result={m.get_str(20107)} "
                          f"price={m.get_str(730)}c")
                    if m.get(893) in (None, b"Y"):
                        break
            await pt.logout()

        truth = {r.exec_id for r in gw.ground_truth()}
        gateway.stop()
    lost = truth - set(seen)
    extra = set(seen) - truth
    print("\nSummary")
    print(f"  executions at the exchange: {len(truth)}")
    print(f"  executions the client holds: {len(seen)} (lost {len(lost)}, unknown {len(extra)})")
    print(f"  faults injected: {len(gateway.fault_log.entries)}; gateway internal errors: "
          f"{len(gateway.internal_errors)}")
    ok = not lost and not extra and not gateway.internal_errors
    print("  OK" if ok else "  MISMATCH")
    return 0 if ok else 1


async def _bounded(workdir: Path) -> int:
    with trio.move_on_after(60):
        return await demo(workdir)
    print("demo did not finish within 60 s", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the process exit code (0: the client saw every execution)."""
    with tempfile.TemporaryDirectory(prefix="kalshi-fix-demo-") as tmp:
        return trio.run(_bounded, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
