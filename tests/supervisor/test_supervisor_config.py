"""The [supervisor] table: defaults, full parse, and errors naming file, table and key."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sessions.errors import ConfigError
from supervisor.backoff import Backoff
from supervisor.keys import LOCK_DIR_ENV, builtin_lock_dir
from supervisor.config import (
    ChildSettings,
    MaintenanceSettings,
    RestartType,
    SupervisorConfig,
    load_supervisor_config,
)

KEY_NR = "3f1c2a9e-0000-4000-8000-0000000000d1"
KEY_DC = "3f1c2a9e-0000-4000-8000-0000000000d2"
KEY_RT = "3f1c2a9e-0000-4000-8000-0000000000d3"

SESSIONS = f"""
[session.orders]
endpoint = "KalshiNR"
environment = "demo"
key_id = "{KEY_NR}"
private_key = "keys/orders.pem"

[session.dropcopy]
endpoint = "KalshiDC"
environment = "demo"
key_id = "{KEY_DC}"
private_key = "keys/dc.pem"
"""

NR_ONLY = f"""
[session.orders]
endpoint = "KalshiNR"
environment = "demo"
key_id = "{KEY_NR}"
private_key = "keys/orders.pem"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, supervisor: str, sessions: str = SESSIONS) -> SupervisorConfig:
    return load_supervisor_config(write(tmp_path, sessions + "\n" + supervisor))[1]


def error(tmp_path: Path, supervisor: str, sessions: str = SESSIONS) -> tuple[Path, str]:
    path = write(tmp_path, sessions + "\n" + supervisor)
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path)
    return path, str(info.value)


# ----------------------------------------------------------------------------- happy paths


def test_defaults_without_a_supervisor_table(
    tmp_path: Path, _private_key_lock_dir: Path
) -> None:
    config, sup = load_supervisor_config(write(tmp_path, SESSIONS))
    assert list(config.sessions) == ["orders", "dropcopy"]
    assert (sup.backoff_min, sup.backoff_max, sup.backoff_jitter) == (1.0, 60.0, 0.2)
    assert (sup.restart_intensity, sup.restart_period) == (5, 60.0)
    assert sup.state_dir == tmp_path / "var/supervisor"
    # Host-wide, not beside the file (the suite points KALSHI_FIX_LOCK_DIR at a temp dir).
    assert sup.lock_dir == _private_key_lock_dir
    assert sup.maintenance == MaintenanceSettings()
    assert sup.maintenance.weekday_name == "thursday"
    assert (sup.maintenance.start, sup.maintenance.end) == (dt.time(3), dt.time(5))
    assert sup.maintenance.zone == ZoneInfo("America/New_York")
    assert sup.maintenance.logout_before_s == 30.0
    rec = sup.reconciliation
    assert (rec.enabled, rec.lookback_hours, rec.drop_copy_session) == (True, 3.0, "dropcopy")
    assert rec.journal == tmp_path / "var/supervisor/executions.jsonl"
    assert dict(sup.children) == {
        "orders": ChildSettings("orders"),
        "dropcopy": ChildSettings("dropcopy"),
    }
    assert sup.child("orders").restart is RestartType.PERMANENT


