"""10,000 missed executions recovered through the drop copy and delivered to the application.

Setup (not timed). The simulated gateway runs in another process (:mod:`ops.benchmarks._gateway`,
``--config`` with one account and two API keys: one for KalshiNR, one for KalshiDC). Before it
serves, the NR key's account trades 10,000 one-lot IOC orders straight in the exchange model
while that key has no connection: 10,000 executions the client missed. Our side is a supervisor
that was down meanwhile: its recovery state (written here in the reconciliation observer's
format) says the ``orders`` session had received everything up to ExecID ``0;0``, and its
execution ledger is empty.

The stack (with ``gc.freeze()`` once it is up, as ``kalshi-fix run`` does and the README
recommends to embedding applications): :class:`supervisor.tree.Supervisor` with the two
sessions (``orders`` on KalshiNR, ``dropcopy`` on KalshiDC) and the components of
:meth:`supervisor.app.Components.build` —
among them the executions component (:class:`supervisor.streams.ExecutionStream` over
:class:`supervisor.ledger.ExecutionLedger`) and the reconciliation observer
(:class:`supervisor.recovery.RecoveryObserver`), exactly as an application runs them. On start the
observer opens a gap for ``orders`` (the process was down); once ``orders`` is back up and the
drop copy is up it holds the ledger and runs a pass: EventResendRequest (U1) from the mark, the
10,000 ExecutionReports come back over TCP through our session core and are ingested, the U2
is decided, the ledger releases. The application reads the exactly-once iterator
(``ExecutionStream.executions()``: each ask acknowledges the previous item).

``reconcile_10k_s`` (target ≤ 2 s): from the start of the pass (``RecoveryReport.started``) to
the application holding the 10,000th execution (and acknowledging it), supervisor clock. Where
the time went, from the same start: ``reconcile_first_report_s`` (U1 → the first replayed
report; the gateway renders and sends the replay in chunks), ``reconcile_receive_s`` (first
report → U2, every report ingested), ``reconcile_release_s`` (U2 → the ledger released),
``reconcile_deliver_s`` (release → the application has all of them). The benchmark refuses to
report unless the pass was complete and the application received exactly the executions the
gateway generated.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import attrs
import trio

from sessions.events import ApplicationMessage
from sessions.testing.keys import TestKey, make_test_key
from supervisor.app import RECOVERY_STATE_FILE, Components
from supervisor.config import WEEKDAYS, load_supervisor_config
from supervisor.observer import ObserverBase
from supervisor.recovery import STATE_VERSION
from supervisor.tree import Supervisor

from . import Figure
from ._procs import BenchmarkError, address, python_module, spawn

__all__ = ["run"]

EXECUTIONS = 10_000
_ACCOUNT = "BENCH-ACCT"  # the gateway's account (the ledger is named by the supervisor)
_TICKER = "KXHIGHNY-26JUL14-B85"
_INDEX = 0
_ORDERS = "orders"
_DROP_COPY = "dropcopy"
_TIMEOUT = 300.0


@attrs.frozen
class _Phases:
    """Seconds from the start of the pass to: the first replayed report, the U2 (every report
    ingested), the release, the last delivery."""

    first_report: float
    replayed: float
    released: float
    delivered: float


def _write_gateway_config(
    tmp: Path, nr_key: str, nr_pub: Path, dc_key: str, dc_pub: Path
) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(
        f"""
[gateway]
tls = false
maintenance = false

[gateway.ports]
KalshiNR = 0
KalshiDC = 0

[[account]]
id = "{_ACCOUNT}"
tier = "Prestige"

[[key]]
id = "{nr_key}"
account = "{_ACCOUNT}"
public_key = "{nr_pub}"
endpoints = ["KalshiNR"]

[[key]]
id = "{dc_key}"
account = "{_ACCOUNT}"
public_key = "{dc_pub}"
endpoints = ["KalshiDC"]

[[market]]
ticker = "{_TICKER}"
exchange_index = {_INDEX}
""",
        encoding="utf-8",
    )
    return path


def _write_supervisor_config(
    tmp: Path, nr: TestKey, nr_port: int, dc: TestKey, dc_port: int
) -> Path:
    # A maintenance weekday three days from today: the benchmark never waits for a window.
    weekday = WEEKDAYS[(dt.date.today().weekday() + 3) % 7]
    path = tmp / "supervisor.toml"
    path.write_text(
        f"""
[session.{_ORDERS}]
endpoint = "KalshiNR"
host = "127.0.0.1"
port = {nr_port}
tls = false
key_id = "{nr.key_id}"
private_key = "{nr.private_key_path}"
store_dir = "store"

[session.{_DROP_COPY}]
endpoint = "KalshiDC"
host = "127.0.0.1"
port = {dc_port}
tls = false
key_id = "{dc.key_id}"
private_key = "{dc.private_key_path}"
store_dir = "store"

[supervisor]
state_dir = "state"
lock_dir = "locks"

[supervisor.maintenance]
weekday = "{weekday}"

