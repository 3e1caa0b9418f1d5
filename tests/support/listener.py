"""Listeners served in the test's own event loop over real sockets, and raw HTTP/WebSocket clients for them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from app_server.config import Settings
from app_server.handlers import routes
from app_server.rpc.client import Client
from app_server.rpc.listeners import Bound, parse_listen, serve_listeners
from app_server.rpc.websocket import Limits, TokenCheck
from app_server.rpc.wsclient import WebSocketStream, connect_tcp, connect_unix, running_client
from app_server.world import World

WAIT = 15.0
INIT_PARAMS: dict[str, Any] = {"clientInfo": {"name": "probe", "title": None, "version": "1.0"}}


@dataclass
class Listening:
    bound: list[Bound]
    services: World

    def ws(self) -> tuple[str, int]:
        url = next(b.url for b in self.bound if b.url.startswith("ws://"))
        host, _, port = url.removeprefix("ws://").rpartition(":")
        return host, int(port)

    def unix(self) -> Path:
        url = next(b.url for b in self.bound if b.url.startswith("unix://"))
        return Path(url.removeprefix("unix://"))

    async def connect(self, scheme: str, headers: dict[str, str] | None = None, path: str = "/") -> WebSocketStream:
        with anyio.fail_after(WAIT):
            if scheme == "unix":
                return await connect_unix(self.unix(), headers=headers)
            host, port = self.ws()
            return await connect_tcp(host, port, path=path, headers=headers)

    @asynccontextmanager
    async def client(self, scheme: str = "ws", *, initialize: bool = True, **init: Any) -> AsyncIterator[Client]:
        ws = await self.connect(scheme)
        async with running_client(ws) as client:
            if initialize:
                with anyio.fail_after(WAIT):
                    await client.request("initialize", {**INIT_PARAMS, **init})
            yield client


@asynccontextmanager
async def listening(
    settings: Settings,
    listen: list[str],
    *,
    token: TokenCheck | None = None,
    limits: Limits | None = None,
    services: World | None = None,
) -> AsyncIterator[Listening]:
    """Serve `listen` (e.g. `ws://127.0.0.1:0`, `unix://PATH`) until the block ends, then stop as on SIGTERM."""
    owned = services is None
    services = services or World(settings)
    listens = [parse_listen(text, default_unix=settings.data_home / "service.sock") for text in listen]
    stop = anyio.Event()
    ready: list[list[Bound]] = []
    up = anyio.Event()

    def on_ready(bound: list[Bound]) -> None:
        ready.append(bound)
        up.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve, listens, services, token, limits, on_ready, stop)
            with anyio.fail_after(WAIT):
                await up.wait()
            try:
                yield Listening(ready[0], services)
            finally:
                stop.set()
    finally:
        if owned:
            await services.aclose()


async def _serve(listens: Any, services: World, token: Any, limits: Any, on_ready: Any, stop: anyio.Event) -> None:
    await serve_listeners(
        listens,
        routes(),
        services,
        broadcaster=services.broadcaster,
        token=token,
        limits=limits,
        on_ready=on_ready,
        stop=stop,
    )


# -- raw HTTP ------------------------------------------------------------------------------------------------


@dataclass
class HttpAnswer:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


async def raw_http(stream: anyio.abc.ByteStream, request: bytes) -> HttpAnswer:
    """Send `request` as is and read one HTTP response (head and Content-Length body)."""
    await stream.send(request)
    data = b""
    with anyio.fail_after(WAIT):
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        want = int(headers.get("content-length", "0"))
        while len(body) < want:
            body += await stream.receive()
    _, status, reason = status_line.split(" ", 2)
    return HttpAnswer(int(status), reason, headers, body)


def get(path: str, headers: Mapping[str, str] | None = None, *, upgrade: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if upgrade:
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def message(line: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(line)
    return parsed
