"""The pool across real processes: two `codex-limits serve` racing one credit, SIGKILL in the middle of an
apply, and SIGKILL in the middle of writes to accounts.toml and the ledger.

The upstream runs in this test process (the simulator on 127.0.0.1); the servers share CODEX_LIMITS_HOME
and the Codex homes, as two clients of one operator would. The apply tests run on each store (`world`);
the mid-write one is about local files (accounts.toml and the SQLite ledger). Two services on separate
machines sharing PostgreSQL: `test_shared_store_processes.py`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from app_server.pool.accounts import FILE_NAME, AccountsFile
from app_server.rpc.client import Client, ServerClosed, spawn
from app_server.store.sqlite import FILE_NAME as LEDGER_FILE
from app_server.store.sqlite import SqliteStore as Ledger
from protocol import ext
from protocol.jsonrpc import RpcError
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.pool_calls import APPLY, LIST, wait_for
from tests.support.pool_world import World

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0
RACERS = 2
APPLIES = 50


def server_env(world: World) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_"))}
    env.update(
        HOME=str(world.root / "home"),
        CODEX_HOME=str(world.codex_home),
        CODEX_LIMITS_HOME=str(world.data_home),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=world.upstream.refresh_url,
        CODEX_LIMITS_LOG="INFO",
    )
    env.update(world.backend.env())
    return env


@asynccontextmanager
async def server(world: World, name: str) -> AsyncIterator[tuple[Client, anyio.abc.Process]]:
    """A `codex-limits serve` child, initialized; its stderr goes to a file kept for a failing test's report."""
    with (world.root / f"{name}.stderr").open("ab") as log:
        async with spawn(env=server_env(world), stderr=log.fileno()) as (client, process):
            with anyio.fail_after(WAIT):
                await client.initialize(name=name)
            yield client, process


def ledger_rows(world: World) -> list[dict[str, Any]]:
    return world.ledger_rows()


# -- two processes, one credit ---------------------------------------------------------------------------------


async def test_two_processes_racing_applies_spend_exactly_one_credit(world: World) -> None:
    world.upstream.keep_credits("alice", 1)
    outcomes: dict[str, str] = {}  # key -> "reset" / "noCredit" / ... or "refused:<reason>"

    async def one(client: Client, key: str) -> None:
        with anyio.fail_after(WAIT):
            try:
                raw = await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
            except RpcError as error:
                data = ext.ApplyRefusedData.model_validate(error.data)
                outcomes[key] = f"refused:{data.disabled_reason.value}"
                return
        outcomes[key] = ext.AccountPoolApplyResponse.model_validate(raw).outcome.value

    async with server(world, "racer-a") as (a, _), server(world, "racer-b") as (b, _):
        clients = {"racer-a": a, "racer-b": b}
        with anyio.fail_after(WAIT):
            for client in clients.values():  # warm up (imports, HTTP pool, ledger) so both start level
                await client.request(LIST, {})
        # The first consume to arrive is held before upstream sees it: the credit still looks available.
        world.upstream.hold(after=False)
        async with anyio.create_task_group() as tg:
            for i in range(APPLIES):
                tg.start_soon(one, a if i % RACERS == 0 else b, f"race-{i:02d}")
            try:
                await wait_for(world.upstream.consume_arrived)
                first = world.upstream.consume_arrivals()[0]
                winner = next(name for name in clients if f"({name}; " in first.headers["user-agent"])
                other = clients["racer-b" if winner == "racer-a" else "racer-a"]
                # Reads are never locked: the other process answers them while its applies wait for the
                # cross-process lock. Were they not waiting, their consume would reach upstream meanwhile.
                with anyio.fail_after(WAIT):
                    for _ in range(3):
                        await other.request("accountPool/refresh", {"accountId": "alice"})
                arrived_while_held = len(world.upstream.consume_arrivals())
            finally:
                world.upstream.release()

    assert arrived_while_held == 1

    consumes = world.upstream.consumes()
    resets = [key for key, outcome in outcomes.items() if outcome == "reset"]
    others = {outcome for outcome in outcomes.values() if outcome != "reset"}
    assert len(outcomes) == APPLIES
    assert len(consumes) == 1, [json.loads(r.body) for r in consumes]
    assert resets == world.upstream.consume_keys()
    assert others <= {"refused:noCredit", Outcome.NO_CREDIT.value}
    assert world.upstream.available_credit_count("alice") == 0

    rows = ledger_rows(world)
    # Refusals never reach the ledger; every attempt that did is finished and matches its answer.
    assert {r["idempotency_key"] for r in rows} == {k for k, o in outcomes.items() if not o.startswith("refused")}
    assert all(r["status"] == "finished" and r["outcome"] == outcomes[r["idempotency_key"]] for r in rows)
    (reset_row,) = [r for r in rows if r["outcome"] == "reset"]
    assert (reset_row["available_before"], reset_row["available_after"], reset_row["attempts"]) == (1, 0, 1)


# -- SIGKILL during an apply -----------------------------------------------------------------------------------


