"""The supervision tree against the simulated gateway, under trio's MockClock (autojump).

Helpers here (``build_config``, ``Recorder``, ``wait_state``) are shared by the other
``test_tree_*`` modules.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from sessions.config import Config
from sessions.driver import connect_session, open_session_store
from sessions.errors import ConfigError
from sessions.events import ApplicationMessage, LoggedOn
from sessions.testing.client import new_order
from supervisor.config import (
    ChildSettings,
    MaintenanceSettings,
    ReconciliationSettings,
    RestartType,
    SupervisorConfig,
)
from supervisor.keys import KeyRegistry
from supervisor.observer import (
    ChildState,
    DownKind,
    ObserverBase,
    SessionDown,
    SessionNotActive,
    StatusEvent,
)
from supervisor.tree import Supervisor

SessionSpec = tuple[str, str]  # (endpoint, key role)


def build_config(
    gw: Any,
    tmp_path: Path,
    sessions: dict[str, SessionSpec],
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
    restart: dict[str, RestartType] | None = None,
    maintenance: MaintenanceSettings | None = None,
    **supervisor: Any,
) -> tuple[Config, SupervisorConfig]:
    """A (Config, SupervisorConfig) whose sessions target the fixture's gateway; sessions
    start in the order given."""
    overrides = overrides or {}
    restart = restart or {}
    configs = {
        name: gw.session_config(
            endpoint, key=role, name=name, store_dir=tmp_path / "stores",
            **overrides.get(name, {}),
        )
        for name, (endpoint, role) in sessions.items()
    }
    config = Config(path=tmp_path / "firm.toml", sessions=configs)
    children = {
        name: ChildSettings(name, restart.get(name, RestartType.PERMANENT), start_order=i)
        for i, name in enumerate(sessions)
    }
    supervisor.setdefault("state_dir", tmp_path / "state")
    sup = SupervisorConfig(
        children=children,
        reconciliation=ReconciliationSettings(enabled=False),
        maintenance=maintenance or MaintenanceSettings(),
        **supervisor,
    )
    return config, sup


class Recorder(ObserverBase):
    """Records every callback; application messages also go to a channel to await them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.downs: list[SessionDown] = []
        self.ups: list[tuple[str, LoggedOn]] = []
        self.app_send, self.app_receive = trio.open_memory_channel[tuple[str, ApplicationMessage]](
            math.inf
        )

    def attach(self, handles, spawn, clock) -> None:  # type: ignore[no-untyped-def]
        super().attach(handles, spawn, clock)
        self.calls.append(("attach", tuple(handles), [h.active for h in handles.values()]))

    def session_up(self, name: str, logged_on: LoggedOn) -> None:
        self.calls.append(("up", name))
        self.ups.append((name, logged_on))

    def session_down(self, down: SessionDown) -> None:
        self.calls.append(("down", down.name, down.kind))
        self.downs.append(down)

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        self.calls.append(("app", name, event.message.msg_type))
        self.app_send.send_nowait((name, event))


async def wait_state(
    sup: Supervisor, name: str, state: ChildState, *, since: int = 0,
    where: Callable[[StatusEvent], bool] = lambda e: True,
) -> StatusEvent:
    """The first status event of ``name`` reaching ``state``, from ``sup.history[since]`` on
    (take ``since = len(sup.history)`` before causing the change)."""
    events = sup.status_events()
    for event in sup.history[since:]:
        if event.name == name and event.state is state and where(event):
            events.close()
            return event
    async for event in events:
        if event.name == name and event.state is state and where(event):
            events.close()
            return event
    raise AssertionError(f"the supervisor shut down before {name} reached {state}")


def states_of(sup: Supervisor, name: str) -> list[ChildState]:
    return [e.state for e in sup.history if e.name == name]


THREE = {"dc": ("KalshiDC", "dc"), "orders": ("KalshiNR", "nr"), "rt": ("KalshiRT", "rt")}


# ----------------------------------------------------------------------------- start / stop


