"""What is particular to the PostgreSQL store, against a real server: claim rows by upstream identity, the
advisory apply lock seen from the server (waiters, terminated and killed holders), migrations, and errors
that are clear and never carry the password. The rules it shares with SQLite: `test_store_contract.py`."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
import pytest

from app_server.store.base import AccountKey, ClaimHeld, LockTimeout, Store, StoreError
from app_server.store.migrations_pg import LATEST, MIGRATIONS, SCHEMA_VERSION_TABLE
from app_server.store.postgres import PostgresStore
from protocol.ext import ApplyRecord, ApplyStatus
from tests.support import postgres as support_postgres
from tests.support.ledger_data import response
from tests.support.postgres import PostgresCluster, free_port

pytestmark = pytest.mark.anyio

WAIT = 20.0
ROOT = Path(__file__).resolve().parents[2]

ALICE = AccountKey("chatgpt:acct-a:user-a", Path("/homes/alice"))
BOB = AccountKey("chatgpt:acct-b:user-b", Path("/homes/bob"))


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    with anyio.fail_after(WAIT):
        opened = await PostgresStore.open(pg_url)
    yield opened
    with anyio.fail_after(WAIT):
        await opened.aclose()


async def query(url: str, sql: Any, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own (the test's view of the database)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []


async def claim(url: str, identity: str) -> tuple[Any, ...] | None:
    sql = "SELECT idempotency_key, account_id, started_at FROM claims WHERE identity = %s"
    rows = await query(url, sql, (identity,))
    return rows[0] if rows else None


def texts(error: BaseException) -> str:
    return "\n".join((str(error), repr(error), "".join(traceback.format_exception(error))))


# Claims.


async def test_it_is_a_store(store: PostgresStore) -> None:
    typed: Store = store
    assert typed is store
    assert repr(store).startswith("PostgresStore('postgresql://postgres@127.0.0.1:")


async def test_the_claim_row_follows_the_identitys_pending_attempts(store: PostgresStore, pg_url: str) -> None:
    """Taken with the pending row, kept while the outcome is unknown, refused to another key (nothing
    written), held on both identities by a retry under another one, released when its key settles."""
    with anyio.fail_after(WAIT):
        await store.start("old", ALICE, "alice", None, 1_790_000_000, 2)
        first = await claim(pg_url, ALICE.identity)
        await store.fail("old", "ambiguous", 1_790_000_010, keep_pending=True)
        kept = await claim(pg_url, ALICE.identity)
        with pytest.raises(ClaimHeld) as refused:
            await store.start("new", ALICE, "alice", None, 1_790_000_100, 2)
        new_row = await store.get("new")
        await store.start("old", BOB, "alice", None, 1_790_000_200, 2)  # the retry, signed in as bob now
        both = [await claim(pg_url, ALICE.identity), await claim(pg_url, BOB.identity)]
        await store.fail("old", "refused", 1_790_000_300, keep_pending=False)
        gone = [await claim(pg_url, ALICE.identity), await claim(pg_url, BOB.identity)]
    assert first == kept == ("old", "alice", 1_790_000_000)
    assert (refused.value.key, refused.value.holder, refused.value.holder_account_id) == ("new", "old", "alice")
    assert new_row is None
    assert both == [("old", "alice", 1_790_000_000)] * 2
    assert gone == [None, None]


async def test_a_settled_claim_moves_to_an_older_pending_attempt(store: PostgresStore, pg_url: str) -> None:
    """Ledgers from before claims were exclusive may hold two pending attempts on one identity: when the
    claimed one settles, the claim moves to the other, so it still blocks a new key."""
    with anyio.fail_after(WAIT):
        await store.start("new", ALICE, "alice", None, 1_790_000_100, 2)
        await query(
            pg_url,
            "INSERT INTO applies (idempotency_key, account_id, identity, status, started_at) "
            "VALUES ('old', 'alice', %s, 'pending', 1790000000)",
            (ALICE.identity,),
        )
        await store.finish("new", response("alice"), 1)
        moved = await claim(pg_url, ALICE.identity)
        with pytest.raises(ClaimHeld):
            await store.start("third", ALICE, "alice", None, 1_790_000_200, 1)
    assert moved == ("old", "alice", 1_790_000_000)


async def test_the_claim_alone_reports_a_pending_attempt(store: PostgresStore, pg_url: str) -> None:
    with anyio.fail_after(WAIT):
        await store.start("k1", ALICE, "alice", None, 1_790_000_000, 2)
        await store.fail("k1", "ambiguous", 1_790_000_010, keep_pending=True)
        await query(pg_url, "DELETE FROM applies WHERE idempotency_key = 'k1'")
        found = await store.pending(ALICE)
        excluded = await store.pending(ALICE, exclude="k1")
        await store.finish("k1", response("alice"), 1)
        cleared = await store.pending(ALICE)
    assert found == ApplyRecord(
        idempotency_key="k1", account_id="alice", status=ApplyStatus.PENDING, started_at=1_790_000_000
    )
    assert excluded is None
    assert cleared is None


# The apply lock.


async def advisory_locks(url: str, *, granted: bool) -> list[int]:
    rows = await query(
        url,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = %s "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (granted,),
    )
    return [int(row[0]) for row in rows]


async def until(condition: Any) -> None:
    """Poll a condition on the server (the caller bounds the wait with `fail_after`)."""
    # The state polled (a backend queued on a lock) lives on the server: no event of ours can signal it.
    while not await condition():  # noqa: ASYNC110
        await anyio.sleep(0.02)


async def test_the_lock_excludes_another_machine_until_released(pg_url: str) -> None:
    with anyio.fail_after(WAIT):
        one, two = await PostgresStore.open(pg_url), await PostgresStore.open(pg_url)
        release = anyio.Event()
        held = anyio.Event()
        acquired_by_two = anyio.Event()

        async def hold() -> None:
            async with one.apply_lock(ALICE, wait=5):
                held.set()
                await release.wait()

        async def wait_for_it() -> None:
            async with two.apply_lock(ALICE, wait=15):
                acquired_by_two.set()

        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            await held.wait()
            with pytest.raises(LockTimeout):
                async with two.apply_lock(ALICE, wait=0.2):
                    pass
            with pytest.raises(LockTimeout):
                async with two.apply_lock(ALICE, wait=0):
                    pass
            async with two.apply_lock(BOB, wait=0):  # another upstream account is free
                pass
            group.start_soon(wait_for_it)

            async def waiting() -> bool:
                return len(await advisory_locks(pg_url, granted=False)) == 1

            await until(waiting)
            assert not acquired_by_two.is_set()
            release.set()
            await acquired_by_two.wait()
        assert await advisory_locks(pg_url, granted=True) == []
        await one.aclose()
        await two.aclose()


async def test_lock_timeout_names_the_wait(store: PostgresStore, pg_url: str) -> None:
    other = await PostgresStore.open(pg_url)
    try:
        with anyio.fail_after(WAIT):
            async with store.apply_lock(ALICE, wait=1):
                started = time.monotonic()
                with pytest.raises(LockTimeout) as raised:
                    async with other.apply_lock(ALICE, wait=0.3):
                        pass
                elapsed = time.monotonic() - started
                assert await advisory_locks(pg_url, granted=False) == []  # the waiter left
    finally:
        await other.aclose()
    assert raised.value.waited == 0.3
    assert str(raised.value) == "waited 0.3 s for the apply lock"
    assert 0.25 <= elapsed < 5


async def test_a_cancelled_waiter_leaves_no_lock_behind(store: PostgresStore, pg_url: str) -> None:
    other = await PostgresStore.open(pg_url)
    try:
        with anyio.fail_after(WAIT):
            async with store.apply_lock(ALICE, wait=1):
                async with anyio.create_task_group() as group:

                    async def wait_long() -> None:
                        async with other.apply_lock(ALICE, wait=60):
                            pytest.fail("acquired a held lock")

                    group.start_soon(wait_long)

                    async def waiting() -> bool:
                        return len(await advisory_locks(pg_url, granted=False)) == 1

                    await until(waiting)
                    group.cancel_scope.cancel()

                async def no_waiter() -> bool:
                    return await advisory_locks(pg_url, granted=False) == []

                await until(no_waiter)
            async with other.apply_lock(ALICE, wait=5):
                pass
    finally:
        await other.aclose()


async def test_a_terminated_holder_connection_releases_the_lock(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="app_server.store.postgres")
    with anyio.fail_after(WAIT):
        one, two = await PostgresStore.open(pg_url), await PostgresStore.open(pg_url)
        held, release = anyio.Event(), anyio.Event()

        async def hold() -> None:
            async with one.apply_lock(ALICE, wait=5):
                held.set()
                await release.wait()

        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            await held.wait()
            [holder] = await advisory_locks(pg_url, granted=True)
            await query(pg_url, "SELECT pg_terminate_backend(%s)", (holder,))
            async with two.apply_lock(ALICE, wait=10):
                pass
            release.set()
        await one.aclose()
        await two.aclose()
    assert any("was lost while held" in record.getMessage() for record in caplog.records)


async def test_a_killed_holder_process_releases_the_lock(pg_url: str, store: PostgresStore) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with anyio.fail_after(WAIT + 10):
        async with await anyio.open_process(
            [sys.executable, "-m", "tests.store.lock_worker", ALICE.identity],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        ) as worker:
            assert worker.stdin is not None and worker.stdout is not None
            await worker.stdin.send(f"{pg_url}\n".encode())
            said = b""
            while b"\n" not in said:
                said += await worker.stdout.receive()
            assert said.strip() == b"locked"
            with pytest.raises(LockTimeout):
                async with store.apply_lock(ALICE, wait=0):
                    pass
            worker.kill()
            assert await worker.wait() == -9
            async with store.apply_lock(ALICE, wait=15):
                pass


# Migrations.


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == LATEST


async def test_a_fresh_database_gets_every_migration_once(pg_url: str) -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:  # several services starting at once
            opened: list[PostgresStore] = []

            async def open_one() -> None:
                opened.append(await PostgresStore.open(pg_url))

            for _ in range(4):
                group.start_soon(open_one)
        for one in opened:
            await one.aclose()
        again = await PostgresStore.open(pg_url)  # idempotent re-open
        await again.aclose()
        versions = await query(pg_url, "SELECT version FROM schema_version ORDER BY version")
        tables = await query(
            pg_url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        )
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]
    assert [t for (t,) in tables] == ["applies", "claims", "schema_version", "usage_samples"]


async def test_a_newer_schema_is_refused(pg_url: str) -> None:
    with anyio.fail_after(WAIT):
        first = await PostgresStore.open(pg_url)
        await first.aclose()
        await query(pg_url, "INSERT INTO schema_version (version, name) VALUES (%s, 'from the future')", (LATEST + 1,))
        with pytest.raises(StoreError) as raised:
            await PostgresStore.open(pg_url)
    assert str(raised.value) == (
        f"the database schema is version {LATEST + 1}, newer than this codex-limits ({LATEST}); upgrade codex-limits"
    )


# Errors, and the password.


async def test_a_lost_connection_is_replaced(store: PostgresStore, pg_url: str) -> None:
    with anyio.fail_after(WAIT):
        await store.start("k1", ALICE, "alice", None, 100, 1)
        await query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'codex-limits' AND pid <> pg_backend_pid()",
        )
        history = await store.history(None, 10)
    assert [r.idempotency_key for r in history] == ["k1"]


async def test_an_unreachable_server_is_a_clear_error_within_seconds(postgres_cluster: PostgresCluster) -> None:
    port = free_port()
    url = f"postgresql://postgres:{postgres_cluster.password}@127.0.0.1:{port}/postgres"
    started = time.monotonic()
    with anyio.fail_after(WAIT), pytest.raises(StoreError) as raised:
        await PostgresStore.open(url, connect_timeout=3)
    assert time.monotonic() - started < 5
    assert str(raised.value).startswith(f"cannot reach PostgreSQL at 127.0.0.1:{port}: ")
    assert postgres_cluster.password not in texts(raised.value)


async def test_wrong_credentials_and_missing_database_are_clear_errors(postgres_cluster: PostgresCluster) -> None:
    wrong = "wrong-" + postgres_cluster.password
    with anyio.fail_after(WAIT):
        with pytest.raises(StoreError) as refused:
            await PostgresStore.open(postgres_cluster.url(password=wrong))
        with pytest.raises(StoreError) as missing:
            await PostgresStore.open(postgres_cluster.url("no_such_database"))
    where = f"127.0.0.1:{postgres_cluster.port}"
    assert str(refused.value) == f"PostgreSQL at {where} refused the credentials of user 'postgres'"
    assert str(missing.value) == f'PostgreSQL at {where}: database "no_such_database" does not exist'
    for error in (refused.value, missing.value):
        assert wrong not in texts(error) and postgres_cluster.password not in texts(error)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:my secret@127.0.0.1:5432/db",
        "postgresql://postgres:my%ZZsecret@127.0.0.1:5432/db",
        "postgresql://postgres:mysecret@127.0.0.1:notaport/db",
        "host=127.0.0.1 password=mysecret garbage",
        "mysql://root:mysecret@127.0.0.1/db",
    ],
)
async def test_a_malformed_url_is_a_clear_error_without_the_password(url: str) -> None:
    with anyio.fail_after(WAIT), pytest.raises(StoreError) as raised:
        await PostgresStore.open(url)
    assert str(raised.value).startswith("the PostgreSQL URL is malformed")
    assert "secret" not in texts(raised.value)


async def test_the_password_appears_in_no_message_log_or_repr(
    postgres_cluster: PostgresCluster, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = postgres_cluster.password
    seen: list[str] = []
    with anyio.fail_after(WAIT):
        store = await PostgresStore.open(pg_url)
        seen.append(repr(store))
        seen.append(str(store))
        seen.append(repr(vars(store)))  # what a traceback with locals would show
        await store.start("k1", ALICE, "alice", None, 100, 1)
        await query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'codex-limits' AND pid <> pg_backend_pid()",
        )
        seen.append(repr(await store.history(None, 10)))
        async with store.apply_lock(ALICE, wait=1):
            [holder] = await advisory_locks(pg_url, granted=True)
            await query(pg_url, "SELECT pg_terminate_backend(%s)", (holder,))
        await store.aclose()
        for url in (
            postgres_cluster.url(password="x" + password),
            f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/postgres",
            f"postgresql://postgres:{password} x@127.0.0.1:1/postgres",
            postgres_cluster.url("missing_db"),
        ):
            with pytest.raises(StoreError) as raised:
                await PostgresStore.open(url, connect_timeout=3)
            seen.append(texts(raised.value))
    seen.extend(record.getMessage() for record in caplog.records)
    seen.extend(record.exc_text or "" for record in caplog.records)
    seen.append(caplog.text)
    assert any("was lost while held" in text for text in seen)
    assert not [text for text in seen if password in text]


def test_missing_server_binaries_fail_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    with pytest.raises(support_postgres.PostgresUnavailable) as raised:
        support_postgres.PostgresCluster()
    assert "/usr/lib/postgresql/*/bin/initdb" in str(raised.value)
    assert ".ci/install-postgres.sh" in str(raised.value)


async def test_a_schema_1_database_keeps_its_pending_markers_as_claims(pg_url: str) -> None:
    """A database of the release before issue 18 (migration 1 only: `pending_markers`) is migrated in place:
    its markers are the claims, so its pending attempt still refuses a new key."""
    first = MIGRATIONS[0]
    await query(pg_url, SCHEMA_VERSION_TABLE.encode())
    await query(pg_url, first.sql.encode())
    await query(pg_url, "INSERT INTO schema_version (version, name) VALUES (1, %s)", (first.name,))
    await query(
        pg_url,
        "INSERT INTO applies (idempotency_key, account_id, identity, status, started_at) "
        "VALUES ('key-unknown', 'alice', %s, 'pending', 1790000000)",
        (ALICE.identity,),
    )
    await query(
        pg_url,
        "INSERT INTO pending_markers (identity, idempotency_key, account_id, started_at) "
        "VALUES (%s, 'key-unknown', 'alice', 1790000000)",
        (ALICE.identity,),
    )
    with anyio.fail_after(WAIT):
        store = await PostgresStore.open(pg_url)
        try:
            with pytest.raises(ClaimHeld) as refused:
                await store.start("key-new", ALICE, "alice", None, 1_790_000_100, 1)
        finally:
            await store.aclose()
    assert refused.value.holder == "key-unknown"
    assert await claim(pg_url, ALICE.identity) == ("key-unknown", "alice", 1_790_000_000)
