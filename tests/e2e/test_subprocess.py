"""The real server as a child process: real pipes, real files, real signals, the real fd 1 redirection."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from app_server.config import Settings
from app_server.rpc.framing import READ_CHUNK
from tests.support.connection import (
    CONSUME,
    READ,
    Output,
    check_wire_line,
    encode,
    make_settings,
    signed_in,
)
from tests.support.corpus import CASES, FINAL, FINAL_ANSWER, NO_AUTH_READ, PREAMBLE, error, unknown_method
from tests.support.mock_backend import MockBackend

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]

WAIT = 20.0
REPO = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-m", "app_server"]
INIT = {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "probe", "title": None, "version": "1.0"}}}
DISPATCH_WARNING = b" WARNING app_server.rpc.dispatcher: "


def server_env(settings: Settings, backend: MockBackend | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CODEX_API_KEY", "CODEX_LIMITS_LOG")}
    base = backend.base_url if backend is not None else "http://127.0.0.1:9"  # nothing listens on port 9
    env.update(
        TERM="xterm",
        CODEX_HOME=str(settings.codex_home),
        CODEX_LIMITS_HOME=str(settings.data_home),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=f"{base}/oauth/token",
        **extra,
    )
    return env


@dataclass
class Child:
    process: anyio.abc.Process
    out: Output = field(default_factory=Output)
    err: bytearray = field(default_factory=bytearray)

    async def write(self, *messages: bytes | str | dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(b"".join(encode(m) + b"\n" for m in messages))

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def exit_code(self) -> int:
        with anyio.fail_after(WAIT):
            return await self.process.wait()


async def _collect(stream: anyio.abc.ByteReceiveStream | None, into: Any, done: anyio.Event) -> None:
    assert stream is not None
    try:
        async for chunk in stream:
            await into(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        done.set()


@asynccontextmanager
async def child(
    env: dict[str, str], command: Sequence[str] = SERVE, *, read_stdout: bool = True
) -> AsyncIterator[Child]:
    """The server with all three pipes; stderr is always drained (a full stderr pipe would block it)."""
    process = await anyio.open_process(list(command), env=env, cwd=REPO)
    proc = Child(process)

    async def add_err(chunk: bytes) -> None:
        proc.err.extend(chunk)

    collected = [anyio.Event(), anyio.Event()]
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(_collect, process.stderr, add_err, collected[0])
        if read_stdout:
            tg.start_soon(_collect, process.stdout, proc.out.send, collected[1])
        else:
            collected[1].set()
        try:
            yield proc
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.fail_after(WAIT):
                await process.wait()
                for done in collected:  # every byte the server wrote, up to the end of its pipes
                    await done.wait()


def assert_quiet(err: bytes | bytearray) -> None:
    assert b"Traceback" not in err and b"Exception" not in err and b"ERROR" not in err, err.decode(errors="replace")


# -- framing ------------------------------------------------------------------------------------------------------


async def test_non_ascii_both_ways_and_crlf(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with child(server_env(settings)) as proc:
        await proc.write(
            '{"id":"é","method":"initialize","params":{"clientInfo":{"name":"clié","title":"ü","version":"1"}}}',
            f'{{"id":"é中😀","method":"{READ}"}}',
            f'{{"id":"\\u00e9\\u4e2d\\ud83d\\ude00!","method":"{READ}"}}\r',
            '{"id":"€","method":"méthode/ü"}',
        )
        await proc.close_stdin()
        assert await proc.exit_code() == 0
    lines = proc.out.lines()
    assert len(lines) == 4 and all(check_wire_line(line) for line in lines)
    assert lines[0].startswith('{"id":"é","result":{"userAgent":"codex-limits/'.encode())
    assert " xterm (clié; 1)".encode() in lines[0]
    assert sorted(lines[1:]) == sorted(
        [
            error('"é中😀"', NO_AUTH_READ),
            error('"é中😀!"', NO_AUTH_READ),
            error('"€"', unknown_method("méthode/ü")),
        ]
    )
    assert b"\\u" not in proc.out.data and proc.out.data.endswith(b"}\n") and b"\r" not in proc.out.data
    assert proc.err == b""


async def test_10000_requests_from_a_regular_file_are_all_answered(tmp_path: Path) -> None:
    """`server < requests.jsonl`: stdin is a file, not a pipe; every request answered, then exit 0."""
    settings = make_settings(tmp_path)
    path = tmp_path / "10000_requests.jsonl"
    with path.open("wb") as f:
        f.write(encode(INIT) + b"\n")
        for i in range(1, 10_000):
            kind = i % 3
            if kind == 0:
                f.write(encode({"id": i, "method": READ}) + b"\n")
            elif kind == 1:
                f.write(encode({"id": i, "method": "nope/x"}) + b"\n")
            else:
                f.write(encode({"id": i, "method": CONSUME, "params": {"idempotencyKey": ""}}) + b"\n")
            f.write(b'{"method":"initialized"}\n')
    with path.open("rb") as stdin, anyio.fail_after(WAIT):
        done = await anyio.run_process(SERVE, stdin=stdin, env=server_env(settings), cwd=REPO, check=False)
    assert done.returncode == 0
    lines = done.stdout.split(b"\n")
    assert lines.pop() == b""
    assert Counter(json.loads(line)["id"] for line in lines) == Counter(range(10_000))
    assert done.stderr == b""


async def test_a_slow_reader_of_large_answers_does_not_deadlock(tmp_path: Path) -> None:
    """The client writes 3 MiB of requests whose answers are 1 MiB each before it reads anything, then
    reads 4 KiB at a time. A server that stopped reading stdin while blocked on stdout would deadlock."""
    settings = make_settings(tmp_path)
    ids = [c * (1024 * 1024) for c in "abc"]
    async with child(server_env(settings), read_stdout=False) as proc:
        with anyio.fail_after(WAIT):
            await proc.write(*({"id": i, "method": "nope/x"} for i in ids))
            await proc.close_stdin()
            assert proc.process.stdout is not None
            while not proc.out.data.endswith(b"\n") or proc.out.count() < 3:
                await proc.out.send(await proc.process.stdout.receive(4096))
                await anyio.lowlevel.checkpoint()
        assert await proc.exit_code() == 0
    answers = [json.loads(line) for line in proc.out.lines()]
    assert [a["id"] for a in answers] == ids
    assert all(a["error"]["message"].startswith("Invalid request: unknown variant `nope/x`") for a in answers)


# -- stdout carries the protocol only ----------------------------------------------------------------------------

NOISY_SERVER = r"""
import os, subprocess, sys
import anyio
from app_server import server
from app_server.config import Settings
from app_server.handlers import account

