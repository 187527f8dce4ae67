"""``kalshi-fix gateway``: run the simulated Kalshi gateway as a process.

Quick start — every ``--key`` is an API key with its own account, allowed on all endpoints::

    kalshi-fix gateway --key 3f1c…=trader.pub.pem --key 9a2e…=dropcopy.pub.pem --plain

or from a file (accounts, keys, markets, liquidity, ports, TLS, faults; see
``examples/gateway.toml``)::

    kalshi-fix gateway --config gateway.toml

When every endpoint listens it prints one line per endpoint on stdout, ``KalshiNR 127.0.0.1:PORT``,
and serves until SIGTERM or SIGINT, then logs every session out and exits with 0. Diagnostics
(the CA file to trust when TLS is on) go to stderr. Exit code 2: bad configuration.

Config file layout (unknown keys are errors)::

    [gateway]
    host = "127.0.0.1"        # default
    tls = true                # false: plain TCP
    cert_file = "cert.pem"    # optional; with key_file. Default: a generated throw-away CA
    key_file = "key.pem"
    ca_out = "gateway-ca.pem" # where to write the CA to trust (generated TLS)
    seed = 0                  # exchange identifiers
    maintenance = true        # the Thursday 03:00–05:00 New York window
    reset_after_maintenance = false
    fault_seed = 7            # optional: add a random fault plan drawn from this seed
    fault_count = 3
    fault_horizon = 120.0

    [gateway.ports]           # endpoints to serve; 0 = any free port. Default: all five, 0
    KalshiNR = 8228

    [[account]]
    id = "ACCT-1"
    tier = "Premier"          # rate-limit tier
    balance = 10000           # dollars; omit for unlimited

    [[key]]
    id = "3f1c2a9e-…"         # the API key id (SenderCompID)
    account = "ACCT-1"
    public_key = "keys/trader.pub.pem"   # relative to the config file
    drop_copy = true
    endpoints = ["KalshiNR", "KalshiDC"] # optional
    subaccount = 3                       # optional: a subaccount-restricted key

    [[market]]
    ticker = "KXHIGHNY-26JUL14-B85"
    exchange_index = 0
    tick = "0.01"

    [[liquidity]]
    ticker = "KXHIGHNY-26JUL14-B85"
    side = "sell"
    price = 60                # cents
    qty = 10

    [[fault]]                 # see sessions.testing.faults for kinds and keys
    kind = "drop"
    endpoint = "KalshiNR"
    after = 10
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from ..errors import ConfigError, KeyLoadError
from ..maintenance import KALSHI_MAINTENANCE, MaintenanceCalendar
from .endpoints import ENDPOINTS, endpoint_spec
from .faults import FaultPlan
from .gateway import Gateway, GatewayConfig
from .tls import GatewayTls

__all__ = ["add_arguments", "build_from_args", "command", "load_gateway_config", "main"]

#: Markets (ticker, exchange index) and liquidity of the quick start.
QUICK_MARKETS = (("KXHIGHNY-26JUL14-B85", 0), ("KXBTC-26JUL14-T60000", 2))
QUICK_LIQUIDITY = (("sell", 60, 10), ("sell", 62, 100), ("buy", 40, 10), ("buy", 38, 100))

_GATEWAY_KEYS = {
    "host", "tls", "cert_file", "key_file", "ca_out", "seed", "maintenance",
    "reset_after_maintenance", "fault_seed", "fault_count", "fault_horizon", "ports",
    "max_message_size",
}
_TOP_KEYS = {"gateway", "account", "key", "market", "liquidity", "fault"}
_ACCOUNT_KEYS = {"id", "tier", "balance"}
_KEY_KEYS = {"id", "account", "public_key", "drop_copy", "endpoints", "subaccount"}
_MARKET_KEYS = {"ticker", "exchange_index", "tick", "status", "high_volatility"}
_LIQUIDITY_KEYS = {"ticker", "side", "price", "qty"}


@attrs.frozen
class GatewaySetup:
    """Everything needed to start a gateway process: its config and what to register."""

    config: GatewayConfig
    accounts: tuple[Mapping[str, Any], ...] = ()
    keys: tuple[Mapping[str, Any], ...] = ()
    markets: tuple[Mapping[str, Any], ...] = ()
    liquidity: tuple[Mapping[str, Any], ...] = ()
    ca_out: Path | None = None

    def build(self, clock: Callable[[], float] | None = None) -> Gateway:
        """A configured gateway (not running yet)."""
        gateway = Gateway(self.config, clock=clock)
        for a in self.accounts:
            gateway.add_account(a["id"], tier=a.get("tier", "Premier"), balance=a.get("balance"))
        for k in self.keys:
            gateway.add_key(
                k["id"], k["account"], Path(k["public_key"]),
                drop_copy=k.get("drop_copy", True), endpoints=k.get("endpoints"),
                subaccount=k.get("subaccount"),
            )
        for m in self.markets:
            gateway.add_market(m["ticker"], **{n: v for n, v in m.items() if n != "ticker"})
        for q in self.liquidity:
            gateway.add_liquidity(q["ticker"], q["side"], q["price"], q["qty"])
        return gateway


# --------------------------------------------------------------------------- the config file
class _Where:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, table: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {table}: {message}")


def _check_keys(where: _Where, table: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise where.error(table, f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _typed(where: _Where, table: str, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
           required: bool = False) -> Any:
    if key not in data:
        if required:
            raise where.error(table, f"{key} is required")
        return None
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise where.error(table, f"{key} must be {' or '.join(k.__name__ for k in kinds)}")
    if not isinstance(value, kinds):
        raise where.error(
            table, f"{key} must be {' or '.join(k.__name__ for k in kinds)}, "
            f"got {type(value).__name__}"
        )
    return value


def _array(where: _Where, data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    items = data.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise where.error(f"[[{name}]]", "must be an array of tables")
    return items


def load_gateway_config(path: str | os.PathLike[str]) -> GatewaySetup:
    """Read a gateway TOML file. Raises :class:`ConfigError` naming the file, table and key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_gateway_config(data, p)


