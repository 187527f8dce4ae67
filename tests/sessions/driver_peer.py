"""Test counterparty for the driver and check tests: a FixConnection in the ACCEPTOR role run by
the same driver, plus stream wrappers to record, mute or break the wire.

Not a test module (no ``test_`` prefix); imported by ``test_driver.py``, ``test_check.py`` and
``test_transport.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from sessions.codec import StreamDecoder
from sessions.connection import FixConnection
from sessions.driver import FixSession, open_fix_session
from sessions.events import Event, LogonRequested
from sessions.message import FixMessage
from sessions.settings import Role, SessionSettings
from sessions.signature import logon_pre_hash, verify_logon_signature

KEY_ID = "3f1c2a9e-0000-4000-8000-0000000000aa"


class TapStream(trio.abc.Stream):
    """Wraps a stream: records what is written (with Trio time), can mute or break writing.

    ``mute_after_logon``: everything after the first write containing a Logon is dropped and
    closing is ignored, so the peer hears nothing more (no Heartbeats, no answers to
    TestRequests, no Logout, no EOF).
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.written: list[tuple[float, bytes]] = []
        self.muted = False
        self.mute_after_logon = False
        self.fail_writes = False
        #: Largest chunk one receive_some returns (to make reads message-sized).
        self.read_limit: int | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        if self.fail_writes:
            raise trio.BrokenResourceError("simulated broken connection")
        self.written.append((trio.current_time(), data))
        if self.muted:
            await trio.lowlevel.checkpoint()
            return
        if self.mute_after_logon and b"\x0135=A\x01" in data:
            self.muted = True
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.read_limit is not None:
            max_bytes = self.read_limit if max_bytes is None else min(max_bytes, self.read_limit)
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        if self.muted:
            # A black hole: the peer sees neither answers nor the connection closing.
            await trio.lowlevel.checkpoint()
            return
        await self.inner.aclose()

    def messages(self) -> list[tuple[float, FixMessage]]:
        """The written messages with the Trio time of the write that carried them."""
        out: list[tuple[float, FixMessage]] = []
        decoder = StreamDecoder()
        for at, chunk in self.written:
            decoder.feed(chunk)
            for item in decoder:
                assert isinstance(item, FixMessage), item
                out.append((at, item))
        return out

    def types(self) -> list[bytes]:
        return [m.get(35) or b"" for _, m in self.messages()]


@attrs.define
class Acceptor:
    """What the simulated gateway does with a Logon, and what it saw."""

    public_key: rsa.RSAPublicKey | None = None
    reject_text: str | None = None
    #: With ``reject_text``: also send a session Reject with this SessionRejectReason(373).
    reject_reason: int | None = None
    sender_comp_id: str = "KalshiNR"
    event_buffer: int = 1000
    sending_time_tolerance: float | None = 30.0
    #: Take events from the session (False: leave them queued, to exercise backpressure).
    consume: bool = True
    events: list[Event] = attrs.Factory(list)
    signature_ok: list[bool] = attrs.Factory(list)
    session: FixSession | None = None
    logged_on: trio.Event = attrs.Factory(trio.Event)
    finished: trio.Event = attrs.Factory(trio.Event)
    on_logged_on: Callable[[FixSession], None] | None = None

    def settings(self) -> SessionSettings:
        return SessionSettings(
            role=Role.ACCEPTOR,
            sender_comp_id=self.sender_comp_id,
            sending_time_tolerance=self.sending_time_tolerance,
        )

    def decide(self, session: FixSession, event: LogonRequested) -> None:
        msg = event.message
        if self.public_key is not None:
            pre_hash = logon_pre_hash(
                msg.get(52) or b"", msg.get(35) or b"", msg.get(34) or b"",
                msg.get(49) or b"", msg.get(56) or b"",
            )
            ok = verify_logon_signature(self.public_key, pre_hash, msg.get(96) or b"")
            self.signature_ok.append(ok)
            if not ok:
                session.reject_logon("signature verification failed")
                return
        if self.reject_text is not None:
            session.reject_logon(self.reject_text, session_reject_reason=self.reject_reason)
            return
        session.accept_logon()
        self.logged_on.set()
        if self.on_logged_on is not None:
            self.on_logged_on(session)

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Run one connection to its end (use as a ``trio.serve_tcp`` handler too)."""
        try:
            async with open_fix_session(
                stream, FixConnection(self.settings()), event_buffer=self.event_buffer
            ) as session:
                self.session = session
                if not self.consume:
                    await self._wait_for_logon_only(session)
                    await trio.sleep_forever()
                async for event in session.events():
                    self.events.append(event)
                    if isinstance(event, LogonRequested):
                        self.decide(session, event)
        finally:
            self.finished.set()

    async def _wait_for_logon_only(self, session: FixSession) -> None:
        while True:
            event = await session.next_event()
            self.events.append(event)
            if isinstance(event, LogonRequested):
                self.decide(session, event)
                return

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]