initialize, read = account.initialize, account.read_rate_limits

def noisy_initialize(ctx, params):
    print("PRINTED-BY-INITIALIZE")
    return initialize(ctx, params)

async def noisy_read(ctx, params):
    print("PRINTED-BY-READ", end="")
    sys.stdout.write("WRITTEN-TO-SYS-STDOUT\n")
    sys.__stdout__.write("WRITTEN-TO-THE-ORIGINAL-STDOUT\n")
    sys.__stdout__.flush()
    os.write(1, b"WRITTEN-TO-FD-1\n")
    subprocess.run([sys.executable, "-c", "print('PRINTED-BY-A-CHILD-PROCESS')"], check=True)
    return await read(ctx, params)

account.initialize, account.read_rate_limits = noisy_initialize, noisy_read
server.setup_logging()
anyio.run(server.serve_stdio, Settings.from_env())
"""


async def test_stdout_carries_only_json_lines_even_when_handlers_print(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with child(server_env(settings), [sys.executable, "-c", NOISY_SERVER]) as proc:
        await proc.write(INIT, {"id": 1, "method": READ}, {"id": 2, "method": READ})
        await proc.close_stdin()
        assert await proc.exit_code() == 0
    lines = proc.out.lines()
    assert [check_wire_line(line)["id"] for line in lines] == [0, 1, 2]
    assert lines[1:] == [error("1", NO_AUTH_READ), error("2", NO_AUTH_READ)]
    for marker in (
        b"PRINTED-BY-INITIALIZE\n",
        b"PRINTED-BY-READ",
        b"WRITTEN-TO-SYS-STDOUT\n",
        b"WRITTEN-TO-THE-ORIGINAL-STDOUT\n",
        b"WRITTEN-TO-FD-1\n",
        b"PRINTED-BY-A-CHILD-PROCESS\n",
    ):
        assert proc.err.count(marker) == (1 if b"INITIALIZE" in marker else 2)


# -- end of input, signals, a client that goes away ----------------------------------------------------------------

READ_DETAILS_OFF = {"method": READ, "params": {"excludeResetCreditDetails": True}}


async def test_end_of_input_with_requests_in_flight_answers_them_first(tmp_path: Path) -> None:
    """D2 (transcript 61): upstream exits without the two answers; we write them, then exit 0."""
    settings = make_settings(tmp_path)
    with MockBackend() as backend:
        signed_in(settings, backend, delay=1.0)
        async with child(server_env(settings, backend)) as proc:
            await proc.write(
                INIT,
                {"id": 1, **READ_DETAILS_OFF},
                {"id": 2, "method": CONSUME, "params": {"idempotencyKey": "k"}},
                {"id": 3, "method": "nope/x"},
            )
            with anyio.fail_after(WAIT):
                await anyio.to_thread.run_sync(backend.wait_for_requests, 2, WAIT)
            await proc.close_stdin()  # both backend calls are still running (1 s each)
            assert await proc.exit_code() == 0
        calls = backend.recorded()
    answers = {a["id"]: a for a in map(json.loads, proc.out.lines())}
    assert sorted(answers) == [0, 1, 2, 3]
    assert answers[1]["result"]["rateLimits"]["primary"]["usedPercent"] == 42
    assert answers[2] == {"id": 2, "result": {"outcome": "reset"}}
    assert [c.path for c in calls].count("/api/codex/rate-limit-reset-credits/consume") == 1
    assert_quiet(proc.err)


async def test_sigterm_with_requests_in_flight_answers_them_then_exits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with MockBackend() as backend:
        signed_in(settings, backend, delay=1.0)
        async with child(server_env(settings, backend, CODEX_LIMITS_LOG="INFO")) as proc:
            await proc.write(
                INIT, {"id": 1, **READ_DETAILS_OFF}, {"id": 2, "method": CONSUME, "params": {"idempotencyKey": "k"}}
            )
            with anyio.fail_after(WAIT):
                await anyio.to_thread.run_sync(backend.wait_for_requests, 2, WAIT)
            proc.process.send_signal(signal.SIGTERM)  # stdin stays open
            assert await proc.exit_code() == 0
    answers = {a["id"]: a for a in map(json.loads, proc.out.lines())}
    assert sorted(answers) == [0, 1, 2]
    assert answers[1]["result"]["rateLimits"]["limitId"] == "codex"
    assert answers[2] == {"id": 2, "result": {"outcome": "reset"}}
    assert b"SIGTERM: finishing in-flight requests, then exiting" in proc.err
    assert_quiet(proc.err)


async def test_sigterm_while_the_client_keeps_writing_exits_cleanly(tmp_path: Path) -> None:
    """The input thread is mid-hand-over when reading stops: no traceback, and no gap in the answers."""
    settings = make_settings(tmp_path)
    async with child(server_env(settings)) as proc:
        sent = 0

        async def flood() -> None:
            nonlocal sent
            try:
                while True:
                    batch = [{"id": sent + i, "method": "nope/x"} for i in range(500)]
                    await proc.write(*batch)
                    sent += len(batch)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            await proc.out.wait_lines(2000)
            proc.process.send_signal(signal.SIGTERM)
            assert await proc.exit_code() == 0
    ids = [json.loads(line)["id"] for line in proc.out.lines()]
    assert ids == list(range(len(ids))) and 2000 <= len(ids) <= sent + 500  # the last batch may be half sent
    assert proc.err == b""


async def test_a_client_that_closed_stdout_ends_the_server_quietly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    read_fd, write_fd = os.pipe()
    try:
        process = await anyio.open_process(SERVE, env=server_env(settings), cwd=REPO, stdout=write_fd)
    finally:
        os.close(write_fd)
    os.close(read_fd)  # the client is gone before the server writes anything
    async with process:
        assert process.stdin is not None and process.stderr is not None
        await process.stdin.send(b"".join(encode({"id": i, "method": "nope/x"}) + b"\n" for i in range(100)))
        with anyio.fail_after(WAIT):
            assert await process.wait() == 0  # stdin is still open: the broken stdout alone ends it
            err = b"".join([chunk async for chunk in process.stderr])
    assert err == b""


STUCK_SERVER = r"""
import anyio, functools
from app_server import server
from app_server.config import Settings
server.setup_logging()
anyio.run(functools.partial(server.serve_stdio, Settings.from_env(), shutdown_grace=0.3))
"""


async def test_sigterm_exits_after_the_grace_when_the_client_stopped_reading(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with child(server_env(settings), [sys.executable, "-c", STUCK_SERVER], read_stdout=False) as proc:
        await proc.write({"id": "x" * (1024 * 1024), "method": "nope/x"}, {"id": 1, "method": "nope/x"})
        assert proc.process.stdout is not None
        with anyio.fail_after(WAIT):  # the answer has started: the server is up and its signal handler too
            assert (await proc.process.stdout.receive(100)).startswith(b'{"error":{"code":-32600,')
        proc.process.send_signal(signal.SIGTERM)
        assert await proc.exit_code() == 0
    assert_quiet(proc.err)


# -- the corpus against the real binary -------------------------------------------------------------------------


async def test_the_corpus_through_real_pipes(tmp_path: Path) -> None:
    """Every corpus line through stdin; the answers, and one stderr WARNING line per logged case."""
    settings = make_settings(tmp_path)
    stream = b"".join(line + b"\n" for line in (PREAMBLE, *(case.line for case in CASES), FINAL))
    async with child(server_env(settings)) as proc:
        assert proc.process.stdin is not None
        for start in range(0, len(stream), 16 * READ_CHUNK):
            await proc.process.stdin.send(stream[start : start + 16 * READ_CHUNK])
        await proc.close_stdin()
        assert await proc.exit_code() == 0
    lines = proc.out.lines()
    expected = [case.answer for case in CASES if case.answer is not None] + [FINAL_ANSWER]
    assert Counter(lines[1:]) == Counter(expected)
    err_lines = bytes(proc.err).split(b"\n")
    assert sum(DISPATCH_WARNING in line for line in err_lines) == sum(case.logged for case in CASES)
    assert all(DISPATCH_WARNING in line for line in err_lines if line)  # nothing else, one line each
