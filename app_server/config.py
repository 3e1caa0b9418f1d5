"""Where things are and how long calls may take: environment, `$CODEX_HOME/config.toml`, defaults.

Read once at startup. Nothing here performs network I/O.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://chatgpt.com/backend-api/"
DEFAULT_REFRESH_URL: Final = "https://auth.openai.com/oauth/token"
REFRESH_URL_ENV: Final = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"


@dataclass(frozen=True)
class Timeouts:
    """Per-call limits in seconds. Upstream: details 5 s, consume 10 s, usage none (defect D3);
    ours bounds usage at 30 s. The environment can shorten them for tests."""

    usage: float = 30.0
    details: float = 5.0
    consume: float = 10.0
    refresh: float = 30.0
    connect: float = 10.0

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
        return cls(**values)


REFRESH_FLOOR: Final = 15.0
"""Background refresh never runs an account more often than this, whatever was asked."""


@dataclass(frozen=True)
class LiveSettings:
    """Live updates in the long-running service. `refresh_interval` None: no background refresh (opt-in)."""

    refresh_interval: float | None = None
    alert_thresholds: tuple[int, ...] = (80, 90, 100)
    credit_expiry_days: float = 3.0
    usage_retention_days: float = 30.0

    def with_refresh_interval(self, seconds: float | None) -> LiveSettings:
        """`seconds` raised to the floor (with a warning); None or 0 turns background refresh off."""
        if not seconds:
            return replace(self, refresh_interval=None)
        if seconds < REFRESH_FLOOR:
            log.warning("refresh interval %g s is below the floor; using %g s", seconds, REFRESH_FLOOR)
            seconds = REFRESH_FLOOR
        return replace(self, refresh_interval=seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LiveSettings:
        live = cls()
        interval = _number(env, "CODEX_LIMITS_REFRESH_INTERVAL")
        if interval is not None:
            live = live.with_refresh_interval(interval)
        days = _number(env, "CODEX_LIMITS_CREDIT_EXPIRY_DAYS")
        if days is not None and days >= 0:
            live = replace(live, credit_expiry_days=days)
        retention = _number(env, "CODEX_LIMITS_USAGE_RETENTION_DAYS")
        if retention is not None and retention > 0:
            live = replace(live, usage_retention_days=retention)
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


def codex_home(env: Mapping[str, str]) -> Path:
    raw = env.get("CODEX_HOME")
    path = Path(raw).expanduser() if raw else Path.home() / ".codex"
    return path.absolute()


def data_home(env: Mapping[str, str]) -> Path:
    raw = env.get("CODEX_LIMITS_HOME")
    path = Path(raw).expanduser() if raw else Path.home() / ".codex-limits"
    return path.absolute()


def read_base_url(home: Path) -> str:
    """`chatgpt_base_url` from `<home>/config.toml`, or the ChatGPT default when absent or unreadable."""
    import tomllib

    path = home / "config.toml"
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return DEFAULT_BASE_URL
    except (OSError, tomllib.TOMLDecodeError) as exc:
        log.warning("could not read %s (%s); using the default backend", path, exc)
        return DEFAULT_BASE_URL
    value = data.get("chatgpt_base_url")
    return value if isinstance(value, str) and value else DEFAULT_BASE_URL


@dataclass(frozen=True)
class Settings:
    codex_home: Path
    data_home: Path
    refresh_url: str = DEFAULT_REFRESH_URL
    timeouts: Timeouts = field(default_factory=Timeouts)
    live: LiveSettings = field(default_factory=LiveSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            codex_home=codex_home(env),
            data_home=data_home(env),
            refresh_url=env.get(REFRESH_URL_ENV) or DEFAULT_REFRESH_URL,
            timeouts=Timeouts.from_env(env),
            live=LiveSettings.from_env(env),
        )
