"""The dashboard on the service's Unix socket (`ServiceLink`), with the service's listeners in this event loop.

Another client of the same service applies a reset: the page's row and an alert notice follow without a
reload. The service restarts: the API answers 503 meanwhile and the page says it is reconnecting, the link
reconnects, the page re-reads the pool, and live updates go on, still without a reload. However a connection
attempt fails (refused, closed, reset, cut mid-handshake, never answered, a broken frame), the link goes on.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from playwright.async_api import Route, expect

from app_server.config import Settings
from app_server.dashboard import ServiceLink
from app_server.dashboard._rpc import ServerClosed
from app_server.dashboard.events import EventHub
from app_server.dashboard.link import LINK_STATE
from app_server.rpc import wsframe
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

                # The service stops: the API says so (503), and the page says it is reconnecting.
                await service.stop()
                await expect(page.locator("#connection")).to_have_text("Reconnecting to the service…")
                bearer = {"authorization": f"Bearer {token_file.read_text().strip()}"}
                async with httpx.AsyncClient(base_url=handle.url, headers=bearer) as http:
                    down = await http.get("/api/accounts", params={"maxAgeSeconds": 60})
                    assert down.status_code == 503 and down.json()["error"]["code"] == "serviceUnavailable"
                    assert "reconnecting to the codex-limits service" in down.json()["error"]["message"]

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


async def test_a_list_answer_older_than_an_update_does_not_overwrite_it(tmp_path: Path) -> None:
    """The page re-reads the pool on every (re)connection; an apply by another client lands while that read is
    on its way. The list answer, older than the update the page already shows, must not put the spent saved
    reset back on the page; nor must the answer of a refresh clicked on the page that was read before it."""
    hub = EventHub()
    with simulated_world(seed_history=False) as (upstream, settings), anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            service = Service(settings, tmp_path / "service.sock", tg)
            first = await service.start()
            async with (
                ServiceLink.open(service.locate, retry_first=0.05, retry_max=0.2) as link,
                served(link, token_file=tmp_path / "token", hub=hub) as handle,
                chromium() as browser,
            ):
                page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                page.set_default_timeout(15_000)
                expect.set_options(timeout=15_000)
                await page.goto(handle.login_url)
                alice = page.locator("#account-alice")
                await expect(alice.locator(".reset-count")).to_have_text("2 saved resets available")

                asked, release = anyio.Event(), anyio.Event()

                async def hold(route: Route) -> None:
                    answer = await route.fetch()  # read now: alice still has 2
                    asked.set()
                    await release.wait()
                    await route.fulfill(response=answer)

                await page.route("**/api/accounts?maxAgeSeconds=60", hold)
                hub.resync()  # the page's event stream ends; it reconnects and re-reads the pool
                await asked.wait()
                async with first.client("unix") as terminal:
                    await terminal.request(APPLY, {"accountId": "alice", "idempotencyKey": "while-listing"})
                await expect(alice.locator(".reset-count")).to_have_text("1 saved reset available")
                async with page.expect_request("**/api/history*"):  # the page asks once the list is shown
                    release.set()
                await expect(alice.locator(".reset-count")).to_have_text("1 saved reset available")

                # The same for a refresh clicked on the page: its answer was read before the apply landed.
                read, release_read = anyio.Event(), anyio.Event()

                async def hold_read(route: Route) -> None:
                    answer = await route.fetch()  # alice still has 1
                    read.set()
                    await release_read.wait()
                    await route.fulfill(response=answer)

                await page.route("**/api/accounts/alice/refresh", hold_read)
                await alice.locator(".refresh").click()
                await read.wait()
                upstream.accounts["alice"].primary.used_percent = 100  # used up: the apply spends her last one
                async with first.client("unix") as terminal:
                    await terminal.request(APPLY, {"accountId": "alice", "idempotencyKey": "while-refreshing"})
                await expect(alice.locator(".reset-count")).to_have_text("0 saved resets available")
                async with page.expect_response("**/api/accounts/alice/refresh"):
                    release_read.set()
                await expect(alice.locator(".refresh")).to_be_enabled()  # the refresh has finished on the page
                await expect(alice.locator(".reset-count")).to_have_text("0 saved resets available")
            await service.stop()


async def test_no_service_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerClosed, match=r"could not connect to the codex-limits service within 0.3 s"):
        async with ServiceLink.open(lambda: str(tmp_path / "nothing.sock"), timeout=0.3, retry_first=0.05):
            raise AssertionError("no first connection: the block never runs")


class Misbehaving:
    """A socket where the service should be, failing each connection in the next way of `ways`."""

    def __init__(self, path: Path, ways: list[str]) -> None:
        self.path = path
        self.ways = ways
        self.served: list[str] = []
        self.done = anyio.Event()

    async def serve(self, tg: anyio.abc.TaskGroup) -> None:
        listener = await anyio.create_unix_listener(self.path)
        tg.start_soon(listener.serve, self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        way = self.ways[len(self.served)]
        self.served.append(way)
        if len(self.served) == len(self.ways):
            self.done.set()
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            await self._misbehave(way, stream)

    async def _misbehave(self, way: str, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if way == "close":  # closed before a byte of the answer
                return
            if way == "reset":  # closed with the request unread: the client's read fails with ECONNRESET
                await stream.receive(1)
                return
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            if way == "silent":  # accepts, never answers (a stopped service)
                await anyio.sleep_forever()
            lines = head.split(b"\r\n")
            key = next(ln.split(b":", 1)[1].strip() for ln in lines if ln.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            if way == "cut":  # half an answer, then EOF
                await stream.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webso")
                return
            if way == "wrong-accept":
                accept = b"bm90IHRoZSByaWdodCBvbmU="
            await stream.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            if way == "garbage":  # upgraded, then a frame no server sends (reserved bits set)
                await stream.receive()
                await stream.send(b"\xf1\x05hello")
            elif way == "refuse-initialize":  # upgraded, then an error answer to initialize
                await stream.receive()
                message = b'{"error":{"code":-32600,"message":"Not today"},"id":1}'
                await stream.send(wsframe.encode_frame(wsframe.OP_TEXT, message, mask=False))
            await stream.receive()  # until the client gives up on this connection


async def test_the_link_outlives_every_way_a_connection_attempt_can_fail(tmp_path: Path) -> None:
    ways = ["close", "reset", "cut", "silent", "wrong-accept", "garbage", "refuse-initialize", "close", "reset"]
    fake = Misbehaving(tmp_path / "fake.sock", ways)
    refused = str(tmp_path / "nothing-listens.sock")
    attempts = 0
    with simulated_world(seed_history=False) as (_, settings), anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await fake.serve(tg)
            service = Service(settings, tmp_path / "service.sock", tg)
            await service.start()

            def locate() -> str:
                nonlocal attempts
                attempts += 1
                if attempts == 1:
                    return refused
                return str(fake.path) if not fake.done.is_set() else service.locate() or refused

            async with ServiceLink.open(
                locate, retry_first=0.01, retry_max=0.05, handshake_timeout=0.5, timeout=30
            ) as link:
                assert fake.served == ways  # every failure was met, and the link went on to the real service
                assert link.connected and link.connections == 1
                listed = await link.request("accountPool/list", {"maxAgeSeconds": 3600})
                assert {a["accountId"] for a in listed["accounts"]} >= {"alice", "bob"}
            await service.stop()
            tg.cancel_scope.cancel()


async def test_the_link_says_when_it_lost_the_service_and_when_it_is_back(tmp_path: Path) -> None:
    with simulated_world(seed_history=False) as (_, settings), anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            service = Service(settings, tmp_path / "service.sock", tg)
            await service.start()
            async with ServiceLink.open(service.locate, retry_first=0.01, retry_max=0.05) as link:
                states: list[bool] = []

                async def next_state() -> bool:
                    async for note in link.notifications:
                        if note["method"] == LINK_STATE:
                            states.append(note["params"]["connected"])
                            return bool(note["params"]["connected"])
                    raise AssertionError("the link's notifications ended")

                await service.stop()
                assert await next_state() is False
                with pytest.raises(ServerClosed, match="reconnecting to the codex-limits service"):
                    await link.request("accountPool/list", {})
                await service.start()
                assert await next_state() is True
                assert link.connections == 2
                await link.request("accountPool/history", {})
            await service.stop()
    assert states == [False, True]
