"""Overload: answered reads per second, errors, latency, upstream calls and memory from 0.5x to 4x capacity.

One server process on real stdio pipes (`python -m app_server`, and the reference `codex app-server` when
`--reference PATH` is given) reads one signed-in account from the simulated upstream (`app_server.sim`), which
runs in a process of its own on 127.0.0.1 so that it is never this script's or the server's bottleneck. Every
request is an `account/rateLimits/read` with the reset-credit details (a usage call plus a details call).

For each server, in the same run:

1. capacity: a closed loop keeps `--window` reads outstanding (`--reference-window` for the reference, which
   leaves requests of a burst unanswered: D1) for `--capacity-seconds`; answers per second over the last
   part of it (the first second is warm-up) are the capacity;
2. steps: reads are offered open-loop at 0.5x, 1x, 2x and 4x that capacity for `--duration` seconds each,
   written every 10 ms in one batch of what is due (at most one tick's worth). A server that cannot keep up
   makes the writes block (its backpressure): `sent` is what the pipe took, `offered` what was due. After
   each step the script waits (up to `--drain` seconds) for the answers to everything sent, so steps do not
   overlap.

Per step: answered/sent, goodput (answers received during the step, per second), errors by message, p50 and p99
latency (line written -> answer read, so time spent blocked before the write is not counted: see `sent`),
upstream calls per answered read (counted by the simulated upstream) and the server's RSS after the step.

Usage (from the repository root):

    .venv/bin/python benchmarks/overload.py [--duration 10] [--capacity-seconds 6] [--reference PATH]

The reference is never a dependency: `npm install @openai/codex@0.171.0` into a temporary directory and pass
its native binary, `--reference DIR/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex`
(`node_modules/.bin/codex` works too, but it is a node launcher: the CPU and RSS columns would be the
launcher's). Nothing leaves the machine: every `CODEX_HOME` points at 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe as machine  # noqa: E402
from benchmarks.machine import loadavg  # noqa: E402

READ: Final = "account/rateLimits/read"
INIT: Final = {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "bench", "version": "1.0"}}}
FACTORS: Final = (0.5, 1.0, 2.0, 4.0)
TICK: Final = 0.01


# -- the simulated upstream, in its own process ------------------------------------------------------------------


def serve_upstream(root: Path) -> None:
    """`--serve-upstream DIR`: the simulated upstream, counting the codex calls it answers. Prints its base URL
    and the signed-in home it wrote, then answers each `count` line on stdin with the calls so far."""
    from app_server.sim.upstream import SimulatedUpstream

    class Counting(SimulatedUpstream):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self._count_lock = threading.Lock()

        def handle_request(
            self, method: str, path: str, headers: Mapping[str, str], body: bytes
        ) -> tuple[int, dict[str, Any]]:
            if not path.endswith("/oauth/token"):
                with self._count_lock:
                    self.calls += 1
            return super().handle_request(method, path, headers, body)

    with Counting() as upstream:
        homes = upstream.write_codex_homes(root)
        first = next(iter(homes.values()))
        print(json.dumps({"base_url": upstream.base_url, "home": str(first)}), flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(upstream.calls, flush=True)


class Upstream:
    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self._lines = b""

    async def _line(self) -> bytes:
        assert self.process.stdout is not None
        while b"\n" not in self._lines:
            self._lines += await self.process.stdout.receive()
        line, _, self._lines = self._lines.partition(b"\n")
        return line

    async def hello(self) -> dict[str, str]:
        with anyio.fail_after(30):
            result: dict[str, str] = json.loads(await self._line())
            return result

    async def calls(self) -> int:
        assert self.process.stdin is not None
        await self.process.stdin.send(b"count\n")
        with anyio.fail_after(30):
            return int(await self._line())


# -- a server under load -----------------------------------------------------------------------------------------


@dataclass
class Step:
    label: str
    rate: float
    first_id: int
    offered: int = 0
    sent: int = 0
    answered: int = 0
    in_window: int = 0
    duration: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    upstream_calls: int = 0
    rss_mib: float = 0.0
    cpu: float = 0.0
    """The server's CPU seconds over the step and its drain, per second of the step."""

    def row(self, server: str) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000 if lat else math.nan
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else math.nan
        errors = ", ".join(f"{n} `{text}`" for text, n in self.errors.most_common(2)) or "0"
        per_read = self.upstream_calls / self.answered if self.answered else math.nan
        goodput = self.in_window / self.duration if self.duration else math.nan
        return (
            f"| {server} | {self.label} | {self.rate:,.0f} | {self.offered:,} | {self.sent:,} | "
            f"{self.answered:,}/{self.sent:,} | {goodput:,.0f} | {errors} | {p50:,.1f} | {p99:,.1f} | "
            f"{per_read:.2f} | {self.cpu:.0%} | {self.rss_mib:.1f} |"
        )


