"""Per-read overhead of `account/rateLimits/read`: our read latency minus the backend's own latency.

The server (`python -m app_server`, real stdio pipes) reads from a local backend (`tests/support/mock_backend.py`,
127.0.0.1, keep-alive). A synchronous client sends one read at a time and waits for its answer (sequential, no
pipelining), alternating with direct requests to the same backend, which measure the backend's own latency in
the same conditions. For each read:

    overhead = read latency (request line written -> answer line read) - backend latency

where backend latency is the median time of the same backend calls made directly with a minimal client
(`http.client`, keep-alive): the usage call alone for `excludeResetCreditDetails: true`; for `false` the usage
and the details calls sent together on two connections, both answers read (as our server makes them
concurrently). Everything else is ours: stdio framing,
JSON-RPC parsing, dispatch, auth, the httpx client, payload decoding, mapping, encoding.

Usage (from the repository root):

    .venv/bin/python benchmarks/read_overhead.py [--reads N] [--warmup W]

Nothing is sent to the network: CODEX_HOME is a fresh directory whose config points at the local backend, and
the token refresh URL points at it too (the token is not due for a refresh anyway).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.mock_backend import MockBackend  # noqa: E402

TARGET_MS: Final = 3.0

USAGE: Final = {
    "plan_type": "pro",
    "rate_limit": {
        "allowed": True,
        "limit_reached": False,
        "primary_window": {
            "used_percent": 42,
            "limit_window_seconds": 18000,
            "reset_after_seconds": 100,
            "reset_at": 1,
        },
        "secondary_window": {
            "used_percent": 5,
            "limit_window_seconds": 604800,
            "reset_after_seconds": 1000,
            "reset_at": 2,
        },
    },
    "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
    "rate_limit_reset_credits": {"available_count": 2},
    "account_id": "account-123",
}
DETAILS: Final = {
    "available_count": 2,
    "credits": [
        {
            "id": f"credit-{i}",
            "reset_type": "codex_rate_limits",
            "status": "available",
            "granted_at": "2026-06-12T00:00:00Z",
            "expires_at": "2026-07-12T00:00:00Z",
            "title": "Full reset",
            "description": "Ready",
        }
        for i in range(2)
    ],
}
AUTH: Final = {
    "auth_mode": "chatgpt",
    "OPENAI_API_KEY": None,
    "tokens": {"id_token": None, "access_token": "bench-token", "refresh_token": "r", "account_id": "account-123"},
    "last_refresh": "2099-01-01T00:00:00Z",
}
INIT: Final = {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "bench", "version": "1.0"}}}


# -- the two clients ---------------------------------------------------------------------------------------------


class StdioClient:
    """A blocking line client for a child server: write one request, read until its answer line."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._out = process.stdin.fileno()
        self._in = process.stdout.fileno()
        self._buffer = b""

    def call(self, line: bytes) -> bytes:
        os.write(self._out, line)
        while b"\n" not in self._buffer:
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError("server closed its stdout")
            self._buffer += chunk
        answer, _, self._buffer = self._buffer.partition(b"\n")
        return answer


class BackendProbe:
    """Direct keep-alive requests to the backend, one connection per path (as our server's pool would have)."""

    def __init__(self, port: int) -> None:
        self._connections: dict[str, http.client.HTTPConnection] = {}
        self._port = port

    def get(self, *paths: str) -> float:
        """Send a GET for each path (each on its own connection) before reading any answer, as our server
        makes the usage and details calls concurrently; the time until the last answer is read."""
        connections = []
        for path in paths:
            connection = self._connections.get(path)
            if connection is None:
                connection = self._connections[path] = http.client.HTTPConnection("127.0.0.1", self._port)
            connections.append(connection)
        start = time.perf_counter()
        for path, connection in zip(paths, connections, strict=True):
            connection.request("GET", path, headers={"authorization": "Bearer bench-token", "accept": "*/*"})
        for path, connection in zip(paths, connections, strict=True):
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"backend answered {response.status} for {path}")
        return time.perf_counter() - start

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()


