"""Method handlers, one module per resource, and the route table the dispatcher serves.

A handler raises the project's errors (`app_server.errors`) as they are; the dispatcher answers each
from its own code, text and data, so no route needs a wrapper."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app_server.handlers import account, inventory, pool, usage
from app_server.rpc.dispatcher import Route
from protocol import methods

if TYPE_CHECKING:
    from app_server.world import World


def routes() -> dict[str, Route[World]]:
    """How each method is served: its handler (or inline answer), its precheck, whether it needs `initialize`."""
    table = [
        Route(methods.INITIALIZE, inline=account.initialize, needs_initialize=False),
        Route(methods.RATE_LIMITS_READ, handler=account.read_rate_limits),
        Route(methods.RESET_CREDIT_CONSUME, handler=account.consume_reset_credit, precheck=account.check_consume),
        Route(methods.POOL_LIST, handler=pool.list_accounts),
        Route(methods.POOL_REFRESH, handler=pool.refresh_account),
        Route(methods.POOL_APPLY, handler=pool.apply_reset_credit, precheck=pool.check_apply),
        Route(methods.POOL_HISTORY, handler=pool.history),
        Route(methods.POOL_USAGE_HISTORY, handler=usage.usage_history),
        *inventory.ROUTES,
    ]
    return {route.method.name: route for route in table}


__all__ = ["routes"]
