"""One WebSocket connection served by a `Dispatcher`, and the HTTP edge in front of the upgrade.

Imported only when a listener starts (it needs `websockets`). Each connection gets its own
`Dispatcher`, hence its own `Session`: one JSON-RPC message per text frame in, one answer per text
frame out. Binary frames get no answer, as upstream. A client that stops reading is disconnected
(close 1008) instead of holding memory or the other connections: its outbox is bounded, a write
that makes no progress for `stall_timeout` seconds ends it, and so does a notification that finds
its outbox full.

The HTTP edge is upstream's (TRANSPORTS.md): any `Origin` is refused (403), `/healthz` and
`/readyz` answer 200, a plain GET is a 400, and a capability token, when configured, must come as
`Authorization: Bearer …` (401 with upstream's texts). A request with two `Authorization` headers is
malformed: 400, whatever the token. `GET /metrics`, when the server was given a metrics page, answers it
(Prometheus' text format) under the same token rule: no upgrade needed, but a configured token is.
"""

from __future__ import annotations

import hashlib
import hmac
import http
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app_server.rpc.dispatcher import Dispatcher, Observer, Route, S
from app_server.rpc.outbox import MessageOutbox

if TYPE_CHECKING:
    from app_server.rpc.sessions import Broadcaster

log = logging.getLogger(__name__)

MAX_MESSAGE: Final = 16 * 1024 * 1024
MAX_MESSAGE_HEADER: Final = "x-codex-websocket-max-unfragmented-message-bytes"
MISSING_TOKEN: Final = "missing websocket bearer token"
INVALID_TOKEN: Final = "invalid websocket bearer token"
DUPLICATE_AUTHORIZATION: Final = "more than one Authorization header"
NOT_READING: Final = 1008  # policy violation: the client stopped reading its answers
GOING_AWAY: Final = 1001
METRICS_PATH: Final = "/metrics"

MetricsPage = Callable[[], tuple[bytes, str]]
"""What `GET /metrics` answers: the body and its content type (made by the composition root; rpc knows no account)."""


@dataclass(frozen=True)
class Limits:
    """Per-connection bounds: queued answers, requests in flight, how long a write may make no progress."""

    queue: int = 1024
    max_in_flight: int = 512
    stall_timeout: float = 10.0
    shutdown_grace: float = 10.0
    close_timeout: float = 5.0
    """How long a closing handshake may take before the connection is dropped."""


