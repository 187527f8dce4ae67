"""``kalshi-fix gateway`` as a process: ready lines on stdout, a real client, SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from sessions.config import SessionConfig
from sessions.driver import connect_session
from sessions.errors import ConfigError
from sessions.logon import LogonOptions
from sessions.profiles import get_profile
from sessions.testing.cli import add_arguments, build_from_args
from sessions.testing.client import new_order, next_app
from sessions.testing.keys import TestKey, make_test_key

ROOT = Path(__file__).resolve().parents[3]
ENDPOINTS = {"KalshiNR", "KalshiDC", "KalshiRT", "KalshiPT", "KalshiRFQ"}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_test_key("gw-cli", tmp_path_factory.mktemp("cli-keys"))


class GatewayProcess:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.addresses: dict[str, tuple[str, int]] = {}
        self._buf = b""

    async def read_ready_lines(self) -> None:
        assert self.proc.stdout is not None
        while len(self.addresses) < 5:
            chunk = await self.proc.stdout.receive_some(4096)
            assert chunk, "the gateway exited before it was ready"
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                name, hostport = line.decode().split(" ")
                host, port = hostport.rsplit(":", 1)
                self.addresses[name] = (host, int(port))


async def start(*args: str) -> GatewayProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "supervisor.cli", "gateway", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )
    gw = GatewayProcess(proc)
    with trio.fail_after(60):
        await gw.read_ready_lines()
    return gw


async def stop(gw: GatewayProcess) -> tuple[int, bytes]:
    gw.proc.send_signal(signal.SIGTERM)
    with trio.fail_after(60):
        code = await gw.proc.wait()
    assert gw.proc.stderr is not None
    err = b""
    while chunk := await gw.proc.stderr.receive_some(65536):
        err += chunk
    return code, err


def config(key: TestKey, gw: GatewayProcess, endpoint: str, tmp: Path, **kw) -> SessionConfig:
    host, port = gw.addresses[endpoint]
    return SessionConfig(
        name=endpoint, profile=get_profile(endpoint), host=host, port=port,
        key_id=key.key_id, private_key=key.private_key_path, store_dir=tmp, **kw,
    )


async def test_quick_start_plain(key: TestKey, tmp_path: Path) -> None:
    gw = await start("--key", f"{key.key_id}={key.public_key_path}", "--plain",
                     "--no-maintenance")
    try:
        assert set(gw.addresses) == ENDPOINTS
        assert all(host == "127.0.0.1" for host, _ in gw.addresses.values())
        cfg = config(key, gw, "KalshiNR", tmp_path, tls=False)
        async with connect_session(cfg, signer=key.signer) as session:
            await session.wait_logged_on()
            session.send_app("D", new_order("c1", "KXHIGHNY-26JUL14-B85", 1, 2, 60))
            report = await next_app(session, [b"8"])
            assert report.get(150) in (b"A", b"F")
    finally:
        code, err = await stop(gw)
    assert code == 0, err


async def test_config_file_with_tls(key: TestKey, tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(
        f"""
[gateway]
tls = true
ca_out = "ca.pem"
maintenance = false
seed = 3

[gateway.ports]
KalshiNR = 0
KalshiDC = 0
KalshiRT = 0
KalshiPT = 0
KalshiRFQ = 0

[[account]]
id = "ACCT-9"
balance = 1000

[[key]]
id = "{key.key_id}"
account = "ACCT-9"
public_key = "{key.public_key_path}"

[[market]]
ticker = "KXTEST-1"

[[liquidity]]
ticker = "KXTEST-1"
side = "sell"
price = 55
qty = 5
""",
        encoding="utf-8",
    )
    gw = await start("--config", str(tmp_path / "gateway.toml"))
    try:
        cfg = config(key, gw, "KalshiRT", tmp_path, tls=True, ca_file=tmp_path / "ca.pem",
                     logon=LogonOptions(skip_pending_exec_reports=True))
        async with connect_session(cfg, signer=key.signer) as session:
            await session.wait_logged_on()
            session.send_app("D", new_order("c1", "KXTEST-1", 1, 5, 55))
            fill = await next_app(session, [b"8"])
            assert fill.get(31) == b"55"
    finally:
        code, err = await stop(gw)
    assert code == 0, err
    assert b"ca.pem" in err  # where to find the CA is said on stderr, not stdout


def test_bad_configuration_exits_with_2(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text('[gateway]\ntls = "yes"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "sessions.testing.cli", "--config", str(bad)],
        capture_output=True, env=env, cwd=ROOT, timeout=60,
    )
    assert res.returncode == 2
    assert b"tls must be bool" in res.stderr and res.stdout == b""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_build_the_setup(key: TestKey) -> None:
    setup = build_from_args(parse(
        "--key", f"{key.key_id}={key.public_key_path}", "--plain", "--port", "KalshiNR=18228",
        "--fault", "drop:endpoint=KalshiNR,after=3", "--fault-seed", "5", "--seed", "9",
    ))
    assert setup.config.tls is False and setup.config.ports["KalshiNR"] == 18228
    assert setup.config.seed == 9
    assert setup.config.faults.faults[0].spec() == "drop:endpoint=KalshiNR,after=3"
    assert len(setup.config.faults) == 4 and setup.config.faults.seed == 5
    assert [k["account"] for k in setup.keys] == [key.key_id]
    gateway = setup.build()
    assert set(gateway.keys) == {key.key_id}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "--config FILE or at least one --key"),
        (("--key", "nokeyfile"), "NAME=VALUE"),
        (("--key", "k=x.pem", "--port", "KalshiXX=1"), "unknown endpoint"),
        (("--key", "k=x.pem", "--fault", "explode"), "unknown fault kind"),
    ],
)
def test_argument_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_from_args(parse(*argv))
