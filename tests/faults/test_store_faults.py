"""Faults in the middle of an apply never cost a second credit or an answer (issue 18).

Two services (in-process, each with its own data directory and its own copy of alice's Codex home, so the
same upstream account) share one store; faults are injected at each step of an apply: the apply lock lost
(PostgreSQL: `pg_terminate_backend` of the advisory lock's holder; SQLite: the lock file deleted, so the
next process locks a new file), the database stopped and restarted, the ledger made unwritable, upstream
answering after the deadline. Each test asserts what the money needs: upstream's spends equal the ledger's
(a `reset` is recorded as finished or still pending), no key spent twice, no second key spent while one is
pending, and every request answered, or told that its outcome is unknown with the key to re-send.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import psycopg
import pytest

from app_server.config import Settings
from app_server.rpc.memory import Harness
from app_server.server import serve_in_memory
from app_server.sim.upstream import SimCredit
from app_server.store.local_guard import DIR_NAME
from app_server.store.sqlite import FILE_NAME as LEDGER_FILE
from app_server.store.sqlite import SqliteStore
from app_server.world import World as ServerWorld
from protocol import ext
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.pool_calls import APPLY, LIST, wait_for
from tests.support.pool_world import World
from tests.support.postgres import PostgresCluster
from tests.support.store_backends import POSTGRES_ONLY, SQLITE_ONLY, StoreBackend

pytestmark = pytest.mark.anyio

WAIT: Final = 30.0
TRIALS: Final = 20
SPENT_OUTCOMES: Final = (Outcome.RESET.value, Outcome.ALREADY_REDEEMED.value)
STEPS: Final = ("before the claim", "after the claim", "during the consume", "before the finish")


# -- two services on one upstream account --------------------------------------------------------------------


@dataclass
class Service:
    """One in-process service: its settings, its services (store, pool) and an in-memory client."""

    services: ServerWorld
    harness: Harness[ServerWorld]

    async def apply(self, account: str, key: str) -> ext.AccountPoolApplyResponse | RpcError:
        """The answer, or the error the client was given: every request is answered one way or the other."""
        try:
            with anyio.fail_after(WAIT):
                raw = await self.harness.client.request(APPLY, {"accountId": account, "idempotencyKey": key})
        except RpcError as error:
            return error
        return ext.AccountPoolApplyResponse.model_validate(raw)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Service]:
    services = ServerWorld(settings)
    async with serve_in_memory(services) as harness:
        with anyio.fail_after(WAIT):
            await harness.initialize()
        yield Service(services, harness)


def second_machine(world: World, name: str) -> Settings:
    """Another service, pool id `alice` too: with PostgreSQL on its own copy of alice's Codex home (only the
    database is shared); with SQLite on alice's home itself (the marker beside it is then what they share)."""
    return world.another_machine(name, "alice", copy_home=world.backend.url is not None)


def refill(world: World, key: str = "alice") -> None:
    """Alice has a fresh saved reset and a used window (so a consume spends)."""
    account = world.upstream.accounts[key]
    now = int(world.upstream._now())
    account.credits.append(SimCredit(f"credit-{key}-{len(account.credits) + 1}", now - 60, now + 86_400, "Reset", ""))
    account.primary.used_percent = 80


def spends(world: World) -> dict[str, str]:
    """Upstream's truth: each redeemed key's first outcome."""
    return {key: outcome for a in world.upstream.accounts.values() for key, outcome in a.redemptions.items()}


