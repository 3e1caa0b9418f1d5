"""The account-pool extension methods (`accountPool/*`), thin over `app_server.pool.pool`.

Each handler takes the pool from the world, calls it for the client of this connection (its identity), and
announces every fresh summary through the world's live updates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app_server.handlers.account import check_keys, client_user_agent, originator
from app_server.handlers.context import Context
from protocol import ext
from protocol.methods import POOL_ACCOUNT_UPDATED
from protocol.validation import check_key_length

if TYPE_CHECKING:  # the pool (sqlite3, tomli_w, auth, httpx) loads on the first pool request
    from app_server.pool.pool import Identity


def _identity(ctx: Context) -> Identity:
    """The client the pool's backend calls are made for: its user agent and originator."""
    return client_user_agent(ctx), originator(ctx)


async def _announce(ctx: Context, summary: ext.AccountSummary, *, everyone: bool) -> None:
    """A fresh summary: recorded, alerted on, and sent to every session when it changed. The caller always
    hears of the reads it asked for; with `everyone` (a refresh or apply, which someone asked for on
    purpose) so does every session, changed or not."""
    if await ctx.services.live.observe(summary):
        return
    notification = ext.AccountUpdatedNotification(account=summary)
    if everyone:
        await ctx.services.broadcaster.notify_all(POOL_ACCOUNT_UPDATED, notification)
    else:
        await ctx.notify(POOL_ACCOUNT_UPDATED, notification)


async def list_accounts(ctx: Context, params: ext.AccountPoolListParams) -> ext.AccountPoolListResponse:
    """`accountPool/list`: every account's summary, read afresh unless younger than `maxAgeSeconds`."""
    pool = ctx.services.pool
    summaries = await pool.summaries(
        _identity(ctx), params.max_age_seconds, lambda summary: _announce(ctx, summary, everyone=False)
    )
    return ext.AccountPoolListResponse(accounts=summaries)


async def refresh_account(ctx: Context, params: ext.AccountPoolRefreshParams) -> ext.AccountSummary:
    """`accountPool/refresh`: one account read now; every session hears of it."""
    return await ctx.services.pool.refresh(
        params.account_id, _identity(ctx), lambda s: _announce(ctx, s, everyone=True)
    )


def check_apply(params: ext.AccountPoolApplyParams) -> None:
    """Refused before queueing: an empty or overlong idempotency key or credit id."""
    check_keys(params.idempotency_key, params.credit_id)
    check_key_length("idempotencyKey", params.idempotency_key, ext.KEY_MAX_LENGTH)
    check_key_length("creditId", params.credit_id, ext.KEY_MAX_LENGTH)


async def apply_reset_credit(ctx: Context, params: ext.AccountPoolApplyParams) -> ext.AccountPoolApplyResponse:
    """`accountPool/applyResetCredit`: spend one saved reset, at most once per idempotency key (`Pool.apply`)."""
    return await ctx.services.pool.apply(params, _identity(ctx), lambda s: _announce(ctx, s, everyone=True))


async def history(ctx: Context, params: ext.AccountPoolHistoryParams) -> ext.AccountPoolHistoryResponse:
    """`accountPool/history`: the ledger of applies, newest first (100 unless `limit` says otherwise)."""
    limit = params.limit if params.limit is not None and params.limit > 0 else 100
    entries = await ctx.services.pool.history(params.account_id, limit)
    return ext.AccountPoolHistoryResponse(entries=entries)
