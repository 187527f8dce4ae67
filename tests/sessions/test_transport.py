"""Opening TCP/TLS transports: trust, host names, pins, and errors that say what to fix."""

from __future__ import annotations

import hashlib
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from driver_peer import KEY_ID
from sessions.config import SessionConfig
from sessions.driver import connect_session
from sessions.errors import CertificatePinMismatch, ConfigError, TlsError, TransportError
from sessions.profiles import get_profile
from sessions.signature import LogonSigner
from sessions.store import MemoryStore
from sessions.transport import (
    certificate_fingerprint,
    looks_like_tls,
    normalize_fingerprint,
    open_transport,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def idle_jump_clock() -> trio.testing.MockClock:
    # Real sockets: let loopback traffic settle (real time) before virtual time jumps ahead.
    return trio.testing.MockClock(autojump_threshold=0.05)


def fingerprint(cert: trustme.LeafCert) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).hexdigest()


class Recorder:
    """A server handler that keeps every byte it receives until the client goes away."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.closed = trio.Event()
        self.errors: list[BaseException] = []

    async def handler(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        try:
            while data := await stream.receive_some():
                self.received += data
        except trio.BrokenResourceError as exc:  # e.g. the client cut the TLS session
            self.errors.append(exc)
        finally:
            self.closed.set()


async def serve_tls(nursery: trio.Nursery, cert: trustme.LeafCert, handler: Any) -> int:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handler, 0, ctx, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def serve_plain(nursery: trio.Nursery, handler: Any) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def free_port() -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


# --------------------------------------------------------------------------- TCP
async def test_plain_tcp_connects() -> None:
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        port = await serve_plain(nursery, rec.handler)
        stream = await open_transport("127.0.0.1", port, tls=False)
        await stream.send_all(b"8=FIXT.1.1\x01")
        await stream.aclose()
        await rec.closed.wait()
        nursery.cancel_scope.cancel()
    assert bytes(rec.received) == b"8=FIXT.1.1\x01"


async def test_refused_connection_names_host_port_and_cause() -> None:
    port = await free_port()
    with pytest.raises(TransportError) as info:
        await open_transport("127.0.0.1", port, tls=False, connect_timeout=5)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "refused" in message and "stunnel" in message
    assert not isinstance(info.value, TlsError)


# --------------------------------------------------------------------------- TLS trust
async def test_tls_with_ca_file_and_correct_pin(
    server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    rec = Recorder()
    pin = fingerprint(server_cert)
    colon_pin = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_cert, rec.handler)
        stream = await open_transport(
            "127.0.0.1", port, tls=True, ca_file=ca_file, pin_sha256=colon_pin
        )
        assert isinstance(stream, trio.SSLStream)
        assert certificate_fingerprint(stream) == pin
        assert stream.version() in ("TLSv1.2", "TLSv1.3")
        await stream.send_all(b"hello")
        await stream.aclose()
        await rec.closed.wait()
        nursery.cancel_scope.cancel()
    assert bytes(rec.received) == b"hello"


async def test_unknown_ca_suggests_ca_file(server_cert: trustme.LeafCert) -> None:
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_cert, Recorder().handler)
        with pytest.raises(TlsError) as info:
            await open_transport("127.0.0.1", port, tls=True)
        nursery.cancel_scope.cancel()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "not trusted" in message
    assert "ca_file" in message and "stunnel" in message


async def test_a_ca_file_that_does_not_trust_the_server_is_named_in_the_error(
    server_cert: trustme.LeafCert, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_cert, Recorder().handler)
        with pytest.raises(TlsError) as info:
            await open_transport("127.0.0.1", port, tls=True, ca_file=other)
        nursery.cancel_scope.cancel()
    message = str(info.value)
    assert f"not trusted by ca_file {other}" in message
    assert "system trust store" not in message


async def test_host_name_is_checked(server_cert: trustme.LeafCert, ca_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_cert, Recorder().handler)
        with pytest.raises(TlsError, match="not valid for 'fix.example.com'"):
            await open_transport(
                "127.0.0.1", port, tls=True, ca_file=ca_file, server_hostname="fix.example.com"
            )
        ok = await open_transport(
            "127.0.0.1", port, tls=True, ca_file=ca_file, server_hostname="localhost"
        )
        await ok.aclose()
        nursery.cancel_scope.cancel()


async def test_tls_to_a_plain_port_that_hangs_up_suggests_stunnel() -> None:
    async def hang_up(stream: trio.abc.Stream) -> None:
        await stream.receive_some()  # the ClientHello, which a FIX engine cannot parse
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        port = await serve_plain(nursery, hang_up)
        with pytest.raises(TlsError) as info:
            await open_transport("127.0.0.1", port, tls=True)
        nursery.cancel_scope.cancel()
    message = str(info.value)
    assert "plain TCP" in message and "stunnel" in message and f":{port}" in message


async def test_tls_to_a_silent_plain_port_times_out(
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await serve_plain(nursery, silent)
        with pytest.raises(TlsError) as info:
            await open_transport("127.0.0.1", port, tls=True, connect_timeout=7)
        assert trio.current_time() == pytest.approx(7, abs=0.5)
        nursery.cancel_scope.cancel()
    assert "did not complete within" in str(info.value) and "tls = false" in str(info.value)


# --------------------------------------------------------------------------- pins
async def test_pin_mismatch_closes_before_any_logon(
    server_cert: trustme.LeafCert, ca_file: Path, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = LogonSigner.from_private_key(key, KEY_ID)
    wrong = "ab" * 32
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_cert, rec.handler)
        config = SessionConfig(
            name="orders",
            profile=get_profile("KalshiNR"),
            host="127.0.0.1",
            port=port,
            key_id=KEY_ID,
            private_key=tmp_path / "unused.pem",
            tls=True,
            ca_file=ca_file,
            pin_sha256=wrong,
        )
        with pytest.raises(CertificatePinMismatch) as info:
            async with connect_session(config, store=MemoryStore(), signer=signer):
                pytest.fail("no session may be yielded after a pin mismatch")
        await rec.closed.wait()
        nursery.cancel_scope.cancel()
    message = str(info.value)
    assert wrong in message and fingerprint(server_cert) in message
    assert "no Logon was sent" in message
    assert rec.connections == 1 and bytes(rec.received) == b""


async def test_bad_settings_fail_before_dialling(tmp_path: Path) -> None:
    port = await free_port()  # nothing listens: reaching the network would say "refused"
    with pytest.raises(ConfigError, match="does not exist"):
        await open_transport("127.0.0.1", port, tls=True, ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="64 hex"):
        await open_transport("127.0.0.1", port, tls=True, pin_sha256="abc")
    with pytest.raises(ConfigError, match="tls = true"):
        await open_transport("127.0.0.1", port, tls=False, pin_sha256="ab" * 32)


def test_fingerprint_normalisation_and_tls_sniffing() -> None:
    assert normalize_fingerprint(" AB:" + "cd" * 31 + " ") == "ab" + "cd" * 31
    with pytest.raises(ConfigError):
        normalize_fingerprint("zz" * 32)
    assert looks_like_tls(b"\x15\x03\x03\x00\x02\x02\x46")  # alert record
    assert looks_like_tls(b"\x16\x03\x01\x02\x00")  # handshake record
    assert not looks_like_tls(b"8=FIXT.1.1\x01")
