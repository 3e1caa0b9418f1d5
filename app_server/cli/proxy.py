"""`codex-limits proxy`: stdin/stdout bridged to the service's socket, like `codex app-server proxy --sock PATH`.

One stdin line leaves as one WebSocket text frame; each text frame that arrives is written to
stdout as one line. The service is started when none answers (on the default socket). Standard
library only, nothing else imported: a client that spawns the proxy gets its first answer about as
soon as Python is up.

At the end of stdin the proxy waits for the answers to the requests it forwarded (as a stdio server
answers everything it read before it exits), then closes the connection. A line that is not UTF-8
cannot travel in a text frame: it is dropped with a line on stderr, as the server drops such lines.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time

from app_server.rpc import wsframe
from app_server.rpc.wsframe import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT

TYPE_CHECKING = False  # `typing` and `pathlib` cost the proxy milliseconds at start-up
if TYPE_CHECKING:
    from typing import Final

USAGE: Final = "usage: codex-limits proxy [--sock PATH | --simulate]"
READ_CHUNK: Final = 1 << 16
OUTPUT_LIMIT: Final = 4 << 20
"""Bytes waiting for the socket beyond which stdin is not read (backpressure toward the client)."""
EOF_GRACE: Final = 15.0
"""After the end of stdin: seconds without any message before giving up on answers still owed."""


def _fail(message: str, code: int = 5) -> int:
    sys.stderr.write(f"codex-limits proxy: {message}\n")
    return code


def _parse(argv: list[str]) -> tuple[str | None, str | None]:
    if not argv:
        return None, None
    if argv[0] in ("-h", "--help"):
        return None, "help"
    if len(argv) == 2 and argv[0] == "--sock":
        return argv[1], None
    if len(argv) == 1 and argv[0].startswith("--sock="):
        return argv[0].removeprefix("--sock="), None
    return None, f"unexpected arguments: {' '.join(argv)}\n{USAGE}"


def _default_socket() -> tuple[str, str]:
    """The data directory and its service socket, as `service.state` names them (without importing it)."""
    home = os.path.abspath(os.path.expanduser(os.environ.get("CODEX_LIMITS_HOME") or "~/.codex-limits"))
    return home, os.path.join(home, "service.sock")


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.realpath(path))
    except OSError:
        sock.close()
        return None
    return sock


def _socket_for(path: str | None) -> tuple[socket.socket | None, str | None]:
    """A connected socket, starting the default service when none answers."""
    if path is not None:
        sock = _connect(path)
        return (sock, None) if sock is not None else (None, f"nothing answers on {path}")
    home, default = _default_socket()
    sock = _connect(default)
    if sock is not None:
        return sock, None
    from pathlib import Path

    from app_server.service import control

    try:
        control.start(Path(home))
    except control.ServiceError as exc:
        return None, f"could not start the service: {exc}"
    sock = _connect(default)
    return (sock, None) if sock is not None else (None, f"the service does not answer on {default}")


def _handshake(sock: socket.socket) -> bytes:
    """Upgrade; returns the bytes that followed the 101 answer (the start of the first frames)."""
    request, accept = wsframe.handshake_request("localhost")
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(READ_CHUNK)
        if not chunk or len(head) > wsframe.MAX_HEAD:
            raise wsframe.ProtocolError("the service closed the connection during the handshake")
        head += chunk
    end = head.index(b"\r\n\r\n")
    status, headers = wsframe.parse_response_head(head[:end])
    wsframe.check_accept(status, headers, accept, head[end + 4 :])
    return head[end + 4 :]


def _is_request(line: bytes) -> bool:
    """Whether the service owes an answer to `line` (then its answer is counted at the end of input)."""
    if b'"id"' not in line:
        return False
    import json  # here, not at start-up: the first request is already on its way when this runs

    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return False
    if not isinstance(message, dict) or not isinstance(message.get("method"), str) or "id" not in message:
        return False
    rid = message["id"]
    return isinstance(rid, str) or (type(rid) is int and -(2**63) <= rid < 2**63)


class _Bridge:
    def __init__(self, sock: socket.socket, first: bytes) -> None:
        self.sock = sock
        self.reader = wsframe.FrameReader()
        self.first = first
        self.pending_out = bytearray()
        self.partial = b""
        self.requests = 0
        self.answers = 0
        self.stdin_open = True
        self.closed = False

    def forward_line(self, line: bytes) -> None:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            sys.stderr.write(f"codex-limits proxy: a line of {len(line)} bytes is not UTF-8; dropped, no answer\n")
            return
        self.pending_out += wsframe.encode_frame(OP_TEXT, line)
        if len(self.pending_out) < OUTPUT_LIMIT:  # send before parsing: the service starts on it meanwhile
            self._flush()
        if _is_request(line):
            self.requests += 1

    def take_stdin(self, chunk: bytes) -> None:
        if not chunk:
            self.stdin_open = False
            if self.partial:
                self.forward_line(self.partial)
                self.partial = b""
            return
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self.forward_line(line)

    def take_socket(self, chunk: bytes) -> None:
        out: list[bytes] = []
        for opcode, payload in self.reader.feed(chunk):
            if opcode == OP_TEXT:
                out += (payload, b"\n")
                if not payload.startswith(b'{"method"'):
                    self.answers += 1
            elif opcode == OP_PING:
                self.pending_out += wsframe.encode_frame(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                code, reason = wsframe.parse_close(payload)
                if code not in (None, 1000, 1001):
                    sys.stderr.write(f"codex-limits proxy: the service closed the connection ({code} {reason})\n")
                self.pending_out += wsframe.encode_frame(OP_CLOSE, payload[:2])
                self.closed = True
        if out:
            _write_all(1, b"".join(out))

    def owed(self) -> bool:
        return self.answers < self.requests

    def run(self) -> None:
        if self.first:
            self.take_socket(self.first)
        sock = self.sock
        sock.setblocking(False)
        idle_since: float | None = None
        while not self.closed:
            if not self.stdin_open and not self.owed():
                break
            readers: list[int | socket.socket] = [sock]
            if self.stdin_open and len(self.pending_out) < OUTPUT_LIMIT:
                readers.append(0)
            writers = [sock] if self.pending_out else []
            timeout = None if self.stdin_open else 1.0
            readable, writable, _ = select.select(readers, writers, [], timeout)
            if writable:
                self._flush()
            if sock in readable:
                try:
                    chunk = sock.recv(READ_CHUNK)
                except (BlockingIOError, InterruptedError):
                    chunk = None
                except ConnectionError:
                    break
                if chunk == b"":
                    break
                if chunk:
                    self.take_socket(chunk)
                    idle_since = None
            if 0 in readable:
                self.take_stdin(os.read(0, READ_CHUNK))
            if not self.stdin_open and not readable:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > EOF_GRACE:
                    sys.stderr.write("codex-limits proxy: answers still owed after the end of input; giving up\n")
                    break
        if not self.closed:
            self.pending_out += wsframe.encode_frame(OP_CLOSE, wsframe.close_payload(1000))
        sock.setblocking(True)
        sock.settimeout(2.0)
        with contextlib.suppress(OSError):
            sock.sendall(self.pending_out)

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.pending_out)
        except (BlockingIOError, InterruptedError):
            return
        del self.pending_out[:sent]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _simulated() -> int:
    """`--simulate`: no service to bridge to; this process becomes `codex-limits serve --simulate` on the same
    stdin/stdout (one line in is one message, as through the proxy), with four made-up accounts, nothing kept."""
    command = [sys.executable, "-m", "app_server", "--simulate"]
    try:
        os.execv(sys.executable, command)
    except OSError as exc:
        return _fail(f"could not start the simulated server: {exc}")
    return 0  # not reached: execv does not return


def main(argv: list[str]) -> int:
    if argv == ["--simulate"]:
        return _simulated()
    path, problem = _parse(argv)
    if problem == "help":
        print(USAGE)
        return 0
    if problem is not None:
        return _fail(problem, 2)
    sock, problem = _socket_for(path)
    if sock is None:
        return _fail(problem or "no socket")
    try:
        first = _handshake(sock)
        _Bridge(sock, first).run()
    except BrokenPipeError:
        return 0  # our client closed its end of stdout: nobody is left to answer
    except (OSError, wsframe.ProtocolError, wsframe.HandshakeError) as exc:
        return _fail(f"connection to the service failed: {exc}")
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
