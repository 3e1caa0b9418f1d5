"""The long-lived objects handlers share: settings, the HTTP pool, accounts, per-account locks.

Built cheaply at start-up; everything with a cost (httpx, auth.json, the pool, the ledger) is
created on first use.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import anyio

from .backend import HttpPool
from .config import Settings

if TYPE_CHECKING:
    from .codex_account import CodexAccount
    from .pool import Pool


class Services:
    def __init__(self, settings: Settings, http: HttpPool | None = None) -> None:
        self.settings = settings
        self.http = http or HttpPool(connect_timeout=settings.timeouts.connect)
        self._default: CodexAccount | None = None
        self._pool: Pool | None = None
        # anyio locks wake waiters in FIFO order: consumes run in the order they arrived (§1.4).
        self._locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)

    def default_account(self) -> CodexAccount:
        """The account of `$CODEX_HOME`, which the upstream methods act on."""
        if self._default is None:
            from .codex_account import CodexAccount

            self._default = CodexAccount(self.settings.codex_home, self.settings, self.http)
        return self._default

    def spend_lock(self, codex_home: str) -> anyio.Lock:
        """One credit-spending call at a time per Codex home, in arrival order."""
        return self._locks[codex_home]

    def pool(self) -> Pool:
        if self._pool is None:
            from .pool import Pool

            self._pool = Pool(self)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        await self.http.aclose()
