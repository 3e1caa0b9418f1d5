"""The embedded store: the SQLite ledger of apply attempts and usage history, plus the local guard.

An attempt is written as `pending` (and committed) before the upstream call, then finished with
its outcome and the before/after figures. WAL mode, synchronous=FULL, one transaction per change;
the file stays mode 0600. The pending marker and the apply lock live beside the Codex home
(`local_guard`), so every data directory on the machine sees them and a lost ledger loses no
pending attempt. The schema is versioned (`PRAGMA user_version`) and upgraded in place at open.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import anyio.to_thread
import filelock

from app_server.store import local_guard
from app_server.store.base import AccountKey, Attempt, KeyInUse, StoreError, UsageSample, attempt_from_row
from protocol.ext import AccountPoolApplyResponse, ApplyRecord, ApplyStatus

FILE_NAME: Final = "ledger.sqlite3"

SCHEMA_VERSION: Final = 2

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
}

_COLUMNS: Final = (
    "idempotency_key, account_id, credit_id, status, outcome, error, started_at, finished_at, "
    "available_before, available_after, response_json, identity"
)


class SqliteStore:
    """The default `Store`: a SQLite file in the data directory plus the guard beside each Codex home.

        store = SqliteStore(data_home / FILE_NAME)
        async with store.apply_lock(account, wait=30):
            await store.start(key, account, "alice", None, now, 2)   # marker + pending row, durable
            ...                                                       # the one consume call
            await store.finish(key, response, 1)                      # outcome; marker cleared

    Blocking SQLite calls run in a worker thread, one at a time per store.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._locks = local_guard.LocalLocks()
        # The account of each attempt started here, to clear its marker once the outcome is known
        # (finish and fail always follow a start in the same process).
        self._accounts: dict[str, AccountKey] = {}

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def aclose(self) -> None:
        self.close()

    # Blocking primitives; the async methods below run them in a worker thread.

    def _get(self, key: str) -> Attempt | None:
        with self._lock:
            row = (
                self._connect().execute(f"SELECT {_COLUMNS} FROM applies WHERE idempotency_key = ?", (key,)).fetchone()
            )
        return None if row is None else attempt_from_row(row)

    def _start(
        self, key: str, account: AccountKey, account_id: str, credit_id: str | None, now: int, available: int | None
    ) -> None:
        """Checked and written in one write transaction, so two processes cannot both claim one key for
        different accounts. The marker beside the Codex home is written first: a crash between the two
        leaves a marker, which still blocks new keys."""
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT account_id, status, started_at FROM applies WHERE idempotency_key = ?", (key,)
                ).fetchone()
                started = now
                if row is not None:
                    owner, status = str(row[0]), ApplyStatus(str(row[1]))
                    if owner != account_id or status is ApplyStatus.FINISHED:
                        raise KeyInUse(key, owner, status)
                    started = int(row[2])
                else:
                    marker = local_guard.read_marker(account)
                    if marker is not None and marker.idempotency_key == key:
                        started = marker.started_at or now
                local_guard.write_marker(account, local_guard.Marker(key, account_id, credit_id, started))
                if row is not None:
                    conn.execute(
                        "UPDATE applies SET attempts = attempts + 1, status = 'pending', error = NULL, "
                        "finished_at = NULL, identity = ?, credit_id = COALESCE(credit_id, ?) "
                        "WHERE idempotency_key = ?",
                        (account.identity, credit_id, key),
                    )
                else:
                    conn.execute(
                        "INSERT INTO applies (idempotency_key, account_id, credit_id, status, started_at, "
                        "available_before, identity) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                        (key, account_id, credit_id, started, available, account.identity),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _finish(self, key: str, response: AccountPoolApplyResponse, available_after: int | None) -> None:
        with self._lock:
            conn = self._connect()
            conn.execute(
                "UPDATE applies SET status = 'finished', outcome = ?, finished_at = ?, available_after = ?, "
                "response_json = ?, error = NULL WHERE idempotency_key = ? AND status != 'finished'",
                (response.outcome.value, response.applied_at, available_after, response.model_dump_json(), key),
            )

    def _fail(self, key: str, error: str, now: int, *, keep_pending: bool) -> None:
        status = "pending" if keep_pending else "failed"
        with self._lock:
            # Only a pending attempt can fail: a recorded outcome is never overwritten.
            self._connect().execute(
                "UPDATE applies SET status = ?, error = ?, finished_at = ? WHERE idempotency_key = ? "
                "AND status = 'pending'",
                (status, error, None if keep_pending else now, key),
            )

    def _history(self, account_id: str | None, limit: int) -> list[ApplyRecord]:
        query = f"SELECT {_COLUMNS} FROM applies"
        args: tuple[object, ...] = ()
        if account_id is not None:
            query += " WHERE account_id = ?"
            args = (account_id,)
        query += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
        with self._lock:
            rows = self._connect().execute(query, (*args, limit)).fetchall()
        return [attempt_from_row(row).record for row in rows]

    def _pending(self, account: AccountKey, exclude: str | None, account_id: str | None) -> ApplyRecord | None:
        marker = local_guard.read_marker(account)
        if marker is not None and marker.idempotency_key != exclude:
            attempt = self._get(marker.idempotency_key)
            if attempt is not None and attempt.status is not ApplyStatus.PENDING:
                # The ledger knows the outcome (a crash after the commit, before the marker went): tidy up.
                local_guard.clear_marker(account, marker.idempotency_key)
            elif attempt is not None:
                return attempt.record
            else:
                return ApplyRecord(
                    idempotency_key=marker.idempotency_key,
                    account_id=marker.account_id,
                    credit_id=marker.credit_id,
                    status=ApplyStatus.PENDING,
                    outcome=None,
                    error="recorded beside the Codex home; this ledger has no row for it",
                    started_at=marker.started_at,
                    finished_at=None,
                    available_before=None,
                    available_after=None,
                )
        with self._lock:
            row = (
                self._connect()
                .execute(
                    # Rows of the first release carry no identity: found by pool id.
                    f"SELECT {_COLUMNS} FROM applies WHERE (identity = ? OR (identity IS NULL AND account_id = ?)) "
                    "AND status = 'pending' AND idempotency_key IS NOT ? ORDER BY started_at DESC, rowid DESC LIMIT 1",
                    (account.identity, account_id, exclude),
                )
                .fetchone()
            )
        return None if row is None else attempt_from_row(row).record

    def _settled(self, key: str) -> None:
        account = self._accounts.pop(key, None)
        if account is not None:
            local_guard.clear_marker(account, key)

    def _record_usage(self, samples: list[UsageSample]) -> None:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO usage_samples (account_id, limit_id, window, taken_at, used_percent, "
                    "window_minutes, resets_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (s.account_id, s.limit_id, s.window, s.taken_at, s.used_percent, s.window_minutes, s.resets_at)
                        for s in samples
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _usage_history(self, account_id: str, since: int | None, limit: int) -> list[UsageSample]:
        with self._lock:
            rows = (
                self._connect()
                .execute(
                    "SELECT account_id, limit_id, window, taken_at, used_percent, window_minutes, resets_at "
                    "FROM (SELECT *, rowid AS r FROM usage_samples WHERE account_id = ? AND taken_at >= ? "
                    "ORDER BY taken_at DESC, r DESC LIMIT ?) ORDER BY taken_at, r",
                    (account_id, since if since is not None else -(2**63), limit),
                )
                .fetchall()
            )
        return [
            UsageSample(
                str(a), str(b), str(c), int(d), int(e), None if f is None else int(f), None if g is None else int(g)
            )
            for a, b, c, d, e, f, g in rows
        ]

    def _prune_usage(self, before: int) -> int:
        with self._lock:
            cursor = self._connect().execute("DELETE FROM usage_samples WHERE taken_at < ?", (before,))
        return cursor.rowcount

    # -- the Store interface -----------------------------------------------------------------

    async def get(self, key: str) -> Attempt | None:
        return await anyio.to_thread.run_sync(self._get, key)

    async def start(
        self, key: str, account: AccountKey, account_id: str, credit_id: str | None, now: int, available: int | None
    ) -> None:
        self._accounts[key] = account
        await anyio.to_thread.run_sync(self._start, key, account, account_id, credit_id, now, available)

    async def finish(self, key: str, response: AccountPoolApplyResponse, available_after: int | None) -> None:
        await anyio.to_thread.run_sync(self._finish, key, response, available_after)
        await anyio.to_thread.run_sync(self._settled, key)

    async def fail(self, key: str, error: str, now: int, *, keep_pending: bool) -> None:
        await anyio.to_thread.run_sync(lambda: self._fail(key, error, now, keep_pending=keep_pending))
        if not keep_pending:
            await anyio.to_thread.run_sync(self._settled, key)

    async def history(self, account_id: str | None = None, limit: int = 100) -> list[ApplyRecord]:
        return await anyio.to_thread.run_sync(self._history, account_id, limit)

    async def pending(
        self, account: AccountKey, *, exclude: str | None = None, account_id: str | None = None
    ) -> ApplyRecord | None:
        return await anyio.to_thread.run_sync(self._pending, account, exclude, account_id)

    @asynccontextmanager
    async def apply_lock(self, account: AccountKey, *, wait: float) -> AsyncIterator[None]:
        async with self._locks.hold(account, wait=wait):
            yield

    async def record_usage(self, samples: list[UsageSample]) -> None:
        if samples:
            await anyio.to_thread.run_sync(self._record_usage, samples)

    async def usage_history(self, account_id: str, *, since: int | None, limit: int) -> list[UsageSample]:
        return await anyio.to_thread.run_sync(self._usage_history, account_id, since, limit)

    async def prune_usage(self, before: int) -> int:
        return await anyio.to_thread.run_sync(self._prune_usage, before)


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


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript: it commits first, and a migration must be one transaction.
    for statement in filter(str.strip, script.split(";")):
        conn.execute(statement)
