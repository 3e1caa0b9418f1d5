"""`codex-limits proxy`: stdin/stdout bridged to the service's socket, like `codex app-server proxy --sock PATH`.

One stdin line leaves as one WebSocket text frame; each text frame that arrives is written to
stdout as one line. The service is started when none answers (on the default socket). Standard
library only, nothing else imported: a client that spawns the proxy gets its first answer about as
soon as Python is up.

At the end of stdin the proxy waits for the answers to the requests it forwarded (as a stdio server
answers everything it read before it exits), then closes the connection. A line that is not UTF-8
cannot travel in a text frame: it is dropped with a line on stderr, as the server drops such lines.

The service may die, restart or stop answering: every request forwarded and not yet answered is then
answered here (`rpc.lost`: for a consume or an apply, the outcome is unknown and the same
idempotencyKey must be re-sent; for anything else, the service went away), and the proxy exits with
`GONE` and one line on stderr. The handshake has a deadline (`wsframe.HANDSHAKE_TIMEOUT`), and while
answers are owed a silent service is pinged and given up on after `wsframe.SILENCE_TIMEOUT` more.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time

from app_server.cli.proxy_socket import handshake, socket_for
from app_server.rpc import lost, wsframe
from app_server.rpc.wsframe import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT

TYPE_CHECKING = False  # `typing` and `pathlib` cost the proxy milliseconds at start-up
if TYPE_CHECKING:
    from typing import Final

USAGE: Final = "usage: codex-limits proxy [--sock PATH | --simulate]"
READ_CHUNK: Final = 1 << 16
OUTPUT_LIMIT: Final = 4 << 20
"""Bytes waiting for the socket beyond which stdin is not read (backpressure toward the client)."""
EOF_GRACE: Final = 120.0
"""After the end of stdin: seconds without any message before giving up on answers still owed (a silent
service is found out sooner, by the ping; a live one may take this long: an apply can wait 30 s for another
apply's lock, then 10 s for its consume; the CLI allows each request as long)."""
GONE: Final = 5
"""Exit status when the service went away, never answered the handshake, or stopped answering (as the
CLI's "the server stopped" status); every request still owed was answered with an error first."""


def _fail(message: str, code: int = GONE) -> int:
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


class _Owed:
    """A request forwarded to the service and not answered yet: enough to answer it if the service goes."""

    __slots__ = ("method", "params", "wire_id")

    def __init__(self, wire_id: str, method: str, params: object) -> None:
        self.wire_id = wire_id
        self.method = method
        self.params = params if method in lost.SPENDS else None  # only a spend's key and account are needed

    @property
    def key(self) -> str | None:
        spend = lost.spend_of(self.method, self.params)
        return spend[0] if spend is not None else None

    def answer(self, why: str, lead: str) -> bytes:
        """The error answer for a service that went away (`why` says how), in the server's wire shape."""
        import json

        error = json.dumps(
            {"error": lost.error(self.method, self.params, why, lead)}, ensure_ascii=False, separators=(",", ":")
        )
        return error[:-1].encode("utf-8") + b',"id":' + self.wire_id.encode("utf-8") + b"}"


def _request(line: bytes) -> tuple[str, _Owed] | None:
    """The id (as JSON) and what to remember of `line` when the service owes it an answer, else None."""
    if b'"id"' not in line:
        return None
    import json  # here, not at start-up: the first request is already on its way when this runs

    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str) or "id" not in message:
        return None
    rid = message["id"]
    if not (isinstance(rid, str) or (type(rid) is int and -(2**63) <= rid < 2**63)):
        return None
    wire_id = json.dumps(rid, ensure_ascii=False, separators=(",", ":"))
    return wire_id, _Owed(wire_id, message["method"], message.get("params"))


def _answered_id(payload: bytes) -> str | None:
    """The id (as JSON) an answer from the service carries, or None for a notification."""
    if payload.startswith(b'{"method"'):
        return None
    import json

    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or "id" not in message or "method" in message:
        return None
    return json.dumps(message["id"], ensure_ascii=False, separators=(",", ":"))


