"""The ``kalshi-fix`` console entry point: argument parsing and dispatch (sync: it runs trio
itself). The gateway for the ``check`` run lives in its own thread with its own Trio loop."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from sessions.connection import FixConnection
from sessions.driver import open_fix_session
from sessions.events import LogonRequested
from sessions.settings import Role, SessionSettings
from sessions.signature import load_public_key, logon_pre_hash, verify_logon_signature
from supervisor.cli import EXIT_CHECK_KEY_LOCKED, main
from supervisor.errors import KeyLockedByOtherProcess
from supervisor.keys import ProcessKeyLock

REPO = Path(__file__).resolve().parents[2]

KEY_ID = "3f1c2a9e-0000-4000-8000-0000000000cc"


class GatewayThread:
    """A minimal acceptor (signature-checking) on 127.0.0.1 in a background thread."""

    def __init__(self, public_key: rsa.RSAPublicKey) -> None:
        self.public_key = public_key
        self.ready = threading.Event()
        self.port = 0
        self.logons: list[bool] = []
        #: Called in the gateway's thread when a Logon arrives (the client is connected then).
        self.on_logon: Callable[[], None] | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        settings = SessionSettings(role=Role.ACCEPTOR, sender_comp_id="KalshiNR")
        async with open_fix_session(stream, FixConnection(settings)) as session:
            async for event in session.events():
                if isinstance(event, LogonRequested):
                    if self.on_logon is not None:
                        self.on_logon()
                    m = event.message
                    pre_hash = logon_pre_hash(*(m.get(t) or b"" for t in (52, 35, 34, 49, 56)))
                    ok = verify_logon_signature(self.public_key, pre_hash, m.get(96) or b"")
                    self.logons.append(ok)
                    if ok:
                        session.accept_logon()
                    else:
                        session.reject_logon("signature verification failed")

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            listeners = await nursery.start(partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1"))
            self.port = listeners[0].socket.getsockname()[1]
            self.ready.set()

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        assert self.ready.wait(30), "gateway thread did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(30)


@pytest.fixture
def keypair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    assert main(["keygen", "--out-dir", str(tmp_path / "keys"), "--name", "orders"]) == 0
    capsys.readouterr()
    yield tmp_path / "keys" / "orders.pem"


def write_config(tmp_path: Path, private_key: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(
        "[session.orders]\n"
        'endpoint = "KalshiNR"\nhost = "127.0.0.1"\n'
        f"port = {port}\ntls = false\n"
        f'key_id = "{KEY_ID}"\nprivate_key = "{private_key}"\n' + extra
    )
    return path


def test_keygen_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--out-dir", str(tmp_path), "--name", "drop-copy"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "drop-copy.pem") in out and str(tmp_path / "drop-copy.pub.pem") in out
    assert "register the public key" in out
    assert (tmp_path / "drop-copy.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    load_public_key(tmp_path / "drop-copy.pub.pem")


def test_keygen_with_unset_passphrase_variable_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KFX_TEST_PASSPHRASE", raising=False)
    argv = ["keygen", "--out-dir", str(tmp_path), "--name", "k", "--passphrase-env",
            "KFX_TEST_PASSPHRASE"]
    assert main(argv) == 2
    assert "KFX_TEST_PASSPHRASE" in capsys.readouterr().out
    assert not (tmp_path / "k.pem").exists()


def test_check_passes_against_a_local_gateway(
    tmp_path: Path, keypair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public = load_public_key(keypair.with_name("orders.pub.pem"))
    with GatewayThread(public) as gateway:
        config = write_config(tmp_path, keypair, gateway.port)
        code = main(["check", str(config), "--session", "orders"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert gateway.logons == [True]
    assert "check passed" in out


def test_check_holds_the_key_lock_while_connected_and_releases_it(
    tmp_path: Path, keypair: Path, capsys: pytest.CaptureFixture[str], _private_key_lock_dir: Path
) -> None:
    # The config names no lock_dir: the host-wide default, where `kalshi-fix run` locks too.
    seen: list[object] = []

    def try_the_lock() -> None:
        try:
            ProcessKeyLock(_private_key_lock_dir, KEY_ID, "a supervisor starting").acquire()
            seen.append("free")
        except KeyLockedByOtherProcess as exc:
            seen.append(exc.pid)

    public = load_public_key(keypair.with_name("orders.pub.pem"))
    with GatewayThread(public) as gateway:
        gateway.on_logon = try_the_lock
        config = write_config(tmp_path, keypair, gateway.port)
        code = main(["check", str(config), "--session", "orders"])
    assert code == 0, capsys.readouterr().out
    assert seen == [os.getpid()]  # held by the check while its Logon was on the wire
    with ProcessKeyLock(_private_key_lock_dir, KEY_ID) as after:
        assert after.locked  # and given back once the check ended


def test_check_on_a_key_a_supervisor_holds_exits_7_without_connecting(
    tmp_path: Path, keypair: Path, capsys: pytest.CaptureFixture[str], _private_key_lock_dir: Path
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys\n"
            "from supervisor.keys import ProcessKeyLock\n"
            "ProcessKeyLock(sys.argv[1], sys.argv[2], 'kalshi-fix run firm.toml').acquire()\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(_private_key_lock_dir), KEY_ID,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    public = load_public_key(keypair.with_name("orders.pub.pem"))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with GatewayThread(public) as gateway:
            config = write_config(tmp_path, keypair, gateway.port)
            code = main(["check", str(config), "--session", "orders"])
    finally:
        holder.communicate(b"", timeout=30)
    out = capsys.readouterr().out
    assert code == EXIT_CHECK_KEY_LOCKED == 7, out
    assert f"API key {KEY_ID} is locked by process {holder.pid} (kalshi-fix run firm.toml)" in out
    assert "one connection per API key" in out and "Nothing was sent" in out
    assert gateway.logons == []


def test_check_with_a_bad_supervisor_table_exits_2_naming_the_key(
    tmp_path: Path, keypair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, keypair, 8228, "[supervisor]\nlock_dir = 3\n")
    assert main(["check", str(config), "--session", "orders"]) == 2
    out = capsys.readouterr().out
    assert f"{config}: [supervisor] lock_dir: must be a path string" in out


def test_check_with_unknown_session_exits_2(
    tmp_path: Path, keypair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, keypair, 8228)
    assert main(["check", str(config), "--session", "other"]) == 2
    assert "no [session.other]" in capsys.readouterr().out


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: kalshi-fix" in capsys.readouterr().err
