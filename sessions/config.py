"""The TOML configuration: one ``[session.NAME]`` table per FIX session.

Every problem is a :class:`~sessions.errors.ConfigError` whose message starts with the file and
the table (``cfg.toml: [session.orders] heartbeat_interval: ...``) and says what is wrong. Unknown
keys are errors, so a typo never silently falls back to a default. Values that might be secrets
(paths, variable names, free text) are never quoted back in an error; only their type or a
description of the problem is.

Tables other than ``[session]`` belong to other parts of the program (``[supervisor]`` …): they
are kept, unparsed, in :attr:`Config.extra`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, Union

import attrs

from .errors import ConfigError, LogonOptionsError
from .logon import LogonOptions, validate_heartbeat_interval
from .profiles import HOSTS, EndpointProfile, get_profile
from .signature import LogonSigner

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

DEFAULT_HEARTBEAT_INTERVAL = 30
DEFAULT_LOGOUT_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Relative to the config file's directory.
DEFAULT_STORE_DIR = Path("var/fix-store")

_SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# SenderCompID goes into the header and the signed pre-hash: printable ASCII, no spaces.
_KEY_ID = re.compile(r"[\x21-\x7e]+\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")

_SESSION_KEYS = (
    "endpoint",
    "environment",
    "host",
    "port",
    "tls",
    "ca_file",
    "pin_sha256",
    "key_id",
    "private_key",
    "private_key_passphrase_env",
    "heartbeat_interval",
    "reset_seq_num_on_logon",
    "retransmission",
    "store_dir",
    "durable_store",
    "logout_timeout",
    "connect_timeout",
    "logon",
)
_REQUIRED_KEYS = ("endpoint", "key_id", "private_key")


def normalize_pin(value: str) -> str:
    """A certificate pin as 64 lowercase hex digits; accepts upper case and ``:`` separators.

    Raises :class:`ConfigError`.
    """
    if not isinstance(value, str):
        raise ConfigError(f"must be a string of 64 hex digits, got {type(value).__name__}")
    digits = value.strip().replace(":", "").lower()
    if not _HEX64.match(digits):
        raise ConfigError(
            "must be the SHA-256 of the server certificate (DER) as 64 hex digits, colons allowed"
            f" (got {len(digits)} characters after removing colons"
            + ("" if all(c in "0123456789abcdef" for c in digits) else ", some not hex")
            + ")"
        )
    return digits


def _optional_pin(value: str | None) -> str | None:
    return None if value is None else normalize_pin(value)


def _float(value: float | int) -> float:
    return float(value)


def check_session_rules(
    profile: EndpointProfile, *, reset_seq_num_on_logon: bool, retransmission: bool
) -> list[tuple[str, str]]:
    """The overrides ``profile`` does not allow, as ``(key, message)`` pairs (empty if fine)."""
    problems: list[tuple[str, str]] = []
    if profile.reset_mandatory and not reset_seq_num_on_logon:
        problems.append(
            (
                "reset_seq_num_on_logon",
                f"{profile.name} requires ResetSeqNumFlag (141=Y) on every Logon; "
                "it cannot be turned off",
            )
        )
    if retransmission and not profile.retransmission_possible:
        problems.append(
            (
                "retransmission",
                f"{profile.name} does not support ResendRequest/SequenceReset; "
                "retransmission cannot be turned on",
            )
        )
    return problems


@attrs.frozen
class SessionConfig:
    """Everything needed to run one FIX session, validated.

    ``reset_seq_num_on_logon`` and ``retransmission`` default to the profile's values. Building
    one that breaks a Kalshi rule (reset turned off where it is mandatory, retransmission on an
    endpoint without it, invalid Logon options or heartbeat) raises :class:`ConfigError`.
    """

    name: str
    profile: EndpointProfile
    host: str
    port: int
    key_id: str
    private_key: Path = attrs.field(converter=Path)
    tls: bool = True
    ca_file: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    #: SHA-256 of the server certificate (DER), 64 lowercase hex digits.
    pin_sha256: str | None = attrs.field(default=None, converter=_optional_pin)
    #: Name of the environment variable holding the private key's passphrase (not the passphrase).
    private_key_passphrase_env: str | None = None
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL
    reset_seq_num_on_logon: bool = attrs.field(
        default=attrs.Factory(lambda self: self.profile.reset_seq_num_on_logon, takes_self=True)
    )
    retransmission: bool = attrs.field(
        default=attrs.Factory(lambda self: self.profile.retransmission, takes_self=True)
    )
    logon: LogonOptions = attrs.field(factory=LogonOptions)
    store_dir: Path = attrs.field(default=DEFAULT_STORE_DIR, converter=Path)
    #: Keep sequence numbers and sent messages in an SQLite file in ``store_dir`` (``True``) or
    #: in memory (``False``); ``None`` decides by :attr:`keeps_sequence` (see
    #: :attr:`uses_durable_store`).
    durable_store: bool | None = None
    logout_timeout: float = attrs.field(default=DEFAULT_LOGOUT_TIMEOUT, converter=_float)
    connect_timeout: float = attrs.field(default=DEFAULT_CONNECT_TIMEOUT, converter=_float)
    #: ``"demo"`` / ``"production"`` when given in the config (informational once host is set).
    environment: str | None = None

    def __attrs_post_init__(self) -> None:
        validate_heartbeat_interval(self.heartbeat_interval)
        for _key, message in check_session_rules(
            self.profile,
            reset_seq_num_on_logon=self.reset_seq_num_on_logon,
            retransmission=self.retransmission,
        ):
            raise ConfigError(message)
        self.logon.validate(self.profile)
        if not self.tls and (self.ca_file is not None or self.pin_sha256 is not None):
            raise ConfigError("ca_file and pin_sha256 need tls = true")
        if self.durable_store is False and self.keeps_sequence:
            raise ConfigError(
                "durable_store = false needs reset_seq_num_on_logon = true: a session that keeps "
                "its sequence numbers across Logons must keep them in the durable store"
            )
        for what, value in (("logout_timeout", self.logout_timeout),
                            ("connect_timeout", self.connect_timeout)):
            if not value > 0:
                raise ConfigError(f"{what} must be a positive number of seconds")

    @property
    def keeps_sequence(self) -> bool:
        """Whether a Logon may continue the previous sequence numbers (ResetSeqNumFlag=N)."""
        return not self.reset_seq_num_on_logon

    @property
    def uses_durable_store(self) -> bool:
        """Whether the session's store is the SQLite file. By default only a session that keeps
        its sequence numbers across Logons (KalshiRT) needs one: where every Logon resets them
        (NR, DC, PT, RFQ by default), nothing stored outlives the connection, and a disk commit
        per message would only add latency."""
        return self.keeps_sequence if self.durable_store is None else self.durable_store

    @property
    def target_comp_id(self) -> str:
        """TargetCompID(56): the endpoint's name."""
        return self.profile.name

    @property
    def sender_comp_id(self) -> str:
        """SenderCompID(49): the API key id."""
        return self.key_id

    def load_signer(self, environ: Mapping[str, str] | None = None) -> LogonSigner:
        """Load this session's private key (raises :class:`~sessions.errors.KeyLoadError`)."""
        return LogonSigner.from_pem_file(
            self.private_key, self.key_id, self.private_key_passphrase_env, environ=environ
        )


