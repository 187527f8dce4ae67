"""TOML configuration loading and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessions.config import (
    Config,
    SessionConfig,
    load_config,
    normalize_pin,
    parse_config,
)
from sessions.errors import ConfigError, LogonOptionsError
from sessions.logon import LogonOptions
from sessions.profiles import get_profile
from sessions.signature import generate_key_pair

KEY_A = "3f1c2a9e-0000-4000-8000-000000000001"
KEY_B = "3f1c2a9e-0000-4000-8000-000000000002"
PIN = "AB:12:" + "cd" * 30  # 64 hex digits once the colons are gone

MINIMAL = f"""
[session.orders]
endpoint = "KalshiNR"
environment = "demo"
key_id = "{KEY_A}"
private_key = "keys/orders.pem"
"""


def write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


def session(extra: str = "", endpoint: str = "KalshiNR", logon: str = "") -> str:
    text = f"""
[session.orders]
endpoint = "{endpoint}"
environment = "demo"
key_id = "{KEY_A}"
private_key = "keys/orders.pem"
{extra}
"""
    if logon:
        text += f"\n[session.orders.logon]\n{logon}\n"
    return text


# --- happy paths ----------------------------------------------------------------------------


def test_full_config_with_all_sections(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[supervisor]
log_level = "info"
restart_backoff = [1, 2, 5]

[session.orders]
endpoint = "KalshiNR"
environment = "production"
key_id = "{KEY_A}"
private_key = "keys/orders.pem"
heartbeat_interval = 15

[session.orders.logon]
cancel_orders_on_disconnect = true
use_dollars = true
skip_pending_exec_reports = true
enable_ioc_cancel_report = true

[session.rt]
endpoint = "KalshiRT"
environment = "demo"
host = "127.0.0.1"
port = 18230
tls = true
ca_file = "certs/gateway.pem"
pin_sha256 = "{PIN}"
key_id = "{KEY_B}"
private_key = "/abs/keys/rt.pem"
private_key_passphrase_env = "RT_KEY_PASSPHRASE"
heartbeat_interval = 30
reset_seq_num_on_logon = true
retransmission = true
store_dir = "state"
logout_timeout = 2.5
connect_timeout = 3

[session.rt.logon]
receive_settlement_reports = true
message_retention_period = 48
listener_session = true
skip_pending_exec_reports = true
cancel_orders_on_disconnect = false
use_dollars = true
preserve_original_order_qty = true
use_expired_ord_status = true
always_emit_new_before_trade = false
split_collateral_return = true
""")
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.path == path and config.base_dir == tmp_path
    assert list(config.sessions) == ["orders", "rt"]
    assert config.extra == {"supervisor": {"log_level": "info", "restart_backoff": [1, 2, 5]}}

    orders = config.sessions["orders"]
    assert orders.name == "orders"
    assert orders.profile is get_profile("KalshiNR")
    assert (orders.host, orders.port) == ("mm.fix.elections.kalshi.com", 8228)
    assert orders.environment == "production"
    assert orders.tls is True and orders.ca_file is None and orders.pin_sha256 is None
    assert orders.key_id == orders.sender_comp_id == KEY_A
    assert orders.target_comp_id == "KalshiNR"
    assert orders.private_key == tmp_path / "keys" / "orders.pem"
    assert orders.private_key_passphrase_env is None
    assert orders.heartbeat_interval == 15
    assert orders.reset_seq_num_on_logon is True and orders.retransmission is False
    assert orders.logon == LogonOptions(
        cancel_orders_on_disconnect=True, use_dollars=True,
        skip_pending_exec_reports=True, enable_ioc_cancel_report=True,
    )
    assert orders.store_dir == tmp_path / "var" / "fix-store"
    assert orders.logout_timeout == 5.0 and orders.connect_timeout == 10.0

    rt = config.sessions["rt"]
    assert (rt.host, rt.port) == ("127.0.0.1", 18230)
    assert rt.ca_file == tmp_path / "certs" / "gateway.pem"
    assert rt.pin_sha256 == "ab12" + "cd" * 30
    assert rt.private_key == Path("/abs/keys/rt.pem")
    assert rt.private_key_passphrase_env == "RT_KEY_PASSPHRASE"
    assert rt.reset_seq_num_on_logon is True and rt.retransmission is True
    assert rt.store_dir == tmp_path / "state"
    assert rt.logout_timeout == 2.5 and rt.connect_timeout == 3.0
    assert isinstance(rt.connect_timeout, float)
    assert rt.logon.message_retention_period == 48
    assert rt.logon.to_pairs()[:4] == [(8013, b"N"), (20126, b"Y"), (20127, b"Y"), (20200, b"48")]


