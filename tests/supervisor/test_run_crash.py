"""``kalshi-fix run`` as a process, killed and restarted: the executions journal stays exact.
(SIGTERM and SIGINT are in test_run.py.)

The gateway is the in-process fixture (plain TCP, real time); the supervisor is a subprocess, so
SIGKILL is a real crash: no Logout, no flush, no close. Every wait is bounded (``fail_after``).
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from sessions.testing.client import new_order, next_app
from supervisor.run import EXIT_OK
from test_run import kalshi_gateway_options, session, start_run, write_config

__all__ = ["kalshi_gateway_options"]  # the fixture of test_run: real time, no weekly window

ACCOUNT = "ACCT-1"
#: How long any one phase may take before the test fails (never hangs).
PHASE_TIMEOUT = 60


def journal_exec_ids(path: Path) -> list[str]:
    """The ExecIDs of the complete lines of the journal (a line being written is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1].decode()
    return [json.loads(line)["exec_id"] for line in complete.splitlines()]


def crash_config(gw: Any, tmp_path: Path) -> Path:  # noqa: ANN401
    """Drop copy first (reconciliation through it), then the account-wide listener."""
    config = write_config(tmp_path, {
        "dc": session(gw, "KalshiDC", "dc"),
        "listener": session(
            gw, "KalshiNR", "listener",
            logon={"listener_session": True, "skip_pending_exec_reports": True},
        ),
    })
    # write_config turns reconciliation off; here it is the point: the restarted process asks
    # the drop copy for what the listener missed while nobody was running.
    text = config.read_text().replace(
        "[supervisor.reconciliation]\nenabled = false",
        '[supervisor.reconciliation]\nenabled = true\ndrop_copy_session = "dc"',
    )
    assert "drop_copy_session" in text
    config.write_text(text)
    return config


class Trader:
    """Someone trading on the account with another key (KalshiRT): one marketable order at a
    time, each waiting for its fill, so executions keep flowing for as long as it runs."""

    def __init__(self, gw: Any) -> None:  # noqa: ANN401
        self.gw = gw
        self.fills = 0
        self.stop = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        gw = self.gw
        market = gw.markets[0]  # exchange index 0: the index standalone mode replays
        gw.gateway.add_liquidity(market, "sell", 55, 100_000)
        async with gw.connect("KalshiRT") as trader:
            await trader.wait_logged_on()
            task_status.started()
            n = 0
            while not self.stop:
                n += 1
                trader.send_app("D", new_order(f"crash-{n}", market, 1, 1, 60))
                while (await next_app(trader, [b"8"])).get(150) != b"F":
                    pass
                self.fills += 1
                # Pacing (not synchronisation): stay far below the account's Write budget.
                await trio.sleep(0.005)

    async def wait_fills(self, count: int) -> None:
        while self.fills < count:
            await trio.sleep(0.01)


async def poll(done: Any, what: str) -> None:  # noqa: ANN401
    """Poll ``done()`` until true, failing after PHASE_TIMEOUT seconds."""
    with trio.move_on_after(PHASE_TIMEOUT):
        while not done():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_sigkill_then_restart_journals_every_execution_exactly_once(
    kalshi_gateway, tmp_path
) -> None:
    gw = kalshi_gateway
    config = crash_config(gw, tmp_path)
    journal = tmp_path / "state" / "executions.jsonl"
    trader = Trader(gw)
    procs: list[trio.Process] = []
    try:
        async with trio.open_nursery() as nursery:
            first, out = await start_run(config)
            procs.append(first)
            with trio.fail_after(PHASE_TIMEOUT):
                await out.until(lambda lines: sum(" up (" in line for line in lines) == 2)
            await nursery.start(trader.run)
            # Crash while executions flow: some are journalled already, more are on the way.
            await poll(lambda: len(journal_exec_ids(journal)) >= 20, "20 journalled executions")
            first.kill()
            with trio.fail_after(PHASE_TIMEOUT):
                assert await first.wait() == -signal.SIGKILL
                await out.rest()
            crashed_at = len(journal_exec_ids(journal))
            # The account keeps trading while no supervisor runs: the listener misses these.
            down_from = trader.fills
            with trio.fail_after(PHASE_TIMEOUT):
                await trader.wait_fills(down_from + 20)

            second, out = await start_run(config)
            procs.append(second)
            with trio.fail_after(PHASE_TIMEOUT):
                await out.until(lambda lines: sum(" up (" in line for line in lines) == 2)
                # …and after the restart, live ones again.
                await trader.wait_fills(trader.fills + 20)
            trader.stop = True
        truth = [r.exec_id for r in gw.ground_truth(ACCOUNT)]
        await poll(
            lambda: set(journal_exec_ids(journal)) >= set(truth),
            "the restarted supervisor to journal every execution of the account",
        )
        second.send_signal(signal.SIGTERM)
        with trio.fail_after(PHASE_TIMEOUT):
            code = await second.wait()
            text = await out.rest()
    finally:
        for proc in procs:
            if proc.returncode is None:  # pragma: no cover - only when the test failed
                proc.kill()
                await proc.wait()
    assert code == EXIT_OK, text

    ids = journal_exec_ids(journal)
    repeated = {exec_id: n for exec_id, n in Counter(ids).items() if n > 1}
    assert not repeated, f"journalled more than once: {repeated}"
    assert set(ids) == set(truth), (
        f"missing {sorted(set(truth) - set(ids))}, unknown {sorted(set(ids) - set(truth))}"
    )
    assert len(truth) >= 60 and 20 <= crashed_at < len(truth)
    # The ones traded while nothing ran came from the drop copy's replay.
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert "dropcopy" in {e["source"] for e in entries[crashed_at:]}
    assert [e["delivery_id"] for e in entries] == sorted(e["delivery_id"] for e in entries)
