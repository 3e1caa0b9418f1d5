"""Client and dispatcher in one event loop over memory streams: the default way to test a server.

`app_server.server.serve_in_memory` wires the real routes and services onto it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server.rpc.client import Client
from app_server.rpc.dispatcher import Dispatcher, Route, S
from app_server.rpc.outbox import Outbox


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
class Harness(Generic[S]):
    """A client wired to a dispatcher in this event loop, and what the dispatcher wrote."""

    client: Client
    dispatcher: Dispatcher[S]
    services: S
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
async def connect_in_memory(
    routes: dict[str, Route[S]], services: S, **dispatcher_options: Any
) -> AsyncIterator[Harness[S]]:
    """A dispatcher serving `routes` with a `Client` wired to it; both stop when the block ends."""
    to_server, from_server = MemoryPipe(), MemoryPipe()
    dispatcher = Dispatcher(routes, services, Outbox(from_server), **dispatcher_options)
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
