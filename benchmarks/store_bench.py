"""The store alone under `accountPool`-like reads: SQLite vs PostgreSQL, through the same `Store` interface.

Workloads, on a store filled with 1,000 finished applies over 200 upstream identities (5 each, one pool
account id per identity) plus 20 attempts left pending on 20 of them:

- `history all`: `history(None, 1000)`, the whole ledger newest first (the history page, worst case);
- `history one`: `history(account_id, 100)` for one account;
- `pending seq`: `pending(identity)` for each of the 200 identities, one after the other (a pool listing
  that asks per account); the figure is the time for all 200;
- `pending conc`: the same 200 lookups at once (one task each), as a pool refreshing concurrently would;
- `fill`: one `start` + `finish` pair (two transactions), measured while filling.

And through the real pool (the in-memory server, `World` with each store, the simulated upstream on
127.0.0.1 serving 200 signed-in accounts, one Codex home each):

- `accountPool/list fresh`: `maxAgeSeconds: 0`, so every account is read again: two upstream calls and
  one `pending` lookup per account, 200 accounts (the store's share is the difference between the stores);
- `accountPool/list cached`: the default `maxAgeSeconds` answered from the cache (no store call);
- `accountPool/history 1,000`: `limit: 1000` over a ledger of 1,000 finished applies on those accounts.

Usage (from the repository root):

    .venv/bin/python benchmarks/store_bench.py [--rounds N] [--pg-url URL] [--pool-size N] [--no-check-connections]

Without `--pg-url` a throwaway PostgreSQL cluster is started on 127.0.0.1 (`tests/support/postgres.py`:
Debian's binaries, as root through the `postgres` user). `--skip-pool` leaves out the pool half.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import anyio

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app_server.store.base import AccountKey, Store  # noqa: E402
from protocol import ext  # noqa: E402
from protocol.ext import AccountPoolApplyResponse  # noqa: E402
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome  # noqa: E402

IDENTITIES: Final = 200
APPLIES_PER_IDENTITY: Final = 5
PENDING: Final = 20


async def open_sqlite_store(directory: Path) -> Store:
    """The SQLite store to measure, in a fresh directory (its guard goes beside each account's home)."""
    from app_server.store.sqlite import FILE_NAME, SqliteStore

    return SqliteStore(directory / FILE_NAME)


def identities(directory: Path) -> list[tuple[AccountKey, str]]:
    """(upstream account, pool account id) pairs, with a Codex home directory each."""
    accounts = []
    for index in range(IDENTITIES):
        home = directory / "homes" / f"account-{index:03d}"
        home.mkdir(parents=True, exist_ok=True)
        accounts.append((AccountKey(f"chatgpt:acct-{index:03d}:user-{index:03d}", home), f"account-{index:03d}"))
    return accounts


def summary(account_id: str, available: int) -> ext.AccountSummary:
    return ext.AccountSummary(
        account_id=account_id,
        label=account_id,
        codex_home=f"/homes/{account_id}",
        status=ext.AccountStatus.ACTIVE,
        reset_credits=ext.ResetCreditsOverview(available_count=available),
        reset_action=ext.ResetAction(enabled=True, warning=ext.APPLY_WARNING),
    )


async def fill(store: Store, accounts: list[tuple[AccountKey, str]]) -> list[float]:
    """1,000 finished applies and 20 pending ones; returns the start+finish latencies (ms)."""
    latencies = []
    now = 1_790_000_000
    for round_ in range(APPLIES_PER_IDENTITY):
        for index, (account, account_id) in enumerate(accounts):
            now += 1
            key = f"apply-{round_}-{index:03d}"
            answer = AccountPoolApplyResponse(
                outcome=Outcome.RESET,
                before=summary(account_id, 3),
                after=summary(account_id, 2),
                applied_at=now,
            )
            started = time.perf_counter()
            await store.start(key, account, account_id, f"credit-{key}", now, 3)
            await store.finish(key, answer, 2)
            latencies.append((time.perf_counter() - started) * 1000)
    for index, (account, account_id) in enumerate(accounts[:PENDING]):
        now += 1
        await store.start(f"pending-{index:03d}", account, account_id, None, now, 3)
    return latencies


async def timed(rounds: int, work: Callable[[], Awaitable[object]]) -> list[float]:
    await work()  # warm-up: connections, prepared statements, caches
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure(store: Store, directory: Path, rounds: int) -> dict[str, list[float]]:
    accounts = identities(directory)
    figures = {"fill (start+finish)": await fill(store, accounts)}
    history = await store.history(None, 1000)
    assert len(history) == 1000, len(history)
    found = [await store.pending(account) for account, _ in accounts]
    assert sum(record is not None for record in found) == PENDING

    async def history_all() -> None:
        await store.history(None, 1000)

    async def history_one() -> None:
        await store.history(accounts[7][1], 100)

    async def pending_sequential() -> None:
        for account, _ in accounts:
            await store.pending(account)

    async def pending_concurrent() -> None:
        async with anyio.create_task_group() as group:
            for account, _ in accounts:
                group.start_soon(store.pending, account)

    figures["history all (1,000 rows)"] = await timed(rounds, history_all)
    figures["history one account"] = await timed(rounds, history_one)
    figures["pending x200 sequential"] = await timed(rounds, pending_sequential)
    figures["pending x200 concurrent"] = await timed(rounds, pending_concurrent)
    return figures


async def measure_pool(directory: Path, database_url: str | None, rounds: int) -> dict[str, list[float]]:
    """`accountPool/list` over 200 accounts and `accountPool/history` over 1,000 applies, in memory."""
    from app_server.config import DATABASE_URL_ENV, Settings
    from app_server.pool.accounts import FILE_NAME, AccountsFile
    from app_server.pool.pool import account_key
    from app_server.server import serve_in_memory
    from app_server.sim.upstream import SimulatedUpstream
    from app_server.world import World

    with SimulatedUpstream() as sim:
        keys = [f"acct{index:03d}" for index in range(IDENTITIES)]
        for index, key in enumerate(keys):
            sim.add_account(
                key, f"Account {index}", "pro", primary=(40 + index % 60, 3600), secondary=(20, 86_400), credit_days=[7]
            )
        homes = sim.write_codex_homes(directory / "homes")
        data_home, codex_home = directory / "data", directory / "no-default-home"
        accounts = AccountsFile(data_home / FILE_NAME, codex_home)
        accounts.remove("default")
        for key in keys:
            accounts.add(key, homes[key], key)
        settings = Settings(
            codex_home=codex_home,
            data_home=data_home,
            refresh_url=sim.refresh_url,
            env={} if database_url is None else {DATABASE_URL_ENV: database_url},
        )
        services = World(settings)
        async with serve_in_memory(services) as harness:
            await harness.initialize()
            await harness.client.request("accountPool/list", {"maxAgeSeconds": 0})  # warm-up, fills the cache
            pool = services.pool
            now = 1_790_000_000
            for round_ in range(APPLIES_PER_IDENTITY):
                for key in keys:
                    now += 1
                    apply_key = f"apply-{round_}-{key}"
                    answer = AccountPoolApplyResponse(
                        outcome=Outcome.RESET, before=summary(key, 1), after=summary(key, 0), applied_at=now
                    )
                    upstream_account = account_key(pool.registry.get(homes[key]))
                    await services.store.start(apply_key, upstream_account, key, None, now, 1)
                    await services.store.finish(apply_key, answer, 0)

            async def list_fresh() -> None:
                listed = await harness.client.request("accountPool/list", {"maxAgeSeconds": 0})
                assert len(listed["accounts"]) == IDENTITIES

            async def list_cached() -> None:
                await harness.client.request("accountPool/list", {"maxAgeSeconds": 3600})

            async def history() -> None:
                answer = await harness.client.request("accountPool/history", {"limit": 1000})
                assert len(answer["entries"]) == 1000, len(answer["entries"])

            return {
                "accountPool/list fresh (200)": await timed(max(3, rounds // 3), list_fresh),
                "accountPool/list cached (200)": await timed(rounds, list_cached),
                "accountPool/history 1,000": await timed(rounds, history),
            }


def report(name: str, figures: dict[str, list[float]]) -> None:
    print(f"\n{name}")
    print(f"  {'':28} {'median':>9} {'p90':>9} {'max':>9}  (ms)")
    for label, samples in figures.items():
        ordered = sorted(samples)
        p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        print(f"  {label:28} {statistics.median(ordered):9.3f} {p90:9.3f} {ordered[-1]:9.3f}")


async def run(args: argparse.Namespace) -> None:
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, rounds={args.rounds}")
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        directory = Path(tmp) / "sqlite"
        directory.mkdir()
        sqlite = await open_sqlite_store(directory)
        try:
            sqlite_figures = await measure(sqlite, directory, args.rounds)
        finally:
            await sqlite.aclose()
        if not args.skip_pool:
            pool_directory = Path(tmp) / "sqlite-pool"
            pool_directory.mkdir()
            sqlite_figures |= await measure_pool(pool_directory, None, args.rounds)
        report("SQLite", sqlite_figures)

        from app_server.store.postgres import PostgresStore

        cluster = None
        url = args.pg_url
        if url is None:
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster()
            cluster.start()
            url = cluster.url(cluster.create_database())
        try:
            postgres = await PostgresStore.open(
                url, pool_size=args.pool_size, check_connections=not args.no_check_connections
            )
            try:
                directory = Path(tmp) / "postgres"
                directory.mkdir()
                figures = await measure(postgres, directory, args.rounds)
            finally:
                await postgres.aclose()
            if not args.skip_pool:
                pool_url = args.pool_pg_url
                if pool_url is None and cluster is not None:
                    pool_url = cluster.url(cluster.create_database())
                if pool_url is not None:
                    pool_directory = Path(tmp) / "postgres-pool"
                    pool_directory.mkdir()
                    figures |= await measure_pool(pool_directory, pool_url, args.rounds)
        finally:
            if cluster is not None:
                cluster.stop()
        where = "throwaway cluster on 127.0.0.1" if cluster is not None else "--pg-url"
        check = "off" if args.no_check_connections else "on"
        report(f"PostgreSQL ({where}, pool_size={args.pool_size}, connection check {check})", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="timed repetitions of each read workload")
    parser.add_argument("--pg-url", default=None, help="an existing, empty PostgreSQL database (it gets filled)")
    parser.add_argument("--pool-size", type=int, default=4, help="PostgresStore's connection pool size")
    parser.add_argument(
        "--no-check-connections", action="store_true", help="PostgresStore without its per-checkout connection check"
    )
    parser.add_argument("--skip-pool", action="store_true", help="only the store, not accountPool/* through the pool")
    parser.add_argument(
        "--pool-pg-url", default=None, help="with --pg-url: another empty database for the pool half (else skipped)"
    )
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
