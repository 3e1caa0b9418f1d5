"""Which store a test runs against: the embedded SQLite ledger or a fresh database on the session's
throwaway PostgreSQL cluster (`tests/support/postgres.py`).

The `store_backend` fixture is parametrized `sqlite` / `postgres`; import it into a conftest.py together
with the PostgreSQL fixtures. A test that is about one store only says so with `SQLITE_ONLY` or
`POSTGRES_ONLY` (and with its name or docstring):

    @SQLITE_ONLY
    async def test_a_deleted_ledger_loses_no_pending_attempt(world: World) -> None: ...
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import pytest

from app_server.config import DATABASE_URL_ENV
from app_server.store.base import Store
from app_server.store.sqlite import FILE_NAME as LEDGER_FILE

BACKENDS: Final = ("sqlite", "postgres")

SQLITE_ONLY: Final = pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)
"""The test is about local files (the SQLite ledger, markers and locks beside the Codex home)."""

POSTGRES_ONLY: Final = pytest.mark.parametrize("store_backend", ["postgres"], indirect=True)
"""The test is about the shared database (several data directories or machines on one store)."""


@dataclass(frozen=True)
class StoreBackend:
    """One store for one test: `sqlite` (the file in the data directory) or `postgres` (`url`, a database
    of its own)."""

    name: Literal["sqlite", "postgres"]
    url: str | None = None

    def __str__(self) -> str:
        return self.name

    def env(self) -> dict[str, str]:
        """What a server's environment needs to use this store."""
        return {} if self.url is None else {DATABASE_URL_ENV: self.url}

    async def open(self, data_home: Path) -> Store:
        """Another handle on the same store (as another process, or machine, would have)."""
        if self.url is None:
            from app_server.store.sqlite import SqliteStore

            return SqliteStore(data_home / LEDGER_FILE)
        from app_server.store.postgres import PostgresStore

        return await PostgresStore.open(self.url)

    def ledger_rows(self, data_home: Path) -> list[dict[str, Any]]:
        """Every row of the apply ledger, oldest write first, as column -> value."""
        if self.url is None:
            with closing(sqlite3.connect(data_home / LEDGER_FILE)) as conn:
                conn.row_factory = sqlite3.Row
                return [dict(row) for row in conn.execute("SELECT * FROM applies ORDER BY rowid")]
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn:
            rows = conn.execute("SELECT * FROM applies ORDER BY seq").fetchall()
        return [{k: v for k, v in row.items() if k != "seq"} for row in rows]

    def pending_marker_keys(self) -> list[str]:
        """The idempotency keys the claims name (the shared store only)."""
        assert self.url is not None
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute("SELECT idempotency_key FROM claims ORDER BY identity").fetchall()
        return [str(key) for (key,) in rows]

    def execute(self, sql: str) -> None:
        """One statement on the shared database, from outside the services (the shared store only)."""
        assert self.url is not None
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.encode())


SQLITE: Final = StoreBackend("sqlite")


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    if request.param == "postgres":
        return StoreBackend("postgres", str(request.getfixturevalue("pg_url")))
    return SQLITE
