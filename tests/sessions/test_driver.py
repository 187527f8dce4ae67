"""The Trio driver around FixConnection: an initiator against an acceptor run by the same driver.

Memory streams with an autojump MockClock for the timing rules; loopback TCP and TLS (trustme)
for the real transports.
"""

from __future__ import annotations

import ssl
from decimal import Decimal
from functools import partial
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from driver_peer import KEY_ID, Acceptor, TapStream
from sessions.connection import FixConnection, State
from sessions.driver import FixSession, TestRequestTimeout, open_fix_session
from sessions.errors import (
    CodecError,
    LocalProtocolError,
    LogonRejected,
    SessionClosed,
    TransportError,
)
from sessions.events import (
    ApplicationMessage,
    HeartbeatTimeout,
    LoggedOn,
    LogonRequested,
    RejectReceived,
    SessionEnded,
    TestResponse,
)
from sessions.message import FixMessage, parse_utc_timestamp
from sessions.settings import Role, SessionSettings
from sessions.signature import LogonSigner
from sessions.store import MemoryStore
from sessions.transport import open_transport


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def signer(rsa_key: rsa.RSAPrivateKey) -> LogonSigner:
    return LogonSigner.from_private_key(rsa_key, KEY_ID)


def initiator(signer: LogonSigner, **kw: Any) -> FixConnection:
    base: dict[str, Any] = dict(
        role=Role.INITIATOR,
        sender_comp_id=KEY_ID,
        target_comp_id="KalshiNR",
        heartbeat_interval=30,
        sign_logon=signer.sign,
        accepted_peer_comp_ids=frozenset({"Kalshi"}),
        logout_timeout=5.0,
    )
    base.update(kw)
    return FixConnection(SessionSettings(**base), MemoryStore())


@asynccontextmanager
async def linked(
    signer: LogonSigner, acceptor: Acceptor, **session_kw: Any
) -> AsyncIterator[tuple[FixSession, TapStream]]:
    """An initiator session (its stream tapped) linked to ``acceptor`` over memory streams."""
    client_raw, server_raw = trio.testing.memory_stream_pair()
    tap = TapStream(client_raw)
    conn_kw = session_kw.pop("conn_kw", {})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_raw)
        async with open_fix_session(
            tap, initiator(signer, **conn_kw), peer_name="sim:8228", **session_kw
        ) as session:
            yield session, tap
        nursery.cancel_scope.cancel()


def app_body(i: int) -> list[tuple[int, Any]]:
    return [(11, f"order-{i}"), (55, "KXTEST-26"), (54, 1), (38, 5), (44, 55), (40, 2)]


async def drain(session: FixSession) -> list[Any]:
    return [event async for event in session.events()]


