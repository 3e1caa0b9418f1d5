"""Method handlers, one module per resource, and the route table the dispatcher serves."""

from __future__ import annotations

from app_server.handlers import account, inventory, pool, usage
from app_server.handlers.errors import wire_errors
from app_server.rpc.dispatcher import Route
from protocol import methods


def routes() -> dict[str, Route]:
    table = [
        Route(methods.INITIALIZE, inline=account.initialize, needs_initialize=False),
        Route(methods.RATE_LIMITS_READ, handler=wire_errors(account.read_rate_limits)),
        Route(
            methods.RESET_CREDIT_CONSUME,
            handler=wire_errors(account.consume_reset_credit),
            precheck=account.check_consume,
        ),
        Route(methods.POOL_LIST, handler=wire_errors(pool.list_accounts)),
        Route(methods.POOL_REFRESH, handler=wire_errors(pool.refresh_account)),
        Route(methods.POOL_APPLY, handler=wire_errors(pool.apply_reset_credit), precheck=pool.check_apply),
        Route(methods.POOL_HISTORY, handler=wire_errors(pool.history)),
        Route(methods.POOL_USAGE_HISTORY, handler=wire_errors(usage.usage_history)),
        *inventory.ROUTES,
    ]
    return {route.method.name: route for route in table}
