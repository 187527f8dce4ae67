"""Logon rejects by class, and the per-host key lock held by another process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from supervisor.errors import ChildStopped, KeyLockedByOtherProcess
from supervisor.observer import ChildState, DownKind
from supervisor.tree import Supervisor
from test_tree import Recorder, build_config, wait_state

REPO = Path(__file__).resolve().parents[2]


def attempts_with(gw, key_id: str) -> list:  # type: ignore[no-untyped-def]
    return [r for r in gw.gateway.connections if r.key_id == key_id]


async def test_already_exists_is_retried_after_two_heartbeat_intervals(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    config = build_config(
        gw, tmp_path, {"orders": ("KalshiNR", "nr")},
        overrides={"orders": {"heartbeat_interval": 10}},
        backoff_min=1.0, backoff_jitter=0.0,
    )
    key_id = config[0].sessions["orders"].key_id
    rec = Recorder()
    # Another program holds the key (the half-dead connection of REFERENCE §1.4).
    async with gw.connect("KalshiNR") as squatter:
        await squatter.wait_logged_on()
        async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
            refused = await wait_state(sup, "orders", ChildState.BACKOFF)
            assert "already exists" in refused.detail
            assert rec.downs[0].kind is DownKind.UNPLANNED and not rec.downs[0].was_logged_on
            mark = len(sup.history)
            retried = await wait_state(sup, "orders", ChildState.STARTING, since=mark)
            assert retried.time - refused.time >= 2 * 10
            await wait_state(sup, "orders", ChildState.BACKOFF, since=mark)
            await squatter.logout()
            up = await wait_state(sup, "orders", ChildState.UP)
    squatter_record, *ours = attempts_with(gw, key_id)
    refusals, logged_on = ours[:-1], ours[-1]
    assert len(refusals) >= 2 and logged_on.logged_on
    assert [r.text for r in refusals] == ["already exists"] * len(refusals)
    gaps = [b.opened_at - a.closed_at for a, b in zip(ours, ours[1:])]
    assert all(gap >= 2 * 10 - 0.5 for gap in gaps)  # gateway times; never sooner than 2×HB
    assert up.attempt == len(ours)


@pytest.mark.parametrize(
    ("override", "cause"),
    [
        # The key id of one key, the private half of another: the signature does not verify.
        ({"private_key": "rt"}, "signature"),
        # SenderCompID that is no registered key: a CompID problem (373=9 + Logout).
        ({"key_id": "not-a-registered-key"}, "CompIDs"),
    ],
    ids=["bad-signature", "comp-id"],
)
async def test_non_retryable_rejects_stop_the_child_and_leave_the_others_running(
    kalshi_gateway, autojump_clock, tmp_path, override, cause
) -> None:
    gw = kalshi_gateway
    if "private_key" in override:
        override = {"private_key": gw.keys[override["private_key"]].private_key_path}
    config = build_config(
        gw, tmp_path, {"dc": ("KalshiDC", "dc"), "orders": ("KalshiNR", "nr")},
        overrides={"orders": override},
    )
    key_id = config[0].sessions["orders"].key_id
    rec = Recorder()
    async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
        stopped = await wait_state(sup, "orders", ChildState.STOPPED)
        assert cause in stopped.detail
        status = sup.status()["orders"]
        assert isinstance(status.error, ChildStopped) and cause in str(status.error)
        with pytest.raises(ChildStopped, match="will not be restarted"):
            await sup.handle("orders").wait_active()
        await trio.sleep(3600)  # no hammering: not one more Logon
        assert len(attempts_with(gw, key_id)) == 1
        assert sup.status()["dc"].state is ChildState.UP
        assert sup.status()["orders"].state is ChildState.STOPPED
    assert sup.failure is None
    assert [d.name for d in rec.downs] == ["orders", "dc"]


async def test_a_second_process_holding_a_key_is_named_with_its_pid(
    kalshi_gateway, tmp_path
) -> None:
    gw = kalshi_gateway
    config = build_config(gw, tmp_path, {"dc": ("KalshiDC", "dc"), "orders": ("KalshiNR", "nr")})
    lock_dir = config[1].lock_dir
    key_id = config[0].sessions["orders"].key_id
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys\n"
            "from supervisor.keys import ProcessKeyLock\n"
            "lock = ProcessKeyLock(sys.argv[1], sys.argv[2], 'kalshi-fix run other.toml')\n"
            "lock.acquire()\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(lock_dir), key_id,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(KeyLockedByOtherProcess) as info:
            async with Supervisor(config, clock=gw.clock):
                pytest.fail("must not start")  # pragma: no cover
        assert info.value.pid == holder.pid and info.value.key_id == key_id
        assert f"process {holder.pid} (kalshi-fix run other.toml)" in str(info.value)
        assert gw.gateway.connections == []  # refused before anything was dialled
    finally:
        holder.communicate(b"", timeout=30)
    # Nothing was left locked by the refused start: now it starts.
    async with Supervisor(config, clock=gw.clock) as sup:
        await sup.wait_started()
        assert sup.status()["orders"].state is ChildState.UP
