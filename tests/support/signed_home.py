"""A Codex home signed in to a backend on 127.0.0.1, with short deadlines: what the upstream tests start from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from app_server.config import Settings, Timeouts

AUTH: Final = {
    "auth_mode": "chatgpt",
    "OPENAI_API_KEY": None,
    "tokens": {"id_token": None, "access_token": "chatgpt-token", "refresh_token": "refresh", "account_id": "acc-1"},
    "last_refresh": "2099-01-01T00:00:00Z",
}
DETAILS: Final = {
    "available_count": 2,
    "credits": [
        {"id": "c1", "reset_type": "codex_rate_limits", "status": "available", "granted_at": "2026-06-12T00:00:00Z"}
    ],
}
TIMEOUTS: Final = Timeouts(usage=1.0, details=0.5, consume=1.0, refresh=1.0, connect=1.0)
READ: Final = "account/rateLimits/read"
CONSUME: Final = "account/rateLimitResetCredit/consume"
USAGE_ROUTE: Final = "GET /api/codex/usage"
DETAILS_ROUTE: Final = "GET /api/codex/rate-limit-reset-credits"
CONSUME_ROUTE: Final = "POST /api/codex/rate-limit-reset-credits/consume"


def write_home(home: Path, config: str) -> None:
    """`home` with `config` as its config.toml and a usable ChatGPT auth.json."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config, encoding="utf-8")
    (home / "auth.json").write_text(json.dumps(AUTH), encoding="utf-8")


def settings_for(tmp_path: Path, base_url: str, timeouts: Timeouts = TIMEOUTS) -> Settings:
    """Settings whose `$CODEX_HOME` is signed in and points at `base_url`."""
    home = tmp_path / "home"
    write_home(home, f'chatgpt_base_url = "{base_url}"\n')
    return Settings(
        codex_home=home, data_home=tmp_path / "data", refresh_url=f"{base_url}/oauth/token", timeouts=timeouts
    )
