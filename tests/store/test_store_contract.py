"""The `Store` contract, run against both stores: the SQLite ledger (with its guard beside the Codex homes)
and PostgreSQL on the session's throwaway cluster (a fresh database per test).

The ledger's states and key rules, the claim (refused while another key's attempt is pending, re-taken by
its own key, released only by settling it), pending attempts by upstream identity, history, several handles
on one store (as several processes or machines have), the apply lock, and usage history. The rules that
had drifted between the two stores are pinned here once for both: a retry keeps the first identity and
fills an unknown credit, a usage sample recorded twice in one second is kept once with the later values,
a negative limit is clamped. What is particular to
one store lives in its own file: `test_sqlite_store.py` (the file, WAL, opening races) and
`test_postgres_store.py` (marker rows, advisory-lock specifics, migrations, connection errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from app_server.store.base import AccountKey, ClaimHeld, KeyInUse, LockTimeout, Store, UsageSample
from protocol.ext import ApplyRecord, ApplyStatus
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.ledger_data import response
from tests.support.store_backends import StoreBackend

pytestmark = pytest.mark.anyio

WAIT = 20.0

Accounts = Callable[[str], AccountKey]


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def acct(tmp_path: Path) -> Accounts:
    """The upstream account behind pool id `name`: one Codex home each, in this test's directory."""

    def key(name: str) -> AccountKey:
        home = tmp_path / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        return AccountKey(f"chatgpt:acct-{name}:user-{name}", home)

    return key


@pytest.fixture
async def store(store_backend: StoreBackend, data_home: Path) -> AsyncIterator[Store]:
    with anyio.fail_after(WAIT):
        opened = await store_backend.open(data_home)
    yield opened
    with anyio.fail_after(WAIT):
        await opened.aclose()


def attempts(backend: StoreBackend, data_home: Path, key: str) -> int:
    (row,) = [row for row in backend.ledger_rows(data_home) if row["idempotency_key"] == key]
    return int(row["attempts"])


# The ledger.


async def test_start_records_a_pending_attempt(store: Store, acct: Accounts) -> None:
    with anyio.fail_after(WAIT):
        assert await store.get("k1") is None
        assert await store.pending(acct("alice")) is None
        await store.start("k1", acct("alice"), "alice", "credit-1", 1_790_000_000, 2)
        attempt = await store.get("k1")
        pending = await store.pending(acct("alice"))
    assert attempt is not None and attempt.response is None
    assert attempt.identity == acct("alice").identity
    assert attempt.record == ApplyRecord(
        idempotency_key="k1",
        account_id="alice",
        credit_id="credit-1",
        status=ApplyStatus.PENDING,
        started_at=1_790_000_000,
        available_before=2,
    )
    assert pending == attempt.record


async def test_finish_records_the_outcome_and_the_whole_response_once(store: Store, acct: Accounts) -> None:
    first = response("alice", Outcome.RESET, applied_at=1_790_000_100)
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 2)
        await store.finish("k1", first, 1)
        await store.finish("k1", response("alice", Outcome.NO_CREDIT, applied_at=1_790_000_200), 0)
        await store.fail("k1", "late failure", 1_790_000_300, keep_pending=False)
        attempt = await store.get("k1")
        pending = await store.pending(acct("alice"))
    assert attempt is not None
    assert attempt.status is ApplyStatus.FINISHED
    assert attempt.response == first
    assert attempt.record.outcome is Outcome.RESET
    assert (attempt.record.finished_at, attempt.record.available_before, attempt.record.available_after) == (
        1_790_000_100,
        2,
        1,
    )
    assert attempt.record.error is None
    assert pending is None


async def test_an_unknown_outcome_stays_pending_with_the_reason(store: Store, acct: Accounts) -> None:
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
        await store.fail("k1", "consume timed out; outcome unknown", 1_790_000_010, keep_pending=True)
        attempt = await store.get("k1")
        pending = await store.pending(acct("alice"))
    assert attempt is not None
    assert attempt.status is ApplyStatus.PENDING
    assert attempt.record.error == "consume timed out; outcome unknown"
    assert attempt.record.finished_at is None
    assert pending == attempt.record