async def test_kill_during_an_apply_then_resend_spends_no_second_credit(world: World) -> None:
    key = "key-killed"
    world.upstream.hold(after=True)  # upstream spends the credit; the server dies before the answer arrives
    closed = anyio.Event()

    async def doomed_apply(client: Client) -> None:
        with pytest.raises(ServerClosed):
            await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
        closed.set()

    async with server(world, "first") as (client, process), anyio.create_task_group() as tg:
        tg.start_soon(doomed_apply, client)
        await wait_for(world.upstream.consume_arrived)
        rows_mid_call = ledger_rows(world)
        process.send_signal(signal.SIGKILL)
        with anyio.fail_after(WAIT):
            await process.wait()
            await closed.wait()
    world.upstream.release()

    assert process.returncode == -signal.SIGKILL
    assert [(r["idempotency_key"], r["status"]) for r in rows_mid_call] == [(key, "pending")]
    assert [(r["idempotency_key"], r["status"]) for r in ledger_rows(world)] == [(key, "pending")]
    assert world.upstream.available_credit_count("alice") == 1  # the first call did spend one

    async with server(world, "restarted") as (client, _):
        with anyio.fail_after(WAIT):
            listed = ext.AccountPoolListResponse.model_validate(await client.request(LIST, {}))
            resent = ext.AccountPoolApplyResponse.model_validate(
                await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
            )
            replayed = ext.AccountPoolApplyResponse.model_validate(
                await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
            )
    alice = next(a for a in listed.accounts if a.account_id == "alice")
    assert alice.pending_apply is not None and alice.pending_apply.idempotency_key == key
    assert resent.outcome is Outcome.ALREADY_REDEEMED
    assert resent.after is not None and resent.after.pending_apply is None
    assert replayed.replayed and replayed.outcome is Outcome.ALREADY_REDEEMED
    assert world.upstream.consume_keys() == [key, key]  # the re-send, and nothing for the replay
    assert world.upstream.available_credit_count("alice") == 1  # no second credit
    (row,) = ledger_rows(world)
    assert (row["status"], row["outcome"], row["attempts"]) == ("finished", "alreadyRedeemed", 2)


# -- SIGKILL during writes -------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What the killed workers reported, and what each may have left half done."""

    accounts: int = 0
    started: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    in_flight: set[int] = field(default_factory=set)
    current: int = 0  # the round the running worker is in

    def note(self, line: str) -> None:
        word, _, number = line.partition(" ")
        n = int(number)
        if word == "ready":  # a new worker starts round n (the number of accounts on disk)
            self.accounts = self.current = n
        elif word == "accounts":
            self.accounts = n
        elif word == "started":
            self.started.add(n)
        elif word == "finished":
            self.finished.add(n)
            self.current = n + 1
        else:
            raise AssertionError(f"unexpected worker output {line!r}")


async def kill_worker_after(data_dir: Path, lines: int, progress: Progress) -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "tests.support.pool_worker", str(data_dir)],
        cwd=REPO_ROOT,
        stderr=None,
    )
    async with process:
        assert process.stdout is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(WAIT):
            for _ in range(lines + 1):  # "ready" and then `lines` reports
                progress.note((await reader.receive_until(b"\n", 1024)).decode())
            process.send_signal(signal.SIGKILL)
            await process.wait()
            # The worker does not wait for us to read: take in what it reported before it died, too.
            while True:
                try:
                    progress.note((await reader.receive_until(b"\n", 1024)).decode())
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    break
    assert process.returncode == -signal.SIGKILL
    # The round this worker was in when it died may have reached the ledger, fully or not at all.
    progress.in_flight.add(progress.current)


def check_files(data_dir: Path, progress: Progress, context: str) -> None:
    entries = AccountsFile(data_dir / FILE_NAME, data_dir / "no-default").entries()
    count = len(entries)
    assert count in (progress.accounts, progress.accounts + 1), context  # the old state or the new one
    assert [e.id for e in entries] == [f"acct-{n}" for n in range(count)], context
    assert len(list(data_dir.glob(".accounts.*.tmp"))) <= 1, context

    with closing(sqlite3.connect(data_dir / LEDGER_FILE)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), context
        rows = {
            int(key.removeprefix("key-")): (status, response)
            for key, status, response in conn.execute("SELECT idempotency_key, status, response_json FROM applies")
        }
    assert all(n < count for n in rows), context
    assert progress.started <= rows.keys(), context
    for n, (status, response) in rows.items():
        if n in progress.finished:
            assert status == "finished", context
        else:
            assert n in progress.in_flight, context  # only a round a worker died in is unreported
            assert status in ("pending", "finished"), context
        if status == "finished":
            assert ext.AccountPoolApplyResponse.model_validate_json(response).outcome is Outcome.RESET, context
        else:
            assert response is None, context


@pytest.mark.slow
async def test_accounts_file_and_ledger_survive_sigkill_mid_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    AccountsFile(data_dir / FILE_NAME, data_dir / "no-default").remove("default")
    progress = Progress()
    rng = random.Random(6)
    for round_ in range(20):
        lines = rng.randrange(0, 12)
        await kill_worker_after(data_dir, lines, progress)
        check_files(data_dir, progress, f"round {round_}, killed after {lines} reports: {progress}")
    # Enough work got done that the kills landed at many different points.
    assert len(progress.finished) >= 20
    # And what is left is usable: the pool reads it, and a fresh ledger handle sees every finished apply.
    ledger = Ledger(data_dir / LEDGER_FILE)
    try:
        with anyio.fail_after(WAIT):
            records = await ledger.history(limit=10_000)
    finally:
        ledger.close()
    finished = {int(r.idempotency_key.removeprefix("key-")) for r in records if r.status is ext.ApplyStatus.FINISHED}
    assert progress.finished <= finished
