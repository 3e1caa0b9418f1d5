"""The request context every handler of this server receives: its connection's session and the `World`."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from app_server.rpc.context import RequestContext

if TYPE_CHECKING:
    from app_server.world import World

Context: TypeAlias = "RequestContext[World]"
"""`ctx.session` (set by `initialize`), `ctx.services` (the world: settings, pool, store, ...), `ctx.notify`."""
