"""`accountPool/usageHistory`: an account's recorded usage windows, burn rate and run-out estimate."""

from __future__ import annotations

import time

from app_server.rpc.context import RequestContext
from protocol import ext
from protocol.jsonrpc import INVALID_REQUEST, RpcError


async def usage_history(
    ctx: RequestContext, params: ext.AccountPoolUsageHistoryParams
) -> ext.AccountPoolUsageHistoryResponse:
    from app_server.pool.usage import usage_history as read

    pool = ctx.services.pool()
    pool.member(params.account_id)  # an unknown id is refused naming the pool, as the other methods do
    # The pool's `Store` (SQLite or PostgreSQL): looked up by name until the pool holds one.
    store = getattr(pool, "store", None)
    if store is None:
        raise RpcError(INVALID_REQUEST, "usage history is not kept by this server")
    return await read(store, params, time.time())
