"""The dashboard on the service's Unix socket (`ServiceLink`), with the service's listeners in this event loop.

Another client of the same service applies a reset: the page's row and an alert notice follow without a
reload. The service restarts: the API answers 503 meanwhile, the link reconnects, the page re-reads the
pool, and live updates go on, still without a reload.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from playwright.async_api import expect

from app_server.config import Settings
from app_server.dashboard import ServiceLink
from app_server.dashboard._rpc import ServerClosed
from app_server.dashboard.events import EventHub
from app_server.sandbox import simulated_world
from tests.support.browser import chromium
from tests.support.dashboard import served
from tests.support.listener import Listening, listening

pytestmark = pytest.mark.anyio

APPLY = "accountPool/resetCredit/apply"


class Service:
    """The service's listeners on one socket path, in a task: started, stopped, started again."""

    def __init__(self, settings: Settings, sock: Path, tg: anyio.abc.TaskGroup) -> None:
        self.settings, self.sock, self.tg = settings, sock, tg
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self.findable = True
        """False hides a running service from the link (as if it had not published its state yet)."""

    async def start(self) -> Listening:
        self._stop, self._stopped = anyio.Event(), anyio.Event()
        up: list[Listening] = []
        ready = anyio.Event()

        async def run() -> None:
            try:
                async with listening(self.settings, [f"unix://{self.sock}"]) as served_:
                    up.append(served_)
                    ready.set()
                    await self._stop.wait()
            finally:
                self._stopped.set()

        self.tg.start_soon(run)
        await ready.wait()
        return up[0]

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    def locate(self) -> str | None:
        """As `service.state.running` says of a real service: its socket while it runs."""
        return str(self.sock) if self.findable and not self._stopped.is_set() and self.sock.exists() else None


async def test_the_page_follows_other_clients_and_survives_a_service_restart(tmp_path: Path) -> None:
    hub = EventHub()
    reconnected = anyio.Event()

    def on_reconnect() -> None:
        hub.resync()
        reconnected.set()

    token_file = tmp_path / "token"
    with simulated_world(seed_history=False) as (upstream, settings), anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            service = Service(settings, tmp_path / "service.sock", tg)
            first = await service.start()
            async with (
                ServiceLink.open(service.locate, on_reconnect=on_reconnect, retry_first=0.05, retry_max=0.2) as link,
                served(link, token_file=token_file, hub=hub) as handle,
                chromium() as browser,
            ):
                page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.set_default_timeout(15_000)
                expect.set_options(timeout=15_000)
                await page.goto(handle.login_url)
                alice = page.locator("#account-alice")
                await expect(page.locator("#connection")).to_have_text("Live")
                await expect(alice.locator(".reset-count")).to_have_text("2 saved resets available")
                await expect(alice.locator(".readiness")).to_have_text("Ready: a window is used up.")
                await page.evaluate("window.__notReloaded = true")

                # Another client of the same service (`codex-limits apply alice` in a terminal, say).
                async with first.client("unix") as terminal:
                    await terminal.request(APPLY, {"accountId": "alice", "idempotencyKey": "from-a-terminal"})
                await expect(alice.locator(".reset-count")).to_have_text("1 saved reset available")
                await expect(alice.locator(".readiness")).to_have_text("Available — nothing is used up yet.")
                await expect(page.locator("#alerts .alert").filter(has_text="alice:")).not_to_have_count(0)
                await expect(page.locator("#history tbody tr")).to_have_count(1)
                # An apply that changes nothing (nothing is used up: nothingToReset) still reaches the history.
                async with first.client("unix") as terminal:
                    quiet = await terminal.request(APPLY, {"accountId": "alice", "idempotencyKey": "nothing-to-do"})
                assert quiet["outcome"] == "nothingToReset"
                await expect(page.locator("#history tbody tr")).to_have_count(2)
                await expect(page.locator("#history tbody tr").first).to_contain_text("Nothing to reset")
                await expect(alice.locator(".reset-count")).to_have_text("1 saved reset available")

                # The service stops: the API says so (503), and the page stops saying it is live.
                await service.stop()
                bearer = {"authorization": f"Bearer {token_file.read_text().strip()}"}
                async with httpx.AsyncClient(base_url=handle.url, headers=bearer) as http:
                    down = await http.get("/api/accounts", params={"maxAgeSeconds": 60})
                    assert down.status_code == 503 and down.json()["error"]["code"] == "serviceUnavailable"

                    # It starts again, and a terminal uses it before the dashboard is back: nothing of that
                    # reaches the page as a notification, so it must re-read the pool when the link is back.
                    service.findable = False
                    second = await service.start()
                    upstream.accounts["alice"].primary.used_percent = 100  # she used up her 5 hours again
                    async with second.client("unix") as terminal:
                        await terminal.request("accountPool/refresh", {"accountId": "alice"})
                    assert link.connections == 1
                    service.findable = True
                    with anyio.fail_after(15):
                        await reconnected.wait()
                    assert link.connections == 2
                    assert (await http.get("/api/accounts", params={"maxAgeSeconds": 60})).status_code == 200
                await expect(page.locator("#connection")).to_have_text("Live")
                await expect(alice.locator(".readiness")).to_have_text("Ready: a window is used up.")
                async with second.client("unix") as terminal:
                    await terminal.request(APPLY, {"accountId": "alice", "idempotencyKey": "after-the-restart"})
                await expect(alice.locator(".reset-count")).to_have_text("0 saved resets available")
                await expect(page.locator("#history tbody tr")).to_have_count(3)
                assert await page.evaluate("window.__notReloaded === true")
                assert errors == []
            await service.stop()


async def test_no_service_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerClosed, match=r"could not connect to the codex-limits service within 0.3 s"):
        async with ServiceLink.open(lambda: str(tmp_path / "nothing.sock"), timeout=0.3, retry_first=0.05):
            raise AssertionError("no first connection: the block never runs")
