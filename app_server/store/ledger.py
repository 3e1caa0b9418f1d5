"""The store's rules, written once: the apply ledger, claims, history and usage history, over a driver.

    store = Ledger(SqliteDriver(path), SQLITE)          # or Ledger(PostgresDriver(...), POSTGRES)
    async with store.apply_lock(account, wait=30):      # orders waiters; does not guard the money
        await store.start(key, account, "alice", None, now, 2)   # the claim: refused while another key pends
        ...                                                       # the one consume call
        await store.finish(key, response, 1)                      # outcome; the key's claims released

The SQL below is the same text for both databases: named parameters (`:name`, which the PostgreSQL driver
rewrites to `%(name)s`), `INSERT ... ON CONFLICT`, and `RETURNING` mean the same in SQLite (3.35+) and
PostgreSQL. What differs is the `Dialect` (the column that orders rows written in the same second, row
locking, null-safe comparison, markers beside the Codex home) and the `Driver` (connections, transactions,
the apply lock, migrations, error translation).

The claim is the lock. `start` runs in one write transaction: the key rule, then `INSERT INTO claims ...
ON CONFLICT (identity) DO NOTHING`; if the identity is claimed by another key (or another key's attempt
on it is pending in the ledger) it raises `ClaimHeld` and the transaction writes nothing. With SQLite the
claim is also the marker beside the Codex home, created exclusively inside that transaction: other data
directories on the machine see it, while they do not see this ledger. A claim is released only by
settling its own key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

import anyio.to_thread

from app_server.store import local_guard
from app_server.store.base import (
    AccountKey,
    Attempt,
    ClaimHeld,
    KeyInUse,
    StoreError,
    UsageSample,
    attempt_from_row,
    record_from_row,
)
from protocol.ext import AccountPoolApplyResponse, ApplyRecord, ApplyStatus

Row = Sequence[object]
Params = Mapping[str, object]


@dataclass(frozen=True)
class Result:
    """What a driver's statement returned: its rows and its row count."""

    rows: list[Row]
    rowcount: int


class Tx(Protocol):
    """One transaction (or, for reads, one connection) of a driver."""

    async def run(self, sql: str, params: Params = ...) -> Result: ...

    async def run_many(self, sql: str, params: Sequence[Params]) -> None: ...


class Driver(Protocol):
    """What a database gives the ledger: transactions, the apply lock, closing."""

    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[Tx]:
        """`write`: one write transaction, serialised with other writers of the same rows; else a read."""
        ...

    def apply_lock(self, account: AccountKey, *, wait: float) -> AbstractAsyncContextManager[None]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Dialect:
    """Where the two databases differ in the rules' SQL."""

    name: str
    seq: str  # orders rows written in the same second: SQLite's rowid, PostgreSQL's identity column
    for_update: str  # row lock on a read inside a write transaction (SQLite's write transaction locks it all)
    markers: bool  # claims are also markers beside the Codex homes (a ledger per data directory)
    distinct: str  # null-safe "differs from" (SQLite before 3.39 lacks IS DISTINCT FROM)


SQLITE: Final = Dialect("sqlite", seq="rowid", for_update="", markers=True, distinct="IS NOT")
POSTGRES: Final = Dialect("postgres", seq="seq", for_update=" FOR UPDATE", markers=False, distinct="IS DISTINCT FROM")

RECORD_COLUMNS: Final = (
    "idempotency_key, account_id, credit_id, status, outcome, error, started_at, finished_at, "
    "available_before, available_after"
)
COLUMNS: Final = f"{RECORD_COLUMNS}, response_json, identity"
USAGE_COLUMNS: Final = "account_id, limit_id, window_name, taken_at, used_percent, window_minutes, resets_at"
_A_RECORD: Final = ", ".join(f"a.{c.strip()}" for c in RECORD_COLUMNS.split(","))
_MIN_TIME: Final = -(2**63)

# Another key's pending attempt on this identity in the ledger (rows of the first SQLite release carry
# no identity: found by pool id).
_OTHER_PENDING: Final = (
    "SELECT idempotency_key, account_id FROM applies WHERE (identity = :identity "
    "OR (identity IS NULL AND account_id = :account_id)) AND status = 'pending' "
    "AND idempotency_key <> :key LIMIT 1"
)


