"""The operator commands' quick way to the running service: one blocking JSON-RPC session, standard library only.

`status`, `history`, `refresh` and `apply` on a running service need a handful of requests and no
notifications, so they talk to it the way `codex-limits proxy` does (`proxy_socket`, `wsframe`) instead of
through the async `Client`: nothing heavier than the standard library is imported before the answer is on
screen. `open_session` returns None when there is no service for this data directory (the caller spawns a
server, as `connection.connect` does); a service that holds the directory but does not answer the handshake
is `CommandFailed(Exit.SERVER)` with the same words as `attach`.

Answers are waited for under `wsframe.SILENCE_TIMEOUT` of silence (then one ping), and at most
`REQUEST_TIMEOUT` in all; a service that goes away mid-request is `CommandFailed(Exit.SERVER)`, and for a
request that may spend (`rpc.lost.SPENDS`) the line says the outcome is unknown and which key to re-send.
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque

from app_server import __version__
from app_server.cli.exits import CommandFailed, Exit, failure_of, protocol_failure
from app_server.cli.proxy_socket import connect, handshake
from app_server.rpc import lost, wsframe
from app_server.rpc.wsframe import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

REQUEST_TIMEOUT: Final = 120.0
"""Seconds any request may take in all, here and through `connection` (the server bounds each upstream call
well below this)."""
START_TIMEOUT: Final = 30.0
"""Seconds a server has to answer `initialize`, here and through `connection` (a spawned one: to start)."""
QUIET_METHODS: Final = ("account/rateLimits/updated", "accountPool/accountUpdated", "accountPool/alert")
"""Every notification the server sends (`protocol.methods.SERVER_NOTIFICATIONS`; a test keeps the two equal):
this session opts out of them all, it reads answers only."""


def service_name(pid: int) -> str:
    """How the operator commands name the running service."""
    return f"the codex-limits service (pid {pid})"


def not_answering(pid: int, why: object) -> str:
    """The line for a service that holds the data directory but did not answer the handshake."""
    return (
        f"{service_name(pid)} did not answer: {why}; is it stopped? "
        f"(`kill -CONT {pid}` resumes it; `codex-limits service status`)"
    )


class ServiceSession:
    """One initialized connection to the running service; `request` blocks until its answer."""

    def __init__(self, sock: socket.socket, first: bytes, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.name = service_name(pid)
        self._reader = wsframe.FrameReader()
        self._unread = first
        self._frames: deque[tuple[int, bytes]] = deque()
        self._next_id = 0

    def close(self) -> None:
        try:
            self.sock.settimeout(1.0)
            self.sock.sendall(wsframe.encode_frame(OP_CLOSE, wsframe.close_payload(1000)))
        except OSError:
            pass
        self.sock.close()

    def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = REQUEST_TIMEOUT) -> Any:
        """The answer's result; an error answer is `CommandFailed` (`exits.failure_of`), no answer within
        `timeout` seconds too, and so is a service that went away (in the async client's words)."""
        rid = self._next_id
        self._next_id += 1
        message: dict[str, Any] = {"id": rid, "method": method}
        if params is not None:
            message["params"] = params
        payload = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            self.sock.settimeout(wsframe.SILENCE_TIMEOUT)
            self.sock.sendall(wsframe.encode_frame(OP_TEXT, payload))
            answer = self._answer(rid, method, timeout)
        except _Lost as lost_it:
            raise self._gone(method, params, lost_it.reason) from None
        except OSError:  # reset, broken pipe: gone without a word, as the async client says it
            raise self._gone(method, params, None) from None
        except wsframe.ProtocolError as exc:
            raise protocol_failure(exc) from None
        error = answer.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise failure_of(code if isinstance(code, int) else 0, str(error.get("message", "")), error.get("data"))
        return answer.get("result")

    def _answer(self, rid: int, method: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        pinged = False
        if self._unread:  # what followed the handshake's answer
            chunk, self._unread = self._unread, b""
            self._frames.extend(self._reader.feed(chunk))
        while True:
            while self._frames:  # frames already read stay queued for the next request (a chunk may hold several)
                opcode, payload = self._frames.popleft()
                if opcode == OP_TEXT:
                    message = _decode(payload)
                    if message.get("id") == rid and "method" not in message:
                        return message
                elif opcode == OP_PING:
                    self.sock.sendall(wsframe.encode_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    raise _Lost(None)
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandFailed(Exit.SERVER, f"{self.name} did not answer {method} within {timeout:g} s")
            self.sock.settimeout(min(left, wsframe.SILENCE_TIMEOUT))
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                if pinged:
                    silence = wsframe.SILENCE_TIMEOUT
                    raise _Lost(f"it did not answer a ping within {silence:g} s: stopped, or wedged") from None
                pinged = True
                self.sock.sendall(wsframe.encode_frame(OP_PING, b"codex-limits"))
                continue
            if not chunk:
                raise _Lost(None)
            pinged = False
            self._frames.extend(self._reader.feed(chunk))

    def _gone(self, method: str, params: dict[str, Any] | None, why: str | None) -> CommandFailed:
        what = "initialize" if method == "initialize" else f"answering {method}"  # as `connection` says them
        line = f"{self.name} stopped before {what}" + (f" ({why})" if why else "")
        spend = lost.spend_of(method, params)
        if spend is not None:
            line += f"; the outcome is unknown: {lost.resend(spend[0])}"
        return CommandFailed(Exit.SERVER, line)


class _Lost(Exception):
    """The service went away mid-request; `reason` says how when there is more to say than that."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason or "gone")
        self.reason = reason


def _decode(payload: bytes) -> dict[str, Any]:
    """A message from the service; anything but a JSON object is a broken protocol (as for the async client)."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise wsframe.ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise wsframe.ProtocolError(f"not a JSON object: {payload[:80]!r}")
    return message


def open_session() -> ServiceSession | None:
    """An initialized session with this data directory's running service, or None when there is none to use
    (none running, one acting on another `$CODEX_HOME`, or one that refuses the connection or the upgrade)."""
    from app_server.service.state import codex_home, data_home, running

    state = running(data_home())
    if state is None or not (state.simulated or state.codex_home == str(codex_home())):
        return None
    sock = connect(state.socket)
    if sock is None:
        return None
    try:
        first = handshake(sock)
    except wsframe.HandshakeTimeout as exc:
        sock.close()
        raise CommandFailed(Exit.SERVER, not_answering(state.pid, exc)) from None
    except (OSError, wsframe.HandshakeError, wsframe.ProtocolError):
        sock.close()
        return None
    session = ServiceSession(sock, first, state.pid)
    hello = {
        "clientInfo": {"name": "codex-limits", "title": None, "version": __version__},
        "capabilities": {"optOutNotificationMethods": list(QUIET_METHODS)},
    }
    try:
        session.request("initialize", hello, timeout=START_TIMEOUT)
    except CommandFailed as failure:
        session.close()
        error = (failure.payload or {}).get("error")
        if isinstance(error, dict):  # an error answer: refused, as `connection` says it
            raise CommandFailed(Exit.SERVER, f"the server refused to initialize: {error.get('message')}") from None
        raise
    return session
