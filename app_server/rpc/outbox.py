"""The one writer: messages queued by every task, written in batches through a `ByteSink`."""

from __future__ import annotations

import logging

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server.rpc.framing import ByteSink

log = logging.getLogger(__name__)


class Outbox:
    """The single writer: messages queue here (bounded) and one task writes them in batches.

    A full outbox makes `put` wait, which is how a slow reader slows the server down instead of
    growing its memory.
    """

    def __init__(self, sink: ByteSink, *, capacity: int = 1024, batch_bytes: int = 1 << 20) -> None:
        self._sink = sink
        self._batch_bytes = batch_bytes
        self._send: MemoryObjectSendStream[bytes]
        self._recv: MemoryObjectReceiveStream[bytes]
        self._send, self._recv = anyio.create_memory_object_stream[bytes](capacity)
        self.broken = anyio.Event()
        self.drained = anyio.Event()
        self.written = 0
        """Writes completed so far: tells a client that reads slowly from one that stopped reading."""

    def put_nowait(self, message: bytes) -> bool:
        """Queue without waiting; False when the outbox is full (then `put` waits for room)."""
        if self.broken.is_set():
            return True
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        return True

    async def put(self, message: bytes) -> None:
        # anyio's send always yields to the event loop; only wait when there is no room.
        if self.put_nowait(message):
            return
        try:
            await self._send.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return

    def close(self) -> None:
        """No more messages: the pump writes what is queued, then returns."""
        self._send.close()

    async def pump(self) -> None:
        try:
            async for first in self._recv:
                batch = [first, b"\n"]
                size = len(first)
                while size < self._batch_bytes:
                    try:
                        message = self._recv.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    batch += (message, b"\n")
                    size += len(message)
                await self._sink.send(b"".join(batch))
                self.written += 1
        except anyio.BrokenResourceError:
            log.info("stdout closed by the client; discarding further output")
            self.broken.set()
            self._recv.close()
        finally:
            self.drained.set()
