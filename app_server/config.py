"""Where things are and how long calls may take: environment, `$CODEX_HOME/config.toml`, defaults.

Read once at startup. Nothing here performs network I/O.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            codex_home=codex_home(env),
            data_home=data_home(env),
            refresh_url=env.get(REFRESH_URL_ENV) or DEFAULT_REFRESH_URL,
            timeouts=Timeouts.from_env(env),
        )
