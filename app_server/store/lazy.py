"""A store opened on first use: the pool is built synchronously, a PostgreSQL store connects asynchronously.

The first call opens the real store (once, under a lock); a failure to open is raised to that call as a
`StoreError` and tried again on the next one, so a database that comes back is picked up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from app_server.store.base import AccountKey, Attempt, Store, UsageSample
from protocol.ext import AccountPoolApplyResponse, ApplyRecord


class LazyStore:
    """A `Store` that opens the one it stands for on first use."""

    def __init__(self, opener: Callable[[], Awaitable[Store]]) -> None:
        self._opener = opener
        self._store: Store | None = None
        self._lock = anyio.Lock()

    async def _open(self) -> Store:
        if self._store is None:
            async with self._lock:
                if self._store is None:
                    self._store = await self._opener()
        return self._store

    async def get(self, key: str) -> Attempt | None:
        return await (await self._open()).get(key)

    async def start(
        self, key: str, account: AccountKey, account_id: str, credit_id: str | None, now: int, available: int | None
    ) -> None:
        await (await self._open()).start(key, account, account_id, credit_id, now, available)

    async def finish(self, key: str, response: AccountPoolApplyResponse, available_after: int | None) -> None:
        await (await self._open()).finish(key, response, available_after)

    async def fail(self, key: str, error: str, now: int, *, keep_pending: bool) -> None:
        await (await self._open()).fail(key, error, now, keep_pending=keep_pending)

    async def history(self, account_id: str | None, limit: int) -> list[ApplyRecord]:
        return await (await self._open()).history(account_id, limit)

    async def pending(
        self, account: AccountKey, *, exclude: str | None = None, account_id: str | None = None
    ) -> ApplyRecord | None:
        return await (await self._open()).pending(account, exclude=exclude, account_id=account_id)

    @asynccontextmanager
    async def apply_lock(self, account: AccountKey, *, wait: float) -> AsyncIterator[None]:
        async with (await self._open()).apply_lock(account, wait=wait):
            yield

    async def record_usage(self, samples: list[UsageSample]) -> None:
        await (await self._open()).record_usage(samples)

    async def usage_history(self, account_id: str, *, since: int | None, limit: int) -> list[UsageSample]:
        return await (await self._open()).usage_history(account_id, since=since, limit=limit)

    async def prune_usage(self, before: int) -> int:
        return await (await self._open()).prune_usage(before)

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