class TokenCheck:
    """`--ws-auth capability-token`: the SHA-256 of the one accepted bearer token."""

    def __init__(self, digest: bytes, *, source: str | None = None) -> None:
        self._digest = digest
        self.source = source
        """The token file it was read from (published in `service.json` for the clients), if any."""

    @classmethod
    def from_token(cls, token: str) -> TokenCheck:
        return cls(hashlib.sha256(token.encode("utf-8")).digest())

    def refusal(self, authorization: str | None) -> str | None:
        """None when `authorization` carries the token; otherwise upstream's 401 text."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return MISSING_TOKEN
        offered = hashlib.sha256(token.strip().encode("utf-8")).digest()
        return None if hmac.compare_digest(offered, self._digest) else INVALID_TOKEN


def _plain(connection: ServerConnection, status: http.HTTPStatus, text: str) -> Response:
    response = connection.respond(status, text)
    if not text:
        del response.headers["Content-Type"]
    return response


class HttpEdge:
    """`process_request`/`process_response` for `websockets.serve`: what answers before the upgrade."""

    def __init__(
        self, token: TokenCheck | None, *, advertise_max_message: bool, metrics: MetricsPage | None = None
    ) -> None:
        self._token = token
        self._advertise = advertise_max_message
        self._metrics = metrics

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = request.headers
        if "Origin" in headers:
            return _plain(connection, http.HTTPStatus.FORBIDDEN, "")
        path = request.path.partition("?")[0]
        if path in ("/healthz", "/readyz"):
            return _plain(connection, http.HTTPStatus.OK, "")
        if path == METRICS_PATH and self._metrics is not None:
            return self._metrics_page(connection, headers.get_all("Authorization"))
        # get_all, never get: a header sent twice makes `get` raise, which websockets answers with a 500.
        if not any("websocket" in value.lower() for value in headers.get_all("Upgrade")):
            return _plain(connection, http.HTTPStatus.BAD_REQUEST, "Bad Request")
        return self._unauthorized(connection, headers.get_all("Authorization"))

    def _unauthorized(self, connection: ServerConnection, authorization: list[str]) -> Response | None:
        """The answer refusing these `Authorization` headers (sent twice, or not the token), or None."""
        if len(authorization) > 1:
            return _plain(connection, http.HTTPStatus.BAD_REQUEST, DUPLICATE_AUTHORIZATION)
        if self._token is not None:
            refusal = self._token.refusal(authorization[0] if authorization else None)
            if refusal is not None:
                return _plain(connection, http.HTTPStatus.UNAUTHORIZED, refusal)
        return None

    def _metrics_page(self, connection: ServerConnection, authorization: list[str]) -> Response:
        assert self._metrics is not None
        refused = self._unauthorized(connection, authorization)
        if refused is not None:
            return refused
        body, content_type = self._metrics()
        response = connection.respond(http.HTTPStatus.OK, "")
        del response.headers["Content-Type"], response.headers["Content-Length"]  # setting a header adds one
        response.headers["Content-Type"] = content_type
        response.headers["Content-Length"] = str(len(body))
        response.body = body
        return response

    def process_response(self, connection: ServerConnection, request: Request, response: Response) -> Response:
        if self._advertise and response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
            response.headers[MAX_MESSAGE_HEADER] = str(MAX_MESSAGE)
        return response


class _Source:
    """Text frames as messages; binary frames are dropped (no answer), as upstream does."""

    def __init__(self, ws: ServerConnection, peer: str) -> None:
        self._ws = ws
        self._peer = peer

    async def receive(self) -> bytes:
        while True:
            try:
                data = await self._ws.recv()
            except ConnectionClosed:
                raise anyio.EndOfStream from None
            if isinstance(data, str):
                return data.encode("utf-8")
            log.warning("%s: binary frame of %d bytes dropped, no answer", self._peer, len(data))


class _Sink:
    """Each message as its own text frame; a write stuck for `stall_timeout` seconds gives up on the client."""

    def __init__(self, ws: ServerConnection, peer: str, stall_timeout: float) -> None:
        self._ws = ws
        self._peer = peer
        self._stall_timeout = stall_timeout
        self.close: tuple[int, str] | None = None

    def give_up(self, why: str) -> None:
        if self.close is None:
            log.warning("%s: %s; disconnecting it (close %d)", self._peer, why, NOT_READING)
            self.close = (NOT_READING, "client not reading")

    async def send_messages(self, messages: list[bytes]) -> None:
        try:
            with anyio.fail_after(self._stall_timeout):
                for message in messages:
                    await self._ws.send(message, text=True)
        except TimeoutError:
            self.give_up(f"no answer could be written for {self._stall_timeout:g} s")
            raise anyio.BrokenResourceError from None
        except ConnectionClosed:
            raise anyio.BrokenResourceError from None


def peer_name(ws: ServerConnection) -> str:
    address: Any = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"connection {ws.id.hex[:8]} from {address[0]}:{address[1]}"
    return f"connection {ws.id.hex[:8]}"


class ConnectionHandler(Generic[S]):
    """The `websockets` handler: one `Dispatcher` (one session) per connection, all on the same services."""

    def __init__(
        self,
        routes: dict[str, Route[S]],
        services: S,
        limits: Limits,
        broadcaster: Broadcaster,
        *,
        observer: Observer | None = None,
    ) -> None:
        self._routes = routes
        self._observer = observer
        self._services = services
        self._broadcaster = broadcaster
        self._limits = limits
        self.stopping = False
        """Set at shutdown: connections still open are closed with 1001 once their requests are answered."""

    async def __call__(self, ws: ServerConnection) -> None:
        peer = peer_name(ws)
        limits = self._limits
        sink = _Sink(ws, peer, limits.stall_timeout)
        outbox = MessageOutbox(sink, capacity=limits.queue)

        def overflow() -> None:
            sink.give_up(f"{limits.queue} messages waiting for it")
            outbox.abandon()

        dispatcher = Dispatcher(
            self._routes,
            self._services,
            outbox,
            max_in_flight=limits.max_in_flight,
            shutdown_grace=limits.shutdown_grace,
            overflow=overflow,
            broadcaster=self._broadcaster,
            observer=self._observer,
        )
        if self.stopping:
            dispatcher.stop_reading()
        log.info("%s: opened", peer)
        await dispatcher.serve_messages(_Source(ws, peer))
        code, reason = sink.close or ((GOING_AWAY, "server shutting down") if self.stopping else (1000, ""))
        # A client that stopped reading never lets the close frame out (websockets waits for the write
        # buffer to drain first): the code is sent when it can be, and the connection dropped regardless.
        with anyio.move_on_after(limits.close_timeout):
            await ws.close(code, reason)
        ws.transport.abort()
        log.info("%s: closed (%d)", peer, code)