def test_full_supervisor_table(tmp_path: Path) -> None:
    sup = load(tmp_path, """
[supervisor]
backoff_min = 0.5
backoff_max = 30
backoff_multiplier = 3
backoff_jitter = 0.1
restart_intensity = 10
restart_period = 120
state_dir = "state"
lock_dir = "/run/kalshi-locks"

[supervisor.maintenance]
timezone = "America/Chicago"
weekday = "Wednesday"
start = 02:00:00
end = "04:30"
logout_before_s = 45
extra_windows = [
  { start = "2026-12-31T20:00:00", end = "2026-12-31T23:00:00", note = "new year" },
  { start = 2026-12-24T22:00:00-05:00, end = 2026-12-25T02:00:00-05:00 },
]

[supervisor.reconciliation]
enabled = true
lookback_hours = 2.5
drop_copy_session = "dropcopy"
journal = "journal/exec.jsonl"

[supervisor.sessions.orders]
restart = "transient"
start_order = 2

[supervisor.sessions.dropcopy]
start_order = 1
""")
    assert sup.backoff == Backoff(minimum=0.5, maximum=30, multiplier=3, jitter=0.1)
    limit = sup.new_restart_intensity("orders")
    assert (limit.max_restarts, limit.period, limit.child) == (10, 120.0, "orders")
    assert sup.state_dir == tmp_path / "state"
    assert sup.lock_dir == Path("/run/kalshi-locks")
    m = sup.maintenance
    assert (m.timezone, m.weekday, m.weekday_name) == ("America/Chicago", 2, "wednesday")
    assert (m.start, m.end, m.logout_before_s) == (dt.time(2), dt.time(4, 30), 45.0)
    chicago = ZoneInfo("America/Chicago")
    # Sorted by start; a date-time without offset is wall-clock time in the configured zone.
    first, second = m.extra_windows
    assert first.start == dt.datetime(2026, 12, 24, 22, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert first.note is None
    assert second.start == dt.datetime(2026, 12, 31, 20, tzinfo=chicago)
    assert second.start.utcoffset() == dt.timedelta(hours=-6)
    assert second.note == "new year"
    rec = sup.reconciliation
    assert (rec.lookback_hours, rec.drop_copy_session) == (2.5, "dropcopy")
    assert rec.journal == tmp_path / "journal/exec.jsonl"
    assert sup.children["orders"] == ChildSettings("orders", RestartType.TRANSIENT, 2)
    assert sup.start_sequence == ("dropcopy", "orders")


def test_the_journal_follows_state_dir_but_the_locks_stay_host_wide(
    tmp_path: Path, _private_key_lock_dir: Path
) -> None:
    sup = load(tmp_path, '[supervisor]\nstate_dir = "/srv/kfs"\n')
    assert sup.lock_dir == _private_key_lock_dir
    assert sup.reconciliation.journal == Path("/srv/kfs/executions.jsonl")


def test_two_configs_in_different_folders_get_the_same_default_lock_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without configuration or environment: /tmp/kalshi-fix-<uid>/locks (only computed here,
    # never created: the tests must not touch the host's real lock directory).
    monkeypatch.delenv(LOCK_DIR_ENV)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, first = load_supervisor_config(write(tmp_path / "a", SESSIONS))
    _, second = load_supervisor_config(write(tmp_path / "b", SESSIONS))
    assert first.lock_dir == second.lock_dir == builtin_lock_dir()
    assert builtin_lock_dir() == Path(f"/tmp/kalshi-fix-{os.getuid()}/locks")
    assert SupervisorConfig().lock_dir == builtin_lock_dir()


def test_lock_dir_in_the_file_overrides_the_environment(tmp_path: Path) -> None:
    sup = load(tmp_path, '[supervisor]\nlock_dir = "shared-locks"\n')
    assert sup.lock_dir == tmp_path / "shared-locks"


def test_a_relative_lock_dir_environment_variable_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, "locks")
    path, message = error(tmp_path, "[supervisor]\nbackoff_min = 1\n")
    assert message.startswith(f"{path}: [supervisor] lock_dir: not given, and ")
    assert f"{LOCK_DIR_ENV} must be an absolute path" in message and "'locks'" in message


def test_start_sequence_keeps_file_order_on_ties(tmp_path: Path) -> None:
    sessions = SESSIONS + f"""
[session.rt]
endpoint = "KalshiRT"
environment = "demo"
key_id = "{KEY_RT}"
private_key = "keys/rt.pem"
"""
    sup = load(tmp_path, "[supervisor.sessions.rt]\nstart_order = -1\n", sessions)
    assert sup.start_sequence == ("rt", "orders", "dropcopy")


def test_reconciliation_may_be_disabled_without_a_drop_copy_session(tmp_path: Path) -> None:
    sup = load(tmp_path, "[supervisor.reconciliation]\nenabled = false\n", NR_ONLY)
    assert not sup.reconciliation.enabled
    assert sup.reconciliation.drop_copy_session is None


def test_rate_tier_and_share_default_to_basic_and_everything(tmp_path: Path) -> None:
    sup = load(tmp_path, "[supervisor]\nbackoff_min = 1\n")
    assert (sup.rate_tier, sup.rate_share) == ("Basic", 1.0)


@pytest.mark.parametrize(("written", "tier"), [("Advanced", "Advanced"), ("premier", "Premier")])
def test_rate_tier_and_share_are_read(tmp_path: Path, written: str, tier: str) -> None:
    sup = load(tmp_path, f'[supervisor]\nrate_tier = "{written}"\nrate_share = 0.25\n')
    assert (sup.rate_tier, sup.rate_share) == (tier, 0.25)


def test_direct_construction_refuses_an_unknown_tier() -> None:
    with pytest.raises(ConfigError, match="unknown rate-limit tier 'Gold'"):
        SupervisorConfig(rate_tier="Gold")


def test_backoff_min_above_default_max_raises_the_default_max(tmp_path: Path) -> None:
    sup = load(tmp_path, "[supervisor]\nbackoff_min = 90\n")
    assert (sup.backoff_min, sup.backoff_max) == (90.0, 90.0)


# ----------------------------------------------------------------------------- errors


def test_backoff_max_below_min_names_file_table_and_key(tmp_path: Path) -> None:
    path, message = error(tmp_path, "[supervisor]\nbackoff_max = 0.5\n")
    assert message == f"{path}: [supervisor] backoff_max: must be >= backoff_min (1.0), got 0.5"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[supervisor]\nbackof_max = 5", "[supervisor] backof_max: unknown key (did you mean backoff_max?)"),
        ("[supervisor]\nbackoff_min = \"1\"", "[supervisor] backoff_min: must be a number, got a string"),
        ("[supervisor]\nbackoff_min = 0", "[supervisor] backoff_min: must be a positive number of seconds, got 0.0"),
        ("[supervisor]\nbackoff_multiplier = 0.5", "[supervisor] backoff_multiplier: must be >= 1"),
        ("[supervisor]\nbackoff_jitter = 1", "[supervisor] backoff_jitter: must be a fraction >= 0 and < 1"),
        ("[supervisor]\nrestart_intensity = -1", "[supervisor] restart_intensity: must be >= 0, got -1"),
        ("[supervisor]\nrestart_intensity = 2.5", "[supervisor] restart_intensity: must be an integer, got a number"),
        ("[supervisor]\nrestart_period = 0", "[supervisor] restart_period: must be a positive number of seconds"),
        ("[supervisor]\nstate_dir = \"\"", "[supervisor] state_dir: must be a path, got an empty string"),
        ("[supervisor]\nlock_dir = 3", "[supervisor] lock_dir: must be a path string, got an integer"),
        ("[supervisor]\nrate_tier = \"Advance\"", "[supervisor] rate_tier: unknown tier 'Advance' (did you mean advanced?); use your account's Kalshi tier, one of: Basic, Advanced, Expert, Premier, Paragon, Prime, Prestige"),
        ("[supervisor]\nrate_tier = \"Gold\"", "[supervisor] rate_tier: unknown tier 'Gold'; use your account's Kalshi tier, one of: Basic,"),
        ("[supervisor]\nrate_tier = 2", "[supervisor] rate_tier: must be a tier name such as \"Basic\", got an integer"),
        ("[supervisor]\nrate_share = 0", "[supervisor] rate_share: must be a fraction more than 0 and at most 1 (0.5 = half the tier's budget), got 0.0"),
        ("[supervisor]\nrate_share = 1.5", "[supervisor] rate_share: must be a fraction more than 0 and at most 1"),
        ("[supervisor]\nrate_share = \"half\"", "[supervisor] rate_share: must be a number, got a string"),
        ("[supervisor]\nrate_teir = \"Basic\"", "[supervisor] rate_teir: unknown key (did you mean rate_tier?)"),
        ("[supervisor]\nmaintenance = 3", "[supervisor] maintenance: must be a table ([supervisor.maintenance])"),
        ("[supervisor.maintenance]\nweekdy = \"thursday\"", "[supervisor.maintenance] weekdy: unknown key (did you mean weekday?)"),
        ("[supervisor.maintenance]\ntimezone = \"America/New_Yrok\"", "[supervisor.maintenance] timezone: unknown time zone 'America/New_Yrok'"),
        ("[supervisor.maintenance]\nweekday = \"thursdy\"", "[supervisor.maintenance] weekday: unknown day 'thursdy' (did you mean thursday?)"),
        ("[supervisor.maintenance]\nstart = \"3am\"", "[supervisor.maintenance] start: must be a time of day as HH:MM, got '3am'"),
        ("[supervisor.maintenance]\nstart = 3", "[supervisor.maintenance] start: must be a time of day such as \"03:00\", got an integer"),
        ("[supervisor.maintenance]\nstart = \"05:00\"\nend = \"03:00\"", "[supervisor.maintenance] end: must be later than start (05:00) on the same day, got 03:00"),
        ("[supervisor.maintenance]\nlogout_before_s = -1", "[supervisor.maintenance] logout_before_s: must be between 0 and 3600 seconds, got -1.0"),
        ("[supervisor.maintenance]\nextra_windows = [1]", "[supervisor.maintenance] extra_windows[0]: must be a table"),
        ("[supervisor.maintenance]\nextra_windows = [{ start = 2026-01-01T00:00:00Z }]", "[supervisor.maintenance] extra_windows[0] end: required key is missing"),
        ("[supervisor.maintenance]\nextra_windows = [{ start = 2026-01-01, end = 2026-01-02 }]", "[supervisor.maintenance] extra_windows[0] start: needs a time of day as well as a date"),
        ("[supervisor.maintenance]\nextra_windows = [{ start = \"soon\", end = \"later\" }]", "[supervisor.maintenance] extra_windows[0] start: must be a date-time such as"),
        ("[supervisor.maintenance]\nextra_windows = [{ start = 2026-01-01T05:00:00Z, end = 2026-01-01T04:00:00Z }]", "[supervisor.maintenance] extra_windows[0] end: must be later than start"),
        ("[supervisor.maintenance]\nextra_windows = [{ start = 2026-01-01T05:00:00Z, end = 2026-01-01T06:00:00Z, why = \"x\" }]", "[supervisor.maintenance] extra_windows[0] why: unknown key"),
        ("[supervisor.reconciliation]\nlookback_hours = 4", "[supervisor.reconciliation] lookback_hours: must be more than 0 and at most 3 (Kalshi's drop copy replays only the last 3 hours), got 4.0"),
        ("[supervisor.reconciliation]\nlookback_hours = 0", "[supervisor.reconciliation] lookback_hours: must be more than 0"),
        ("[supervisor.reconciliation]\nenabled = \"yes\"", "[supervisor.reconciliation] enabled: must be true or false, got a string"),
        ("[supervisor.reconciliation]\ndrop_copy_session = \"dropcopi\"", "[supervisor.reconciliation] drop_copy_session: no [session.dropcopi] in this file (did you mean dropcopy?); sessions: orders, dropcopy"),
        ("[supervisor.reconciliation]\ndrop_copy_session = \"orders\"", "[supervisor.reconciliation] drop_copy_session: [session.orders] has endpoint KalshiNR; it must name a session with endpoint = \"KalshiDC\""),
        ("[supervisor.reconciliation]\njournl = \"x\"", "[supervisor.reconciliation] journl: unknown key (did you mean journal?)"),
        ("[supervisor.sessions.order]\nrestart = \"transient\"", "[supervisor.sessions.order]: no [session.order] in this file (did you mean orders?); sessions: orders, dropcopy"),
        ("[supervisor.sessions.orders]\nrestart = \"permanant\"", "[supervisor.sessions.orders] restart: unknown restart type 'permanant' (did you mean permanent?)"),
        ("[supervisor.sessions.orders]\nrestart = \"temporary\"", "[supervisor.sessions.orders] restart: unknown restart type 'temporary'; use \"permanent\" or \"transient\""),
        ("[supervisor.sessions.orders]\nstart_order = \"first\"", "[supervisor.sessions.orders] start_order: must be an integer, got a string"),
        ("[supervisor.sessions.orders]\nrestrat = \"transient\"", "[supervisor.sessions.orders] restrat: unknown key (did you mean restart?)"),
        ("[supervisor.sessions]\norders = 1", "supervisor.sessions.orders must be a table ([supervisor.sessions.orders])"),
    ],
)
def test_errors_name_file_table_and_key(tmp_path: Path, table: str, expected: str) -> None:
    path, message = error(tmp_path, table + "\n")
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_reconciliation_replays_every_shard_unless_told_otherwise(tmp_path: Path) -> None:
    # Executions missed on a shard never seen before come back only if that shard is replayed.
    assert load(tmp_path, "").reconciliation.indexes == (0, 1, 2, 3)
    sup = load(tmp_path, "[supervisor.reconciliation]\nindexes = [2, 0]\n")
    assert sup.reconciliation.indexes == (0, 2)