async def test_a_definite_refusal_is_failed_and_a_retry_starts_it_again(
    store: Store, acct: Accounts, store_backend: StoreBackend, data_home: Path
) -> None:
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", "credit-1", 1_790_000_000, 2)
        await store.fail("k1", "401 from upstream", 1_790_000_010, keep_pending=False)
        failed = await store.get("k1")
        cleared = await store.pending(acct("alice"))
        await store.start("k1", acct("alice"), "alice", "credit-1", 1_790_000_020, 7)
        retried = await store.get("k1")
        pending = await store.pending(acct("alice"))
    assert failed is not None and failed.status is ApplyStatus.FAILED
    assert (failed.record.error, failed.record.finished_at) == ("401 from upstream", 1_790_000_010)
    assert cleared is None
    assert retried is not None and retried.status is ApplyStatus.PENDING
    assert (retried.record.error, retried.record.finished_at) == (None, None)
    # The attempt keeps its first start and its first count of credits.
    assert (retried.record.started_at, retried.record.available_before) == (1_790_000_000, 2)
    assert pending == retried.record
    assert attempts(store_backend, data_home, "k1") == 2


async def test_a_pending_key_can_be_started_again(
    store: Store, acct: Accounts, store_backend: StoreBackend, data_home: Path
) -> None:
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
        await store.fail("k1", "timed out", 1_790_000_003, keep_pending=True)
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_005, 0)
        attempt = await store.get("k1")
    assert attempts(store_backend, data_home, "k1") == 2
    assert attempt is not None
    assert attempt.status is ApplyStatus.PENDING
    assert (attempt.record.started_at, attempt.record.available_before, attempt.record.error) == (
        1_790_000_000,
        1,
        None,
    )


async def test_a_key_belongs_to_one_account(store: Store, acct: Accounts) -> None:
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
        with pytest.raises(KeyInUse) as raised:
            await store.start("k1", acct("bob"), "bob", None, 1_790_000_001, 0)
        attempt = await store.get("k1")
        bob = await store.pending(acct("bob"))
    assert (raised.value.key, raised.value.account_id, raised.value.status) == ("k1", "alice", ApplyStatus.PENDING)
    assert attempt is not None and attempt.record.account_id == "alice"
    assert bob is None


async def test_a_finished_key_is_never_started_again(
    store: Store, acct: Accounts, store_backend: StoreBackend, data_home: Path
) -> None:
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 2)
        await store.finish("k1", response("alice"), 1)
        with pytest.raises(KeyInUse) as raised:
            await store.start("k1", acct("alice"), "alice", None, 1_790_000_001, 1)
        pending = await store.pending(acct("alice"))
    assert raised.value.status is ApplyStatus.FINISHED
    assert attempts(store_backend, data_home, "k1") == 1
    assert pending is None


async def test_the_claim_refuses_another_key_while_one_is_pending(store: Store, acct: Accounts) -> None:
    """The claim is the lock: a second key on the same upstream account is refused, with nothing written,
    until the first key settles; the first key may re-take its own claim; another account is free."""
    alice = acct("alice")
    with anyio.fail_after(WAIT):
        await store.start("first", alice, "alice", None, 1_790_000_000, 2)
        await store.fail("first", "timed out", 1_790_000_001, keep_pending=True)
        with pytest.raises(ClaimHeld) as refused:
            await store.start("second", alice, "alice", None, 1_790_000_002, 2)
        second = await store.get("second")
        await store.start("first", alice, "alice", None, 1_790_000_003, 2)  # re-sent: its own claim
        await store.start("other", acct("bob"), "bob", None, 1_790_000_004, 0)
        running = await store.pending(alice, exclude="first")
        await store.finish("first", response("alice"), 1)
        await store.start("second", alice, "alice", None, 1_790_000_005, 1)
        latest = await store.pending(alice)
    assert (refused.value.key, refused.value.holder, refused.value.holder_account_id) == ("second", "first", "alice")
    assert second is None
    assert running is None
    assert latest is not None and latest.idempotency_key == "second"


