"""The gateway examples stay valid: the config file parses, the strategy test passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sessions.testing.cli import load_gateway_config
from sessions.testing.faults import FaultKind

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def test_example_config_parses() -> None:
    setup = load_gateway_config(EXAMPLES / "gateway.toml")
    assert setup.config.tls and setup.config.ports["KalshiRFQ"] == 8232
    assert [k["account"] for k in setup.keys] == ["ACCT-1", "ACCT-1", "MAKER"]
    assert setup.keys[0]["public_key"] == EXAMPLES / "keys" / "trader.pub.pem"
    assert [f.kind for f in setup.config.faults] == [FaultKind.DROP, FaultKind.REFUSE_CONNECTIONS]
    assert setup.ca_out == EXAMPLES / "keys" / "gateway-ca.pem"


def test_example_strategy_test_passes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "trio_mode=true",
         "--rootdir", str(EXAMPLES), "--basetemp", str(tmp_path / "t"),
         str(EXAMPLES / "test_my_strategy.py")],
        capture_output=True, env=env, cwd=EXAMPLES, timeout=300,
    )
    assert res.returncode == 0, res.stdout.decode()[-3000:]
    assert b"3 passed" in res.stdout
