"""The gateway's on-the-fly TLS material."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trio.testing

from sessions.errors import ConfigError
from sessions.testing.tls import GatewayTls


@pytest.fixture(scope="module")
def tls() -> GatewayTls:
    return GatewayTls.generate()


async def test_handshake_with_generated_ca(tls: GatewayTls) -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_raw, tls.server_context(), server_side=True)
    client = trio.SSLStream(client_raw, tls.client_context(), server_hostname="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    await client.send_all(b"8=FIXT.1.1")
    assert await server.receive_some(100) == b"8=FIXT.1.1"
    assert client.version() in ("TLSv1.2", "TLSv1.3")
    der = client.getpeercert(binary_form=True)
    import hashlib

    assert hashlib.sha256(der).hexdigest() == tls.pin_sha256


async def test_untrusted_client_fails(tls: GatewayTls) -> None:
    other = GatewayTls.generate()
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_raw, tls.server_context(), server_side=True)
    client = trio.SSLStream(client_raw, other.client_context(), server_hostname="127.0.0.1")

    async def serve() -> None:
        try:
            await server.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
        await trio.aclose_forcefully(client)  # the server then sees the end of the stream
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_files_round_trip_and_errors(tls: GatewayTls, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(tls.cert_pem)
    key.write_bytes(tls.key_pem)
    ca = tls.write_ca(tmp_path / "ca.pem")
    loaded = GatewayTls.from_files(cert, key, ca)
    assert loaded.pin_sha256 == tls.pin_sha256
    assert "PRIVATE" not in repr(loaded)
    with pytest.raises(ConfigError, match="cannot read"):
        GatewayTls.from_files(tmp_path / "missing.pem", key)
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(GatewayTls.generate().key_pem)
    with pytest.raises(ConfigError, match="do not match"):
        GatewayTls.from_files(cert, wrong)
