"""Suite-wide fixtures: keep the tests away from this host's real key locks.

The key locks default to a host-wide directory (``/tmp/kalshi-fix-<uid>/locks``, see
``supervisor/keys.py``), shared with any supervisor or ``kalshi-fix check`` the developer runs
and with other test runs on the host (parallel CI jobs of one user). So:

* at start-up the whole run gets its own ``KALSHI_FIX_LOCK_DIR`` (a fresh temporary directory),
  which the processes the tests start inherit (``os.environ`` is read by them or copied into
  their environment at import time, after this);
* every test gets a fresh one of its own on top, so a lock one test leaves held cannot refuse
  another test's start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.keys import LOCK_DIR_ENV

_run_lock_dir: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _run_lock_dir
    _run_lock_dir = tempfile.mkdtemp(prefix="kalshi-fix-test-locks-")
    os.environ[LOCK_DIR_ENV] = _run_lock_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    if _run_lock_dir is not None:
        shutil.rmtree(_run_lock_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_key_lock_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    lock_dir = tmp_path_factory.mktemp("key-locks")
    monkeypatch.setenv(LOCK_DIR_ENV, str(lock_dir))
    yield lock_dir
