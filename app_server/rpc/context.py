"""What a handler sees: the connection's session, the shared services, and a way to notify."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app_server.upstream.useragent import user_agent
from protocol.methods import Notification
from protocol.v1 import ClientInfo

if TYPE_CHECKING:
    from pydantic import BaseModel

    from app_server.services import Services


@dataclass
class Session:
    """Per-connection state set by `initialize`."""

    initialized: bool = False
    client_info: ClientInfo | None = None
    opt_out: frozenset[str] = frozenset()
    user_agent: str = field(default_factory=user_agent)


Notify = Callable[[Notification, "BaseModel"], Awaitable[None]]


@dataclass
class RequestContext:
    session: Session
    services: Services
    notify: Notify
    request_id: Any = None
