"""The connections one server process serves, and server notifications fanned out to them.

A `Dispatcher` registers itself here while it serves. `Broadcaster.notify_all` encodes a
notification once and offers it to every connection whose session is initialized and did not opt
out of that method; a connection whose outbox is full decides for itself (a listener's client is
disconnected, stdio waits), so one slow client never holds up the others.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from app_server.rpc.codec import notification
from app_server.rpc.context import Session
from protocol.methods import Notification


class Peer(Protocol):
    """One served connection, as the broadcaster sees it (a `Dispatcher`)."""

    session: Session

    async def offer(self, message: bytes) -> None: ...

    def stop_reading(self) -> None: ...


class Broadcaster:
    """Every live connection of this process.

    Usage (from a handler or a background task holding the application's world)::

        await world.broadcaster.notify_all(POOL_ACCOUNT_UPDATED, AccountUpdatedNotification(account=summary))
    """

    def __init__(self) -> None:
        self._peers: dict[Peer, None] = {}  # insertion-ordered: connections are notified in the order they came

    def add(self, peer: Peer) -> None:
        self._peers[peer] = None

    def discard(self, peer: Peer) -> None:
        self._peers.pop(peer, None)

    def __len__(self) -> int:
        return len(self._peers)

    def sessions(self) -> list[Session]:
        return [peer.session for peer in self._peers]

    async def notify_all(self, method: Notification | str, params: BaseModel) -> int:
        """Send `method` with `params` to every initialized session that did not opt out; returns how many."""
        name = method if isinstance(method, str) else method.name
        message: bytes | None = None
        sent = 0
        for peer in list(self._peers):
            session = peer.session
            if not session.initialized or name in session.opt_out:
                continue
            if message is None:
                message = notification(name, params)
            await peer.offer(message)
            sent += 1
        return sent

    def stop_reading(self) -> None:
        """Shutdown: every connection stops taking requests and finishes the ones it has."""
        for peer in list(self._peers):
            peer.stop_reading()
