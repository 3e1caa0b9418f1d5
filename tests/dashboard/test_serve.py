"""The real listener: server-sent events over uvicorn, the event hub, the token file, the loopback rule."""

from __future__ import annotations

import functools
import io
import json
import socket
from pathlib import Path

import anyio
import httpx
import pytest

from app_server.dashboard import DashboardError, serve_dashboard
from app_server.dashboard.events import EventHub
from app_server.dashboard.run import DashboardServer, read_or_create_token
from tests.support.dashboard import auth_secrets, next_event, pool, served

pytestmark = pytest.mark.anyio


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


async def test_resync_ends_every_stream_but_keeps_the_hub_open() -> None:
    hub = EventHub()
    first, second = hub.subscribe(), hub.subscribe()
    hub.publish("account", {"n": 1})
    hub.resync()  # the service link came back: every page must reconnect and re-read
    assert hub.subscriber_count == 0
    for stream in (first, second):
        assert (await stream.receive()).data == {"n": 1}
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
    again = hub.subscribe()
    hub.publish("account", {"n": 2})
    assert (await again.receive()).data == {"n": 2}


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


async def test_a_non_loopback_address_needs_a_token_file() -> None:
    with pytest.raises(DashboardError, match=r"not a loopback address.*--token-file"):
        await serve_dashboard(object(), "0.0.0.0", 0)  # type: ignore[arg-type]


class _FollowsTheLink(io.StringIO):
    """A terminal whose reader follows the sign-in link the instant it is written, before the server runs again."""

    def __init__(self) -> None:
        super().__init__()
        self.connected: list[str] = []

    def write(self, text: str) -> int:
        for word in text.split():
            if "/login?code=" in word:
                host, port = word.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)
                # A blocking connect: the event loop cannot accept it now, only the kernel's listen backlog can.
                with socket.create_connection((host, int(port)), timeout=5):
                    self.connected.append(word)
        return super().write(text)


async def test_the_sign_in_link_is_printed_only_once_the_listener_accepts_connections(tmp_path: Path) -> None:
    out = _FollowsTheLink()
    async with pool() as p, anyio.create_task_group() as tg:
        ready = anyio.Event()

        def on_ready(handle: DashboardServer) -> None:
            ready.set()
            handle.stop()

        tg.start_soon(
            functools.partial(
                serve_dashboard,
                p.harness.client,
                "127.0.0.1",
                0,
                None,
                on_ready=on_ready,
                stdout=out,
                stderr=io.StringIO(),
            )
        )
        with anyio.fail_after(30):
            await ready.wait()
    assert len(out.connected) == 1 and "Sign in" in out.getvalue()
