"""The ``[supervisor]`` part of the TOML configuration, validated up front.

It lives in the same file as the ``[session.NAME]`` tables (see ``sessions/config.py``, which
keeps it unparsed in ``Config.extra``)::

    [supervisor]
    backoff_min = 1.0            # seconds; first retry delay (jitter may shorten it, see backoff.py)
    backoff_max = 60.0           # seconds; hard cap
    backoff_multiplier = 2.0
    backoff_jitter = 0.2         # a delay is shortened by up to this fraction at random
    restart_intensity = 5        # more than this many unplanned restarts ...
    restart_period = 60.0        # ... within this many seconds: the supervisor gives up
    state_dir = "var/supervisor" # relative paths are relative to the config file
    lock_dir = "/srv/kalshi/locks"   # default: $KALSHI_FIX_LOCK_DIR, else /tmp/kalshi-fix-<uid>/locks
    rate_tier = "Basic"          # the account's Kalshi rate-limit tier (REFERENCE §10.1)
    rate_share = 1.0             # fraction of the tier's Write budget this process may use

    [supervisor.maintenance]     # the weekly window (REFERENCE §1.6) and one-off extra windows
    timezone = "America/New_York"
    weekday = "thursday"
    start = "03:00"
    end = "05:00"
    logout_before_s = 30         # log out gracefully this long before a window starts
    extra_windows = [{ start = 2026-12-24T22:00:00-05:00, end = 2026-12-25T02:00:00-05:00 }]

    [supervisor.reconciliation]
    enabled = true
    lookback_hours = 3           # Kalshi's drop copy keeps 3 hours (REFERENCE §6)
    drop_copy_session = "dropcopy"   # a [session.NAME] with endpoint = "KalshiDC"
    indexes = [0, 1, 2, 3]       # exchange shards replayed at every pass (default: all four)
    journal = "var/supervisor/executions.jsonl"

    [supervisor.sessions.orders] # per-session supervision; NAME must be a [session.NAME]
    restart = "permanent"        # or "transient": not restarted after a normal (our own) Logout
    start_order = 0              # lower starts first; ties keep file order

Every problem is a :class:`~sessions.errors.ConfigError` naming the file, the table and the key,
e.g. ``cfg.toml: [supervisor] backoff_max: must be >= backoff_min (1.0), got 0.5``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import os
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from sessions.config import (
    Config,
    _is_bool,
    _is_int,
    _is_number,
    _is_str,
    _resolve,
    _Table,
    load_config,
)
from sessions.errors import ConfigError

from .backoff import Backoff
from .execid import EXCHANGE_INDEXES
from .intensity import RestartIntensity
from .keys import default_lock_dir
from .ratelimit import TIER_BUDGETS, bucket_shape

#: Relative to the config file's directory.
DEFAULT_STATE_DIR = Path("var/supervisor")
#: Kalshi's drop copy replays at most the last 3 hours (REFERENCE §6).
MAX_LOOKBACK_HOURS = 3.0
#: Longer than this before a window is surely a typo (seconds vs. milliseconds).
MAX_LOGOUT_BEFORE_S = 3600.0
DROP_COPY_ENDPOINT = "KalshiDC"

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_SUPERVISOR_KEYS = (
    "backoff_min",
    "backoff_max",
    "backoff_multiplier",
    "backoff_jitter",
    "restart_intensity",
    "restart_period",
    "state_dir",
    "lock_dir",
    "rate_tier",
    "rate_share",
    "maintenance",
    "reconciliation",
    "sessions",
)
_MAINTENANCE_KEYS = ("timezone", "weekday", "start", "end", "logout_before_s", "extra_windows")
_WINDOW_KEYS = ("start", "end", "note")
_RECONCILIATION_KEYS = ("enabled", "lookback_hours", "drop_copy_session", "indexes", "journal")
_CHILD_KEYS = ("restart", "start_order")


class RestartType(enum.Enum):
    """When a child is restarted after it ended (OTP's restart types)."""

    #: Always restarted, whatever the reason it ended.
    PERMANENT = "permanent"
    #: Restarted only after an abnormal end; a Logout we asked for ourselves ends it for good.
    TRANSIENT = "transient"


@attrs.frozen
class ChildSettings:
    """How the supervisor runs one session."""

    name: str
    restart: RestartType = RestartType.PERMANENT
    #: Lower starts first; equal values keep the order of the config file.
    start_order: int = 0


@attrs.frozen
class MaintenanceWindow:
    """A one-off window in addition to the weekly one; ``start``/``end`` are aware datetimes."""

    start: dt.datetime
    end: dt.datetime
    note: str | None = None


@attrs.frozen
class MaintenanceSettings:
    """The weekly maintenance window (REFERENCE §1.6) and any extra windows.

    ``weekday`` follows :meth:`datetime.date.weekday` (Monday = 0, so Thursday = 3); ``start``
    and ``end`` are local times in ``timezone`` on that day, ``start < end``.
    """

    timezone: str = "America/New_York"
    weekday: int = 3
    start: dt.time = dt.time(3, 0)
    end: dt.time = dt.time(5, 0)
    #: Seconds before a window at which sessions log out gracefully.
    logout_before_s: float = 30.0
    extra_windows: tuple[MaintenanceWindow, ...] = ()

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """:attr:`timezone` as a tz object."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def weekday_name(self) -> str:
        """The weekday in words, lower case (``"thursday"``)."""
        return WEEKDAYS[self.weekday]


@attrs.frozen
class ReconciliationSettings:
    """Recovery of missed executions through drop copy (REFERENCE §6)."""

    enabled: bool = True
    lookback_hours: float = MAX_LOOKBACK_HOURS
    #: Name of the ``[session.NAME]`` whose endpoint is KalshiDC (``None`` only when disabled).
    drop_copy_session: str | None = None
    #: Exchange indexes (shards) every pass replays. All of Kalshi's by default: executions
    #: missed on a shard never seen before (the first trade on it happened while we were down)
    #: are recovered only if that shard is asked for; replays are per shard (REFERENCE §6).
    indexes: tuple[int, ...] = EXCHANGE_INDEXES
    #: Where processed executions are journalled.
    journal: Path = attrs.field(
        default=DEFAULT_STATE_DIR / "executions.jsonl", converter=Path
    )


@attrs.frozen
class SupervisorConfig:
    """The validated ``[supervisor]`` table. Build it with :func:`load_supervisor_config`.

    ``children`` has an entry for every session in the file (defaults where the file has no
    ``[supervisor.sessions.NAME]``), in file order.
    """

    backoff_min: float = 1.0
    backoff_max: float = 60.0
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.2
    restart_intensity: int = 5
    restart_period: float = 60.0
    state_dir: Path = attrs.field(default=DEFAULT_STATE_DIR, converter=Path)
    #: Host-wide by default, never beside the configuration (:func:`supervisor.keys.default_lock_dir`).
    lock_dir: Path = attrs.field(factory=default_lock_dir, converter=Path)
    #: The account's Kalshi rate-limit tier, a key of :data:`supervisor.ratelimit.TIER_BUDGETS`.
    rate_tier: str = "Basic"
    #: The fraction (0 < share <= 1) of the tier's Write budget this process may use; the rest
    #: is left to REST and to other processes on the account (the buckets are per account).
    rate_share: float = 1.0
    maintenance: MaintenanceSettings = attrs.Factory(MaintenanceSettings)
    reconciliation: ReconciliationSettings = attrs.Factory(
        lambda self: ReconciliationSettings(journal=self.state_dir / "executions.jsonl"),
        takes_self=True,
    )
    children: Mapping[str, ChildSettings] = attrs.field(
        factory=dict, converter=lambda m: MappingProxyType(dict(m))
    )

    def __attrs_post_init__(self) -> None:
        # The parser reports these with file/table/key; this guards direct construction.
        self.backoff  # noqa: B018
        self.new_restart_intensity()
        bucket_shape(self.rate_tier, share=self.rate_share)

    @property
    def backoff(self) -> Backoff:
        """The retry delay schedule."""
        return Backoff(
            minimum=self.backoff_min,
            maximum=self.backoff_max,
            multiplier=self.backoff_multiplier,
            jitter=self.backoff_jitter,
        )

    def new_restart_intensity(self, child: str = "session") -> RestartIntensity:
        """A fresh restart counter with this configuration's intensity and period."""
        return RestartIntensity(self.restart_intensity, self.restart_period, child=child)

    def child(self, name: str) -> ChildSettings:
        """The settings of session ``name`` (defaults if the file gives none)."""
        return self.children.get(name) or ChildSettings(name)

    @property
    def start_sequence(self) -> tuple[str, ...]:
        """Session names in the order they are started."""
        ordered = sorted(enumerate(self.children.values()), key=lambda p: (p[1].start_order, p[0]))
        return tuple(c.name for _, c in ordered)


# ----------------------------------------------------------------------------- loading


def load_supervisor_config(path: str | os.PathLike[str]) -> tuple[Config, SupervisorConfig]:
    """Read the sessions and the ``[supervisor]`` table of one TOML file.

    Raises :class:`~sessions.errors.ConfigError` naming the file, table and key of the first
    problem. Duplicate keys across sessions are refused by :func:`sessions.config.load_config`.
    """
    config = load_config(path)
    return config, parse_supervisor_config(config)


def parse_supervisor_config(config: Config) -> SupervisorConfig:
    """Validate ``config.extra["supervisor"]`` against ``config``'s sessions."""
    p = config.path
    raw = config.extra.get("supervisor", {})
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: 'supervisor' must be a table ([supervisor])")
    t = _Table(raw, f"{p}: [supervisor]", _SUPERVISOR_KEYS)
    base = config.base_dir

    backoff_min = _number(t, "backoff_min", 1.0)
    if not backoff_min > 0:
        raise t.error("backoff_min", f"must be a positive number of seconds, got {backoff_min}")
    backoff_max = _number(t, "backoff_max", max(60.0, backoff_min))
    if not backoff_max >= backoff_min:
        raise t.error(
            "backoff_max", f"must be >= backoff_min ({backoff_min}), got {backoff_max}"
        )
    multiplier = _number(t, "backoff_multiplier", 2.0)
    if not multiplier >= 1:
        raise t.error("backoff_multiplier", f"must be >= 1, got {multiplier}")
    jitter = _number(t, "backoff_jitter", 0.2)
    if not 0 <= jitter < 1:
        raise t.error(
            "backoff_jitter",
            f"must be a fraction >= 0 and < 1 (0.2 = up to 20% shorter), got {jitter}",
        )
    intensity = t.get("restart_intensity", "an integer", _is_int, 5)
    if intensity < 0:
        raise t.error("restart_intensity", f"must be >= 0, got {intensity}")
    period = _number(t, "restart_period", 60.0)
    if not period > 0:
        raise t.error("restart_period", f"must be a positive number of seconds, got {period}")

    state_dir = _path(t, "state_dir", base, base / DEFAULT_STATE_DIR)
    lock_dir = _lock_dir(t, base)
    rate_tier, rate_share = _parse_rate(t)

    maintenance = _parse_maintenance(_subtable(t, "maintenance"), p)
    reconciliation = _parse_reconciliation(
        _subtable(t, "reconciliation"), config, state_dir
    )
    children = _parse_children(_subtable(t, "sessions"), config)

    return SupervisorConfig(
        backoff_min=backoff_min,
        backoff_max=backoff_max,
        backoff_multiplier=multiplier,
        backoff_jitter=jitter,
        restart_intensity=intensity,
        restart_period=period,
        state_dir=state_dir,
        lock_dir=lock_dir,
        rate_tier=rate_tier,
        rate_share=rate_share,
        maintenance=maintenance,
        reconciliation=reconciliation,
        children=children,
    )


def lock_dir_of(config: Config) -> Path:
    """Only ``[supervisor] lock_dir`` (or its host-wide default) of ``config``, validated as
    :func:`parse_supervisor_config` does, for a command that needs the key locks and nothing
    else of the supervisor (``kalshi-fix check``), so a file without a valid supervisor setup
    (no drop copy, say) still works there."""
    raw = config.extra.get("supervisor", {})
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{config.path}: 'supervisor' must be a table ([supervisor])")
    # Only lock_dir is read; the other keys are the supervisor's business.
    return _lock_dir(_Table(raw, f"{config.path}: [supervisor]", tuple(raw)), config.base_dir)


def _lock_dir(t: _Table, base: Path) -> Path:
    # Not beside the file: configurations in two folders naming one key must exclude each other.
    lock_dir = _optional_path(t, "lock_dir", base)
    if lock_dir is not None:
        return lock_dir
    try:
        return default_lock_dir()
    except ConfigError as exc:
        raise t.error("lock_dir", f"not given, and {exc}") from None


def _parse_rate(t: _Table) -> tuple[str, float]:
    tier = t.get("rate_tier", "a tier name such as \"Basic\"", _is_str, "Basic")
    # Kalshi writes the tiers capitalised; any case is accepted and the canonical name kept.
    canonical = {name.lower(): name for name in TIER_BUDGETS}
    if tier.lower() not in canonical:
        raise t.error(
            "rate_tier",
            f"unknown tier {tier!r}{_did_you_mean(tier.lower(), tuple(canonical))}; use your "
            f"account's Kalshi tier, one of: {', '.join(TIER_BUDGETS)}",
        )
    share = _number(t, "rate_share", 1.0)
    if not 0 < share <= 1:
        raise t.error(
            "rate_share",
            f"must be a fraction more than 0 and at most 1 (0.5 = half the tier's budget), "
            f"got {share}",
        )
    return canonical[tier.lower()], share


def _number(t: _Table, key: str, default: float) -> float:
    return float(t.get(key, "a number", _is_number, default))


def _path(t: _Table, key: str, base: Path, default: Path) -> Path:
    value = _optional_path(t, key, base)
    return default if value is None else value


def _optional_path(t: _Table, key: str, base: Path) -> Path | None:
    value = t.get(key, "a path string", _is_str, None)
    if value is None:
        return None
    if not value.strip():
        raise t.error(key, "must be a path, got an empty string")
    return _resolve(base, value)


def _subtable(t: _Table, key: str) -> Mapping[str, Any]:
    return t.get(
        key, f"a table ([supervisor.{key}])", lambda v: isinstance(v, Mapping), {}
    )


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _parse_time(t: _Table, key: str, default: dt.time) -> dt.time:
    value = t.get(
        key, "a time of day such as \"03:00\"",
        lambda v: isinstance(v, (str, dt.time)), default,
    )
    if isinstance(value, str):
        try:
            value = dt.time.fromisoformat(value)
        except ValueError:
            raise t.error(key, f"must be a time of day as HH:MM, got {value!r}") from None
    if value.tzinfo is not None:
        raise t.error(key, "must be a local time without offset (timezone sets the zone)")
    return value


def _parse_maintenance(table: Mapping[str, Any], path: Path) -> MaintenanceSettings:
    t = _Table(table, f"{path}: [supervisor.maintenance]", _MAINTENANCE_KEYS)
    tz_name = t.get("timezone", "an IANA time zone name", _is_str, "America/New_York")
    try:
        zone = zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise t.error(
            "timezone", f"unknown time zone {tz_name!r}; use an IANA name such as "
            "\"America/New_York\""
        ) from None
    day = t.get("weekday", "a day name such as \"thursday\"", _is_str, "thursday")
    if day.lower() not in WEEKDAYS:
        raise t.error(
            "weekday",
            f"unknown day {day!r}{_did_you_mean(day.lower(), WEEKDAYS)}; "
            f"use one of: {', '.join(WEEKDAYS)}",
        )
    start = _parse_time(t, "start", dt.time(3, 0))
    end = _parse_time(t, "end", dt.time(5, 0))
    if not start < end:
        raise t.error(
            "end",
            f"must be later than start ({start.isoformat('minutes')}) on the same day, got "
            f"{end.isoformat('minutes')}; give a window across midnight as extra_windows",
        )
    logout_before = float(t.get("logout_before_s", "a number of seconds", _is_number, 30.0))
    if not 0 <= logout_before <= MAX_LOGOUT_BEFORE_S:
        raise t.error(
            "logout_before_s",
            f"must be between 0 and {MAX_LOGOUT_BEFORE_S:g} seconds, got {logout_before}",
        )
    windows_raw = t.get(
        "extra_windows", "an array of tables with start and end",
        lambda v: isinstance(v, list), [],
    )
    windows = tuple(
        sorted(
            (_parse_window(item, i, path, zone) for i, item in enumerate(windows_raw)),
            key=lambda w: w.start,
        )
    )
    return MaintenanceSettings(
        timezone=tz_name,
        weekday=WEEKDAYS.index(day.lower()),
        start=start,
        end=end,
        logout_before_s=logout_before,
        extra_windows=windows,
    )


def _parse_window(
    item: Any, index: int, path: Path, zone: zoneinfo.ZoneInfo
) -> MaintenanceWindow:
    where = f"{path}: [supervisor.maintenance] extra_windows[{index}]"
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: must be a table such as {{ start = ..., end = ... }}")
    t = _Table(item, where, _WINDOW_KEYS)
    for key in ("start", "end"):
        t.required(key)

    def moment(key: str) -> dt.datetime:
        value = t.get(
            key, "a date-time such as 2026-12-24T22:00:00-05:00",
            lambda v: isinstance(v, (str, dt.date)), None,
        )
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise t.error(
                    key, f"must be a date-time such as 2026-12-24T22:00:00-05:00, got {value!r}"
                ) from None
        if not isinstance(value, dt.datetime):  # a bare TOML date
            raise t.error(key, "needs a time of day as well as a date")
        # A date-time without offset is wall-clock time in the maintenance time zone.
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)

    start, end = moment("start"), moment("end")
    if not end > start:
        raise t.error("end", f"must be later than start ({start.isoformat()}), got {end.isoformat()}")
    note = t.get("note", "a string", _is_str, None)
    return MaintenanceWindow(start=start, end=end, note=note)


