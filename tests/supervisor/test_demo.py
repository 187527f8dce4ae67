"""The README's first command must keep working: run the demo in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.demo import demo


async def test_demo_recovers_every_execution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert "lost 0, unknown 0" in out
    assert "MarketSettlementReport" in out and "U2:" in out