# -- one measurement ---------------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    backend_label: str
    reads: list[float]
    backend_calls: list[float]

    @property
    def backend(self) -> float:
        return statistics.median(self.backend_calls)

    @property
    def overhead(self) -> list[float]:
        return [read - self.backend for read in self.reads]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(call: Callable[[bytes], bytes], probe: BackendProbe, *, exclude: bool, reads: int, warmup: int) -> Series:
    params = {"excludeResetCreditDetails": exclude}
    label = f"excludeResetCreditDetails={str(exclude).lower()}"
    series = Series(label, "backend latency (usage)" if exclude else "backend (usage + details)", [], [])
    paths = ("/api/codex/usage",) if exclude else ("/api/codex/usage", "/api/codex/rate-limit-reset-credits")
    for i in range(warmup + reads):
        line = json.dumps({"id": i + 1, "method": "account/rateLimits/read", "params": params}).encode() + b"\n"
        start = time.perf_counter()
        answer = call(line)
        elapsed = time.perf_counter() - start
        message = json.loads(answer)
        if message.get("id") != i + 1 or "result" not in message:
            raise RuntimeError(f"unexpected answer: {answer[:300]!r}")
        backend = probe.get(*paths)
        if i >= warmup:
            series.reads.append(elapsed)
            series.backend_calls.append(backend)
    return series


# -- running the server --------------------------------------------------------------------------------------------


def child_env(home: Path, data: Path, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CODEX")}
    for key in ("OPENAI_API_KEY", "TERM_PROGRAM", "TERM_PROGRAM_VERSION"):
        env.pop(key, None)
    env.update(
        CODEX_HOME=str(home),
        CODEX_LIMITS_HOME=str(data),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=f"http://127.0.0.1:{port}/oauth/token",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


@contextmanager
def subprocess_server(home: Path, data: Path, port: int) -> Iterator[Callable[[bytes], bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(home, data, port),
        cwd=ROOT,
    )
    try:
        client = StdioClient(process)
        client.call(json.dumps(INIT).encode() + b"\n")
        yield client.call
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=500, help="measured reads per mode (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="reads before measuring (default 50)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="read-overhead-") as tmp, MockBackend() as backend:
        backend.set_routes(
            {"GET /api/codex/usage": {"json": USAGE}, "GET /api/codex/rate-limit-reset-credits": {"json": DETAILS}}
        )
        home, data = Path(tmp, "home"), Path(tmp, "data")
        home.mkdir()
        (home / "config.toml").write_text(f'chatgpt_base_url = "{backend.base_url}"\n', encoding="utf-8")
        (home / "auth.json").write_text(json.dumps(AUTH), encoding="utf-8")
        probe = BackendProbe(backend.port)
        with subprocess_server(home, data, backend.port) as call:
            results = [
                measure(call, probe, exclude=exclude, reads=args.reads, warmup=args.warmup) for exclude in (True, False)
            ]
        probe.close()

    print("read overhead: python -m app_server over stdio pipes, local backend on 127.0.0.1 (keep-alive);")
    print(f"{args.reads} sequential reads per mode after {args.warmup} warm-up; python {platform.python_version()}")
    print(f"{'':<32}{'':<28}{'median':>9}{'p90':>9}{'p99':>9}  (ms)")
    worst = 0.0
    for series in results:
        rows = [
            ("read latency", series.reads),
            (series.backend_label, series.backend_calls),
            ("overhead", series.overhead),
        ]
        for index, (name, values) in enumerate(rows):
            label = series.label if index == 0 else ""
            figures = "".join(f"{percentile(values, q) * 1000:>9.3f}" for q in (50, 90, 99))
            print(f"{label:<32}{name:<28}{figures}")
        worst = max(worst, statistics.median(series.overhead) * 1000)
    verdict = "meets" if worst < TARGET_MS else "MISSES"
    print(f"largest median overhead {worst:.3f} ms: {verdict} the {TARGET_MS:g} ms target")


if __name__ == "__main__":
    main()
