"""The ``kalshi-fix`` command: a thin dispatcher to the subcommands' implementations.

Each subcommand registers its arguments in :func:`build_parser` and points ``handler`` at a
function returning the exit code; the work itself lives elsewhere (``sessions.check`` for
``check`` and ``keygen``), so new subcommands (``run``, ``gateway`` …) only add a parser and a
handler here.

``check`` takes the checked session's API key lock (:class:`supervisor.keys.ProcessKeyLock`, the
one ``kalshi-fix run`` holds) for as long as it may be connected: Kalshi allows one connection
per key, so a check on a key a running supervisor uses would log that session off. The lock is
taken here rather than in ``sessions.check`` because the session layer knows nothing of the
supervisor. A key locked by another process ends the check before anything is sent, with exit
code :data:`EXIT_CHECK_KEY_LOCKED`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial

from typing import TYPE_CHECKING, TextIO

import trio

from sessions import check
from sessions.config import load_config
from sessions.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from supervisor.keys import ProcessKeyLock

#: ``kalshi-fix check``: the key is locked by another process (a supervisor); nothing was sent.
EXIT_CHECK_KEY_LOCKED = 7


def _fail(out: TextIO, error: object, code: int, hint: str | None = None) -> int:
    # The layout of sessions.check's report, for a step it does not know about.
    print(f"  FAILED key lock  {error}", file=out)
    if hint:
        print(f"likely cause:\n  - {hint}", file=out)
    print(f"check failed at step 'key lock' (exit {code})", file=out)
    return code


def _lock_checked_key(
    config_path: str, session_name: str | None, out: TextIO
) -> tuple[ProcessKeyLock | None, int | None]:
    """Take the key lock of the session to check: ``(lock, None)``, ``(None, exit code)`` when
    the check must not run, or ``(None, None)`` when the file or session name is wrong, which
    :func:`sessions.check.run_check` then reports (before connecting) as its config step."""
    from supervisor.config import lock_dir_of
    from supervisor.errors import KeyLockedByOtherProcess, SupervisorError
    from supervisor.keys import ProcessKeyLock

    try:
        config = load_config(config_path)
    except ConfigError:
        return None, None
    if session_name is None:
        if len(config.sessions) != 1:
            return None, None
        session = next(iter(config.sessions.values()))
    elif session_name in config.sessions:
        session = config.sessions[session_name]
    else:
        return None, None
    try:
        lock_dir = lock_dir_of(config)
    except ConfigError as exc:
        return None, _fail(out, exc, check.EXIT_CONFIG)
    lock = ProcessKeyLock(
        lock_dir, session.key_id, f"kalshi-fix check {config_path} --session {session.name}"
    )
    try:
        lock.acquire()
    except KeyLockedByOtherProcess as exc:
        return None, _fail(
            out, exc, EXIT_CHECK_KEY_LOCKED,
            "a supervisor (kalshi-fix run or an embedded app) runs a session on this key; "
            "Kalshi allows one connection per API key, so a check now would log that session "
            "off. Nothing was sent: check while it is stopped, or check another key",
        )
    except SupervisorError as exc:
        return None, _fail(out, exc, check.EXIT_CONFIG)
    return lock, None


def _check(args: argparse.Namespace) -> int:
    lock, refused = _lock_checked_key(args.config, args.session, sys.stdout)
    if refused is not None:
        return refused
    try:
        return trio.run(
            partial(
                check.run_check,
                args.config,
                args.session,
                out=sys.stdout,
                test_request_timeout=args.timeout,
            )
        )
    finally:
        if lock is not None:
            lock.release()


def _keygen(args: argparse.Namespace) -> int:
    return check.keygen_command(
        args.out_dir, args.name, passphrase_env=args.passphrase_env, out=sys.stdout
    )


def _run(args: argparse.Namespace) -> int:
    # Imported here: the tree is only loaded when asked for.
    from supervisor.run import run_command

    return run_command(args.config, log_level=args.log_level)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="kalshi-fix", description="FIX sessions to the Kalshi exchange."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "check",
        help="connect, TLS, Logon, TestRequest, Logout for one configured session",
        description="Walk one configured session through connect, TLS, Logon, a TestRequest "
        "round trip and Logout, printing each step with its timing; on failure, name the step "
        "and the likely cause.",
        epilog="exit codes: 0 ok, 2 config/key/store, 3 transport/TLS, 4 logon rejected, "
        "5 test request unanswered, 6 logout unconfirmed, 7 the API key is locked by another "
        "process (a running supervisor; nothing was sent)",
    )
    p.add_argument("config", help="TOML config file")
    p.add_argument("--session", help="[session.NAME] to check (optional if there is only one)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the TestRequest answer"
    )
    p.set_defaults(handler=_check)

    p = sub.add_parser(
        "keygen",
        help="create the RSA key pair for a Kalshi API key",
        description="Write NAME.pem (private, PKCS#8) and NAME.pub.pem; register the public "
        "key in the Kalshi account to obtain the key id.",
    )
    p.add_argument("--out-dir", required=True, help="directory for the key files")
    p.add_argument("--name", required=True, help="file name stem, e.g. the session name")
    p.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="encrypt the private key with the passphrase held in environment variable VAR",
    )
    p.set_defaults(handler=_keygen)

    p = sub.add_parser(
        "run",
        help="run every configured session under the supervisor until SIGTERM/SIGINT",
        description="Keep every [session.NAME] of CONFIG logged on: restarts with backoff, "
        "restart intensity, the Thursday maintenance window, one connection per API key. "
        "Logs one line per status change to stdout; SIGTERM or SIGINT logs every session out.",
        epilog="exit codes: 0 clean shutdown, 1 internal error, 2 configuration error, "
        "3 API key locked by another process, 4 every session stopped and one with a "
        "non-retryable error, 5 restart intensity exceeded (details: supervisor/run.py)",
    )
    p.add_argument("config", help="TOML config file")
    p.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least severe log level printed (default INFO)",
    )
    p.set_defaults(handler=_run)

    # Imported here: the simulator (exchange model, fault injector) is only loaded when asked for.
    from sessions.testing import cli as gateway_cli

    p = sub.add_parser(
        "gateway",
        help="run the simulated Kalshi FIX gateway (all endpoints, faults) until SIGTERM",
        description="Run the simulated Kalshi FIX gateway: KalshiNR, KalshiDC, KalshiRT, "
        "KalshiPT and KalshiRFQ with Kalshi's logon rules, the Thursday maintenance window, "
        "an exchange model and scripted or seeded faults.",
        epilog="prints 'ENDPOINT HOST:PORT' per endpoint when ready; exit codes: 0 stopped by "
        "SIGTERM/SIGINT, 2 bad configuration",
    )
    gateway_cli.add_arguments(p)
    p.set_defaults(handler=gateway_cli.command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kalshi-fix`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
