"""stdio throughput and start-up: our server side by side with a minimal synchronous echo loop (issue #4).

One command measures, on the same workload and in the same run, interleaved:

* our app-server (`python -m app_server`), and
* `ECHO_SERVER` below: a minimal synchronous `json.loads` / `json.dumps` loop, the practical limit
  for a Python stdio JSON-RPC server,

and prints, for each, the median and the best of K runs, and the ratios ours / echo:

(a) spawn -> `initialize` answer (and the child's CPU time until then),
(b) N pipelined cheap requests (`account/rateLimitResetCredit/consume` with an empty
    `idempotencyKey`, which we answer with -32600 before any I/O): time from the first request
    byte written to the last answer read, as messages per second, and the child's CPU time per
    message. Every answer is checked byte for byte and every id must come back exactly once.
    A writer and a reader thread keep both pipes moving, so nothing can deadlock.
(c) peak RSS of the child (VmHWM from /proc/<pid>/status once all answers are in),

plus end of input -> exit. It then checks the targets: (b) at least 0.8x the echo loop with 100%
answered, (a) under 150 ms; the exit status is 0 only when all hold.

Usage (from the repository root):

    .venv/bin/python benchmarks/stdio_throughput.py [--requests N] [--runs K] [--profile]

`--profile` also runs our server once under `python -m cProfile` on the throughput workload and
prints the top functions by cumulative and by own time. `--server-root DIR` measures another copy
of `app_server/` and `protocol/` (a scratch copy holding a proposed change) against the same echo.

Children get CODEX_HOME and CODEX_LIMITS_HOME pointing at fresh empty directories and no other
CODEX* variables, so nothing real is read or touched; nothing is sent to the network. By default
they run with compiled bytecode in a private cache (`--bytecode`), as an installed package would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent

INIT_ID: Final = 0
INIT_LINE: Final = (
    b'{"id":0,"method":"initialize","params":{"clientInfo":{"name":"bench","title":null,"version":"1.0"}}}\n'
)
CONSUME_LINE: Final = (
    b'{"id":%d,"method":"account/rateLimitResetCredit/consume","params":{"idempotencyKey":"","creditId":null}}\n'
)
EXPECTED_ANSWER: Final = b'{"error":{"code":-32600,"message":"idempotencyKey must not be empty"},"id":%d}'

READ_CHUNK: Final = 1 << 16
STARTUP_TARGET_MS: Final = 150.0
THROUGHPUT_TARGET_RATIO: Final = 0.8
IDLE_THRESHOLD: Final = 0.8

# The practical limit: read what the pipe holds, answer every complete line with json.loads /
# json.dumps (compact, raw UTF-8, same member order as ours), and write the answers of one input
# chunk with one write. It answers `initialize` with the same result shape. No asyncio, no threads,
# no validation beyond what the answer needs.
ECHO_SERVER: Final = r"""
import json, os, sys

ERROR = {"code": -32600, "message": "idempotencyKey must not be empty"}
HOME = os.environ.get("CODEX_HOME", "")


def answer(line):
    msg = json.loads(line)
    rid = msg["id"]
    params = msg["params"]
    if msg["method"] == "initialize":
        info = params["clientInfo"]
        out = {
            "id": rid,
            "result": {
                "userAgent": "%s/0.0.0 (echo) xterm (%s; %s)" % (info["name"], info["name"], info["version"]),
                "codexHome": HOME,
                "platformFamily": "unix",
                "platformOs": "linux",
            },
        }
    elif params["idempotencyKey"] == "":
        out = {"error": ERROR, "id": rid}
    else:
        out = {"error": {"code": -32603, "message": "not implemented"}, "id": rid}
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def main():
    out = sys.stdout.buffer
    rest = b""
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        answers = [answer(line) for line in lines if line.strip()]
        if answers:
            answers.append(b"")
            out.write(b"\n".join(answers))
            out.flush()
    if rest.strip():
        out.write(answer(rest) + b"\n")
        out.flush()


