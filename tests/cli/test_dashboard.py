"""`codex-limits dashboard` and `codex-limits demo --dashboard` as real processes.

The dashboard on the service: it starts the service, serves the page, and an apply made from a
terminal (`codex-limits apply`, another client of the same service) reaches its event stream; Ctrl-C
stops the dashboard (exit 0) and leaves the service running. `demo --dashboard`: the simulated pool,
served until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from app_server.cli.main import main
from app_server.service.state import running
from tests.support.cli import base_env
from tests.support.dashboard import next_event
from tests.support.pool_world import GatedUpstream, World, make_world

pytestmark = pytest.mark.anyio

WAIT = 30.0
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "app_server.cli.main"]


@asynccontextmanager
async def dashboard(args: list[str], env: dict[str, str]) -> AsyncIterator[tuple[anyio.abc.Process, str, bytearray]]:
    """`codex-limits ARGS` started; yields it, the sign-in link it printed on stdout, and its stderr so far.

    Ctrl-C (SIGINT) on exit unless the test sent it already; the process is killed if it does not stop."""
    process = await anyio.open_process([*CLI, *args], env={**env, "PYTHONUNBUFFERED": "1"}, cwd=REPO)
    err = bytearray()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, process.stderr, err)
            assert process.stdout is not None
            out = ""
            with anyio.fail_after(WAIT):
                while "/login?code=" not in out or not out.endswith("\n"):
                    try:
                        out += (await process.stdout.receive()).decode()
                    except anyio.EndOfStream:
                        raise AssertionError(f"exited before printing a link: {err.decode()}") from None
            link = next(line for line in out.splitlines() if "/login?code=" in line).split(": ", 1)[1]
            yield process, link, err
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            with anyio.fail_after(WAIT):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


async def _drain(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
    assert stream is not None
    async for chunk in stream:
        into += chunk


async def sign_in(http: httpx.AsyncClient, link: str) -> str:
    """Open the one-time link (the session cookie stays in `http`); the session's CSRF token."""
    assert (await http.get("/api/accounts")).status_code == 401
    assert (await http.get(link)).status_code == 303
    assert (await http.get(link)).status_code == 403  # one-time
    csrf: str = (await http.get("/api/session")).json()["csrfToken"]
    return csrf


@pytest.mark.subprocess
async def test_demo_dashboard_serves_the_simulated_pool_until_ctrl_c(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    os.mkfifo(opened)  # read below: returns once the "browser" has written the link it was given
    browser = tmp_path / "browser.sh"  # what `webbrowser` runs for --open: $BROWSER with the link
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o700)
    env = {**base_env(tmp_path), "BROWSER": str(browser)}
    async with dashboard(["demo", "--dashboard", "--open"], env) as (process, link, err):
        base = link.split("/login", 1)[0]
        assert base.startswith("http://127.0.0.1:")
        with anyio.fail_after(WAIT):
            assert await anyio.to_thread.run_sync(opened.read_text, abandon_on_cancel=True) == link
        async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
            await sign_in(http, link)
            listed = await http.get("/api/accounts")
            assert [a["accountId"] for a in listed.json()["accounts"]] == ["alice", "bob", "carol", "dave"]
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(WAIT):
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert running(Path(env["CODEX_LIMITS_HOME"])) is None  # the simulated pool needs no service


def test_a_non_loopback_address_needs_a_token_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX_LIMITS_HOME", str(tmp_path / "data"))
    with pytest.raises(SystemExit) as exited:
        main(["dashboard", "--host", "0.0.0.0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "0.0.0.0 is not a loopback address" in err and "needs --token-file" in err
    assert not (tmp_path / "data").exists()  # refused before anything was started


# -- on the service ----------------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    upstream = GatedUpstream()
    with upstream:
        yield make_world(upstream, tmp_path)
        upstream.release()


def world_env(world: World) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_"))}
    env.update(
        CODEX_HOME=str(world.codex_home),
        CODEX_LIMITS_HOME=str(world.data_home),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=world.upstream.refresh_url,
    )
    return env


@pytest.mark.subprocess
async def test_the_dashboard_starts_the_service_and_shows_an_apply_made_in_a_terminal(world: World) -> None:
    env = world_env(world)
    assert running(world.data_home) is None
    try:
        async with dashboard(["dashboard"], env) as (process, link, err):
            state = running(world.data_home)
            assert state is not None  # started by the dashboard, detached from it
            base = link.split("/login", 1)[0]
            async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
                await sign_in(http, link)
                listed = (await http.get("/api/accounts")).json()["accounts"]
                alice = next(a for a in listed if a["accountId"] == "alice")
                before = alice["resetCredits"]["availableCount"]
                with anyio.fail_after(WAIT):
                    async with http.stream("GET", "/api/events") as events:
                        lines = events.aiter_lines()
                        assert await next_event(lines) == ("ready", {})
                        applied = await anyio.run_process(
                            [*CLI, "apply", "alice", "--yes"], env=env, cwd=REPO, check=False
                        )
                        assert applied.returncode == 0, applied.stderr.decode()
                        seen: dict[str, Any] = {}
                        while seen.get("availableCount") != before - 1 or "alert" not in seen:
                            name, data = await next_event(lines)
                            if name == "account" and data["accountId"] == "alice":
                                seen["availableCount"] = data["resetCredits"]["availableCount"]
                            elif name == "alert" and data["alert"]["accountId"] == "alice":
                                seen["alert"] = data["alert"]["kind"]
                assert seen["alert"] == "windowReset"
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(WAIT):
                await process.wait()
        assert process.returncode == 0, err.decode()
        assert "started the service" in err.decode()
        assert running(world.data_home) == state  # Ctrl-C stopped the dashboard, not the service
    finally:
        with anyio.CancelScope(shield=True), anyio.fail_after(WAIT):
            await anyio.run_process([*CLI, "service", "stop"], env=env, cwd=REPO, check=False)


@pytest.mark.subprocess
async def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with anyio.fail_after(WAIT):
            done = await anyio.run_process(
                [*CLI, "demo", "--dashboard", "--port", str(port)], env=base_env(tmp_path), cwd=REPO, check=False
            )
    assert done.returncode == 2
    assert done.stderr.decode().strip() == f"codex-limits: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert b"/login?code=" not in done.stdout


@pytest.mark.subprocess
async def test_a_service_on_another_codex_home_is_refused(world: World, tmp_path: Path) -> None:
    env = world_env(world)
    try:
        with anyio.fail_after(WAIT):
            started = await anyio.run_process([*CLI, "service", "start"], env=env, cwd=REPO, check=False)
            assert started.returncode == 0, started.stderr.decode()
            other = {**env, "CODEX_HOME": str(tmp_path / "another-codex-home")}
            done = await anyio.run_process([*CLI, "dashboard"], env=other, cwd=REPO, check=False)
        assert done.returncode == 5
        err = done.stderr.decode()
        assert f"acts on CODEX_HOME={world.codex_home}, not {tmp_path / 'another-codex-home'}" in err
        assert "codex-limits service stop" in err and done.stdout == b""
    finally:
        with anyio.CancelScope(shield=True), anyio.fail_after(WAIT):
            await anyio.run_process([*CLI, "service", "stop"], env=env, cwd=REPO, check=False)
