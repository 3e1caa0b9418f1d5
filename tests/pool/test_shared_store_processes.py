"""Two services as on two machines, sharing one PostgreSQL database and nothing else (issue #14).

Each service is a real `codex-limits serve` process with its own `CODEX_LIMITS_HOME` and its own copy of
alice's Codex home (the same auth.json, so the same upstream account), so the guard beside a Codex home
cannot help: only the database (the pending attempt committed before the consume, and the advisory apply
lock) stands between them and a second spend. The upstream is the gated simulator in this test process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from app_server.config import DATABASE_URL_ENV
from app_server.pool.accounts import FILE_NAME, AccountsFile
from app_server.rpc.client import Client, ServerClosed, spawn
from app_server.store.local_guard import DIR_NAME
from protocol import ext
from protocol.jsonrpc import RpcError
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.pool_calls import APPLY, LIST, wait_for
from tests.support.pool_world import World
from tests.support.store_backends import POSTGRES_ONLY

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess, POSTGRES_ONLY]

WAIT = 30.0
APPLIES = 50


@dataclass(frozen=True)
class Machine:
    """One service's own files: its data directory and its copy of alice's Codex home."""

    name: str
    root: Path

    @property
    def data_home(self) -> Path:
        return self.root / "data"

    @property
    def alice_home(self) -> Path:
        return self.root / "codex-alice"


def machine(world: World, name: str) -> Machine:
    m = Machine(name, world.root / "machines" / name)
    m.alice_home.mkdir(parents=True, mode=0o700)
    for file in ("auth.json", "config.toml"):
        shutil.copy2(world.homes["alice"] / file, m.alice_home / file)
    accounts = AccountsFile(m.data_home / FILE_NAME, m.root / "no-default-home")
    accounts.remove("default")
    accounts.add("alice", m.alice_home, f"Alice on {name}")
    return m


def server_env(world: World, m: Machine) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_"))}
    env.update(
        HOME=str(m.root / "home"),
        CODEX_HOME=str(m.root / "no-default-home"),
        CODEX_LIMITS_HOME=str(m.data_home),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=world.upstream.refresh_url,
        CODEX_LIMITS_LOG="INFO",
    )
    env.update(world.backend.env())
    assert DATABASE_URL_ENV in env
    return env


@asynccontextmanager
async def service(world: World, m: Machine) -> AsyncIterator[tuple[Client, anyio.abc.Process]]:
    """The service of machine `m`, initialized; its stderr goes to a file kept for a failing test's report."""
    with (world.root / f"{m.name}.stderr").open("ab") as log:
        async with spawn(env=server_env(world, m), stderr=log.fileno()) as (client, process):
            with anyio.fail_after(WAIT):
                await client.initialize(name=m.name)
                await client.request(LIST, {})  # warm up: imports, HTTP pool, the database and its schema
            yield client, process


async def apply(client: Client, key: str) -> ext.AccountPoolApplyResponse:
    with anyio.fail_after(WAIT):
        raw = await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
    return ext.AccountPoolApplyResponse.model_validate(raw)


async def refused(client: Client, key: str) -> ext.ApplyRefusedData:
    with anyio.fail_after(WAIT), pytest.raises(RpcError) as raised:
        await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
    return ext.ApplyRefusedData.model_validate(raised.value.data)


def nothing_local(*machines: Machine) -> bool:
    """No guard beside any Codex home: the database alone kept the account apart."""
    return not any((m.alice_home / DIR_NAME).exists() for m in machines)


async def test_fifty_applies_from_two_machines_spend_exactly_one_credit(world: World) -> None:
    world.upstream.keep_credits("alice", 1)
    a, b = machine(world, "machine-a"), machine(world, "machine-b")
    outcomes: dict[str, str] = {}

    async def one(client: Client, key: str) -> None:
        with anyio.fail_after(WAIT):
            try:
                raw = await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
            except RpcError as error:
                outcomes[key] = f"refused:{ext.ApplyRefusedData.model_validate(error.data).disabled_reason.value}"
                return
        outcomes[key] = ext.AccountPoolApplyResponse.model_validate(raw).outcome.value

    async with service(world, a) as (client_a, _), service(world, b) as (client_b, _):
        # The first consume to arrive is held before upstream sees it: the credit still looks available.
        world.upstream.hold(after=False)
        async with anyio.create_task_group() as tg:
            for i in range(APPLIES):
                tg.start_soon(one, client_a if i % 2 == 0 else client_b, f"race-{i:02d}")
            try:
                await wait_for(world.upstream.consume_arrived)
                first = world.upstream.consume_arrivals()[0]
                winner = "machine-a" if "(machine-a; " in first.headers["user-agent"] else "machine-b"
                other = client_b if winner == "machine-a" else client_a
                # Reads are not locked: the other machine answers them while its applies wait for the lock.
                with anyio.fail_after(WAIT):
                    for _ in range(3):
                        await other.request("accountPool/refresh", {"accountId": "alice"})
                arrived_while_held = len(world.upstream.consume_arrivals())
            finally:
                world.upstream.release()

    consumes = world.upstream.consumes()
    resets = [key for key, outcome in outcomes.items() if outcome == "reset"]
    assert arrived_while_held == 1
    assert len(outcomes) == APPLIES
    assert len(consumes) == 1, [json.loads(r.body) for r in consumes]
    assert resets == world.upstream.consume_keys()
    # The applies waited for the lock and then read no credit: none saw the first one still pending.
    assert {o for o in outcomes.values() if o != "reset"} <= {"refused:noCredit", Outcome.NO_CREDIT.value}
    assert world.upstream.available_credit_count("alice") == 0
    rows = world.ledger_rows()
    assert {r["idempotency_key"] for r in rows} == {k for k, o in outcomes.items() if not o.startswith("refused")}
    assert all(r["status"] == "finished" for r in rows)
    assert nothing_local(a, b)