def test_environment_sets_host_and_profile_port(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, session(endpoint="KalshiPT")))
    s = config.sessions["orders"]
    assert (s.host, s.port) == ("fix.demo.kalshi.co", 8231)


def test_host_override_keeps_profile_port(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, session('host = "10.0.0.5"', endpoint="KalshiDC")))
    s = config.sessions["orders"]
    assert (s.host, s.port) == ("10.0.0.5", 8229)


def test_host_and_port_without_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"""
[session.local]
endpoint = "KalshiRT"
host = "127.0.0.1"
port = 9000
tls = false
key_id = "{KEY_A}"
private_key = "k.pem"
"""))
    s = config.sessions["local"]
    assert (s.host, s.port, s.tls, s.environment) == ("127.0.0.1", 9000, False, None)
    assert s.reset_seq_num_on_logon is False and s.retransmission is True  # RT profile defaults


def test_tilde_in_paths_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(write(tmp_path, session().replace('"keys/orders.pem"', '"~/k.pem"')))
    assert config.sessions["orders"].private_key == tmp_path / "home" / "k.pem"


def test_parse_config_takes_a_parsed_document(tmp_path: Path) -> None:
    data = {"session": {"a": {"endpoint": "KalshiNR", "environment": "demo",
                              "key_id": KEY_A, "private_key": "a.pem"}}}
    config = parse_config(data, tmp_path / "x.toml")
    assert config.sessions["a"].private_key == tmp_path / "a.pem"


def test_pt_may_opt_into_continuity(tmp_path: Path) -> None:
    text = session("reset_seq_num_on_logon = false\nretransmission = true", endpoint="KalshiPT")
    s = load_config(write(tmp_path, text)).sessions["orders"]
    assert s.reset_seq_num_on_logon is False and s.retransmission is True


@pytest.mark.parametrize(
    ("endpoint", "extra", "durable"),
    [
        ("KalshiNR", "", False),  # every Logon resets: nothing to keep across connections
        ("KalshiDC", "", False),
        ("KalshiRT", "", True),  # continuity needs the numbers after a process restart
        ("KalshiNR", "durable_store = true", True),
        ("KalshiPT", "reset_seq_num_on_logon = false", True),
    ],
)
def test_durable_store_follows_sequence_continuity_unless_set(
    tmp_path: Path, endpoint: str, extra: str, durable: bool
) -> None:
    s = load_config(write(tmp_path, session(extra, endpoint=endpoint))).sessions["orders"]
    assert s.uses_durable_store is durable


def test_durable_store_off_is_refused_where_sequence_numbers_are_kept(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, session("durable_store = false", endpoint="KalshiRT"))
    assert str(path) in message and "durable_store" in message
    assert "reset_seq_num_on_logon = true" in message
    with pytest.raises(ConfigError, match="durable store"):
        SessionConfig(
            name="rt", profile=get_profile("KalshiRT"), host="h", port=1, key_id=KEY_A,
            private_key="k.pem", durable_store=False,
        )


def test_load_signer_reads_the_configured_key(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    generate_key_pair(tmp_path / "keys" / "orders.pem", tmp_path / "keys" / "orders.pub")
    s = load_config(write(tmp_path, MINIMAL)).sessions["orders"]
    signer = s.load_signer()
    assert signer.key_id == KEY_A


# --- error message shape --------------------------------------------------------------------


def test_error_names_file_table_key_and_problem(tmp_path: Path) -> None:
    path, msg = load_error(tmp_path, session("heartbeat_interval = 2"))
    assert msg.startswith(f"{path}: [session.orders] heartbeat_interval: must be an integer >= 4, got 2")


def test_heartbeat_too_large(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session("heartbeat_interval = 3600"))
    assert "[session.orders] heartbeat_interval: must be at most" in msg


def test_heartbeat_wrong_type(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session("heartbeat_interval = 30.5"))
    assert "heartbeat_interval: must be an integer, got a number" in msg


# --- unknown / missing keys -----------------------------------------------------------------


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session("heartbeat_intervall = 30"))
    assert "[session.orders] heartbeat_intervall: unknown key (did you mean heartbeat_interval?)" in msg


def test_unknown_key_value_is_not_echoed(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session('passphrase = "hunter2-secret"'))
    assert "[session.orders] passphrase: unknown key; allowed: endpoint, environment" in msg
    assert "hunter2" not in msg


def test_unknown_logon_key_with_did_you_mean(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(logon="use_dollar = true"))
    assert "[session.orders.logon] use_dollar: unknown key (did you mean use_dollars?)" in msg


