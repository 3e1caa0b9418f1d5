"""Where things are and how long calls may take: environment, `$CODEX_HOME/config.toml`, defaults.

Read once at startup (config.toml: when its account is first used). Nothing here performs network I/O.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from app_server import env as environment
from app_server.env import LOG_ENV
from app_server.errors import CodexLimitsError
from app_server.files import FileRefused, read_regular

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://chatgpt.com/backend-api/"
DEFAULT_REFRESH_URL: Final = "https://auth.openai.com/oauth/token"
REFRESH_URL_ENV: Final = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"
MAX_BODY_ENV: Final = "CODEX_LIMITS_MAX_BODY_BYTES"
REFRESH_INTERVAL_ENV: Final = "CODEX_LIMITS_REFRESH_INTERVAL"
DEFAULT_MAX_BODY_BYTES: Final = 4 << 20
"""Usage, details and consume answers are a few KiB; 4 MiB (decoded) leaves room and bounds memory."""
UPSTREAM_CONNECTIONS_ENV: Final = "CODEX_LIMITS_UPSTREAM_CONNECTIONS"
DEFAULT_UPSTREAM_CONNECTIONS: Final = 32
"""Connections the HTTP client keeps to upstream; the calls in flight stay a few below (see `HttpPool`)."""


def upstream_connections(env: Mapping[str, str]) -> int:
    """`CODEX_LIMITS_UPSTREAM_CONNECTIONS`: the HTTP client's connection limit (at least 2)."""
    raw = env.get(UPSTREAM_CONNECTIONS_ENV)
    if not raw:
        return DEFAULT_UPSTREAM_CONNECTIONS
    try:
        value = int(raw)
        if value < 2:
            raise ValueError
    except ValueError:
        log.warning("ignoring %s=%r: not an integer of at least 2", UPSTREAM_CONNECTIONS_ENV, raw)
        return DEFAULT_UPSTREAM_CONNECTIONS
    return value


@dataclass(frozen=True)
class Timeouts:
    """Per-call limits. Seconds: upstream's details 5 s and consume 10 s, usage none (defect D3); ours
    bounds usage at 30 s. Each deadline covers the whole exchange, the response body included.
    `max_body_bytes` caps a response body after decoding. The environment can change them (tests shorten)."""

    usage: float = 30.0
    details: float = 5.0
    consume: float = 10.0
    refresh: float = 30.0
    connect: float = 10.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Timeouts:
        values: dict[str, float] = {}
        for name in ("usage", "details", "consume", "refresh"):
            raw = env.get(f"CODEX_LIMITS_{name.upper()}_TIMEOUT")
            if raw:
                try:
                    values[name] = float(raw)
                except ValueError:
                    log.warning("ignoring CODEX_LIMITS_%s_TIMEOUT=%r: not a number", name.upper(), raw)
        max_body = DEFAULT_MAX_BODY_BYTES
        if raw := env.get(MAX_BODY_ENV):
            try:
                max_body = int(raw)
                if max_body < 1:
                    raise ValueError
            except ValueError:
                log.warning("ignoring %s=%r: not a positive integer", MAX_BODY_ENV, raw)
                max_body = DEFAULT_MAX_BODY_BYTES
        return cls(**values, max_body_bytes=max_body)


REFRESH_FLOOR: Final = 15.0
"""Background refresh never runs an account more often than this, whatever was asked."""


