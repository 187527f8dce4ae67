"""Helpers shared by the simulated-exchange tests: message builders and a small driver (:class:`Sim`)
around :class:`~sessions.testing.exchange.Exchange`. Imported by name, like ``driver_peer``."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from sessions.message import FixMessage
from sessions.testing.exchange import Exchange, ExchangeConfig, LogonFlags, Outbound

# 2026-03-02 14:00:00 UTC, a Monday (09:00 US Eastern).
T0 = 1_772_460_000.0
MKT = "HIGHNY-26MAR02"


def fix(msg_type: str, *pairs: tuple[int, Any]) -> FixMessage:
    """A FixMessage with MsgType first."""
    return FixMessage([(35, msg_type), *pairs])


def nos(
    cl: str,
    side: int,
    price: Any,
    qty: Any,
    *extra: tuple[int, Any],
    symbol: str = MKT,
    tif: str = "1",
) -> FixMessage:
    """A limit NewOrderSingle."""
    return fix(
        "D", (11, cl), (38, qty), (40, 2), (44, price), (54, side), (55, symbol), (59, tif), *extra
    )


def cxl(cl: str, orig: str, side: int, *extra: tuple[int, Any], symbol: str = MKT) -> FixMessage:
    return fix("F", (11, cl), (41, orig), (54, side), (55, symbol), *extra)


def amend(
    cl: str, orig: str, side: int, qty: Any, price: Any = None, symbol: str = MKT
) -> FixMessage:
    pairs: list[tuple[int, Any]] = [(11, cl), (41, orig), (38, qty), (40, 2)]
    if price is not None:
        pairs.append((44, price))
    pairs += [(54, side), (55, symbol)]
    return fix("G", *pairs)


def fields(o: Outbound) -> dict[int, str]:
    """Body as {tag: value} (first occurrence wins)."""
    d: dict[int, str] = {}
    for t, v in o.body:
        d.setdefault(t, v.decode())
    return d


def ers(out: Iterable[Outbound], key: str | None = None) -> list[dict[int, str]]:
    """The ExecutionReports in ``out`` (for ``key`` only, if given) as field dicts."""
    return [fields(o) for o in out if o.msg_type == b"8" and (key is None or o.key_id == key)]


def kinds(out: Iterable[Outbound], key: str | None = None) -> list[str]:
    """``150/39`` of each ExecutionReport, e.g. ``["A/A", "0/0"]``."""
    return [f"{e[150]}/{e[39]}" for e in ers(out, key)]


def of_type(
    out: Iterable[Outbound], msg_type: bytes, key: str | None = None
) -> list[dict[int, str]]:
    return [fields(o) for o in out if o.msg_type == msg_type and (key is None or o.key_id == key)]


class Sim:
    """An exchange with two accounts (A, B), their keys, one open market and a clock."""

    def __init__(self, config: ExchangeConfig | None = None, seed: int = 42) -> None:
        self.ex = Exchange(rng=random.Random(seed), config=config)
        self.now = T0
        self._seq: dict[str, int] = {}
        self.ex.add_account("A")
        self.ex.add_account("B")
        for key, acct in (
            ("a1", "A"),
            ("a2", "A"),
            ("alisten", "A"),
            ("b1", "B"),
            ("blisten", "B"),
            ("adc", "A"),
        ):
            self.ex.add_key(key, acct)
        self.ex.add_market(MKT)

    def connect(self, key: str, endpoint: str = "KalshiNR", **flags: Any) -> None:
        self.ex.connect(key, endpoint, LogonFlags(**flags), self.now)
        self._seq[key] = 1

    def listen(self, key: str = "alisten", endpoint: str = "KalshiNR") -> None:
        self.connect(key, endpoint, listener_session=True, skip_pending_exec_reports=True)

    def send(self, key: str, msg: FixMessage, *, dt: float = 0.0) -> list[Outbound]:
        """Deliver ``msg`` from ``key`` after advancing the clock by ``dt`` seconds."""
        self.now += dt
        self._seq[key] = self._seq.get(key, 1) + 1
        return self.ex.handle(key, msg, self._seq[key], self.now)

    def last_seq(self, key: str) -> int:
        return self._seq[key]

    def tick(self, dt: float) -> list[Outbound]:
        self.now += dt
        return self.ex.tick(self.now)


def trading_sim(**config: Any) -> Sim:
    """Accounts A and B; a1 (A) and b1 (B) logged on to KalshiNR with pending reports skipped."""
    s = Sim(ExchangeConfig(**config) if config else None)
    s.connect("a1", skip_pending_exec_reports=True)
    s.connect("b1", skip_pending_exec_reports=True)
    return s
