"""The account pool over the protocol, in memory, against upstreams on 127.0.0.1 (issue #6).

The simulated upstream serves three accounts: alice (two saved resets, exhausted windows), bob (no saved
reset) and carol (expired access token whose refresh is rejected: she must sign in again). A scriptable
mock backend stands in for accounts whose upstream misbehaves. Every test that spends or refuses checks
the upstream's own record of consume requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from app_server.rpc.dispatcher import SHUTDOWN_MESSAGE
from app_server.rpc.memory import Harness
from app_server.server import serve_in_memory
from app_server.store.base import AccountKey
from app_server.store.ledger import Ledger
from app_server.upstream.auth import AuthState
from app_server.world import World as ServerWorld
from protocol import ext
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError
from protocol.methods import POOL_ACCOUNT_UPDATED
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.mock_backend import MockBackend
from tests.support.pool_calls import (
    APPLY,
    HISTORY,
    REFRESH,
    WAIT,
    apply,
    apply_error,
    drain_updates,
    history,
    pool_list,
    refused_data,
    running,
    wait_for,
    wait_until,
)
from tests.support.pool_world import World

pytestmark = pytest.mark.anyio

# -- listing ---------------------------------------------------------------------------------------------------


async def test_list_shows_each_accounts_reset_availability_and_status(world: World) -> None:
    async with running(world.settings()) as h:
        accounts = await pool_list(h)
    assert list(accounts) == ["alice", "bob", "carol"]
    alice, bob, carol = accounts["alice"], accounts["bob"], accounts["carol"]

    assert (alice.label, alice.email, alice.plan_type) == ("Alice (Pro)", "alice@example.com", "pro")
    assert alice.status is ext.AccountStatus.RATE_LIMITED
    assert alice.reset_action == ext.ResetAction(
        enabled=True, disabled_reason=None, warning=ext.APPLY_WARNING, readiness=ext.ResetReadiness.EXHAUSTED
    )
    assert alice.reset_credits is not None and alice.reset_credits.available_count == 2
    assert [c.id for c in alice.reset_credits.credits or []] == ["credit-alice-1", "credit-alice-2"]
    sim_alice = world.upstream.accounts["alice"]
    assert alice.reset_credits.nearest_expires_at == sim_alice.credits[0].expires_at
    assert alice.rate_limits is not None and alice.rate_limits.primary is not None
    assert alice.rate_limits.primary.used_percent == 100
    assert alice.error is None and alice.pending_apply is None

    assert bob.status is ext.AccountStatus.ACTIVE
    assert bob.reset_action.enabled is False
    assert bob.reset_action.disabled_reason is ext.ResetDisabledReason.NO_CREDIT
    assert bob.reset_credits is not None and bob.reset_credits.available_count == 0
    assert bob.error is None

    assert carol.status is ext.AccountStatus.REAUTH_REQUIRED
    assert carol.reset_action.disabled_reason is ext.ResetDisabledReason.REAUTH_REQUIRED
    assert carol.error is not None and carol.error.code == INVALID_REQUEST
    assert carol.rate_limits is None and carol.reset_credits is None
    assert (carol.email, carol.plan_type) == ("carol@example.com", "team")  # from her id_token

    requests = world.upstream.recorded_requests()
    assert world.upstream.consumes() == []
    # carol's rejected refresh was tried, but her expired token was never sent to the usage endpoints.
    carol_token = world.upstream.accounts["carol"].access_token
    assert any(r.path == "/oauth/token" for r in requests)
    assert all(r.headers.get("authorization") != f"Bearer {carol_token}" for r in requests)


async def test_list_within_max_age_serves_the_cache_without_calling_upstream(world: World) -> None:
    async with running(world.settings()) as h:
        first = await pool_list(h)
        calls = len(world.upstream.arrivals)
        drain_updates(h)
        cached = await pool_list(h, max_age=3600)
        assert len(world.upstream.arrivals) == calls
        assert drain_updates(h) == []  # nothing was refreshed, so nothing is announced
        fresh = await pool_list(h)
        # Every readable account was read again: one usage call each for alice and bob (carol must sign in).
        assert usage_reads(world, since=calls) == {"acct-sim-alice": 1, "acct-sim-bob": 1}
        assert {a.account_id for a in drain_updates(h)} == {"alice", "bob", "carol"}
    assert cached == first
    assert fresh["alice"].reset_credits == first["alice"].reset_credits


async def test_max_age_zero_reads_again(world: World) -> None:
    async with running(world.settings()) as h:
        await pool_list(h)
        calls = len(world.upstream.arrivals)
        await pool_list(h, max_age=0)
    assert usage_reads(world, since=calls) == {"acct-sim-alice": 1, "acct-sim-bob": 1}


def usage_reads(world: World, *, since: int) -> dict[str, int]:
    """Usage calls upstream received after the first `since` requests, by ChatGPT account id."""
    reads: dict[str, int] = {}
    for request in world.upstream.arrivals[since:]:
        if request.method == "GET" and request.path.endswith("/usage"):
            account = request.headers.get("chatgpt-account-id", "?")
            reads[account] = reads.get(account, 0) + 1
    return reads


async def test_the_cache_reflects_an_apply(world: World) -> None:
    async with running(world.settings()) as h:
        await pool_list(h)
        result = await apply(h, "alice", "k-cache")
        calls = len(world.upstream.arrivals)
        cached = await pool_list(h, max_age=3600)
    assert len(world.upstream.arrivals) == calls
    assert cached["alice"] == result.after


USAGE_OK: dict[str, Any] = {
    "plan_type": "pro",
    "email": "dave@example.com",
    "rate_limit": {
        "allowed": False,
        "limit_reached": True,
        "primary_window": {
            "used_percent": 100,
            "limit_window_seconds": 18000,
            "reset_after_seconds": 600,
            "reset_at": 1_790_000_600,
        },
        "secondary_window": None,
    },
    "rate_limit_reset_credits": {"available_count": 1},
}
DETAILS_OK: dict[str, Any] = {
    "available_count": 1,
    "credits": [
        {
            "id": "credit-dave-1",
            "reset_type": "codex_rate_limits",
            "status": "available",
            "granted_at": "2026-01-01T00:00:00Z",
            "expires_at": None,
            "title": "Full reset",
            "description": "Resets your limits.",
        }
    ],
}
USAGE_PATH = "GET /api/codex/usage"
DETAILS_PATH = "GET /api/codex/rate-limit-reset-credits"
CONSUME_PATH = "POST /api/codex/rate-limit-reset-credits/consume"


@pytest.fixture
def backend() -> Iterator[MockBackend]:
    with MockBackend() as mock:
        yield mock


@pytest.mark.parametrize(
    ("routes", "status", "reason", "error_code"),
    [
        pytest.param(
            {USAGE_PATH: {"status": 500, "body": "boom"}, DETAILS_PATH: {"status": 500, "body": "boom"}},
            ext.AccountStatus.UNAVAILABLE,
            ext.ResetDisabledReason.UNAVAILABLE,
            INTERNAL_ERROR,
            id="usage-500",
        ),
        pytest.param(
            {USAGE_PATH: {"status": 200, "body": "not json"}, DETAILS_PATH: {"json": DETAILS_OK}},
            ext.AccountStatus.UNAVAILABLE,
            ext.ResetDisabledReason.UNAVAILABLE,
            INTERNAL_ERROR,
            id="usage-undecodable",
        ),
        pytest.param(
            {USAGE_PATH: {"status": 401, "json": {"error": "expired"}}, DETAILS_PATH: {"status": 401}},
            ext.AccountStatus.REAUTH_REQUIRED,
            ext.ResetDisabledReason.REAUTH_REQUIRED,
            INTERNAL_ERROR,
            id="usage-401",
        ),
        pytest.param(
            {USAGE_PATH: {"json": USAGE_OK}, DETAILS_PATH: {"status": 404, "json": {"detail": "Not Found"}}},
            ext.AccountStatus.RATE_LIMITED,
            ext.ResetDisabledReason.UNSUPPORTED,
            None,
            id="details-404",
        ),
    ],
)
async def test_a_broken_account_carries_its_own_error_and_never_fails_the_list(
    world: World,
    backend: MockBackend,
    routes: dict[str, Any],
    status: ext.AccountStatus,
    reason: ext.ResetDisabledReason,
    error_code: int | None,
) -> None:
    backend.set_routes({**routes, CONSUME_PATH: {"json": {"code": "reset"}}})
    world.mock_account("dave", backend)
    async with running(world.settings()) as h:
        accounts = await pool_list(h)
        refusal = await apply_error(h, "dave", "k-dave")
    dave = accounts["dave"]
    assert list(accounts) == ["alice", "bob", "carol", "dave"]
    assert accounts["alice"].status is ext.AccountStatus.RATE_LIMITED  # the others are unaffected
    assert accounts["alice"].reset_action.enabled
    assert dave.status is status
    assert dave.reset_action.disabled_reason is reason
    if error_code is None:
        assert dave.error is None
    else:
        assert dave.error is not None and dave.error.code == error_code
        expected = (
            "upstream no longer accepts this sign-in (401)"
            if status is ext.AccountStatus.REAUTH_REQUIRED
            else ("failed to fetch codex rate limits: ")
        )
        assert dave.error.message.startswith(expected)
    assert refused_data(refusal) == ext.ApplyRefusedData(account_id="dave", disabled_reason=reason)
    assert [r for r in backend.requests if r.method == "POST"] == []
    assert world.ledger_rows() == []


async def test_an_api_key_account_is_unsupported_without_any_call(world: World, backend: MockBackend) -> None:
    world.mock_account("keyed", backend, api_key=True)
    async with running(world.settings()) as h:
        keyed = (await pool_list(h))["keyed"]
        refusal = await apply_error(h, "keyed", "k-keyed")
    assert keyed.status is ext.AccountStatus.UNSUPPORTED
    assert keyed.reset_action.disabled_reason is ext.ResetDisabledReason.UNSUPPORTED
    assert keyed.error is not None and keyed.error.message.startswith(
        "signed in with an API key: such accounts have no ChatGPT rate-limit windows"
    )
    assert refused_data(refusal).disabled_reason is ext.ResetDisabledReason.UNSUPPORTED
    assert backend.requests == []


async def test_a_list_survives_an_unexpected_failure_in_one_account(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app_server.pool.pool import Pool

    original = Pool._summarize

    async def flaky(self: Pool, member: Any, identity: Any) -> ext.AccountSummary:
        if member.entry.id == "bob":
            raise RuntimeError("bug")
        return await original(self, member, identity)

    monkeypatch.setattr(Pool, "_summarize", flaky)
    async with running(world.settings()) as h:
        accounts = await pool_list(h)
    assert accounts["bob"].status is ext.AccountStatus.UNAVAILABLE
    assert accounts["bob"].error == ext.AccountError(
        code=INTERNAL_ERROR, message="internal error while reading this account"
    )
    assert accounts["alice"].reset_action.enabled


async def test_a_list_survives_an_account_removed_while_it_runs(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from app_server.pool.pool import Pool

    original = Pool._summarize

    async def remove_bob_first(self: Pool, member: Any, identity: Any) -> ext.AccountSummary:
        if member.entry.id == "alice" and any(e.id == "bob" for e in world.accounts.entries()):
            world.accounts.remove("bob")  # an operator edits accounts.toml while the list is running
        return await original(self, member, identity)

    monkeypatch.setattr(Pool, "_summarize", remove_bob_first)
    async with running(world.settings()) as h:
        during = await pool_list(h)
        afterwards = await pool_list(h)
    assert list(during) == ["alice", "bob", "carol"]  # the pool as it was when the list started
    assert during["bob"].reset_action.disabled_reason is ext.ResetDisabledReason.NO_CREDIT
    assert list(afterwards) == ["alice", "carol"]


async def test_an_empty_pool_lists_nothing(world: World) -> None:
    for key in ("alice", "bob", "carol"):
        world.accounts.remove(key)
    async with running(world.settings()) as h:
        assert await pool_list(h) == {}
    assert world.upstream.arrivals == []


async def test_a_broken_accounts_file_is_an_error_naming_it(world: World) -> None:
    world.accounts.path.write_text("accounts = 'oops'\n")
    async with running(world.settings()) as h:
        with pytest.raises(RpcError) as raised:
            await pool_list(h)
    assert raised.value.code == INVALID_REQUEST
    assert str(world.accounts.path) in raised.value.message


# -- applying --------------------------------------------------------------------------------------------------


async def test_apply_spends_one_credit_and_shows_before_and_after(world: World) -> None:
    async with running(world.settings()) as h:
        result = await apply(h, "alice", "key-alice-1")
        entries = await history(h)
    assert result.outcome is Outcome.RESET
    assert result.replayed is False
    before, after = result.before, result.after
    assert after is not None
    assert before.reset_credits is not None and after.reset_credits is not None
    assert (before.reset_credits.available_count, after.reset_credits.available_count) == (2, 1)
    assert before.rate_limits is not None and before.rate_limits.primary is not None
    assert after.rate_limits is not None and after.rate_limits.primary is not None
    assert before.rate_limits.secondary is not None and after.rate_limits.secondary is not None
    assert (before.rate_limits.primary.used_percent, before.rate_limits.secondary.used_percent) == (100, 92)
    assert (after.rate_limits.primary.used_percent, after.rate_limits.secondary.used_percent) == (0, 0)
    assert (before.status, after.status) == (ext.AccountStatus.RATE_LIMITED, ext.AccountStatus.ACTIVE)
    # The after-read runs while the attempt is still being recorded: it must not report itself as pending.
    assert after.pending_apply is None
    assert before.pending_apply is None

    assert world.upstream.consume_keys() == ["key-alice-1"]
    assert world.upstream.available_credit_count("alice") == 1
    assert [(e.idempotency_key, e.status, e.outcome, e.available_before, e.available_after) for e in entries] == [
        ("key-alice-1", ext.ApplyStatus.FINISHED, Outcome.RESET, 2, 1)
    ]
    assert entries[0].finished_at == result.applied_at


async def test_apply_forwards_the_credit_id(world: World) -> None:
    async with running(world.settings()) as h:
        result = await apply(h, "alice", "key-credit", credit_id="credit-alice-2")
    assert result.outcome is Outcome.RESET
    assert [json.loads(r.body) for r in world.upstream.consumes()] == [
        {"redeem_request_id": "key-credit", "credit_id": "credit-alice-2"}
    ]
    remaining = result.after.reset_credits.credits if result.after and result.after.reset_credits else None
    assert [c.id for c in remaining or []] == ["credit-alice-1"]


async def test_apply_with_an_unknown_credit_id_is_refused_with_the_ids_that_exist(world: World) -> None:
    async with running(world.settings()) as h:
        error = await apply_error(h, "alice", "key-bad-credit", credit_id="credit-nope")
    assert refused_data(error) == ext.ApplyRefusedData(
        account_id="alice",
        disabled_reason=ext.ResetDisabledReason.UNKNOWN_CREDIT,
        available_credit_ids=["credit-alice-1", "credit-alice-2"],
    )
    assert "credit-alice-1, credit-alice-2" in error.message
    assert world.upstream.consumes() == []


@pytest.mark.parametrize(
    ("account", "reason"),
    [("bob", ext.ResetDisabledReason.NO_CREDIT), ("carol", ext.ResetDisabledReason.REAUTH_REQUIRED)],
)
async def test_apply_is_refused_without_a_consume_request(
    world: World, account: str, reason: ext.ResetDisabledReason
) -> None:
    async with running(world.settings()) as h:
        error = await apply_error(h, account, f"key-{account}")
        entries = await history(h)
    assert refused_data(error) == ext.ApplyRefusedData(account_id=account, disabled_reason=reason)
    assert error.message.startswith(f"cannot apply a saved reset on account '{account}': ")
    assert world.upstream.consumes() == []
    assert entries == []
    assert world.upstream.available_credit_count("carol") == 1  # carol's credit is untouched


async def test_apply_to_an_unknown_account_is_an_error(world: World) -> None:
    async with running(world.settings()) as h:
        error = await apply_error(h, "zed", "key-zed")
    assert error.code == INVALID_REQUEST
    assert error.message == "unknown account 'zed' (pool: alice, bob, carol)"
    assert world.upstream.arrivals == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"accountId": "alice", "idempotencyKey": ""}, "idempotencyKey must not be empty"),
        ({"accountId": "alice", "idempotencyKey": "k", "creditId": ""}, "creditId must not be empty"),
        ({"accountId": "alice"}, "Invalid request: missing field `idempotencyKey`"),
    ],
)
async def test_apply_with_bad_params_never_reaches_upstream(world: World, params: dict[str, Any], message: str) -> None:
    async with running(world.settings()) as h:
        with pytest.raises(RpcError) as raised, anyio.fail_after(WAIT):
            await h.client.request(APPLY, params)
    assert (raised.value.code, raised.value.message) == (INVALID_REQUEST, message)
    assert world.upstream.arrivals == []


async def test_a_finished_key_replays_the_recorded_result_without_upstream(world: World) -> None:
    async with running(world.settings()) as h:
        first = await apply(h, "alice", "key-replay")
        calls = len(world.upstream.arrivals)
        drain_updates(h)
        again = await apply(h, "alice", "key-replay")
        assert drain_updates(h) == []
    assert len(world.upstream.arrivals) == calls  # no read, no consume
    assert again.replayed is True
    assert again.model_copy(update={"replayed": False}) == first
    assert world.upstream.consume_keys() == ["key-replay"]
    assert [row["attempts"] for row in world.ledger_rows()] == [1]


async def test_a_replay_survives_a_restart(world: World) -> None:
    async with running(world.settings()) as h:
        first = await apply(h, "alice", "key-restart")
    async with running(world.settings()) as h:
        again = await apply(h, "alice", "key-restart")
    assert again.replayed and again.outcome is first.outcome and again.applied_at == first.applied_at
    assert world.upstream.consume_keys() == ["key-restart"]


async def test_a_key_used_for_one_account_is_refused_for_another(world: World) -> None:
    async with running(world.settings()) as h:
        await apply(h, "alice", "key-shared")
        calls = len(world.upstream.arrivals)
        error = await apply_error(h, "bob", "key-shared")
    assert error.code == INVALID_REQUEST
    assert error.message == (
        "idempotencyKey 'key-shared' belongs to an apply on account 'alice'; use a new key for this account"
    )
    assert len(world.upstream.arrivals) == calls
    assert world.upstream.consume_keys() == ["key-shared"]


async def test_notifications_follow_refresh_and_apply(world: World) -> None:
    async with running(world.settings()) as h:
        with anyio.fail_after(WAIT):
            refreshed = ext.AccountSummary.model_validate(await h.client.request(REFRESH, {"accountId": "alice"}))
        after_refresh = drain_updates(h)
        result = await apply(h, "alice", "key-notify")
        after_apply = drain_updates(h)
    assert after_refresh == [refreshed]
    assert after_apply == [result.before, result.after]
    assert after_apply[-1].reset_credits is not None and after_apply[-1].reset_credits.available_count == 1


async def test_opted_out_clients_get_no_account_updates(world: World) -> None:
    init = {
        "clientInfo": {"name": "quiet", "title": None, "version": "1"},
        "capabilities": {"optOutNotificationMethods": [POOL_ACCOUNT_UPDATED.name]},
    }
    async with running(world.settings(), **init) as h:
        await pool_list(h)
        await apply(h, "alice", "key-quiet")
        assert drain_updates(h) == []


async def test_history_reflects_attempts(world: World, backend: MockBackend) -> None:
    backend.set_routes(
        {
            USAGE_PATH: {"json": USAGE_OK},
            DETAILS_PATH: {"json": DETAILS_OK},
            CONSUME_PATH: {"status": 409, "body": "upstream refused"},
        }
    )
    world.mock_account("dave", backend)
    async with running(world.settings()) as h:
        await apply(h, "alice", "k1")
        await apply(h, "alice", "k2")  # windows are empty now: nothing to reset, no credit spent
        failure = await apply_error(h, "dave", "k3")
        with pytest.raises(RpcError):
            await apply(h, "bob", "k4")  # refused: not an attempt
        everything = await history(h)
        alice = await history(h, accountId="alice")
        latest = await history(h, limit=1)
        with pytest.raises(RpcError) as unknown, anyio.fail_after(WAIT):
            await h.client.request(HISTORY, {"accountId": "zed"})
    assert failure.code == INTERNAL_ERROR
    assert failure.message.startswith("failed to consume rate limit reset: POST ")
    assert [(e.idempotency_key, e.account_id, e.status, e.outcome) for e in everything] == [
        ("k3", "dave", ext.ApplyStatus.FAILED, None),
        ("k2", "alice", ext.ApplyStatus.FINISHED, Outcome.NOTHING_TO_RESET),
        ("k1", "alice", ext.ApplyStatus.FINISHED, Outcome.RESET),
    ]
    assert everything[0].error is not None and "409 Conflict" in everything[0].error
    assert (everything[1].available_before, everything[1].available_after) == (1, 1)
    assert [e.idempotency_key for e in alice] == ["k2", "k1"]
    assert [e.idempotency_key for e in latest] == ["k3"]
    assert unknown.value.message.startswith("unknown account 'zed'")
    assert world.upstream.available_credit_count("alice") == 1


@pytest.mark.parametrize(
    ("consume", "status", "refused_as", "pending_note"),
    [
        pytest.param({"status": 500, "body": "down"}, ext.ApplyStatus.PENDING, None, True, id="500"),
        pytest.param({"status": 502, "body": "bad gateway"}, ext.ApplyStatus.PENDING, None, True, id="502"),
        pytest.param({"status": 504, "body": "gateway timeout"}, ext.ApplyStatus.PENDING, None, True, id="504"),
        pytest.param({"status": 409, "body": "conflict"}, ext.ApplyStatus.FAILED, None, False, id="409"),
        pytest.param(
            {"status": 401, "body": "nope"},
            ext.ApplyStatus.FAILED,
            ext.ResetDisabledReason.REAUTH_REQUIRED,
            False,
            id="401",
        ),
        pytest.param(
            {"status": 404, "body": "?"}, ext.ApplyStatus.FAILED, ext.ResetDisabledReason.UNSUPPORTED, False, id="404"
        ),
        pytest.param({"action": "close"}, ext.ApplyStatus.PENDING, None, True, id="connection-closed"),
        pytest.param({"status": 200, "body": "{"}, ext.ApplyStatus.PENDING, None, True, id="undecodable-2xx"),
    ],
)
async def test_a_failed_consume_is_recorded_as_failed_only_when_nothing_can_have_been_spent(
    world: World,
    backend: MockBackend,
    consume: dict[str, Any],
    status: ext.ApplyStatus,
    refused_as: ext.ResetDisabledReason | None,
    pending_note: bool,
) -> None:
    backend.set_routes({USAGE_PATH: {"json": USAGE_OK}, DETAILS_PATH: {"json": DETAILS_OK}, CONSUME_PATH: consume})
    world.mock_account("dave", backend)
    async with running(world.settings()) as h:
        error = await apply_error(h, "dave", "k-dave")
        dave = (await pool_list(h))["dave"]
    (record,) = [r for r in world.ledger_rows() if r["idempotency_key"] == "k-dave"]
    assert record["status"] == status.value
    assert backend.route_calls(CONSUME_PATH) == 1
    if refused_as is not None:
        assert refused_data(error).disabled_reason is refused_as
    else:
        assert error.code == INTERNAL_ERROR
        assert error.message.startswith("failed to consume rate limit reset: ")
    assert ("stays pending" in error.message) is pending_note
    pending = dave.pending_apply
    assert (pending.idempotency_key if pending else None) == ("k-dave" if pending_note else None)


async def test_a_timed_out_apply_stays_pending_and_a_resend_spends_nothing_more(world: World) -> None:
    world.upstream.keep_credits("alice", 1)
    world.upstream.hold(after=True)  # upstream spends the credit, the answer never arrives in time
    async with running(world.settings(consume=0.5)) as h:
        error = await apply_error(h, "alice", "key-slow")
        rows = world.ledger_rows()
        listed = (await pool_list(h))["alice"]
        fresh_key = await apply_error(h, "alice", "key-other")
        world.upstream.release()
        retried = await apply(h, "alice", "key-slow")
        relisted = (await pool_list(h))["alice"]
    assert error.code == INTERNAL_ERROR
    assert error.message.startswith("rate limit reset consume timed out; the attempt stays pending")
    assert "re-send the same idempotencyKey" in error.message
    assert [(r["idempotency_key"], r["status"], r["error"]) for r in rows] == [
        ("key-slow", "pending", "consume timed out; outcome unknown")
    ]
    assert listed.pending_apply is not None and listed.pending_apply.idempotency_key == "key-slow"
    assert listed.reset_action.disabled_reason is ext.ResetDisabledReason.PENDING_APPLY
    # A new key is refused without a consume until the pending one is settled; that one may be re-sent.
    assert refused_data(fresh_key).disabled_reason is ext.ResetDisabledReason.PENDING_APPLY
    assert refused_data(fresh_key).pending_idempotency_key == "key-slow"
    assert retried.outcome is Outcome.ALREADY_REDEEMED
    assert retried.replayed is False
    assert world.upstream.consume_keys() == ["key-slow", "key-slow"]
    assert world.upstream.available_credit_count("alice") == 0
    assert relisted.pending_apply is None
    (row,) = world.ledger_rows()
    assert (row["status"], row["outcome"], row["attempts"]) == ("finished", "alreadyRedeemed", 2)


async def test_a_new_key_waits_for_a_pending_apply_even_with_credits_left(world: World) -> None:
    world.upstream.hold(after=True)  # the first consume spends a credit, its answer never arrives in time
    async with running(world.settings(consume=0.5)) as h:
        await apply_error(h, "alice", "key-unknown")
        listed = (await pool_list(h))["alice"]
        second = await apply_error(h, "alice", "key-second")
        world.upstream.release()
        settled = await apply(h, "alice", "key-unknown")
        third = await apply(h, "alice", "key-third")
    assert listed.reset_credits is not None and listed.reset_credits.available_count == 1
    assert listed.reset_action.enabled is False
    assert listed.reset_action.disabled_reason is ext.ResetDisabledReason.PENDING_APPLY
    assert refused_data(second).pending_idempotency_key == "key-unknown"
    assert "key-second" not in world.upstream.consume_keys()
    assert settled.outcome is Outcome.ALREADY_REDEEMED
    assert third.outcome in (Outcome.RESET, Outcome.NOTHING_TO_RESET)
    assert world.upstream.consume_keys() == ["key-unknown", "key-unknown", "key-third"]


async def test_an_apply_resolves_its_credentials_once_for_the_read_before_and_the_consume(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consume spends with the caller the read before was made with: auth.json is consulted (refreshed
    if due) once for both, and once more for the read after; never a second time between read and consume."""
    refreshes: list[str] = []
    async with running(world.settings()) as h:
        auth = h.services.registry.get(world.homes["alice"]).auth
        ensure_fresh = auth.ensure_fresh

        async def counted(*, user_agent: str, originator: str) -> AuthState:
            refreshes.append("after the consume" if world.upstream.consume_arrived.is_set() else "before it")
            return await ensure_fresh(user_agent=user_agent, originator=originator)

        monkeypatch.setattr(auth, "ensure_fresh", counted)
        result = await apply(h, "alice", "key-once")
    assert result.outcome is Outcome.RESET
    assert refreshes == ["before it", "after the consume"]  # the read before (its caller spends), the read after


