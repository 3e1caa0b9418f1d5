"""Scriptable HTTP/1.1 backend on 127.0.0.1 for tests (standard library only).

Routes use the format of the transcripts' ``backend_config`` events: the key is ``"METHOD /path"`` and the
value is a response spec ``{status, json | body, headers, delay, action}`` or a list of specs (call *i* gets
element ``min(i, len - 1)``). Every request is recorded with its headers in arrival order. Delayed answers
sleep on a condition, so :meth:`MockBackend.release_delays` and :meth:`MockBackend.stop` end them at once.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

__all__ = ["MockBackend", "RecordedRequest", "unused_port"]

# Statuses whose responses never carry a body (and so get no Content-Length either).
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the mock received it."""

    method: str
    path: str
    """Path plus query string, exactly as in the request line."""
    headers: list[tuple[str, str]]
    """Lower-cased names in arrival order; values are the raw bytes decoded as UTF-8 (else latin-1)."""
    body: bytes
    t: float
    """``time.monotonic()`` when the request head had been read."""
    raw_headers: list[tuple[str, bytes]] = field(default_factory=list, repr=False)
    """Lower-cased names in arrival order with the raw value bytes."""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_names(self) -> list[str]:
        """Lower-cased header names in arrival order."""
        return [key for key, _ in self.headers]

    def transcript_headers(self) -> list[list[str]]:
        """Headers in the transcripts' form: ``[[name, value], ...]`` with values decoded as latin-1.

        The reference mock decoded header bytes as latin-1, so a UTF-8 user agent appears there as mojibake
        (``"clié"`` is recorded as ``"cliÃ©"``). Compare against this to match a transcript byte for byte.
        """
        return [[key, value.decode("latin-1")] for key, value in self.raw_headers]

    def text(self) -> str:
        """The body decoded as UTF-8 (as the transcripts' ``backend_request.body``)."""
        return self.body.decode("utf-8", errors="replace")


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for connection-refused tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _decode_header_value(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _encode_header_value(value: str) -> str:
    """Make ``value`` sendable by ``send_header`` (latin-1); non-latin-1 text goes out as UTF-8 bytes."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, backend: MockBackend) -> None:
        self.backend = backend
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can be slow; it is not needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Keep stderr quiet; remember unexpected failures so tests can look at them.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.backend.handler_errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    @property
    def _backend(self) -> MockBackend:
        return cast(_Server, self.server).backend

    def setup(self) -> None:
        super().setup()
        self._backend._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._backend._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request logging."""

    def _read_body(self) -> bytes:
        transfer_encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in transfer_encoding:
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the terminating empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _raw_headers(self) -> list[tuple[str, bytes]]:
        # http.client decodes the header block as latin-1, which maps bytes 1:1 to code points.
        return [(name.lower(), value.encode("latin-1")) for name, value in self.headers.items()]

    def _dispatch(self) -> None:
        arrived = time.monotonic()
        backend = self._backend
        raw_headers = self._raw_headers()
        body = self._read_body()
        backend._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers=[(name, _decode_header_value(value)) for name, value in raw_headers],
                body=body,
                t=arrived,
                raw_headers=raw_headers,
            )
        )
        spec = backend._next_spec(self.command, self.path)
        if spec is None:
            error = {"error": "no mock route", "route": f"{self.command} {self.path}"}
            self._respond(404, json.dumps(error).encode("utf-8"), {}, "application/json")
            return
        delay = float(spec.get("delay", 0) or 0)
        if delay > 0:
            backend._sleep(delay)
        if spec.get("action") == "close" or backend._stopping:
            # Drop the connection without writing anything.
            self.close_connection = True
            return
        status = int(spec.get("status", 200))
        headers: Mapping[str, Any] = spec.get("headers") or {}
        if "json" in spec:
            # Default json.dumps separators (", ", ": "): the transcripts' bodies were serialized this way.
            self._respond(status, json.dumps(spec["json"]).encode("utf-8"), headers, "application/json")
            return
        raw = spec.get("body", "")
        payload = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
        self._respond(status, payload, headers, None)

    def _respond(
        self, status: int, payload: bytes, headers: Mapping[str, Any], default_content_type: str | None
    ) -> None:
        lower_names = {name.lower() for name in headers}
        self.send_response_only(status)
        for name, value in headers.items():
            self.send_header(name, _encode_header_value(str(value)))
        if default_content_type is not None and "content-type" not in lower_names:
            self.send_header("content-type", default_content_type)
        may_have_body = status >= 200 and status not in _NO_BODY_STATUSES
        if may_have_body and "content-length" not in lower_names:
            self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if may_have_body and payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch
    do_HEAD = _dispatch
    do_OPTIONS = _dispatch