@pytest.mark.parametrize("value", ["[]", "[0, 0]", "[-1]", "[1.5]", '"0"'])
def test_reconciliation_indexes_must_be_distinct_shards(tmp_path: Path, value: str) -> None:
    path, message = error(tmp_path, f"[supervisor.reconciliation]\nindexes = {value}\n")
    assert message.startswith(f"{path}: [supervisor.reconciliation] indexes: ")


def test_supervisor_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "supervisor = 5\n" + SESSIONS)
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path)
    assert str(info.value) == f"{path}: 'supervisor' must be a table ([supervisor])"


def test_enabled_reconciliation_needs_a_drop_copy_session(tmp_path: Path) -> None:
    path, message = error(tmp_path, "", NR_ONLY)
    assert message.startswith(f"{path}: [supervisor.reconciliation] drop_copy_session: ")
    assert 'endpoint = "KalshiDC"' in message and "enabled = false" in message


def test_two_drop_copy_sessions_must_be_told_apart(tmp_path: Path) -> None:
    sessions = SESSIONS + f"""
[session.dropcopy2]
endpoint = "KalshiDC"
environment = "demo"
key_id = "{KEY_RT}"
private_key = "keys/dc2.pem"
"""
    _, message = error(tmp_path, "", sessions)
    assert "several KalshiDC sessions (dropcopy, dropcopy2)" in message
    sup = load(tmp_path, '[supervisor.reconciliation]\ndrop_copy_session = "dropcopy2"\n', sessions)
    assert sup.reconciliation.drop_copy_session == "dropcopy2"


def test_a_key_named_by_two_sessions_is_refused_before_anything_else(tmp_path: Path) -> None:
    sessions = SESSIONS.replace(KEY_DC, KEY_NR)
    _, message = error(tmp_path, "[supervisor]\nbackoff_max = 0.5\n", sessions)
    assert "same key_id" in message and KEY_NR in message


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError):
        SupervisorConfig(backoff_min=2, backoff_max=1)
    with pytest.raises(ConfigError):
        SupervisorConfig(restart_period=0)
    default = SupervisorConfig()
    assert default.lock_dir == Path(os.environ[LOCK_DIR_ENV])
    assert default.reconciliation.journal == Path("var/supervisor/executions.jsonl")
    assert default.child("anything") == ChildSettings("anything")
