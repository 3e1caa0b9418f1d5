"""One account, one spend: a second credit is never spent while an earlier attempt's outcome is unknown,
whichever pool id, data directory or ledger the second attempt comes through (issue #10).

Each test leaves a first apply pending (upstream spent the credit, the answer never arrived in time),
then tries a new key through another path to the same upstream account. Each one failed on the code
before the fix: the pending state and the lock were keyed by pool id and kept in the data directory.

They run on both stores; those about files beside the Codex home or the SQLite ledger are `SQLITE_ONLY`,
and their PostgreSQL counterparts (the marker lives in the database) `POSTGRES_ONLY`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app_server.config import Settings
from app_server.store.local_guard import DIR_NAME
from app_server.store.sqlite import FILE_NAME as LEDGER_FILE
from protocol import ext
from protocol.jsonrpc import INTERNAL_ERROR
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.pool_calls import apply, apply_error, pool_list, refused_data, running
from tests.support.pool_world import World
from tests.support.postgres import free_port
from tests.support.store_backends import POSTGRES_ONLY, SQLITE_ONLY

pytestmark = pytest.mark.anyio


async def leave_pending(world: World, settings: Settings, account: str, key: str) -> None:
    """An apply whose consume upstream carried out but whose answer never came: pending."""
    world.upstream.hold(after=True)
    async with running(settings) as h:
        error = await apply_error(h, account, key)
    assert error.code == INTERNAL_ERROR and "stays pending" in error.message
    assert world.upstream.consume_keys() == [key]


def assert_refused_as_pending(error_data: ext.ApplyRefusedData, pending_key: str) -> None:
    assert error_data.disabled_reason is ext.ResetDisabledReason.PENDING_APPLY
    assert error_data.pending_idempotency_key == pending_key


async def test_a_second_pool_id_for_the_same_codex_home_sees_the_pending_attempt(world: World) -> None:
    world.accounts.add("alice-alias", world.homes["alice"], "Alice again")
    settings = world.settings(consume=0.5)
    await leave_pending(world, settings, "alice", "key-first")
    world.upstream.release()
    async with running(settings) as h:
        error = await apply_error(h, "alice-alias", "key-through-alias")
        listed = await pool_list(h)
    assert_refused_as_pending(refused_data(error), "key-first")
    assert listed["alice-alias"].reset_action.disabled_reason is ext.ResetDisabledReason.PENDING_APPLY
    assert world.upstream.consume_keys() == ["key-first"]
    assert world.upstream.available_credit_count("alice") == 1


async def test_any_pool_id_of_the_same_codex_home_settles_the_pending_attempt(world: World) -> None:
    """Issue 18: `apply default --yes` could not settle an attempt started through another pool id for the
    same Codex home ("the key belongs to the other id"). The identity decides: either id settles it."""
    world.accounts.add("alice-alias", world.homes["alice"], "Alice again")
    settings = world.settings(consume=0.5)
    await leave_pending(world, settings, "alice", "key-first")
    world.upstream.release()
    async with running(settings) as h:
        settled = await apply(h, "alice-alias", "key-first")
        replayed = await apply(h, "alice", "key-first")
        fresh = await apply(h, "alice", "key-after-settling")
    assert settled.outcome is Outcome.ALREADY_REDEEMED
    assert replayed.replayed and replayed.outcome is Outcome.ALREADY_REDEEMED
    assert fresh.outcome in (Outcome.RESET, Outcome.NOTHING_TO_RESET)
    assert world.upstream.consume_keys() == ["key-first", "key-first", "key-after-settling"]
    rows = {row["idempotency_key"]: row for row in world.ledger_rows()}
    assert (rows["key-first"]["account_id"], rows["key-first"]["status"]) == ("alice", "finished")


async def test_an_account_removed_and_added_again_under_a_new_id_keeps_its_pending_attempt(world: World) -> None:
    settings = world.settings(consume=0.5)
    await leave_pending(world, settings, "alice", "key-first")
    world.upstream.release()
    world.accounts.remove("alice")
    world.accounts.add("alice-new", world.homes["alice"], "Alice, re-added")
    async with running(settings) as h:
        error = await apply_error(h, "alice-new", "key-after-readd")
        # The pending key itself is still accepted (under the id it was started with), and settles it.
        world.accounts.add("alice", world.homes["alice"], "Alice")
        settled = await apply(h, "alice", "key-first")
        fresh = await apply(h, "alice-new", "key-after-settling")
    assert_refused_as_pending(refused_data(error), "key-first")
    assert settled.outcome is Outcome.ALREADY_REDEEMED
    assert fresh.outcome in (Outcome.RESET, Outcome.NOTHING_TO_RESET)
    assert world.upstream.consume_keys() == ["key-first", "key-first", "key-after-settling"]


async def test_a_second_data_directory_on_the_same_codex_home_sees_the_pending_attempt(world: World) -> None:
    await leave_pending(world, world.settings(consume=0.5), "alice", "key-first")
    world.upstream.release()
    other = Settings(
        codex_home=world.codex_home,
        data_home=world.root / "other-data",  # another CODEX_LIMITS_HOME: its own ledger and accounts.toml
        refresh_url=world.upstream.refresh_url,
        env=world.backend.env(),
    )
    world_accounts = world.accounts
    other_accounts = type(world_accounts)(other.data_home / "accounts.toml", world.codex_home)
    other_accounts.remove("default")
    other_accounts.add("alice", world.homes["alice"], "Alice")
    async with running(other) as h:
        error = await apply_error(h, "alice", "key-from-elsewhere")
        settled = await apply(h, "alice", "key-first")
    assert_refused_as_pending(refused_data(error), "key-first")
    assert settled.outcome is Outcome.ALREADY_REDEEMED
    assert world.upstream.consume_keys() == ["key-first", "key-first"]


@SQLITE_ONLY
async def test_a_deleted_ledger_loses_no_pending_attempt(world: World) -> None:
    settings = world.settings(consume=0.5)
    await leave_pending(world, settings, "alice", "key-first")
    world.upstream.release()
    for suffix in ("", "-wal", "-shm"):
        (world.data_home / (LEDGER_FILE + suffix)).unlink(missing_ok=True)
    async with running(settings) as h:
        listed = (await pool_list(h))["alice"]
        error = await apply_error(h, "alice", "key-new")
        settled = await apply(h, "alice", "key-first")
        after = (await pool_list(h))["alice"]
    assert listed.pending_apply is not None and listed.pending_apply.idempotency_key == "key-first"
    assert_refused_as_pending(refused_data(error), "key-first")
    assert "re-send its idempotencyKey" in error.message
    assert settled.outcome is Outcome.ALREADY_REDEEMED
    assert after.pending_apply is None
    assert world.upstream.consume_keys() == ["key-first", "key-first"]


@POSTGRES_ONLY
async def test_a_deleted_ledger_row_loses_no_pending_attempt_through_the_marker(world: World) -> None:
    """PostgreSQL's counterpart of the deleted ledger: the marker row alone still blocks a new key."""
    settings = world.settings(consume=0.5)
    await leave_pending(world, settings, "alice", "key-first")
    world.upstream.release()
    world.backend.execute("DELETE FROM applies")
    async with running(settings) as h:
        listed = (await pool_list(h))["alice"]
        error = await apply_error(h, "alice", "key-new")
    assert listed.pending_apply is not None and listed.pending_apply.idempotency_key == "key-first"
    assert_refused_as_pending(refused_data(error), "key-first")
    assert world.upstream.consume_keys() == ["key-first"]


