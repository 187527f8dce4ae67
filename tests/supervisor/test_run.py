"""``kalshi-fix run`` as a process against the in-process gateway (plain TCP, real time)."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from sessions.maintenance import MaintenanceCalendar
from sessions.testing.client import new_order, next_app
from sessions.testing.pytest_plugin import GatewayOptions
from supervisor import run as run_module
from supervisor.app import Components
from supervisor.config import WEEKDAYS, load_supervisor_config
from supervisor.keys import LOCK_DIR_ENV
from supervisor.run import (
    EXIT_CHILD_STOPPED,
    EXIT_CONFIG,
    EXIT_INTENSITY,
    EXIT_KEY_LOCKED,
    EXIT_OK,
)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
RUN = [sys.executable, "-m", "supervisor.cli", "run"]


@pytest.fixture
def kalshi_gateway_options() -> GatewayOptions:
    # The process under test uses the real clock: the gateway must agree (30 s SendingTime
    # rule) and must not meet a maintenance window while the test runs.
    return GatewayOptions(tls=False, start=time.time(), maintenance=MaintenanceCalendar(weekly=False))


def far_weekday() -> str:
    """A weekday whose window cannot be near now, for the supervisor's own calendar."""
    today = dt.datetime.now(zoneinfo.ZoneInfo("America/New_York")).weekday()
    return WEEKDAYS[(today + 3) % 7]