async def test_a_machine_killed_mid_apply_blocks_new_keys_on_the_other_until_the_key_settles(world: World) -> None:
    a, b = machine(world, "machine-a"), machine(world, "machine-b")
    key = "key-killed"
    async with service(world, b) as (client_b, _):
        world.upstream.hold(after=True)  # upstream spends the credit; machine a dies before the answer
        async with service(world, a) as (client_a, process_a), anyio.create_task_group() as tg:

            async def doomed() -> None:
                with pytest.raises(ServerClosed):
                    await client_a.request(APPLY, {"accountId": "alice", "idempotencyKey": key})

            tg.start_soon(doomed)
            await wait_for(world.upstream.consume_arrived)
            process_a.send_signal(signal.SIGKILL)
            with anyio.fail_after(WAIT):
                await process_a.wait()
        world.upstream.release()
        assert process_a.returncode == -signal.SIGKILL
        assert [(r["idempotency_key"], r["status"]) for r in world.ledger_rows()] == [(key, "pending")]

        with anyio.fail_after(WAIT):
            listed = ext.AccountPoolListResponse.model_validate(await client_b.request(LIST, {"maxAgeSeconds": 0}))
        blocked = await refused(client_b, "key-new-on-b")
        blocked_again = await refused(client_b, "key-newer-on-b")
        settled = await apply(client_b, key)  # the same key, re-sent from the other machine
        fresh = await apply(client_b, "key-after-settling")

    (alice,) = listed.accounts
    assert alice.pending_apply is not None and alice.pending_apply.idempotency_key == key
    for data in (blocked, blocked_again):
        assert data.disabled_reason is ext.ResetDisabledReason.PENDING_APPLY
        assert data.pending_idempotency_key == key
    assert settled.outcome is Outcome.ALREADY_REDEEMED
    assert fresh.outcome in (Outcome.RESET, Outcome.NOTHING_TO_RESET)
    assert world.upstream.consume_keys() == [key, key, "key-after-settling"]
    assert nothing_local(a, b)


async def test_connections_killed_during_a_consume_leave_the_attempt_pending_and_spend_nothing_twice(
    world: World,
) -> None:
    a, b = machine(world, "machine-a"), machine(world, "machine-b")  # alice has two credits
    key = "key-cut"
    results: list[ext.AccountPoolApplyResponse] = []
    async with service(world, a) as (client_a, _), service(world, b) as (client_b, _):
        world.upstream.hold(after=True)  # upstream spends the credit; the answer waits at the gate
        async with anyio.create_task_group() as tg:

            async def applying() -> None:
                results.append(await apply(client_a, key))

            tg.start_soon(applying)
            try:
                await wait_for(world.upstream.consume_arrived)
                # Every connection of both services dies, the apply lock's with them, mid-consume.
                killed = terminate_service_connections(world)
                locks_left = advisory_locks(world)
                rows_mid_call = world.ledger_rows()
                # With the lock gone, machine b gets in: the pending attempt alone stops a second spend.
                blocked = await refused(client_b, "key-while-cut")
            finally:
                world.upstream.release()
        after = await apply(client_b, "key-after")

    assert killed >= 2  # at least machine a's pooled connection and its apply lock's own
    assert locks_left == []
    assert [(r["idempotency_key"], r["status"]) for r in rows_mid_call] == [(key, "pending")]
    assert blocked.disabled_reason is ext.ResetDisabledReason.PENDING_APPLY
    assert blocked.pending_idempotency_key == key
    # Machine a records the answer on a new connection; the one credit is spent once.
    (result,) = results
    assert result.outcome is Outcome.RESET
    assert [(r["idempotency_key"], r["status"], r["outcome"]) for r in world.ledger_rows()] == [
        (key, "finished", "reset"),
        ("key-after", "finished", "nothingToReset"),
    ]
    # Settled, the account takes new keys again; its windows are empty now, so nothing more is spent.
    assert after.outcome is Outcome.NOTHING_TO_RESET
    assert world.upstream.consume_keys() == [key, "key-after"]
    assert world.upstream.available_credit_count("alice") == 1
    assert nothing_local(a, b)


def _query(world: World, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    assert world.backend.url is not None
    with psycopg.connect(world.backend.url, autocommit=True) as conn:
        return conn.execute(sql.encode()).fetchall()


def terminate_service_connections(world: World) -> int:
    rows = _query(
        world,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'codex-limits' AND datname = current_database() AND pid <> pg_backend_pid()",
    )
    return sum(1 for (done,) in rows if done)


def advisory_locks(world: World) -> list[int]:
    # pg_terminate_backend returns before the backend has gone; its locks go with it, within moments.
    deadline = time.monotonic() + 10
    while True:
        rows = _query(
            world,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        if not rows or time.monotonic() > deadline:
            return [int(pid) for (pid,) in rows]
        time.sleep(0.02)
