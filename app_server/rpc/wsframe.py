"""The client side of RFC 6455 with the standard library only: handshake, masked frames, a frame reader.

Just what `codex-limits proxy` and the operator commands need to talk to the service: text
messages, ping/pong, close. No extensions, no subprotocols. Imports nothing outside the standard
library, so the proxy starts as fast as Python does.
"""

from __future__ import annotations

import binascii
import os
import struct

try:  # the builtin module: `hashlib` would load OpenSSL, a few ms of the proxy's start-up for one digest
    from _sha1 import sha1  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover (a Python built without it)
    from hashlib import sha1

TYPE_CHECKING = False  # `typing` costs the proxy ~2 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from typing import Final

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD: Final = 64 * 1024

# The deadlines every client of the service shares (the proxy, the operator commands, the dashboard):
HANDSHAKE_TIMEOUT: Final = 5.0
"""Seconds from connecting to the service's 101 answer. A service that accepts but never answers (stopped
with SIGSTOP, wedged) is given up on after this; a live one answers in milliseconds."""
SILENCE_TIMEOUT: Final = 10.0
"""Seconds a client owed answers waits without a byte from the service before it pings, and then again
for any byte back (the pong) before it takes the service for gone. Requests may take long; the service's
event loop answers a ping at once."""


class HandshakeError(Exception):
    """The server did not switch protocols: `status` and `body` say what it answered instead."""

    def __init__(self, status: int, body: bytes, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.body = body


class ProtocolError(Exception):
    """A frame no server should send (or one we do not support)."""


class HandshakeTimeout(TimeoutError):
    """The service accepted the connection but did not answer the upgrade within `HANDSHAKE_TIMEOUT`."""

    def __init__(self, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        super().__init__(f"no answer to the WebSocket handshake within {timeout:g} s")
        self.timeout = timeout


def handshake_request(host: str, path: str = "/", headers: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    """The upgrade request and the `Sec-WebSocket-Accept` value it expects back."""
    key = binascii.b2a_base64(os.urandom(16), newline=False)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    accept = binascii.b2a_base64(sha1(key + _GUID).digest(), newline=False)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), accept


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (names lower-cased) of an HTTP response head, without the blank line."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def check_accept(status: int, headers: dict[str, str], accept: bytes, body: bytes = b"") -> None:
    if status != 101:
        text = body.decode("utf-8", "replace").strip()
        raise HandshakeError(status, body, f"the server answered {status}" + (f": {text}" if text else ""))
    if headers.get("sec-websocket-accept", "").encode() != accept:
        raise ProtocolError("the server's Sec-WebSocket-Accept does not match the key")


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    # XOR as one big integer: fast in CPython without a byte loop.
    repeated = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes = b"", *, mask: bool = True, fin: bool = True) -> bytes:
    """One frame; clients must mask (`mask=False` is for tests playing a server)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]


def parse_close(payload: bytes) -> tuple[int | None, str]:
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class FrameReader:
    """Incremental reader: feed bytes, get whole messages as `(opcode, payload)`.

    Fragmented data messages are joined; control frames (ping, pong, close) come out as they arrive.
    """

    def __init__(self, max_message: int = 1 << 30) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._opcode: int | None = None
        self._size = 0
        self.max_message = max_message

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            frame = self._frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode >= 0x8:
                out.append((opcode, payload))
                continue
            if opcode == OP_CONTINUATION:
                if self._opcode is None:
                    raise ProtocolError("continuation frame without a message")
            elif self._opcode is not None:
                raise ProtocolError("new message before the previous one ended")
            else:
                self._opcode = opcode
            self._parts.append(payload)
            self._size += len(payload)
            if self._size > self.max_message:
                raise ProtocolError(f"message larger than {self.max_message} bytes")
            if fin:
                out.append((self._opcode, b"".join(self._parts)))
                self._parts, self._opcode, self._size = [], None, 0

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack_from("!H", buf, 2)[0]
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack_from("!Q", buf, 2)[0]
            offset = 10
        if length > self.max_message:
            raise ProtocolError(f"frame larger than {self.max_message} bytes")
        key = b""
        if second & 0x80:
            key = bytes(buf[offset : offset + 4])
            offset += 4
        end = offset + length
        if len(buf) < end:
            return None
        payload = bytes(buf[offset:end])
        del buf[:end]
        if key:
            payload = _mask(payload, key)
        return bool(first & 0x80), first & 0x0F, payload