def ledger(world: World, data_homes: list[Path]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for data_home in data_homes:
        if world.backend.url is None and not (data_home / LEDGER_FILE).exists():
            continue
        for row in world.backend.ledger_rows(data_home):
            rows.setdefault(row["idempotency_key"], row)
    return rows


def assert_money_kept(world: World, data_homes: list[Path]) -> None:
    """Upstream's spends equal the ledger's: every `reset` upstream is finished as spent (or still pending,
    its outcome unknown) in a ledger, and every attempt finished as spent was spent upstream."""
    spent = {key for key, outcome in spends(world).items() if outcome == "reset"}
    rows = ledger(world, data_homes)
    for key in spent:
        assert key in rows, f"{key} spent upstream but unknown to every ledger"
        row = rows[key]
        # Finished as `reset`, or as `alreadyRedeemed` by the re-send that settled it, or still pending.
        assert row["status"] == "pending" or row["outcome"] in SPENT_OUTCOMES, row
    for key, row in rows.items():
        if row["status"] == "finished" and row["outcome"] in SPENT_OUTCOMES:
            assert key in spent, f"{key} recorded as {row['outcome']} but never spent"


def refused_pending(answer: object, holder: str) -> bool:
    if not isinstance(answer, RpcError) or answer.code != INVALID_REQUEST:
        return False
    data = ext.ApplyRefusedData.model_validate(answer.data)
    return data.disabled_reason is ext.ResetDisabledReason.PENDING_APPLY and data.pending_idempotency_key == holder


async def lose_the_lock(world: World) -> int:
    """PostgreSQL: terminate the advisory lock holder's backend; SQLite: delete the lock file (its holder
    keeps a lock on a file nobody else opens). Returns how many locks were lost."""
    if world.backend.url is not None:
        async with await psycopg.AsyncConnection.connect(world.backend.url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            return len(await cur.fetchall())
    locks = list((world.homes["alice"] / DIR_NAME).glob("apply-*.lock"))
    for lock in locks:
        lock.unlink()
    return len(locks)


class Pause:
    """Stops service A's apply at one step until `go` is set: `reached` tells the test it is there."""

    def __init__(self) -> None:
        self.reached = anyio.Event()
        self.go = anyio.Event()
        self.armed = True

    async def here(self) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            with anyio.fail_after(WAIT):
                await self.go.wait()


def pause_at(step: str, service: Service, pause: Pause, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pause service A at `step`, through its own objects only (the other service is untouched)."""
    pool = service.services.pool
    store = service.services.store
    if step == "before the claim":  # after the fresh read and its checks, holding the lock, nothing claimed yet
        check = pool._check

        async def checked(*args: Any, **kwargs: Any) -> Any:
            ready = await check(*args, **kwargs)
            await pause.here()
            return ready

        monkeypatch.setattr(pool, "_check", checked)
    elif step == "after the claim":
        start = store.start

        async def started(*args: Any, **kwargs: Any) -> None:
            await start(*args, **kwargs)
            await pause.here()

        monkeypatch.setattr(store, "start", started)
    elif step == "before the finish":
        finish = store.finish

        async def finishing(*args: Any, **kwargs: Any) -> None:
            await pause.here()
            await finish(*args, **kwargs)

        monkeypatch.setattr(store, "finish", finishing)


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110 - upstream's arrivals are seen from another thread
            await anyio.sleep(0.01)


async def lost_lock_trial(
    world: World, a: Service, b: Service, step: str, k1: str, k2: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, object]:
    """A applies k1 and is stopped at `step` holding the lock; the lock is lost; B applies k2 while A is
    stopped (its consume held at upstream, so the two overlap); then A goes on. Returns both answers."""
    answers: dict[str, object] = {}
    pause = Pause()
    if step == "before the finish":
        world.upstream.release()
    else:
        world.upstream.hold(after=False)  # consumes wait at upstream: nothing spent until released
    if step == "during the consume":
        pause.reached.set()
    else:
        pause_at(step, a, pause, monkeypatch)

    async def run(service: Service, key: str) -> None:
        answers[key] = await service.apply("alice", key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, a, k1)
        with anyio.fail_after(WAIT):
            if step == "during the consume":
                await wait_for(world.upstream.consume_arrived)
            else:
                await pause.reached.wait()
        assert await lose_the_lock(world) >= 1
        tg.start_soon(run, b, k2)
        # B is answered (refused), or its consume reached upstream and waits there.
        await until(lambda: k2 in answers or k2 in arrived(world))
        pause.go.set()
        await until(lambda: k1 in answers or k1 in arrived(world))
        world.upstream.release()
    monkeypatch.undo()
    return answers


def arrived(world: World) -> list[str]:
    """The keys of the consumes that reached upstream (held at its gate or let through)."""
    return [str(json.loads(r.body)["redeem_request_id"]) for r in world.upstream.consume_arrivals()]


# -- the PostgreSQL reproduction and the lock lost at each step -----------------------------------------------


@POSTGRES_ONLY
async def test_a_lost_lock_never_lets_a_second_key_spend_20_trials(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18's reproduction: two services, separate data directories and Codex homes signed in to the
    same account, one database. A applies K1 and, holding the lock before its claim, loses it
    (`pg_terminate_backend`); B applies K2 with a slow consume meanwhile; A goes on. A double spend is a
    trial where both keys' consumes reach upstream (the second sent while the first is pending: upstream
    spends a credit for each; the simulator, having reset the windows once, may answer the second
    `nothingToReset` or `noCredit`). Before the fix every trial did (the marker was upserted over the
    other key's); now the later one is refused, naming the first, and never sent."""
    rng = random.Random(18)
    double_spends = 0
    b_settings = second_machine(world, "machine-b")
    async with serving(world.settings()) as a, serving(b_settings) as b:
        for trial in range(TRIALS):
            refill(world)
            k1, k2 = f"k1-{trial}-{rng.randrange(1 << 32):08x}", f"k2-{trial}-{rng.randrange(1 << 32):08x}"
            answers = await lost_lock_trial(world, a, b, "before the claim", k1, k2, monkeypatch)
            spent = spends(world)
            if {k1, k2} <= set(arrived(world)):
                double_spends += 1
                continue
            # B claimed first (A was stopped before its claim): B spends, A is refused naming K2.
            assert isinstance(answers[k2], ext.AccountPoolApplyResponse), answers
            assert refused_pending(answers[k1], k2), answers[k1]
            assert k1 not in spent
    assert double_spends == 0
    assert_money_kept(world, [world.data_home, b_settings.data_home])


@pytest.mark.parametrize("step", STEPS)
async def test_the_lock_lost_at_each_step_of_an_apply_lets_no_second_key_spend(
    world: World, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    b_settings = second_machine(world, "machine-b")
    refill(world)
    async with serving(world.settings()) as a, serving(b_settings) as b:
        answers = await lost_lock_trial(world, a, b, step, "K1", "K2", monkeypatch)
    spent = spends(world)
    reset = [key for key in ("K1", "K2") if spent.get(key) == "reset"]
    assert len(reset) == 1, (spent, answers)
    winner, loser = reset[0], "K2" if reset[0] == "K1" else "K1"
    assert isinstance(answers[winner], ext.AccountPoolApplyResponse), answers
    assert refused_pending(answers[loser], winner), answers[loser]
    assert loser not in spent
    # A was stopped before its claim only in the first step: there B claims first.
    assert winner == ("K2" if step == "before the claim" else "K1")
    assert_money_kept(world, [world.data_home, b_settings.data_home])


# -- the database gone after the consume -----------------------------------------------------------------------


async def apply_with_fault_after_consume(
    world: World, service: Service, key: str, fault: Callable[[], Awaitable[object]]
) -> object:
    """Apply `key` on alice; once upstream has spent (its answer held back), inject `fault`, then let the answer
    through. Returns what the apply answered."""
    world.upstream.hold(after=True)  # upstream spends, then holds its answer
    answers: dict[str, object] = {}

    async def run() -> None:
        answers[key] = await service.apply("alice", key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await wait_for(world.upstream.consume_arrived)
        await fault()
        world.upstream.release()
    return answers[key]


def unknown_data(answer: object, key: str) -> dict[str, Any]:
    assert isinstance(answer, RpcError), answer
    assert answer.code == INTERNAL_ERROR, answer
    assert "outcome" in answer.message and "unknown" in answer.message, answer.message
    assert repr(key) in answer.message, answer.message
    assert isinstance(answer.data, dict), answer.data
    assert answer.data == {"accountId": "alice", "idempotencyKey": key, "outcome": "unknown"}
    return answer.data


@POSTGRES_ONLY
async def test_postgresql_stopped_after_the_consume_is_unknown_and_the_resend_settles_it(
    world: World, tmp_path: Path
) -> None:
    """A cluster of the test's own: stopped while the consume is in flight (upstream spends), so the finish
    cannot be written: the answer says unknown and names the key; restarted, a new key is refused as
    pending and the same key settles it, without a second spend."""
    with PostgresCluster() as cluster:
        url = cluster.url(cluster.create_database())
        backend = StoreBackend("postgres", url)
        own = World(world.upstream, world.root, world.homes, world.data_home, world.codex_home, backend)
        refill(own)
        settings = own.settings()
        async with serving(settings) as service:
            answer = await apply_with_fault_after_consume(
                world, service, "K1", lambda: anyio.to_thread.run_sync(cluster.stop_server)
            )
            unknown_data(answer, "K1")
            await anyio.to_thread.run_sync(cluster.start_server)
            await back_in_service(service)
            refused = await service.apply("alice", "K2")
            settled = await service.apply("alice", "K1")
        assert refused_pending(refused, "K1"), refused
        assert isinstance(settled, ext.AccountPoolApplyResponse)
        assert settled.outcome is Outcome.ALREADY_REDEEMED
        assert world.upstream.consume_keys() == ["K1", "K1"]
        assert spends(world) == {"K1": "reset"}
        assert_money_kept(own, [own.data_home])


async def back_in_service(service: Service) -> None:
    """The database is back once a list answers (the connection pool retries with a backoff meanwhile,
    each list answering a clear error)."""
    with anyio.fail_after(WAIT * 2):
        while True:
            try:
                await service.harness.client.request(LIST, {})
                return
            except RpcError as error:
                if "PostgreSQL" not in error.message:
                    raise
                await anyio.sleep(0.5)


@POSTGRES_ONLY
async def test_postgresql_unreachable_before_the_consume_spends_nothing_and_says_so(world: World) -> None:
    with PostgresCluster() as cluster:
        url = cluster.url(cluster.create_database())
        own = World(
            world.upstream, world.root, world.homes, world.data_home, world.codex_home, StoreBackend("postgres", url)
        )
        async with serving(own.settings()) as service:
            await anyio.to_thread.run_sync(cluster.stop_server)
            answer = await service.apply("alice", "K1")
            await anyio.to_thread.run_sync(cluster.start_server)
    assert isinstance(answer, RpcError) and answer.code == INTERNAL_ERROR
    assert "nothing was spent" in answer.message and "PostgreSQL" in answer.message
    assert world.upstream.consume_arrivals() == []


@SQLITE_ONLY
async def test_the_ledger_made_unwritable_after_the_consume_is_unknown_and_the_marker_stays(world: World) -> None:
    """The ledger refuses writes once the consume is in flight (`PRAGMA query_only` on the store's own
    connection: what a read-only file or a full disk does, and root cannot bypass): the answer says unknown
    and names the key, the marker beside the Codex home stays; writable again, the same key settles it."""
    refill(world)
    async with serving(world.settings()) as service:
        store = service.services.store
        assert isinstance(store, SqliteStore)

        async def unwritable() -> None:
            read_only(store, True)

        answer = await apply_with_fault_after_consume(world, service, "K1", unwritable)
        unknown_data(answer, "K1")
        markers = [json.loads(p.read_text())["idempotencyKey"] for p in pending_markers(world)]
        read_only(store, False)
        refused = await service.apply("alice", "K2")
        settled = await service.apply("alice", "K1")
    assert markers == ["K1"]
    assert refused_pending(refused, "K1"), refused
    assert isinstance(settled, ext.AccountPoolApplyResponse) and settled.outcome is Outcome.ALREADY_REDEEMED
    assert spends(world) == {"K1": "reset"}
    assert world.upstream.consume_keys() == ["K1", "K1"]
    assert pending_markers(world) == []
    assert_money_kept(world, [world.data_home])


def read_only(store: SqliteStore, on: bool) -> None:
    conn = store._file._conn
    assert conn is not None
    conn.execute(f"PRAGMA query_only = {int(on)}")


def pending_markers(world: World) -> list[Path]:
    return sorted((world.homes["alice"] / DIR_NAME).glob("pending-*.json"))


@SQLITE_ONLY
async def test_a_corrupt_ledger_names_the_file_and_what_to_do_and_is_never_recreated(world: World) -> None:
    path = world.data_home / LEDGER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    async with serving(world.settings()) as service:
        answer = await service.apply("alice", "K1")
        with pytest.raises(RpcError) as listed:
            with anyio.fail_after(WAIT):
                await service.harness.client.request(LIST, {})
    assert isinstance(answer, RpcError) and answer.code == INTERNAL_ERROR
    for message in (answer.message, listed.value.message):
        assert str(path) in message and "move it aside" in message, message
    assert "nothing was spent" in answer.message
    assert path.read_bytes() == garbage
    assert world.upstream.consume_arrivals() == []


@pytest.mark.parametrize("store_backend", ["sqlite", "postgres"], indirect=True)
async def test_upstream_answering_after_the_deadline_is_unknown_and_the_resend_settles_it(world: World) -> None:
    refill(world)
    async with serving(world.settings(consume=0.5)) as service:
        world.upstream.hold(after=True)
        late = await service.apply("alice", "K1")
        world.upstream.release()
        refused = await service.apply("alice", "K2")
        settled = await service.apply("alice", "K1")
    assert isinstance(late, RpcError) and late.code == INTERNAL_ERROR and "timed out" in late.message
    assert late.data == {"accountId": "alice", "idempotencyKey": "K1", "outcome": "unknown"}
    assert refused_pending(refused, "K1"), refused
    assert isinstance(settled, ext.AccountPoolApplyResponse) and settled.outcome is Outcome.ALREADY_REDEEMED
    assert spends(world) == {"K1": "reset"}
    assert_money_kept(world, [world.data_home])
