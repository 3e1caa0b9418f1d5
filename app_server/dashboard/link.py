"""The dashboard's one long-lived session with the running service, re-opened when the service restarts.

`ServiceLink` is an `RpcClient`: `request` goes over the current connection (or fails at once with
`ServerClosed` while there is none, which the API answers 503), and `notifications` is one stream
across every connection the link opens, so the event hub reads it once for the dashboard's life.
While the service is gone the link keeps looking for it (`locate` names its socket, or None when
none runs), with a bounded, jittered backoff, and says on stderr that it lost it and when it is back;
it never starts the service itself: a stopped service was stopped on purpose.

A service that dies, restarts or stops answering is a normal event here: however a connection
attempt or a session fails (refused, reset, closed mid-handshake, a handshake past its deadline, a
broken frame), the loop logs it and tries again; nothing escapes it. Each change of state is also a
`LINK_STATE` notification in `notifications` (`{"connected": bool}`), so the page can say it is
reconnecting.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from app_server import __version__
from app_server.dashboard._rpc import Client, ServerClosed
from app_server.rpc.wsclient import connect_unix, running_client
from app_server.rpc.wsframe import HANDSHAKE_TIMEOUT, HandshakeError, ProtocolError
from protocol.jsonrpc import RpcError

log = logging.getLogger(__name__)

CLIENT_NAME: Final = "codex-limits-dashboard"
CONNECT_TIMEOUT: Final = 30.0
"""Seconds the first connection (and each `initialize`) may take."""
RETRY_FIRST: Final = 0.2
RETRY_MAX: Final = 3.0
"""The backoff between attempts doubles from `RETRY_FIRST` up to this; each wait is jittered (50-100 %)."""
NOTIFICATION_BUFFER: Final = 1000
LINK_STATE: Final = "codexLimits/serviceLink"
"""The link's own notification (never sent by a server): params `{"connected": bool}`."""


class ServiceLink:
    """An initialized JSON-RPC session with the service on a Unix socket, reconnected when it ends.

    Run it with `ServiceLink.open(locate)`. `on_reconnect` runs after every connection but the
    first (the dashboard uses it to make every open page re-read the pool: whatever changed while
    the link was down came with no notification).
    """

    def __init__(
        self,
        locate: Callable[[], str | None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._locate = locate
        self._handshake_timeout = handshake_timeout
        self._on_reconnect = on_reconnect
        self._retry_first = retry_first
        self._retry_max = retry_max
        self._client: Client | None = None
        self._served = False
        self._up = anyio.Event()
        self.connections = 0
        """How many connections the link has opened (and initialized) so far."""
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](NOTIFICATION_BUFFER)
        self._notes_send: MemoryObjectSendStream[dict[str, Any]] = send
        self._notes: MemoryObjectReceiveStream[dict[str, Any]] = receive

    # -- RpcClient -------------------------------------------------------------------------------

    async def request(self, method: str, params: Any = None) -> Any:
        client = self._client
        if client is None:
            raise ServerClosed(
                "reconnecting to the codex-limits service (it stopped, or is restarting); try again shortly"
            )
        try:
            return await client.request(method, params)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ServerClosed(f"the connection to the service broke ({type(exc).__name__})") from None

    @property
    def notifications(self) -> MemoryObjectReceiveStream[dict[str, Any]]:
        return self._notes

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_connected(self) -> None:
        """Return once a connection is up (at once when one is)."""
        while self._client is None:
            await self._up.wait()

    # -- the connection loop ---------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls, locate: Callable[[], str | None], *, timeout: float = CONNECT_TIMEOUT, **options: Any
    ) -> AsyncIterator[ServiceLink]:
        """A link whose first connection is up; it keeps reconnecting until the block ends.

        Raises `ServerClosed` when no first connection could be made within `timeout` seconds.
        """
        link = cls(locate, **options)
        connected = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.run)
            with anyio.move_on_after(timeout):
                await link.wait_connected()
                connected = True
            try:
                if connected:
                    yield link
            finally:
                tg.cancel_scope.cancel()
                link._notes_send.close()
        if not connected:  # raised here, outside the task group, so it is not wrapped in a group
            raise ServerClosed(f"could not connect to the codex-limits service within {timeout:g} s")

    async def run(self) -> None:
        """Connect, serve the connection until it ends, look for the service again; forever."""
        delay = self._retry_first
        lost = False
        while True:
            try:
                path = self._locate()
            except Exception as exc:  # a state file half-written by a starting service, say
                log.debug("cannot locate the service: %s", exc)
                path = None
            if path is not None and await self._attempt(path):
                delay = self._retry_first
                lost = True
                log.warning("lost the connection to the codex-limits service; reconnecting when it runs again")
                continue
            if lost and path is None:
                lost = False
                log.warning("the codex-limits service is not running; waiting for it (codex-limits service start)")
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._retry_max)

    async def _attempt(self, path: str) -> bool:
        """One session; True when it was up (initialized) before it ended. Never raises but cancellation."""
        self._served = False
        try:
            await self._session(path, reconnected=self.connections > 0)
        except Exception as exc:  # whatever a dying service can cause, the loop goes on
            log.debug("the session with the service at %s failed: %r", path, exc)
        finally:
            if self._client is not None or self._served:
                self._client = None
                self._state(connected=False)
        return self._served

    def _state(self, *, connected: bool) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._notes_send.send_nowait({"method": LINK_STATE, "params": {"connected": connected}})

    async def _session(self, path: str, *, reconnected: bool) -> None:
        """One connection, served until it ends; `_served` says whether it was up (initialized)."""
        try:
            ws = await connect_unix(path, timeout=self._handshake_timeout)
        except (OSError, HandshakeError, ProtocolError) as exc:  # a handshake past its deadline is an OSError too
            log.debug("cannot connect to the service at %s: %s", path, exc)
            return
        async with running_client(ws) as client:
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    await client.initialize(name=CLIENT_NAME, version=__version__)
            except (ServerClosed, TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            except RpcError as exc:  # an error answer to initialize: this is not a service we can use
                log.warning("the service refused the dashboard's initialize: %s", exc)
                return
            self.connections += 1
            self._served = True
            self._client = client
            self._up.set()
            self._up = anyio.Event()
            if reconnected:
                self._state(connected=True)
                log.warning("connected to the codex-limits service again")
                if self._on_reconnect is not None:
                    self._on_reconnect()
            try:
                async for note in client.notifications:
                    with contextlib.suppress(anyio.WouldBlock):  # nobody reading: dropping is ours to choose
                        self._notes_send.send_nowait(note)
            finally:
                self._client = None