@dataclass(frozen=True)
class LiveSettings:
    """Live updates in the long-running service. `refresh_interval` None: no background refresh (opt-in)."""

    refresh_interval: float | None = None
    alert_thresholds: tuple[int, ...] = (80, 90, 100)
    credit_expiry_days: float = 3.0
    usage_retention_days: float = 30.0
    runout_lead_minutes: float = 60.0  # alert when a window runs out before it resets within this; 0: off

    def with_refresh_interval(self, seconds: float | None) -> LiveSettings:
        """`seconds` raised to the floor (with a warning); None or 0 turns background refresh off."""
        if not seconds:
            return replace(self, refresh_interval=None)
        if seconds < REFRESH_FLOOR:
            log.warning("refresh interval %g s is below the floor; using %g s", seconds, REFRESH_FLOOR)
            seconds = REFRESH_FLOOR
        return replace(self, refresh_interval=seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LiveSettings:
        env = environment.current() if env is None else env
        live = cls()
        interval = _number(env, REFRESH_INTERVAL_ENV)
        if interval is not None:
            live = live.with_refresh_interval(interval)
        days = _number(env, "CODEX_LIMITS_CREDIT_EXPIRY_DAYS")
        if days is not None and days >= 0:
            live = replace(live, credit_expiry_days=days)
        retention = _number(env, "CODEX_LIMITS_USAGE_RETENTION_DAYS")
        if retention is not None and retention > 0:
            live = replace(live, usage_retention_days=retention)
        if (lead := _number(env, "CODEX_LIMITS_RUNOUT_LEAD_MINUTES")) is not None and lead >= 0:
            live = replace(live, runout_lead_minutes=lead)
        raw = env.get("CODEX_LIMITS_ALERT_THRESHOLDS")
        if raw:
            try:
                thresholds = tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))
            except ValueError:
                log.warning("ignoring CODEX_LIMITS_ALERT_THRESHOLDS=%r: not whole numbers separated by commas", raw)
            else:
                if all(1 <= t <= 100 for t in thresholds):
                    live = replace(live, alert_thresholds=thresholds)
                else:
                    log.warning("ignoring CODEX_LIMITS_ALERT_THRESHOLDS=%r: each must be 1-100", raw)
        return live


def _number(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return None


def codex_home(env: Mapping[str, str] | None = None) -> Path:
    """`$CODEX_HOME` or `~/.codex`, absolute."""
    return Path(environment.codex_home(env))


def data_home(env: Mapping[str, str] | None = None) -> Path:
    """`$CODEX_LIMITS_HOME` or `~/.codex-limits`, absolute: our data directory."""
    return Path(environment.data_home(env))


@dataclass(frozen=True)
class BaseUrl:
    """The backend base URL of one Codex home, or why `config.toml` gives none we may use.

    A refused value is never replaced by the default: calls fail with `problem` (which never quotes the
    value, so a password inside it stays out of answers and logs)."""

    url: str
    problem: str | None = None


# DNS labels (plus `_`, which container networks use) or an IPv4 address; IPv6 goes through ipaddress.
_HOST_NAME: Final = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)


def base_url_problem(value: str) -> str | None:
    """Why `value` is not a usable `chatgpt_base_url`, or None. The reason never repeats the value."""
    import ipaddress
    from urllib.parse import urlsplit

    if not value:
        return "it is empty"
    if any(ch < " " or ch == "\x7f" for ch in value):
        return "it contains a control character"
    if any(ch.isspace() for ch in value):
        return "it contains whitespace"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "it is not a valid URL (bad port or brackets)"
    if parts.scheme.lower() not in ("http", "https"):
        return "the scheme must be http or https"
    if "@" in parts.netloc:
        return "it must not carry credentials (user:password@)"
    host = parts.hostname or ""
    if not host:
        return "it has no host"
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "it has an invalid host"
    else:
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return "it has an invalid host"
        if not _HOST_NAME.fullmatch(ascii_host):
            return "it has an invalid host"
    if port == 0:
        return "it has an invalid port"
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        return "it must not have a query or fragment"
    return None


def read_base_url(home: Path) -> BaseUrl:
    """`chatgpt_base_url` from `<home>/config.toml`; the ChatGPT default when the file or the key is absent.

    A config.toml that is not a regular file, too large, unreadable or not TOML, and a value that is not an
    http(s) URL with a plain host, are refused with the reason (logged once here, answered on every call)."""
    import tomllib

    path = home / "config.toml"
    problem: str | None
    try:
        data = tomllib.loads(read_regular(path).decode("utf-8"))
    except FileNotFoundError:
        return BaseUrl(DEFAULT_BASE_URL)
    except OSError as exc:
        reason = exc.reason if isinstance(exc, FileRefused) else exc.strerror or type(exc).__name__
        problem = f"cannot use {path}: {reason}"
    except UnicodeDecodeError:
        problem = f"cannot use {path}: it is not UTF-8"
    except tomllib.TOMLDecodeError as exc:
        problem = f"cannot use {path}: invalid TOML ({exc})"
    else:
        value = data.get("chatgpt_base_url")
        if value is None:
            return BaseUrl(DEFAULT_BASE_URL)
        why = base_url_problem(value) if isinstance(value, str) else "it must be a string"
        if why is None:
            return BaseUrl(value)
        problem = f"invalid chatgpt_base_url in {path}: {why}"
    log.warning("%s", problem)
    return BaseUrl(DEFAULT_BASE_URL, problem)


