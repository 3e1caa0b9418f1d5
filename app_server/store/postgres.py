"""The PostgreSQL driver: one database shared by every codex-limits service of a team, on any machine.

    store = await PostgresStore.open("postgresql://user:password@db.internal:5432/codex_limits")
    async with store.apply_lock(account, wait=30):
        ...
    await store.aclose()

The rules are `ledger.Ledger`'s; this module owns the connections, transactions, the apply lock, the
migrations and the error messages. Only it imports psycopg (3, async) and psycopg_pool: it is loaded
when a PostgreSQL URL is configured. `open` checks the server, applies the schema migrations
(`migrations_pg.py`) under a fixed transaction-level advisory lock, and refuses a schema newer than the code.

Tables: `applies` (the ledger), `claims` (one row per upstream identity with an attempt whose outcome is
unknown: the claim, inserted with ON CONFLICT DO NOTHING in the transaction that records the attempt),
`usage_samples` and `schema_version`.

The apply lock: a session-level advisory lock, `pg_advisory_lock(<64-bit hash of the identity>)`, taken
on a connection of its own, opened for the attempt and closed after it. PostgreSQL ties such a lock to
the session, so a holder that crashes, is SIGKILLed or loses its machine releases it when its connection
dies (at once for a dead process, whose kernel closes the socket; within about a minute for a vanished
machine, through the TCP keepalives set on that connection); a lease row would instead need a clock, a
renewal task and fencing tokens checked on every write, for no gain here, because what guards the money
is the claim committed before the consume, which refuses every other key whoever holds the lock. A lock
lost while held (its connection killed) lets a waiter in early; that waiter's `start` is refused.

The wait is PostgreSQL's own (`lock_timeout` on a blocking `pg_advisory_lock`) rather than a loop of
`pg_try_advisory_lock`: a waiter is woken the moment the lock is released, and nothing polls the server;
`wait <= 0` tries once. A waiter cancelled mid-wait is taken out of the lock's queue at once
(`pg_cancel_backend` on its backend, and `client_connection_check_interval` on PostgreSQL 14+), so it never
takes the lock for nobody.

Errors: an unreachable server, a malformed URL, refused credentials and a schema newer than the code
raise `StoreError`, naming host:port and never the password; so does a connection lost later on. The
password appears in no message, log line or repr: messages are built from the parsed parts, and libpq's
own text is scrubbed of it as well.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import anyio
import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app_server.store.base import AccountKey, LockTimeout, StoreError
from app_server.store.ledger import POSTGRES, Ledger, Params, Result
from app_server.store.migrations_pg import LATEST, MIGRATIONS, SCHEMA_VERSION_TABLE

__all__ = ["PostgresDriver", "PostgresStore"]

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
# Settings of the apply lock's own connection: no server-side timeout may end a lock held or awaited on
# purpose, and the server notices a vanished client within about a minute.
_LOCK_SESSION_SETTINGS: Final = (
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
)
# Beyond the server's own lock_timeout, how long a waiter trusts a silent network before giving up.
_LOCK_WAIT_GRACE: Final = 10.0


def _advisory_key(namespace: str, name: str) -> int:
    digest = hashlib.sha256(f"codex-limits\0{namespace}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_MIGRATION_LOCK: Final = _advisory_key("migrations", "schema")

_MALFORMED: Final = "the PostgreSQL URL is malformed (expected postgresql://user:password@host:port/database)"


@dataclass(frozen=True)
class _Target:
    """The parsed URL: the conninfo to connect with, and what may be shown of it."""

    conninfo: str = field(repr=False)  # carries the password
    where: str  # host:port
    user: str
    database: str
    password: str | None = field(repr=False)
    connect_timeout: float

    @classmethod
    def parse(cls, url: str, connect_timeout: float) -> _Target:
        params: dict[str, Any] | None
        try:
            params = conninfo_to_dict(url)
        except (psycopg.Error, ValueError, TypeError):
            params = None  # its message may quote the password: never shown
        if params is None:
            raise StoreError(_MALFORMED)
        port = str(params.get("port") or "5432")
        if not all(part.isdigit() and 0 < int(part) < 65536 for part in port.split(",")):
            raise StoreError(f"{_MALFORMED}: the port is not a number")
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        password = params.get("password")
        params.setdefault("connect_timeout", str(max(2, math.ceil(connect_timeout))))
        try:
            timeout = float(str(params["connect_timeout"]))
        except ValueError:
            raise StoreError(f"{_MALFORMED}: connect_timeout is not a number") from None
        params.setdefault("application_name", "codex-limits")
        # Notice a dead server on an idle connection (the lock's connection is idle while held).
        params.setdefault("keepalives", "1")
        params.setdefault("keepalives_idle", "30")
        params.setdefault("keepalives_interval", "10")
        params.setdefault("keepalives_count", "3")
        user = str(params.get("user") or "")
        return cls(
            conninfo=make_conninfo("", **params),
            where=f"{host}:{port}",
            user=user,
            database=str(params.get("dbname") or user),
            password=None if password is None else str(password),
            connect_timeout=timeout,
        )

    @property
    def description(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"postgresql://{user}{self.where}/{self.database}"

    def scrub(self, text: str) -> str:
        if self.password:
            for form in {self.password, quote(self.password, safe=""), quote(self.password)}:
                text = text.replace(form, "***")
        return text

    def connection_error(self, error: BaseException) -> StoreError:
        """A `StoreError` for a failed connection attempt: unreachable, refused credentials, no database."""
        text = self.scrub(str(error))
        low = text.lower()
        if "authentication failed" in low or "no pg_hba.conf entry" in low or "no password supplied" in low:
            return StoreError(f"PostgreSQL at {self.where} refused the credentials of user {self.user!r}")
        if "does not exist" in low:
            return StoreError(f"PostgreSQL at {self.where}: {_reason(text)}")
        return StoreError(f"cannot reach PostgreSQL at {self.where}: {_reason(text)}")

    def operation_error(self, error: BaseException) -> StoreError:
        """A `StoreError` for a connection lost or refused while working."""
        if isinstance(error, PoolTimeout):
            return StoreError(f"no connection to PostgreSQL at {self.where} became available in time")
        return StoreError(f"PostgreSQL at {self.where} failed: {_reason(self.scrub(str(error)))}")

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn connection-level failures into `StoreError` (domain errors such as `KeyInUse` pass)."""
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise self.operation_error(error) from None

    async def connect(self, *, autocommit: bool) -> Connection:
        failure: StoreError | None = None
        try:
            with anyio.fail_after(self.connect_timeout + 5):
                return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=autocommit)
        except psycopg.Error as error:
            failure = self.connection_error(error)
        except TimeoutError:
            failure = StoreError(f"cannot reach PostgreSQL at {self.where}: no answer in {self.connect_timeout:g} s")
        raise failure  # outside the except block: no chained libpq text