async def test_starts_in_order_serves_handles_and_stops_in_reverse_with_logouts(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    rec = Recorder()
    config = build_config(gw, tmp_path, THREE)
    async with Supervisor(config, observers=[rec], clock=gw.clock, rng=random.Random(1)) as sup:
        await sup.wait_started()
        assert [c for c in rec.calls if c[0] in ("attach", "up")] == [
            ("attach", ("dc", "orders", "rt"), [False, False, False]),
            ("up", "dc"), ("up", "orders"), ("up", "rt"),
        ]
        assert {n: s.state for n, s in sup.status().items()} == {
            "dc": ChildState.UP, "orders": ChildState.UP, "rt": ChildState.UP
        }
        # Each session was started only after the one before it had its Logon answered.
        ups = [e for e in sup.history if e.state is ChildState.UP]
        starts = [e for e in sup.history if e.state is ChildState.STARTING]
        assert [e.name for e in starts] == ["dc", "orders", "rt"]
        assert starts[1].time >= ups[0].time and starts[2].time >= ups[1].time
        assert all(logged_on.reset_seq_num for name, logged_on in rec.ups if name != "rt")

        orders = sup.handle("orders")
        assert orders.active and orders.state is ChildState.UP
        seq = orders.send_app("D", new_order("tree-1", gw.markets[0], 1, 1, 60))
        assert seq == 2
        name, event = await rec.app_receive.receive()
        assert name == "orders" and event.message.get(11) == b"tree-1"
        with pytest.raises(KeyError, match="no session 'nope'"):
            sup.handle("nope")

    # Reverse start order, every one a Logout we sent and Kalshi answered.
    assert [(d.name, d.kind, d.was_logged_on) for d in rec.downs] == [
        ("rt", DownKind.SHUTDOWN, True),
        ("orders", DownKind.SHUTDOWN, True),
        ("dc", DownKind.SHUTDOWN, True),
    ]
    assert all(d.ended is not None and d.ended.initiated_by == "local" and d.ended.clean
               for d in rec.downs)
    await gw.gateway.wait_idle()
    records = gw.gateway.connections
    assert len(records) == 3
    assert [r.ended for r in records] == ["peer"] * 3  # the gateway saw our Logout
    assert {n: s.state for n, s in sup.status().items()} == {
        "dc": ChildState.SHUTDOWN, "orders": ChildState.SHUTDOWN, "rt": ChildState.SHUTDOWN
    }
    with pytest.raises(SessionNotActive):
        sup.handle("orders").send_app("D", new_order("late", gw.markets[0], 1, 1, 60))
    # The stores were closed: the same process may open them again.
    for cfg in config[0].sessions.values():
        open_session_store(cfg, gw.clock()).close()


class _Batches(ObserverBase):
    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def application_messages(self, name: str, events: Any) -> None:
        self.batches.append([e.message.get(11) or b"" for e in events])


class _OneByOne:
    """Duck-typed (not an ObserverBase): no application_messages, only the per-message
    callback."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def attach(self, handles: Any, spawn: Any, clock: Any) -> None:
        pass

    def application_message(self, name: str, event: ApplicationMessage) -> None:
        self.seen.append(event.message.get(11) or b"")


async def test_a_burst_of_messages_reaches_each_observer_whole_and_in_order(
    kalshi_gateway, autojump_clock, tmp_path
) -> None:
    gw = kalshi_gateway
    batches, one_by_one = _Batches(), _OneByOne()
    # ObserverBase's no-ops are skipped, but a callback set on the instance is still called.
    quiet, patched = ObserverBase(), ObserverBase()
    on_instance: list[bytes] = []
    patched.application_message = (  # type: ignore[method-assign]
        lambda name, event: on_instance.append(event.message.get(11) or b"")
    )
    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    observers = [batches, quiet, one_by_one, patched]
    async with Supervisor(config, observers=observers, clock=gw.clock) as sup:
        await sup.wait_started()
        orders = sup.handle("orders")
        for i in range(3):
            orders.send_app("D", new_order(f"b{i}", gw.markets[0], 1, 1, 60))
        while len(one_by_one.seen) < 6:  # pending + acknowledged for each
            await trio.sleep(0.1)
    flat = [cl for batch in batches.batches for cl in batch]
    assert flat == one_by_one.seen == on_instance
    assert sorted(set(flat)) == [b"b0", b"b1", b"b2"] and len(flat) == 6
    assert max(len(b) for b in batches.batches) >= 2  # a report pair arrives as one burst


async def test_status_events_iterate_until_shutdown(kalshi_gateway, autojump_clock, tmp_path):
    gw = kalshi_gateway
    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    seen: list[tuple[str, ChildState]] = []
    async with Supervisor(config, clock=gw.clock) as sup:
        events = sup.status_events()

        async def collect() -> None:
            async for event in events:
                seen.append((event.name, event.state))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await wait_state(sup, "orders", ChildState.UP)
            sup.request_shutdown()
            await sup.wait_shutdown()
    assert seen == [
        ("orders", ChildState.STARTING), ("orders", ChildState.UP), ("orders", ChildState.SHUTDOWN)
    ]


async def test_duplicate_keys_in_a_config_built_in_code_are_refused(kalshi_gateway, tmp_path):
    gw = kalshi_gateway
    config, sup = build_config(gw, tmp_path, {"a": ("KalshiNR", "nr")})
    twin = gw.session_config("KalshiRT", key="nr", name="b", store_dir=tmp_path)
    both = Config(path=config.path, sessions={**config.sessions, "b": twin})
    with pytest.raises(ConfigError, match="'a' and 'b' use the same key_id"):
        Supervisor((both, sup))


async def test_observers_may_send_in_session_up_and_spawn_tasks(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway
    done = trio.Event()

    class Greeter(Recorder):
        def session_up(self, name: str, logged_on: LoggedOn) -> None:
            super().session_up(name, logged_on)
            self.handles[name].send_app("D", new_order("from-up", gw.markets[0], 1, 1, 60))

            async def later() -> None:
                _, event = await self.app_receive.receive()
                assert event.message.get(11) == b"from-up"
                done.set()

            self.spawn(later)

    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    async with Supervisor(config, observers=[Greeter()], clock=gw.clock):
        await done.wait()


async def test_a_component_exception_fails_the_supervisor_loudly(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway

    class Broken(Recorder):
        def session_up(self, name: str, logged_on: LoggedOn) -> None:
            super().session_up(name, logged_on)
            raise ValueError("component bug")

    rec = Broken()
    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    with pytest.raises(ValueError, match="component bug"):
        async with Supervisor(config, observers=[rec], clock=gw.clock):
            await trio.sleep_forever()
    assert [(d.name, d.kind) for d in rec.downs] == [("orders", DownKind.SHUTDOWN)]


# ----------------------------------------------------------------------------- one key, one connection


async def test_a_restart_never_dials_while_the_old_connection_is_open(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway
    log: list[str] = []

    def tracing_connect(cfg, *, store, signer, clock):  # type: ignore[no-untyped-def]
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def run():  # type: ignore[no-untyped-def]
            log.append("dial")
            try:
                async with connect_session(cfg, store=store, signer=signer, clock=clock) as s:
                    yield s
            finally:
                log.append("closed")

        return run()

    registry = KeyRegistry()
    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    key_id = config[0].sessions["orders"].key_id
    async with Supervisor(
        config, clock=gw.clock, connect=tracing_connect, registry=registry,
        rng=random.Random(3),
    ) as sup:
        await wait_state(sup, "orders", ChildState.UP)
        assert registry.owner_of(key_id) == "orders"
        gw.inject("drop:endpoint=KalshiNR,after=1")
        sup.handle("orders").send_app("D", new_order("x", gw.markets[0], 1, 1, 60))
        mark = len(sup.history)
        await wait_state(sup, "orders", ChildState.BACKOFF, since=mark)
        assert registry.owner_of(key_id) is None  # released: the old connection is closed
        # Someone else holds the key now: the restart waits for it instead of dialling.
        holder_may_leave = trio.Event()
        holder_in = trio.Event()

        async def other_holder() -> None:
            async with registry.hold(key_id, "someone else"):
                holder_in.set()
                await holder_may_leave.wait()
                log.append("other released")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_holder)
            await holder_in.wait()
            await wait_state(sup, "orders", ChildState.STARTING, since=mark)
            await trio.sleep(120)  # MockClock: time passes, the child must still be waiting
            assert log == ["dial", "closed"]
            holder_may_leave.set()
        await wait_state(sup, "orders", ChildState.UP, since=mark)
    assert log == ["dial", "closed", "other released", "dial", "closed"]


# ----------------------------------------------------------------------------- leaving the block


async def test_an_exception_in_the_body_logs_out_and_propagates_unwrapped(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway
    rec = Recorder()
    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    with pytest.raises(LookupError, match="application bug"):
        async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
            await sup.wait_started()
            raise LookupError("application bug")
    assert [(d.name, d.kind, d.ended.clean) for d in rec.downs] == [
        ("orders", DownKind.SHUTDOWN, True)
    ]


async def test_an_exception_in_the_body_before_any_logon_ends_at_once(
    kalshi_gateway, autojump_clock, tmp_path
):
    # The body raises before the start sequence has run at all: no session may be dialled,
    # and the shutdown must not wait on children that never began.
    gw = kalshi_gateway
    rec = Recorder()
    config = build_config(gw, tmp_path, THREE)
    start = trio.current_time()
    with pytest.raises(LookupError, match="application bug"):
        async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
            raise LookupError("application bug")
    assert trio.current_time() - start < 1.0
    assert rec.ups == [] and rec.downs == []
    assert {name: s.state for name, s in sup.status().items()} == {
        "dc": ChildState.SHUTDOWN, "orders": ChildState.SHUTDOWN, "rt": ChildState.SHUTDOWN
    }


async def test_an_exception_in_the_body_during_the_start_sequence_stops_every_session(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway
    rec = Recorder()
    config = build_config(gw, tmp_path, THREE)
    with trio.fail_after(60):
        with pytest.raises(LookupError, match="application bug"):
            async with Supervisor(config, observers=[rec], clock=gw.clock) as sup:
                await sup.handle("dc").wait_active()
                raise LookupError("application bug")
    assert all(not child.running for child in sup._children.values())
    assert [(d.name, d.kind) for d in rec.downs if d.name == "dc"] == [
        ("dc", DownKind.SHUTDOWN)
    ]


async def test_entering_in_a_cancelled_scope_ends_at_once_and_releases_everything(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway
    rec = Recorder()
    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    with trio.CancelScope() as scope:
        scope.cancel()
        async with Supervisor(config, observers=[rec], clock=gw.clock):
            await trio.sleep_forever()  # pragma: no cover - the entry itself is cancelled
    assert scope.cancelled_caught
    assert rec.ups == []
    # The key lock and the store were released: the same configuration runs again.
    async with Supervisor(config, clock=gw.clock) as sup:
        await sup.handle("orders").wait_active()


async def test_outer_cancellation_still_logs_out_every_session(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway
    rec = Recorder()
    config = build_config(gw, tmp_path, THREE)
    with trio.move_on_after(100) as scope:
        async with Supervisor(config, observers=[rec], clock=gw.clock):
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert [(d.name, d.kind, d.ended.clean) for d in rec.downs] == [
        ("rt", DownKind.SHUTDOWN, True),
        ("orders", DownKind.SHUTDOWN, True),
        ("dc", DownKind.SHUTDOWN, True),
    ]


async def test_shutdown_while_backing_off_or_dialling_is_immediate(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway
    gw.inject("refuse_connections:endpoint=KalshiNR,duration=100000")
    config = build_config(
        gw, tmp_path, {"dc": ("KalshiDC", "dc"), "orders": ("KalshiNR", "nr")},
        backoff_min=600.0, backoff_max=600.0, restart_intensity=100,
    )
    async with Supervisor(config, clock=gw.clock) as sup:
        await wait_state(sup, "orders", ChildState.BACKOFF)
        before = trio.current_time()
    assert trio.current_time() - before < 10  # no waiting out the 600 s backoff
    assert sup.status()["orders"].state is ChildState.SHUTDOWN
    assert sup.status()["dc"].state is ChildState.SHUTDOWN


async def test_an_observer_failing_to_attach_starts_nothing_and_holds_nothing(
    kalshi_gateway, autojump_clock, tmp_path
):
    gw = kalshi_gateway

    class Unattachable(ObserverBase):
        def attach(self, handles, spawn, clock) -> None:  # type: ignore[no-untyped-def]
            spawn(trio.sleep_forever)
            raise RuntimeError("cannot attach")

    config = build_config(gw, tmp_path, {"orders": ("KalshiNR", "nr")})
    with pytest.raises(RuntimeError, match="cannot attach"):
        async with Supervisor(config, observers=[Unattachable()], clock=gw.clock):
            pytest.fail("must not run")  # pragma: no cover
    assert gw.gateway.connections == []
    # Locks and stores were released: the same configuration starts now.
    async with Supervisor(config, clock=gw.clock) as sup:
        await wait_state(sup, "orders", ChildState.UP)
