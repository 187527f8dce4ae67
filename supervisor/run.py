"""Standalone mode: ``kalshi-fix run CONFIG`` runs the supervisor as a process.

Meant for firms with many API keys: one process holds every session of one TOML file (the
``[session.NAME]`` tables and the ``[supervisor]`` table, see :mod:`supervisor.config`), keeps
them logged on under the tree's policies (:mod:`supervisor.tree`) and stops them gracefully.

* **Logs** go to stdout through :mod:`logging`, one line per session status change
  (``... INFO supervisor.tree: session orders up (KalshiNR, key …): logged on …``). They name
  sessions, endpoints and API key ids, never private keys or passphrases.
* **SIGTERM / SIGINT**: every session logs out (reverse start order, each Logout bounded by its
  ``logout_timeout``), then the process exits 0. A second signal while shutting down is
  ignored: the shutdown is already bounded.
* **Executions journal**: every execution of the account is appended, exactly once and in
  order, to the JSON-lines file ``[supervisor.reconciliation] journal`` (see
  :mod:`supervisor.journal`) by the components of :mod:`supervisor.app` built in journal mode
  (:func:`standalone_components`): the executions stream, reconciliation through drop copy
  (when enabled), order entry and the kill switch.

Exit codes:

====  ====================================================================================
0     clean shutdown: SIGTERM/SIGINT and every session logged out, or every session ended
      normally (transient sessions logged out on request)
1     internal error (a bug): the traceback is in the log
2     configuration error: the config file, a private key, a session's sequence store, the
      state directory or the journal is unusable (the message names the file, table and key)
3     an API key is locked by another process on this host (the message names the key, the
      lock file and the holder's PID)
4     no session is left running and at least one stopped with a non-retryable error (bad
      signature, CompID, refused reset, clock off …; the log says which and why)
5     restart intensity exceeded: more unplanned restarts within ``restart_period`` than
      ``restart_intensity`` allows; the supervisor gave up instead of restarting in a loop
====  ====================================================================================
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, TextIO

import trio

from sessions.config import Config
from sessions.errors import ConfigError, KalshiFixError, KeyLoadError, StoreError

from .config import SupervisorConfig, load_supervisor_config
from .errors import KeyLockedByOtherProcess, RestartIntensityExceeded
from .observer import SessionObserver
from .tree import Supervisor

__all__ = [
    "EXIT_CHILD_STOPPED",
    "EXIT_CONFIG",
    "EXIT_INTENSITY",
    "EXIT_INTERNAL",
    "EXIT_KEY_LOCKED",
    "EXIT_OK",
    "configure_logging",
    "run_command",
    "run_standalone",
    "standalone_components",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_KEY_LOCKED = 3
EXIT_CHILD_STOPPED = 4
EXIT_INTENSITY = 5

log = logging.getLogger("supervisor.run")

class StandaloneComponents(Protocol):
    """What standalone mode attaches to the tree: ``observers``, and ``close()`` once the
    supervisor has shut down (:class:`supervisor.app.Components` is one)."""

    @property
    def observers(self) -> Sequence[SessionObserver]: ...

    def close(self) -> None: ...


ComponentsFactory = Callable[[Config, SupervisorConfig], StandaloneComponents]


def standalone_components(
    config: Config, supervisor_config: SupervisorConfig
) -> StandaloneComponents:
    """The components of standalone mode: :meth:`supervisor.app.Components.build` in journal
    mode, so the executions stream is consumed by the JSON-lines journal, with the rate limiter
    of ``[supervisor] rate_tier`` and ``rate_share``."""
    from .app import Components  # the components load only when a process runs them

    return Components.build(
        config,
        supervisor_config,
        journal=True,
        tier=supervisor_config.rate_tier,
        rate_share=supervisor_config.rate_share,
    )


def configure_logging(stream: TextIO | None = None, level: int | str = logging.INFO) -> None:
    """One line per record on ``stream`` (stdout by default), replacing earlier handlers."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


async def _watch_signals(
    signals: AsyncIterator[int], sup: Supervisor, done: trio.CancelScope, received: list[int]
) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if received:
            log.info("%s received again: the shutdown is already under way", name)
            continue
        received.append(signum)
        log.info("%s received: logging out every session", name)
        sup.request_shutdown()
        done.cancel()


async def run_standalone(
    config_path: str | os.PathLike[str],
    *,
    components_factory: ComponentsFactory = standalone_components,
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run the supervisor of ``config_path`` until a signal or until no session is left
    running; returns the exit code (see the module docstring)."""
    try:
        config = load_supervisor_config(config_path)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    try:
        sup = Supervisor(config, lock_description=f"kalshi-fix run {config_path}")
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    try:
        # The keys first: a second process on this configuration must be refused before it
        # opens the ledger and the journal that the first one writes.
        sup.acquire_key_locks()
    except KeyLockedByOtherProcess as exc:
        log.error("%s", exc)
        return EXIT_KEY_LOCKED
    try:
        # Unreadable keys are a configuration error to report before any state file is made
        # (the supervisor loads them again on entry; the keys stay out of this scope).
        for session in config[0].sessions.values():
            session.load_signer()
    except KeyLoadError as exc:
        sup.release_key_locks()
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    try:
        components = components_factory(*config)
    except (KalshiFixError, OSError) as exc:
        sup.release_key_locks()
        log.error("cannot open the state directory or the executions journal: %s", exc)
        return EXIT_CONFIG
    try:
        sup.add_observers(components.observers)
        return await _supervise(sup, signals)
    finally:
        components.close()


async def _supervise(sup: Supervisor, signals: Sequence[int]) -> int:
    received: list[int] = []
    try:
        with trio.open_signal_receiver(*signals) as signal_events:
            async with sup:
                # What exists by now (modules, configuration, components, sessions) lives as
                # long as the process: kept out of the collector's sight, it is no longer walked
                # by every full collection, each of which paused the event loop for ~50 ms
                # (48k objects after the imports alone, 2-core machine).
                gc.freeze()
                log.info(
                    "supervising %d session(s), start order %s; SIGTERM or SIGINT logs them "
                    "out and stops", len(sup.start_order), ", ".join(sup.start_order),
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        _watch_signals, signal_events, sup, nursery.cancel_scope, received
                    )
                    await sup.wait_all_stopped()
                    nursery.cancel_scope.cancel()
    except KeyLockedByOtherProcess as exc:
        log.error("%s", exc)
        return EXIT_KEY_LOCKED
    except (ConfigError, KeyLoadError, StoreError) as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except RestartIntensityExceeded as exc:
        log.error("%s", exc)
        return EXIT_INTENSITY
    if received:
        log.info("every session logged out; exiting")
        return EXIT_OK
    stopped = {name: s.error for name, s in sup.status().items() if s.error is not None}
    if stopped:
        log.error(
            "no session is left running; stopped with errors: %s", ", ".join(stopped)
        )
        return EXIT_CHILD_STOPPED
    log.info("every session ended normally; exiting")
    return EXIT_OK


def run_command(
    config_path: str | os.PathLike[str], *, log_level: str = "INFO"
) -> int:
    """The ``kalshi-fix run`` subcommand: logging to stdout, then :func:`run_standalone`."""
    configure_logging(sys.stdout, log_level)
    try:
        return trio.run(run_standalone, config_path)
    except Exception:  # noqa: BLE001 - the process exits with a documented code
        log.exception("internal error: the supervisor crashed")
        return EXIT_INTERNAL
