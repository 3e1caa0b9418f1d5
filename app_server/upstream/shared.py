"""Calls that concurrent callers share: per key, at most `limit` calls in flight, and one next call for
everyone who arrived while they all ran.

A caller never takes the result of a call that started before it arrived: it starts a call of its own
while fewer than `limit` of its key run, else it joins the next call of its key, which starts as soon as
one of the running ones ends. So however many callers there are, a key has at most `limit` calls running
and one waiting, and every result is fresher than the request it answers. A `limit` of 2 (the default)
keeps one slow call from holding every later caller hostage: the next caller's call runs beside it, as
upstream's do (transcript 22, a slow read answered after a fast one).

Each call runs in a task of its own, not in any caller's: a caller that is cancelled leaves the others
waiting for the same call, and a call is only cancelled when no caller waits for it any more. Its
outcome, a value or an exception, goes to every caller of that call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "result", "scope", "start", "task", "waiters")

    def __init__(self, start: Callable[[], Awaitable[T]]) -> None:
        self.start = start
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waiters = 0
        self.scope = anyio.CancelScope()
        self.task: asyncio.Task[None] | None = None


class SharedCalls(Generic[K, T]):
    """`call(key, start)`: the outcome of a call of `key` started after this call arrived, shared.

    `start` is used only by the caller that opens a new call (the first to wait for it); the others'
    are dropped, so everything that differs between callers and matters must be in the key.
    """

    def __init__(self, limit: int = 2) -> None:
        self.limit = limit
        self._running: dict[K, int] = {}
        self._next: dict[K, _Flight[T]] = {}
        self.started = 0
        """Calls started so far (tests and benchmarks count them)."""

    async def call(self, key: K, start: Callable[[], Awaitable[T]]) -> T:
        flight = self._next.get(key)
        if flight is None:
            flight = _Flight(start)
            if self._running.get(key, 0) < self.limit:
                self._launch(key, flight)
            else:
                self._next[key] = flight  # starts when a running one ends
        flight.waiters += 1
        try:
            await flight.done.wait()
        finally:
            flight.waiters -= 1
            if not flight.waiters and not flight.done.is_set():
                self._abandon(key, flight)
        if flight.error is not None:
            # The same exception goes to every caller: without its last traceback, so it does not grow with each.
            raise flight.error.with_traceback(None)
        return flight.result  # type: ignore[return-value]  # set whenever error is not

    def _launch(self, key: K, flight: _Flight[T]) -> None:
        self._running[key] = self._running.get(key, 0) + 1
        self.started += 1
        flight.task = asyncio.get_running_loop().create_task(self._run(key, flight))

    def _abandon(self, key: K, flight: _Flight[T]) -> None:
        """Nobody waits for `flight` any more: drop it before it starts, or cancel it."""
        if self._next.get(key) is flight:
            del self._next[key]
        else:
            # A scope, not Task.cancel: a task cancelled before its first step would skip `_run`'s cleanup.
            flight.scope.cancel()

    async def _run(self, key: K, flight: _Flight[T]) -> None:
        try:
            with flight.scope:
                try:
                    flight.result = await flight.start()
                except Exception as exc:
                    flight.error = exc
            if flight.scope.cancelled_caught:  # only once nobody waits: there is no one to tell
                flight.error = anyio.ClosedResourceError("the shared call was cancelled")
        finally:
            flight.done.set()
            if (running := self._running[key] - 1) > 0:
                self._running[key] = running
            else:
                del self._running[key]
            pending = self._next.pop(key, None)
            if pending is not None:
                self._launch(key, pending)
