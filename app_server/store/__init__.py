"""Storage: the apply ledger, pending markers, apply locks and usage history (SQLite or PostgreSQL)."""

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
    from app_server.store.lazy import LazyStore

    async def connect() -> Store:
        from app_server.store.postgres import PostgresStore

        return await PostgresStore.open(database_url)

    return LazyStore(connect)