@pytest.mark.parametrize("key", ["endpoint", "key_id", "private_key"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    lines = [line for line in session().splitlines() if not line.startswith(f"{key} =")]
    _, msg = load_error(tmp_path, "\n".join(lines))
    assert f"[session.orders] {key}: required key is missing" in msg


def test_missing_host_without_environment(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session().replace('environment = "demo"', ""))
    assert "[session.orders] host: required key is missing" in msg


def test_missing_port_without_environment(tmp_path: Path) -> None:
    text = session('host = "127.0.0.1"').replace('environment = "demo"', "")
    _, msg = load_error(tmp_path, text)
    assert "[session.orders] port: required key is missing" in msg and "8228" in msg


# --- wrong types and values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key", "expect"),
    [
        ('port = "8228"', "port", "must be an integer, got a string"),
        ('tls = "yes"', "tls", "must be true or false, got a string"),
        ("host = 12", "host", "must be a string, got an integer"),
        ("retransmission = 1", "retransmission", "must be true or false, got an integer"),
        ('logout_timeout = "5"', "logout_timeout", "must be a number of seconds, got a string"),
        ("connect_timeout = true", "connect_timeout", "must be a number of seconds, got a boolean"),
        ("store_dir = 5", "store_dir", "must be a path string, got an integer"),
        ("logon = 5", "logon", "must be a table"),
    ],
)
def test_wrong_types(tmp_path: Path, line: str, key: str, expect: str) -> None:
    _, msg = load_error(tmp_path, session(line))
    assert f"[session.orders] {key}: {expect}" in msg


def test_logon_value_wrong_type(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(logon='use_dollars = "Y"'))
    assert "[session.orders.logon] use_dollars: must be true or false, got a string" in msg


def test_logon_retention_wrong_type(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(endpoint="KalshiRT", logon="message_retention_period = 2.5"))
    assert "message_retention_period: must be a whole number of hours, got a number" in msg


def test_invalid_endpoint(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(endpoint="KalshiNRR"))
    assert "[session.orders] endpoint: unknown endpoint 'KalshiNRR' (did you mean KalshiNR?)" in msg
    assert "KalshiRFQ" in msg


def test_invalid_environment(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session().replace('"demo"', '"staging"'))
    assert "[session.orders] environment: unknown environment 'staging'; use one of: demo, production" in msg


@pytest.mark.parametrize("port", [0, 70000, -1])
def test_port_out_of_range(tmp_path: Path, port: int) -> None:
    _, msg = load_error(tmp_path, session(f"port = {port}"))
    assert "[session.orders] port: must be 1..65535" in msg


def test_host_with_spaces(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session('host = "my host"'))
    assert "[session.orders] host: must be a host name" in msg


@pytest.mark.parametrize("value", [0, -1.5])
def test_timeouts_must_be_positive(tmp_path: Path, value: float) -> None:
    _, msg = load_error(tmp_path, session(f"connect_timeout = {value}"))
    assert "[session.orders] connect_timeout: must be a positive number of seconds" in msg


def test_key_id_with_spaces(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session().replace(KEY_A, "my key"))
    assert "[session.orders] key_id: must be the API key id" in msg


# --- TLS and pin ----------------------------------------------------------------------------


def test_pin_is_normalised() -> None:
    assert normalize_pin("AB:CD:" + "EF" * 30) == "abcd" + "ef" * 30
    assert normalize_pin("0" * 64) == "0" * 64


def test_pin_wrong_length(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session('pin_sha256 = "ab:cd"'))
    assert "[session.orders] pin_sha256: must be the SHA-256" in msg and "64 hex digits" in msg


def test_pin_not_hex(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(f'pin_sha256 = "{"zz" * 32}"'))
    assert "[session.orders] pin_sha256:" in msg and "not hex" in msg


def test_pin_needs_tls(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(f'tls = false\npin_sha256 = "{PIN}"'))
    assert "[session.orders] pin_sha256: only meaningful with tls = true" in msg


def test_ca_file_needs_tls(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session('tls = false\nca_file = "ca.pem"'))
    assert "[session.orders] ca_file: only meaningful with tls = true" in msg


# --- Kalshi rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["KalshiNR", "KalshiDC", "KalshiRFQ"])
def test_reset_cannot_be_turned_off_where_mandatory(tmp_path: Path, endpoint: str) -> None:
    _, msg = load_error(tmp_path, session("reset_seq_num_on_logon = false", endpoint=endpoint))
    assert (
        f"[session.orders] reset_seq_num_on_logon: {endpoint} requires ResetSeqNumFlag (141=Y)"
        in msg
    )


@pytest.mark.parametrize("endpoint", ["KalshiNR", "KalshiDC"])
def test_retransmission_cannot_be_turned_on_where_unsupported(tmp_path: Path, endpoint: str) -> None:
    _, msg = load_error(tmp_path, session("retransmission = true", endpoint=endpoint))
    assert f"[session.orders] retransmission: {endpoint} does not support ResendRequest" in msg


def test_logon_combination_error_is_prefixed(tmp_path: Path) -> None:
    path = write(tmp_path, session(logon="listener_session = true"))
    with pytest.raises(LogonOptionsError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: [session.orders.logon] "
        "ListenerSession (20126=Y) requires SkipPendingExecReports (21011=Y)"
    )


def test_logon_option_not_allowed_on_endpoint(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(endpoint="KalshiDC", logon="listener_session = true\nskip_pending_exec_reports = true"))
    assert "[session.orders.logon] ListenerSession (20126) is only allowed on KalshiNR and KalshiRT" in msg


def test_logon_retention_range(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session(endpoint="KalshiRT", logon="message_retention_period = 96"))
    assert "MessageRetentionPeriod (20200) must be 1..72 hours" in msg


def test_same_key_id_in_two_sessions(tmp_path: Path) -> None:
    text = session() + f"""
[session.listener]
endpoint = "KalshiRT"
environment = "demo"
key_id = "{KEY_A}"
private_key = "keys/listener.pem"
"""
    _, msg = load_error(tmp_path, text)
    assert "[session.orders] and [session.listener] use the same key_id" in msg
    assert "one connection per API key" in msg


# --- secrets --------------------------------------------------------------------------------


def test_pem_pasted_into_private_key_is_not_echoed(tmp_path: Path) -> None:
    text = session().replace(
        'private_key = "keys/orders.pem"',
        'private_key = """-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"""',
    )
    _, msg = load_error(tmp_path, text)
    assert "[session.orders] private_key: must be the path of the PEM file" in msg
    assert "BEGIN" not in msg and "MIIEvQ" not in msg


def test_passphrase_pasted_into_env_name_is_not_echoed(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session('private_key_passphrase_env = "my secret pass!"'))
    assert "[session.orders] private_key_passphrase_env: must be the NAME" in msg
    assert "my secret pass" not in msg


# --- file-level problems --------------------------------------------------------------------


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path, msg = load_error(tmp_path, '[session.orders]\nendpoint = "KalshiNR\n')
    assert msg.startswith(f"{path}: invalid TOML:")
    assert "line" in msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cfg.toml"
    path.write_bytes(b'[session.a]\nendpoint = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_no_sessions(tmp_path: Path) -> None:
    path, msg = load_error(tmp_path, '[supervisor]\nlog_level = "info"\n')
    assert msg.startswith(f"{path}: no sessions")


def test_session_must_be_a_table(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'session = "orders"\n')
    assert "'session' must be a table" in msg


def test_session_entry_must_be_a_table(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, '[session]\norders = 1\n')
    assert "session.orders must be a table" in msg


def test_bad_session_name(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, session().replace("[session.orders]", '[session."my orders"]'))
    assert "[session.my orders]: session names may contain only" in msg


# --- SessionConfig built in code ------------------------------------------------------------


def make(**kw: object) -> SessionConfig:
    args: dict[str, object] = dict(
        name="s", profile=get_profile("KalshiNR"), host="127.0.0.1", port=8228,
        key_id=KEY_A, private_key="k.pem",
    )
    args.update(kw)
    return SessionConfig(**args)  # type: ignore[arg-type]


def test_session_config_defaults_follow_the_profile() -> None:
    nr = make()
    assert nr.reset_seq_num_on_logon is True and nr.retransmission is False
    rt = make(profile=get_profile("KalshiRT"))
    assert rt.reset_seq_num_on_logon is False and rt.retransmission is True
    assert nr.private_key == Path("k.pem") and nr.tls is True and nr.heartbeat_interval == 30


def test_session_config_refuses_reset_off_where_mandatory() -> None:
    with pytest.raises(ConfigError, match=r"KalshiNR requires ResetSeqNumFlag \(141=Y\)"):
        make(reset_seq_num_on_logon=False)


def test_session_config_refuses_retransmission_where_unsupported() -> None:
    with pytest.raises(ConfigError, match="KalshiDC does not support ResendRequest"):
        make(profile=get_profile("KalshiDC"), retransmission=True)


def test_session_config_validates_logon_options() -> None:
    with pytest.raises(LogonOptionsError, match="ReceiveSettlementReports"):
        make(logon=LogonOptions(receive_settlement_reports=True))


def test_session_config_validates_heartbeat_and_pin() -> None:
    with pytest.raises(ConfigError, match=">= 4"):
        make(heartbeat_interval=3)
    with pytest.raises(ConfigError, match="64 hex digits"):
        make(pin_sha256="abc")
    assert make(pin_sha256=PIN).pin_sha256 == "ab12" + "cd" * 30