async def test_a_definite_failure_releases_the_claim(store: Store, acct: Accounts) -> None:
    alice = acct("alice")
    with anyio.fail_after(WAIT):
        await store.start("refused", alice, "alice", None, 1_790_000_000, 2)
        await store.fail("refused", "409", 1_790_000_001, keep_pending=False)
        await store.start("next", alice, "alice", None, 1_790_000_002, 2)
        pending = await store.pending(alice)
    assert pending is not None and pending.idempotency_key == "next"


async def test_a_retry_keeps_the_first_identity_and_fills_an_unknown_credit(
    store: Store, acct: Accounts, tmp_path: Path
) -> None:
    """One rule on both stores: the first identity stays; a credit first unknown is filled in, a known one kept."""
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 2)
        await store.fail("k1", "timed out", 1_790_000_001, keep_pending=True)
        await store.start("k1", acct("bob"), "alice", "credit-2", 1_790_000_002, 2)
        filled = await store.get("k1")
        await store.fail("k1", "timed out", 1_790_000_003, keep_pending=True)
        await store.start("k1", acct("alice"), "alice", "credit-3", 1_790_000_004, 2)
        kept = await store.get("k1")
    assert filled is not None and (filled.identity, filled.record.credit_id) == (acct("alice").identity, "credit-2")
    assert kept is not None and kept.record.credit_id == "credit-2"


async def test_any_pool_id_of_the_same_upstream_account_may_resend_a_key(store: Store, acct: Accounts) -> None:
    """Identity decides: a key re-sent through another pool id on the same upstream account is its retry
    (the row keeps the first pool id); a pool id on another upstream account is refused."""
    alice = acct("alice")
    with anyio.fail_after(WAIT):
        await store.start("k1", alice, "alice", None, 1_790_000_000, 2)
        await store.fail("k1", "timed out", 1_790_000_001, keep_pending=True)
        await store.start("k1", alice, "default", None, 1_790_000_002, 2)
        with pytest.raises(KeyInUse):
            await store.start("k1", acct("bob"), "bob", None, 1_790_000_003, 2)
        await store.finish("k1", response("alice"), 1)
        attempt = await store.get("k1")
        pending = await store.pending(alice)
    assert attempt is not None and attempt.record.account_id == "alice" and attempt.status is ApplyStatus.FINISHED
    assert pending is None


async def test_pending_is_found_by_identity_from_another_home(store: Store, acct: Accounts, tmp_path: Path) -> None:
    # The same upstream account signed in to another Codex home (a copy of auth.json), under another pool id.
    alias_home = tmp_path / "elsewhere" / "alice"
    alias_home.mkdir(parents=True)
    alias = AccountKey(acct("alice").identity, alias_home)
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice-laptop", None, 1_790_000_000, 2)
        found = await store.pending(alias)
        excluded = await store.pending(alias, exclude="k1")
        other = await store.pending(acct("bob"))
    assert found is not None and (found.idempotency_key, found.account_id) == ("k1", "alice-laptop")
    assert excluded is None
    assert other is None


async def test_a_retry_under_another_identity_is_pending_for_both(store: Store, acct: Accounts) -> None:
    # The home of pool account "alice" was signed in to another upstream account between two attempts.
    with anyio.fail_after(WAIT):
        await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 2)
        await store.fail("k1", "ambiguous", 1_790_000_010, keep_pending=True)
        await store.start("k1", acct("bob"), "alice", None, 1_790_000_020, 2)
        for_alice = await store.pending(acct("alice"))
        for_bob = await store.pending(acct("bob"))
        await store.finish("k1", response("alice"), 1)
        after = [await store.pending(acct("alice")), await store.pending(acct("bob"))]
    assert for_alice is not None and for_alice.idempotency_key == "k1"
    assert for_bob is not None and for_bob.idempotency_key == "k1"
    assert after == [None, None]


