"""The dashboard's view of the pool: a JSON-RPC client, injected.

The dashboard is a client of the app-server like any other: every pool operation is one of the
`accountPool/*` methods, and live updates are the server's notifications. `RpcClient` names the
two things it needs, so the caller may hand it a spawned `codex-limits serve`, an in-memory pair,
or a `link.ServiceLink` to the long-running service.

This is the one module that imports the protocol client (`app_server.rpc.client`); `link` adds
the WebSocket connection to the service's socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any, Protocol

from app_server.rpc.client import Client, ServerClosed, server_command, spawn

__all__ = ["Client", "RpcClient", "ServerClosed", "server_command", "spawn"]


class RpcClient(Protocol):
    """What the dashboard needs of a JSON-RPC connection to the pool.

    `request` returns the answer's `result` or raises `protocol.jsonrpc.RpcError`; it may raise
    `ServerClosed` when the connection is gone. `notifications` yields every notification the
    server sends this session (`{"method": ..., "params": ...}`); the dashboard reads it from one
    task only.
    """

    async def request(self, method: str, params: Any = None) -> Any: ...

    @property
    def notifications(self) -> AsyncIterable[dict[str, Any]]: ...