# --------------------------------------------------------------------------- memory streams
async def test_logon_app_message_test_request_and_logout(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor(public_key=signer.public_key())
    async with linked(signer, acceptor) as (session, tap):
        logged_on = await session.wait_logged_on()
        assert isinstance(logged_on, LoggedOn) and logged_on.heartbeat_interval == 30
        assert session.state is State.ACTIVE
        assert acceptor.signature_ok == [True]

        seq = session.send_app(b"D", app_body(1))
        assert seq == 2
        rtt = await session.test_request(timeout=5)
        assert rtt == 0.0  # nothing moves the MockClock on memory streams

        ended = await session.logout()
        assert ended is not None and ended.initiated_by == "local" and ended.clean
        assert session.finished and session.state is State.CLOSED
    events = await drain(session)
    assert [type(e) for e in events] == [LoggedOn, TestResponse, SessionEnded]
    await acceptor.finished.wait()
    (app,) = acceptor.of_type(ApplicationMessage)
    assert app.seq_num == 2 and app.message.get(11) == b"order-1"
    (peer_end,) = acceptor.of_type(SessionEnded)
    assert peer_end.initiated_by == "peer" and peer_end.clean
    assert tap.types() == [b"A", b"D", b"1", b"5"]


async def test_heartbeats_after_interval_of_silence_and_fix_time_follows_trio_time(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor(public_key=signer.public_key())
    async with linked(signer, acceptor) as (session, tap):
        await session.wait_logged_on()
        await trio.sleep(65)
        assert session.state is State.ACTIVE
    msgs = tap.messages()
    heartbeats = [(at, m) for at, m in msgs if m.get(35) == b"0"]
    assert [at for at, _ in heartbeats] == [30.0, 60.0]
    assert not [m for _, m in msgs if m.get(35) == b"1"], "a chatty peer needs no TestRequest"
    logon_time = parse_utc_timestamp(msgs[0][1].get(52) or b"")
    assert parse_utc_timestamp(heartbeats[0][1].get(52) or b"") - logon_time == pytest.approx(30, abs=0.002)


async def test_silent_peer_gets_test_request_then_disconnect(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor(on_logged_on=lambda s: None)
    client_raw, server_raw = trio.testing.memory_stream_pair()
    tap = TapStream(client_raw)
    server_tap = TapStream(server_raw)
    server_tap.mute_after_logon = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_tap)
        async with open_fix_session(tap, initiator(signer)) as session:
            await session.wait_logged_on()
            events = await drain(session)
        nursery.cancel_scope.cancel()
    timeouts = [e for e in events if isinstance(e, HeartbeatTimeout)]
    assert len(timeouts) == 1
    end = events[-1]
    assert isinstance(end, SessionEnded) and end.initiated_by == "error" and not end.clean
    sent = [(at, m.get(35)) for at, m in tap.messages()]
    # 30 s: our own heartbeat; 36 s (HeartBtInt + 20 %): TestRequest; 72 s: give up with Logout.
    assert (36.0, b"1") in sent
    assert sent[-1] == (72.0, b"5")
    assert session.finished and trio.current_time() == 72.0


async def test_test_request_times_out_when_peer_is_silent(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server_tap = TapStream(server_raw)
    server_tap.mute_after_logon = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_tap)
        async with open_fix_session(client_raw, initiator(signer)) as session:
            await session.wait_logged_on()
            with pytest.raises(TestRequestTimeout, match="TEST-1"):
                await session.test_request(timeout=5)
            assert trio.current_time() == 5.0
        nursery.cancel_scope.cancel()


async def test_logon_rejected_text_is_surfaced(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor(reject_text="already exists")
    async with linked(signer, acceptor) as (session, _tap):
        with pytest.raises(LogonRejected) as info:
            await session.wait_logged_on()
        assert info.value.text == "already exists"
        assert info.value.reason == "already_exists"
        assert "already exists" in str(info.value) and "sim:8228" in str(info.value)
        with pytest.raises(LocalProtocolError):
            session.send_app(b"D", app_body(1))
    assert session.finished


async def test_bad_signature_is_rejected_by_the_test_acceptor(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    acceptor = Acceptor(public_key=other.public_key())
    async with linked(signer, acceptor) as (session, _tap):
        with pytest.raises(LogonRejected) as info:
            await session.wait_logged_on()
    assert acceptor.signature_ok == [False]
    assert info.value.reason == "signature"


async def test_cancellation_logs_out_gracefully(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    client_raw, server_raw = trio.testing.memory_stream_pair()
    tap = TapStream(client_raw)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_raw)
        with trio.move_on_after(10):
            async with open_fix_session(tap, initiator(signer)) as session:
                await session.wait_logged_on()
                await trio.sleep_forever()
        await acceptor.finished.wait()
    assert session.ended is not None and session.ended.clean
    assert session.ended.initiated_by == "local"
    assert tap.types()[-1] == b"5"
    (peer_end,) = acceptor.of_type(SessionEnded)
    assert peer_end.initiated_by == "peer" and peer_end.clean


async def test_opening_in_a_cancelled_scope_raises_cancelled_and_closes_the_stream(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    entered = False
    with trio.CancelScope() as scope:
        scope.cancel()
        async with open_fix_session(client_raw, initiator(signer)):
            entered = True  # pragma: no cover - the open itself is cancelled
    assert scope.cancelled_caught and not entered
    # Nothing was sent, and the stream now belongs to nobody: it was closed (EOF at the peer).
    assert await server_raw.receive_some(100) == b""


async def test_exit_waits_at_most_logout_timeout_for_a_silent_peer(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server_tap = TapStream(server_raw)
    server_tap.mute_after_logon = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_tap)
        async with open_fix_session(client_raw, initiator(signer, logout_timeout=3.0)) as session:
            await session.wait_logged_on()
            started = trio.current_time()
        assert trio.current_time() - started == pytest.approx(3.0)
        nursery.cancel_scope.cancel()
    assert session.ended is not None and not session.ended.clean


async def test_peer_eof_ends_the_session_without_raising(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    acceptor = Acceptor()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_raw)
        async with open_fix_session(client_raw, initiator(signer)) as session:
            await session.wait_logged_on()
            await acceptor.logged_on.wait()
            await server_raw.aclose()  # the gateway vanishes without a Logout
            events = await drain(session)
        nursery.cancel_scope.cancel()
    end = events[-1]
    assert isinstance(end, SessionEnded) and end.initiated_by == "transport" and not end.clean
    assert end.was_logged_on
    assert session.transport_error is None  # a plain EOF, not a failure of the stream


async def test_broken_transport_becomes_transport_error(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor) as (session, tap):
        await session.wait_logged_on()
        tap.fail_writes = True
        session.send_app(b"D", app_body(1))
        events = await drain(session)
        assert isinstance(events[-1], SessionEnded) and events[-1].initiated_by == "transport"
        assert isinstance(session.transport_error, TransportError)
        assert "sim:8228" in str(session.transport_error)
        with pytest.raises(SessionClosed):
            await session.next_event()


async def test_transport_failure_before_logon_raises_transport_error(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    await server_raw.aclose()  # nobody there: the Logon cannot be written
    async with open_fix_session(client_raw, initiator(signer), peer_name="sim:1") as session:
        with pytest.raises(TransportError, match="sim:1"):
            await session.wait_logged_on()


async def test_reading_stops_while_events_are_not_consumed(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor(consume=False, event_buffer=3)
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server_tap = TapStream(server_raw)
    server_tap.read_limit = 100  # about one message per read
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_tap)
        async with open_fix_session(client_raw, initiator(signer)) as session:
            await session.wait_logged_on()
            seqs = [session.send_app(b"D", app_body(i)) for i in range(50)]
            assert seqs == list(range(2, 52))
            await trio.testing.wait_all_tasks_blocked()
            server = acceptor.session
            assert server is not None
            # The acceptor's reader is parked behind its full queue: few messages were read.
            assert server.connection.next_target_seq < 10
            got = []
            while len(got) < 50:
                event = await server.next_event()
                if isinstance(event, ApplicationMessage):
                    got.append(event.seq_num)
            assert got == list(range(2, 52)), "wire order must equal sequence order"
        nursery.cancel_scope.cancel()


async def test_send_waits_while_the_wire_is_backed_up(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    # lockstep streams: send_all returns only when the peer reads, so a peer that stops
    # reading (its event queue is full) backs the writer up.
    client_raw, server_raw = trio.testing.lockstep_stream_pair()
    acceptor = Acceptor(consume=False, event_buffer=1)
    done: list[int] = []

    async def producer(session: FixSession) -> None:
        for i in range(40):
            done.append(await session.send(b"D", app_body(i)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_raw)
        async with open_fix_session(client_raw, initiator(signer), high_water=300) as session:
            await session.wait_logged_on()
            nursery.start_soon(producer, session)
            await trio.testing.wait_all_tasks_blocked()
            assert len(done) < 40
            assert session.unsent_bytes > 300
            server = acceptor.session
            assert server is not None
            seen = []
            while len(seen) < 40:
                event = await server.next_event()
                if isinstance(event, ApplicationMessage):
                    seen.append(event.seq_num)
            assert done == seen == list(range(2, 42))
        nursery.cancel_scope.cancel()


async def test_session_end_does_not_wait_forever_on_a_blocked_write(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    # The peer neither reads (full queue, lockstep stream) nor talks (muted): our writer is
    # stuck in send_all when the heartbeat timeout ends the session.
    client_raw, server_raw = trio.testing.lockstep_stream_pair()
    server_tap = TapStream(server_raw)
    server_tap.mute_after_logon = True
    acceptor = Acceptor(consume=False, event_buffer=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_tap)
        async with open_fix_session(client_raw, initiator(signer)) as session:
            await session.wait_logged_on()
            for i in range(40):
                session.send_app(b"D", app_body(i))
            with trio.fail_after(1000):
                events = await drain(session)
            # 72 s: heartbeat timeout; +1 s for the blocked write to give up.
            assert trio.current_time() == pytest.approx(73.0)
        nursery.cancel_scope.cancel()
    assert any(isinstance(e, HeartbeatTimeout) for e in events)
    assert isinstance(events[-1], SessionEnded) and events[-1].initiated_by == "error"
    assert session.finished


async def test_start_false_defers_the_logon(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor, start=False) as (session, tap):
        await trio.testing.wait_all_tasks_blocked()
        assert session.state is State.IDLE and tap.written == []
        session.start()
        await session.wait_logged_on()
        assert tap.types() == [b"A"]


async def test_send_message_replaces_header(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor) as (session, _tap):
        await session.wait_logged_on()
        msg = FixMessage([(35, b"D"), (49, b"spoof"), (34, b"99"), (11, b"abc")])
        assert session.send_message(msg) == 2
        await session.test_request(timeout=5)  # round trip: the D is processed by now
    (app,) = acceptor.of_type(ApplicationMessage)
    assert app.message.get(49) == KEY_ID.encode() and app.message.get(11) == b"abc"


async def test_send_app_many_queues_in_order_and_keeps_what_preceded_a_refusal(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor) as (session, tap):
        await session.wait_logged_on()
        seqs = session.send_app_many([("D", [(11, "a")]), (b"D", [(11, b"b"), (38, 5)])])
        assert seqs == [2, 3]
        with pytest.raises(LocalProtocolError, match="session message"):
            session.send_app_many([("D", [(11, "c")]), ("0", []), ("D", [(11, "never")])])
        await session.test_request(timeout=5)  # round trip: every D is processed by now
    got = [e.message for e in acceptor.of_type(ApplicationMessage)]
    assert [(m.get(34), m.get(11)) for m in got] == [(b"2", b"a"), (b"3", b"b"), (b"4", b"c")]
    assert got[1].get(38) == b"5"


async def test_next_events_takes_a_whole_burst_and_ends_empty(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor) as (session, _tap):
        (logged_on,) = await session.next_events()
        assert isinstance(logged_on, LoggedOn)
        await session.test_request(timeout=5)
        assert acceptor.session is not None
        acceptor.session.send_app_many([("8", [(17, "e1")]), ("8", [(17, "e2")])])
        await session.test_request(timeout=5)  # both are read by now
        burst = await session.next_events()
        got = [e.message.get(17) for e in burst if isinstance(e, ApplicationMessage)]
        assert got == [b"e1", b"e2"]
        await session.logout()
        rest = await session.next_events()
        assert isinstance(rest[-1], SessionEnded)
        assert await session.next_events() == []


async def test_hand_events_to_delivers_in_the_producing_task_queued_ones_first(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor) as (session, _tap):
        await session.wait_logged_on()  # LoggedOn is queued, not yet taken
        got: list[list[Any]] = []
        session.hand_events_to(got.append)
        assert [type(e) for batch in got for e in batch] == [LoggedOn]
        assert acceptor.session is not None
        acceptor.session.send_app_many([("8", [(17, "e1")]), ("8", [(17, "e2")])])
        await session.test_request(timeout=5)  # both are read (and handed over) by now
        apps = [e.message.get(17) for b in got for e in b if isinstance(e, ApplicationMessage)]
        assert apps == [b"e1", b"e2"]
        assert any(len(b) >= 2 for b in got)  # one read, one call
        await session.logout()
        await session.wait_finished()
        assert isinstance(got[-1][-1], SessionEnded)
        assert await session.next_events() == []  # the queue saw only the end


class DirectTap(TapStream):
    """A tapped stream that also offers the driver's direct write (``send_nowait``); what it
    takes is recorded per call and forwarded by a pump task."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.direct: list[bytes] = []
        self._to_pump, self._from_driver = trio.open_memory_channel[bytes](100)

    def send_nowait(self, data: bytes) -> int:
        self.direct.append(bytes(data))
        self._to_pump.send_nowait(bytes(data))
        return len(data)

    async def pump(self) -> None:
        async for data in self._from_driver:
            await self.inner.send_all(data)


async def test_what_a_handler_sends_for_one_read_leaves_in_one_write(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    # Two reports arrive in one read; the handler answers each with two messages. The four
    # answers must leave in one direct write (the peer then reads them at once), in order.
    acceptor = Acceptor()
    client_raw, server_raw = trio.testing.memory_stream_pair()
    tap = DirectTap(client_raw)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_raw)
        nursery.start_soon(tap.pump)
        async with open_fix_session(tap, initiator(signer), peer_name="sim") as session:
            await session.wait_logged_on()

            def answer(events: list[Any]) -> None:
                for e in events:
                    if isinstance(e, ApplicationMessage):
                        exec_id = (e.message.get(17) or b"").decode()
                        session.send_app_many([("D", [(11, f"{exec_id}-a")])])
                        session.send_app("D", [(11, f"{exec_id}-b")])

            session.hand_events_to(answer)
            before = len(tap.direct)
            assert acceptor.session is not None
            acceptor.session.send_app_many([("8", [(17, "e1")]), ("8", [(17, "e2")])])
            await session.test_request(timeout=5)  # the reports were read and answered
            answers = [w for w in tap.direct[before:] if b"\x0135=D\x01" in w]
            await session.logout()
        nursery.cancel_scope.cancel()
    assert len(answers) == 1
    assert answers[0].count(b"\x0135=D\x01") == 4
    got = [e.message.get(11) for e in acceptor.of_type(ApplicationMessage)]
    assert got == [b"e1-a", b"e1-b", b"e2-a", b"e2-b"]


async def test_send_app_renders_values_and_refuses_a_bad_one_without_using_a_number(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor) as (session, _tap):
        await session.wait_logged_on()
        with pytest.raises(CodecError, match="SOH"):
            session.send_app("D", [(11, "bad\x01value")])
        assert session.send_app("D", [(11, "ok"), (38, 5), (44, Decimal("0.45"))]) == 2
        assert session.send_app("D", [(11, b"raw"), (38, b"1")]) == 3  # bytes as they are
        await session.test_request(timeout=5)
    got = [e.message for e in acceptor.of_type(ApplicationMessage)]
    assert [(m.get(11), m.get(38), m.get(44)) for m in got] == [
        (b"ok", b"5", b"0.45"), (b"raw", b"1", None)
    ]


# --------------------------------------------------------------------------- real sockets
async def run_over(client_stream: trio.abc.Stream, signer: LogonSigner) -> tuple[float, SessionEnded | None]:
    async with open_fix_session(client_stream, initiator(signer), peer_name="loopback") as session:
        await session.wait_logged_on()
        rtt = await session.test_request(timeout=10)
        ended = await session.logout()
    return rtt, ended


async def test_over_loopback_tcp(signer: LogonSigner) -> None:
    acceptor = Acceptor(public_key=signer.public_key())
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, acceptor.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await open_transport("127.0.0.1", port, tls=False)
        rtt, ended = await run_over(stream, signer)
        await acceptor.finished.wait()
        nursery.cancel_scope.cancel()
    assert rtt >= 0 and ended is not None and ended.clean
    assert acceptor.signature_ok == [True]
    assert acceptor.of_type(LogonRequested)[0].sender_comp_id == KEY_ID


async def test_direct_writes_keep_sequence_order_when_the_socket_fills(signer: LogonSigner) -> None:
    # Plain TCP writes straight from send_app while nothing is queued; a burst larger than
    # the socket buffers must spill to the writer task with nothing lost or reordered.
    acceptor = Acceptor(public_key=signer.public_key())
    filler = "x" * 4000
    count = 2000  # about 8 MB: well beyond loopback socket buffers
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, acceptor.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await open_transport("127.0.0.1", port, tls=False)
        async with open_fix_session(stream, initiator(signer), peer_name="loopback") as session:
            await session.wait_logged_on()
            seqs = [session.send_app("D", [(11, f"c{i}"), (58, filler)]) for i in range(count)]
            spilled = session.unsent_bytes
            await session.test_request(timeout=30)  # answered after every D was read
            await session.logout()
        await acceptor.finished.wait()
        nursery.cancel_scope.cancel()
    assert spilled > 0  # the burst did reach the writer-task path
    got = [e.message for e in acceptor.of_type(ApplicationMessage)]
    assert [m.get(11) for m in got] == [f"c{i}".encode() for i in range(count)]
    assert [int(m.get(34) or b"0") for m in got] == seqs
    assert seqs == list(range(seqs[0], seqs[0] + count))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def serve_tls(nursery: trio.Nursery, ca: trustme.CA, handler: Any) -> int:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, handler, 0, server_ctx, host="127.0.0.1"))
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def test_over_tls_with_trustme_ca_and_pin(
    signer: LogonSigner, ca: trustme.CA, tmp_path: Any
) -> None:
    acceptor = Acceptor(public_key=signer.public_key())
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, ca, acceptor.serve)
        probe = await open_transport("127.0.0.1", port, tls=True, ca_file=ca_file)
        assert isinstance(probe, trio.SSLStream)
        from sessions.transport import certificate_fingerprint

        pin = certificate_fingerprint(probe)
        await probe.aclose()
        await acceptor.finished.wait()
        acceptor.finished = trio.Event()
        stream = await open_transport(
            "127.0.0.1", port, tls=True, ca_file=ca_file, pin_sha256=pin.upper()
        )
        rtt, ended = await run_over(stream, signer)
        await acceptor.finished.wait()
        nursery.cancel_scope.cancel()
    assert rtt >= 0 and ended is not None and ended.clean
    assert acceptor.signature_ok == [True]


async def test_injected_clock_stamps_sending_time(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    base = 1_790_000_000.0  # any fixed epoch
    # The acceptor runs on the default (wall) clock: its SendingTime check would object.
    acceptor = Acceptor(sending_time_tolerance=None)
    client_raw, server_raw = trio.testing.memory_stream_pair()
    tap = TapStream(client_raw)
    conn = initiator(signer, sending_time_tolerance=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_raw)
        async with open_fix_session(
            tap, conn, clock=lambda: base + trio.current_time()
        ) as session:
            await session.wait_logged_on()
            await trio.sleep(30)
        nursery.cancel_scope.cancel()
    stamps = [parse_utc_timestamp(m.get(52) or b"") for _, m in tap.messages()]
    assert stamps[0] == base and stamps[1] == base + 30  # Logon, then the 30 s Heartbeat


async def test_connect_session_over_tls_with_config_key_and_durable_store(
    ca: trustme.CA, tmp_path: Any
) -> None:
    from sessions.config import SessionConfig
    from sessions.driver import connect_session
    from sessions.profiles import get_profile
    from sessions.signature import generate_key_pair, load_public_key
    from sessions.store import SqliteStore
    from sessions.transport import certificate_fingerprint

    generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    acceptor = Acceptor(public_key=load_public_key(tmp_path / "k.pub.pem"))
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, ca, acceptor.serve)
        probe = await open_transport("127.0.0.1", port, tls=True, ca_file=ca_file)
        assert isinstance(probe, trio.SSLStream)
        pin = certificate_fingerprint(probe)
        await probe.aclose()
        await acceptor.finished.wait()
        acceptor.finished = trio.Event()
        config = SessionConfig(
            name="orders", profile=get_profile("KalshiNR"), host="127.0.0.1", port=port,
            key_id=KEY_ID, private_key=tmp_path / "k.pem", ca_file=ca_file, pin_sha256=pin,
            store_dir=tmp_path / "store", durable_store=True,
        )
        async with connect_session(config) as session:
            assert session.peer_name == f"127.0.0.1:{port}"
            await session.wait_logged_on()
            assert session.send_app("D", app_body(1)) == 2
            ended = await session.logout()
        await acceptor.finished.wait()
        nursery.cancel_scope.cancel()
    assert ended is not None and ended.clean
    assert acceptor.signature_ok == [True]
    (logon,) = acceptor.of_type(LogonRequested)
    assert (logon.sender_comp_id, logon.target_comp_id, logon.reset_seq_num) == (
        KEY_ID, "KalshiNR", True
    )
    # The store was closed on exit and holds Logon(1), D(2), Logout(3).
    store = SqliteStore.open(tmp_path / "store", "KalshiNR", KEY_ID)
    try:
        assert store.next_sender_seq == 4
    finally:
        store.close()


async def test_tls_answer_to_a_plain_logon_is_recognised(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()

    async def tls_server() -> None:
        await server_raw.receive_some()  # our plain-text Logon
        await server_raw.send_all(b"\x15\x03\x03\x00\x02\x02\x46")  # TLS alert record
        await server_raw.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tls_server)
        async with open_fix_session(client_raw, initiator(signer), peer_name="gw:8228") as session:
            with pytest.raises(TransportError) as info:
                await session.wait_logged_on()
    assert "answered with TLS" in str(info.value) and "tls = true" in str(info.value)


async def test_reject_before_logout_classifies_the_logon_failure(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    # Reject 373=10 (SendingTime accuracy) and a Logout whose text says nothing specific.
    acceptor = Acceptor(reject_text="bad header", reject_reason=10)
    async with linked(signer, acceptor) as (session, _tap):
        with pytest.raises(LogonRejected) as info:
            await session.wait_logged_on()
    assert info.value.reason == "sending_time"
    assert session.logon_reject is not None and session.logon_reject.reason == 10


async def test_paused_timers_silence_heartbeats_for_the_duration(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    # A silent peer would get a TestRequest at 36 s and be dropped at 72 s; paused, nothing runs.
    acceptor = Acceptor()
    client_raw, server_raw = trio.testing.memory_stream_pair()
    tap = TapStream(client_raw)
    server_tap = TapStream(server_raw)
    server_tap.mute_after_logon = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor.serve, server_tap)
        async with open_fix_session(tap, initiator(signer)) as session:
            await session.wait_logged_on()
            session.pause_timers(100)
            await trio.sleep(99)
            assert session.state is State.ACTIVE and tap.types() == [b"A"]
            await trio.sleep(2)
            assert [(at, m.get(35)) for at, m in tap.messages()][1:] == [(100.0, b"1")]
        nursery.cancel_scope.cancel()


async def test_send_reject_on_behalf_of_the_application(
    autojump_clock: trio.testing.MockClock, signer: LogonSigner
) -> None:
    acceptor = Acceptor()
    async with linked(signer, acceptor) as (session, _tap):
        await session.wait_logged_on()
        session.send_app(b"D", app_body(1))
        await acceptor.logged_on.wait()
        server = acceptor.session
        assert server is not None
        while not acceptor.of_type(ApplicationMessage):
            await trio.testing.wait_all_tasks_blocked()
        server.send_reject(2, 3, "Undefined tag received", ref_tag=333333, ref_msg_type=b"D")
        event = await session.next_event()
        while not isinstance(event, RejectReceived):
            event = await session.next_event()
    assert (event.ref_seq_num, event.reason, event.ref_tag) == (2, 3, 333333)
    assert event.text == "Undefined tag received"
