"""One connection per API key (REFERENCE §1.4), inside a process and across processes.

Kalshi answers a second Logon on a key that is already connected with ``already exists``, and a
half-dead connection keeps the key busy until the gateway's heartbeat timeout fires. So the
supervisor must never have two connections on one key at the same time, not even for a moment
during a restart:

* :class:`KeyRegistry` (in-process, Trio): a session holds its key for as long as its connection
  may be open; a restart asks for the key again and gets it only after the old connection's
  block has exited, i.e. after the transport was fully closed.
* :class:`ProcessKeyLock` (across processes on one host): an ``flock`` on one file per key,
  taken at start-up and held for the life of the process. The kernel drops it when the process
  exits, however it exits, so a crashed supervisor never leaves a stale lock behind.

Where the lock files live decides which processes exclude each other, so the default is the
same for every configuration of one OS user on the host, wherever its file is
(:func:`default_lock_dir`):

1. ``[supervisor] lock_dir`` in the configuration, if given (e.g. a directory shared by several
   OS users that run supervisors on the same keys);
2. else the environment variable ``KALSHI_FIX_LOCK_DIR`` (an absolute path);
3. else ``/tmp/kalshi-fix-<uid>/locks``, created with mode 0700 and refused if
   ``/tmp/kalshi-fix-<uid>`` is not a directory of this user closed to everyone else.

Not ``$XDG_RUNTIME_DIR``: a login shell has it and a systemd service or cron job of the same
user usually does not, which would give one user two "host-wide" directories. Caveats: a
service with ``PrivateTmp=yes`` sees its own ``/tmp``, and two OS users get two directories;
set ``lock_dir`` (or ``KALSHI_FIX_LOCK_DIR``) to one shared directory in those set-ups.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import attrs
import trio

from sessions.errors import ConfigError

from .errors import KeyInUse, KeyLockedByOtherProcess, SupervisorError

#: Environment variable naming the lock directory when the configuration gives no ``lock_dir``.
LOCK_DIR_ENV = "KALSHI_FIX_LOCK_DIR"


def builtin_lock_dir() -> Path:
    """``/tmp/kalshi-fix-<uid>/locks``: the lock directory without configuration or
    environment (module docstring). A fixed path, so every process of this user agrees."""
    return Path("/tmp") / f"kalshi-fix-{os.getuid()}" / "locks"


def default_lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The lock directory when ``[supervisor] lock_dir`` is not given: ``KALSHI_FIX_LOCK_DIR``
    if set, else :func:`builtin_lock_dir`. Never relative to a configuration file: two
    configurations in different folders naming one key must meet in the same directory."""
    env = os.environ if environ is None else environ
    value = env.get(LOCK_DIR_ENV, "")
    if not value:
        return builtin_lock_dir()
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(
            f"environment variable {LOCK_DIR_ENV} must be an absolute path (the key locks "
            f"must not depend on the working directory), got {value!r}"
        )
    return path


