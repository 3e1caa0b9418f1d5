"""What a handler sees: the connection's session, the application's services, and a way to notify.

Generic in the services type: the rpc layer knows no account.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from protocol.methods import Notification
from protocol.v1 import ClientInfo

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass
class Session:
    """Per-connection state set by `initialize`."""

    initialized: bool = False
    client_info: ClientInfo | None = None
    opt_out: frozenset[str] = frozenset()
    user_agent: str = ""
    """Set by the application's `initialize` handler."""


Notify = Callable[[Notification, "BaseModel"], Awaitable[None]]


S = TypeVar("S")


@dataclass
class RequestContext(Generic[S]):
    """One request: its connection's session, the application's services, and a way to notify."""

    session: Session
    services: S
    notify: Notify
    request_id: Any = None
