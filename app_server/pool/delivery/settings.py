"""Which alert sinks are configured: `[[alerts.webhook]]` / `[[alerts.ntfy]]` in the data directory's
config.toml, plus one of each from the environment.

Read once by the service at start-up. A secret (the webhook's HMAC key, an ntfy access token) is given
inline or, better, as a file that must be private to its owner (`app_server.files.read_private`). Nothing
here performs network I/O, and no error text quotes a secret or a URL (a webhook URL often is one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from app_server.config import DATA_CONFIG_NAME, ConfigError, read_data_config
from app_server.files import FileRefused, read_private
from protocol import ext

WEBHOOK_URL_ENV: Final = "CODEX_LIMITS_ALERT_WEBHOOK_URL"
WEBHOOK_SECRET_ENV: Final = "CODEX_LIMITS_ALERT_WEBHOOK_SECRET"
WEBHOOK_SECRET_FILE_ENV: Final = "CODEX_LIMITS_ALERT_WEBHOOK_SECRET_FILE"
NTFY_URL_ENV: Final = "CODEX_LIMITS_ALERT_NTFY_URL"
NTFY_TOKEN_FILE_ENV: Final = "CODEX_LIMITS_ALERT_NTFY_TOKEN_FILE"
MIN_SEVERITY_ENV: Final = "CODEX_LIMITS_ALERT_MIN_SEVERITY"

DEFAULT_QUEUE: Final = 256
DEFAULT_MAX_ATTEMPTS: Final = 8
DEFAULT_TIMEOUT: Final = 10.0

SinkKind = Literal["webhook", "ntfy"]

_SEVERITY_RANK: Final = {ext.AlertSeverity.INFO: 0, ext.AlertSeverity.WARNING: 1, ext.AlertSeverity.CRITICAL: 2}
_KEYS: Final = {
    "webhook": {"url", "secret", "secret_file", "min_severity", "queue", "max_attempts", "timeout", "name"},
    "ntfy": {"url", "token_file", "min_severity", "queue", "max_attempts", "timeout", "name"},
}


def severity_rank(severity: ext.AlertSeverity) -> int:
    return _SEVERITY_RANK[severity]


@dataclass(frozen=True)
class SinkSettings:
    """One configured sink. `secret`: the webhook's HMAC key or ntfy's access token (never in repr)."""

    kind: SinkKind
    url: str = field(repr=False)
    secret: bytes | None = field(default=None, repr=False)
    min_severity: ext.AlertSeverity = ext.AlertSeverity.INFO
    queue: int = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    name: str | None = None

    @property
    def label(self) -> str:
        """How logs name the sink: its `name`, or kind and host (never the path, query or password)."""
        if self.name:
            return f"{self.kind} {self.name!r}"
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{self.kind} {parts.scheme}://{host}{port}"

    def wants(self, alert: ext.AccountPoolAlert) -> bool:
        return severity_rank(alert.severity) >= severity_rank(self.min_severity)


def read_alert_sinks(data_home: Path, env: Mapping[str, str]) -> list[SinkSettings]:
    """Every configured sink: config.toml's first, then the environment's. Raises ConfigError, naming the
    file or variable and the key (never a value), when one cannot be used."""
    sinks = _from_file(data_home / DATA_CONFIG_NAME)
    sinks.extend(_from_env(env))
    return sinks


def _from_env(env: Mapping[str, str]) -> list[SinkSettings]:
    sinks: list[SinkSettings] = []
    severity = env.get(MIN_SEVERITY_ENV) or "info"
    if url := env.get(WEBHOOK_URL_ENV):
        entry: dict[str, Any] = {"url": url, "min_severity": severity}
        if secret := env.get(WEBHOOK_SECRET_ENV):
            entry["secret"] = secret
        if path := env.get(WEBHOOK_SECRET_FILE_ENV):
            entry["secret_file"] = path
        sinks.append(_sink("webhook", entry, WEBHOOK_URL_ENV))
    if url := env.get(NTFY_URL_ENV):
        entry = {"url": url, "min_severity": severity}
        if path := env.get(NTFY_TOKEN_FILE_ENV):
            entry["token_file"] = path
        sinks.append(_sink("ntfy", entry, NTFY_URL_ENV))
    return sinks


def _from_file(path: Path) -> list[SinkSettings]:
    data = read_data_config(path)
    alerts = data.get("alerts")
    if alerts is None:
        return []
    if not isinstance(alerts, dict):
        raise ConfigError(f"{path}: [alerts] must be a table")
    unknown = sorted(set(alerts) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key alerts.{unknown[0]} (known: webhook, ntfy)")
    sinks: list[SinkSettings] = []
    for kind in ("webhook", "ntfy"):
        entries = alerts.get(kind, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"{path}: alerts.{kind} must be an array of tables ([[alerts.{kind}]])")
        for index, entry in enumerate(entries):
            sinks.append(_sink(kind, entry, f"{path}: alerts.{kind}[{index}]"))
    return sinks


def _sink(kind: SinkKind, entry: Mapping[str, Any], where: str) -> SinkSettings:
    unknown = sorted(set(entry) - _KEYS[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS[kind]))})")
    url = entry.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: url must be a non-empty string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{where}: url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: url must be an http(s) URL with a host")
    secret = _secret(kind, entry, where)
    if kind == "webhook" and secret is None:
        raise ConfigError(f"{where}: a webhook needs secret_file (or secret) to sign its alerts")
    raw_severity = entry.get("min_severity", "info")
    try:
        severity = ext.AlertSeverity(raw_severity)
    except ValueError:
        raise ConfigError(f"{where}: min_severity must be one of info, warning, critical") from None
    queue = _int(entry, "queue", DEFAULT_QUEUE, where)
    attempts = _int(entry, "max_attempts", DEFAULT_MAX_ATTEMPTS, where)
    timeout = entry.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: timeout must be a positive number of seconds")
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{where}: name must be a string")
    return SinkSettings(kind, url, secret, severity, queue, attempts, float(timeout), name)


def _secret(kind: SinkKind, entry: Mapping[str, Any], where: str) -> bytes | None:
    key = "secret_file" if kind == "webhook" else "token_file"
    inline = entry.get("secret")
    path = entry.get(key)
    if inline is not None and path is not None:
        raise ConfigError(f"{where}: give secret or {key}, not both")
    if inline is not None:
        if not isinstance(inline, str) or not inline:
            raise ConfigError(f"{where}: secret must be a non-empty string")
        return inline.encode("utf-8")
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: {key} must be a path")
    file = Path(path).expanduser()
    try:
        value = read_private(file).strip()
    except FileRefused as exc:
        raise ConfigError(f"{where}: cannot use {key} {file}: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {key} {file}: {exc.strerror or exc}") from None
    if not value:
        raise ConfigError(f"{where}: {key} {file} is empty")
    return value


def _int(entry: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {key} must be a whole number of at least 1")
    return value
