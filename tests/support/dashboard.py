"""The dashboard over a real pool: the simulated upstream, an in-memory app-server session, the app."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
from starlette.applications import Starlette

from app_server.dashboard import DashboardServer, create_app, serve_dashboard
from app_server.dashboard.events import EventHub
from app_server.dashboard.security import Gate
from app_server.rpc.memory import Harness
from app_server.sandbox import simulated_world
from app_server.server import initialized
from app_server.sim.upstream import SimulatedUpstream
from app_server.world import World

TOKEN: Final = "test-admin-token-0123456789abcdef"
BASE: Final = "http://127.0.0.1:8000"
BEARER: Final = {"authorization": f"Bearer {TOKEN}"}


def consume_calls(upstream: SimulatedUpstream) -> int:
    return sum(
        1 for r in upstream.recorded_requests() if r.method == "POST" and r.path.endswith("reset-credits/consume")
    )


def auth_secrets(codex_homes: Path) -> list[str]:
    """Every token of every simulated account's auth.json: none may ever leave the dashboard."""
    found: list[str] = []
    for auth in codex_homes.glob("*/auth.json"):
        tokens = json.loads(auth.read_text())["tokens"]
        found += [tokens["id_token"], tokens["access_token"], tokens["refresh_token"]]
    return found


@dataclass
class Pool:
    upstream: SimulatedUpstream
    harness: Harness[World]
    homes: Path


@asynccontextmanager
async def pool() -> AsyncIterator[Pool]:
    """The simulated world (alice, bob, carol, dave) and an initialized in-memory JSON-RPC session."""
    with simulated_world(seed_history=False) as (upstream, settings):
        async with initialized(settings) as harness:
            yield Pool(upstream, harness, settings.codex_home.parent)


@dataclass
class Api:
    pool: Pool
    app: Starlette
    http: httpx.AsyncClient

    @property
    def gate(self) -> Gate:
        gate: Gate = self.app.state.dashboard.gate
        return gate

    @property
    def upstream(self) -> SimulatedUpstream:
        return self.pool.upstream

    async def sign_in(self) -> str:
        """Open a one-time login link; returns the session's CSRF token (the cookie is in `http`)."""
        response = await self.http.get("/login", params={"code": self.gate.issue_login_code()})
        assert response.status_code == 303, response.text
        session = await self.http.get("/api/session")
        assert session.status_code == 200, session.text
        csrf: str = session.json()["csrfToken"]
        return csrf


@asynccontextmanager
async def api(**options: Any) -> AsyncIterator[Api]:
    """The dashboard application over the simulated pool, called in-process (httpx over ASGI)."""
    async with pool() as p:
        app = create_app(p.harness.client, token=TOKEN, **options)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
                yield Api(p, app, http)


@asynccontextmanager
async def served(
    rpc: Any, *, token_file: Path, wait: float = 10.0, hub: EventHub | None = None
) -> AsyncIterator[DashboardServer]:
    """`serve_dashboard` on a free loopback port in this event loop, stopped on exit."""
    handle: DashboardServer | None = None
    ready = anyio.Event()

    def on_ready(h: DashboardServer) -> None:
        nonlocal handle
        handle = h
        ready.set()

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await serve_dashboard(
                rpc, "127.0.0.1", 0, token_file, on_ready=on_ready, hub=hub, stdout=io.StringIO(), stderr=io.StringIO()
            )

        tg.start_soon(run)
        with anyio.fail_after(wait):
            await ready.wait()
        assert handle is not None
        try:
            yield handle
        finally:
            handle.stop()


async def next_event(lines: AsyncIterator[str]) -> tuple[str, dict[str, Any]]:
    """The next server-sent event (name, data) from an `aiter_lines()` iterator; comments are skipped."""
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
