"""Which alert sinks are configured: config.toml's `[[alerts.webhook]]` / `[[alerts.ntfy]]`, the environment,
secrets from private files, and clear refusals that never quote a secret or a URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_server.config import ConfigError, read_database_url
from app_server.pool.delivery.settings import read_alert_sinks
from protocol import ext

URL = "https://user:hunter2@hooks.example.com/services/pathtoken"


def write(data_home: Path, text: str) -> None:
    data_home.mkdir(exist_ok=True)
    (data_home / "config.toml").write_text(text)


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_no_config_means_no_sink(tmp_path: Path) -> None:
    assert read_alert_sinks(tmp_path, {}) == []
    write(tmp_path, 'database_url = "sqlite"\n')
    assert read_alert_sinks(tmp_path, {}) == []


def test_sinks_from_config_toml_with_a_secret_file(tmp_path: Path) -> None:
    secret = private(tmp_path / "hook.secret", "shared-secret\n")
    token = private(tmp_path / "ntfy.token", "tk_abc")
    write(
        tmp_path,
        f"""
[[alerts.webhook]]
name = "team chat"
url = "{URL}"
secret_file = "{secret}"
min_severity = "warning"
queue = 10
max_attempts = 3
timeout = 2.5

[[alerts.ntfy]]
url = "https://ntfy.sh/codex-alerts"
token_file = "{token}"
""",
    )
    hook, ntfy = read_alert_sinks(tmp_path, {})
    assert (hook.kind, hook.url, hook.secret, hook.min_severity) == (
        "webhook",
        URL,
        b"shared-secret",
        ext.AlertSeverity.WARNING,
    )
    assert (hook.queue, hook.max_attempts, hook.timeout, hook.label) == (10, 3, 2.5, "webhook 'team chat'")
    assert (ntfy.kind, ntfy.secret, ntfy.min_severity, ntfy.label) == (
        "ntfy",
        b"tk_abc",
        ext.AlertSeverity.INFO,
        "ntfy https://ntfy.sh",
    )
    assert read_database_url(tmp_path, {}) is None  # the store's reader accepts the [alerts] table beside it


def test_sinks_from_the_environment(tmp_path: Path) -> None:
    secret = private(tmp_path / "s", "from-file")
    env = {
        "CODEX_LIMITS_ALERT_WEBHOOK_URL": "http://127.0.0.1:9000/hook",
        "CODEX_LIMITS_ALERT_WEBHOOK_SECRET_FILE": str(secret),
        "CODEX_LIMITS_ALERT_NTFY_URL": "https://ntfy.example.com/topic",
        "CODEX_LIMITS_ALERT_MIN_SEVERITY": "critical",
    }
    hook, ntfy = read_alert_sinks(tmp_path, env)
    assert (hook.url, hook.secret, ntfy.url, ntfy.secret) == (
        "http://127.0.0.1:9000/hook",
        b"from-file",
        "https://ntfy.example.com/topic",
        None,
    )
    assert hook.min_severity is ntfy.min_severity is ext.AlertSeverity.CRITICAL
    inline = read_alert_sinks(
        tmp_path, {"CODEX_LIMITS_ALERT_WEBHOOK_URL": "https://h.example.com/", "CODEX_LIMITS_ALERT_WEBHOOK_SECRET": "x"}
    )
    assert inline[0].secret == b"x"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('alerts = "yes"', "[alerts] must be a table"),
        ("[alerts]\nslack = []", "unknown key alerts.slack"),
        ("[alerts]\nwebhook = 1", "alerts.webhook must be an array of tables"),
        (f'[[alerts.webhook]]\nurl = "{URL}"', "alerts.webhook[0]: a webhook needs secret_file (or secret)"),
        (f'[[alerts.webhook]]\nurl = "{URL}"\nsecret = "s"\nretries = 3', "unknown key 'retries'"),
        ('[[alerts.ntfy]]\nurl = "ftp://user:hunter2@ntfy.example.com/pathtoken"', "url must be an http(s) URL"),
        ('[[alerts.ntfy]]\nurl = "https://user:hunter2@x:99999/pathtoken"', "url is not a valid URL"),
        ('[[alerts.ntfy]]\nurl = "https://n.example.com/t"\nmin_severity = "loud"', "min_severity must be one of"),
        ('[[alerts.ntfy]]\nurl = "https://n.example.com/t"\nqueue = 0', "queue must be a whole number of at least 1"),
        ('[[alerts.ntfy]]\nurl = "https://n.example.com/t"\ntimeout = -1', "timeout must be a positive number"),
        (
            f'[[alerts.webhook]]\nurl = "{URL}"\nsecret = "hunter2"\nsecret_file = "/x"',
            "secret or secret_file, not both",
        ),
    ],
)
def test_a_config_that_cannot_be_used_is_refused_clearly(tmp_path: Path, toml: str, expected: str) -> None:
    write(tmp_path, toml)
    with pytest.raises(ConfigError) as refused:
        read_alert_sinks(tmp_path, {})
    assert expected in str(refused.value)
    for secret in ("hunter2", "pathtoken"):
        assert secret not in str(refused.value)


def test_a_secret_file_open_to_others_or_missing_is_refused(tmp_path: Path) -> None:
    shared = private(tmp_path / "hook.secret", "hunter2", mode=0o644)
    write(tmp_path, f'[[alerts.webhook]]\nurl = "{URL}"\nsecret_file = "{shared}"')
    with pytest.raises(ConfigError, match=r"open to other users \(mode 0644\); run: chmod 600"):
        read_alert_sinks(tmp_path, {})
    write(tmp_path, f'[[alerts.webhook]]\nurl = "{URL}"\nsecret_file = "{tmp_path / "absent"}"')
    with pytest.raises(ConfigError, match="cannot read secret_file"):
        read_alert_sinks(tmp_path, {})
    empty = private(tmp_path / "empty.secret", "\n")
    write(tmp_path, f'[[alerts.webhook]]\nurl = "{URL}"\nsecret_file = "{empty}"')
    with pytest.raises(ConfigError, match="is empty"):
        read_alert_sinks(tmp_path, {})