async def test_history_is_newest_first_filtered_and_limited(store: Store, acct: Accounts) -> None:
    with anyio.fail_after(WAIT):
        for i, name in enumerate(["alice", "bob", "alice", "carol", "alice"]):
            await store.start(f"k{i}", acct(name), name, None, 1_790_000_000 + i, None)
            await store.fail(f"k{i}", "409", 1_790_000_000 + i, keep_pending=False)
        await store.start("k5", acct("alice"), "alice", None, 1_790_000_004, None)  # same second: later first
        everything = await store.history(None, 100)
        alice = await store.history("alice", 100)
        two = await store.history("alice", 2)
        nobody = await store.history("nobody", 100)
        none = await store.history(None, 0)
        negative = await store.history(None, -5)
    assert negative == []
    assert [r.idempotency_key for r in everything] == ["k5", "k4", "k3", "k2", "k1", "k0"]
    assert [r.idempotency_key for r in alice] == ["k5", "k4", "k2", "k0"]
    assert [r.idempotency_key for r in two] == ["k5", "k4"]
    assert nobody == [] and none == []


# Several handles on one store: other processes, or other machines for a shared store.


async def test_two_handles_see_each_other_and_share_the_key_rule(
    store: Store, store_backend: StoreBackend, data_home: Path, acct: Accounts
) -> None:
    with anyio.fail_after(WAIT):
        second = await store_backend.open(data_home)
        try:
            await store.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
            seen = await second.get("k1")
            seen_pending = await second.pending(acct("alice"))
            with pytest.raises(KeyInUse):
                await second.start("k1", acct("bob"), "bob", None, 1_790_000_001, 0)
            await second.finish("k1", response("alice"), 0)
            finished = await store.get("k1")
            pending = await store.pending(acct("alice"))
        finally:
            await second.aclose()
    assert seen is not None and seen.status is ApplyStatus.PENDING
    assert seen_pending is not None and seen_pending.idempotency_key == "k1"
    assert finished is not None and finished.status is ApplyStatus.FINISHED
    assert pending is None


async def test_concurrent_starts_of_one_key_for_two_accounts_let_exactly_one_win(
    store_backend: StoreBackend, data_home: Path, acct: Accounts
) -> None:
    winners: list[str] = []
    losers: list[str] = []
    with anyio.fail_after(WAIT):
        handles = [await store_backend.open(data_home) for _ in range(6)]
        try:

            async def claim(handle: Store, account: str) -> None:
                try:
                    await handle.start("shared", acct(account), account, None, 1_790_000_000, 1)
                except KeyInUse:
                    losers.append(account)
                else:
                    winners.append(account)

            async with anyio.create_task_group() as tg:
                for i, handle in enumerate(handles):
                    tg.start_soon(claim, handle, "alice" if i % 2 else "bob")
            attempt = await handles[0].get("shared")
        finally:
            for handle in handles:
                await handle.aclose()
    owner = attempt.record.account_id if attempt else None
    # The first claim wins; later claims for the same account count as retries, the other account's fail.
    assert owner in ("alice", "bob")
    assert winners == [owner] * 3
    assert losers == [("bob" if owner == "alice" else "alice")] * 3
    assert attempts(store_backend, data_home, "shared") == 3


async def test_concurrent_starts_of_two_keys_on_one_account_let_exactly_one_claim(
    store_backend: StoreBackend, data_home: Path, acct: Accounts
) -> None:
    """Six handles (processes, machines) start six keys on one upstream account at once, no lock held:
    exactly one is claimed; every other is refused naming it, and left no row."""
    claimed: list[str] = []
    refused: list[tuple[str, str]] = []
    with anyio.fail_after(WAIT):
        handles = [await store_backend.open(data_home) for _ in range(6)]
        try:

            async def claim(handle: Store, key: str) -> None:
                try:
                    await handle.start(key, acct("alice"), "alice", None, 1_790_000_000, 1)
                except ClaimHeld as held:
                    refused.append((key, held.holder))
                else:
                    claimed.append(key)

            async with anyio.create_task_group() as tg:
                for i, handle in enumerate(handles):
                    tg.start_soon(claim, handle, f"k{i}")
            rows = [await handles[0].get(f"k{i}") for i in range(6)]
        finally:
            for handle in handles:
                await handle.aclose()
    assert len(claimed) == 1
    assert sorted(key for key, _ in refused) == sorted(f"k{i}" for i in range(6) if f"k{i}" != claimed[0])
    assert {holder for _, holder in refused} == set(claimed)
    assert [row.record.idempotency_key for row in rows if row is not None] == claimed