async def test_an_account_removed_during_its_apply_still_gets_the_outcome_recorded(world: World) -> None:
    world.upstream.hold(after=False)
    results: list[ext.AccountPoolApplyResponse] = []

    async def run(h: Harness[ServerWorld]) -> None:
        results.append(await apply(h, "alice", "key-removed"))

    async with running(world.settings()) as h, anyio.create_task_group() as tg:
        tg.start_soon(run, h)
        await wait_for(world.upstream.consume_arrived)
        world.accounts.remove("alice")  # the operator edits the pool while the consume is in flight
        world.upstream.release()
    (result,) = results
    assert result.outcome is Outcome.RESET
    assert result.after is not None and result.after.reset_credits is not None
    assert result.after.reset_credits.available_count == 1
    assert [(r["status"], r["outcome"]) for r in world.ledger_rows()] == [("finished", "reset")]


async def test_an_apply_cut_short_by_shutdown_stays_pending(world: World) -> None:
    world.upstream.hold(after=True)
    errors: list[RpcError] = []

    async def doomed(h: Harness[ServerWorld]) -> None:
        with pytest.raises(RpcError) as raised:
            await apply(h, "alice", "key-cut")
        errors.append(raised.value)

    async with serve_in_memory(ServerWorld(world.settings()), shutdown_grace=0.2) as h:
        with anyio.fail_after(WAIT):
            await h.initialize()
            async with anyio.create_task_group() as tg:
                tg.start_soon(doomed, h)
                await wait_for(world.upstream.consume_arrived)
                h.close_input()  # end of input: the in-flight apply is cancelled after the grace period
            await h.finished.wait()
    world.upstream.release()
    assert [e.message for e in errors] == [SHUTDOWN_MESSAGE]
    assert [(r["idempotency_key"], r["status"], r["error"]) for r in world.ledger_rows()] == [
        ("key-cut", "pending", "interrupted; outcome unknown")
    ]


