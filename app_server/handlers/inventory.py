"""`accountPool/forecast` and `accountPool/resetCredits/list`: read-only views over the whole pool.

The forecast reads the usage history the pool records on every read; the inventory reads the same
summaries `accountPool/list` answers (and announces them the same way). Neither applies anything.
"""

from __future__ import annotations

import time
from typing import Final

from app_server.handlers import pool as pool_methods
from app_server.handlers.context import Context
from app_server.rpc.dispatcher import Route
from protocol import ext, methods
from protocol.jsonrpc import INVALID_REQUEST, RpcError

MAX_SAMPLES: Final = 20_000
"""Per account and forecast: a read every 15 s (the refresh floor) for 3 hours is 720 per window."""
LATEST_SAMPLES: Final = 16


def check_forecast(params: ext.AccountPoolForecastParams) -> None:
    """Before a forecast is routed: refuses a look-back outside 1..MAX_LOOKBACK seconds."""

    from app_server.pool.forecast import MAX_LOOKBACK

    lookback = params.lookback_seconds
    if lookback is not None and not 0 < lookback <= MAX_LOOKBACK:
        raise RpcError(INVALID_REQUEST, f"lookbackSeconds must be between 1 and {MAX_LOOKBACK} (got {lookback})")


async def forecast(ctx: Context, params: ext.AccountPoolForecastParams) -> ext.AccountPoolForecastResponse:
    """`accountPool/forecast`: burn rate and run-out time per window, for one account or the pool."""

    from app_server.pool.forecast import DEFAULT_RULES, ForecastRules, forecast_account

    pool = ctx.services.pool
    store = ctx.services.store
    if params.account_id is not None:
        account_ids = [pool.member(params.account_id).entry.id]  # an unknown id is refused naming the pool
    else:
        account_ids = [member.entry.id for member in pool.members()]
    rules = ForecastRules(lookback=params.lookback_seconds or DEFAULT_RULES.lookback)
    now = time.time()
    accounts = []
    for account_id in account_ids:
        # The lookback's samples, plus the newest few: a window not read within the lookback is still listed, as
        # too little history, rather than left out. When the lookback holds that many, they are its newest.
        recent = await store.usage_history(account_id, since=int(now) - rules.lookback, limit=MAX_SAMPLES)
        latest = []
        if len(recent) < LATEST_SAMPLES:
            latest = await store.usage_history(account_id, since=None, limit=LATEST_SAMPLES)
        samples = list({(s.limit_id, s.window, s.taken_at): s for s in latest + recent}.values())
        accounts.append(forecast_account(account_id, samples, now, rules))
    return ext.AccountPoolForecastResponse(
        accounts=accounts,
        lookback_seconds=rules.lookback,
        min_samples=rules.min_samples,
        min_span_seconds=rules.min_span,
        generated_at=int(now),
    )


async def reset_credits(
    ctx: Context, params: ext.AccountPoolResetCreditsListParams
) -> ext.AccountPoolResetCreditsListResponse:
    """`accountPool/resetCredits/list`: every saved reset in the pool, earliest expiry first."""

    from app_server.pool.inventory import inventory

    listed = await pool_methods.list_accounts(ctx, ext.AccountPoolListParams(max_age_seconds=params.max_age_seconds))
    return inventory(listed.accounts, time.time())


ROUTES: Final = (
    Route(methods.POOL_FORECAST, handler=forecast, precheck=check_forecast),
    Route(methods.POOL_RESET_CREDITS_LIST, handler=reset_credits),
)