LOG_MAX_BYTES_ENV: Final = "CODEX_LIMITS_LOG_MAX_BYTES"
DEFAULT_LOG_MAX_BYTES: Final = 10 << 20
"""The service's log rotates at this size (one old generation kept: at most twice this on disk)."""


def log_max_bytes(env: Mapping[str, str]) -> int:
    """`CODEX_LIMITS_LOG_MAX_BYTES` (at least 4096), else 10 MiB."""
    raw = env.get(LOG_MAX_BYTES_ENV)
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value >= 4096:
            return value
        log.warning("ignoring %s=%r: not a whole number of at least 4096", LOG_MAX_BYTES_ENV, raw)
    return DEFAULT_LOG_MAX_BYTES


DATABASE_URL_ENV: Final = "CODEX_LIMITS_DATABASE_URL"
DATA_CONFIG_NAME: Final = "config.toml"
"""Our own configuration file in the data directory (`database_url = "postgresql://…"`)."""


class ConfigError(CodexLimitsError):
    """Our configuration cannot be used; the message names the file or variable, never a password."""


def log_level(env: Mapping[str, str] | None = None, given: str | None = None) -> str:
    """The stderr log level: `given` (a --log-level flag), else `CODEX_LIMITS_LOG`, else WARNING."""
    env = environment.current() if env is None else env
    return (given or env.get(LOG_ENV) or "WARNING").upper()


def read_data_config(path: Path) -> dict[str, Any]:
    """The data directory's `config.toml` parsed (empty when there is none); `ConfigError` naming the file when
    it cannot be read or parsed."""
    try:
        raw = read_regular(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot use {path}: {exc.strerror or exc}") from None
    import tomllib

    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot use {path}: {exc}") from None


def read_database_url(data_home: Path, env: Mapping[str, str]) -> str | None:
    """The shared store's URL: `CODEX_LIMITS_DATABASE_URL`, else `database_url` in `<data home>/config.toml`,
    else None (the embedded SQLite store). Read when the store is first needed, not at start-up."""
    value = env.get(DATABASE_URL_ENV)
    if value:
        return _with_driver(value, DATABASE_URL_ENV)
    path = data_home / DATA_CONFIG_NAME
    data = read_data_config(path)
    unknown = sorted(set(data) - {"database_url", "alerts"})  # [alerts]: app_server.pool.delivery.settings (#23)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: database_url, alerts)")
    url = data.get("database_url")
    if url is None:
        return None
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{path}: database_url must be a non-empty string")
    return _with_driver(url, f"database_url in {path}")


POSTGRES_EXTRA: Final = "pip install 'codex-limits[postgres]'"


def _with_driver(url: str, where: str) -> str:
    """`url`, once it is known that a PostgreSQL URL can be used: the driver is an optional extra."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None or importlib.util.find_spec("psycopg_pool") is None:
            raise ConfigError(
                f"{where} names a PostgreSQL database, but its driver (psycopg) is not installed: {POSTGRES_EXTRA}"
            )
    return url


@dataclass(frozen=True)
class Settings:
    """Everything a World is built from, read once: the Codex home, the data directory, the refresh URL,
    the timeouts, the live-update settings and the environment it was read from."""

    codex_home: Path
    data_home: Path
    refresh_url: str = DEFAULT_REFRESH_URL
    timeouts: Timeouts = field(default_factory=Timeouts)
    live: LiveSettings = field(default_factory=LiveSettings)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The environment the settings were read from (for what is read later, on first use)."""

    def database_url(self) -> str | None:
        return read_database_url(self.data_home, self.env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = environment.current() if env is None else env
        return cls(
            codex_home=codex_home(env),
            data_home=data_home(env),
            refresh_url=env.get(REFRESH_URL_ENV) or DEFAULT_REFRESH_URL,
            timeouts=Timeouts.from_env(env),
            live=LiveSettings.from_env(env),
            env=dict(env),
        )