@attrs.frozen
class Config:
    """A loaded configuration file."""

    path: Path
    #: The sessions by name, in file order.
    sessions: Mapping[str, SessionConfig]
    #: Top-level tables and keys this module does not own (e.g. ``supervisor``), as parsed.
    extra: Mapping[str, Any] = attrs.field(factory=lambda: MappingProxyType({}))

    @property
    def base_dir(self) -> Path:
        """The directory relative paths in the file are resolved against."""
        return self.path.parent


def load_config(path: PathLike) -> Config:
    """Read and validate a TOML config file. Raises :class:`ConfigError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message gives the position and the problem, not the surrounding text.
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, p)


def parse_config(data: Mapping[str, Any], path: PathLike) -> Config:
    """Validate an already parsed TOML document; ``path`` names the file in errors and anchors
    relative paths. Raises :class:`ConfigError`."""
    p = Path(path)
    extra = {k: v for k, v in data.items() if k != "session"}
    sessions_table = data.get("session")
    if sessions_table is None:
        raise ConfigError(f"{p}: no sessions: add at least one [session.NAME] table")
    if not isinstance(sessions_table, Mapping):
        raise ConfigError(f"{p}: 'session' must be a table of [session.NAME] tables")
    if not sessions_table:
        raise ConfigError(f"{p}: [session] is empty: add at least one [session.NAME] table")

    sessions: dict[str, SessionConfig] = {}
    key_owner: dict[str, str] = {}
    for name, table in sessions_table.items():
        where = f"{p}: [session.{name}]"
        if not _SESSION_NAME.match(name):
            raise ConfigError(
                f"{where}: session names may contain only letters, digits, '_', '-' and '.'"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(f"{p}: session.{name} must be a table ([session.{name}])")
        session = _parse_session(name, table, p, where)
        other = key_owner.get(session.key_id)
        if other is not None:
            raise ConfigError(
                f"{p}: [session.{other}] and [session.{name}] use the same key_id "
                f"{session.key_id}; Kalshi allows one connection per API key, "
                "so each session needs its own key"
            )
        key_owner[session.key_id] = name
        sessions[name] = session
    return Config(path=p, sessions=MappingProxyType(sessions), extra=MappingProxyType(extra))


class _Table:
    """Typed access to one TOML table, producing errors prefixed with the file and table."""

    def __init__(self, table: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        self.table = table
        self.where = where
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
                hint = f" (did you mean {close[0]}?)" if close else f"; allowed: {', '.join(allowed)}"
                raise ConfigError(f"{where} {key}: unknown key{hint}")

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where} {key}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, kind: str, check: Callable[[Any], bool], default: T) -> Any:
        if key not in self.table:
            return default
        value = self.table[key]
        if not check(value):
            raise self.error(key, f"must be {kind}, got {_type_name(value)}")
        return value

    def required(self, key: str) -> None:
        if key not in self.table:
            raise self.error(key, "required key is missing")


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _parse_session(name: str, table: Mapping[str, Any], path: Path, where: str) -> SessionConfig:
    t = _Table(table, where, _SESSION_KEYS)
    for key in _REQUIRED_KEYS:
        t.required(key)
    base = path.parent

    endpoint = t.get("endpoint", "a string such as \"KalshiNR\"", _is_str, None)
    try:
        profile = get_profile(endpoint)
    except ConfigError as exc:
        raise t.error("endpoint", str(exc)) from None

    environment = t.get("environment", "a string", _is_str, None)
    if environment is not None and environment not in HOSTS:
        raise t.error(
            "environment", f"unknown environment {environment!r}; use one of: {', '.join(HOSTS)}"
        )
    host = t.get("host", "a string", _is_str, None)
    if host is not None and (not host or any(c.isspace() for c in host)):
        raise t.error("host", "must be a host name or address without spaces")
    port = t.get("port", "an integer", _is_int, None)
    if port is not None and not 1 <= port <= 65535:
        raise t.error("port", f"must be 1..65535, got {port}")
    if host is None:
        if environment is None:
            raise t.error(
                "host", "required key is missing (or set environment = \"demo\" / \"production\")"
            )
        host = HOSTS[environment]
    if port is None:
        if environment is None:
            raise t.error(
                "port",
                f"required key is missing ({profile.name} listens on {profile.port} at Kalshi; "
                "or set environment)",
            )
        port = profile.port

    tls = t.get("tls", "true or false", _is_bool, True)
    ca_file = t.get("ca_file", "a path string", _is_str, None)
    pin = t.get("pin_sha256", "a string", _is_str, None)
    if pin is not None:
        try:
            pin = normalize_pin(pin)
        except ConfigError as exc:
            raise t.error("pin_sha256", str(exc)) from None
    if not tls:
        for key, value in (("ca_file", ca_file), ("pin_sha256", pin)):
            if value is not None:
                raise t.error(key, "only meaningful with tls = true (tls is false)")

    key_id = t.get("key_id", "a string", _is_str, None)
    if not _KEY_ID.match(key_id):
        raise t.error("key_id", "must be the API key id: printable ASCII without spaces")
    private_key = t.get("private_key", "a path string", _is_str, None)
    if "-----BEGIN" in private_key or "\n" in private_key:
        raise t.error(
            "private_key", "must be the path of the PEM file, not the key itself"
        )
    if not private_key.strip():
        raise t.error("private_key", "must be a path, got an empty string")
    passphrase_env = t.get("private_key_passphrase_env", "a string", _is_str, None)
    if passphrase_env is not None and not _ENV_NAME.match(passphrase_env):
        raise t.error(
            "private_key_passphrase_env",
            "must be the NAME of an environment variable holding the passphrase "
            "(letters, digits, '_'), not the passphrase itself",
        )

    heartbeat = t.get("heartbeat_interval", "an integer", _is_int, DEFAULT_HEARTBEAT_INTERVAL)
    try:
        validate_heartbeat_interval(heartbeat)
    except ConfigError as exc:
        raise t.error("heartbeat_interval", str(exc)) from None

    reset = t.get("reset_seq_num_on_logon", "true or false", _is_bool,
                  profile.reset_seq_num_on_logon)
    retransmission = t.get("retransmission", "true or false", _is_bool, profile.retransmission)
    for key, message in check_session_rules(
        profile, reset_seq_num_on_logon=reset, retransmission=retransmission
    ):
        raise t.error(key, message)

    store_dir = t.get("store_dir", "a path string", _is_str, None)
    durable_store = t.get("durable_store", "true or false", _is_bool, None)
    if durable_store is False and not reset:
        raise t.error(
            "durable_store",
            "false needs reset_seq_num_on_logon = true: a session that keeps its sequence "
            "numbers across Logons must keep them in the durable store",
        )
    timeouts: dict[str, float] = {}
    for key, default in (("logout_timeout", DEFAULT_LOGOUT_TIMEOUT),
                         ("connect_timeout", DEFAULT_CONNECT_TIMEOUT)):
        value = t.get(key, "a number of seconds", _is_number, default)
        if not value > 0:
            raise t.error(key, f"must be a positive number of seconds, got {value}")
        timeouts[key] = float(value)

    logon_table = t.get(
        "logon", "a table ([session.NAME.logon])", lambda v: isinstance(v, Mapping), {}
    )
    logon = _parse_logon(logon_table, path, name, profile)

    try:
        return SessionConfig(
            name=name,
            profile=profile,
            host=host,
            port=port,
            key_id=key_id,
            private_key=_resolve(base, private_key),
            tls=tls,
            ca_file=None if ca_file is None else _resolve(base, ca_file),
            pin_sha256=pin,
            private_key_passphrase_env=passphrase_env,
            heartbeat_interval=heartbeat,
            reset_seq_num_on_logon=reset,
            retransmission=retransmission,
            logon=logon,
            store_dir=base / DEFAULT_STORE_DIR if store_dir is None else _resolve(base, store_dir),
            durable_store=durable_store,
            logout_timeout=timeouts["logout_timeout"],
            connect_timeout=timeouts["connect_timeout"],
            environment=environment,
        )
    except ConfigError as exc:  # every rule was checked above; this is a safety net
        raise ConfigError(f"{where}: {exc}") from None


def _parse_logon(
    table: Mapping[str, Any], path: Path, name: str, profile: EndpointProfile
) -> LogonOptions:
    where = f"{path}: [session.{name}.logon]"
    t = _Table(table, where, LogonOptions.field_names())
    values: dict[str, Any] = {}
    for key in table:
        if key == "message_retention_period":
            values[key] = t.get(key, "a whole number of hours", _is_int, None)
        else:
            values[key] = t.get(key, "true or false", _is_bool, None)
    options = LogonOptions(**values)
    try:
        options.validate(profile)
    except LogonOptionsError as exc:
        raise LogonOptionsError(f"{where} {exc}") from None
    return options
