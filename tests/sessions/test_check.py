"""``kalshi-fix check`` against a local acceptor (plain TCP and TLS), run in-process."""

from __future__ import annotations

import hashlib
import io
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from driver_peer import KEY_ID, Acceptor, TapStream
from sessions.check import (
    EXIT_CONFIG,
    EXIT_LOGON,
    EXIT_OK,
    EXIT_TEST_REQUEST,
    EXIT_TRANSPORT,
    keygen_command,
    logon_hints,
    run_check,
)
from sessions.signature import generate_key_pair, load_public_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPublicKey]:
    directory = tmp_path_factory.mktemp("keys")
    private = directory / "orders.pem"
    generate_key_pair(private, directory / "orders.pub.pem")
    return private, load_public_key(directory / "orders.pub.pem", KEY_ID)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def idle_jump_clock() -> trio.testing.MockClock:
    # Real sockets: let loopback traffic settle (real time) before virtual time jumps ahead.
    return trio.testing.MockClock(autojump_threshold=0.05)


def write_config(tmp_path: Path, private_key: Path, port: int, **extra: Any) -> Path:
    lines = [
        "[session.orders]",
        'endpoint = "KalshiNR"',
        'host = "127.0.0.1"',
        f"port = {port}",
        f'key_id = "{KEY_ID}"',
        f'private_key = "{private_key}"',
        "heartbeat_interval = 30",
        "logout_timeout = 2",
    ]
    for key, value in extra.items():
        lines.append(f"{key} = {value}")
    path = tmp_path / "kalshi-fix.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def serve_plain(nursery: trio.Nursery, handler: Any) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def serve_tls(nursery: trio.Nursery, ca: trustme.CA, handler: Any) -> tuple[int, str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.configure_cert(ctx)
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handler, 0, ctx, host="127.0.0.1")
    )
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    port = int(listeners[0].transport_listener.socket.getsockname()[1])
    return port, hashlib.sha256(der).hexdigest()


async def check_against(
    tmp_path: Path, private_key: Path, acceptor: Acceptor, *, timeout: float = 10.0, **extra: Any
) -> tuple[int, str]:
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        port = await serve_plain(nursery, acceptor.serve)
        config = write_config(tmp_path, private_key, port, tls="false", **extra)
        code = await run_check(config, "orders", out=out, test_request_timeout=timeout)
        nursery.cancel_scope.cancel()
    return code, out.getvalue()