[supervisor.reconciliation]
drop_copy_session = "{_DROP_COPY}"
""",
        encoding="utf-8",
    )
    return path


def _write_recovery_state(path: Path) -> None:
    """The state a supervisor leaves behind when it stops with ``orders`` complete up to
    ExecID ``0;0`` on index 0 a minute ago (inside the drop copy's lookback)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = dt.datetime.now(dt.timezone.utc).timestamp() - 60.0
    state = {
        "version": STATE_VERSION,
        "saved": saved,
        "marks": {_ORDERS: {str(_INDEX): "0;0"}},
        "gaps": {},
    }
    path.write_text(json.dumps(state), encoding="utf-8")


class _Clock(ObserverBase):
    """Stamps the drop copy's traffic on the supervisor clock: the first replayed report, and
    the U2 — seen after the reconciliation observer handled it (observers hear each message in
    order), so every report before it has been ingested."""

    def __init__(self, drop_copy: str) -> None:
        self._dc = drop_copy
        self.first_report: float | None = None
        self.u2: float | None = None

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        if name != self._dc:
            return
        mt = event.message.msg_type
        if mt == b"8" and self.first_report is None:
            self.first_report = self.clock()
        elif mt == b"U2":
            self.u2 = self.clock()


async def _measure(executions: int) -> _Phases:
    with tempfile.TemporaryDirectory(prefix="kalshi-bench-reconcile-") as tmp_name:
        tmp = Path(tmp_name)
        nr = make_test_key("bench-reconcile-nr", tmp / "keys")
        dc = make_test_key("bench-reconcile-dc", tmp / "keys")
        gateway_config = _write_gateway_config(
            tmp, nr.key_id, nr.public_key_path, dc.key_id, dc.public_key_path
        )
        args = python_module(
            "ops.benchmarks._gateway", "--config", str(gateway_config),
            "--preload-fills", str(executions), "--preload-key", nr.key_id,
            "--preload-ticker", _TICKER,
        )
        async with spawn(args, ["PRELOADED", "KalshiNR", "KalshiDC"]) as gateway:
            expected = int(gateway.ready["PRELOADED"])
            if expected != executions:
                raise BenchmarkError(
                    f"the gateway preloaded {expected} executions, {executions} were asked for"
                )
            _, nr_port = address(gateway.ready["KalshiNR"])
            _, dc_port = address(gateway.ready["KalshiDC"])
            config = _write_supervisor_config(tmp, nr, nr_port, dc, dc_port)
            _write_recovery_state(tmp / "state" / RECOVERY_STATE_FILE)
            with trio.fail_after(_TIMEOUT):
                return await _recover(config, expected)


async def _recover(config: Path, expected: int) -> _Phases:
    """Run the supervisor until the application consumed ``expected`` executions."""
    cfg, sup_cfg = load_supervisor_config(config)
    app = Components.build(cfg, sup_cfg, indexes=(_INDEX,))
    try:
        recovery = app.recovery
        if recovery is None:
            raise BenchmarkError("the configuration built no reconciliation observer")
        stream = app.executions
        stamps = _Clock(_DROP_COPY)
        passes = recovery.reports.subscribe()
        released: list[float] = []
        recovery.on_pass.append(lambda report: released.append(stamps.clock()))
        async with Supervisor((cfg, sup_cfg), observers=[*app.observers, stamps]) as sup:
            gc.freeze()  # as `kalshi-fix run` does once up (README: Latency)
            # The application: the exactly-once iterator, acking each item by asking for the
            # next one (and the last by one more ask).
            consumer = stream.executions()
            delivered = 0
            while delivered < expected:
                await consumer.__anext__()
                delivered += 1
            if consumer.next_nowait() is not None:
                raise BenchmarkError("the application received more executions than generated")
            done = sup.clock()
            report = await passes.get()
        if not report.complete or report.new != expected:
            raise BenchmarkError(
                f"the recovery pass was {'complete' if report.complete else 'incomplete'} with "
                f"{report.new} new executions of {report.replayed} replayed; "
                f"{expected} were expected"
            )
        if stamps.first_report is None or stamps.u2 is None or not released:
            raise BenchmarkError("the drop copy's replay was not seen by the application's seam")
        t0 = report.started
        return _Phases(
            stamps.first_report - t0, stamps.u2 - t0, released[0] - t0, done - t0
        )
    finally:
        app.close()
        gc.unfreeze()  # the benchmarks that run after this one start as they would alone


def run(*, executions: int = EXECUTIONS) -> Iterable[Figure]:
    """``reconcile_10k_s`` (seconds to recover and deliver ``executions`` missed executions;
    the name says the count when it is not 10k) and where that time went."""
    p = trio.run(_measure, executions)
    name = "reconcile_10k_s" if executions == EXECUTIONS else f"reconcile_{executions}_s"
    yield (name, p.delivered, "s")
    yield ("reconcile_first_report_s", p.first_report, "s")
    yield ("reconcile_receive_s", p.replayed - p.first_report, "s")
    yield ("reconcile_release_s", p.released - p.replayed, "s")
    yield ("reconcile_deliver_s", p.delivered - p.released, "s")
