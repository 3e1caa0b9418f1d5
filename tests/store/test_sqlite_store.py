"""The SQLite ledger of apply attempts: states, the key rules, history, durability and sharing across handles."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from app_server.store.base import AccountKey, KeyInUse
from app_server.store.sqlite import FILE_NAME
from app_server.store.sqlite import SqliteStore as Ledger
from protocol import ext
from protocol.ext import AccountPoolApplyResponse, ApplyStatus
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome

pytestmark = pytest.mark.anyio

WAIT = 10.0


def summary(account_id: str, available: int | None) -> ext.AccountSummary:
    return ext.AccountSummary(
        account_id=account_id,
        label=account_id,
        codex_home=f"/homes/{account_id}",
        status=ext.AccountStatus.ACTIVE,
        reset_credits=None if available is None else ext.ResetCreditsOverview(available_count=available),
        reset_action=ext.ResetAction(enabled=True, warning=ext.APPLY_WARNING),
    )


def response(account_id: str, outcome: Outcome, *, applied_at: int = 1_790_000_100) -> AccountPoolApplyResponse:
    return AccountPoolApplyResponse(
        outcome=outcome,
        before=summary(account_id, 2),
        after=summary(account_id, 1),
        applied_at=applied_at,
    )


_homes: list[Path] = []


@pytest.fixture(autouse=True)
def homes(tmp_path: Path) -> Iterator[None]:
    _homes.append(tmp_path / "homes")
    yield
    _homes.pop()


def acct(account_id: str) -> AccountKey:
    """The upstream account behind pool id `account_id` (one Codex home each, in this test's directory)."""
    home = _homes[-1] / account_id
    home.mkdir(parents=True, exist_ok=True)
    return AccountKey(f"test:{account_id}", home)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / FILE_NAME


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    led = Ledger(path)
    yield led
    led.close()


def attempts(path: Path, key: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        (count,) = conn.execute("SELECT attempts FROM applies WHERE idempotency_key = ?", (key,)).fetchone()
    return int(count)


async def test_start_records_a_pending_attempt(ledger: Ledger) -> None:
    with anyio.fail_after(WAIT):
        assert await ledger.get("k1") is None
        await ledger.start("k1", acct("alice"), "alice", "credit-1", 1_790_000_000, 2)
        attempt = await ledger.get("k1")
        pending = await ledger.pending(acct("alice"))
    assert attempt is not None and attempt.response is None
    assert attempt.record == ext.ApplyRecord(
        idempotency_key="k1",
        account_id="alice",
        credit_id="credit-1",
        status=ApplyStatus.PENDING,
        started_at=1_790_000_000,
        available_before=2,
    )
    assert pending == attempt.record


async def test_finish_records_the_outcome_and_the_whole_response(ledger: Ledger) -> None:
    answer = response("alice", Outcome.RESET)
    with anyio.fail_after(WAIT):
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_000, 2)
        await ledger.finish("k1", answer, 1)
        attempt = await ledger.get("k1")
        pending = await ledger.pending(acct("alice"))
    assert attempt is not None
    assert attempt.status is ApplyStatus.FINISHED
    assert attempt.response == answer
    assert attempt.record.outcome is Outcome.RESET
    assert (attempt.record.finished_at, attempt.record.available_before, attempt.record.available_after) == (
        answer.applied_at,
        2,
        1,
    )
    assert pending is None


async def test_an_unknown_outcome_stays_pending_with_the_reason(ledger: Ledger) -> None:
    with anyio.fail_after(WAIT):
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
        await ledger.fail("k1", "consume timed out; outcome unknown", 1_790_000_010, keep_pending=True)
        attempt = await ledger.get("k1")
    assert attempt is not None
    assert attempt.status is ApplyStatus.PENDING
    assert attempt.record.error == "consume timed out; outcome unknown"
    assert attempt.record.finished_at is None


async def test_a_definite_refusal_is_failed_and_a_retry_starts_it_again(ledger: Ledger, path: Path) -> None:
    with anyio.fail_after(WAIT):
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
        await ledger.fail("k1", "POST … failed: 500", 1_790_000_010, keep_pending=False)
        failed = await ledger.get("k1")
        assert await ledger.pending(acct("alice")) is None
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_020, 1)
        retried = await ledger.get("k1")
    assert failed is not None and failed.status is ApplyStatus.FAILED
    assert failed.record.finished_at == 1_790_000_010
    assert retried is not None and retried.status is ApplyStatus.PENDING
    assert (retried.record.error, retried.record.finished_at) == (None, None)
    assert retried.record.started_at == 1_790_000_000  # the attempt keeps its first start
    assert attempts(path, "k1") == 2


