"""A driver opened on first use: the pool is built synchronously, a PostgreSQL driver connects asynchronously.

The first call opens the real driver (once, under a lock); a failure to open is raised to that call as a
`StoreError` and tried again on the next one, so a database that comes back is picked up. It stands
below `Ledger`, so a store method added later needs no edit here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from app_server.store.base import AccountKey
from app_server.store.ledger import Driver, Tx


class LazyDriver:
    """A `Driver` that opens the one it stands for on first use."""

    def __init__(self, opener: Callable[[], Awaitable[Driver]]) -> None:
        self._opener = opener
        self._driver: Driver | None = None
        self._lock = anyio.Lock()

    async def _open(self) -> Driver:
        if self._driver is None:
            async with self._lock:
                if self._driver is None:
                    self._driver = await self._opener()
        return self._driver

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[Tx]:
        async with (await self._open()).transaction(write=write) as tx:
            yield tx

    @asynccontextmanager
    async def apply_lock(self, account: AccountKey, *, wait: float) -> AsyncIterator[None]:
        async with (await self._open()).apply_lock(account, wait=wait):
            yield

    async def aclose(self) -> None:
        if self._driver is not None:
            await self._driver.aclose()
