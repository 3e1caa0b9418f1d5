"""Server-sent events: the pool's notifications fanned out to every open page and script.

One task (`EventHub.run`) reads the RPC session's notifications; each `GET /api/events` stream
subscribes with a small buffer. A subscriber that falls behind is dropped (its stream ends, the
browser's EventSource reconnects and the page re-reads the list), so one slow tab never holds
up the others or the RPC connection.

Events on the wire:

- `ready` (data `{}`): sent first on every connection; a page (re-)reads the list on it, so
  nothing that happened while it was disconnected is missed. While the link to the service is down
  its data is `{"service": "reconnecting", "message": ...}` instead (the list is read once it is back);
- `service` (data `{"service": "connected" | "reconnecting", "message": ...}`): the link to the service
  was lost (the API answers 503 until it is back) or is back (re-read the list);
- `account` (data: an `AccountSummary`): from `accountPool/accountUpdated`;
- `alert` (data: the notification's params): from `accountPool/alert`;
- a comment line every `keepalive` seconds, so dead connections are noticed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server.dashboard.link import LINK_STATE
from protocol import ext
from protocol.methods import POOL_ACCOUNT_UPDATED

log = logging.getLogger(__name__)

POOL_ALERT: Final = "accountPool/alert"
SUBSCRIBER_BUFFER: Final = 256
MAX_SUBSCRIBERS: Final = 64
KEEPALIVE_SECONDS: Final = 15.0
CONNECTED: Final = "connected"
RECONNECTING: Final = "reconnecting"
STATE_TEXT: Final = {
    CONNECTED: "connected to the codex-limits service",
    RECONNECTING: "reconnecting to the codex-limits service…",
}


@dataclass(frozen=True)
class Event:
    """One server-sent event: its id, its name and its JSON data."""

    id: int
    event: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        payload = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.event}\ndata: {payload}\n\n".encode()


def account_payload(raw: Any) -> dict[str, Any]:
    """An `AccountSummary` as the API shows it: validated, and only the model's own fields."""
    summary = ext.AccountSummary.model_validate(raw)
    dumped: dict[str, Any] = summary.model_dump(mode="json", by_alias=True)
    return dumped


def translate(message: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A notification as an event name and data, or None for those the dashboard does not show."""
    method = message.get("method")
    params = message.get("params")
    if method == POOL_ACCOUNT_UPDATED.name and isinstance(params, dict):
        return "account", account_payload(params.get("account"))
    if method == POOL_ALERT and isinstance(params, dict):
        return "alert", params
    if method == LINK_STATE and isinstance(params, dict):
        state = CONNECTED if params.get("connected") else RECONNECTING
        return "service", {"service": state, "message": STATE_TEXT[state]}
    return None


class TooManySubscribers(Exception):
    """The hub already serves as many event streams as it allows."""


class EventHub:
    """Fan-out of one notification stream to many subscribers."""

    def __init__(self, *, buffer: int = SUBSCRIBER_BUFFER, max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        self._buffer = buffer
        self._max = max_subscribers
        self._subscribers: set[MemoryObjectSendStream[Event]] = set()
        self._next_id = 1
        self._closed = False
        self.service = CONNECTED
        """The link's state as the last `service` event said (a hub over a plain session stays connected)."""

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def run(self, notifications: AsyncIterable[dict[str, Any]]) -> None:
        """Publish every notification until the stream ends (the RPC connection closed)."""
        try:
            async for message in notifications:
                try:
                    translated = translate(message)
                except Exception:
                    log.exception("dropping a notification the dashboard could not read: %r", message.get("method"))
                    continue
                if translated is not None:
                    if translated[0] == "service":
                        self.service = translated[1]["service"]
                    self.publish(*translated)
        finally:
            self.close()

    def publish(self, event: str, data: dict[str, Any]) -> Event:
        item = Event(self._next_id, event, data)
        self._next_id += 1
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(item)
            except anyio.WouldBlock:
                log.warning("an event subscriber fell behind; closing its stream so it reconnects")
                self._drop(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(stream)
        return item

    def _drop(self, stream: MemoryObjectSendStream[Event]) -> None:
        self._subscribers.discard(stream)
        stream.close()

    def resync(self) -> None:
        """End every subscriber's stream (the hub stays open): each page reconnects, gets `ready` and
        re-reads the pool. For when notifications may have been missed (the service link was down)."""
        for stream in list(self._subscribers):
            self._drop(stream)

    def close(self) -> None:
        self._closed = True
        for stream in list(self._subscribers):
            self._drop(stream)

    def subscribe(self) -> MemoryObjectReceiveStream[Event]:
        """A new subscriber's stream; closing it (as `stream` does at its end) unsubscribes."""
        if len(self._subscribers) >= self._max:
            raise TooManySubscribers
        send, receive = anyio.create_memory_object_stream[Event](self._buffer)
        if self._closed:
            send.close()
        else:
            self._subscribers.add(send)
        return receive

    async def stream(
        self,
        receive: MemoryObjectReceiveStream[Event],
        *,
        still_allowed: Callable[[], bool] = lambda: True,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> AsyncIterator[bytes]:
        """The bytes of one SSE response: `ready`, then events and keep-alive comments."""
        with receive:
            down = {"service": self.service, "message": STATE_TEXT[self.service]}
            yield b"retry: 3000\n" + Event(0, "ready", {} if self.service == CONNECTED else down).encode()
            while still_allowed():
                item: Event | None = None
                with anyio.move_on_after(keepalive):
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        return
                # never yield inside the cancel scope: the consumer runs between our yields
                yield b": keepalive\n\n" if item is None else item.encode()
