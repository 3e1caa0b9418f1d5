"""A ledger written by the first release (schema 1, no identities) is upgraded in place, nothing lost.

`tests/fixtures/ledgers/ledger-0.1.0.sqlite3` was written by codex-limits 0.1.0 (commit a8ba37a):
alice `key-done` finished (reset, 2 -> 1), bob `key-refused` failed (409), alice `key-unknown`
pending after a consume timeout.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Final

import anyio
import pytest

from app_server.store.base import AccountKey, ClaimHeld, StoreError
from app_server.store.sqlite import SCHEMA_VERSION, SqliteStore
from protocol import ext
from protocol.ext import ApplyStatus
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledgers" / "ledger-0.1.0.sqlite3"
WAIT = 10.0


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "ledger.sqlite3"
    path.parent.mkdir()
    shutil.copyfile(FIXTURE, path)
    return path


def alice(tmp_path: Path) -> AccountKey:
    home = tmp_path / "homes" / "alice"
    home.mkdir(parents=True, exist_ok=True)
    return AccountKey("chatgpt:acct-alice:user-alice", home)


async def test_the_first_releases_ledger_is_upgraded_and_keeps_every_attempt(old_ledger: Path, tmp_path: Path) -> None:
    with closing(sqlite3.connect(old_ledger)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
    store = SqliteStore(old_ledger)
    try:
        with anyio.fail_after(WAIT):
            history = await store.history(None, 10)
            done = await store.get("key-done")
            pending = await store.pending(alice(tmp_path), account_id="alice")
    finally:
        store.close()
    with closing(sqlite3.connect(old_ledger)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert [(r.idempotency_key, r.account_id, r.status) for r in history] == [
        ("key-unknown", "alice", ApplyStatus.PENDING),
        ("key-refused", "bob", ApplyStatus.FAILED),
        ("key-done", "alice", ApplyStatus.FINISHED),
    ]
    assert done is not None and done.response is not None
    assert done.response.outcome is Outcome.RESET
    assert (done.record.available_before, done.record.available_after) == (2, 1)
    # The pending attempt of the old ledger still blocks new keys on alice's account.
    assert pending is not None and pending.idempotency_key == "key-unknown"


async def test_the_old_pending_attempt_is_settled_with_its_own_key(old_ledger: Path, tmp_path: Path) -> None:
    store = SqliteStore(old_ledger)
    account = alice(tmp_path)
    summary = ext.AccountSummary(
        account_id="alice",
        label="alice",
        codex_home=str(account.home),
        status=ext.AccountStatus.ACTIVE,
        reset_action=ext.ResetAction(enabled=True, warning=ext.APPLY_WARNING),
    )
    response = ext.AccountPoolApplyResponse(
        outcome=Outcome.ALREADY_REDEEMED, before=summary, after=summary, applied_at=1_790_000_300
    )
    try:
        with anyio.fail_after(WAIT):
            await store.start("key-unknown", account, "alice", None, 1_790_000_299, 0)
            await store.finish("key-unknown", response, 0)
            settled = await store.get("key-unknown")
            pending = await store.pending(account, account_id="alice")
    finally:
        store.close()
    assert settled is not None and settled.status is ApplyStatus.FINISHED
    assert settled.record.started_at == 1_790_000_200  # the first start, from the old ledger
    assert settled.identity == account.identity
    assert pending is None


async def test_a_ledger_from_a_newer_release_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SqliteStore(path)
    with pytest.raises(StoreError) as raised, anyio.fail_after(WAIT):
        await store.history(None, 1)
    store.close()
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this codex-limits ({SCHEMA_VERSION})" in str(raised.value)
    assert "upgrade codex-limits" in str(raised.value)


SCHEMA2: Final = FIXTURE.parent / "ledger-schema2.sqlite3"
"""Written by the release before issue 18 (schema 2: `window` column, usage samples inserted twice, no
claims): alice `key-done` finished (reset, 2 -> 1), alice `key-unknown` pending after a consume timeout, bob
`key-refused` failed (409); alice's primary window sampled twice in one second (40 then 45) and once later."""


@pytest.fixture
def schema2_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "ledger.sqlite3"
    path.parent.mkdir()
    shutil.copyfile(SCHEMA2, path)
    return path


async def test_a_schema_2_ledger_gets_the_shared_vocabulary_and_keeps_every_attempt(
    schema2_ledger: Path, tmp_path: Path
) -> None:
    store = SqliteStore(schema2_ledger)
    account = alice(tmp_path)
    try:
        with anyio.fail_after(WAIT):
            history = await store.history(None, 10)
            pending = await store.pending(account, account_id="alice")
            usage = await store.usage_history("alice", since=None, limit=10)
            with pytest.raises(ClaimHeld) as refused:
                await store.start("key-new", account, "alice", None, 1_790_000_400, 1)
    finally:
        store.close()
    with closing(sqlite3.connect(schema2_ledger)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(usage_samples)")]
        claims = conn.execute("SELECT identity, idempotency_key FROM claims").fetchall()
    assert [(r.idempotency_key, r.status) for r in history] == [
        ("key-refused", ApplyStatus.FAILED),
        ("key-unknown", ApplyStatus.PENDING),
        ("key-done", ApplyStatus.FINISHED),
    ]
    assert pending is not None and pending.idempotency_key == "key-unknown"
    assert refused.value.holder == "key-unknown"
    assert "window_name" in columns and "window" not in columns
    assert claims == [(account.identity, "key-unknown")]
    # The two samples of one second became one (the later values), as PostgreSQL keeps them.
    assert [(s.window, s.taken_at, s.used_percent) for s in usage] == [
        ("primary", 1_790_000_000, 45),
        ("secondary", 1_790_000_000, 10),
        ("primary", 1_790_000_060, 50),
    ]