def _make_private_dirs(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for every directory it creates."""
    missing: list[Path] = []
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made by a process starting at the same time: checked below like any other


def _check_private_root(root: Path) -> None:
    """The built-in lock directory is under a name in the world-writable ``/tmp`` that anyone
    could have made first: use it only if it is a real directory of ours, closed to others."""
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise SupervisorError(f"cannot inspect the lock directory {root}: {exc.strerror}") from None
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory (a symbolic link or a file)"
    elif st.st_uid != os.getuid():
        problem = f"belongs to uid {st.st_uid}, not to this user (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700"
    if problem is not None:
        raise SupervisorError(
            f"the default lock directory {root} {problem}; remove it, or set lock_dir in "
            f"[supervisor] (or {LOCK_DIR_ENV}) to a directory of your own"
        )

# ----------------------------------------------------------------------------- in-process


@attrs.define(eq=False)
class _Holder:
    owner: str
    released: trio.Event = attrs.field(factory=trio.Event)


class KeyRegistry:
    """At most one live holder per API key id within this process.

    ``async with registry.hold(key_id, owner):`` wraps everything from dialling to the transport
    being closed. A second ``hold`` on the same key waits until the first block has exited (or,
    with ``wait=False``, raises :class:`~supervisor.errors.KeyInUse` naming the current owner).
    Cancelling a waiting ``hold`` leaves nothing held. Waiters are not served in a guaranteed
    order; with one session per key there is normally no second waiter anyway.
    """

    def __init__(self) -> None:
        self._holders: dict[str, _Holder] = {}

    def owner_of(self, key_id: str) -> str | None:
        """Who holds ``key_id`` now, or ``None``."""
        holder = self._holders.get(key_id)
        return None if holder is None else holder.owner

    @property
    def held(self) -> Mapping[str, str]:
        """A snapshot of the keys held now, key id → owner."""
        return MappingProxyType({k: h.owner for k, h in self._holders.items()})

    @asynccontextmanager
    async def hold(self, key_id: str, owner: str, *, wait: bool = True) -> AsyncIterator[None]:
        """Hold ``key_id`` for ``owner`` for the duration of the ``async with`` block."""
        # Every call is a checkpoint, even when the key is free, as Trio functions should be.
        await trio.lowlevel.checkpoint()
        while (current := self._holders.get(key_id)) is not None:
            if not wait:
                raise KeyInUse(key_id, current.owner, owner)
            await current.released.wait()
        holder = _Holder(owner)
        self._holders[key_id] = holder
        try:
            yield
        finally:
            del self._holders[key_id]
            holder.released.set()


# ----------------------------------------------------------------------------- across processes

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_READABLE = 48


def lock_file_name(key_id: str) -> str:
    """The lock file's name for ``key_id``: unique and safe on any file system.

    A SHA-256 prefix makes it unique (two ids that sanitise alike still differ) and a sanitised
    copy of the id keeps it recognisable in ``ls``. Key ids are not secret.
    """
    digest = hashlib.sha256(key_id.encode("utf-8")).hexdigest()[:16]
    readable = _UNSAFE.sub("_", key_id)[:_MAX_READABLE]
    return f"{digest}-{readable}.lock"


def _default_description() -> str:
    argv = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
    return argv or "python"


class ProcessKeyLock:
    """An OS-level lock on one API key, shared by every process on this host.

    :meth:`acquire` takes a non-blocking ``flock`` on ``<lock_dir>/<lock_file_name(key_id)>`` and
    writes this process's PID and ``description`` into the file, so that a second process can be
    told who holds the key. The lock is released by :meth:`release` / :meth:`close`, leaving the
    ``with`` block, or the process ending in any way (the kernel closes the descriptor).

    The lock file is never deleted: unlinking a lock file lets a process that opened the old
    file and one that created a new one both "hold" the lock. The descriptor is not inherited
    by programs this process executes (``O_CLOEXEC``), so they cannot keep a key locked after
    the supervisor died.
    """

    def __init__(self, lock_dir: str | os.PathLike[str], key_id: str,
                 description: str | None = None) -> None:
        self.lock_dir = Path(lock_dir)
        self.key_id = key_id
        self.description = description if description is not None else _default_description()
        self.path = self.lock_dir / lock_file_name(key_id)
        self._fd: int | None = None

    def __repr__(self) -> str:
        state = "held" if self.locked else "not held"
        return f"<ProcessKeyLock key_id={self.key_id!r} path={str(self.path)!r} {state}>"

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise; never blocks.

        Raises :class:`~supervisor.errors.KeyLockedByOtherProcess` (naming the key and the
        holder's PID) if another process, or another lock object in this process, holds it, and
        :class:`~supervisor.errors.SupervisorError` if the lock directory or file is unusable.
        """
        if self._fd is not None:
            return
        try:
            _make_private_dirs(self.lock_dir)
        except OSError as exc:
            raise SupervisorError(
                f"cannot create the lock directory {self.lock_dir} for API key {self.key_id}: "
                f"{exc.strerror or type(exc).__name__}; check lock_dir in [supervisor]"
            ) from None
        if self.lock_dir == builtin_lock_dir():
            _check_private_root(self.lock_dir.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SupervisorError(
                f"cannot create the lock file for API key {self.key_id} in {self.lock_dir}: "
                f"{exc.strerror or type(exc).__name__}; check lock_dir in [supervisor]"
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise SupervisorError(
                        f"cannot lock {self.path} for API key {self.key_id}: "
                        f"{exc.strerror or type(exc).__name__}"
                    ) from None
                pid, description = _read_holder(fd)
                if pid == os.getpid():
                    description = "this process, through another lock object"
                raise KeyLockedByOtherProcess(
                    self.key_id, pid, str(self.path), description
                ) from None
            # Only the holder rewrites the file, and only after it holds the lock: opening
            # with O_TRUNC would have wiped the current holder's details before we knew.
            record = json.dumps(
                {"pid": os.getpid(), "key_id": self.key_id, "description": self.description}
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, (record + "\n").encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (no-op if not held). The file stays; see the class docstring."""
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the only descriptor on the open file releases the flock.
            os.close(fd)

    close = release

    def holder(self) -> tuple[int | None, str | None]:
        """``(pid, description)`` written by whoever holds or last held the lock, if readable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None, None
        try:
            return _read_holder(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> ProcessKeyLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    # The holder may be between taking the lock and writing its record; then the file is empty
    # or partial and we report what we can rather than wait.
    try:
        raw = os.pread(fd, 4096, 0)
        data: Any = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    pid = data.get("pid")
    description = data.get("description")
    return (
        pid if type(pid) is int else None,
        description if isinstance(description, str) else None,
    )


def lock_keys(
    lock_dir: str | os.PathLike[str], key_ids: Iterable[str], description: str | None = None
) -> list[ProcessKeyLock]:
    """Take the process lock of every key in ``key_ids``, all or none.

    If one key is locked elsewhere, the locks already taken are released again and the
    :class:`~supervisor.errors.KeyLockedByOtherProcess` is raised, so a refused start leaves
    no key locked.
    """
    taken: list[ProcessKeyLock] = []
    try:
        for key_id in key_ids:
            lock = ProcessKeyLock(lock_dir, key_id, description)
            lock.acquire()
            taken.append(lock)
    except BaseException:
        for lock in taken:
            lock.release()
        raise
    return taken