class ServiceGone(Exception):
    """The connection to the service ended, or it stopped answering: `why` says how, `lead` what that
    means for a request still owed."""

    def __init__(self, why: str, lead: str = lost.GONE) -> None:
        super().__init__(why)
        self.why = why
        self.lead = lead


class _Bridge:
    def __init__(self, sock: socket.socket, first: bytes) -> None:
        self.sock = sock
        self.reader = wsframe.FrameReader()
        self.first = first
        self.pending_out = bytearray()
        self.partial = b""
        self.owed: dict[str, list[_Owed]] = {}
        """Requests forwarded and not answered, by id (a client may reuse an id: answered in order)."""
        self.owed_count = 0
        self.stdin_open = True
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        now = time.monotonic()
        self.heard_at = now
        """When the service last sent anything (a pong included)."""
        self.message_at = now
        """When the service last sent a message (for the grace after the end of input)."""
        self.ping_at: float | None = None

    def forward_line(self, line: bytes) -> None:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            sys.stderr.write(f"codex-limits proxy: a line of {len(line)} bytes is not UTF-8; dropped, no answer\n")
            return
        self.pending_out += wsframe.encode_frame(OP_TEXT, line)
        if len(self.pending_out) < OUTPUT_LIMIT:  # send before parsing: the service starts on it meanwhile
            self._flush()
        request = _request(line)
        if request is not None:
            if not self.owed_count:
                self.heard_at = self.message_at = time.monotonic()  # the silence that matters starts now
            self.owed.setdefault(request[0], []).append(request[1])
            self.owed_count += 1

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
        now = time.monotonic()
        self.heard_at = now
        self.ping_at = None
        for opcode, payload in self.reader.feed(chunk):
            if opcode == OP_TEXT:
                out += (payload, b"\n")
                self.message_at = now
                if self.owed_count:
                    self._answered(_answered_id(payload))
            elif opcode == OP_PING:
                self.pending_out += wsframe.encode_frame(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code, self.close_reason = wsframe.parse_close(payload)
                self.pending_out += wsframe.encode_frame(OP_CLOSE, payload[:2])
                self.closed = True
        if out:
            _write_all(1, b"".join(out))

    def _answered(self, wire_id: str | None) -> None:
        waiting = self.owed.get(wire_id) if wire_id is not None else None
        if waiting:
            waiting.pop(0)
            self.owed_count -= 1
            if not waiting:
                del self.owed[wire_id]  # type: ignore[arg-type]

    def answer_owed(self, why: str, lead: str = lost.GONE) -> int:
        """Answer every request still owed (the service will not); returns how many."""
        answers = [owed.answer(why, lead) + b"\n" for waiting in self.owed.values() for owed in waiting]
        count = len(answers)
        self.owed.clear()
        self.owed_count = 0
        if answers:
            _write_all(1, b"".join(answers))
        return count

    def spends_owed(self) -> list[_Owed]:
        return [owed for waiting in self.owed.values() for owed in waiting if owed.method in lost.SPENDS]

    def run(self) -> None:
        """Bridge until stdin ends and every answer came; raises `ServiceGone` when the service went first."""
        if self.first:
            self.take_socket(self.first)
        sock = self.sock
        sock.setblocking(False)
        while not self.closed:
            if not self.stdin_open and not self.owed_count:
                break
            readers: list[int | socket.socket] = [sock]
            if self.stdin_open and len(self.pending_out) < OUTPUT_LIMIT:
                readers.append(0)
            writers = [sock] if self.pending_out else []
            readable, writable, _ = select.select(readers, writers, [], self._timeout())
            if writable:
                self._flush()
            if sock in readable:
                try:
                    chunk = sock.recv(READ_CHUNK)
                except (BlockingIOError, InterruptedError):
                    chunk = None
                except ConnectionError as exc:
                    raise ServiceGone(f"its connection was reset: {exc.strerror or exc}") from None
                if chunk == b"":
                    raise ServiceGone("its connection closed")
                if chunk:
                    self.take_socket(chunk)
            if 0 in readable:
                self.take_stdin(os.read(0, READ_CHUNK))
            self._check_silence()
        if self.closed:
            if self.owed_count or self.stdin_open:
                said = " ".join(str(part) for part in (self.close_code, self.close_reason) if part)
                raise ServiceGone("it closed the connection" + (f": {said}" if said else ""))
        else:
            self.pending_out += wsframe.encode_frame(OP_CLOSE, wsframe.close_payload(1000))
        self._drain()

    def _timeout(self) -> float | None:
        """How long select may wait: until the next silence check when answers are owed."""
        if not self.owed_count:
            return None if self.stdin_open else 1.0
        since = self.ping_at if self.ping_at is not None else self.heard_at
        due = since + wsframe.SILENCE_TIMEOUT
        if not self.stdin_open:
            due = min(due, self.message_at + EOF_GRACE)
        return max(due - time.monotonic(), 0.0) + 0.01

    def _check_silence(self) -> None:
        if not self.owed_count:
            return
        now = time.monotonic()
        if self.ping_at is not None:
            if now - self.ping_at > wsframe.SILENCE_TIMEOUT:
                raise ServiceGone(f"it did not answer a ping within {wsframe.SILENCE_TIMEOUT:g} s (stopped, or wedged)")
        elif now - self.heard_at > wsframe.SILENCE_TIMEOUT:
            self.ping_at = now
            self.pending_out += wsframe.encode_frame(OP_PING, b"codex-limits proxy")
            self._flush()
        if not self.stdin_open and now - self.message_at > EOF_GRACE:
            raise ServiceGone(
                f"no answer within {EOF_GRACE:g} s after the end of input",
                "the proxy stopped waiting for the codex-limits service's answer",
            )

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.pending_out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # the service's end is gone: not our client's (stdout) broken pipe
            raise ServiceGone(f"cannot write to it: {exc.strerror or exc}") from None
        del self.pending_out[:sent]

    def _drain(self) -> None:
        """Send what is left (the close frame), briefly: the service may be gone already."""
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            self.sock.settimeout(2.0)
            self.sock.sendall(self.pending_out)


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


def main(argv: list[str]) -> int:
    if argv == ["--simulate"]:
        return _simulated()
    path, problem = _parse(argv)
    if problem == "help":
        print(USAGE)
        return 0
    if problem is not None:
        return _fail(problem, 2)
    sock, problem = socket_for(path)
    if sock is None:
        return _fail(problem or "no socket", GONE)
    bridge: _Bridge | None = None
    try:
        first = handshake(sock)
        bridge = _Bridge(sock, first)
        bridge.run()
    except BrokenPipeError as exc:
        if bridge is None:  # the socket, during the handshake (nothing is written to stdout before the bridge)
            return _fail(f"connection to the service failed: {exc}", GONE)
        return 0  # our client closed its end of stdout: nobody is left to answer
    except wsframe.HandshakeTimeout as exc:
        return _fail(f"the service did not answer: {exc} (is it stopped? see `codex-limits service status`)", GONE)
    except (ServiceGone, OSError, wsframe.ProtocolError) as exc:
        if bridge is None:
            return _fail(f"connection to the service failed: {exc}", GONE)
        if isinstance(exc, ServiceGone):
            return _gone(bridge, exc.why, exc.lead)
        return _gone(bridge, f"{exc}")
    except wsframe.HandshakeError as exc:
        return _fail(f"connection to the service failed: {exc}", GONE)
    finally:
        sock.close()
    return 0


def _gone(bridge: _Bridge, why: str, lead: str = lost.GONE) -> int:
    """The service went away mid-session: answer what it owed, say so in one line, exit `GONE`."""
    spends = [owed.key for owed in bridge.spends_owed()]
    try:
        answered = bridge.answer_owed(why, lead)
    except BrokenPipeError:
        answered = 0  # our client is gone too
    line = f"the service went away ({why})" if lead == lost.GONE else f"{lead} ({why})"
    if answered:
        line += f"; answered the {answered} request(s) it still owed with an error"
    if spends:
        import json

        keys = ", ".join(json.dumps(key, ensure_ascii=False) for key in spends if key is not None) or "the same key"
        line += f"; outcome unknown: re-send idempotencyKey {keys}"
    return _fail(line, GONE)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
