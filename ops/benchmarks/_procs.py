"""Child processes of the benchmarks: started with ``sys.executable``, ready when they say so on
stdout, always stopped on the way out.

A child announces readiness with lines ``NAME VALUE`` on stdout (the simulated gateway prints
``KalshiNR 127.0.0.1:PORT``); :func:`spawn` reads lines until every wanted name was seen, so no
sleep is ever needed to synchronise. Its stderr goes to a temporary file whose tail is quoted
when the child fails, so a broken helper explains itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from sessions.errors import KalshiFixError

__all__ = [
    "BenchmarkError", "Child", "ROOT", "address", "cpu_seconds", "python_module", "spawn",
]

#: The repository root (children run from here, so ``python -m ops.benchmarks._x`` imports).
ROOT = Path(__file__).resolve().parents[2]

# A child that has not said it is ready within this many seconds is broken (the slowest, the
# gateway with 10k preloaded executions, needs a few seconds).
_READY_TIMEOUT = 120.0
# SIGTERM first (the gateway logs its sessions out); SIGKILL after this long.
_STOP_GRACE = 10.0


class BenchmarkError(KalshiFixError):
    """A benchmark could not produce a trustworthy figure (the message says which and why)."""


@attrs.define
class Child:
    """A running helper process and the ready lines it printed (first word → the rest)."""

    process: trio.Process
    ready: dict[str, str]
    stderr_path: Path

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the child wrote to stderr (diagnostics)."""
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-limit:]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (``None`` without ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the parenthesised command name (which may contain spaces); utime and stime
    # are fields 14 and 15 of the whole line, in clock ticks.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_module(module: str, *args: str) -> list[str]:
    """``[sys.executable, -m, module, *args]``: a helper run by the same interpreter."""
    return [sys.executable, "-m", module, *args]


def address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` from a ready line, as ``(host, port)``."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise BenchmarkError(f"a helper announced {value!r}, expected HOST:PORT")
    return host, int(port)


@asynccontextmanager
async def spawn(
    args: Sequence[str], want: Sequence[str], *, timeout: float = _READY_TIMEOUT
) -> AsyncIterator[Child]:
    """Start ``args`` and wait until it printed a line for every name in ``want``; yield the
    :class:`Child`. On exit (normal, error or cancellation) the child gets SIGTERM, then SIGKILL
    if it has not ended within a grace period, and is reaped."""
    with tempfile.TemporaryDirectory(prefix="kalshi-bench-") as tmp:
        stderr_path = Path(tmp) / "stderr.txt"
        with open(stderr_path, "wb") as err:
            env = dict(os.environ)
            env["PYTHONUNBUFFERED"] = "1"
            process = await trio.lowlevel.open_process(
                list(args), stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=env
            )
        child = Child(process, {}, stderr_path)
        try:
            await _read_ready(child, want, timeout, args)
            yield child
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)


async def _read_ready(
    child: Child, want: Sequence[str], timeout: float, args: Sequence[str]
) -> None:
    assert child.process.stdout is not None
    buf = b""
    missing = set(want)
    name = " ".join(str(a) for a in args[1:4])
    with trio.move_on_after(timeout) as scope:
        while missing:
            data = await child.process.stdout.receive_some(4096)
            if not data:
                await child.process.wait()
                raise BenchmarkError(
                    f"helper {name!r} exited with code {child.process.returncode} before it was "
                    f"ready (still missing {sorted(missing)}); its stderr:\n{child.stderr_tail()}"
                )
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                word, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
                if word:
                    child.ready[word] = rest
                    missing.discard(word)
    if scope.cancelled_caught:
        raise BenchmarkError(
            f"helper {name!r} was not ready within {timeout:g} s (missing {sorted(missing)}); "
            f"its stderr:\n{child.stderr_tail()}"
        )


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        with trio.move_on_after(_STOP_GRACE):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.stdout is not None:
        await trio.aclose_forcefully(process.stdout)
