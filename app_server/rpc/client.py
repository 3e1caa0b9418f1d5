"""A small async client for the protocol: requests matched to answers by id, notifications streamed.

Used by the operator CLI (over a spawned `codex-limits serve`) and by the tests (over memory
streams or a real subprocess). It speaks bytes through the same `ByteSource`/`ByteSink` shapes
as the server's transport.

A connection that ends (or breaks while a request is being written) is `ServerClosed` for every
request still waiting and every later one; for a request that may spend a saved reset, the exception
says the outcome is unknown and names the idempotencyKey to re-send (`rpc.lost`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import IO, Any, TypeVar

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel

from app_server import __version__
from app_server import env as environment
from app_server.rpc import lost
from app_server.rpc.framing import ByteSink, ByteSource, LineSplitter, Overlong
from protocol.jsonrpc import RpcError
from protocol.methods import Method

R = TypeVar("R", bound=BaseModel)

EXIT_GRACE = 15.0
"""Seconds a spawned server has to exit on its own after its input ends (it finishes in-flight requests)."""
FAILURE_GRACE = 2.0
"""The same when the connection ended with an error or a cancellation."""
TERMINATE_GRACE = 12.0
"""Seconds between SIGTERM and SIGKILL (the server's own shutdown grace is 10 s)."""


class ServerClosed(Exception):
    """The server's output ended before the answer arrived.

    `method` is the request left without an answer (None: no request was waiting); when it may spend a
    saved reset and was (perhaps) sent, `outcome_unknown` is True and `idempotency_key` is the key to
    re-send to settle it."""

    def __init__(self, message: str, *, method: str | None = None, params: Any = None, sent: bool = True) -> None:
        spend = lost.spend_of(method, params) if method is not None and sent else None
        if spend is not None:
            message += "; " + lost.unknown_outcome(spend[0])
        super().__init__(message)
        self.method = method
        self.outcome_unknown = spend is not None
        self.idempotency_key = spend[0] if spend is not None else None


class Client:
    """An async JSON-RPC client over one byte stream: requests matched to answers by id,
    notifications handed to the caller."""

    def __init__(self, sink: ByteSink, source: ByteSource) -> None:
        self._sink = sink
        self._source = source
        self._ids = itertools.count(1)
        self._pending: dict[Any, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._closed = False
        self.lost_reason: str | None = None
        """Why the connection was given up on (`abandon`), if it was."""
        self._note_send: MemoryObjectSendStream[dict[str, Any]]
        self.notifications: MemoryObjectReceiveStream[dict[str, Any]]
        self._note_send, self.notifications = anyio.create_memory_object_stream[dict[str, Any]](1000)

    async def run(self) -> None:
        """Read answers until the server's output ends; run it in a task group."""
        splitter = LineSplitter(max_line=1 << 30)
        try:
            while True:
                try:
                    chunk = await self._source.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                for line in splitter.feed(chunk):
                    if not isinstance(line, Overlong):
                        await self._dispatch(line)
        finally:
            self._closed = True
            for stream in self._pending.values():
                stream.close()
            self._note_send.close()

    @property
    def waiting(self) -> bool:
        """Whether a request is waiting for its answer."""
        return bool(self._pending)

    def abandon(self, reason: str) -> None:
        """Give up on the connection now: every waiting request ends with `ServerClosed` saying `reason`,
        and so does every later one; the notifications end."""
        self.lost_reason = reason
        self._closed = True
        for stream in self._pending.values():
            stream.close()
        self._note_send.close()

    def _lost(self, what: str) -> str:
        return what if self.lost_reason is None else f"{what} ({self.lost_reason})"

    async def _dispatch(self, line: bytes) -> None:
        message = json.loads(line)
        if "method" in message:
            # A full buffer means nobody is listening for notifications: dropping them is the client's choice.
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                self._note_send.send_nowait(message)
            return
        stream = self._pending.pop(message.get("id"), None)
        if stream is not None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):  # abandoned meanwhile
                await stream.send(message)

    async def send_line(self, line: bytes | str) -> None:
        data = line.encode("utf-8") if isinstance(line, str) else line
        await self._sink.send(data + b"\n")

    async def request(self, method: str, params: Any = None, *, request_id: Any = None) -> Any:
        """Send one request and return its `result`; an error answer raises `RpcError`, a connection
        that ends first `ServerClosed`."""
        if isinstance(params, BaseModel):
            params = params.model_dump(mode="json", by_alias=True)
        if self._closed:
            raise ServerClosed(self._lost(f"server closed before {method}"), method=method, params=params, sent=False)
        rid = next(self._ids) if request_id is None else request_id
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._pending[rid] = send
        message: dict[str, Any] = {"id": rid, "method": method}
        if params is not None:
            message["params"] = params
        try:
            try:
                await self.send_line(json.dumps(message, ensure_ascii=False, separators=(",", ":")))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                # Part of the request may have left: for a spend, that is an unknown outcome too.
                raise ServerClosed(
                    f"the connection broke while sending {method} ({type(exc).__name__})", method=method, params=params
                ) from None
            try:
                answer = await receive.receive()
            except anyio.EndOfStream:
                raise ServerClosed(
                    self._lost(f"server closed before answering {method}"), method=method, params=params
                ) from None
        finally:
            self._pending.pop(rid, None)
        if "error" in answer:
            error = answer["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        return answer["result"]

    async def call(self, method: Method, params: BaseModel | None = None, result: type[R] | None = None) -> R:
        """Typed request: params and result are the models of the method table."""
        raw = await self.request(method.name, params)
        model: type[Any] = result or method.result
        parsed: R = model.model_validate(raw)
        return parsed

    async def initialize(
        self, name: str = "codex-limits", version: str = __version__, *, opt_out: Sequence[str] = ()
    ) -> dict[str, Any]:
        """`initialize`; `opt_out` names notifications this connection does not want."""
        params: dict[str, Any] = {"clientInfo": {"name": name, "title": None, "version": version}}
        if opt_out:
            params["capabilities"] = {"optOutNotificationMethods": list(opt_out)}
        result: dict[str, Any] = await self.request("initialize", params)
        return result


class _ProcessSource:
    def __init__(self, stream: anyio.abc.ByteReceiveStream) -> None:
        self._stream = stream

    async def receive(self) -> bytes:
        return await self._stream.receive()


class _ProcessSink:
    def __init__(self, stream: anyio.abc.ByteSendStream) -> None:
        self._stream = stream

    async def send(self, data: bytes) -> None:
        await self._stream.send(data)


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app_server", *args]


@asynccontextmanager
async def spawn(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    stderr: int | IO[Any] | None = None,
    command: Sequence[str] | None = None,
) -> AsyncIterator[tuple[Client, anyio.abc.Process]]:
    """Start `codex-limits serve` as a child process and yield a running client for it.

    `stderr` is passed to the child as is (None: inherit ours); `command` replaces the whole
    command line (`args` is then ignored), for running another server build.
    """
    process = await anyio.open_process(
        list(command) if command is not None else server_command(*args),
        env=environment.child(base=env),
        stderr=stderr,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    client = Client(_ProcessSink(process.stdin), _ProcessSource(process.stdout))
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(client.run)
        grace = EXIT_GRACE
        try:
            yield client, process
        except BaseException:
            grace = FAILURE_GRACE  # the connection failed or was cancelled: no reason to wait long
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await _reap(process, grace)
            tg.cancel_scope.cancel()


async def _reap(process: anyio.abc.Process, grace: float) -> None:
    """End of input, then `grace` seconds to exit; then SIGTERM (the server finishes in-flight work), then kill."""
    assert process.stdin is not None
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.aclose()
    for wait, stop in ((grace, process.terminate), (TERMINATE_GRACE, process.kill)):
        with anyio.move_on_after(wait):
            await process.wait()
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            stop()
    await process.wait()
