"""stdio as a transport: the process's file descriptors read and written in daemon threads.

Blocking reads and writes run in daemon threads so a stuck pipe can never hold the process open;
`claim_stdout` keeps the real stdout for protocol messages only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import stat
import sys
import threading
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server.rpc.framing import READ_CHUNK

log = logging.getLogger(__name__)


def claim_stdout() -> int:
    """Keep the real stdout for protocol messages only; anything printed goes to stderr instead."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


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

    The thread reads ahead of the consumer, up to `buffered_chunks` chunks (of at most `READ_CHUNK`
    bytes: 256 KiB by default), so that a client closing its end of a pipe is noticed while the
    server is still busy with what came before: `ended` is set as soon as the thread reads the end,
    before the chunks in between are consumed (the dispatcher starts its shutdown grace from there).
    A regular file is not a client going away: its end is only ever seen in order (`ended` stays unset).

    `close` when done reading: a chunk the thread is still trying to hand over is then refused
    at once instead of being left pending when the event loop shuts down.
    """

    def __init__(self, fd: int, *, buffered_chunks: int = 4) -> None:
        self._fd = fd
        try:
            self._early_end = not stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            self._early_end = True
        self._send: MemoryObjectSendStream[bytes]
        self._recv: MemoryObjectReceiveStream[bytes]
        self._send, self._recv = anyio.create_memory_object_stream[bytes](buffered_chunks)
        self._started = False
        self.ended = anyio.Event()
        """Set when the thread has read the end of a pipe, socket or tty (or failed to read it): no more
        chunks will come, maybe with some still to be received."""

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
            anyio.from_thread.run_sync(self._end, token=token)
        except _LOOP_GONE:
            return

    def _end(self) -> None:
        self._send.close()
        if self._early_end:
            self.ended.set()

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
