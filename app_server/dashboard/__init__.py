"""The accounts dashboard and admin HTTP API: an HTTP edge that is a JSON-RPC client of the pool.

Every pool operation is one of the `accountPool/*` methods, sent over an injected `RpcClient`
(an initialized JSON-RPC session: `ServiceLink` to the running service, or a spawned
`serve --simulate`); the page and `GET /api/events` follow the session's
`accountPool/accountUpdated` and `accountPool/alert` notifications.

    app = create_app(rpc, token=token)                 # a Starlette application
    await serve_dashboard(rpc, "127.0.0.1", 0)         # uvicorn on a free loopback port

Modules: `app` (wiring), `api` (endpoints), `errors` (envelope and RpcError -> HTTP), `security`
(token, login link, session cookie, CSRF, origin checks, headers), `events` (SSE fan-out),
`openapi` (the document), `link` (the reconnecting session with the service), `run` (the
listener and the token file), `static/` (the page). The command is `app_server.cli.dashboard`.
"""

from __future__ import annotations

from app_server.dashboard._rpc import RpcClient
from app_server.dashboard.app import create_app
from app_server.dashboard.link import ServiceLink
from app_server.dashboard.run import DashboardError, DashboardServer, serve_dashboard

__all__ = [
    "DashboardError",
    "DashboardServer",
    "RpcClient",
    "ServiceLink",
    "create_app",
    "events",
    "run",
    "security",
    "serve_dashboard",
]