# --------------------------------------------------------------------------- success
async def test_check_passes_over_plain_tcp(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    private, public = keys
    acceptor = Acceptor(public_key=public)
    code, output = await check_against(tmp_path, private, acceptor)
    assert code == EXIT_OK, output
    for step in ("config", "key", "store", "connect", "logon", "test request", "logout"):
        assert f"ok     {step}" in output
    assert " ms  " in output and "check passed" in output
    assert acceptor.signature_ok == [True]
    # KalshiNR resets its numbers on every Logon: its store lives in memory, no file.
    assert "in memory" in output
    assert not (tmp_path / "var" / "fix-store").exists()


async def test_check_opens_the_durable_store_when_asked(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    private, public = keys
    acceptor = Acceptor(public_key=public)
    code, output = await check_against(tmp_path, private, acceptor, durable_store="true")
    assert code == EXIT_OK, output
    assert (tmp_path / "var" / "fix-store").is_dir()  # the session's own durable store


async def test_check_passes_over_tls_with_ca_file_and_pin(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey], ca: trustme.CA
) -> None:
    private, public = keys
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    acceptor = Acceptor(public_key=public)
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        port, pin = await serve_tls(nursery, ca, acceptor.serve)
        config = write_config(
            tmp_path, private, port, ca_file='"ca.pem"', pin_sha256=f'"{pin}"'
        )
        code = await run_check(config, "orders", out=out)
        nursery.cancel_scope.cancel()
    output = out.getvalue()
    assert code == EXIT_OK, output
    assert "ok     tls" in output and "pin matches" in output
    assert acceptor.signature_ok == [True]


# --------------------------------------------------------------------------- failures
async def test_already_exists_exits_4_and_points_at_the_other_connection(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    private, public = keys
    code, output = await check_against(
        tmp_path, private, Acceptor(public_key=public, reject_text="already exists")
    )
    assert code == EXIT_LOGON, output
    assert "FAILED logon" in output and "'already exists'" in output
    assert "another connection holds this API key" in output and "60 s" in output


async def test_wrong_key_exits_4_with_signature_hints(tmp_path: Path, keys: tuple[Path, Any]) -> None:
    private, _ = keys
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    acceptor = Acceptor(public_key=other)
    code, output = await check_against(tmp_path, private, acceptor)
    assert code == EXIT_LOGON, output
    assert acceptor.signature_ok == [False]
    assert "registered" in output and "30 s" in output


async def test_unanswered_test_request_exits_5(
    idle_jump_clock: trio.testing.MockClock, tmp_path: Path, keys: tuple[Path, Any]
) -> None:
    private, public = keys
    acceptor = Acceptor(public_key=public)

    async def muted(stream: trio.abc.Stream) -> None:
        tap = TapStream(stream)
        tap.mute_after_logon = True
        await acceptor.serve(tap)

    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        port = await serve_plain(nursery, muted)
        config = write_config(tmp_path, private, port, tls="false")
        code = await run_check(config, "orders", out=out, test_request_timeout=4)
        nursery.cancel_scope.cancel()
    output = out.getvalue()
    assert code == EXIT_TEST_REQUEST, output
    assert "ok     logon" in output and "FAILED test request" in output
    assert "within 4 s" in output


async def test_unknown_session_exits_2_listing_the_sessions(
    tmp_path: Path, keys: tuple[Path, Any]
) -> None:
    config = write_config(tmp_path, keys[0], 8228, tls="false")
    out = io.StringIO()
    assert await run_check(config, "nope", out=out) == EXIT_CONFIG
    assert "no [session.nope]" in out.getvalue() and "orders" in out.getvalue()
    assert "FAILED config" in out.getvalue()


async def test_missing_key_file_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "absent.pem", 8228, tls="false")
    out = io.StringIO()
    assert await run_check(config, None, out=out) == EXIT_CONFIG
    assert "FAILED key" in out.getvalue() and "does not exist" in out.getvalue()


async def test_tls_against_plain_port_exits_3_asking_about_stunnel(
    idle_jump_clock: trio.testing.MockClock, tmp_path: Path, keys: tuple[Path, Any]
) -> None:
    private, public = keys
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        port = await serve_plain(nursery, Acceptor(public_key=public).serve)
        config = write_config(tmp_path, private, port)  # tls defaults to true
        code = await run_check(config, "orders", out=out)
        nursery.cancel_scope.cancel()
    output = out.getvalue()
    assert code == EXIT_TRANSPORT, output
    assert "FAILED tls" in output and "stunnel" in output


async def test_plain_tcp_against_tls_port_exits_3_suggesting_tls(
    tmp_path: Path, keys: tuple[Path, Any], ca: trustme.CA
) -> None:
    private, public = keys
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        port, _ = await serve_tls(nursery, ca, Acceptor(public_key=public).serve)
        config = write_config(tmp_path, private, port, tls="false")
        code = await run_check(config, "orders", out=out)
        nursery.cancel_scope.cancel()
    output = out.getvalue()
    assert code == EXIT_TRANSPORT, output
    assert "FAILED logon" in output and "tls = true" in output


async def test_refused_connection_exits_3(tmp_path: Path, keys: tuple[Path, Any]) -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = write_config(tmp_path, keys[0], port, tls="false")
    out = io.StringIO()
    assert await run_check(config, "orders", out=out) == EXIT_TRANSPORT
    assert "FAILED connect" in out.getvalue() and "refused" in out.getvalue()


def test_logon_hints_by_reason() -> None:
    assert any("API key id" in h for h in logon_hints("comp_id"))
    assert any("141=Y" in h for h in logon_hints("reset_required"))
    everything = " ".join(logon_hints("other"))
    for words in ("API key id", "TargetCompID", "141=Y", "registered", "30 s", "another connection"):
        assert words in everything


def test_keygen_writes_a_pair_and_explains_the_next_step(tmp_path: Path) -> None:
    out = io.StringIO()
    code = keygen_command(
        tmp_path / "k", "orders", passphrase_env="PW", out=out, environ={"PW": "s3cret-pass"}
    )
    assert code == 0
    private = (tmp_path / "k" / "orders.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in private
    assert (tmp_path / "k" / "orders.pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    text = out.getvalue()
    assert "register the public key" in text and "key_id" in text and "PW" in text
    assert "s3cret-pass" not in text
    # A second run must not overwrite the keys.
    again = io.StringIO()
    assert keygen_command(tmp_path / "k", "orders", out=again) == EXIT_CONFIG
    assert "already exists" in again.getvalue()