async def test_a_pending_key_can_be_started_again(ledger: Ledger, path: Path) -> None:
    with anyio.fail_after(WAIT):
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
        await ledger.fail("k1", "timed out", 1_790_000_003, keep_pending=True)
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_005, 0)
        attempt = await ledger.get("k1")
    assert attempts(path, "k1") == 2
    assert attempt is not None
    # The retry is the same attempt: still pending, with its first start time and its first count.
    assert attempt.status is ApplyStatus.PENDING
    assert (attempt.record.started_at, attempt.record.available_before) == (1_790_000_000, 1)


async def test_a_key_belongs_to_one_account(ledger: Ledger) -> None:
    with anyio.fail_after(WAIT):
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
        with pytest.raises(KeyInUse) as raised:
            await ledger.start("k1", acct("bob"), "bob", None, 1_790_000_001, 0)
        attempt = await ledger.get("k1")
    assert (raised.value.account_id, raised.value.status) == ("alice", ApplyStatus.PENDING)
    assert attempt is not None and attempt.record.account_id == "alice"


async def test_a_finished_key_is_never_started_failed_or_finished_again(ledger: Ledger) -> None:
    first = response("alice", Outcome.RESET)
    with anyio.fail_after(WAIT):
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_000, 2)
        await ledger.finish("k1", first, 1)
        with pytest.raises(KeyInUse) as raised:
            await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_001, 1)
        await ledger.fail("k1", "late failure", 1_790_000_002, keep_pending=False)
        await ledger.finish("k1", response("alice", Outcome.ALREADY_REDEEMED, applied_at=1_790_000_003), 1)
        attempt = await ledger.get("k1")
    assert raised.value.status is ApplyStatus.FINISHED
    assert attempt is not None
    assert attempt.status is ApplyStatus.FINISHED
    assert attempt.response == first
    assert attempt.record.error is None


async def test_pending_reports_the_latest_unknown_attempt_except_the_running_one(ledger: Ledger) -> None:
    with anyio.fail_after(WAIT):
        await ledger.start("old", acct("alice"), "alice", None, 1_790_000_000, 2)
        await ledger.start("new", acct("alice"), "alice", None, 1_790_000_000, 2)
        await ledger.start("other", acct("bob"), "bob", None, 1_790_000_050, 0)
        latest = await ledger.pending(acct("alice"))
        besides_new = await ledger.pending(acct("alice"), exclude="new")
        besides_old = await ledger.pending(acct("alice"), exclude="old")
        await ledger.finish("old", response("alice", Outcome.RESET), 1)
        only_running = await ledger.pending(acct("alice"), exclude="new")
    assert latest is not None and latest.idempotency_key == "new"  # same second: the later row wins
    assert besides_new is not None and besides_new.idempotency_key == "old"
    assert besides_old is not None and besides_old.idempotency_key == "new"
    assert only_running is None


async def test_history_is_newest_first_filtered_and_limited(ledger: Ledger) -> None:
    with anyio.fail_after(WAIT):
        for i, account in enumerate(["alice", "bob", "alice", "carol", "alice"]):
            await ledger.start(f"k{i}", acct(account), account, None, 1_790_000_000 + i, None)
        everything = await ledger.history()
        alice = await ledger.history("alice")
        two = await ledger.history("alice", 2)
        nobody = await ledger.history("nobody")
    assert [r.idempotency_key for r in everything] == ["k4", "k3", "k2", "k1", "k0"]
    assert [r.idempotency_key for r in alice] == ["k4", "k2", "k0"]
    assert [r.idempotency_key for r in two] == ["k4", "k2"]
    assert nobody == []


