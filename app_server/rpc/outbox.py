"""The one writer: messages queued by every task, written in batches through a `ByteSink` (as lines)
or a `MessageSink` (one frame each)."""

from __future__ import annotations

import logging

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server.rpc.framing import ByteSink, MessageSink

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
                await self._write(batch)
                self.written += 1
        except anyio.BrokenResourceError:
            log.info("output closed by the client; discarding further output")
            self.abandon()
        finally:
            self.drained.set()

    async def _write(self, batch: list[bytes]) -> None:
        """`batch` alternates messages and b"\\n": written as one chunk of lines."""
        await self._sink.send(b"".join(batch))

    def abandon(self) -> None:
        """Give up on this client: queued and later messages are discarded, `broken` is set."""
        self.broken.set()
        self._recv.close()


class MessageOutbox(Outbox):
    """The same single writer for a message transport: each message leaves as its own frame."""

    def __init__(self, sink: MessageSink, *, capacity: int = 1024, batch_bytes: int = 1 << 20) -> None:
        super().__init__(_NoByteSink(), capacity=capacity, batch_bytes=batch_bytes)
        self._messages = sink

    async def _write(self, batch: list[bytes]) -> None:
        await self._messages.send_messages(batch[::2])


class _NoByteSink:
    async def send(self, data: bytes) -> None:
        raise AssertionError("a MessageOutbox writes messages, not bytes")
