"""classify -> validate -> route -> answer: the one place where exceptions become wire errors.

One `Dispatcher` serves one connection, whatever its framing: `serve` splits a byte stream into
lines (stdio), `serve_messages` takes whole messages (a WebSocket's text frames); both hand each
message to `handle_message`, so every transport gets the same answers.

Every request line gets exactly one answer. Cheap answers (parse errors, state errors,
parameter checks) are written inline by the reader; real work runs in one task per request, at
most `max_in_flight` at a time, the others waiting in a FIFO queue (oldest first) of at most
`max_queued`. Backpressure instead of loss: when that queue or the outbox is full, the reader
simply stops reading stdin until there is room (CONTRACT §10 D1).

Shutdown (end of input, or `stop_reading` on SIGTERM) takes at most `shutdown_grace` from the
moment it starts, whatever the handlers or the reader are waiting for: queued requests still
start while there is time; when it is over, running requests are cancelled and every request
not answered yet gets the shutdown error (`SHUTDOWN_MESSAGE`). A source that reads ahead tells
of the end of its input as soon as it sees it (`serve(..., ended=)`): the grace starts then, and
the lines still between the reader and that end are answered too, without being run once the
grace is over.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio
from pydantic import BaseModel

from app_server.errors import CodexLimitsError
from app_server.rpc.codec import (
    WHITESPACE,
    Dropped,
    decode_line,
    failure,
    notification,
    overlong_id,
    success,
    unknown_method,
)
from app_server.rpc.context import RequestContext, Session
from app_server.rpc.framing import ByteSource, LineSplitter, MessageSource, Overlong
from app_server.rpc.outbox import Outbox
from protocol import jsonrpc
from protocol.jsonrpc import INTERNAL_ERROR, RpcError, is_request_id
from protocol.methods import Method, Notification
from protocol.validation import MISSING, parse_params

if TYPE_CHECKING:
    from app_server.rpc.sessions import Broadcaster

log = logging.getLogger(__name__)

S = TypeVar("S")
"""What the application hands every handler (its world): the rpc layer only passes it on."""

Handler = Callable[[RequestContext[S], Any], Awaitable[BaseModel]]
"""A method's handler: the request's context and its validated params (the route's params model)."""
Precheck = Callable[[Any], None]
InlineHandler = Callable[[RequestContext[S], Any], BaseModel]
Observer = Callable[[str | None, int | None], None]
"""Told of each request answered: its method (None when no route serves it) and error code (None on success)."""

SHUTDOWN_MESSAGE: Final = "server shut down before this request finished; its outcome is unknown"


@dataclass(frozen=True)
class Route(Generic[S]):
    """How a method is served: `inline` answers without I/O in the reader; otherwise `handler` runs
    in its own task after the optional synchronous `precheck` passed."""

    method: Method
    handler: Handler[S] | None = None
    inline: InlineHandler[S] | None = None
    precheck: Precheck | None = None
    needs_initialize: bool = True


@dataclass(frozen=True, slots=True)
class _Work(Generic[S]):
    """A request that passed every inline check and now needs its own task."""

    method: str
    handler: Handler[S]
    ctx: RequestContext[S]
    params: Any


def wire_error(exc: Exception, request_id: Any) -> RpcError:
    """The one place an exception becomes a wire error: an `RpcError` as it is, one of the project's errors
    from its own code, text and data, anything unforeseen -32603 (and its traceback on stderr)."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, CodexLimitsError):
        return RpcError(exc.rpc_code, exc.message, exc.data)
    log.error("unexpected error while serving request %r", request_id, exc_info=exc)
    return RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}")


class Dispatcher(Generic[S]):
    """One connection: reads lines (or whole messages) from a source, answers through the outbox.

    Knows no method and no domain: `routes` say how each method is served, `services` (the application's
    world, of any type `S`) is handed to every handler untouched, and every exception a handler lets
    through becomes a wire error here (`wire_error`: an `RpcError` as it is, a project error from its own
    data, anything else `-32603 internal error`). While it serves, it is registered with `broadcaster`
    (when given), which sends server notifications to every initialized connection. `overflow`, when
    given, is what happens when such a notification finds the outbox full: a listener disconnects that
    client; without it the notification waits for room (stdio, where the only client is the one that is
    slow). Usage::

        dispatcher = Dispatcher(routes, services, Outbox(sink), broadcaster=broadcaster)
        await dispatcher.serve(source)  # until end of input; in-flight requests drain first
    """

    def __init__(
        self,
        routes: dict[str, Route[S]],
        services: S,
        outbox: Outbox,
        *,
        session: Session | None = None,
        max_in_flight: int = 512,
        max_queued: int = 512,
        max_line: int | None = None,
        shutdown_grace: float = 10.0,
        overflow: Callable[[], None] | None = None,
        broadcaster: Broadcaster | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.routes = routes
        self._observe: Observer = observer or (lambda method, error: None)
        self.services = services
        self.outbox = outbox
        self.session = session or Session()
        self.splitter = LineSplitter() if max_line is None else LineSplitter(max_line)
        self.shutdown_grace = shutdown_grace
        self._overflow = overflow
        self._broadcaster = broadcaster
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued
        self._queue: deque[_Work[S]] = deque()
        self._room = anyio.Event()
        """Set when the queue has room again (or reading stops); a new one each time the reader waits."""
        self._in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._stopping = False
        self._shutdown = anyio.Event()
        """Set when shutdown starts: end of input, or `stop_reading`. The grace runs from here."""
        self._over = False
        """The grace is over: nothing starts any more."""
        self._scopes: set[anyio.CancelScope] = set()
        """One per running request: cancelled when the grace is over, while the reader goes on."""
        self._receive_scope = anyio.CancelScope()
        self._tasks: anyio.abc.TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def stop_reading(self) -> None:
        """Stop taking input (SIGTERM). Only the wait for more input is interrupted: the complete
        lines already read are still handled, and every request among them gets its answer."""
        self._stopping = True
        self._receive_scope.cancel()
        self._room.set()
        self._shutdown.set()

    async def serve(self, source: ByteSource, *, ended: anyio.Event | None = None) -> None:
        """Run until end of input (or `stop_reading`), drain in-flight requests, flush the outbox.
        `ended`, when given, is set by a source that reads ahead as soon as it has seen the end of
        its input, maybe well before the reader gets there (`FdSource.ended`)."""
        await self._serve(self._read(source), ended)

    async def serve_messages(self, source: MessageSource) -> None:
        """`serve` for a transport that delivers whole messages (one WebSocket text frame each)."""
        await self._serve(self._read_messages(source))

    async def _serve(self, reading: Awaitable[None], ended: anyio.Event | None = None) -> None:
        broadcaster = self._broadcaster
        if broadcaster is None:
            await self._serve_until_drained(reading, ended)
            return
        broadcaster.add(self)
        try:
            await self._serve_until_drained(reading, ended)
        finally:
            broadcaster.discard(self)

    async def _serve_until_drained(self, reading: Awaitable[None], ended: anyio.Event | None) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.outbox.pump)
            outer.start_soon(self._watch_broken_output, outer.cancel_scope)
            read = anyio.Event()

            async def read_all() -> None:
                try:
                    await reading
                finally:
                    read.set()
                    self._shutdown.set()

            async def watch_end(ended: anyio.Event) -> None:
                await ended.wait()
                self._shutdown.set()

            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(read_all)
                if ended is not None:
                    tasks.start_soon(watch_end, ended)
                await self._shutdown.wait()
                # The grace runs from the start of shutdown, even while the reader is still busy with
                # the lines it had in hand (waiting for room in the outbox, say).
                with anyio.move_on_after(self.shutdown_grace):
                    await read.wait()
                    await self._wait_idle()
                self._over = True
                self._room.set()
                unanswered = self._in_flight + len(self._queue)
                if unanswered or not read.is_set():
                    log.warning(
                        "shutdown grace of %.1f s over; %d request(s) cancelled%s",
                        self.shutdown_grace,
                        unanswered,
                        "" if read.is_set() else ", the rest of the input answered without being run",
                    )
                for scope in self._scopes:
                    scope.cancel()
                # What is left of the input (the source has seen its end) is answered, not run; bounded by
                # another grace for a client that stopped reading (the reader then waits for the outbox).
                with anyio.move_on_after(self.shutdown_grace):
                    await read.wait()
                tasks.cancel_scope.cancel()
            await self._answer_queued()
            self.outbox.close()
            outer.cancel_scope.deadline = math.inf
            await self._flushed(outer)

    async def _answer_queued(self) -> None:
        """The requests that never started (the grace ended first): each gets the shutdown error."""
        with anyio.move_on_after(self.shutdown_grace):
            while self._queue:
                work = self._queue.popleft()
                await self.outbox.put(failure(work.ctx.request_id, RpcError(INTERNAL_ERROR, SHUTDOWN_MESSAGE)))
        self._queue.clear()

    async def _flushed(self, outer: anyio.abc.TaskGroup) -> None:
        """Wait for the pump to write the closed outbox, then stop the rest. A client that still
        reads gets every answer however slowly; one that took nothing for a whole grace is let go."""
        while True:
            before = self.outbox.written
            with anyio.move_on_after(self.shutdown_grace):
                await self.outbox.drained.wait()
            if self.outbox.drained.is_set() or self.outbox.written == before:
                break
        outer.cancel_scope.cancel()

    async def _watch_broken_output(self, scope: anyio.CancelScope) -> None:
        await self.outbox.broken.wait()
        scope.cancel()

    async def _wait_idle(self) -> None:
        while self._in_flight or self._queue:
            await self._idle.wait()

    async def _read(self, source: ByteSource) -> None:
        while (chunk := await self._receive(source)) is not None:
            await self._handle(self.splitter.feed(chunk))
        if not self._stopping:  # end of input: a last line without a newline still counts
            await self._handle(self.splitter.finish())

    async def _read_messages(self, source: MessageSource) -> None:
        while (message := await self._receive(source)) is not None:
            await self.handle_message(message)

    async def handle_message(self, message: bytes | Overlong) -> None:
        """One whole message (a line without its newline, or a frame): answered, started, or dropped."""
        await self._handle([message])

    async def _handle(self, lines: list[bytes | Overlong]) -> None:
        # The common cases (an inline answer, nothing to answer) cost no trip through the event loop.
        for line in lines:
            outcome = self._classify(line)
            if outcome is None:
                continue
            if type(outcome) is bytes:
                if not self.outbox.put_nowait(outcome):
                    await self.outbox.put(outcome)
            else:
                assert isinstance(outcome, _Work)
                await self._start(outcome)

    async def _receive(self, source: ByteSource | MessageSource) -> bytes | None:
        """The next chunk, or None at end of input or once `stop_reading` was called."""
        if self._stopping:
            return None
        with anyio.CancelScope() as self._receive_scope:
            try:
                return await source.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return None
        return None

    # -- one line --------------------------------------------------------------------------

    def _classify(self, line: bytes | Overlong) -> bytes | _Work[S] | None:
        """One input line -> the answer to write now, the work to start, or nothing (dropped or ignored)."""
        if isinstance(line, Overlong):
            return self._overlong(line)
        stripped = line.strip(WHITESPACE)
        try:
            message = decode_line(stripped)
        except (ValueError, Dropped) as exc:
            self._drop(f"Failed to deserialize JSONRPCMessage: {exc}", stripped)
            return None
        except RecursionError:
            self._drop("Failed to deserialize JSONRPCMessage: recursion limit exceeded", stripped)
            return None
        if not isinstance(message, dict):
            self._drop("Failed to deserialize JSONRPCMessage: not a JSON object", stripped)
            return None
        method = message.get("method", MISSING)
        if method is MISSING:
            if "id" in message and ("result" in message or "error" in message):
                log.debug("ignoring a client response with no pending server request")
                return None
            self._drop("Failed to deserialize JSONRPCMessage: no `method` member", stripped)
            return None
        if not isinstance(method, str):
            self._drop("Failed to deserialize JSONRPCMessage: `method` is not a string", stripped)
            return None
        if "id" not in message:
            log.debug("notification %r ignored", method)
            return None
        request_id = message["id"]
        if not is_request_id(request_id):
            self._drop(f"ignoring {method!r}: its id is not a string or a 64-bit integer", stripped)
            return None
        return self._request(request_id, method, message.get("params", MISSING))

    def _drop(self, why: str, line: bytes) -> None:
        log.warning("%s (line of %d bytes dropped, no answer)", why, len(line))

    def _overlong(self, line: Overlong) -> bytes | None:
        request_id = overlong_id(line.prefix)
        limit = self.splitter.max_line
        if request_id is None:
            log.warning("input line of %d bytes exceeds the %d-byte limit; skipped, no id to answer", line.size, limit)
            return None
        log.warning("input line of %d bytes exceeds the %d-byte limit; answered with an error", line.size, limit)
        detail = f"message of {line.size} bytes exceeds the {limit}-byte line limit"
        return failure(request_id, jsonrpc.invalid_request(detail))

    def _request(self, request_id: Any, name: str, raw_params: Any) -> bytes | _Work[S]:
        route = self.routes.get(name)
        if route is None:
            error = unknown_method(name)
            self._observe(None, error.code)
            return failure(request_id, error)
        try:
            params = parse_params(route.method.params, raw_params, required=route.method.params_required)
            if route.needs_initialize and not self.session.initialized:
                raise RpcError(jsonrpc.INVALID_REQUEST, "Not initialized")
            if route.inline is not None:
                ctx = RequestContext(self.session, self.services, self._notify, request_id)
                answer = success(request_id, route.inline(ctx, params))
                self._observe(name, None)
                return answer
            if route.precheck is not None:
                route.precheck(params)
        except Exception as exc:
            error = wire_error(exc, request_id)
            self._observe(name, error.code)
            return failure(request_id, error)
        assert route.handler is not None
        return _Work(name, route.handler, RequestContext(self.session, self.services, self._notify, request_id), params)

    async def _start(self, work: _Work[S]) -> None:
        """Run `work` now if a slot is free and nothing waits before it, else queue it (FIFO). The
        reader waits only when the queue is full, and never once `stop_reading` was called: the lines
        it already holds are queued whatever the bound (at most one chunk of them). Once the grace is
        over, work is answered with the shutdown error at once."""
        if self._over:
            await self._answer(failure(work.ctx.request_id, RpcError(INTERNAL_ERROR, SHUTDOWN_MESSAGE)))
            return
        if self._in_flight < self._max_in_flight and not self._queue:
            self._launch(work)
            return
        while len(self._queue) >= self._max_queued and not self._stopping and not self._over:
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()
        if self._over:
            await self._answer(failure(work.ctx.request_id, RpcError(INTERNAL_ERROR, SHUTDOWN_MESSAGE)))
            return
        self._queue.append(work)
        if self._idle.is_set():
            self._idle = anyio.Event()

    def _launch(self, work: _Work[S]) -> None:
        assert self._tasks is not None
        self._in_flight += 1
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._tasks.start_soon(self._run, work)

    async def _run(self, work: _Work[S]) -> None:
        ctx = work.ctx
        answer: bytes | None = None
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                answer = await self._outcome(work)
            if answer is None:  # cancelled: the grace is over
                answer = failure(ctx.request_id, RpcError(INTERNAL_ERROR, SHUTDOWN_MESSAGE))
        except anyio.get_cancelled_exc_class():
            answer = failure(ctx.request_id, RpcError(INTERNAL_ERROR, SHUTDOWN_MESSAGE))
            raise
        finally:
            self._scopes.discard(scope)
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.shutdown_grace):
                if answer is not None:
                    await self._answer(answer)
            self._in_flight -= 1
            self._next()

    async def _outcome(self, work: _Work[S]) -> bytes:
        request_id = work.ctx.request_id
        try:
            answer = success(request_id, await work.handler(work.ctx, work.params))
        except Exception as exc:
            error = wire_error(exc, request_id)
            self._observe(work.method, error.code)
            return failure(request_id, error)
        self._observe(work.method, None)
        return answer

    def _next(self) -> None:
        """A slot came free: the oldest queued request takes it."""
        if self._queue and not self._over:
            self._launch(self._queue.popleft())
            if len(self._queue) < self._max_queued:
                self._room.set()
        elif not self._in_flight:
            self._idle.set()

    async def _answer(self, message: bytes) -> None:
        await self.outbox.put(message)

    async def _notify(self, kind: Notification, params: BaseModel) -> None:
        if kind.name in self.session.opt_out:
            return
        await self.outbox.put(notification(kind.name, params))

    async def offer(self, message: bytes) -> None:
        """Queue a notification meant for every connection (see `Broadcaster`)."""
        if self.outbox.put_nowait(message):
            return
        if self._overflow is None:
            await self.outbox.put(message)
        else:
            self._overflow()