@POSTGRES_ONLY
async def test_a_copied_codex_home_on_another_machine_sees_the_pending_attempt(world: World) -> None:
    """Another machine: its own data directory and its own copy of alice's Codex home (the same auth.json,
    so the same upstream account), nothing shared on disk; only the database can stop a second spend."""
    await leave_pending(world, world.settings(consume=0.5), "alice", "key-first")
    world.upstream.release()
    other = world.another_machine("machine-b", "alice-b")
    home = world.root / "machine-b" / "codex-alice"
    async with running(other) as h:
        error = await apply_error(h, "alice-b", "key-from-machine-b")
    assert_refused_as_pending(refused_data(error), "key-first")
    assert world.upstream.consume_keys() == ["key-first"]
    assert not (home / DIR_NAME).exists()  # nothing local could have told it


@POSTGRES_ONLY
async def test_the_pending_marker_lives_in_the_database_and_nothing_beside_the_codex_home(world: World) -> None:
    await leave_pending(world, world.settings(consume=0.5), "alice", "key-first")
    world.upstream.release()
    assert world.backend.pending_marker_keys() == ["key-first"]
    assert [(r["idempotency_key"], r["status"]) for r in world.ledger_rows()] == [("key-first", "pending")]
    assert not (world.homes["alice"] / DIR_NAME).exists()