def write_config(
    tmp_path: Path,
    sessions: dict[str, dict[str, Any]],
    supervisor: str = "",
    *,
    lock_dir: str | None = "locks",
) -> Path:
    """A TOML file with ``sessions`` (name → session keys) in start order; ``lock_dir=None``
    leaves the key locks in the host-wide default (the suite's ``KALSHI_FIX_LOCK_DIR``)."""
    lines: list[str] = []

    def table_lines(header: str, table: dict[str, Any]) -> None:
        lines.append(f"[{header}]")
        for key, value in table.items():
            if isinstance(value, dict):
                continue
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{value}"')
        for key, value in table.items():
            if isinstance(value, dict):
                table_lines(f"{header}.{key}", value)

    for name, table in sessions.items():
        table_lines(f"session.{name}", table)
    lines += [
        "[supervisor]",
        'state_dir = "state"',
        *([f'lock_dir = "{lock_dir}"'] if lock_dir is not None else []),
        supervisor,
        "[supervisor.maintenance]",
        f'weekday = "{far_weekday()}"',
        "[supervisor.reconciliation]",
        "enabled = false",
    ]
    for order, name in enumerate(sessions):
        lines += [f"[supervisor.sessions.{name}]", f"start_order = {order}"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "firm.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def session(gw: Any, endpoint: str, role: str, **changes: Any) -> dict[str, Any]:  # noqa: ANN401
    key = gw.keys[role]
    table: dict[str, Any] = {
        "endpoint": endpoint, "host": "127.0.0.1", "port": gw.port(endpoint), "tls": False,
        "key_id": key.key_id, "private_key": str(key.private_key_path), "store_dir": "stores",
    }
    table.update(changes)
    return table


class Output:
    """The lines a process prints, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = b""
        self.lines: list[str] = []

    async def until(self, done: Callable[[list[str]], bool]) -> None:
        while not done(self.lines):
            chunk = await self._stream.receive_some(65536)
            assert chunk, "the process ended first:\n" + "\n".join(self.lines)
            self._feed(chunk)

    async def rest(self) -> str:
        while chunk := await self._stream.receive_some(65536):
            self._feed(chunk)
        if self._buf:
            self.lines.append(self._buf.decode())
            self._buf = b""
        return "\n".join(self.lines)

    def _feed(self, chunk: bytes) -> None:
        self._buf += chunk
        *complete, self._buf = self._buf.split(b"\n")
        self.lines += [line.decode() for line in complete]


async def run_to_exit(config: Path, env: dict[str, str] = ENV) -> tuple[int, str]:
    with trio.fail_after(60):
        result = await trio.run_process(
            [*RUN, str(config)], capture_stdout=True, stderr=subprocess.STDOUT, check=False,
            env=env, cwd=REPO,
        )
    return result.returncode, result.stdout.decode()


async def start_run(
    config: Path, env: dict[str, str] = ENV
) -> tuple[trio.Process, Output]:
    """``kalshi-fix run CONFIG`` as a child process, its output read as it comes."""
    proc = await trio.lowlevel.open_process(
        [*RUN, str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )
    assert proc.stdout is not None
    return proc, Output(proc.stdout)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_logs_every_session_out_in_reverse_order_and_exits_0(
    kalshi_gateway, tmp_path, signum: signal.Signals
) -> None:
    gw = kalshi_gateway
    config = write_config(tmp_path, {
        "dc": session(gw, "KalshiDC", "dc"),
        "orders": session(gw, "KalshiNR", "nr"),
        # Account-wide copies of every execution (REFERENCE §7), for the journal.
        "listener": session(
            gw, "KalshiNR", "listener",
            logon={"listener_session": True, "skip_pending_exec_reports": True},
        ),
    })
    proc, out = await start_run(config)
    try:
        with trio.fail_after(60):
            await out.until(lambda lines: sum(" up (" in line for line in lines) == 3)
        assert all(gw.gateway.is_connected(gw.keys[r].key_id) for r in ("dc", "nr", "listener"))
        # Someone trades on the account with another key: the fill reaches the listener. The
        # gateway sends the copy before our Logout is answered, so it is journalled by then.
        async with gw.connect("KalshiRT") as trader:
            await trader.wait_logged_on()
            trader.send_app("D", new_order("journal-me", gw.markets[0], 1, 2, 60))
            while (await next_app(trader, [b"8"])).get(150) != b"F":
                pass
        proc.send_signal(signum)
        with trio.fail_after(60):
            code = await proc.wait()
            text = await out.rest()
    finally:
        if proc.returncode is None:  # pragma: no cover - only when the test failed
            proc.kill()
            await proc.wait()
    assert code == EXIT_OK, text
    assert f"{signum.name} received: logging out every session" in text
    assert "KeyboardInterrupt" not in text and "Traceback" not in text
    assert "every session logged out; exiting" in text
    stops = [line for line in out.lines if " shutdown (" in line]
    assert [line.split("session ")[1].split(" ")[0] for line in stops] == [
        "listener", "orders", "dc"
    ]
    assert "PRIVATE KEY" not in text
    await gw.gateway.wait_idle()
    ours = {gw.keys[r].key_id for r in ("dc", "nr", "listener")}
    records = [r for r in gw.gateway.connections if r.key_id in ours]
    # Each session sent its Logout and the gateway saw it close cleanly from our side.
    assert [r.ended for r in records] == ["peer"] * 3
    assert all(r.logged_on for r in records)
    # The executions journal (JSON lines) holds the fill, exactly once.
    journal = tmp_path / "state" / "executions.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    fills = [e for e in entries if e["cl_ord_id"] == "journal-me" and e["exec_type"] == "F"]
    assert len(fills) == 1 and fills[0]["session"] == "listener"
    truth = {r.exec_id for r in gw.ground_truth("ACCT-1") if r.cl_ord_id == "journal-me"}
    assert fills[0]["exec_id"] in truth


def test_run_builds_the_rate_limiter_of_the_configured_tier(tmp_path) -> None:
    # The factory kalshi-fix run uses, fed the file as run_standalone feeds it.
    assert inspect.signature(run_module.run_standalone).parameters[
        "components_factory"
    ].default is run_module.standalone_components
    sessions = {"orders": {
        "endpoint": "KalshiNR", "host": "127.0.0.1", "port": 1, "tls": False,
        "key_id": "3f1c2a9e-0000-4000-8000-0000000000e1", "private_key": "k.pem",
    }}
    config = write_config(tmp_path, sessions, 'rate_tier = "Advanced"\nrate_share = 0.5')
    components = run_module.standalone_components(*load_supervisor_config(config))
    try:
        limiter = components.limiter
        # Advanced: 300 Write tokens/s, two seconds' worth in the bucket (REFERENCE §10.1).
        assert (limiter.tier, limiter.rate, limiter.capacity) == ("Advanced", 150.0, 300.0)
        assert components.orders.limiter is limiter
    finally:
        components.close()
    # Embedded apps get the same from the file unless they pass a tier themselves.
    embedded = Components.build(*load_supervisor_config(config))
    try:
        assert (embedded.limiter.tier, embedded.limiter.rate) == ("Advanced", 150.0)
    finally:
        embedded.close()


async def test_an_unknown_rate_tier_exits_2_naming_the_key(tmp_path) -> None:
    sessions = {"orders": {
        "endpoint": "KalshiNR", "host": "127.0.0.1", "port": 1, "tls": False,
        "key_id": "3f1c2a9e-0000-4000-8000-0000000000e1", "private_key": "k.pem",
    }}
    config = write_config(tmp_path, sessions, 'rate_tier = "Platinum"')
    code, text = await run_to_exit(config)
    assert code == EXIT_CONFIG, text
    assert f"{config}: [supervisor] rate_tier: unknown tier 'Platinum'" in text
    assert not (tmp_path / "state").exists()


async def test_a_configuration_error_exits_2(tmp_path) -> None:
    config = tmp_path / "firm.toml"
    config.write_text('[session.orders]\nendpoint = "KalshiXX"\nkey_id = "k"\nprivate_key = "k.pem"\n')
    code, text = await run_to_exit(config)
    assert code == EXIT_CONFIG
    assert "[session.orders] endpoint" in text and "KalshiXX" in text


async def test_an_unreadable_private_key_exits_2(kalshi_gateway, tmp_path) -> None:
    gw = kalshi_gateway
    config = write_config(
        tmp_path, {"orders": session(gw, "KalshiNR", "nr", private_key="missing.pem")}
    )
    code, text = await run_to_exit(config)
    assert code == EXIT_CONFIG, text
    assert gw.keys["nr"].key_id in text and gw.gateway.connections == []


async def test_a_key_locked_by_another_process_exits_3_naming_its_pid(
    kalshi_gateway, tmp_path
) -> None:
    gw = kalshi_gateway
    config = write_config(tmp_path, {"orders": session(gw, "KalshiNR", "nr")})
    key_id = gw.keys["nr"].key_id
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys\n"
            "from supervisor.keys import ProcessKeyLock\n"
            "ProcessKeyLock(sys.argv[1], sys.argv[2], 'the other supervisor').acquire()\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(tmp_path / "locks"), key_id,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        code, text = await run_to_exit(config)
    finally:
        holder.communicate(b"", timeout=30)
    assert code == EXIT_KEY_LOCKED, text
    assert f"API key {key_id} is locked by process {holder.pid} (the other supervisor)" in text
    assert gw.gateway.connections == []


async def test_two_configs_in_different_folders_on_one_key_exclude_each_other(
    kalshi_gateway, tmp_path, _private_key_lock_dir: Path
) -> None:
    # Neither file names a lock_dir: both fall back to the host-wide default (here the test's
    # own KALSHI_FIX_LOCK_DIR, never the host's real one).
    gw = kalshi_gateway
    key_id = gw.keys["nr"].key_id
    first = write_config(tmp_path / "desk-a", {"orders": session(gw, "KalshiNR", "nr")}, lock_dir=None)
    second = write_config(
        tmp_path / "desk-b", {"hedger": session(gw, "KalshiNR", "nr")}, lock_dir=None
    )
    env = {**ENV, LOCK_DIR_ENV: str(_private_key_lock_dir)}
    proc, out = await start_run(first, env)
    try:
        with trio.fail_after(60):
            await out.until(lambda lines: any(" up (" in line for line in lines))
        code, text = await run_to_exit(second, env)
        assert code == EXIT_KEY_LOCKED, text
        assert f"API key {key_id} is locked by process {proc.pid} (kalshi-fix run {first})" in text
        # The first supervisor's session was never disturbed: one connection on the key.
        assert [r.key_id for r in gw.gateway.connections].count(key_id) == 1
        assert gw.gateway.is_connected(key_id)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await proc.wait() == EXIT_OK, await out.rest()
    finally:
        if proc.returncode is None:  # pragma: no cover - only when the test failed
            proc.kill()
            await proc.wait()
    assert list(_private_key_lock_dir.glob("*.lock")) != []
    assert not (tmp_path / "desk-a" / "var").exists() and not (tmp_path / "desk-b" / "var").exists()


async def test_every_session_stopped_by_a_non_retryable_reject_exits_4(
    kalshi_gateway, tmp_path
) -> None:
    gw = kalshi_gateway
    config = write_config(
        tmp_path, {"orders": session(gw, "KalshiNR", "nr", key_id="not-a-registered-key")}
    )
    code, text = await run_to_exit(config)
    assert code == EXIT_CHILD_STOPPED, text
    assert "session orders stopped" in text and "CompIDs" in text
    assert len(gw.gateway.connections) == 1  # one Logon, no hammering


async def test_the_startup_heap_is_frozen_once_supervising(
    kalshi_gateway, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process, to see the call: what exists at start is kept out of full collections.
    frozen: list[int] = []
    monkeypatch.setattr(run_module.gc, "freeze", lambda: frozen.append(len(frozen)))
    gw = kalshi_gateway
    config = write_config(
        tmp_path, {"orders": session(gw, "KalshiNR", "nr", key_id="not-a-registered-key")}
    )
    code = await run_module.run_standalone(config)
    assert code == EXIT_CHILD_STOPPED and frozen == [0]


async def test_exceeding_the_restart_intensity_exits_5(kalshi_gateway, tmp_path) -> None:
    gw = kalshi_gateway
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(
        tmp_path, {"orders": session(gw, "KalshiNR", "nr", port=port)},
        "backoff_min = 0.01\nbackoff_max = 0.05\nrestart_intensity = 2\nrestart_period = 60\n",
    )
    code, text = await run_to_exit(config)
    assert code == EXIT_INTENSITY, text
    assert "needed 3 restarts within 60 s" in text


async def test_the_standalone_example_loads_and_names_its_missing_key_file(tmp_path) -> None:
    shutil.copy(REPO / "examples" / "standalone.toml", tmp_path)
    code, text = await run_to_exit(tmp_path / "standalone.toml")
    assert code == EXIT_CONFIG, text
    assert "keys/dropcopy.pem (key id 3f1c2a9e-0000-4000-8000-0000000000d1) does not exist" in text
    assert not (tmp_path / "var" / "supervisor" / "executions.jsonl").exists()