def parse_gateway_config(data: Mapping[str, Any], path: Path) -> GatewaySetup:
    """The gateway setup described by parsed TOML ``data`` (paths relative to ``path``)."""
    where = _Where(path)
    base = path.parent
    _check_keys(where, "file", data, _TOP_KEYS)
    gw = data.get("gateway", {})
    if not isinstance(gw, dict):
        raise where.error("[gateway]", "must be a table")
    _check_keys(where, "[gateway]", gw, _GATEWAY_KEYS)
    t = "[gateway]"
    host = _typed(where, t, gw, "host", str) or "127.0.0.1"
    tls = _typed(where, t, gw, "tls", bool)
    tls = True if tls is None else tls
    cert_file = _typed(where, t, gw, "cert_file", str)
    key_file = _typed(where, t, gw, "key_file", str)
    if (cert_file is None) != (key_file is None):
        raise where.error(t, "cert_file and key_file go together")
    if cert_file is not None and not tls:
        raise where.error(t, "cert_file/key_file need tls = true")
    ca_out = _typed(where, t, gw, "ca_out", str)
    seed = _typed(where, t, gw, "seed", int) or 0
    maintenance = _typed(where, t, gw, "maintenance", bool)
    reset_after = _typed(where, t, gw, "reset_after_maintenance", bool) or False
    max_size = _typed(where, t, gw, "max_message_size", int) or 65536
    ports_raw = gw.get("ports")
    if ports_raw is None:
        ports = {name: 0 for name in ENDPOINTS}
    elif isinstance(ports_raw, dict):
        ports = {}
        for name, port in ports_raw.items():
            try:
                endpoint_spec(name)
            except ConfigError as exc:
                raise where.error("[gateway.ports]", str(exc)) from None
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise where.error("[gateway.ports]", f"{name} must be a port 0..65535")
            ports[name] = port
    else:
        raise where.error("[gateway.ports]", "must be a table of endpoint = port")

    accounts: list[dict[str, Any]] = []
    for n, a in enumerate(_array(where, data, "account"), 1):
        tt = f"[[account]] #{n}"
        _check_keys(where, tt, a, _ACCOUNT_KEYS)
        entry: dict[str, Any] = {"id": _typed(where, tt, a, "id", str, required=True)}
        if "tier" in a:
            entry["tier"] = _typed(where, tt, a, "tier", str)
        if "balance" in a:
            entry["balance"] = _typed(where, tt, a, "balance", (int, float, str))
        accounts.append(entry)
    account_ids = {a["id"] for a in accounts}

    keys: list[dict[str, Any]] = []
    for n, k in enumerate(_array(where, data, "key"), 1):
        tt = f"[[key]] #{n}"
        _check_keys(where, tt, k, _KEY_KEYS)
        entry = {
            "id": _typed(where, tt, k, "id", str, required=True),
            "account": _typed(where, tt, k, "account", str, required=True),
            "public_key": base / _typed(where, tt, k, "public_key", str, required=True),
        }
        if entry["account"] not in account_ids:
            raise where.error(tt, f"account {entry['account']!r} is not declared in [[account]]")
        if "drop_copy" in k:
            entry["drop_copy"] = _typed(where, tt, k, "drop_copy", bool)
        if "endpoints" in k:
            eps = k["endpoints"]
            if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
                raise where.error(tt, "endpoints must be a list of endpoint names")
            for e in eps:
                try:
                    endpoint_spec(e)
                except ConfigError as exc:
                    raise where.error(tt, str(exc)) from None
            entry["endpoints"] = eps
        if "subaccount" in k:
            entry["subaccount"] = _typed(where, tt, k, "subaccount", int)
        keys.append(entry)
    if not keys:
        raise where.error("[[key]]", "at least one API key is needed (nobody could log on)")

    markets: list[dict[str, Any]] = []
    for n, m in enumerate(_array(where, data, "market"), 1):
        tt = f"[[market]] #{n}"
        _check_keys(where, tt, m, _MARKET_KEYS)
        entry = {"ticker": _typed(where, tt, m, "ticker", str, required=True)}
        for name, kind in (("exchange_index", int), ("status", str), ("high_volatility", bool)):
            if name in m:
                entry[name] = _typed(where, tt, m, name, kind)
        if "tick" in m:
            entry["tick"] = str(_typed(where, tt, m, "tick", (str, float)))
        markets.append(entry)
    tickers = {m["ticker"] for m in markets}

    liquidity: list[dict[str, Any]] = []
    for n, q in enumerate(_array(where, data, "liquidity"), 1):
        tt = f"[[liquidity]] #{n}"
        _check_keys(where, tt, q, _LIQUIDITY_KEYS)
        entry = {
            "ticker": _typed(where, tt, q, "ticker", str, required=True),
            "side": _typed(where, tt, q, "side", str, required=True),
            "price": _typed(where, tt, q, "price", (int, float, str), required=True),
            "qty": _typed(where, tt, q, "qty", (int, float, str), required=True),
        }
        if entry["ticker"] not in tickers:
            raise where.error(tt, f"market {entry['ticker']!r} is not declared in [[market]]")
        liquidity.append(entry)

    plan = FaultPlan.from_config(_array(where, data, "fault"), where=f"{path}: [[fault]]")
    fault_seed = _typed(where, t, gw, "fault_seed", int)
    if fault_seed is not None:
        count = _typed(where, t, gw, "fault_count", int)
        horizon = _typed(where, t, gw, "fault_horizon", (int, float))
        drawn = FaultPlan.random(
            fault_seed, endpoints=list(ports), keys=[k["id"] for k in keys],
            count=3 if count is None else count, horizon=120.0 if horizon is None else horizon,
        )
        plan = FaultPlan((*plan.faults, *drawn.faults), seed=fault_seed)

    tls_material = None
    if cert_file is not None and key_file is not None:
        tls_material = GatewayTls.from_files(base / cert_file, base / key_file)
    config = GatewayConfig(
        host=host,
        ports=ports,
        tls=tls,
        tls_material=tls_material,
        seed=seed,
        faults=plan,
        maintenance=KALSHI_MAINTENANCE if maintenance is not False else
        MaintenanceCalendar(weekly=False),
        reset_after_maintenance=reset_after,
        max_message_size=max_size,
        record_wire=False,
    )
    return GatewaySetup(
        config=config,
        accounts=tuple(accounts),
        keys=tuple(keys),
        markets=tuple(markets),
        liquidity=tuple(liquidity),
        ca_out=None if ca_out is None else base / ca_out,
    )


