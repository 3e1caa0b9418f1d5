"""The SQLite driver: the embedded ledger file in the data directory, and the guard beside the Codex homes.

    store = SqliteStore(data_home / FILE_NAME)      # the rules: `ledger.Ledger`; this module: the file

WAL mode, synchronous=FULL, one transaction per change (`BEGIN IMMEDIATE` for writes); the file stays mode
0600. Blocking calls run in a worker thread, one transaction at a time per handle. The claim is written in
the file's `claims` table and, created exclusively, as the marker beside the Codex home (`local_guard`), so
every data directory on the machine sees it and a lost ledger loses no pending attempt; the apply lock is
the file lock beside the Codex home. The schema is versioned (`PRAGMA user_version`) and upgraded in place
at open; a file that is not a readable ledger is refused with a message naming it, never recreated.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
import filelock

from app_server.store import local_guard
from app_server.store.base import AccountKey, LedgerUnusable, StoreError
from app_server.store.ledger import SQLITE, Ledger, Params, Result

FILE_NAME: Final = "ledger.sqlite3"

SCHEMA_VERSION: Final = 3

# Version 1 is the ledger of the first release (no user_version set, no identity column).
_SCHEMA_V1: Final = """
CREATE TABLE IF NOT EXISTS applies (
    idempotency_key  TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    credit_id        TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'finished', 'failed')),
    outcome          TEXT,
    error            TEXT,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 1,
    available_before INTEGER,
    available_after  INTEGER,
    response_json    TEXT
);
CREATE INDEX IF NOT EXISTS applies_by_account ON applies (account_id, started_at);
"""

# Released migrations are never edited; a change is a new number.
_MIGRATIONS: Final = {
    2: """
ALTER TABLE applies ADD COLUMN identity TEXT;
CREATE INDEX IF NOT EXISTS applies_by_identity ON applies (identity, status);
CREATE TABLE IF NOT EXISTS usage_samples (
    account_id     TEXT NOT NULL,
    limit_id       TEXT NOT NULL,
    window         TEXT NOT NULL,
    taken_at       INTEGER NOT NULL,
    used_percent   INTEGER NOT NULL,
    window_minutes INTEGER,
    resets_at      INTEGER
);
CREATE INDEX IF NOT EXISTS usage_by_account ON usage_samples (account_id, taken_at);
""",
    # PostgreSQL's vocabulary: `window_name`, one sample per (account, limit, window, second), claims.
    3: """
ALTER TABLE usage_samples RENAME COLUMN "window" TO window_name;
DELETE FROM usage_samples WHERE rowid NOT IN (
    SELECT max(rowid) FROM usage_samples GROUP BY account_id, limit_id, window_name, taken_at
);
CREATE UNIQUE INDEX usage_samples_key ON usage_samples (account_id, limit_id, window_name, taken_at);
CREATE INDEX usage_samples_by_time ON usage_samples (taken_at);
CREATE TABLE claims (
    identity        TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    started_at      INTEGER NOT NULL
);
CREATE INDEX claims_by_key ON claims (idempotency_key);
INSERT INTO claims (identity, idempotency_key, account_id, started_at)
    SELECT identity, idempotency_key, account_id, started_at FROM applies
    WHERE status = 'pending' AND identity IS NOT NULL
    ORDER BY started_at DESC, rowid DESC
    ON CONFLICT (identity) DO NOTHING;
