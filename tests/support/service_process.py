"""The service and its clients as real processes: `codex-limits service start|stop`, the CLI, the proxy,
a client on the service's socket, and a child's stderr read to the end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from app_server.config import Settings
from app_server.rpc.client import Client
from app_server.rpc.wsclient import connect_unix, running_client
from app_server.service.state import State, running
from tests.support.pool_world import World

WAIT = 30.0
REPO = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-m", "app_server"]
CLI = [sys.executable, "-m", "app_server.cli.main"]
PROXY = [sys.executable, "-m", "app_server.proxy"]
INIT_PARAMS: dict[str, Any] = {"clientInfo": {"name": "probe", "title": None, "version": "1.0"}}
APPLY = "accountPool/resetCredit/apply"


def env_for(codex_home: Path, data: Path, refresh_url: str = "http://127.0.0.1:9/oauth/token") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_"))}
    env.update(
        CODEX_HOME=str(codex_home),
        CODEX_LIMITS_HOME=str(data),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=refresh_url,
        CODEX_LIMITS_LOG="INFO",
    )
    return env


def settings_env(settings: Settings) -> dict[str, str]:
    return env_for(settings.codex_home, settings.data_home)


def world_env(world: World) -> dict[str, str]:
    return env_for(world.codex_home, world.data_home, world.upstream.refresh_url)


async def cli(
    args: list[str], env: dict[str, str], command: list[str] = CLI, *, timeout: float = WAIT
) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(timeout):
        return await anyio.run_process([*command, *args], env=env, cwd=REPO, check=False)


async def start_service(env: dict[str, str], *extra: str) -> State:
    started = await cli(["service", "start", *extra], env)
    assert started.returncode == 0, started.stderr.decode()
    state = running(Path(env["CODEX_LIMITS_HOME"]))
    assert state is not None
    return state


@asynccontextmanager
async def service(env: dict[str, str], *extra: str) -> AsyncIterator[State]:
    """`codex-limits service start`; stopped (or found dead) at the end."""
    state = await start_service(env, *extra)
    try:
        yield state
    finally:
        await cli(["service", "stop"], env)


async def wait_until(done: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `done` (state in another process or thread: there is no event to wait on) until it holds."""
    with anyio.fail_after(timeout):
        while not done():  # noqa: ASYNC110 (the state lives in another process or thread)
            await anyio.sleep(0.02)


async def gone(data_home: Path) -> None:
    """Until no service holds the data directory's lock (the kernel releases it when the process dies)."""
    await wait_until(lambda: running(data_home) is None)


@asynccontextmanager
async def on_socket(path: str) -> AsyncIterator[Client]:
    ws = await connect_unix(path)
    async with running_client(ws) as client:
        with anyio.fail_after(WAIT):
            await client.request("initialize", INIT_PARAMS)
        yield client


class Stderr:
    """A child's stderr (or stdout), read to the end in a task (a pipe nobody reads would block the child)."""

    def __init__(self) -> None:
        self.data = b""
        self._grew = anyio.Event()

    async def drain(self, stream: anyio.abc.ByteReceiveStream | None) -> None:
        assert stream is not None
        async for chunk in stream:
            self.data += chunk
            self._grew.set()
            self._grew = anyio.Event()

    async def grown(self) -> None:
        """Until more data arrives."""
        await self._grew.wait()

    async def wait_for(self, text: bytes, timeout: float = WAIT) -> None:
        with anyio.fail_after(timeout):
            while text not in self.data:
                await self._grew.wait()

    async def banner(self) -> str:
        await self.wait_for(b"healthz:")
        return self.data.decode()

    def lines(self) -> list[str]:
        return self.data.decode("utf-8", "replace").splitlines()


@asynccontextmanager
async def killed_at_exit(process: anyio.abc.Process) -> AsyncIterator[None]:
    """A failing test must not wait forever for a child that still runs."""
    try:
        yield
    finally:
        if process.returncode is None:
            process.kill()
