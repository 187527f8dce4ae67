"""10,000 missed executions recovered through the drop copy and delivered to the application.

Setup (not timed): the simulated gateway runs in another process
(:mod:`ops.benchmarks._gateway`, ``--config`` with one account and two API keys: ``nr`` for
KalshiNR, ``dc`` for KalshiDC). Before it serves, the ``nr`` key's account trades 10,000 one-lot
IOC orders straight in the exchange model while that key has no connection, so all 10,000
executions are ones the client missed. Our side opens an empty execution ledger
(:class:`supervisor.ledger.ExecutionLedger`, SQLite, default durability) and logs the ``dc``
session on (:func:`sessions.driver.connect_session`, durable sequence store).

Timed (``reconcile_10k_s``, target ≤ 2 s): from the moment recovery begins to the moment the
application has consumed the 10,000th execution —

1. the ledger holds (a gap is being recovered), :func:`supervisor.reconcile.plan_recovery`
   plans one EventResendRequest per exchange index — the ledger knows no ExecID yet, so index 0
   is replayed unanchored from ``0;0`` — and a :class:`~supervisor.reconcile.RecoverySession`
   tracks it;
2. the U1 goes out; the 10,000 replayed ExecutionReports come back over TCP, through our
   session core, and are counted by the recovery session and offered to the ledger in batches
   (``offer_many``, one transaction per batch, as the drop copy delivers them);
3. the U2 is decided (its count must match), the ledger releases (merging and queueing all
   10,000 for delivery);
4. the application consumes them through a :class:`~supervisor.ledger.DeliveryCursor`
   (exactly-once: each ``next()`` acks the previous item, one committed ack each).

The benchmark refuses to report a figure unless the application received exactly the
executions the gateway generated. The reconciliation observer (``supervisor/recovery.py``) and
the order-entry component had not landed when this was written, so their roles are played here
with the building blocks they are made of.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import attrs
import trio

from sessions.config import SessionConfig
from sessions.driver import FixSession, connect_session
from sessions.events import ApplicationMessage, SessionEnded
from sessions.message import FixMessage
from sessions.profiles import get_profile
from sessions.testing.keys import make_test_key
from supervisor.ledger import ExecutionLedger
from supervisor.reconcile import OutcomeKind, RecoverySession, build_u1, plan_recovery

from . import Figure
from ._procs import BenchmarkError, address, python_module, spawn

__all__ = ["run"]

EXECUTIONS = 10_000
#: Replayed reports offered to the ledger per transaction.
BATCH = 500
_ACCOUNT = "BENCH-ACCT"
_TICKER = "KXHIGHNY-26JUL14-B85"
_INDEX = 0
_TIMEOUT = 300.0


def _write_config(tmp: Path, nr_key: str, nr_pub: Path, dc_key: str, dc_pub: Path) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(
        f"""
[gateway]
tls = false
maintenance = false

[gateway.ports]
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


@attrs.frozen
class _Phases:
    """Seconds from the start of the recovery to: the first replayed report, the U2 (every
    report received and offered), the release, the last delivery."""

    first_report: float
    replayed: float
    released: float
    delivered: float