async def test_concurrent_applies_on_one_account_run_one_at_a_time(world: World) -> None:
    home = str(world.homes["alice"])
    results: dict[str, ext.AccountPoolApplyResponse] = {}
    world.upstream.hold(after=False)  # the first consume waits at upstream before anything is spent
    async with running(world.settings()) as h:
        spend_lock = h.services.registry.get(Path(home)).spend_lock

        async def run(key: str) -> None:
            results[key] = await apply(h, "alice", key)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "key-first")
            await wait_for(world.upstream.consume_arrived)
            seen = len(world.upstream.arrivals)
            tg.start_soon(run, "key-second")
            await wait_until(lambda: spend_lock.statistics().tasks_waiting == 1)
            # The second apply waits its turn: it has not even read the account yet.
            assert len(world.upstream.arrivals) == seen
            world.upstream.release()
    first, second = results["key-first"], results["key-second"]
    assert first.outcome is Outcome.RESET
    # The second one read the account after the first had finished: one credit left, windows empty.
    assert second.before.reset_credits is not None and second.before.reset_credits.available_count == 1
    assert second.before.rate_limits is not None and second.before.rate_limits.primary is not None
    assert second.before.rate_limits.primary.used_percent == 0
    assert second.outcome is Outcome.NOTHING_TO_RESET
    assert world.upstream.consume_keys() == ["key-first", "key-second"]
    assert world.upstream.available_credit_count("alice") == 1


