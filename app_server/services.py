"""The long-lived objects handlers share: settings, the HTTP pool, accounts, per-account locks.

Built cheaply at start-up; everything with a cost (httpx, auth.json, the pool, the ledger) is
created on first use.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import anyio

from app_server.config import Settings

if TYPE_CHECKING:
    from app_server.pool.pool import Pool
    from app_server.rpc.sessions import Broadcaster
    from app_server.upstream.account import CodexAccount
    from app_server.upstream.backend import HttpPool


class Services:
    def __init__(self, settings: Settings, http: HttpPool | None = None) -> None:
        self.settings = settings
        self._http = http
        self._default: CodexAccount | None = None
        self._pool: Pool | None = None
        self._broadcaster: Broadcaster | None = None
        # anyio locks wake waiters in FIFO order: consumes run in the order they arrived (§1.4).
        self._locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)

    @property
    def http(self) -> HttpPool:
        """The one HTTP pool, made on first use (the backend modules stay out of start-up)."""
        if self._http is None:
            from app_server.upstream.backend import HttpPool

            self._http = HttpPool(connect_timeout=self.settings.timeouts.connect)
        return self._http

    @property
    def broadcaster(self) -> Broadcaster:
        """Every connection served in this process: `notify_all` reaches each initialized one."""
        if self._broadcaster is None:
            from app_server.rpc.sessions import Broadcaster

            self._broadcaster = Broadcaster()
        return self._broadcaster

    def default_account(self) -> CodexAccount:
        """The account of `$CODEX_HOME`, which the upstream methods act on."""
        if self._default is None:
            from app_server.upstream.account import CodexAccount

            self._default = CodexAccount(self.settings.codex_home, self.settings, self.http)
        return self._default

    def spend_lock(self, codex_home: str) -> anyio.Lock:
        """One credit-spending call at a time per Codex home, in arrival order."""
        return self._locks[codex_home]

    def pool(self) -> Pool:
        if self._pool is None:
            from app_server.pool.pool import Pool

            self._pool = Pool(self)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._http is not None:
            await self._http.aclose()