# The apply lock.


async def test_the_lock_excludes_another_handle_until_released(
    store: Store, store_backend: StoreBackend, data_home: Path, acct: Accounts
) -> None:
    alice = acct("alice")
    order: list[str] = []
    with anyio.fail_after(WAIT):
        other = await store_backend.open(data_home)
        try:
            held, release = anyio.Event(), anyio.Event()

            async def hold() -> None:
                async with store.apply_lock(alice, wait=5):
                    held.set()
                    await release.wait()
                    order.append("released")

            async with anyio.create_task_group() as group:
                group.start_soon(hold)
                await held.wait()
                with pytest.raises(LockTimeout) as waited:
                    async with other.apply_lock(alice, wait=0.2):
                        pytest.fail("took a held lock")
                with pytest.raises(LockTimeout):
                    async with other.apply_lock(alice, wait=0):
                        pytest.fail("took a held lock")
                async with other.apply_lock(acct("bob"), wait=0):  # another upstream account is free
                    order.append("bob")
                release.set()
                async with other.apply_lock(alice, wait=15):
                    order.append("taken")
        finally:
            await other.aclose()
    assert (waited.value.waited, str(waited.value)) == (0.2, "waited 0.2 s for the apply lock")
    assert order == ["bob", "released", "taken"]


async def test_two_tasks_on_one_handle_exclude_each_other(store: Store, acct: Accounts) -> None:
    inside = 0
    most = 0

    async def apply() -> None:
        nonlocal inside, most
        async with store.apply_lock(acct("alice"), wait=15):
            inside += 1
            most = max(most, inside)
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            inside -= 1

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(apply)
    assert most == 1


# Usage history.


def sample(
    taken_at: int, used: int, *, account: str = "alice", limit_id: str = "codex", window: str = "primary"
) -> UsageSample:
    return UsageSample(account, limit_id, window, taken_at, used, 300, taken_at + 3600)


async def test_usage_history_is_oldest_first_since_and_limited(store: Store) -> None:
    samples = [sample(100, 10), sample(100, 20, window="secondary"), sample(200, 15), sample(300, 30, account="bob")]
    with anyio.fail_after(WAIT):
        await store.record_usage(samples)
        await store.record_usage([])
        alice = await store.usage_history("alice", since=None, limit=100)
        since = await store.usage_history("alice", since=200, limit=100)
        newest = await store.usage_history("alice", since=None, limit=2)
        bob = await store.usage_history("bob", since=None, limit=100)
    assert alice == samples[:3]
    assert since == [samples[2]]
    assert newest == [samples[1], samples[2]]  # the newest two, still oldest first
    assert bob == [samples[3]]


async def test_prune_usage_drops_older_samples(store: Store) -> None:
    with anyio.fail_after(WAIT):
        await store.record_usage([sample(100, 1), sample(200, 2), sample(300, 3, account="bob")])
        dropped = await store.prune_usage(250)
        again = await store.prune_usage(250)
        left = await store.usage_history("alice", since=None, limit=10)
        bob = await store.usage_history("bob", since=None, limit=10)
    assert (dropped, again) == (2, 0)
    assert left == []
    assert bob == [sample(300, 3, account="bob")]


async def test_a_sample_recorded_twice_is_kept_once_with_the_later_values(store: Store) -> None:
    with anyio.fail_after(WAIT):
        await store.record_usage([sample(100, 10)])
        await store.record_usage([sample(100, 11), sample(100, 5, window="secondary")])
        history = await store.usage_history("alice", since=None, limit=10)
        clamped = await store.usage_history("alice", since=None, limit=-1)
    assert history == [sample(100, 11), sample(100, 5, window="secondary")]
    assert clamped == []
