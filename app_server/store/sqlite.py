"""The SQLite ledger of apply attempts: the record that makes an apply safe to retry, and the audit log.

An attempt is written as `pending` (and committed) before the upstream call, then finished with
its outcome and the before/after figures. WAL mode, synchronous=FULL, one transaction per change;
the file stays mode 0600.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio.to_thread
import filelock

from protocol.ext import AccountPoolApplyResponse, ApplyRecord, ApplyStatus
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome

FILE_NAME: Final = "ledger.sqlite3"

_SCHEMA: Final = """
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

_COLUMNS: Final = (
    "idempotency_key, account_id, credit_id, status, outcome, error, started_at, finished_at, "
    "available_before, available_after, response_json"
)


class KeyInUse(Exception):
    """`start` found the key already taken: by an apply on another account, or one that has finished."""

    def __init__(self, key: str, account_id: str, status: ApplyStatus) -> None:
        super().__init__(f"idempotency key {key!r} is {status.value} on account {account_id!r}")
        self.key = key
        self.account_id = account_id
        self.status = status


@dataclass(frozen=True)
class Attempt:
    record: ApplyRecord
    response: AccountPoolApplyResponse | None

    @property
    def status(self) -> ApplyStatus:
        return self.record.status


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            # Switching a new database to WAL answers "database is locked" at once, without waiting, when
            # another process is creating it at the same moment: one process sets it up at a time.
            with filelock.FileLock(f"{self.path}.setup.lock", timeout=30, mode=0o600):
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            conn.execute("PRAGMA synchronous=FULL")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # Blocking primitives; the async wrappers below run them in a worker thread.

    def _get(self, key: str) -> Attempt | None:
        with self._lock:
            row = (
                self._connect().execute(f"SELECT {_COLUMNS} FROM applies WHERE idempotency_key = ?", (key,)).fetchone()
            )
        return None if row is None else _attempt(row)

    def _start(self, key: str, account_id: str, credit_id: str | None, now: int, available: int | None) -> None:
        """Record the attempt as `pending` (a retry of a pending or failed key counts one more attempt).

        Checked and written in one write transaction, so two processes cannot both claim one key for
        different accounts; raises `KeyInUse` when the key belongs to another account or has finished.
        """
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT account_id, status FROM applies WHERE idempotency_key = ?", (key,)
                ).fetchone()
                if row is not None:
                    owner, status = str(row[0]), ApplyStatus(str(row[1]))
                    if owner != account_id or status is ApplyStatus.FINISHED:
                        raise KeyInUse(key, owner, status)
                    conn.execute(
                        "UPDATE applies SET attempts = attempts + 1, status = 'pending', error = NULL, "
                        "finished_at = NULL WHERE idempotency_key = ?",
                        (key,),
                    )
                else:
                    conn.execute(
                        "INSERT INTO applies (idempotency_key, account_id, credit_id, status, started_at, "
                        "available_before) VALUES (?, ?, ?, 'pending', ?, ?)",
                        (key, account_id, credit_id, now, available),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _finish(self, key: str, response: AccountPoolApplyResponse, available_after: int | None) -> None:
        with self._lock:
            self._connect().execute(
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
        return [_attempt(row).record for row in rows]

    def _pending(self, account_id: str, exclude: str | None) -> ApplyRecord | None:
        with self._lock:
            row = (
                self._connect()
                .execute(
                    f"SELECT {_COLUMNS} FROM applies WHERE account_id = ? AND status = 'pending' "
                    "AND idempotency_key IS NOT ? ORDER BY started_at DESC, rowid DESC LIMIT 1",
                    (account_id, exclude),
                )
                .fetchone()
            )
        return None if row is None else _attempt(row).record

    async def get(self, key: str) -> Attempt | None:
        return await anyio.to_thread.run_sync(self._get, key)

    async def start(self, key: str, account_id: str, credit_id: str | None, now: int, available: int | None) -> None:
        await anyio.to_thread.run_sync(self._start, key, account_id, credit_id, now, available)

    async def finish(self, key: str, response: AccountPoolApplyResponse, available_after: int | None) -> None:
        await anyio.to_thread.run_sync(self._finish, key, response, available_after)

    async def fail(self, key: str, error: str, now: int, *, keep_pending: bool) -> None:
        await anyio.to_thread.run_sync(lambda: self._fail(key, error, now, keep_pending=keep_pending))

    async def history(self, account_id: str | None = None, limit: int = 100) -> list[ApplyRecord]:
        return await anyio.to_thread.run_sync(self._history, account_id, limit)

    async def pending(self, account_id: str, *, exclude: str | None = None) -> ApplyRecord | None:
        """The latest attempt on the account whose outcome is unknown, other than `exclude` (the one running)."""
        return await anyio.to_thread.run_sync(self._pending, account_id, exclude)


def _attempt(row: tuple[object, ...]) -> Attempt:
    (key, account_id, credit_id, status, outcome, error, started, finished, before, after, response) = row
    record = ApplyRecord(
        idempotency_key=str(key),
        account_id=str(account_id),
        credit_id=None if credit_id is None else str(credit_id),
        status=ApplyStatus(str(status)),
        outcome=None if outcome is None else ConsumeAccountRateLimitResetCreditOutcome(str(outcome)),
        error=None if error is None else str(error),
        started_at=int(str(started)),
        finished_at=None if finished is None else int(str(finished)),
        available_before=None if before is None else int(str(before)),
        available_after=None if after is None else int(str(after)),
    )
    parsed = None if response is None else AccountPoolApplyResponse.model_validate_json(str(response))
    return Attempt(record, parsed)
