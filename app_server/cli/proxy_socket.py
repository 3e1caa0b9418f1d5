"""The proxy's way to the service: its socket (the default one started when none answers) and the upgrade.

Standard library only, as the proxy: see `proxy`.
"""

from __future__ import annotations

import os
import socket
import time

from app_server import env as environment
from app_server.rpc import wsframe


def default_socket() -> tuple[str, str]:
    """The data directory and its service socket, as `service.state` names them (without importing it)."""
    home = environment.data_home()
    return home, os.path.join(home, "service.sock")


def connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(wsframe.HANDSHAKE_TIMEOUT)  # a stopped service with a full backlog blocks connect()
    try:
        sock.connect(os.path.realpath(path))
    except OSError:
        sock.close()
        return None
    return sock


def socket_for(path: str | None) -> tuple[socket.socket | None, str | None]:
    """A connected socket, starting the default service when none answers."""
    if path is not None:
        sock = connect(path)
        return (sock, None) if sock is not None else (None, f"nothing answers on {path}")
    home, default = default_socket()
    sock = connect(default)
    if sock is not None:
        return sock, None
    from pathlib import Path

    from app_server.service import control

    try:
        control.start(Path(home))
    except control.ServiceError as exc:
        return None, f"could not start the service: {exc}"
    sock = connect(default)
    return (sock, None) if sock is not None else (None, f"the service does not answer on {default}")


def handshake(sock: socket.socket) -> bytes:
    """Upgrade; returns the bytes that followed the 101 answer (the start of the first frames).

    Raises `wsframe.HandshakeTimeout` when the whole exchange takes longer than `HANDSHAKE_TIMEOUT`."""
    deadline = time.monotonic() + wsframe.HANDSHAKE_TIMEOUT
    request, accept = wsframe.handshake_request("localhost")
    head = b""
    try:
        sock.settimeout(wsframe.HANDSHAKE_TIMEOUT)
        sock.sendall(request)
        while b"\r\n\r\n" not in head:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(1 << 16)
            if not chunk or len(head) > wsframe.MAX_HEAD:
                raise wsframe.ProtocolError("the service closed the connection during the handshake")
            head += chunk
    except TimeoutError:
        raise wsframe.HandshakeTimeout from None
    end = head.index(b"\r\n\r\n")
    status, headers = wsframe.parse_response_head(head[:end])
    wsframe.check_accept(status, headers, accept, head[end + 4 :])
    return head[end + 4 :]
