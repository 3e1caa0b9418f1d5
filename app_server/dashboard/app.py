"""The dashboard's Starlette application, wired once here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from app_server.dashboard._rpc import RpcClient
from app_server.dashboard.api import REQUEST_TIMEOUT, Dashboard, api_error, http_error, internal_error, routes
from app_server.dashboard.errors import ApiError
from app_server.dashboard.events import EventHub
from app_server.dashboard.security import LOOPBACK_NAMES, Gate, HostAndHeaders


def create_app(
    rpc: RpcClient,
    *,
    token: str,
    allowed_hosts: Iterable[str] | None = LOOPBACK_NAMES,
    request_timeout: float = REQUEST_TIMEOUT,
    hub: EventHub | None = None,
) -> Starlette:
    """The dashboard and admin API over `rpc`, an initialized JSON-RPC connection to the pool.

    `token` is the admin bearer token. `allowed_hosts` are the `Host` names served (any port);
    None serves every name (only for a wildcard bind, where the token is the guard). While the
    application runs (its lifespan), one task reads `rpc.notifications` into the event hub; the
    caller owns `rpc` and closes it after the application stops.

    The gate is `app.state.dashboard.gate`: `gate.issue_login_code()` makes a one-time login link.
    """
    dashboard = Dashboard(rpc=rpc, gate=Gate(token), hub=hub or EventHub(), request_timeout=request_timeout)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dashboard.hub.run, rpc.notifications)
            try:
                yield
            finally:
                dashboard.hub.close()
                tg.cancel_scope.cancel()

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(HostAndHeaders, allowed_hosts=allowed_hosts)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    return app
