"""Whatever a client sends — garbage, oversized or malformed messages, unknown tags — gets the
answer Kalshi would give, and neither takes the gateway down nor disturbs other connections."""

from __future__ import annotations

import random

import pytest
import trio

from sessions.codec import StreamDecoder, encode_message
from sessions.message import FixMessage, utc_timestamp
from sessions.testing.client import new_order, next_app

pytestmark = pytest.mark.kalshi_gateway(tls=False)


LOGON_BODY = [(98, b"0"), (108, b"30"), (141, b"Y"), (1137, b"9")]


class RawClient:
    """A hand-driven client on a plain TCP connection: bytes out, decoded messages in."""

    def __init__(self, gw, stream: trio.SocketStream, endpoint: str, role: str) -> None:
        self.gw = gw
        self.stream = stream
        self.endpoint = endpoint
        self.key = gw.key(role)
        self.seq = 1
        self.decoder = StreamDecoder()

    @classmethod
    async def open(cls, gw, endpoint: str = "KalshiNR", role: str = "nr") -> RawClient:
        stream = await trio.open_tcp_stream(gw.host, gw.port(endpoint))
        return cls(gw, stream, endpoint, role)

    def message(
        self, msg_type: bytes, body: list[tuple[int, bytes]], seq: int | None = None,
        *, signer=None,
    ) -> bytes:
        """``body`` framed with this client's header; a Logon is signed by ``signer`` (default:
        the key's own)."""
        seq = self.seq if seq is None else seq
        stamp = utc_timestamp(self.gw.clock())
        header = [(49, self.key.key_id.encode()), (56, self.endpoint.encode()),
                  (34, str(seq).encode()), (52, stamp)]
        if msg_type == b"A":
            pre_hash = b"\x01".join((stamp, b"A", str(seq).encode(), header[0][1], header[1][1]))
            sig = (signer or self.key.signer).sign(pre_hash)
            body = [*body, (95, str(len(sig)).encode()), (96, sig)]
        self.seq += 1
        return encode_message(msg_type, header, body)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def logon(self) -> FixMessage:
        await self.send(self.message(b"A", LOGON_BODY))
        reply = await self.receive()
        assert reply.get(35) == b"A", reply
        return reply

    async def receive(self) -> FixMessage:
        """The next decoded message; raises EOFError when the gateway closed the connection."""
        while True:
            item = self.decoder.next_message()
            if isinstance(item, FixMessage):
                return item
            if item is None:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("closed by the gateway")
                self.decoder.feed(data)

    async def receive_type(self, msg_type: bytes) -> FixMessage:
        while True:
            msg = await self.receive()
            if msg.get(35) == msg_type:
                return msg

    async def ping(self, test_id: bytes) -> None:
        await self.send(self.message(b"1", [(112, test_id)]))
        hb = await self.receive_type(b"0")
        assert hb.get(112) == test_id

    async def until_closed(self) -> list[FixMessage]:
        got = []
        while True:
            try:
                got.append(await self.receive())
            except (EOFError, trio.BrokenResourceError):
                return got


async def healthy(gw, bystander) -> None:
    """The gateway still serves: the bystander's session answers and trades."""
    await bystander.test_request(timeout=5)
    assert not gw.gateway.internal_errors


