"""The request context every handler of this server receives."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from app_server.rpc.context import RequestContext

if TYPE_CHECKING:
    from app_server.services import Services

Context: TypeAlias = "RequestContext[Services]"
