"""The real listener: server-sent events over uvicorn, the token file, and the `dashboard` command."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from app_server.dashboard import DashboardError, serve_dashboard
from app_server.dashboard.events import EventHub
from app_server.dashboard.run import main, read_or_create_token
from tests.support.dashboard import auth_secrets, pool, served

pytestmark = pytest.mark.anyio


async def next_event(lines: Any) -> tuple[str, dict[str, Any]]:
    """The next SSE event (name, data) from an `aiter_lines()` iterator; comments are skipped."""
    name, data = "message", ""
    async for line in lines:
        if line == "":
            if data:
                return name, json.loads(data)
            continue
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]
    raise AssertionError("the event stream ended")


async def test_events_reach_every_subscriber(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    async with pool() as p, served(p.harness.client, token_file=token_file) as handle:
        token = token_file.read_text().strip()
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=handle.url, headers=headers, timeout=10) as http:
            with anyio.fail_after(30):
                async with (
                    http.stream("GET", "/api/events") as first,
                    http.stream("GET", "/api/events") as second,
                ):
                    assert first.status_code == 200
                    assert first.headers["content-type"].startswith("text/event-stream")
                    streams = [first.aiter_lines(), second.aiter_lines()]
                    for lines in streams:
                        assert await next_event(lines) == ("ready", {})
                    refreshed = await http.post("/api/accounts/alice/refresh")
                    assert refreshed.status_code == 200
                    secrets = auth_secrets(p.homes)
                    for lines in streams:
                        name, data = await next_event(lines)
                        assert name == "account" and data["accountId"] == "alice"
                        assert data["resetCredits"]["availableCount"] == 2
                        assert not any(s in json.dumps(data) for s in secrets)
                unauthenticated = await httpx.AsyncClient(base_url=handle.url).get("/api/events")
                assert unauthenticated.status_code == 401


async def test_a_slow_subscriber_is_dropped_not_waited_for() -> None:
    hub = EventHub(buffer=1)
    slow = hub.subscribe()
    hub.publish("account", {"n": 1})
    hub.publish("account", {"n": 2})  # the buffer is full: the subscriber is closed, the publisher goes on
    assert hub.subscriber_count == 0
    assert (await slow.receive()).data == {"n": 1}
    with pytest.raises(anyio.EndOfStream):
        await slow.receive()


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token, created = read_or_create_token(path)
    assert created and len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert read_or_create_token(path) == (token, False)
    path.chmod(0o644)
    with pytest.raises(DashboardError, match="chmod 600"):
        read_or_create_token(path)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(DashboardError, match="at least 16"):
        read_or_create_token(path)
    with pytest.raises(DashboardError, match="not a regular file"):
        read_or_create_token(tmp_path)


async def test_a_non_loopback_address_needs_a_token_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DashboardError, match=r"not a loopback address.*--token-file"):
        await serve_dashboard(object(), "0.0.0.0", 0)  # type: ignore[arg-type]
    assert main(["--host", "0.0.0.0"]) == 2
    assert "needs --token-file" in capsys.readouterr().err


@pytest.mark.subprocess
async def test_the_dashboard_command_serves_a_simulated_pool() -> None:
    """`python -m app_server.dashboard --simulate`: spawns the service, prints a one-time link, serves."""
    command = [sys.executable, "-m", "app_server.dashboard", "--simulate", "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    async with await anyio.open_process(command, env=env) as process:
        assert process.stderr is not None
        try:
            with anyio.fail_after(30):
                text = ""
                while "/login?code=" not in text or not text.endswith("\n"):
                    text += (await process.stderr.receive()).decode()
                link = text.split("): ", 1)[1].split()[0]
                base = link.split("/login", 1)[0]
                async with httpx.AsyncClient(base_url=base) as http:
                    assert (await http.get("/api/accounts")).status_code == 401
                    assert (await http.get(link)).status_code == 303
                    listed = await http.get("/api/accounts")
                    assert [a["accountId"] for a in listed.json()["accounts"]] == ["alice", "bob", "carol", "dave"]
                    assert (await http.get(link)).status_code == 403  # one-time
        finally:
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                await process.wait()
    assert process.returncode == 0