def _reason(text: str) -> str:
    """The gist of a libpq message: its first line, after the last 'failed:', without 'FATAL:'."""
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    gist = first.rsplit("failed:", 1)[-1].strip()
    for prefix in ("FATAL:", "ERROR:"):
        gist = gist.removeprefix(prefix).strip()
    return gist or first


_PARAM: Final = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    """The ledger's `:name` parameters as psycopg's `%(name)s`."""
    return _PARAM.sub(r"%(\1)s", sql)


class _PgTx:
    def __init__(self, conn: Connection, target: _Target) -> None:
        self._conn = conn
        self._target = target

    async def run(self, sql: str, params: Params | None = None) -> Result:
        with self._target.errors():
            cur = await self._conn.execute(_pg_sql(sql), dict(params or {}))
            rows = await cur.fetchall() if cur.description is not None else []
            return Result(list(rows), max(0, cur.rowcount))

    async def run_many(self, sql: str, params: Sequence[Params]) -> None:
        with self._target.errors():
            async with self._conn.cursor() as cur:
                await cur.executemany(_pg_sql(sql), [dict(p) for p in params])


class PostgresDriver:
    """The connections to one PostgreSQL database: a pool for the ledger, one connection per apply lock."""

    def __init__(self, pool: AsyncConnectionPool[Connection], target: _Target) -> None:
        self._pool = pool
        self._target = target

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 4,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        check_connections: bool = True,
    ) -> PostgresDriver:
        target = _Target.parse(url, connect_timeout)
        conn = await target.connect(autocommit=True)
        try:
            await _migrate(conn, target)
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            target.conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            name="codex-limits",
            check=AsyncConnectionPool.check_connection if check_connections else None,
            timeout=max(10.0, target.connect_timeout * 2),
        )
        failure: StoreError | None = None
        try:
            await pool.open(wait=True, timeout=target.connect_timeout + 5)
        except (PoolTimeout, psycopg.Error) as error:
            failure = target.connection_error(error)
        if failure is not None:
            await pool.close()
            raise failure
        return cls(pool, target)

    @property
    def description(self) -> str:
        return self._target.description

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        with self._target.errors():
            async with self._pool.connection() as conn:
                yield conn

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_PgTx]:
        async with self._connection() as conn:
            if not write:
                yield _PgTx(conn, self._target)
                return
            with self._target.errors():
                async with conn.transaction():
                    yield _PgTx(conn, self._target)

    # The apply lock.

    def apply_lock(self, account: AccountKey, *, wait: float) -> AbstractAsyncContextManager[None]:
        return self._apply_lock(account, wait)

    @asynccontextmanager
    async def _apply_lock(self, account: AccountKey, wait: float) -> AsyncIterator[None]:
        key = _advisory_key("apply", account.identity)
        conn = await self._target.connect(autocommit=True)
        pid = conn.info.backend_pid
        try:
            with self._target.errors():
                await _acquire(conn, key, wait)
        except BaseException:
            with anyio.CancelScope(shield=True):
                # Cancelled mid-wait, psycopg drops the connection, but a backend waiting for a lock does
                # not read its socket: ask the server to end that wait, lest it take the lock for nobody.
                abandoned = conn.closed or conn.broken
                await conn.close()
                if abandoned:
                    await self._cancel_backend(pid)
            raise
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self._release(conn, key, account)

    async def _cancel_backend(self, pid: int) -> None:
        with anyio.move_on_after(5):
            try:
                async with self._connection() as conn:
                    await conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
            except (StoreError, psycopg.Error):
                pass  # the server will drop the waiter at its lock_timeout, or when it fails to answer

    async def _release(self, conn: Connection, key: int, account: AccountKey) -> None:
        held: bool | None = None
        try:
            with anyio.move_on_after(5):
                cur = await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                row = await cur.fetchone()
                held = bool(row and row[0])
        except psycopg.Error:
            held = False
        finally:
            await conn.close()  # releases the lock in any case
        if held is False:
            logger.warning(
                "the apply lock of %s was lost while held (its connection to PostgreSQL at %s broke)",
                account.identity,
                self._target.where,
            )

    async def aclose(self) -> None:
        await self._pool.close()