class Ledger:
    """The `Store`, over a driver. Every method is safe to call from several tasks at once."""

    def __init__(self, driver: Driver, dialect: Dialect) -> None:
        self.driver = driver
        self.dialect = dialect
        # The accounts each key was started on here, to remove its markers once settled (a settle always
        # follows a start, or a re-take, in the same process).
        self._accounts: dict[str, set[AccountKey]] = {}

    # -- the ledger ----------------------------------------------------------------------------

    async def get(self, key: str) -> Attempt | None:
        async with self.driver.transaction(write=False) as tx:
            result = await tx.run(f"SELECT {COLUMNS} FROM applies WHERE idempotency_key = :key", {"key": key})
        return attempt_from_row(result.rows[0]) if result.rows else None

    async def start(
        self, key: str, account: AccountKey, account_id: str, credit_id: str | None, now: int, available: int | None
    ) -> None:
        args = {
            "key": key,
            "account_id": account_id,
            "identity": account.identity,
            "credit_id": credit_id,
            "now": now,
            "available": available,
        }
        self._accounts.setdefault(key, set()).add(account)
        async with self.driver.transaction(write=True) as tx:
            # The insert waits for a concurrent insert of the same key to commit, then does nothing.
            inserted = await tx.run(
                "INSERT INTO applies (idempotency_key, account_id, identity, credit_id, status, started_at, "
                "available_before) VALUES (:key, :account_id, :identity, :credit_id, 'pending', :now, :available) "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING started_at",
                args,
            )
            if inserted.rows:
                started = int(str(inserted.rows[0][0]))
            else:
                started = await self._retake_key(tx, key, account, account_id, credit_id)
            other = await tx.run(_OTHER_PENDING, args)
            if other.rows:
                holder, owner = other.rows[0]
                raise ClaimHeld(key, str(holder), str(owner))
            await self._claim(tx, key, account, account_id, started)
            if self.dialect.markers:
                marker = local_guard.Marker(key, account_id, credit_id, started)
                standing = await anyio.to_thread.run_sync(local_guard.claim_marker, account, marker)
                if inserted.rows and standing.started_at and standing.started_at != started:
                    # This ledger lost the row (deleted, another data directory): the first start stays.
                    await tx.run(
                        "UPDATE applies SET started_at = :started WHERE idempotency_key = :key",
                        {"started": standing.started_at, "key": key},
                    )

    async def _retake_key(self, tx: Tx, key: str, account: AccountKey, account_id: str, credit_id: str | None) -> int:
        """A key already in the ledger: a retry of a pending or failed attempt of this account (the same pool
        id, or any pool id on the same upstream identity) counts one more attempt; anything else is refused.
        The first identity, start and count of credits stay; a credit first unknown is filled in."""
        found = await tx.run(
            f"SELECT account_id, identity, status, started_at FROM applies WHERE idempotency_key = :key"
            f"{self.dialect.for_update}",
            {"key": key},
        )
        if not found.rows:
            raise StoreError(f"the ledger row of {key!r} vanished while it was being started")
        owner, identity, status_text, started = found.rows[0]
        status = ApplyStatus(str(status_text))
        if status is ApplyStatus.FINISHED or (str(owner) != account_id and identity != account.identity):
            raise KeyInUse(key, str(owner), status)
        await tx.run(
            "UPDATE applies SET attempts = attempts + 1, status = 'pending', error = NULL, finished_at = NULL, "
            "credit_id = COALESCE(credit_id, :credit_id), identity = COALESCE(identity, :identity) "
            "WHERE idempotency_key = :key",
            {"key": key, "credit_id": credit_id, "identity": account.identity},
        )
        return int(str(started))

    async def _claim(self, tx: Tx, key: str, account: AccountKey, account_id: str, started: int) -> None:
        """The one atomic conditional write: the identity's claim for `key`, unless another key holds it."""
        args = {"identity": account.identity, "key": key, "account_id": account_id, "started": started}
        for _ in range(3):  # a claim released between our insert and our read: insert again
            claimed = await tx.run(
                "INSERT INTO claims (identity, idempotency_key, account_id, started_at) "
                "VALUES (:identity, :key, :account_id, :started) ON CONFLICT (identity) DO NOTHING "
                "RETURNING idempotency_key",
                args,
            )
            if claimed.rows:
                return
            holder = await tx.run("SELECT idempotency_key, account_id FROM claims WHERE identity = :identity", args)
            if holder.rows:
                holder_key, holder_account = holder.rows[0]
                if str(holder_key) != key:
                    raise ClaimHeld(key, str(holder_key), str(holder_account))
                return
        raise StoreError(f"the claim on {account.identity} kept changing hands; try {key!r} again")

    async def finish(self, key: str, response: AccountPoolApplyResponse, available_after: int | None) -> None:
        async with self.driver.transaction(write=True) as tx:
            await tx.run(
                "UPDATE applies SET status = 'finished', outcome = :outcome, finished_at = :at, "
                "available_after = :after, response_json = :response, error = NULL "
                "WHERE idempotency_key = :key AND status <> 'finished'",
                {
                    "outcome": response.outcome.value,
                    "at": response.applied_at,
                    "after": available_after,
                    "response": response.model_dump_json(),
                    "key": key,
                },
            )
            await self._release(tx, key)
        await self._release_markers(key)

    async def fail(self, key: str, error: str, now: int, *, keep_pending: bool) -> None:
        async with self.driver.transaction(write=True) as tx:
            # Only a pending attempt can fail: a recorded outcome is never overwritten.
            await tx.run(
                "UPDATE applies SET status = :status, error = :error, finished_at = :at "
                "WHERE idempotency_key = :key AND status = 'pending'",
                {
                    "status": "pending" if keep_pending else "failed",
                    "error": error,
                    "at": None if keep_pending else now,
                    "key": key,
                },
            )
            if not keep_pending:
                await self._release(tx, key)
        if not keep_pending:
            await self._release_markers(key)

    async def _release(self, tx: Tx, key: str) -> None:
        """Drop the claims of `key`; an identity with another attempt still pending (data from before
        claims were exclusive, a retry under another identity) stays claimed by it."""
        released = await tx.run("DELETE FROM claims WHERE idempotency_key = :key RETURNING identity", {"key": key})
        for (identity,) in released.rows:
            await tx.run(
                "INSERT INTO claims (identity, idempotency_key, account_id, started_at) "
                "SELECT identity, idempotency_key, account_id, started_at FROM applies "
                "WHERE identity = :identity AND status = 'pending' AND idempotency_key <> :key "
                f"ORDER BY started_at DESC, {self.dialect.seq} DESC LIMIT 1 ON CONFLICT (identity) DO NOTHING",
                {"identity": identity, "key": key},
            )

    async def _release_markers(self, key: str) -> None:
        if self.dialect.markers:
            for account in self._accounts.pop(key, ()):
                await anyio.to_thread.run_sync(local_guard.clear_marker, account, key)

    async def history(self, account_id: str | None = None, limit: int = 100) -> list[ApplyRecord]:
        where = "" if account_id is None else " WHERE account_id = :account_id"
        async with self.driver.transaction(write=False) as tx:
            result = await tx.run(
                f"SELECT {RECORD_COLUMNS} FROM applies{where} "
                f"ORDER BY started_at DESC, {self.dialect.seq} DESC LIMIT :limit",
                {"account_id": account_id, "limit": max(0, limit)},
            )
        return [record_from_row(row) for row in result.rows]

    async def pending(
        self, account: AccountKey, *, exclude: str | None = None, account_id: str | None = None
    ) -> ApplyRecord | None:
        if self.dialect.markers:
            found = await self._marker_pending(account, exclude)
            if found is not None:
                return found
        # The latest of: a pending row charged to this identity (or, for rows without one, to this pool id),
        # a pending row the identity's claim names (a retry from another identity), the claim alone when
        # its row is gone.
        seq, d = self.dialect.seq, self.dialect.distinct
        async with self.driver.transaction(write=False) as tx:
            result = await tx.run(
                f"""
SELECT {RECORD_COLUMNS} FROM (
    SELECT {RECORD_COLUMNS}, {seq} AS n FROM applies
    WHERE (identity = :i OR (identity IS NULL AND account_id = :a)) AND status = 'pending'
      AND idempotency_key {d} :x
  UNION ALL
    SELECT {_A_RECORD}, a.{seq} AS n
    FROM claims c JOIN applies a ON a.idempotency_key = c.idempotency_key
    WHERE c.identity = :i AND a.identity <> :i AND a.status = 'pending'
      AND c.idempotency_key {d} :x
  UNION ALL
    SELECT c.idempotency_key, c.account_id, NULL, 'pending', NULL, NULL, c.started_at, NULL, NULL, NULL, NULL
    FROM claims c
    WHERE c.identity = :i AND c.idempotency_key {d} :x
      AND NOT EXISTS (SELECT 1 FROM applies a WHERE a.idempotency_key = c.idempotency_key)
) candidates
ORDER BY started_at DESC, n DESC
LIMIT 1
""",
                {"i": account.identity, "a": account_id, "x": exclude},
            )
        return record_from_row(result.rows[0]) if result.rows else None

    async def _marker_pending(self, account: AccountKey, exclude: str | None) -> ApplyRecord | None:
        marker = await anyio.to_thread.run_sync(local_guard.read_marker, account)
        if marker is None or marker.idempotency_key == exclude:
            return None
        attempt = await self.get(marker.idempotency_key)
        if attempt is not None and attempt.status is not ApplyStatus.PENDING:
            # The ledger knows the outcome (a crash after the commit, before the marker went): tidy up.
            await anyio.to_thread.run_sync(local_guard.clear_marker, account, marker.idempotency_key)
            return None
        if attempt is not None:
            return attempt.record
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

    # -- the apply lock -------------------------------------------------------------------------

    @asynccontextmanager
    async def apply_lock(self, account: AccountKey, *, wait: float) -> AsyncIterator[None]:
        async with self.driver.apply_lock(account, wait=wait):
            yield

    # -- usage history --------------------------------------------------------------------------

    async def record_usage(self, samples: list[UsageSample]) -> None:
        """A sample is keyed by account, limit, window and second: recording one twice keeps the later values."""
        if not samples:
            return
        async with self.driver.transaction(write=True) as tx:
            await tx.run_many(
                f"INSERT INTO usage_samples ({USAGE_COLUMNS}) VALUES (:account_id, :limit_id, :window, :taken_at, "
                ":used_percent, :window_minutes, :resets_at) "
                "ON CONFLICT (account_id, limit_id, window_name, taken_at) DO UPDATE SET "
                "used_percent = excluded.used_percent, window_minutes = excluded.window_minutes, "
                "resets_at = excluded.resets_at",
                [
                    {
                        "account_id": s.account_id,
                        "limit_id": s.limit_id,
                        "window": s.window,
                        "taken_at": s.taken_at,
                        "used_percent": s.used_percent,
                        "window_minutes": s.window_minutes,
                        "resets_at": s.resets_at,
                    }
                    for s in samples
                ],
            )

    async def usage_history(self, account_id: str, *, since: int | None, limit: int) -> list[UsageSample]:
        """The newest `limit` samples at or after `since`, oldest first."""
        async with self.driver.transaction(write=False) as tx:
            result = await tx.run(
                f"SELECT {USAGE_COLUMNS} FROM (SELECT {USAGE_COLUMNS} FROM usage_samples "
                "WHERE account_id = :account_id AND taken_at >= :since "
                "ORDER BY taken_at DESC, limit_id DESC, window_name DESC LIMIT :limit) newest "
                "ORDER BY taken_at, limit_id, window_name",
                {"account_id": account_id, "since": _MIN_TIME if since is None else since, "limit": max(0, limit)},
            )
        return [
            UsageSample(
                account_id=str(r[0]),
                limit_id=str(r[1]),
                window=str(r[2]),
                taken_at=int(str(r[3])),
                used_percent=int(str(r[4])),
                window_minutes=None if r[5] is None else int(str(r[5])),
                resets_at=None if r[6] is None else int(str(r[6])),
            )
            for r in result.rows
        ]

    async def prune_usage(self, before: int) -> int:
        async with self.driver.transaction(write=True) as tx:
            result = await tx.run("DELETE FROM usage_samples WHERE taken_at < :before", {"before": before})
        return max(0, result.rowcount)

    async def aclose(self) -> None:
        await self.driver.aclose()