class MockBackend:
    """A scriptable HTTP backend on ``127.0.0.1`` serving from a daemon thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``port`` and ``base_url`` are valid after
    :meth:`start`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests_changed = threading.Condition(self._lock)
        self._routes: dict[str, Any] = {}
        self._calls: dict[str, int] = {}
        self._requests: list[RecordedRequest] = []
        self._delay_cond = threading.Condition()
        self._release_generation = 0
        self._stopping = False
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.handler_errors: list[BaseException] = []
        """Unexpected (non-OSError) exceptions raised inside request handlers."""

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind an ephemeral port on 127.0.0.1 and start serving."""
        if self._server is not None:
            raise RuntimeError("MockBackend already started")
        self._stopping = False
        server = _Server(self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="mock-backend", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: wake delayed handlers, close open connections and the listening socket."""
        server = self._server
        if server is None:
            return
        self._stopping = True
        self.release_delays()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> MockBackend:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the backend listens on."""
        if self._server is None:
            raise RuntimeError("MockBackend not started")
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``"""
        return f"http://127.0.0.1:{self.port}"

    # -- routes ----------------------------------------------------------------------------------------------

    def set_routes(self, routes: Mapping[str, Any]) -> None:
        """Replace the whole route table (and reset every per-route call counter)."""
        checked = {key: _check_route(key, value) for key, value in routes.items()}
        with self._lock:
            self._routes = checked
            self._calls = {}

    def update_routes(self, routes: Mapping[str, Any]) -> None:
        """Add or replace the given routes, keeping the others; counters of the given routes restart at 0."""
        checked = {key: _check_route(key, value) for key, value in routes.items()}
        with self._lock:
            self._routes.update(checked)
            for key in checked:
                self._calls.pop(key, None)

    def route_calls(self, key: str) -> int:
        """How many requests route ``key`` ("METHOD /path") has answered since it was last set."""
        with self._lock:
            return self._calls.get(key, 0)

    # -- recorded requests -----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received since the start (or the last :meth:`clear`)."""
        return self.recorded()

    def recorded(self) -> list[RecordedRequest]:
        """A snapshot of the requests received since the start (or the last :meth:`clear`)."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the recorded requests (routes and call counters are kept)."""
        with self._lock:
            self._requests.clear()

    def wait_for_requests(self, n: int, timeout: float) -> list[RecordedRequest]:
        """Block until at least ``n`` requests are recorded; return the snapshot.

        Raises TimeoutError when fewer than ``n`` arrived within ``timeout`` seconds.
        """
        with self._requests_changed:
            if not self._requests_changed.wait_for(lambda: len(self._requests) >= n, timeout=timeout):
                got = [f"{r.method} {r.path}" for r in self._requests]
                msg = f"expected {n} backend request(s) within {timeout}s, got {len(got)}: {got}"
                raise TimeoutError(msg)
            return list(self._requests)

    # -- delays ----------------------------------------------------------------------------------------------

    def release_delays(self) -> None:
        """Wake every handler currently sleeping in a ``delay``; it then answers at once."""
        with self._delay_cond:
            self._release_generation += 1
            self._delay_cond.notify_all()

    # -- used by the handler ---------------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._requests_changed:
            self._requests.append(request)
            self._requests_changed.notify_all()

    def _next_spec(self, method: str, path: str) -> Mapping[str, Any] | None:
        candidates = [f"{method} {path}"]
        bare_path = urlsplit(path).path
        if bare_path != path:
            candidates.append(f"{method} {bare_path}")
        with self._lock:
            for key in candidates:
                if key in self._routes:
                    value = self._routes[key]
                    index = self._calls.get(key, 0)
                    self._calls[key] = index + 1
                    if isinstance(value, list):
                        return cast(Mapping[str, Any], value[min(index, len(value) - 1)])
                    return cast(Mapping[str, Any], value)
        return None

    def _sleep(self, seconds: float) -> None:
        with self._delay_cond:
            generation = self._release_generation
            self._delay_cond.wait_for(lambda: self._release_generation != generation or self._stopping, timeout=seconds)

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def _check_route(key: str, value: Any) -> Any:
    method, sep, path = key.partition(" ")
    if not sep or not method or not path.startswith("/"):
        raise ValueError(f"route key must look like 'METHOD /path', got {key!r}")
    specs = value if isinstance(value, list) else [value]
    if not specs:
        raise ValueError(f"route {key!r}: empty list of responses")
    for spec in specs:
        if not isinstance(spec, Mapping):
            raise TypeError(f"route {key!r}: response spec must be a mapping, got {type(spec).__name__}")
    return [dict(spec) for spec in value] if isinstance(value, list) else dict(value)
