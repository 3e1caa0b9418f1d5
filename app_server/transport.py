"""stdio framing: bytes in, lines out; messages in, bytes out through one writer.

The transport knows nothing about JSON-RPC. It splits input on b"\\n" only, bounds a line's
length without buffering an over-long line whole, and owns the only path to stdout. Blocking
reads and writes run in daemon threads so a stuck pipe can never hold the process open.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
DEFAULT_MAX_LINE = 16 * 1024 * 1024
OVERLONG_PREFIX = 64 * 1024


class ByteSource(Protocol):
    async def receive(self) -> bytes:
        """The next chunk; raises `anyio.EndOfStream` at end of input."""
        ...


class ByteSink(Protocol):
    async def send(self, data: bytes) -> None:
        """Write all of `data`; raises `anyio.BrokenResourceError` when the reader is gone."""
        ...


@dataclass(frozen=True, slots=True)
class Overlong:
    """A line longer than the bound: only its first bytes were kept, the rest was skipped."""

    prefix: bytes
    size: int


class LineSplitter:
    """Incremental splitter: feed chunks, get complete lines (without the newline) or `Overlong`."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping: Overlong | None = None

    def feed(self, chunk: bytes) -> list[bytes | Overlong]:
        out: list[bytes | Overlong] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                self._keep(chunk[start:])
                return out
            piece = chunk[start:nl]
            start = nl + 1
            if self._skipping is not None:
                out.append(Overlong(self._skipping.prefix, self._skipping.size + len(piece)))
                self._skipping = None
            elif self._buf:
                self._buf += piece
                out.append(self._take())
            elif len(piece) > self.max_line:
                out.append(Overlong(bytes(piece[:OVERLONG_PREFIX]), len(piece)))
            else:
                out.append(bytes(piece))

    def finish(self) -> list[bytes | Overlong]:
        """At end of input: a last line without a newline still counts."""
        if self._skipping is not None:
            skipped, self._skipping = self._skipping, None
            return [skipped]
        if self._buf:
            return [self._take()]
        return []

    def _take(self) -> bytes | Overlong:
        data = bytes(self._buf)
        self._buf.clear()
        if len(data) > self.max_line:
            return Overlong(data[:OVERLONG_PREFIX], len(data))
        return data

    def _keep(self, rest: bytes) -> None:
        if not rest:
            return
        if self._skipping is not None:
            self._skipping = Overlong(self._skipping.prefix, self._skipping.size + len(rest))
            return
        self._buf += rest
        if len(self._buf) > self.max_line:
            self._skipping = Overlong(bytes(self._buf[:OVERLONG_PREFIX]), len(self._buf))
            self._buf.clear()


# What a daemon thread may see when it calls into an event loop that is going away: the receiver
# closed (Broken/Closed), the loop closed (RunFinished, or RuntimeError in the instant it closes),
# or a pending call cancelled by the loop's shutdown (CancelledError).
_LOOP_GONE = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.RunFinishedError,
    concurrent.futures.CancelledError,
    RuntimeError,
)


class FdSource:
    """Reads a file descriptor (stdin: pipe, tty or regular file) in a daemon thread.

    `close` when done reading: a chunk the thread is still trying to hand over is then refused
    at once instead of being left pending when the event loop shuts down.
    """

    def __init__(self, fd: int, *, buffered_chunks: int = 4) -> None:
        self._fd = fd
        self._send: MemoryObjectSendStream[bytes]
        self._recv: MemoryObjectReceiveStream[bytes]
        self._send, self._recv = anyio.create_memory_object_stream[bytes](buffered_chunks)
        self._started = False

    def _start(self) -> None:
        token = anyio.lowlevel.current_token()
        threading.Thread(target=self._run, args=(token,), name="stdin-reader", daemon=True).start()
        self._started = True

    def _run(self, token: anyio.lowlevel.EventLoopToken) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self._fd, READ_CHUNK)
                except OSError as exc:
                    log.warning("stdin read failed: %s", exc)
                    break
                if not chunk:
                    break
                anyio.from_thread.run(self._send.send, chunk, token=token)
            anyio.from_thread.run_sync(self._send.close, token=token)
        except _LOOP_GONE:
            return

    async def receive(self) -> bytes:
        if not self._started:
            self._start()
        return await self._recv.receive()

    def close(self) -> None:
        """Stop taking chunks; the thread ends at its next hand-over (or with the process)."""
        self._recv.close()


class FdSink:
    """Writes to a file descriptor (stdout) from one daemon thread; the caller awaits each write.

    The wait is not shielded: a caller cancelled at shutdown leaves instead of hanging on a client
    that stopped reading (the thread finishes or abandons that one write on its own).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._jobs: queue.SimpleQueue[tuple[bytes, Callable[[BaseException | None], None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            data, done = job
            error: BaseException | None = None
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError as exc:
                error = exc
            done(error)

    async def send(self, data: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stdout-writer", daemon=True)
            self._thread.start()
        token = anyio.lowlevel.current_token()
        finished = anyio.Event()
        outcome: list[BaseException | None] = []

        def done(error: BaseException | None) -> None:
            outcome.append(error)
            with contextlib.suppress(*_LOOP_GONE):
                anyio.from_thread.run_sync(finished.set, token=token)

        self._jobs.put((data, done))
        await finished.wait()
        if outcome and outcome[0] is not None:
            raise anyio.BrokenResourceError from outcome[0]


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
