"""The README's first command must keep working: run the demo in-process.

The demo needs Trio's autojump MockClock (it crosses a two-hour maintenance window), which the
``autojump_clock`` fixture installs, as ``supervisor.demo.main`` does for ``bash ops/demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisor.demo import DemoFailed, demo, main


async def test_demo_delivers_every_execution_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], autojump_clock: Any
) -> None:
    assert await demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert "lost 0, repeated 0, unknown 0" in out
    assert "5 (KalshiNR, KalshiRT, KalshiDC, KalshiPT, KalshiRFQ), 5 generated keys" in out
    assert "[RECOVERED via drop copy]" in out
    assert "reconciled through drop copy 0)" not in out
    assert "maintenance crossed:  logged out Thu 02:59:30, back Thu 05:" in out
    assert "[live on rt]" in out  # the RFQ's fill
    assert "MarketSettlementReport KXHIGHNY-26JUL14-B85 result=yes" in out
    assert "drop on KalshiNR" in out
    assert out.rstrip().endswith("OK")


async def test_demo_refuses_a_real_clock(tmp_path: Path) -> None:
    with pytest.raises(DemoFailed, match="MockClock"):
        await demo(tmp_path)


def test_main_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "  OK" in capsys.readouterr().out
