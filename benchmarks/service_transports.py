"""The service and its transports (issue #12): proxy start-up, `status` on the service, ws/unix vs stdio throughput.

One command measures, interleaved, K runs each:

(a) spawn -> `initialize` answer for a client that spawns
    * `python -m app_server.proxy` and `codex-limits proxy` (the console script) against a running service,
    * `python -m app_server` (stdio, a fresh server each time);
(b) `codex-limits status --json` wall time with a running service and without one (then it spawns
    `serve` itself), next to the floor of importing the operator commands (`import app_server.cli.commands`);
(c) N pipelined cheap requests (`account/rateLimitResetCredit/consume` with an empty key, answered -32600
    before any I/O), first byte written -> last answer read, as messages per second, over stdio, over
    `ws://127.0.0.1` and over the Unix socket. Every answer is counted; a writer and a reader thread keep
    both directions moving.

Usage (from the repository root):

    .venv/bin/python benchmarks/service_transports.py [--runs K] [--requests N]

Everything runs in fresh temporary CODEX_HOME / CODEX_LIMITS_HOME directories; nothing reaches the network.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app_server.rpc import wsframe  # noqa: E402
from app_server.service.state import running  # noqa: E402

INIT_LINE: Final = (
    b'{"id":0,"method":"initialize","params":{"clientInfo":{"name":"bench","title":null,"version":"1.0"}}}'
)
CONSUME: Final = b'{"id":%d,"method":"account/rateLimitResetCredit/consume","params":{"idempotencyKey":""}}'
BIN: Final = Path(sys.executable).parent
CLI: Final = [sys.executable, "-m", "app_server.cli.main"]


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_"))}
    (root / "codex").mkdir(parents=True, exist_ok=True)
    env.update(
        CODEX_HOME=str(root / "codex"),
        CODEX_LIMITS_HOME=str(root / "data"),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE="http://127.0.0.1:9/oauth/token",
    )
    return env


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:6.1f} ms, best {min(values) * 1000:6.1f} ms"


# -- (a) spawn -> first answer ----------------------------------------------------------------------------------


def first_answer(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(INIT_LINE + b"\n")
    child.stdin.flush()
    line = child.stdout.readline()
    elapsed = time.perf_counter() - start
    assert line.startswith(b'{"id":0,"result"'), line
    child.stdin.close()
    child.wait(30)
    return elapsed


# -- (c) throughput ---------------------------------------------------------------------------------------------


def pipelined(send: Callable[[bytes], None], receive: Callable[[], bytes], n: int, framed: bool) -> float:
    """Write N requests from a thread while this thread counts answers; seconds from first byte to last answer."""
    requests = [CONSUME % i for i in range(1, n + 1)]
    chunks = (
        [b"".join(wsframe.encode_frame(wsframe.OP_TEXT, r) for r in requests[i : i + 500]) for i in range(0, n, 500)]
        if framed
        else [b"".join(r + b"\n" for r in requests[i : i + 500]) for i in range(0, n, 500)]
    )
    start = time.perf_counter()

    def write_all() -> None:
        for chunk in chunks:
            send(chunk)

    writer = threading.Thread(target=write_all, daemon=True)
    writer.start()
    answered = 0
    reader = wsframe.FrameReader()
    buffer = b""
    while answered < n:
        data = receive()
        if not data:
            raise RuntimeError(f"connection ended after {answered} answers")
        if framed:
            answered += sum(op == wsframe.OP_TEXT for op, _ in reader.feed(data))
        else:
            buffer += data
            answered += buffer.count(b"\n")
            buffer = buffer[buffer.rfind(b"\n") + 1 :]
    elapsed = time.perf_counter() - start
    writer.join()
    return elapsed


def stdio_throughput(env: dict[str, str], n: int) -> float:
    child = subprocess.Popen(
        [sys.executable, "-m", "app_server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT
    )
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout
    stdin.write(INIT_LINE + b"\n")
    stdin.flush()
    stdout.readline()

    def send(data: bytes) -> None:
        stdin.write(data)
        stdin.flush()

    elapsed = pipelined(send, lambda: os.read(stdout.fileno(), 1 << 16), n, framed=False)
    stdin.close()
    child.wait(30)
    return elapsed


def ws_connect(target: str | tuple[str, int]) -> tuple[socket.socket, bytes]:
    family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.connect(target)
    request, accept = wsframe.handshake_request("localhost")
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1 << 16)
    end = head.index(b"\r\n\r\n")
    status, headers = wsframe.parse_response_head(head[:end])
    wsframe.check_accept(status, headers, accept)
    return sock, head[end + 4 :]


def ws_throughput(target: str | tuple[str, int], n: int) -> float:
    sock, rest = ws_connect(target)
    sock.sendall(wsframe.encode_frame(wsframe.OP_TEXT, INIT_LINE))
    reader = wsframe.FrameReader()
    got = reader.feed(rest)
    while not got:
        got = reader.feed(sock.recv(1 << 16))
    elapsed = pipelined(sock.sendall, lambda: sock.recv(1 << 16), n, framed=True)
    sock.sendall(wsframe.encode_frame(wsframe.OP_CLOSE, wsframe.close_payload(1000)))
    sock.close()
    return elapsed


def start_listener(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "app_server", "--listen", "ws://127.0.0.1:0"],
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert child.stderr is not None
    while True:
        line = child.stderr.readline().decode()
        if "listening on: ws://" in line:
            host, _, port = line.split("ws://")[1].strip().rpartition(":")
            return child, (host, int(port))
        if not line:
            raise RuntimeError("the listener did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        env = environment(root)
        home = root / "data"
        subprocess.run([*CLI, "service", "start"], env=env, cwd=ROOT, check=True, capture_output=True)
        state = running(home)
        assert state is not None
        try:
            results: dict[str, list[float]] = {}
            commands = {
                "python -m app_server.proxy (service running)": [sys.executable, "-m", "app_server.proxy"],
                "codex-limits proxy (service running)": [str(BIN / "codex-limits"), "proxy"],
                "python -m app_server (stdio, spawned)": [sys.executable, "-m", "app_server"],
            }
            for _ in range(args.runs):
                for name, command in commands.items():
                    results.setdefault(name, []).append(first_answer(command, env))
            print("(a) spawn -> initialize answer")
            for name, values in results.items():
                print(f"    {name:48} {ms(values)}")

            status: dict[str, list[float]] = {}
            cold = {**env, "CODEX_LIMITS_HOME": str(root / "other-data")}  # no service there
            for _ in range(args.runs):
                for name, run_env in (("with the service", env), ("without (spawns serve)", cold)):
                    start = time.perf_counter()
                    subprocess.run(
                        [str(BIN / "codex-limits"), "status", "--json"], env=run_env, cwd=ROOT, capture_output=True
                    )
                    status.setdefault(name, []).append(time.perf_counter() - start)
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", "import app_server.cli.commands"], env=env, cwd=ROOT, check=True)
                status.setdefault("floor: import app_server.cli.commands", []).append(time.perf_counter() - start)
            print("(b) codex-limits status --json, whole command")
            for name, values in status.items():
                print(f"    {name:48} {ms(values)}")

            listener, address = start_listener(env)
            try:
                rates: dict[str, list[float]] = {}
                unix = os.path.realpath(state.socket)
                for _ in range(max(3, args.runs // 3)):
                    rates.setdefault("stdio", []).append(args.requests / stdio_throughput(env, args.requests))
                    rates.setdefault("ws://127.0.0.1", []).append(args.requests / ws_throughput(address, args.requests))
                    rates.setdefault("unix socket (the service)", []).append(
                        args.requests / ws_throughput(unix, args.requests)
                    )
            finally:
                listener.terminate()
                listener.wait(30)
            print(f"(c) {args.requests} pipelined requests, answers per second")
            for name, values in rates.items():
                print(f"    {name:48} median {statistics.median(values):9.0f}/s, best {max(values):9.0f}/s")
        finally:
            subprocess.run([*CLI, "service", "stop"], env=env, cwd=ROOT, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
