"""Gateway._route hands each run of one key's application messages to its session in one
send_app_many call: what each session is asked to send, and in which order, is what one
send_app per message gave (session-level rejects still go through send_reject, in place)."""

from __future__ import annotations

from typing import Any

from sessions.connection import State
from sessions.errors import LocalProtocolError
from sessions.testing.endpoints import endpoint_spec
from sessions.testing.exchange import Outbound
from sessions.testing.gateway import Gateway, GatewayConfig, _Conn


class _FakeSession:
    def __init__(self, log: list[tuple[Any, ...]], name: str, *, fail: bool = False) -> None:
        self.state = State.ACTIVE
        self._log = log
        self._name = name
        self._fail = fail
        self.calls = 0

    def send_app_many(self, messages: list[tuple[bytes, Any]]) -> list[int]:
        self.calls += 1
        if self._fail:
            raise LocalProtocolError("session ended")
        for msg_type, body in messages:
            self._log.append((self._name, msg_type, body))
        return list(range(len(messages)))

    def send_reject(self, ref_seq: int, reason: int | None, text: str, *, ref_tag: int | None,
                    ref_msg_type: bytes | None) -> None:
        self._log.append((self._name, "reject", ref_seq, reason, text, ref_tag, ref_msg_type))


def _gateway_with(sessions: dict[str, _FakeSession]) -> Gateway:
    gw = Gateway(GatewayConfig(tls=False, record_wire=False))
    for n, (key, session) in enumerate(sessions.items(), 1):
        conn = _Conn(gw, endpoint_spec("KalshiNR"), n)
        conn.key_id = key
        conn.session = session  # type: ignore[assignment]
        gw._live[key] = conn
    return gw


def _er(key: str, n: int) -> Outbound:
    return Outbound(key, b"8", ((11, f"c{n}".encode()), (150, b"0")))


def test_runs_of_one_key_go_in_one_call_in_wire_order() -> None:
    log: list[tuple[Any, ...]] = []
    a, b = _FakeSession(log, "a"), _FakeSession(log, "b")
    gw = _gateway_with({"a": a, "b": b})
    reject = Outbound("a", b"3", ((45, b"7"), (58, b"Bad"), (371, b"44"), (372, b"D"), (373, b"6")))
    outbound = [
        _er("a", 1), _er("a", 2), _er("b", 3), _er("offline", 4), reject, _er("a", 5),
        Outbound("b", b"j", ((45, b"9"), (372, b"D"), (380, b"3"), (58, b"x"))), _er("a", 6),
    ]
    gw._route(outbound)
    assert log == [
        ("a", b"8", outbound[0].body),
        ("a", b"8", outbound[1].body),
        ("b", b"8", outbound[2].body),
        ("a", "reject", 7, 6, "Bad", 44, b"D"),
        ("a", b"8", outbound[5].body),
        ("b", b"j", outbound[6].body),
        ("a", b"8", outbound[7].body),
    ]
    assert (a.calls, b.calls) == (3, 2)


def test_a_session_that_ended_or_is_not_active_gets_nothing_and_others_still_do() -> None:
    log: list[tuple[Any, ...]] = []
    ended = _FakeSession(log, "ended", fail=True)
    idle = _FakeSession(log, "idle")
    idle.state = State.LOGOUT_SENT
    ok = _FakeSession(log, "ok")
    gw = _gateway_with({"ended": ended, "idle": idle, "ok": ok})
    gw._route([_er("ended", 1), _er("ended", 2), _er("idle", 3), _er("ok", 4)])
    assert log == [("ok", b"8", ((11, b"c4"), (150, b"0")))]
    assert (ended.calls, idle.calls) == (1, 0)