async def test_file_is_private_in_wal_mode_and_survives_reopening(ledger: Ledger, path: Path) -> None:
    answer = response("alice", Outcome.RESET)
    with anyio.fail_after(WAIT):
        await ledger.start("k1", acct("alice"), "alice", None, 1_790_000_000, 2)
        await ledger.finish("k1", answer, 1)
        # SQLite's side files carry the database file's mode.
        for side in ("-wal", "-shm"):
            side_stat = await anyio.Path(str(path) + side).stat()
            assert stat.S_IMODE(side_stat.st_mode) == 0o600
        ledger.close()
        reopened = Ledger(path)
        try:
            attempt = await reopened.get("k1")
        finally:
            reopened.close()
    assert stat.S_IMODE((await anyio.Path(path).stat()).st_mode) == 0o600
    assert stat.S_IMODE((await anyio.Path(path.parent).stat()).st_mode) == 0o700
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert attempt is not None and attempt.response == answer


async def test_two_handles_on_one_file_see_each_other_and_share_the_key_rule(path: Path) -> None:
    # As two server processes sharing CODEX_LIMITS_HOME would.
    first, second = Ledger(path), Ledger(path)
    try:
        with anyio.fail_after(WAIT):
            await first.start("k1", acct("alice"), "alice", None, 1_790_000_000, 1)
            seen = await second.get("k1")
            with pytest.raises(KeyInUse):
                await second.start("k1", acct("bob"), "bob", None, 1_790_000_001, 0)
            await second.finish("k1", response("alice", Outcome.RESET), 0)
            finished = await first.get("k1")
    finally:
        first.close()
        second.close()
    assert seen is not None and seen.status is ApplyStatus.PENDING
    assert finished is not None and finished.status is ApplyStatus.FINISHED


async def test_concurrent_starts_of_one_key_for_two_accounts_let_exactly_one_win(path: Path) -> None:
    handles = [Ledger(path) for _ in range(8)]
    winners: list[str] = []
    losers: list[str] = []

    async def claim(handle: Ledger, account: str) -> None:
        try:
            await handle.start("shared", acct(account), account, None, 1_790_000_000, 1)
        except KeyInUse:
            losers.append(account)
        else:
            winners.append(account)

    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for i, handle in enumerate(handles):
                    tg.start_soon(claim, handle, "alice" if i % 2 else "bob")
            attempt = await handles[0].get("shared")
    finally:
        for handle in handles:
            handle.close()
    owner = attempt.record.account_id if attempt else None
    # The first claim wins; later claims for the same account count as retries, the other account's fail.
    assert owner in ("alice", "bob")
    assert set(winners) == {owner}
    assert len(winners) == 4
    assert losers == [("bob" if owner == "alice" else "alice")] * 4


@pytest.mark.slow
def test_handles_opening_a_new_ledger_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    # Switching a fresh database to WAL answers "database is locked" at once when another connection is
    # creating it: 8 handles racing on a new file, 60 times over, must all open and write.
    failures: list[BaseException] = []
    for trial in range(60):
        path = tmp_path / f"ledger-{trial}.sqlite3"
        barrier = threading.Barrier(8)
        account = acct("alice")

        def open_and_write(
            n: int, path: Path = path, barrier: threading.Barrier = barrier, account: AccountKey = account
        ) -> None:
            ledger = Ledger(path)
            try:
                barrier.wait(timeout=WAIT)
                ledger._start(f"key-{n}", account, "alice", None, 1_790_000_000, 1)
            except BaseException as exc:
                failures.append(exc)
            finally:
                ledger.close()

        threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT)
        assert not any(thread.is_alive() for thread in threads)
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT count(*) FROM applies").fetchone() == (8,)
    assert failures == []