class PostgresStore(Ledger):
    """The `Store` on a PostgreSQL server shared by several machines. Create it with `await open(url)`.

    Parameters of `open`:
        url: `postgresql://user:password@host:port/database` (libpq's URL or key=value forms).
        pool_size: the most connections kept for ledger and usage calls (apply locks take their own).
        connect_timeout: seconds to reach the server before `StoreError`.
        check_connections: check a pooled connection before handing it out (one round trip), so that a
            restarted server costs no failed call.
    """

    def __init__(self, driver: PostgresDriver) -> None:
        super().__init__(driver, POSTGRES)
        self._description = driver.description

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 4,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        check_connections: bool = True,
    ) -> PostgresStore:
        driver = await PostgresDriver.open(
            url, pool_size=pool_size, connect_timeout=connect_timeout, check_connections=check_connections
        )
        return cls(driver)

    def __repr__(self) -> str:
        return f"PostgresStore({self._description!r})"


async def _migrate(conn: Connection, target: _Target) -> None:
    """Bring the schema to `LATEST`, one process at a time; refuse a newer schema."""
    failure: StoreError | None = None
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(SCHEMA_VERSION_TABLE)
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            row = await cur.fetchone()
            current = 0 if row is None else int(row[0])
            if current > LATEST:
                raise StoreError(
                    f"the database schema is version {current}, newer than this codex-limits ({LATEST}); "
                    "upgrade codex-limits"
                )
            for migration in MIGRATIONS:
                if migration.version > current:
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                    logger.info("PostgreSQL schema migrated to version %d (%s)", migration.version, migration.name)
    except psycopg.OperationalError as error:
        failure = target.operation_error(error)
    except psycopg.Error as error:
        failure = StoreError(
            f"cannot set up the schema in PostgreSQL at {target.where}: {_reason(target.scrub(str(error)))}"
        )
    if failure is not None:
        raise failure


async def _acquire(conn: Connection, key: int, wait: float) -> None:
    for name, value in _LOCK_SESSION_SETTINGS:
        await conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    if conn.info.server_version >= 140000:
        await conn.execute("SELECT set_config('idle_session_timeout', '0', false)")
        # A waiter whose client went away (cancelled, killed) leaves the lock's queue within a second.
        await conn.execute("SELECT set_config('client_connection_check_interval', '1s', false)")
    if wait <= 0:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        row = await cur.fetchone()
        if not (row and row[0]):
            raise LockTimeout(wait)
        return
    await conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, math.ceil(wait * 1000))}ms",))
    try:
        with anyio.fail_after(wait + _LOCK_WAIT_GRACE):
            await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    except (psycopg.errors.LockNotAvailable, TimeoutError):
        raise LockTimeout(wait) from None
