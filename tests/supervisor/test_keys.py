"""One connection per API key: the in-process registry and the per-host process lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from supervisor import keys
from supervisor.errors import KeyInUse, KeyLockedByOtherProcess, SupervisorError
from supervisor.keys import KeyRegistry, ProcessKeyLock, lock_file_name, lock_keys

KEY = "3f1c2a9e-0000-4000-8000-00000000000a"
OTHER_KEY = "3f1c2a9e-0000-4000-8000-00000000000b"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# ----------------------------------------------------------------------------- KeyRegistry


async def test_second_holder_waits_until_the_first_block_exits() -> None:
    registry = KeyRegistry()
    log: list[str] = []
    first_may_leave = trio.Event()

    async def first() -> None:
        async with registry.hold(KEY, "orders#1"):
            log.append("first in")
            await first_may_leave.wait()
            log.append("first out")

    async def second() -> None:
        async with registry.hold(KEY, "orders#2"):
            log.append("second in")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["first in"]
        assert registry.owner_of(KEY) == "orders#1"
        first_may_leave.set()
    assert log == ["first in", "first out", "second in"]
    assert registry.owner_of(KEY) is None
    assert dict(registry.held) == {}


async def test_wait_false_raises_key_in_use_naming_the_owner() -> None:
    registry = KeyRegistry()
    async with registry.hold(KEY, "orders"):
        with pytest.raises(KeyInUse) as info:
            async with registry.hold(KEY, "orders-restart", wait=False):
                pytest.fail("a second holder got the key")  # pragma: no cover
    err = info.value
    assert (err.key_id, err.owner, err.requested_by) == (KEY, "orders", "orders-restart")
    assert "'orders'" in str(err) and KEY in str(err)


async def test_different_keys_do_not_block_each_other() -> None:
    registry = KeyRegistry()
    async with registry.hold(KEY, "orders"), registry.hold(OTHER_KEY, "dropcopy", wait=False):
        assert dict(registry.held) == {KEY: "orders", OTHER_KEY: "dropcopy"}


async def test_a_block_that_raises_releases_the_key() -> None:
    registry = KeyRegistry()
    with pytest.raises(RuntimeError):
        async with registry.hold(KEY, "orders"):
            raise RuntimeError("session crashed")
    async with registry.hold(KEY, "orders", wait=False):
        assert registry.owner_of(KEY) == "orders"


async def test_cancelled_waiter_holds_nothing_and_does_not_disturb_the_holder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = KeyRegistry()
    async with registry.hold(KEY, "orders"):
        start = trio.current_time()
        with trio.move_on_after(5) as scope:  # cancelled while waiting
            async with registry.hold(KEY, "impatient"):
                pytest.fail("got a key that is held")  # pragma: no cover
        assert scope.cancelled_caught
        assert trio.current_time() - start == pytest.approx(5)  # it did wait
        assert registry.owner_of(KEY) == "orders"
    assert registry.owner_of(KEY) is None


async def test_restart_dials_only_after_the_old_connection_finished_closing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The shape of a supervised restart: the new attempt asks for the key while the old
    connection is still closing (a Logout exchange taking seconds) and must not dial before the
    old block has exited."""
    registry = KeyRegistry()
    timeline: list[tuple[str, float]] = []
    old_is_connected = trio.Event()

    async def old_attempt() -> None:
        async with registry.hold(KEY, "orders attempt 1"):
            timeline.append(("old dialled", trio.current_time()))
            old_is_connected.set()
            await trio.sleep(4.0)  # the graceful Logout and TLS close take a while
            timeline.append(("old closed", trio.current_time()))

    async def new_attempt() -> None:
        await old_is_connected.wait()
        async with registry.hold(KEY, "orders attempt 2"):
            timeline.append(("new dialled", trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(old_attempt)
        nursery.start_soon(new_attempt)
    names = [name for name, _ in timeline]
    assert names == ["old dialled", "old closed", "new dialled"]
    assert timeline[2][1] >= timeline[1][1] >= timeline[0][1] + 4.0


async def test_many_waiters_never_overlap() -> None:
    registry = KeyRegistry()
    inside = 0
    most = 0

    async def attempt(n: int) -> None:
        nonlocal inside, most
        async with registry.hold(KEY, f"attempt {n}"):
            inside += 1
            most = max(most, inside)
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            inside -= 1

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(attempt, n)
    assert most == 1


# ----------------------------------------------------------------------------- lock file names


def test_lock_file_name_is_safe_unique_and_recognisable() -> None:
    plain = lock_file_name(KEY)
    assert plain.endswith(f"-{KEY}.lock")
    slashy, underscored = lock_file_name("a/b"), lock_file_name("a_b")
    assert slashy != underscored  # they sanitise alike; the hash keeps them apart
    for name in (slashy, lock_file_name("../../etc/passwd"), lock_file_name("x" * 500)):
        assert "/" not in name and not name.startswith(".")
        assert len(name) < 100


# ----------------------------------------------------------------------------- ProcessKeyLock


def test_acquire_writes_pid_and_description_and_release_keeps_the_file(tmp_path: Path) -> None:
    lock = ProcessKeyLock(tmp_path / "locks", KEY, "supervisor for prod.toml")
    lock.acquire()
    try:
        assert lock.locked
        assert lock.holder() == (os.getpid(), "supervisor for prod.toml")
    finally:
        lock.release()
    assert not lock.locked
    assert lock.path.exists()  # never unlinked, see the class docstring
    with ProcessKeyLock(tmp_path / "locks", KEY) as again:
        assert again.locked


def test_second_lock_object_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with ProcessKeyLock(tmp_path, KEY, "first"):
        with pytest.raises(KeyLockedByOtherProcess) as info:
            ProcessKeyLock(tmp_path, KEY, "second").acquire()
    err = info.value
    assert err.pid == os.getpid()
    assert "this process" in str(err)


def test_acquire_is_idempotent_on_one_object(tmp_path: Path) -> None:
    lock = ProcessKeyLock(tmp_path, KEY)
    lock.acquire()
    lock.acquire()
    assert lock.locked
    lock.close()
    assert not lock.locked


def test_unusable_lock_dir_is_a_supervisor_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(SupervisorError) as info:
        ProcessKeyLock(blocker / "locks", KEY).acquire()
    assert str(blocker) in str(info.value) and KEY in str(info.value)


def test_lock_keys_is_all_or_nothing(tmp_path: Path) -> None:
    with ProcessKeyLock(tmp_path, OTHER_KEY, "somebody else"):
        with pytest.raises(KeyLockedByOtherProcess) as info:
            lock_keys(tmp_path, [KEY, OTHER_KEY])
        assert info.value.key_id == OTHER_KEY
        # KEY was taken first and must have been given back.
        with ProcessKeyLock(tmp_path, KEY):
            pass
    locks = lock_keys(tmp_path, [KEY, OTHER_KEY], "supervisor")
    assert [lock.key_id for lock in locks] == [KEY, OTHER_KEY]
    assert all(lock.locked for lock in locks)
    for lock in locks:
        lock.release()


CHILD_CODE = """
import sys
from supervisor.keys import ProcessKeyLock
lock = ProcessKeyLock(sys.argv[1], sys.argv[2], "test child supervisor")
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


def test_another_process_holding_the_key_is_named_by_pid(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_CODE, str(tmp_path), KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            assert proc.stderr is not None
            pytest.fail(f"lock child exited early: {proc.stderr.read().decode()}")
        assert line.decode().strip() == "locked"

        mine = ProcessKeyLock(tmp_path, KEY, "test parent")
        with pytest.raises(KeyLockedByOtherProcess) as info:
            mine.acquire()
        err = info.value
        assert err.pid == proc.pid
        assert err.key_id == KEY
        assert f"process {proc.pid}" in str(err)
        assert KEY in str(err) and "test child supervisor" in str(err)
        assert not mine.locked
    finally:
        proc.kill()
        proc.wait(timeout=10)

    # The kernel released the flock when the child died: no stale lock.
    mine.acquire()
    try:
        assert mine.holder() == (os.getpid(), "test parent")
    finally:
        mine.release()


# ----------------------------------------------------------------------------- the default directory


def test_lock_directories_are_created_private(tmp_path: Path) -> None:
    with ProcessKeyLock(tmp_path / "kalshi-fix-x" / "locks", KEY):
        pass
    for made in (tmp_path / "kalshi-fix-x", tmp_path / "kalshi-fix-x" / "locks"):
        assert stat.S_IMODE(made.stat().st_mode) & 0o077 == 0, oct(made.stat().st_mode)


def test_the_builtin_directory_is_used_when_it_is_ours_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builtin = tmp_path / "kalshi-fix-1000" / "locks"
    monkeypatch.setattr(keys, "builtin_lock_dir", lambda: builtin)
    with ProcessKeyLock(builtin, KEY) as lock:
        assert lock.path.parent == builtin
    assert stat.S_IMODE(builtin.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("how", ["open to others", "symlink"])
def test_a_builtin_directory_someone_else_could_use_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    root = tmp_path / "kalshi-fix-1000"
    if how == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        root.symlink_to(tmp_path / "elsewhere")
    else:
        root.mkdir()
        root.chmod(0o777)
    builtin = root / "locks"
    monkeypatch.setattr(keys, "builtin_lock_dir", lambda: builtin)
    with pytest.raises(SupervisorError) as info:
        ProcessKeyLock(builtin, KEY).acquire()
    message = str(info.value)
    assert str(root) in message and "lock_dir" in message and keys.LOCK_DIR_ENV in message
    assert ("0777" in message) if how == "open to others" else ("not a directory" in message)
    # Refused before any lock file was made in it.
    assert not (builtin / lock_file_name(KEY)).exists()