async def test_garbage_and_oversized_messages_are_ignored(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    async with gw.connect("KalshiRT") as bystander:
        await bystander.wait_logged_on()
        client = await RawClient.open(gw)
        # Not FIX at all. (FIX resynchronises at an "8=" that follows an SOH, hence the last byte.)
        await client.send(b"\x00\xffGET / HTTP/1.1\r\n\r\n\x01")
        await client.logon()
        await client.send(b"8=FIXT.1.1\x019=12\x0135=0\x0110=999\x01")  # bad length/checksum
        await client.send(b"8=FIXT.1.1\x019=99999999\x01" + b"x" * 70000)  # oversized
        await client.send(b"\x01")
        await client.ping(b"still-here")
        await healthy(gw, bystander)


async def test_first_message_must_be_a_logon(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    client = await RawClient.open(gw)
    await client.send(client.message(b"D", new_order_bytes("c1", gw.markets[0])))
    assert await client.until_closed() == []  # dropped without a word, as FIX prescribes


def new_order_bytes(cl: str, symbol: str) -> list[tuple[int, bytes]]:
    return [(t, str(v).encode()) for t, v in new_order(cl, symbol, 1, 1, 30)]


async def test_malformed_sequence_number_ends_the_session(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    client = await RawClient.open(gw)
    await client.logon()
    raw = client.message(b"0", [])
    header_fixed = raw.replace(b"\x0134=2\x01", b"\x0134=two\x01")
    # Re-frame with the right BodyLength/CheckSum so only MsgSeqNum is wrong.
    msg = StreamDecoder()
    msg.feed(raw)
    (parsed,) = list(msg)
    pairs = [(t, b"two" if t == 34 else v) for t, v in parsed.pairs if t not in (8, 9, 10)]
    await client.send(FixMessage(pairs).encode())
    assert header_fixed != raw
    tail = await client.until_closed()
    assert [m.get(35) for m in tail] == [b"5"]
    assert b"MsgSeqNum" in (tail[0].get(58) or b"")


async def test_invalid_msg_type_and_missing_fields(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    client = await RawClient.open(gw)
    await client.logon()
    await client.send(client.message(b"ZZ", [(1, b"x")]))
    rej = await client.receive_type(b"3")
    assert (rej.get(373), rej.get(45)) == (b"11", b"2")
    await client.send(client.message(b"D", [(11, b"c1"), (38, b"1")]))  # no Side, Symbol, …
    rej = await client.receive_type(b"3")
    assert rej.get(373) == b"1"
    await client.send(client.message(b"D", [(11, b"c2"), (38, b""), (40, b"2")]))  # empty value
    rej = await client.receive_type(b"3")
    assert rej.get(373) == b"4"
    await client.ping(b"alive")


async def test_seeded_junk_never_hurts_the_gateway(kalshi_gateway, autojump_clock) -> None:
    gw = kalshi_gateway
    rng = random.Random(20260713)
    fragments = [b"8=FIXT.1.1\x01", b"9=", b"35=D\x01", b"10=", b"\x01", b"=", b"8=", b"34=",
                 b"95=5\x0196=", b"999999=", b"49=", b"\x00", b"\xff" * 3, b"52=2026"]
    async with gw.connect("KalshiNR") as bystander:
        await bystander.wait_logged_on()
        for round_ in range(20):
            endpoint = rng.choice(["KalshiRT", "KalshiDC", "KalshiPT", "KalshiRFQ"])
            role = {"KalshiRT": "rt", "KalshiDC": "dc", "KalshiPT": "pt", "KalshiRFQ": "rfq"}[endpoint]
            client = await RawClient.open(gw, endpoint, role)
            if rng.random() < 0.5:
                await client.logon()
            junk = b"".join(rng.choice(fragments) + rng.randbytes(rng.randint(0, 40))
                            for _ in range(rng.randint(1, 30)))
            try:
                await client.send(junk)
            except trio.BrokenResourceError:
                pass
            with trio.move_on_after(2):
                await client.until_closed()
            await client.stream.aclose()
            await healthy(gw, bystander)
        bystander.send_app("D", new_order("after-junk", gw.markets[0], 1, 1, 30))
        assert (await next_app(bystander, [b"8"])).get(11) == b"after-junk"
    await gw.gateway.wait_idle()
    assert not gw.gateway.internal_errors


@pytest.mark.parametrize("problem", ["signature", "undefined tag"])
async def test_mid_session_reset_logon_is_checked_like_a_first_logon(
    kalshi_gateway, autojump_clock, problem
) -> None:
    """A Logon with 141=Y on a logged-on session goes through the Logon check: refused, it gets
    exactly what the same Logon gets as a connection's first (REFERENCE §2.2: every Logon is
    signed), and the connection ends."""
    gw = kalshi_gateway
    signer = gw.key("rt").signer if problem == "signature" else None  # another key's private key
    body = LOGON_BODY + ([(6000, b"x")] if problem == "undefined tag" else [])
    first = await RawClient.open(gw)
    await first.send(first.message(b"A", body, signer=signer))
    refused_first = await first.until_closed()
    client = await RawClient.open(gw)
    await client.logon()
    await client.ping(b"before-reset")
    client.seq = 1
    await client.send(client.message(b"A", body, signer=signer))
    refused_reset = await client.until_closed()

    def shape(msgs: list[FixMessage]) -> list[tuple[bytes | None, ...]]:
        return [(m.get(35), m.get(58), m.get(373), m.get(371), m.get(45)) for m in msgs]

    assert shape(refused_reset) == shape(refused_first)
    expected = [b"5"] if problem == "signature" else [b"3", b"5"]
    assert [m.get(35) for m in refused_reset] == expected
    if problem == "signature":
        assert (refused_reset[0].get(58) or b"").startswith(b"Invalid signature")
    await gw.gateway.wait_idle()
    assert not gw.gateway.is_connected(client.key.key_id)
    assert gw.gateway.connections[-1].ended == "local"
    assert not gw.gateway.internal_errors


async def test_mid_session_reset_logon_correctly_signed_restarts_the_numbers(
    kalshi_gateway, autojump_clock
) -> None:
    gw = kalshi_gateway
    client = await RawClient.open(gw)
    await client.logon()
    await client.ping(b"before-reset")
    client.seq = 1
    await client.send(client.message(b"A", LOGON_BODY))
    answer = await client.receive_type(b"A")
    assert (answer.get(141), answer.get(34)) == (b"Y", b"1")
    await client.ping(b"after-reset")  # our MsgSeqNum 2 is the one the gateway expects now
    assert gw.gateway.is_connected(client.key.key_id)
