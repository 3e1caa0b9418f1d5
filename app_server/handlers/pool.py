"""The account-pool extension methods (`accountPool/*`), thin over `app_server.pool.pool`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app_server.handlers.account import check_keys, originator
from app_server.rpc.context import RequestContext
from protocol import ext
from protocol.methods import POOL_ACCOUNT_UPDATED

if TYPE_CHECKING:  # the pool (sqlite3, tomli_w, auth, httpx) loads on the first pool request
    from app_server.pool.pool import Identity


def _identity(ctx: RequestContext) -> Identity:
    return ctx.session.user_agent, originator(ctx)


async def _announce(ctx: RequestContext, summary: ext.AccountSummary) -> None:
    await ctx.notify(POOL_ACCOUNT_UPDATED, ext.AccountUpdatedNotification(account=summary))


async def _broadcast(ctx: RequestContext, summary: ext.AccountSummary) -> None:
    """A change someone asked for (refresh, apply) reaches every connection, not only the caller's."""
    await ctx.services.broadcaster.notify_all(POOL_ACCOUNT_UPDATED, ext.AccountUpdatedNotification(account=summary))


async def list_accounts(ctx: RequestContext, params: ext.AccountPoolListParams) -> ext.AccountPoolListResponse:
    pool = ctx.services.pool()
    summaries = await pool.summaries(_identity(ctx), params.max_age_seconds, lambda summary: _announce(ctx, summary))
    return ext.AccountPoolListResponse(accounts=summaries)


async def refresh_account(ctx: RequestContext, params: ext.AccountPoolRefreshParams) -> ext.AccountSummary:
    return await ctx.services.pool().refresh(params.account_id, _identity(ctx), lambda s: _broadcast(ctx, s))


def check_apply(params: ext.AccountPoolApplyParams) -> None:
    check_keys(params.idempotency_key, params.credit_id)


async def apply_reset_credit(ctx: RequestContext, params: ext.AccountPoolApplyParams) -> ext.AccountPoolApplyResponse:
    return await ctx.services.pool().apply(params, _identity(ctx), lambda s: _broadcast(ctx, s))


async def history(ctx: RequestContext, params: ext.AccountPoolHistoryParams) -> ext.AccountPoolHistoryResponse:
    limit = params.limit if params.limit is not None and params.limit > 0 else 100
    entries = await ctx.services.pool().history(params.account_id, limit)
    return ext.AccountPoolHistoryResponse(entries=entries)