class Server:
    """One server process on stdio: writes reads, reads answers, attributes each answer to its step."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.next_id = 1
        self.sent_at: dict[int, float] = {}
        self.answered = 0
        self.answer_event = anyio.Event()
        self.step: Step | None = None
        self.window_end = math.inf

    LINE: Final = b'{"id":%d,"method":"' + READ.encode() + b'","params":{"excludeResetCreditDetails":false}}\n'

    def line(self, request_id: int) -> bytes:
        return self.LINE % request_id

    async def send(self, n: int) -> None:
        first = self.next_id
        self.next_id += n
        data = b"".join(self.line(i) for i in range(first, first + n))
        assert self.process.stdin is not None
        now = time.monotonic()
        for i in range(first, first + n):
            self.sent_at[i] = now
        await self.process.stdin.send(data)
        if self.step is not None:
            self.step.sent += n

    async def read_answers(self) -> None:
        assert self.process.stdout is not None
        rest = b""
        async for chunk in self.process.stdout:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            now = time.monotonic()
            for raw in lines:
                message = json.loads(raw)
                request_id = message.get("id")
                if not isinstance(request_id, int) or request_id not in self.sent_at:
                    continue
                sent = self.sent_at.pop(request_id)
                self.answered += 1
                step = self.step
                if step is not None and request_id >= step.first_id:
                    step.answered += 1
                    step.latencies.append(now - sent)
                    if now <= self.window_end:
                        step.in_window += 1
                    if "error" in message:
                        step.errors[str(message["error"].get("message", ""))[:60]] += 1
            self.answer_event.set()
            self.answer_event = anyio.Event()

    async def initialize(self) -> None:
        assert self.process.stdin is not None
        self.sent_at[0] = time.monotonic()
        await self.process.stdin.send(json.dumps(INIT).encode() + b"\n")
        with anyio.fail_after(60):
            while 0 in self.sent_at:
                await self.answer_event.wait()

    async def drain(self, limit: float) -> None:
        with anyio.move_on_after(limit):
            while self.sent_at:
                await self.answer_event.wait()

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def rss_mib(self) -> float:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return math.nan
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan


async def capacity(server: Server, seconds: float, window: int) -> float:
    """Answers per second with `window` reads always outstanding, after a second of warm-up."""
    start = time.monotonic()
    counted_from = start + min(1.0, seconds / 3)
    base = None
    while (now := time.monotonic()) < start + seconds:
        if base is None and now >= counted_from:
            base = (server.answered, now)
        outstanding = len(server.sent_at)
        if outstanding < window:
            await server.send(window - outstanding)
        with anyio.move_on_after(0.05):
            await server.answer_event.wait()
    assert base is not None
    return (server.answered - base[0]) / (time.monotonic() - base[1])


async def offer(server: Server, step: Step, seconds: float) -> None:
    start = time.monotonic()
    server.step = step
    server.window_end = start + seconds
    step.offered = round(step.rate * seconds)
    while (now := time.monotonic()) < start + seconds:
        due = min(step.offered, math.floor((now - start) * step.rate)) - step.sent
        if due > 0:
            # At most one tick's worth per write: what a blocked write left undone is not piled into the next
            # one (it would wait in this process's own buffer, and count as the server's latency).
            await server.send(min(due, math.ceil(step.rate * TICK)))
        await anyio.sleep(TICK)
    step.duration = seconds


async def run_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    upstream: Upstream,
    args: argparse.Namespace,
    err: Path,
    window: int,
) -> tuple[float, list[Step]]:
    with err.open("wb") as stderr:
        process = await anyio.open_process(command, env=env, stderr=stderr, cwd=ROOT)
    server = Server(process)
    steps: list[Step] = []
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(server.read_answers)
        await server.initialize()
        cap = await capacity(server, args.capacity_seconds, window)
        await server.drain(args.drain)
        print(f"{name}: capacity {cap:,.0f} reads/s", file=sys.stderr, flush=True)
        for factor in FACTORS:
            step = Step(f"{factor:g}x", factor * cap, server.next_id)
            calls = await upstream.calls()
            cpu = server.cpu_seconds()
            await offer(server, step, args.duration)
            await server.drain(args.drain)
            step.cpu = (server.cpu_seconds() - cpu) / args.duration
            step.upstream_calls = await upstream.calls() - calls
            step.rss_mib = server.rss_mib()
            server.step = None
            steps.append(step)
            print(step.row(name), file=sys.stderr, flush=True)
        assert process.stdin is not None
        await process.stdin.aclose()
        with anyio.move_on_after(30):
            await process.wait()
        if process.returncode is None:
            process.kill()
        tg.cancel_scope.cancel()
    return cap, steps


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        root = Path(tmp)
        command = [sys.executable, str(ROOT / "benchmarks" / "overload.py"), "--serve-upstream", str(root / "homes")]
        mock_err = (root / "upstream.stderr").open("wb")  # a client closing a connection early is noise there
        mock = await anyio.open_process(command, cwd=ROOT, stderr=mock_err)
        async with mock:
            upstream = Upstream(mock)
            hello = await upstream.hello()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_"))}
            env.update(
                CODEX_HOME=hello["home"],
                CODEX_LIMITS_HOME=str(root / "data"),
                CODEX_REFRESH_TOKEN_URL_OVERRIDE=hello["base_url"] + "/oauth/token",
            )
            load_before = loadavg()
            servers = [("codex-limits", [sys.executable, "-m", "app_server"], args.window)]
            if args.reference:
                servers.append(("codex app-server 0.171.0", [args.reference, "app-server"], args.reference_window))
            results = []
            for name, cmd, window in servers:
                err = root / f"{name.split()[0]}.stderr"
                results.append((name, *await run_server(name, cmd, env, upstream, args, err, window)))
            load_after = loadavg()
            assert mock.stdin is not None
            await mock.stdin.aclose()
            with anyio.move_on_after(10):
                await mock.wait()
            if mock.returncode is None:
                mock.kill()
        mock_err.close()
    print(f"\n{machine()}; load average {load_before} before, {load_after} after")
    print(
        f"steps of {args.duration:g} s; capacity over {args.capacity_seconds:g} s with {args.window} reads "
        f"outstanding ({args.reference_window} for the reference)\n"
    )
    for name, cap, _ in results:
        print(f"- {name}: capacity {cap:,.0f} reads/s")
    print(
        "\n| server | step | offered/s | offered | sent | answered | goodput/s | errors | p50 ms | p99 ms "
        "| upstream calls/read | server CPU | RSS MiB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, _, steps in results:
        for step in steps:
            print(step.row(name))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step (default 10)")
    parser.add_argument("--capacity-seconds", type=float, default=6.0, help="seconds of closed loop (default 6)")
    parser.add_argument("--window", type=int, default=512, help="reads outstanding while measuring capacity")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for answers after a step")
    parser.add_argument("--reference", help="the `codex` executable to compare with (reads only)")
    parser.add_argument(
        "--reference-window",
        type=int,
        default=16,
        help="reads outstanding while measuring the reference's capacity (a burst makes it drop requests: D1)",
    )
    parser.add_argument("--serve-upstream", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve_upstream is not None:
        serve_upstream(arguments.serve_upstream)
    else:
        anyio.run(main, arguments)