main()
"""


class BenchError(Exception):
    """A run that could not be measured (the child died, hung, or answered wrongly at start-up)."""


@dataclass(frozen=True)
class Target:
    name: str
    command: list[str]
    cwd: Path = ROOT
    pycache: Path | None = None


@dataclass
class RunResult:
    startup_ms: float
    startup_cpu_ms: float
    elapsed_s: float
    burst_cpu_ms: float
    answered: int
    problems: list[str]
    peak_rss_kib: int
    cpu_s: float
    exit_ms: float
    returncode: int
    stderr: str = ""

    def rate(self, requests: int) -> float:
        return requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Summary:
    target: str
    runs: list[RunResult] = field(default_factory=list)

    def median(self, metric: Callable[[RunResult], float]) -> float:
        return statistics.median(metric(run) for run in self.runs)

    def best(self, metric: Callable[[RunResult], float], higher_is_better: bool) -> float:
        values = [metric(run) for run in self.runs]
        return max(values) if higher_is_better else min(values)


def _cpu_idle_fraction(interval: float = 0.5) -> float:
    """Share of all CPUs idle over `interval` (from /proc/stat); 1.0 where unknown."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 1.0
    return (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0


def wait_for_idle(limit: float, threshold: float = IDLE_THRESHOLD) -> bool:
    """Wait up to `limit` seconds for the machine to be mostly idle; False if it never was."""
    deadline = time.perf_counter() + limit
    while True:
        if _cpu_idle_fraction() >= threshold:
            return True
        if time.perf_counter() >= deadline:
            return False


def child_env(home: Path, pycache: Path | None) -> dict[str, str]:
    """The caller's environment minus every CODEX* variable, with both homes in an empty temp dir.

    With `pycache`, bytecode is read from and written to that private tree (PYTHONPYCACHEPREFIX), as
    an installed package would have it, whatever PYTHONDONTWRITEBYTECODE says; nothing is written
    into the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX") and not k.startswith("PYTHONPROFILE")}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    codex_home = home / "codex"
    limits_home = home / "limits"
    codex_home.mkdir(exist_ok=True)
    limits_home.mkdir(exist_ok=True)
    env["CODEX_HOME"] = str(codex_home)
    env["CODEX_LIMITS_HOME"] = str(limits_home)
    env["TERM"] = "xterm"
    return env


def workload(requests: int) -> bytes:
    return b"".join(CONSUME_LINE % i for i in range(1, requests + 1))


def _read_init_answer(out_fd: int, deadline: float) -> tuple[float, bytes]:
    """Read until the answer to `initialize` (id 0); returns when it arrived and the bytes after it."""
    buf = bytearray()
    while True:
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf = bytearray(rest)
            message = json.loads(line)
            if isinstance(message, dict) and message.get("id") == INIT_ID:
                if "result" not in message:
                    raise BenchError(f"initialize failed: {line[:300]!r}")
                return time.perf_counter(), bytes(buf)
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise BenchError("no initialize answer before the deadline")
        ready, _, _ = select.select([out_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(out_fd, READ_CHUNK)
        if not chunk:
            raise BenchError("server closed stdout before answering initialize")
        buf += chunk


def _wait_child(pid: int, deadline: float) -> tuple[int, Any] | None:
    """wait4 with a deadline: (exit status, rusage of that child), or None when it is still running."""
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return status, usage
        if time.perf_counter() >= deadline:
            return None
        time.sleep(0.0005)


def _vm_hwm_kib(pid: int) -> int | None:
    """The child's peak RSS so far. Read while it is alive: after exec the counter is its own,
    whereas `ru_maxrss` also counts the parent's pages the child held between fork and exec."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _cpu_ms(pid: int) -> float:
    """CPU time the child has used so far, all threads, from the scheduler's nanosecond counters.

    Less sensitive than wall time to other load on the machine; 0.0 where /proc is unavailable."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as stat:
                total += int(stat.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return total / 1e6


def check_answers(data: bytes, requests: int) -> tuple[int, list[str]]:
    """Every id 1..N answered exactly once with the expected bytes.

    Returns the number of ids that got the expected answer, and what was wrong.
    """
    problems: list[str] = []
    seen: Counter[int] = Counter()
    correct: set[int] = set()
    wrong = 0
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            problems.append(f"not JSON: {line[:120]!r}")
            continue
        if not isinstance(message, dict) or "id" not in message:
            continue  # a notification: allowed, not an answer
        rid = message["id"]
        if type(rid) is not int or not 1 <= rid <= requests:
            problems.append(f"unexpected id: {line[:120]!r}")
            continue
        seen[rid] += 1
        if line == EXPECTED_ANSWER % rid:
            correct.add(rid)
        else:
            wrong += 1
            if wrong <= 3:
                problems.append(f"unexpected answer: {line[:160]!r}")
    duplicated = sum(1 for count in seen.values() if count > 1)
    missing = requests - len(seen)
    if wrong > 3:
        problems.append(f"... {wrong} unexpected answers in all")
    if duplicated:
        problems.append(f"{duplicated} ids answered more than once")
    if missing:
        problems.append(f"{missing} ids never answered")
    return len(correct), problems


def run_once(target: Target, payload: bytes, requests: int, *, timeout: float = 120.0) -> RunResult:
    """Spawn, initialize, pipe N requests, read N answers, close stdin, reap; all timed."""
    with tempfile.TemporaryDirectory(prefix="bench-home-") as home, tempfile.TemporaryFile() as errfile:
        env = child_env(Path(home), target.pycache)
        deadline = time.perf_counter() + timeout
        spawned = time.perf_counter()
        proc = subprocess.Popen(
            target.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile, env=env, cwd=target.cwd
        )
        assert proc.stdin is not None and proc.stdout is not None
        in_fd, out_fd = proc.stdin.fileno(), proc.stdout.fileno()
        reaped: tuple[int, Any] | None = None
        try:
            os.write(in_fd, INIT_LINE)  # far below the pipe buffer: never blocks
            try:
                initialized, leftover = _read_init_answer(out_fd, deadline)
            except (BenchError, ValueError) as exc:
                proc.kill()
                errfile.seek(0)
                stderr = errfile.read().decode("utf-8", "replace")[-2000:]
                raise BenchError(f"{target.name}: {exc}\n{stderr}") from None
            startup_cpu = _cpu_ms(proc.pid)

            chunks = [leftover]
            marks: dict[str, float] = {}
            failures: list[str] = []

            def reader() -> None:
                count = leftover.count(b"\n")
                while count < requests:
                    chunk = os.read(out_fd, READ_CHUNK)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    count += chunk.count(b"\n")
                marks["last"] = time.perf_counter()

            def writer() -> None:
                view = memoryview(payload)
                marks["first"] = time.perf_counter()
                try:
                    while view:
                        view = view[os.write(in_fd, view) :]
                except OSError as exc:
                    failures.append(f"writing requests failed: {exc}")

            threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(max(0.0, deadline - time.perf_counter()))
            if any(thread.is_alive() for thread in threads):
                failures.append("timed out waiting for the answers")
                proc.kill()
                for thread in threads:
                    thread.join(5)
            elapsed = marks.get("last", time.perf_counter()) - marks["first"]
            burst_cpu = _cpu_ms(proc.pid) - startup_cpu

            peak_kib = _vm_hwm_kib(proc.pid)
            # End of input: everything is answered, so the server should exit promptly.
            drained: list[bytes] = []
            drain = threading.Thread(target=lambda: drained.extend(iter(lambda: os.read(out_fd, READ_CHUNK), b"")))
            drain.start()
            eof = time.perf_counter()
            proc.stdin.close()
            reaped = _wait_child(proc.pid, eof + 30.0)
            exited = time.perf_counter()
            if reaped is None:
                failures.append("did not exit within 30 s of end of input")
                proc.kill()
                reaped = os.wait4(proc.pid, 0)[1:]
            drain.join(5)
            status, usage = reaped
            proc.returncode = os.waitstatus_to_exitcode(status)
            answered, problems = check_answers(b"".join(chunks) + b"".join(drained), requests)
            errfile.seek(0)
            return RunResult(
                startup_ms=(initialized - spawned) * 1000,
                startup_cpu_ms=startup_cpu,
                elapsed_s=elapsed,
                burst_cpu_ms=burst_cpu,
                answered=answered,
                problems=failures + problems,
                peak_rss_kib=peak_kib or int(usage.ru_maxrss),
                cpu_s=float(usage.ru_utime + usage.ru_stime),
                exit_ms=(exited - eof) * 1000,
                returncode=proc.returncode,
                stderr=errfile.read().decode("utf-8", "replace"),
            )
        finally:
            if reaped is None and proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


# -- reporting -------------------------------------------------------------------------------


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def print_table(ours: Summary, echo: Summary, requests: int, runs: int) -> None:
    """Medians, and the best run of each (least disturbed by other load on the machine)."""
    rows: list[tuple[str, Callable[[RunResult], float], int, bool]] = [
        ("(a) spawn -> initialize answer (ms)", lambda r: r.startup_ms, 1, False),
        ("    child CPU until then (ms)", lambda r: r.startup_cpu_ms, 1, False),
        (f"(b) {requests:,} pipelined requests (ms)", lambda r: r.elapsed_s * 1000, 1, False),
        ("    throughput (messages/s)", lambda r: r.rate(requests), 0, True),
        ("    answered (of N)", lambda r: r.answered, 0, True),
        ("    child CPU per message (us)", lambda r: r.burst_cpu_ms * 1000 / requests, 2, False),
        ("(c) peak RSS (MiB)", lambda r: r.peak_rss_kib / 1024, 1, False),
        ("child CPU, whole run (ms)", lambda r: r.cpu_s * 1000, 0, False),
        ("end of input -> exit (ms)", lambda r: r.exit_ms, 1, False),
    ]
    head = (
        f"{'':<38}{'-- median of ' + str(runs) + ' runs --':^34}   {'-- best run --':^34}\n"
        f"{'':<38}{'ours':>11}{'sync echo':>12}{'ratio':>11}   {'ours':>11}{'sync echo':>12}{'ratio':>11}"
    )
    print(head)
    print("-" * 110)
    for label, metric, digits, higher in rows:
        cells = []
        for a, b in (
            (ours.median(metric), echo.median(metric)),
            (ours.best(metric, higher), echo.best(metric, higher)),
        ):
            ratio = f"{a / b:.2f}x" if b else "-"
            cells.append(f"{_fmt(a, digits):>11}{_fmt(b, digits):>12}{ratio:>11}")
        print(f"{label:<38}{cells[0]}   {cells[1]}")


def print_verdict(ours: Summary, echo: Summary, requests: int) -> bool:
    ratio = ours.median(lambda r: r.rate(requests)) / echo.median(lambda r: r.rate(requests))
    startup = ours.median(lambda r: r.startup_ms)
    complete = all(r.answered == requests and not r.problems for r in ours.runs + echo.runs)
    checks = [
        (f"(b) throughput ratio {ratio:.2f}x >= {THROUGHPUT_TARGET_RATIO}x", ratio >= THROUGHPUT_TARGET_RATIO),
        ("(b) 100% answered, each id exactly once, exact bytes, every run", complete),
        (f"(a) start-up {startup:.1f} ms < {STARTUP_TARGET_MS:.0f} ms", startup < STARTUP_TARGET_MS),
    ]
    print()
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    return all(ok for _, ok in checks)


def describe_machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"Python {platform.python_version()} ({sys.executable}), load average {load[0]:.2f} at start"
    )


# -- profile ---------------------------------------------------------------------------------


def _short(path: str) -> str:
    for prefix in (*(p + os.sep for p in sys.path if p.endswith("site-packages")), str(ROOT) + os.sep):
        if path.startswith(prefix):
            return path[len(prefix) :]
    stdlib = os.path.dirname(os.__file__) + os.sep
    return path[len(stdlib) :] if path.startswith(stdlib) else path


def print_profile(path: Path, top: int = 25) -> None:
    stats = pstats.Stats(str(path))
    # Stats.stats: {(file, line, function): (primitive calls, calls, own time, cumulative, callers)}
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = vars(stats)["stats"]
    total = float(vars(stats)["total_tt"])
    print(f"\nprofile of our server on the throughput workload ({total:.3f} s of profiled time, main thread)")
    print("(a coroutine counts one call per resume, so event-loop and coroutine cumulative times overlap and can")
    print(" exceed the total; <frozen importlib...> frames are start-up imports)")
    rows = [
        (func if file == "~" else f"{_short(file)}:{line}({func})", calls, own, cum)
        for (file, line, func), (_, calls, own, cum, _) in table.items()
    ]
    for title, column in (("cumulative", 3), ("own (tottime)", 2)):
        print(f"\ntop {top} by {title}:")
        print(f"{'calls':>10} {'own s':>8} {'cum s':>8}  function")
        ranked = sorted(rows, key=lambda row: row[3] if column == 3 else row[2], reverse=True)
        for where, calls, own, cum in ranked[:top]:
            print(f"{calls:>10} {own:>8.3f} {cum:>8.3f}  {where}")


def run_profile(payload: bytes, requests: int, out: Path | None, server_root: Path, pycache: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        path = out or Path(tmp) / "server.prof"
        command = [sys.executable, "-m", "cProfile", "-o", str(path), "-m", "app_server"]
        result = run_once(Target("ours (cProfile)", command, server_root, pycache), payload, requests)
        print(
            f"\nprofiled run: start-up {result.startup_ms:.0f} ms, {requests:,} requests in "
            f"{result.elapsed_s * 1000:.0f} ms, answered {result.answered:,}, problems: {result.problems or 'none'}"
        )
        print_profile(path)
        if out:
            print(f"\nprofile kept in {out} (python -m pstats {out})")


# -- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="pipelined requests per run (default 10000)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per server; medians reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs per server first (default 1)")
    parser.add_argument(
        "--bytecode",
        choices=("cached", "as-is"),
        default="cached",
        help="cached (default): children use compiled bytecode, as an installed package does (a private "
        "PYTHONPYCACHEPREFIX, primed by one unmeasured start); as-is: the caller's environment unchanged "
        "(with PYTHONDONTWRITEBYTECODE=1 and no __pycache__ in the checkout, our modules compile at every start)",
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help=f"before each run, wait up to this long for the CPUs to be {IDLE_THRESHOLD * 100:.0f}%% idle "
        "(other work on a shared machine skews every figure); 0: do not wait (default 20)",
    )
    parser.add_argument("--profile", action="store_true", help="also run our server once under cProfile")
    parser.add_argument("--profile-out", type=Path, default=None, help="keep the .prof file here")
    parser.add_argument(
        "--server-root",
        type=Path,
        default=ROOT,
        help="run `python -m app_server` from this directory, e.g. a scratch copy holding a proposed change "
        "(its app_server/ and protocol/ shadow the installed ones); default: this checkout",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.runs < 1:
        parser.error("--requests and --runs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="bench-pycache-") as pycache_dir:
        pycache = Path(pycache_dir) if args.bytecode == "cached" else None
        try:
            return _run(args, pycache)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2


def _run(args: argparse.Namespace, pycache: Path | None) -> int:
    payload = workload(args.requests)
    targets = [
        Target("ours", [sys.executable, "-m", "app_server"], args.server_root.resolve(), pycache),
        Target("echo", [sys.executable, "-c", ECHO_SERVER], ROOT, pycache),
    ]
    summaries = {t.name: Summary(t.name) for t in targets}
    print(describe_machine())
    print(
        f"workload: initialize + {args.requests:,} pipelined consume lines with an empty idempotencyKey "
        f"({len(payload):,} bytes); {args.warmup} warm-up + {args.runs} measured runs per server, interleaved; "
        f"bytecode {args.bytecode}\n"
    )
    if pycache is not None:
        for target in targets:  # compile once into the private cache; not measured
            run_once(target, workload(1), 1)
    busy = 0
    for index in range(args.warmup + args.runs):
        for target in targets:
            if args.idle_wait > 0 and index >= args.warmup and not wait_for_idle(args.idle_wait):
                busy += 1
            result = run_once(target, payload, args.requests)
            if result.problems or result.returncode != 0:
                print(f"  {target.name} run {index}: exit {result.returncode}, {'; '.join(result.problems)}")
                if result.stderr:
                    print("    stderr: " + result.stderr[-2000:].replace("\n", "\n    "))
            if index >= args.warmup:
                summaries[target.name].runs.append(result)
    print_table(summaries["ours"], summaries["echo"], args.requests, args.runs)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end", end="")
    if args.idle_wait > 0:
        print(f"; {busy} of {2 * args.runs} measured runs started with the CPUs less than {IDLE_THRESHOLD:.0%} idle")
    else:
        print()
    ok = print_verdict(summaries["ours"], summaries["echo"], args.requests)
    if args.profile:
        run_profile(payload, args.requests, args.profile_out, args.server_root.resolve(), pycache)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
