"""The long-lived objects handlers share, wired once: settings, the HTTP pool, the registry of Codex
accounts, the store, the pool, the broadcaster of server notifications and the live updates.

Built cheaply at start-up; everything with a cost (httpx, auth.json, the pool, the store) is
created on first use, so `python -m app_server` answers `initialize` without importing any of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app_server.config import Settings, upstream_connections

if TYPE_CHECKING:
    from app_server.pool.monitor import LiveUpdates
    from app_server.pool.pool import Pool
    from app_server.pool.snapshot import SnapshotWriter
    from app_server.rpc.sessions import Broadcaster
    from app_server.store.base import Store
    from app_server.upstream.account import AccountRegistry, CodexAccount
    from app_server.upstream.backend import HttpPool


class Services:
    """What a request may need, made on first use and closed by `aclose`."""

    def __init__(self, settings: Settings, http: HttpPool | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self._http = http
        self._registry: AccountRegistry | None = None
        self._store = store
        self._pool: Pool | None = None
        self._broadcaster: Broadcaster | None = None
        self._live: LiveUpdates | None = None
        self.snapshot: SnapshotWriter | None = None
        """Set by the service (only): the live updates keep `statusline.json` current through it."""

    @property
    def http(self) -> HttpPool:
        """The one HTTP pool, made on first use (the backend modules stay out of start-up)."""
        if self._http is None:
            from app_server.upstream.backend import HttpPool

            self._http = HttpPool(
                connect_timeout=self.settings.timeouts.connect,
                max_connections=upstream_connections(self.settings.env),
            )
        return self._http

    @property
    def registry(self) -> AccountRegistry:
        """The one `CodexAccount` per Codex home, shared by the upstream methods and the pool."""
        if self._registry is None:
            from app_server.upstream.account import AccountRegistry

            self._registry = AccountRegistry(self.settings, self.http)
        return self._registry

    @property
    def broadcaster(self) -> Broadcaster:
        """Every connection served in this process: `notify_all` reaches each initialized one."""
        if self._broadcaster is None:
            from app_server.rpc.sessions import Broadcaster

            self._broadcaster = Broadcaster()
        return self._broadcaster

    def default_account(self) -> CodexAccount:
        """The account of `$CODEX_HOME`, which the upstream methods act on."""
        return self.registry.get(self.settings.codex_home)

    @property
    def store(self) -> Store:
        if self._store is None:
            from app_server.store import open_store

            self._store = open_store(self.settings.data_home, self.settings.database_url())
        return self._store

    def pool(self) -> Pool:
        if self._pool is None:
            from app_server.pool.accounts import FILE_NAME, AccountsFile
            from app_server.pool.pool import Pool

            accounts = AccountsFile(self.settings.data_home / FILE_NAME, self.settings.codex_home)
            self._pool = Pool(accounts, self.registry, self.store)
        return self._pool

    @property
    def live(self) -> LiveUpdates:
        """What every fresh read sets off: usage history, change notifications to every session, alerts."""
        if self._live is None:
            from app_server.pool.alerts import AlertRules
            from app_server.pool.monitor import LiveUpdates
            from app_server.pool.usage import UsageRecorder

            cfg = self.settings.live
            self._live = LiveUpdates(
                self.broadcaster.notify_all,
                codex_home=self.settings.codex_home,
                rules=AlertRules(cfg.alert_thresholds, cfg.credit_expiry_days, cfg.runout_lead_minutes),
                recorder=UsageRecorder(self.store, retention_seconds=cfg.usage_retention_days * 86_400),
                snapshot=self.snapshot,
            )
        return self._live

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
        if self._http is not None:
            await self._http.aclose()
