"""An async WebSocket client connection on anyio streams (stdlib framing from `wsframe`), and a `Client` over it.

`WebSocketStream` is both a `ByteSource` and a `ByteSink` of lines, so the line-based `Client` speaks
to a WebSocket listener unchanged: each line sent leaves as one text frame, each text frame received
comes back as one line. Pings are answered; a close frame is end of input.

Opening has a deadline (`wsframe.HANDSHAKE_TIMEOUT`: a service that accepts but never answers raises
`wsframe.HandshakeTimeout`), and however the connection breaks during the handshake (refused, reset,
closed half-way) the caller gets an `OSError` (`HandshakeTimeout` is one too), a `HandshakeError`
(an answer other than 101) or a `ProtocolError`: nothing else. While answers are owed, `running_client`
pings a service silent for `wsframe.SILENCE_TIMEOUT` and gives up on it when nothing comes back within as
long again (stopped with SIGSTOP, wedged): the waiting requests then end with `ServerClosed`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import anyio.abc

from app_server.rpc import wsframe
from app_server.rpc.client import Client
from app_server.rpc.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT


class WebSocketStream:
    """One client connection after a successful upgrade."""

    def __init__(self, stream: anyio.abc.ByteStream, reader: wsframe.FrameReader, rest: bytes) -> None:
        self._stream = stream
        self._reader = reader
        self._ready: list[tuple[int, bytes]] = reader.feed(rest) if rest else []
        self._send_lock = anyio.Lock()
        self.response_headers: dict[str, str] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self.binary: list[bytes] = []
        """Binary messages received (a server of ours never sends one)."""
        self.heard_at = anyio.current_time()
        """When the server last sent anything (a pong included)."""

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, stream: anyio.abc.ByteStream, host: str, path: str = "/", headers: dict[str, str] | None = None
    ) -> WebSocketStream:
        request, accept = wsframe.handshake_request(host, path, headers)
        head = bytearray()
        try:
            await stream.send(request)
            while b"\r\n\r\n" not in head:
                if len(head) > wsframe.MAX_HEAD:
                    raise wsframe.ProtocolError("response head too long")
                head += await stream.receive()
        except anyio.EndOfStream:
            raise wsframe.ProtocolError("connection closed during the handshake") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionResetError(f"the connection broke during the handshake ({type(exc).__name__})") from None
        end = head.index(b"\r\n\r\n")
        status, response_headers = wsframe.parse_response_head(bytes(head[:end]))
        rest = bytes(head[end + 4 :])
        if status != 101:
            rest += await _body(stream, response_headers, rest)
            await stream.aclose()
            wsframe.check_accept(status, response_headers, accept, rest)
        wsframe.check_accept(status, response_headers, accept)
        self = cls(stream, wsframe.FrameReader(), rest)
        self.response_headers = response_headers
        return self

    # -- frames ----------------------------------------------------------------------------------

    async def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        async with self._send_lock:
            await self._stream.send(wsframe.encode_frame(opcode, payload))

    async def receive_message(self) -> tuple[int, bytes]:
        """The next message or control frame; pings are answered here as well as returned."""
        while not self._ready:
            chunk = await self._stream.receive()
            self.heard_at = anyio.current_time()
            self._ready = self._reader.feed(chunk)
        opcode, payload = self._ready.pop(0)
        if opcode == OP_PING:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.send_frame(OP_PONG, payload)
        return opcode, payload

    # -- lines (ByteSink, ByteSource) ------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        async with self._send_lock:
            await self._stream.send(b"".join(wsframe.encode_frame(OP_TEXT, line) for line in lines))

    async def receive(self) -> bytes:
        while True:
            try:
                opcode, payload = await self.receive_message()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                raise anyio.EndOfStream from None
            if opcode == OP_TEXT:
                return payload + b"\n"
            if opcode == OP_BINARY:
                self.binary.append(payload)
            elif opcode == OP_CLOSE:
                self.close_code, self.close_reason = wsframe.parse_close(payload)
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    await self.send_frame(OP_CLOSE, payload[:2])
                    await self._stream.aclose()  # the closing handshake is done: the server waits for our EOF
                raise anyio.EndOfStream

    async def aclose(self, code: int = 1000) -> None:
        if self.close_code is None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await self.send_frame(OP_CLOSE, wsframe.close_payload(code))
        await self._stream.aclose()


async def _body(stream: anyio.abc.ByteStream, headers: dict[str, str], have: bytes) -> bytes:
    """The rest of a refusal's body, as far as Content-Length says (bounded)."""
    want = min(int(headers.get("content-length", "0") or 0), wsframe.MAX_HEAD)
    body = b""
    with anyio.move_on_after(5):
        while len(have) + len(body) < want:
            try:
                body += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    return body


@contextmanager
def _deadline(timeout: float) -> Iterator[None]:
    """`timeout` seconds for connecting and upgrading; past it, `HandshakeTimeout`."""
    try:
        with anyio.fail_after(timeout):
            yield
    except TimeoutError as exc:
        if isinstance(exc, wsframe.HandshakeTimeout):
            raise
        raise wsframe.HandshakeTimeout(timeout) from None


async def connect_unix(
    path: Path | str, *, headers: dict[str, str] | None = None, timeout: float = wsframe.HANDSHAKE_TIMEOUT
) -> WebSocketStream:
    """Upgrade over the Unix socket at `path` (a symlink is followed first: the real path is short)."""
    with _deadline(timeout):
        stream = await anyio.connect_unix(os.path.realpath(path))  # noqa: ASYNC240 (no I/O worth a thread)
        try:
            return await WebSocketStream.open(stream, "localhost", "/", headers)
        except BaseException:
            await stream.aclose()
            raise


async def connect_tcp(
    host: str,
    port: int,
    *,
    path: str = "/",
    headers: dict[str, str] | None = None,
    timeout: float = wsframe.HANDSHAKE_TIMEOUT,
) -> WebSocketStream:
    with _deadline(timeout):
        stream = await anyio.connect_tcp(host, port)
        try:
            return await WebSocketStream.open(stream, f"{host}:{port}", path, headers)
        except BaseException:
            await stream.aclose()
            raise


async def _watch(ws: WebSocketStream, client: Client, silence: float) -> None:
    """Ping a server silent for `silence` s while answers are owed; give up on it after as long again."""
    while True:
        await anyio.sleep(silence / 4)
        if not client.waiting or anyio.current_time() - ws.heard_at < silence:
            continue
        pinged = anyio.current_time()
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await ws.send_frame(OP_PING, b"codex-limits")
        await anyio.sleep(silence)
        if ws.heard_at < pinged:
            client.abandon(f"it did not answer a ping within {silence:g} s: stopped, or wedged")
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await ws.aclose()
            return


@asynccontextmanager
async def running_client(ws: WebSocketStream, *, silence: float = wsframe.SILENCE_TIMEOUT) -> AsyncIterator[Client]:
    """A `Client` reading `ws` in a task (and watching for a server gone silent); closes the connection on exit."""
    client = Client(ws, ws)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.run)
        tg.start_soon(_watch, ws, client, silence)
        try:
            yield client
        finally:
            with anyio.CancelScope(shield=True):
                await ws.aclose()
            tg.cancel_scope.cancel()