# --------------------------------------------------------------------------- the command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gateway`` subcommand's options."""
    parser.add_argument("--config", metavar="FILE", help="gateway TOML file (see examples/gateway.toml)")
    parser.add_argument(
        "--key", action="append", default=[], metavar="KEY_ID=PUBLIC_KEY.pem",
        help="register an API key with its own account, on all endpoints (repeatable)",
    )
    parser.add_argument("--plain", action="store_true", help="plain TCP instead of TLS")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", action="append", default=[], metavar="ENDPOINT=PORT",
        help="fixed port for an endpoint (default: any free port; repeatable)",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC",
        help='inject a fault, e.g. "drop:endpoint=KalshiNR,after=10" (repeatable)',
    )
    parser.add_argument("--fault-seed", type=int, metavar="N", help="add a random fault plan from seed N")
    parser.add_argument("--fault-count", type=int, default=3, metavar="N",
                        help="faults in the random plan (default 3)")
    parser.add_argument("--seed", type=int, help="seed of the exchange's identifiers")
    parser.add_argument("--ca-out", metavar="FILE", help="write the generated CA certificate here")
    parser.add_argument("--no-maintenance", action="store_true",
                        help="no Thursday maintenance window")


def _pairs(values: Sequence[str], what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, eq, rest = v.partition("=")
        if not eq or not name or not rest:
            raise ConfigError(f"{what} {v!r}: expected NAME=VALUE")
        out.append((name.strip(), rest.strip()))
    return out


def build_from_args(args: argparse.Namespace) -> GatewaySetup:
    """The setup the command line asks for (a config file, quick-start keys, or both)."""
    if args.config is None and not args.key:
        raise ConfigError("give --config FILE or at least one --key KEY_ID=PUBLIC_KEY.pem")
    if args.config is not None:
        setup = load_gateway_config(args.config)
    else:
        setup = GatewaySetup(
            config=GatewayConfig(record_wire=False),
            markets=tuple({"ticker": t, "exchange_index": i} for t, i in QUICK_MARKETS),
            liquidity=tuple(
                {"ticker": t, "side": s, "price": p, "qty": q}
                for t, _ in QUICK_MARKETS for s, p, q in QUICK_LIQUIDITY
            ),
        )
    accounts = list(setup.accounts)
    keys = list(setup.keys)
    for key_id, pem in _pairs(args.key, "--key"):
        # Quick start: every key its own account, named after the key.
        accounts.append({"id": key_id})
        keys.append({"id": key_id, "account": key_id, "public_key": Path(pem)})
    config = setup.config
    changes: dict[str, Any] = {}
    if args.plain:
        changes["tls"] = False
        changes["tls_material"] = None
    if args.host:
        changes["host"] = args.host
    if args.port:
        ports = dict(config.ports)
        for name, value in _pairs(args.port, "--port"):
            endpoint_spec(name)
            if not value.isdigit():
                raise ConfigError(f"--port {name}={value}: the port must be a number")
            ports[name] = int(value)
        changes["ports"] = ports
    plan = config.faults
    if args.fault:
        plan = FaultPlan((*plan.faults, *FaultPlan.parse(args.fault).faults), seed=plan.seed)
    if args.fault_seed is not None:
        drawn = FaultPlan.random(
            args.fault_seed, endpoints=list(changes.get("ports", config.ports)),
            keys=[k["id"] for k in keys], count=args.fault_count,
        )
        plan = FaultPlan((*plan.faults, *drawn.faults), seed=args.fault_seed)
    changes["faults"] = plan
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.no_maintenance:
        changes["maintenance"] = MaintenanceCalendar(weekly=False)
    ca_out = Path(args.ca_out) if args.ca_out else setup.ca_out
    return attrs.evolve(
        setup, config=attrs.evolve(config, **changes), accounts=tuple(accounts),
        keys=tuple(keys), ca_out=ca_out,
    )


async def serve(setup: GatewaySetup, *, out: TextIO, err: TextIO) -> int:
    """Run the gateway until SIGTERM/SIGINT; print the ready lines. Returns the exit code."""
    gateway = setup.build()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.run)
            if gateway.tls is not None:
                ca = setup.ca_out
                if ca is None:
                    ca = Path(tempfile.mkdtemp(prefix="kalshi-gateway-")) / "gateway-ca.pem"
                gateway.tls.write_ca(ca)
                print(f"TLS: trust the CA in {ca} (certificate pin {gateway.tls.pin_sha256})",
                      file=err, flush=True)
            for name, (host, port) in gateway.addresses.items():
                print(f"{name} {host}:{port}", file=out)
            out.flush()
            # Set up and serving: what exists now lives as long as the process. Kept out of
            # the collector's sight, it is not walked by every full collection (a pause of
            # tens of ms each), as `kalshi-fix run` does for the supervisor.
            gc.freeze()
            async for _ in signals:
                gateway.stop()
                break
    if gateway.internal_errors:
        for e in gateway.internal_errors:
            print(f"kalshi-fix gateway: internal error: {e}", file=err)
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def command(args: argparse.Namespace) -> int:
    """The ``gateway`` subcommand: returns the exit code."""
    try:
        setup = build_from_args(args)
        return trio.run(lambda: serve(setup, out=sys.stdout, err=sys.stderr))
    except (ConfigError, KeyLoadError) as exc:
        print(f"kalshi-fix gateway: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # A bind failure surfaces from inside the nursery; report it like any config error.
        match, rest = group.split((ConfigError, KeyLoadError))
        if match is None or rest is not None:
            raise
        for leaf in _leaves(match):
            print(f"kalshi-fix gateway: {leaf}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sessions.testing.cli``: the same as ``kalshi-fix gateway``."""
    parser = argparse.ArgumentParser(
        prog="kalshi-fix gateway",
        description="Run the simulated Kalshi FIX gateway (all endpoints) until SIGTERM.",
    )
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
