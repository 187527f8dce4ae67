"""Same fault seed and same client behaviour give the same wire log, timestamps included.

Each run is its own ``trio.run`` with a fresh autojumping MockClock, so both runs see exactly the
same virtual times; the client signs its Logons with an empty PSS salt so RawData repeats too.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from sessions.driver import connect_session
from sessions.errors import KalshiFixError
from sessions.store import MemoryStore
from sessions.testing.client import new_order, next_app
from sessions.testing.faults import FaultKind, FaultPlan
from sessions.testing.pytest_plugin import BASE_EPOCH, GatewayFixture, GatewayOptions, build_gateway

ENDPOINTS = (("KalshiNR", "nr"), ("KalshiRT", "rt"))
# The client's own timing is kept off the gateway's heartbeat grid (10 s): two things due at
# the very same virtual instant in different tasks (the client hanging up, the gateway's
# Heartbeat) would be ordered by trio's scheduler, which is randomised on purpose.
ATTEMPT_TIMEOUT = 24.5
PAUSE = 3.25


async def scenario(material, seed: int) -> tuple[bytes, str, int]:
    keys, tls, ca_file = material
    t0 = trio.current_time()

    def clock() -> float:
        return BASE_EPOCH + (trio.current_time() - t0)

    plan = FaultPlan.random(
        seed,
        endpoints=[e for e, _ in ENDPOINTS],
        keys=[keys[r].key_id for _, r in ENDPOINTS],
        count=8,
        horizon=60.0,
    )
    options = GatewayOptions(seed=seed, faults=plan.faults)
    gateway = build_gateway(options, keys, tls, clock)
    stores = {role: MemoryStore(now=clock()) for _, role in ENDPOINTS}
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        gw = GatewayFixture(gateway, keys, ca_file, Path("unused"), options)
        for n in range(12):
            for endpoint, role in ENDPOINTS:
                config = gw.session_config(endpoint, role, heartbeat_interval=10)
                with trio.move_on_after(ATTEMPT_TIMEOUT):
                    try:
                        async with connect_session(
                            config, store=stores[role], clock=clock,
                            signer=keys[role].deterministic_signer(),
                        ) as session:
                            await session.wait_logged_on()
                            session.send_app("D", new_order(f"{role}-{n}", gw.markets[0], 1, 1, 30 + n))
                            await next_app(session, [b"8"])
                            await session.logout()
                    except KalshiFixError:
                        pass  # a fault got in the way: try again next round, as a client would
                await trio.sleep(PAUSE)
        gateway.stop()
    assert not gateway.internal_errors
    assert gateway.wire_log is not None
    return gateway.wire_log.dump(), gateway.fault_log.dump(), len(gateway.fault_log)


def run(material, seed: int) -> tuple[bytes, str, int]:
    return trio.run(scenario, material, seed, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_seed_same_wire_log(_kalshi_gateway_material) -> None:
    wire_a, faults_a, fired = run(_kalshi_gateway_material, 11)
    wire_b, faults_b, _ = run(_kalshi_gateway_material, 11)
    assert fired > 0, "the plan should have injected something"
    assert faults_a == faults_b
    assert wire_a == wire_b
    assert b"35=D" in wire_a and b"35=8" in wire_a
    # Timestamps are in the log (gateway time, and SendingTime inside the messages).
    assert wire_a.splitlines()[0].split()[0] == b"0.000000"
    other, _, _ = run(_kalshi_gateway_material, 12)
    assert other != wire_a


def test_random_plans_use_every_kind_somewhere() -> None:
    kinds = set()
    for seed in range(40):
        plan = FaultPlan.random(seed, endpoints=["KalshiNR"], keys=["k"], count=8)
        kinds |= {f.kind for f in plan}
    # FORGET_SENT and REJECT_RESEND are drawn only when asked for: adding them to the default
    # pool would have redrawn the plan of every seed the suites pin down.
    assert kinds == set(FaultKind) - {FaultKind.FORGET_SENT, FaultKind.REJECT_RESEND}
    forgetting = FaultPlan.random(0, endpoints=["KalshiRT"], kinds=[FaultKind.FORGET_SENT])
    assert {f.kind for f in forgetting} == {FaultKind.FORGET_SENT}
