"""The user agent's client suffix (CONTRACT §2.3), including upstream's exception for its own daemon client."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from app_server.config import Settings
from app_server.server import serve_in_memory
from app_server.upstream.useragent import DAEMON_CLIENT, user_agent
from app_server.world import World

ENV = {"TERM": "xterm"}


def test_the_daemon_client_gets_no_suffix() -> None:
    """Upstream 0.171.0 gives `codex_app_server_daemon` no ` (<name>; <version>)` suffix."""
    assert DAEMON_CLIENT == "codex_app_server_daemon"
    assert user_agent("codex_app_server_daemon", "0.171.0", env=ENV) == user_agent(env=ENV)


@pytest.mark.parametrize("name", ["codex_app_server_daemon2", "Codex_App_Server_Daemon", "codex_app_server"])
def test_other_names_keep_the_suffix(name: str) -> None:
    assert user_agent(name, "1.0", env=ENV) == user_agent(env=ENV) + f" ({name}; 1.0)"


@pytest.mark.anyio
async def test_initialize_as_the_daemon_answers_the_bare_user_agent(tmp_path: Path) -> None:
    settings = Settings(codex_home=tmp_path / "home", data_home=tmp_path / "data")
    async with serve_in_memory(World(settings)) as harness:
        with anyio.fail_after(5):
            result = await harness.initialize(name=DAEMON_CLIENT, version="0.171.0")
    assert result["userAgent"] == user_agent()
