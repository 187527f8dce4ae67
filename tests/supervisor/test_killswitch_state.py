"""The kill switch's engaged state survives a restart (``state_dir/killswitch.json``): a rebuilt
supervisor comes up engaged until ``rearm()``, owed cancels are still sent, and a corrupt file
is an error naming it, never an armed switch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from test_exactly_once import MKT0, RigFactory, open_rig, rigs, running  # noqa: F401

from supervisor import killswitch
from supervisor.app import KILL_SWITCH_STATE_FILE, Components
from supervisor.config import load_supervisor_config
from supervisor.killswitch import KillSwitchEngaged, KillSwitchStateError

CONFIG = """
[session.orders]
endpoint = "KalshiNR"
host = "127.0.0.1"
port = 1
tls = false
key_id = "3f1c2a9e-0000-4000-8000-0000000000f1"
private_key = "k.pem"

[supervisor]
state_dir = "state"

[supervisor.reconciliation]
enabled = false
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "firm.toml"
    path.write_text(CONFIG)
    return path


def build(config: Path) -> Components:
    return Components.build(*load_supervisor_config(config))


async def test_an_engaged_switch_stays_engaged_across_a_rebuild_until_rearmed(
    config: Path,
) -> None:
    first = build(config)
    try:
        report = await first.kill_switch.trip("desk limit breached")
        assert report.state_error is None
        engaged_at = first.kill_switch.gate.closed_at
        assert engaged_at is not None
    finally:
        first.close()

    state = config.parent / "state" / KILL_SWITCH_STATE_FILE
    saved = json.loads(state.read_text())
    assert saved["engaged"] is True and saved["reason"] == "desk limit breached"

    second = build(config)  # a new process on the same state directory
    try:
        assert not second.kill_switch.armed
        assert second.kill_switch.gate.closed_at == engaged_at
        with pytest.raises(KillSwitchEngaged, match="desk limit breached"):
            await second.orders.new_order(MKT0, "buy", 1, 45)
        second.kill_switch.rearm()
        assert second.kill_switch.armed
    finally:
        second.close()
    assert json.loads(state.read_text())["engaged"] is False

    third = build(config)
    try:
        assert third.kill_switch.armed
        third.orders.gate.check("new order")  # the re-arm was kept too
    finally:
        third.close()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{\"version\": 1, \"engag", "not JSON"),
        (b"[]", "not a version-1 kill switch state object"),
        (b"{\"version\": 1, \"engaged\": \"yes\"}", "'engaged' is not true or false"),
        (b"{\"version\": 1, \"engaged\": true}", "engaged without a reason"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_corrupt_state_file_is_an_error_naming_it_never_an_armed_switch(
    config: Path, content: bytes, problem: str
) -> None:
    state = config.parent / "state" / KILL_SWITCH_STATE_FILE
    state.parent.mkdir(parents=True)
    state.write_bytes(content)
    with pytest.raises(KillSwitchStateError) as info:
        build(config)
    message = str(info.value)
    assert str(state) in message and problem in message and "delete it" in message
    # Nothing was left open: once the file is fixed the components build.
    state.write_text(json.dumps({"version": 1, "engaged": True, "reason": "fixed by hand"}))
    again = build(config)
    try:
        assert not again.kill_switch.armed and again.kill_switch.gate.reason == "fixed by hand"
    finally:
        again.close()


async def test_a_rearm_that_cannot_be_saved_leaves_the_switch_engaged(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build(config)
    try:
        await app.kill_switch.trip("risk")

        def fail(path: Path, state: dict[str, Any]) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(killswitch, "_write_state", fail)
        with pytest.raises(OSError, match="No space left"):
            app.kill_switch.rearm()
        assert not app.kill_switch.armed and app.kill_switch.gate.reason == "risk"
    finally:
        app.close()


async def test_a_trip_that_cannot_be_saved_still_engages_and_says_so(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(path: Path, state: dict[str, Any]) -> None:
        raise OSError(5, "Input/output error")

    app = build(config)
    try:
        monkeypatch.setattr(killswitch, "_write_state", fail)
        report = await app.kill_switch.trip("risk")
        assert not app.kill_switch.armed
        assert report.state_error is not None
        assert KILL_SWITCH_STATE_FILE in report.state_error and "come up armed" in report.state_error
    finally:
        app.close()


async def test_a_cancel_owed_when_the_process_ended_is_sent_by_the_next_one(
    rigs: RigFactory, autojump_clock: Any  # noqa: F811
) -> None:
    gw = rigs.gateway()
    async with running(gw):
        async with open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
            await rig.nr().wait_active()
            t = await rig.order_entry.new_order(MKT0, "buy", 2, 45)
            assert await rig.settle()
            gw.inject("refuse_connections:endpoint=KalshiNR,duration=100")
            gw.inject("drop:endpoint=KalshiNR")
            await trio.sleep(1)
            assert not rig.nr().active
            report = await rig.kill.trip("end of day")
            assert report.deferred == ("orders",)
        # The process ended with the order still resting and its cancel owed.
        assert [o.cl_ord_id for o in gw.exchange.open_orders("ACCT-1")] == [t.cl_ord_id]
        async with open_rig(gw, rigs.keys, rigs.tmp_path) as rig:
            assert not rig.kill.armed and rig.kill.deferred == {"orders"}
            with pytest.raises(KillSwitchEngaged, match="end of day"):
                await rig.order_entry.new_order(MKT0, "buy", 1, 45)
            await rig.nr().wait_active()
            assert await rig.settle()
            assert rig.kill.deferred == frozenset()
            assert gw.exchange.open_orders("ACCT-1") == []
        saved = json.loads((rigs.tmp_path / KILL_SWITCH_STATE_FILE).read_text())
        assert saved["engaged"] is True and saved["deferred"] == []
