"""What is particular to the SQLite store: a private file in WAL mode that survives reopening, and handles
racing to create a new ledger. The ledger's rules, shared with PostgreSQL: `test_store_contract.py`."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from app_server.store.base import AccountKey, LedgerUnusable
from app_server.store.sqlite import FILE_NAME
from app_server.store.sqlite import SqliteStore as Ledger
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.ledger_data import response

pytestmark = pytest.mark.anyio

WAIT = 10.0


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


@pytest.mark.slow
def test_handles_opening_a_new_ledger_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    # Switching a fresh database to WAL answers "database is locked" at once when another connection is
    # creating it: 8 handles racing on a new file, 60 times over, must all open and write.
    failures: list[BaseException] = []
    for trial in range(60):
        path = tmp_path / f"ledger-{trial}.sqlite3"
        barrier = threading.Barrier(8)
        accounts = [acct(f"user-{n}") for n in range(8)]

        def open_and_write(
            n: int, path: Path = path, barrier: threading.Barrier = barrier, accounts: list[AccountKey] = accounts
        ) -> None:
            ledger = Ledger(path)
            try:
                barrier.wait(timeout=WAIT)
                anyio.run(ledger.start, f"key-{n}", accounts[n], f"user-{n}", None, 1_790_000_000, 1)
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


GARBAGE = b"not a ledger at all " * 200


@pytest.fixture(params=["garbage", "directory"])
def damaged(request: pytest.FixtureRequest, path: Path) -> str:
    path.parent.mkdir(parents=True)
    if request.param == "garbage":
        path.write_bytes(GARBAGE)
    else:
        path.mkdir()
    return str(request.param)


async def test_a_damaged_or_unopenable_ledger_is_named_and_left_as_it_is(path: Path, damaged: str) -> None:
    ledger = Ledger(path)
    try:
        with pytest.raises(LedgerUnusable) as raised, anyio.fail_after(WAIT):
            await ledger.history(None, 10)
    finally:
        ledger.close()
    assert str(path) in str(raised.value)
    if damaged == "garbage":
        assert "move it aside" in str(raised.value)
        assert await anyio.Path(path).read_bytes() == GARBAGE
    else:
        assert await anyio.Path(path).is_dir()