""",
}

_WHAT_TO_DO: Final = (
    "move it aside (codex-limits then starts a new ledger; the markers beside the Codex homes keep pending "
    "attempts safe) or restore it from a backup"
)


class _SqliteTx:
    def __init__(self, driver: SqliteDriver, conn: sqlite3.Connection) -> None:
        self._driver = driver
        self._conn = conn

    async def run(self, sql: str, params: Params | None = None) -> Result:
        return await anyio.to_thread.run_sync(self._driver.run_blocking, self._conn, sql, params or {})

    async def run_many(self, sql: str, params: Sequence[Params]) -> None:
        def many() -> None:
            with self._driver.errors():
                self._conn.executemany(sql, params)

        await anyio.to_thread.run_sync(many)


class SqliteDriver:
    """The ledger file of one data directory: its connection, transactions, migrations and errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._busy: anyio.Lock | None = None
        self._locks = local_guard.LocalLocks()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """SQLite's failures as `StoreError`s that name the file and what to do."""
        try:
            yield
        except sqlite3.OperationalError as error:
            text = str(error)
            if "unable to open" in text:
                raise LedgerUnusable(
                    f"the ledger {self.path} cannot be opened ({text}): check it and its directory"
                ) from None
            raise StoreError(
                f"the ledger {self.path} cannot be used ({text}): check that it is writable and the disk has room"
            ) from None
        except sqlite3.DatabaseError as error:  # not a database, malformed: never written over
            raise LedgerUnusable(f"the ledger {self.path} is damaged ({error}): {_WHAT_TO_DO}") from None
        except PermissionError as error:
            raise LedgerUnusable(
                f"the ledger {self.path} cannot be opened ({error.strerror}): check its permissions"
            ) from None
        except OSError as error:  # a read-only file system, a full disk, a directory in the way
            raise LedgerUnusable(f"the ledger {self.path} cannot be opened ({error.strerror or error})") from None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            with self.errors():
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Created if missing, never truncated: a damaged ledger stays as it is for the operator.
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
                # Switching a new database to WAL answers "database is locked" at once, without waiting, when
                # another process is creating it at the same moment: one process sets it up at a time.
                with filelock.FileLock(f"{self.path}.setup.lock", timeout=30, mode=0o600):
                    conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                    try:
                        conn.execute("PRAGMA journal_mode=WAL")
                        _migrate(conn, self.path)
                    except BaseException:
                        conn.close()
                        raise
                conn.execute("PRAGMA synchronous=FULL")
            self._conn = conn
        return self._conn

    def run_blocking(self, conn: sqlite3.Connection, sql: str, params: Params) -> Result:
        with self.errors():
            cursor = conn.execute(sql, dict(params))
            rows = cursor.fetchall()
            return Result(rows, cursor.rowcount)

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_SqliteTx]:
        if self._busy is None:
            self._busy = anyio.Lock()
        async with self._busy:
            conn = await anyio.to_thread.run_sync(self._connect)
            if not write:
                yield _SqliteTx(self, conn)
                return
            await anyio.to_thread.run_sync(self.run_blocking, conn, "BEGIN IMMEDIATE", {})
            try:
                yield _SqliteTx(self, conn)
                await anyio.to_thread.run_sync(self.run_blocking, conn, "COMMIT", {})
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_rollback, conn)
                raise

    def apply_lock(self, account: AccountKey, *, wait: float) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(account, wait=wait)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        self.close()


class SqliteStore(Ledger):
    """The default `Store`: the rules of `Ledger` on a SQLite file in the data directory.

    store = SqliteStore(data_home / FILE_NAME)
    async with store.apply_lock(account, wait=30):
        await store.start(key, account, "alice", None, now, 2)   # claim (row + marker), durable
        ...                                                       # the one consume call
        await store.finish(key, response, 1)                      # outcome; claim released
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteDriver(path)
        super().__init__(self._file, SQLITE)

    def close(self) -> None:
        self._file.close()


def _rollback(conn: sqlite3.Connection) -> None:
    # No transaction may be left (it failed to begin, or SQLite rolled it back itself).
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION in place; refuse a file written by a newer release."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the ledger {path} has schema version {version}, newer than this codex-limits ({SCHEMA_VERSION}); "
            "upgrade codex-limits"
        )
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            _run_script(conn, _SCHEMA_V1)
            version = 1
        for target in range(version + 1, SCHEMA_VERSION + 1):
            _run_script(conn, _MIGRATIONS[target])
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript: it commits first, and a migration must be one transaction.
    for statement in filter(str.strip, script.split(";")):
        conn.execute(statement)