async def _measure(executions: int, batch: int) -> _Phases:
    with tempfile.TemporaryDirectory(prefix="kalshi-bench-reconcile-") as tmp_name:
        tmp = Path(tmp_name)
        nr = make_test_key("bench-reconcile-nr", tmp / "keys")
        dc = make_test_key("bench-reconcile-dc", tmp / "keys")
        config = _write_config(tmp, nr.key_id, nr.public_key_path, dc.key_id, dc.public_key_path)
        args = python_module(
            "ops.benchmarks._gateway", "--config", str(config),
            "--preload-fills", str(executions), "--preload-key", nr.key_id,
            "--preload-ticker", _TICKER,
        )
        async with spawn(args, ["PRELOADED", "KalshiDC"]) as gateway:
            expected = int(gateway.ready["PRELOADED"])
            if expected != executions:
                raise BenchmarkError(
                    f"the gateway preloaded {expected} executions, {executions} were asked for"
                )
            host, port = address(gateway.ready["KalshiDC"])
            session_config = SessionConfig(
                name="dropcopy", profile=get_profile("KalshiDC"), host=host, port=port,
                key_id=dc.key_id, private_key=dc.private_key_path, tls=False,
                store_dir=tmp / "store",
            )
            with ExecutionLedger.open(tmp / "ledger", _ACCOUNT) as ledger:
                async with connect_session(session_config, signer=dc.signer) as session:
                    await session.wait_logged_on()
                    with trio.fail_after(_TIMEOUT):
                        delivered, phases = await _recover(session, ledger, batch)
    if delivered != expected:
        raise BenchmarkError(
            f"the application received {delivered} executions, the gateway generated {expected}"
        )
    return phases


async def _recover(
    session: FixSession, ledger: ExecutionLedger, batch: int
) -> tuple[int, _Phases]:
    """Recover through the drop copy and deliver; returns the executions the application got
    and when each phase ended."""
    clock = time.perf_counter
    t0 = clock()
    first_report: float | None = None
    ledger.hold()
    resume = {_INDEX: None, **ledger.resume_points()}
    recovery = RecoverySession(plan_recovery(resume, session.now(), None), session="dropcopy")
    while not recovery.done:
        request = recovery.next_request()
        if request is None:
            raise BenchmarkError("the recovery has nothing to send but is not done")
        recovery.sent(session.send_app(b"U1", build_u1(request)))
        pending: list[FixMessage] = []
        while recovery.in_flight is not None:
            event = await session.next_event()
            if isinstance(event, SessionEnded):
                raise BenchmarkError(f"the drop-copy session ended during the replay: {event}")
            if not isinstance(event, ApplicationMessage):
                continue
            msg = event.message
            mt = msg.msg_type
            if mt == b"8":
                if first_report is None:
                    first_report = clock()
                recovery.on_report(msg)
                pending.append(msg)
                if len(pending) >= batch:
                    ledger.offer_many(pending, source="dropcopy", session="dropcopy")
                    pending = []
            elif mt in (b"U2", b"U3"):
                if pending:
                    ledger.offer_many(pending, source="dropcopy", session="dropcopy")
                    pending = []
                outcome = recovery.on_u2(msg) if mt == b"U2" else recovery.on_u3(msg)
                if outcome is not None and outcome.kind is not OutcomeKind.COMPLETE:
                    raise BenchmarkError(
                        f"the drop-copy replay did not complete: {outcome.kind.value} "
                        f"(reason {outcome.reason_code})"
                    )
    if not recovery.complete:
        raise BenchmarkError("the drop-copy recovery ended incomplete")
    replayed = clock()
    ledger.release()
    released = clock()
    delivered = 0
    cursor = ledger.cursor()
    while cursor.next() is not None:
        delivered += 1
    done = clock()
    phases = _Phases(
        (first_report or replayed) - t0, replayed - t0, released - t0, done - t0
    )
    return delivered, phases


def run(*, executions: int = EXECUTIONS, batch: int = BATCH) -> Iterable[Figure]:
    """``reconcile_10k_s`` (seconds to recover and deliver ``executions`` missed executions;
    the name says the count when it is not 10k) and where that time went."""
    p = trio.run(_measure, executions, batch)
    name = "reconcile_10k_s" if executions == EXECUTIONS else f"reconcile_{executions}_s"
    yield (name, p.delivered, "s")
    # Where the time went: the gateway rendering the replay before its first byte; receiving
    # and offering the reports; the ledger's release; the application's exactly-once reads.
    yield ("reconcile_first_report_s", p.first_report, "s")
    yield ("reconcile_receive_s", p.replayed - p.first_report, "s")
    yield ("reconcile_release_s", p.released - p.replayed, "s")
    yield ("reconcile_deliver_s", p.delivered - p.released, "s")
