"""The in-memory connection to a dispatcher: exact output bytes, an input the test writes to, shared settings."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server.config import Settings
from app_server.handlers import routes as handler_routes
from app_server.rpc.dispatcher import Dispatcher, Route
from app_server.rpc.outbox import Outbox
from app_server.world import World
from tests.support import transcripts
from tests.support.mock_backend import MockBackend

WAIT = 10.0
READ = "account/rateLimits/read"
CONSUME = "account/rateLimitResetCredit/consume"
USAGE_ROUTE = "GET /api/codex/usage"
CONSUME_ROUTE = "POST /api/codex/rate-limit-reset-credits/consume"
INIT = {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "probe", "title": None, "version": "1.0"}}}


# -- the in-memory connection -------------------------------------------------------------------------------


class Output:
    """The server's stdout: every byte written, and a way to wait for more lines."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._grew = anyio.Event()

    async def send(self, data: bytes) -> None:
        self.data += data
        self._grew.set()
        self._grew = anyio.Event()

    def count(self) -> int:
        return self.data.count(b"\n")

    def lines(self) -> list[bytes]:
        return bytes(self.data).split(b"\n")[:-1]

    async def wait_lines(self, count: int) -> list[bytes]:
        with anyio.fail_after(WAIT):
            while self.count() < count:
                await self._grew.wait()
        return self.lines()

    async def wait_for(self, request_id: Any) -> bytes:
        """The first answer line whose id equals `request_id` with the same JSON type."""
        with anyio.fail_after(WAIT):
            while True:
                for line in self.lines():
                    if same_id(json.loads(line).get("id", Ellipsis), request_id):
                        return line
                await self._grew.wait()


def same_id(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class Input:
    """The server's stdin: chunks written by the test, `close` is end of input."""

    def __init__(self) -> None:
        self._send: MemoryObjectSendStream[bytes]
        self._recv: MemoryObjectReceiveStream[bytes]
        self._send, self._recv = anyio.create_memory_object_stream[bytes](math.inf)
        self.taken = 0

    async def receive(self) -> bytes:
        chunk = await self._recv.receive()
        self.taken += 1
        return chunk

    def write(self, data: bytes) -> None:
        self._send.send_nowait(data)

    def close(self) -> None:
        self._send.close()


def encode(message: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Conn:
    dispatcher: Dispatcher[World]
    input: Input
    output: Output
    finished: anyio.Event

    def send(self, *messages: bytes | str | Mapping[str, Any]) -> None:
        """Write the messages as lines, all in one chunk."""
        self.input.write(b"".join(encode(m) + b"\n" for m in messages))

    async def call(self, message: Mapping[str, Any]) -> bytes:
        self.send(message)
        return await self.output.wait_for(message["id"])

    async def initialize(self, **client: Any) -> bytes:
        params: dict[str, Any] = {"clientInfo": {"name": "probe", "title": None, "version": "1.0"}}
        params["clientInfo"].update(client.pop("client_info", {}))
        params.update(client)
        return await self.call({"id": "init", "method": "initialize", "params": params})

    async def finish(self) -> list[bytes]:
        """End of input; wait until the server has answered everything and returned."""
        self.input.close()
        with anyio.fail_after(WAIT):
            await self.finished.wait()
        return self.output.lines()


@asynccontextmanager
async def connect(
    services: World,
    *,
    routes: dict[str, Route[World]] | None = None,
    sink: Any = None,
    outbox_capacity: int = 1024,
    batch_bytes: int = 1 << 20,
    **options: Any,
) -> AsyncIterator[Conn]:
    output = Output()
    source = Input()
    outbox = Outbox(sink if sink is not None else output, capacity=outbox_capacity, batch_bytes=batch_bytes)
    options.setdefault("broadcaster", services.broadcaster)
    dispatcher = Dispatcher(handler_routes() if routes is None else routes, services, outbox, **options)
    conn = Conn(dispatcher, source, output, anyio.Event())

    async def run() -> None:
        try:
            await dispatcher.serve(source)
        finally:
            conn.finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            yield conn
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[World]:
    services = World(settings)
    try:
        yield services
    finally:
        await services.aclose()


@asynccontextmanager
async def server(settings: Settings, **options: Any) -> AsyncIterator[Conn]:
    async with open_services(settings) as services, connect(services, **options) as conn:
        yield conn


def make_settings(root: Path) -> Settings:
    home = root / "codex"
    home.mkdir(parents=True, exist_ok=True)
    # Nothing listens on port 9: a refresh could never reach the internet.
    return Settings(codex_home=home, data_home=root / "data", refresh_url="http://127.0.0.1:9/oauth/token")


def signed_in(settings: Settings, backend: MockBackend, *, delay: float = 0.0, first_only: bool = False) -> None:
    """A ChatGPT account in CODEX_HOME (transcript 61's setup) against `backend`, usage and consume delayed."""
    scenario = transcripts.load("61_stdin_eof_with_requests_in_flight")
    scenario.write_codex_home(settings.codex_home, backend.port)
    routes = scenario.backend_configs()[0].data["routes"]
    table: dict[str, Any] = {}
    for key in (USAGE_ROUTE, CONSUME_ROUTE):
        spec = {**routes[key], "delay": delay}
        table[key] = [spec, {**spec, "delay": 0}] if first_only else spec
    backend.set_routes(table)


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app_server.rpc.dispatcher" and r.levelno == logging.WARNING]


def parsed(lines: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


async def backend_requests(backend: MockBackend, n: int) -> None:
    """Wait (in a thread, bounded) until the mock has received `n` requests."""
    with anyio.fail_after(WAIT):
        await anyio.to_thread.run_sync(backend.wait_for_requests, n, WAIT)


def check_wire_line(line: bytes) -> dict[str, Any]:
    """Compact UTF-8 JSON, raw non-ASCII, no `jsonrpc`, and the member order of §1.2."""
    message: dict[str, Any] = json.loads(line.decode("utf-8"))
    assert json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() == line
    assert b"\r" not in line and b'"jsonrpc"' not in line
    if "error" in message:
        assert list(message) == ["error", "id"]
        assert list(message["error"])[:2] == ["code", "message"]
    elif "result" in message:
        assert list(message) == ["id", "result"]
    else:
        assert list(message) == ["method", "params", "emittedAtMs"]
    return message