@POSTGRES_ONLY
async def test_an_unreachable_database_spends_nothing_and_says_so(world: World) -> None:
    """PostgreSQL's counterpart of the unwritable marker: no store, no consume."""
    settings = world.settings()
    url = f"postgresql://postgres:pw-not-shown@127.0.0.1:{free_port()}/postgres"
    unreachable = Settings(
        codex_home=settings.codex_home,
        data_home=settings.data_home,
        refresh_url=settings.refresh_url,
        env={"CODEX_LIMITS_DATABASE_URL": url},
    )
    async with running(unreachable) as h:
        error = await apply_error(h, "alice", "key-blocked")
    assert error.code == INTERNAL_ERROR
    assert f"cannot reach PostgreSQL at 127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in error.message
    assert "pw-not-shown" not in error.message
    assert world.upstream.consume_keys() == []


@SQLITE_ONLY
async def test_a_zero_length_ledger_loses_no_pending_attempt(world: World) -> None:
    settings = world.settings(consume=0.5)
    await leave_pending(world, settings, "alice", "key-first")
    world.upstream.release()
    for suffix in ("-wal", "-shm"):
        (world.data_home / (LEDGER_FILE + suffix)).unlink(missing_ok=True)
    (world.data_home / LEDGER_FILE).write_bytes(b"")
    async with running(settings) as h:
        error = await apply_error(h, "alice", "key-new")
    assert_refused_as_pending(refused_data(error), "key-first")
    assert world.upstream.consume_keys() == ["key-first"]


@SQLITE_ONLY
async def test_the_pending_marker_and_lock_live_beside_the_codex_home_and_stay_private(world: World) -> None:
    old = os.umask(0)
    try:
        await leave_pending(world, world.settings(consume=0.5), "alice", "key-first")
    finally:
        os.umask(old)
        world.upstream.release()
    guard = world.homes["alice"] / DIR_NAME
    files = sorted(p.name.split("-")[0] for p in guard.iterdir())
    assert files == ["apply", "pending"]
    assert guard.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in guard.iterdir())
    assert "key-first" in next(guard.glob("pending-*.json")).read_text()


@SQLITE_ONLY
async def test_a_codex_home_where_no_marker_can_be_written_spends_nothing(world: World) -> None:
    guard = world.homes["alice"] / DIR_NAME
    guard.write_text("not a directory")  # the marker directory cannot be created
    async with running(world.settings()) as h:
        error = await apply_error(h, "alice", "key-blocked")
    assert error.code == INTERNAL_ERROR
    assert "nothing was spent" in error.message and str(guard) in error.message
    assert world.upstream.consume_keys() == []


@SQLITE_ONLY  # about the Codex home, not the store: once is enough
def test_identity_prefers_the_chatgpt_account_and_user_over_the_path(world: World, tmp_path: Path) -> None:
    from app_server.pool.pool import account_key
    from app_server.upstream.account import AccountRegistry
    from app_server.upstream.backend import HttpPool

    settings = world.settings()
    registry = AccountRegistry(settings, HttpPool())
    alice = account_key(registry.get(world.homes["alice"]))
    # The same auth.json copied to another home is the same upstream account.
    copy = tmp_path / "copy-of-alice"
    copy.mkdir()
    (copy / "auth.json").write_bytes((world.homes["alice"] / "auth.json").read_bytes())
    (copy / "config.toml").write_bytes((world.homes["alice"] / "config.toml").read_bytes())
    assert account_key(registry.get(copy)).identity == alice.identity
    assert alice.identity.startswith("chatgpt:")
    # With no sign-in, the home's real path stands in for it.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert account_key(registry.get(empty)).identity == f"home:{empty.resolve()}"
