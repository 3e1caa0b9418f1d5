"""A webhook receiver on 127.0.0.1 for the simulated world: what an operator's alert endpoint would do.

It checks each POST's `X-Codex-Limits-Signature` (HMAC-SHA256 with the shared secret over
`<timestamp>.<body>`, written here from the documented rule, independently of the sender), answers 401
to a bad one, de-duplicates on the alert id, and keeps (and, with `record_to`, appends as JSON lines)
every alert it accepted. `codex-limits demo` reads that file to show a delivered alert.

Its socket is bound at construction but listens only from `start()`: until then a connection is refused,
exactly like a receiver that is down, and the URL never changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["SimAlertSink"]

_MAX_BODY = 1 << 20


class SimAlertSink:
    """The receiver; `received` holds the accepted alerts' bodies (parsed), once per alert id."""

    def __init__(self, secret: bytes, *, record_to: Path | None = None) -> None:
        self.secret = secret
        self.record_to = record_to
        self.received: list[dict[str, Any]] = []
        self.requests = 0
        self.rejected = 0
        self.duplicates = 0
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/alerts"

    def start(self) -> None:
        server = _Server(self)
        server.socket.close()
        server.socket = self._socket
        server.server_activate()  # listen(): from now on connections are accepted
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="sim-alert-sink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        else:
            self._socket.close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Whether `count` alerts were accepted within `timeout` seconds (a thread's wait, not the event loop's)."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.received) >= count, timeout)

    def accept(self, headers: Any, body: bytes) -> int:
        """The status to answer one POST with."""
        timestamp = headers.get("X-Codex-Limits-Timestamp", "")
        signature = headers.get("X-Codex-Limits-Signature", "")
        expected = "sha256=" + hmac.new(self.secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        with self._changed:
            self.requests += 1
            if not timestamp.isdigit() or not hmac.compare_digest(expected, signature):
                self.rejected += 1
                return 401
            try:
                payload = json.loads(body)
                ident = payload["id"]
            except (ValueError, KeyError, TypeError):
                return 400
            if ident in self._ids:
                self.duplicates += 1
                return 200
            self._ids.add(ident)
            self.received.append(payload)
            if self.record_to is not None:
                with self.record_to.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(payload) + "\n")
            self._changed.notify_all()
        return 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sink: SimAlertSink) -> None:
        super().__init__(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self.sink = sink


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        assert isinstance(self.server, _Server)
        length = int(self.headers.get("Content-Length") or 0)
        status = 413 if length > _MAX_BODY else self.server.sink.accept(self.headers, self.rfile.read(length))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
