"""Peak memory and answer time of the real server against a backend that sends hostile bodies.

For each scenario a fresh `python -m app_server` (real stdio pipes) reads from a local hostile backend on
127.0.0.1 (a threaded `http.server` in this process): one `initialize`, then one request, whose answer time is
measured (request line written -> answer line read). The server's peak resident set is `VmHWM` from
`/proc/<pid>/status`, read just before its stdin is closed. Scenarios:

* baseline: a normal usage body (what the server costs anyway);
* 300 MB usage body (content-length announced);
* endless chunked usage body (never ends; stops only when the client goes away);
* 100 MB `500` error body;
* zstd bomb: 1 GiB of spaces compressed to about 32 KiB (`content-encoding: zstd`);
* gzip bomb: 256 MiB of spaces compressed to about 250 KiB (`content-encoding: gzip`);
* endless chunked consume body.

Target: peak RSS under 100 MiB, and each answer within the call's deadline (usage 30 s, consume 10 s) + 1 s.

Usage (from the repository root; Linux only, for /proc):

    .venv/bin/python benchmarks/hostile_bodies.py
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

ROOT: Final = Path(__file__).resolve().parent.parent
RSS_TARGET_MIB: Final = 100.0
CHUNK: Final = b" " * (64 * 1024)
USAGE: Final = json.dumps({"plan_type": "pro", "rate_limit_reset_credits": {"available_count": 3}}).encode()
AUTH: Final = {
    "auth_mode": "chatgpt",
    "OPENAI_API_KEY": None,
    "tokens": {"id_token": None, "access_token": "bench-token", "refresh_token": "r", "account_id": "acc"},
    "last_refresh": "2099-01-01T00:00:00Z",
}
READ: Final = {"id": 1, "method": "account/rateLimits/read", "params": {"excludeResetCreditDetails": True}}
CONSUME: Final = {"id": 1, "method": "account/rateLimitResetCredit/consume", "params": {"idempotencyKey": "bench"}}


def _bomb_zstd(size: int) -> bytes:
    compressor = zstd.ZstdCompressor()
    piece = b" " * (16 << 20)
    parts = [compressor.compress(piece) for _ in range(size // len(piece))]
    parts.append(compressor.flush())
    return b"".join(parts)


def _bomb_gzip(size: int) -> bytes:
    return gzip.compress(b" " * size, compresslevel=6)


Writer = Callable[[BaseHTTPRequestHandler], None]


def fixed(status: int, body: bytes, headers: dict[str, str] | None = None) -> Writer:
    def write(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return write


def huge(status: int, size: int) -> Writer:
    """`size` bytes of spaces, announced with content-length, written 64 KiB at a time."""

    def write(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(size))
        h.end_headers()
        sent = 0
        while sent < size:
            piece = CHUNK[: size - sent]
            h.wfile.write(piece)
            sent += len(piece)

    return write


def endless(status: int) -> Writer:
    """A chunked body that never ends (until the client disconnects, or 10 GiB)."""

    def write(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        frame = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
        for _ in range((10 << 30) // len(CHUNK)):
            h.wfile.write(frame)

    return write


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-body is the point of the exercise


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    writer: Writer = fixed(200, USAGE)
    sent_at: float = 0.0

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server stopped reading: wanted
            type(self).writer(self)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Result:
    scenario: str
    seconds: float
    peak_mib: float
    answer: str
    deadline: float


def vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def run(scenario: str, writer: Writer, request: dict[str, Any], deadline: float, port: int, tmp: Path) -> Result:
    Hostile.writer = writer
    home = tmp / scenario.replace(" ", "-")
    home.mkdir()
    (home / "auth.json").write_text(json.dumps(AUTH), encoding="utf-8")
    (home / "config.toml").write_text(f'chatgpt_base_url = "http://127.0.0.1:{port}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CODEX_API_KEY")}
    env.update(CODEX_HOME=str(home), CODEX_LIMITS_HOME=str(home / "data"), TERM="xterm")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-m", "app_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    init = {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "bench", "version": "1"}}}
    child.stdin.write(json.dumps(init).encode() + b"\n")
    child.stdin.flush()
    child.stdout.readline()
    start = time.perf_counter()
    child.stdin.write(json.dumps(request).encode() + b"\n")
    child.stdin.flush()
    line = child.stdout.readline()
    seconds = time.perf_counter() - start
    peak = vm_hwm_mib(child.pid)
    child.stdin.close()
    child.wait(30)
    message = json.loads(line)
    answer = json.dumps(message.get("error") or message.get("result"), ensure_ascii=False)
    return Result(scenario, seconds, peak, answer, deadline)


def main() -> int:
    print("building the bombs…", file=sys.stderr)
    zstd_bomb = _bomb_zstd(1 << 30)
    gzip_bomb = _bomb_gzip(256 << 20)
    scenarios: list[tuple[str, Writer, dict[str, Any], float]] = [
        ("baseline", fixed(200, USAGE, {"content-type": "application/json"}), READ, 30.0),
        ("300 MB usage body", huge(200, 300_000_000), READ, 30.0),
        ("endless chunked usage", endless(200), READ, 30.0),
        ("100 MB 500 error body", huge(500, 100_000_000), READ, 30.0),
        (
            f"zstd bomb 1 GiB ({len(zstd_bomb) // 1024} KiB)",
            fixed(200, zstd_bomb, {"content-encoding": "zstd"}),
            READ,
            30.0,
        ),
        (
            f"gzip bomb 256 MiB ({len(gzip_bomb) // 1024} KiB)",
            fixed(200, gzip_bomb, {"content-encoding": "gzip"}),
            READ,
            30.0,
        ),
        ("endless chunked consume", endless(200), CONSUME, 10.0),
    ]
    backend = _Quiet(("127.0.0.1", 0), Hostile)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = backend.server_address[1]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hostile-bodies-") as tmp:
        for name, writer, request, deadline in scenarios:
            results.append(run(name, writer, request, deadline, int(port), Path(tmp)))
    backend.shutdown()

    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'scenario':<34} {'answer s':>9} {'deadline':>9} {'peak RSS MiB':>13}  answer")
    ok = True
    for r in results:
        within = r.seconds <= r.deadline + 1
        small = r.peak_mib < RSS_TARGET_MIB
        ok = ok and within and small
        shown = r.answer if len(r.answer) <= 110 else r.answer[:110] + "…"
        print(f"{r.scenario:<34} {r.seconds:>9.3f} {r.deadline + 1:>8.0f}s {r.peak_mib:>13.1f}  {shown}")
    verdict = "meets" if ok else "MISSES"
    print(f"{verdict} the targets: peak RSS < {RSS_TARGET_MIB:g} MiB, each answer within its deadline + 1 s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
