"""Storage: the apply ledger, claims, apply locks and usage history. One logic (`ledger.py`) over two
drivers: SQLite (`sqlite.py`, the default) or PostgreSQL (`postgres.py`)."""

from __future__ import annotations

from pathlib import Path

from app_server.store.base import Store, StoreError


def open_store(data_home: Path, database_url: str | None) -> Store:
    """The shared PostgreSQL store when a URL is configured (opened on first use), else the embedded one."""
    if database_url is None:
        from app_server.store.sqlite import FILE_NAME, SqliteStore

        return SqliteStore(data_home / FILE_NAME)
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise StoreError("CODEX_LIMITS_DATABASE_URL (or database_url) must be a postgresql:// URL")
    from app_server.store.lazy import LazyDriver
    from app_server.store.ledger import POSTGRES, Driver, Ledger

    async def connect() -> Driver:
        from app_server.store.postgres import PostgresDriver

        return await PostgresDriver.open(database_url)

    return Ledger(LazyDriver(connect), POSTGRES)


__all__ = ["Store", "StoreError", "base", "local_guard", "open_store", "sqlite"]
