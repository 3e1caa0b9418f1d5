"""Client and server in one event loop over memory streams: the default way to test the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server.config import Settings
from app_server.handlers import routes
from app_server.rpc.client import Client
from app_server.rpc.dispatcher import Dispatcher
from app_server.rpc.outbox import Outbox
from app_server.services import Services


class MemoryPipe:
    """A byte pipe: `send` on one end, `receive` on the other; `close` is end of input."""

    def __init__(self, capacity: float = 64) -> None:
        self._send: MemoryObjectSendStream[bytes]
        self._recv: MemoryObjectReceiveStream[bytes]
        self._send, self._recv = anyio.create_memory_object_stream[bytes](capacity)
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        await self._send.send(data)

    async def receive(self) -> bytes:
        return await self._recv.receive()

    def close(self) -> None:
        self._send.close()


@dataclass
class Harness:
    client: Client
    dispatcher: Dispatcher
    services: Services
    to_server: MemoryPipe
    from_server: MemoryPipe
    finished: anyio.Event = field(default_factory=anyio.Event)

    def output(self) -> bytes:
        return b"".join(self.from_server.sent)

    def lines(self) -> list[bytes]:
        return self.output().splitlines()

    def close_input(self) -> None:
        self.to_server.close()

    async def initialize(self, **kwargs: Any) -> dict[str, Any]:
        return await self.client.initialize(**kwargs)


@asynccontextmanager
async def serve_in_memory(services: Services, **dispatcher_options: Any) -> AsyncIterator[Harness]:
    to_server, from_server = MemoryPipe(), MemoryPipe()
    dispatcher = Dispatcher(routes(), services, Outbox(from_server), **dispatcher_options)
    harness = Harness(Client(to_server, from_server), dispatcher, services, to_server, from_server)

    async def run_server() -> None:
        try:
            await dispatcher.serve(to_server)
        finally:
            from_server.close()
            harness.finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_server)
        tg.start_soon(harness.client.run)
        try:
            yield harness
        finally:
            tg.cancel_scope.cancel()
    await services.aclose()


@asynccontextmanager
async def initialized(settings: Settings, *, wait: float = 5.0) -> AsyncIterator[Harness]:
    """A server for `settings` whose client has already initialized as `probe` 1.0 (as the transcripts do)."""
    async with serve_in_memory(Services(settings)) as harness:
        with anyio.fail_after(wait):
            await harness.initialize(name="probe", version="1.0")
        yield harness
