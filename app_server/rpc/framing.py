"""Line framing: bytes in, lines out, with a bound on a line that never buffers an over-long line whole.

Also the shapes every transport speaks: byte streams (`ByteSource`, `ByteSink`) for stdio, whole
messages (`MessageSource`, `MessageSink`) for WebSockets. Knows nothing about JSON-RPC: it splits on
b"\\n" only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

READ_CHUNK = 1 << 16
DEFAULT_MAX_LINE = 16 * 1024 * 1024
OVERLONG_PREFIX = 64 * 1024


class ByteSource(Protocol):
    """Where a connection's bytes come from (stdin, a socket)."""

    async def receive(self) -> bytes:
        """The next chunk; raises `anyio.EndOfStream` at end of input."""
        ...


class ByteSink(Protocol):
    """Where a connection's bytes go (stdout, a socket)."""

    async def send(self, data: bytes) -> None:
        """Write all of `data`; raises `anyio.BrokenResourceError` when the reader is gone."""
        ...


class MessageSource(Protocol):
    """Where whole messages come from (WebSocket text frames)."""

    async def receive(self) -> bytes:
        """The next whole message (one WebSocket text frame); raises `anyio.EndOfStream` when the peer is gone."""
        ...


class MessageSink(Protocol):
    """Where whole messages go, one frame each (WebSocket text frames)."""

    async def send_messages(self, messages: list[bytes]) -> None:
        """Send each message as its own frame; raises `anyio.BrokenResourceError` when the peer is gone."""
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
