"""The composition root: the one place where the server's world is built, for every transport.

A `World` holds the long-lived objects a request may need: settings, the HTTP pool, the registry of
Codex accounts, the store, the pool, the broadcaster of server notifications and the live updates.
Each is built on first use, from the others, and closed by `aclose`; `python -m app_server` answers
`initialize` without importing any of them. `open_world` is how a transport gets one (built, then
closed at the end; the transport runs `World.background` beside its connections); `serve_stdio`,
`serve_network` and the in-memory harness all go through it, so the wiring below is the only wiring.

Adding a long-lived object (a metrics registry, an alert sink): a lazy property here, built from the
others, closed in `aclose` when it holds a resource; background work goes into `background`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from app_server.config import Settings, upstream_connections

if TYPE_CHECKING:  # each is imported where it is first built: none of them is on the start-up path
    from app_server.pool.delivery.deliverer import AlertDelivery
    from app_server.pool.monitor import LiveUpdates
    from app_server.pool.pool import Pool
    from app_server.pool.snapshot import SnapshotWriter
    from app_server.rpc.sessions import Broadcaster
    from app_server.store.base import Store
    from app_server.upstream.account import AccountRegistry, CodexAccount
    from app_server.upstream.backend import HttpPool


class World:
    """Everything a request may need, each made on first use and closed by `aclose`.

        world = World(settings)
        await world.pool.apply(params, identity, announce)
        await world.aclose()

    `http` and `store` may be given (tests, benchmarks); `snapshot`, given by the service only, keeps the
    status line's `statusline.json` current from the live updates.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        http: HttpPool | None = None,
        store: Store | None = None,
        snapshot: SnapshotWriter | None = None,
        delivery: AlertDelivery | None = None,
    ) -> None:
        self.settings = settings
        self.snapshot = snapshot
        self.delivery = delivery
        self._http = http
        self._registry: AccountRegistry | None = None
        self._store = store
        self._pool: Pool | None = None
        self._broadcaster: Broadcaster | None = None
        self._live: LiveUpdates | None = None

    # -- upstream ----------------------------------------------------------------------------

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

    def default_account(self) -> CodexAccount:
        """The account of `$CODEX_HOME`, which the upstream methods act on."""
        return self.registry.get(self.settings.codex_home)

    # -- the pool ----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The ledger of applies, the claims and the usage history (SQLite, or PostgreSQL when configured)."""
        if self._store is None:
            from app_server.store import open_store

            self._store = open_store(self.settings.data_home, self.settings.database_url())
        return self._store

    @property
    def pool(self) -> Pool:
        """The accounts of `accounts.toml`, read and applied on through `registry` and `store`."""
        if self._pool is None:
            from app_server.pool.accounts import FILE_NAME, AccountsFile
            from app_server.pool.pool import Pool

            accounts = AccountsFile(self.settings.data_home / FILE_NAME, self.settings.codex_home)
            self._pool = Pool(accounts, self.registry, self.store)
        return self._pool

    # -- live updates ------------------------------------------------------------------------

    @property
    def broadcaster(self) -> Broadcaster:
        """Every connection served in this process: `notify_all` reaches each initialized one."""
        if self._broadcaster is None:
            from app_server.rpc.sessions import Broadcaster

            self._broadcaster = Broadcaster()
        return self._broadcaster

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
                on_alert=self.delivery.submit if self.delivery is not None else None,
            )
        return self._live

    # -- running -----------------------------------------------------------------------------

    async def background(self) -> None:
        """What the world does on its own while a transport serves, until cancelled. Never spends anything."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._refresh_on_schedule)
            if self.delivery is not None:
                tg.start_soon(self.delivery.run)

    async def _refresh_on_schedule(self) -> None:
        """With a refresh interval configured (`CODEX_LIMITS_REFRESH_INTERVAL`, `--refresh-interval`), read
        every account on that schedule; each fresh read goes through the live updates (changes, alerts,
        history)."""
        interval = self.settings.live.refresh_interval
        if interval is None:
            return
        from app_server.pool.monitor import PoolSource, RefreshScheduler, server_identity

        source = PoolSource(self.pool, server_identity(), self.live.observe)
        await RefreshScheduler(source, interval=interval).run()

    async def aclose(self) -> None:
        """Close what was built: the store, then the HTTP pool."""
        if self._store is not None:
            await self._store.aclose()
        if self._http is not None:
            await self._http.aclose()


@asynccontextmanager
async def open_world(
    settings: Settings, *, service_home: Path | None = None, delivery: AlertDelivery | None = None
) -> AsyncIterator[World]:
    """The world of one server process, closed when the transport is done (even when cancelled); the
    transport runs its `background` beside its connections. `service_home`: this process is the service
    of that data directory, and keeps its status-line snapshot current. `delivery`: the alert sinks every
    alert also goes to (the service, and simulated servers)."""
    snapshot: SnapshotWriter | None = None
    if service_home is not None:
        from app_server.pool.snapshot import SnapshotWriter

        snapshot = SnapshotWriter(service_home)
    world = World(settings, snapshot=snapshot, delivery=delivery)
    try:
        yield world
    finally:
        with anyio.CancelScope(shield=True):
            await world.aclose()