async def test_a_second_pool_id_for_the_same_home_shares_the_apply_lock(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import filelock

    from app_server.pool import pool as pool_module
    from app_server.pool.pool import account_key
    from app_server.store import local_guard

    monkeypatch.setattr(pool_module, "APPLY_LOCK_WAIT", 0.3)
    world.accounts.add("alice-again", world.homes["alice"], "Alice again")
    other_process = await world.backend.open(world.data_home)
    try:
        async with running(world.settings()) as h:
            pool = h.services.pool
            key = account_key(pool.registry.get(world.homes["alice"]))
            # Another process is applying on alice's upstream account, under whichever pool id: on SQLite
            # it holds the lock file beside the Codex home, on PostgreSQL the account's advisory lock.
            if world.backend.name == "sqlite":
                with filelock.FileLock(str(local_guard.lock_path(key))).acquire(timeout=5):
                    error = await apply_error(h, "alice-again", "key-alias")
            else:
                with anyio.fail_after(WAIT):
                    async with other_process.apply_lock(key, wait=5):
                        error = await apply_error(h, "alice-again", "key-alias")
    finally:
        await other_process.aclose()
    assert error.code == INVALID_REQUEST
    assert error.message.startswith("another apply on account 'alice-again' is still running")
    assert world.upstream.consumes() == []
    assert world.ledger_rows() == []


async def test_a_key_claimed_for_another_account_meanwhile_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process claims the key for bob between this apply's first look at the ledger and its write.
    other_process = await world.backend.open(world.data_home)
    assert isinstance(other_process, Ledger)  # the one logic both stores (and the service's lazy one) run
    store_class = Ledger
    original = store_class.start

    async def claimed_first(self: Any, key: str, *args: Any) -> None:
        if self is not other_process:
            bob_home = world.homes["bob"]
            await original(other_process, key, AccountKey(f"home:{bob_home}", bob_home), "bob", None, 1_790_000_000, 0)
        await original(self, key, *args)

    monkeypatch.setattr(store_class, "start", claimed_first)
    try:
        async with running(world.settings()) as h:
            error = await apply_error(h, "alice", "key-raced")
    finally:
        await other_process.aclose()
    assert error.code == INVALID_REQUEST
    assert error.message.startswith("idempotencyKey 'key-raced' belongs to an apply on account 'bob'")
    assert world.upstream.consumes() == []
    assert [(r["account_id"], r["status"]) for r in world.ledger_rows()] == [("bob", "pending")]