def _parse_reconciliation(
    table: Mapping[str, Any], config: Config, state_dir: Path
) -> ReconciliationSettings:
    t = _Table(table, f"{config.path}: [supervisor.reconciliation]", _RECONCILIATION_KEYS)
    enabled = t.get("enabled", "true or false", _is_bool, True)
    lookback = float(t.get("lookback_hours", "a number of hours", _is_number, MAX_LOOKBACK_HOURS))
    if not 0 < lookback <= MAX_LOOKBACK_HOURS:
        raise t.error(
            "lookback_hours",
            f"must be more than 0 and at most {MAX_LOOKBACK_HOURS:g} (Kalshi's drop copy "
            f"replays only the last {MAX_LOOKBACK_HOURS:g} hours), got {lookback}",
        )
    journal = _path(t, "journal", config.base_dir, state_dir / "executions.jsonl")
    raw_indexes = t.get(
        "indexes", "a list of exchange indexes", lambda v: isinstance(v, list),
        list(EXCHANGE_INDEXES),
    )
    if (
        not raw_indexes
        or not all(type(i) is int and i >= 0 for i in raw_indexes)
        or len(set(raw_indexes)) != len(raw_indexes)
    ):
        raise t.error(
            "indexes",
            "must be a non-empty list of distinct exchange indexes (integers >= 0; Kalshi's "
            f"shards are {', '.join(map(str, EXCHANGE_INDEXES))}), got {raw_indexes!r}",
        )
    indexes = tuple(sorted(raw_indexes))

    names = list(config.sessions)
    drop_copy = t.get("drop_copy_session", "the name of a [session.NAME] table", _is_str, None)
    if drop_copy is not None:
        session = config.sessions.get(drop_copy)
        if session is None:
            raise t.error(
                "drop_copy_session",
                f"no [session.{drop_copy}] in this file{_did_you_mean(drop_copy, names)}; "
                f"sessions: {', '.join(names)}",
            )
        if session.profile.name != DROP_COPY_ENDPOINT:
            raise t.error(
                "drop_copy_session",
                f"[session.{drop_copy}] has endpoint {session.profile.name}; it must name a "
                f"session with endpoint = \"{DROP_COPY_ENDPOINT}\"",
            )
    elif enabled:
        candidates = [n for n, s in config.sessions.items() if s.profile.name == DROP_COPY_ENDPOINT]
        if len(candidates) == 1:
            drop_copy = candidates[0]
        elif not candidates:
            raise t.error(
                "drop_copy_session",
                f"reconciliation is enabled but no session has endpoint = "
                f"\"{DROP_COPY_ENDPOINT}\"; add a [session.NAME] for drop copy (with its own API "
                "key) or set enabled = false",
            )
        else:
            raise t.error(
                "drop_copy_session",
                f"several {DROP_COPY_ENDPOINT} sessions ({', '.join(candidates)}); "
                "name the one to reconcile through",
            )
    return ReconciliationSettings(
        enabled=enabled, lookback_hours=lookback, drop_copy_session=drop_copy,
        indexes=indexes, journal=journal,
    )


def _parse_children(table: Mapping[str, Any], config: Config) -> dict[str, ChildSettings]:
    p = config.path
    names = list(config.sessions)
    restart_values = [r.value for r in RestartType]
    children = {name: ChildSettings(name) for name in names}
    for name, sub in table.items():
        where = f"{p}: [supervisor.sessions.{name}]"
        if name not in config.sessions:
            raise ConfigError(
                f"{where}: no [session.{name}] in this file{_did_you_mean(name, names)}; "
                f"sessions: {', '.join(names)}"
            )
        if not isinstance(sub, Mapping):
            raise ConfigError(
                f"{p}: supervisor.sessions.{name} must be a table ([supervisor.sessions.{name}])"
            )
        t = _Table(sub, where, _CHILD_KEYS)
        restart = t.get("restart", "\"permanent\" or \"transient\"", _is_str, "permanent")
        if restart not in restart_values:
            raise t.error(
                "restart",
                f"unknown restart type {restart!r}{_did_you_mean(restart, restart_values)}; "
                "use \"permanent\" or \"transient\"",
            )
        order = t.get("start_order", "an integer", _is_int, 0)
        children[name] = ChildSettings(name, RestartType(restart), order)
    return children
