"""`accountPool/usageHistory`: an account's recorded usage windows, burn rate and run-out estimate."""

from __future__ import annotations

import time

from app_server.handlers.context import Context
from protocol import ext


async def usage_history(ctx: Context, params: ext.AccountPoolUsageHistoryParams) -> ext.AccountPoolUsageHistoryResponse:
    """The samples the live updates recorded for one pool account, read from the world's store."""
    from app_server.pool.usage import usage_history as read

    world = ctx.services
    world.pool.member(params.account_id)  # an unknown id is refused naming the pool, as the other methods do
    return await read(world.store, params, time.time())
