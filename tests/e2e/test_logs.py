"""The log stays bounded: identical records past a few in a row collapse into `… repeated N more times`,
the service's log file rotates at its size limit, and a service out of file descriptors pauses accept()
instead of spinning (its log stays small, and it answers again once connections close)."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import sys
from pathlib import Path

import anyio
import pytest

from app_server.logs import REPEAT_BURST, StderrHandler
from app_server.rpc.wsclient import connect_tcp, running_client
from app_server.service.state import LOG_NAME
from tests.support.connection import make_settings
from tests.support.service_process import INIT_PARAMS, WAIT, cli, on_socket, service, settings_env

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logger_to(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


# -- collapsing ---------------------------------------------------------------------------------------------------


def test_identical_records_past_a_few_collapse_into_a_count() -> None:
    out, clock = io.StringIO(), Clock()
    handler = StderrHandler(out, window=60.0, clock=clock)
    log = logger_to(handler, "tests.logs.collapse")
    for _ in range(1000):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            log.exception("socket.accept() out of system resource")
    log.warning("something else")
    log.warning("something else")
    handler.close()
    lines = out.getvalue().splitlines()
    assert out.getvalue().count("Traceback") == REPEAT_BURST
    assert [ln for ln in lines if ln.startswith(("ERROR", "WARNING"))] == [
        *["ERROR tests.logs.collapse: socket.accept() out of system resource"] * REPEAT_BURST,
        f"ERROR tests.logs.collapse: … repeated {1000 - REPEAT_BURST} more times",
        "WARNING tests.logs.collapse: something else",
        "WARNING tests.logs.collapse: something else",
    ]
    assert REPEAT_BURST < 10


def test_a_long_run_is_counted_once_per_window() -> None:
    out, clock = io.StringIO(), Clock()
    handler = StderrHandler(out, window=60.0, clock=clock)
    log = logger_to(handler, "tests.logs.window")
    for second in range(180):  # once a second for three minutes
        clock.now = float(second)
        log.error("cannot accept connections: %s", "Too many open files")
    first = "ERROR tests.logs.window: cannot accept connections: Too many open files"
    assert out.getvalue().splitlines() == [  # seconds 0-4 as they are, then 5-60, 61-120 counted
        *[first] * REPEAT_BURST,
        f"ERROR tests.logs.window: … repeated {61 - REPEAT_BURST} more times",
        "ERROR tests.logs.window: … repeated 60 more times",
    ]
    log.error("cannot accept connections: %s", "No buffer space available")  # another message: a new run
    assert out.getvalue().splitlines()[-2:] == [
        "ERROR tests.logs.window: … repeated 59 more times",
        "ERROR tests.logs.window: cannot accept connections: No buffer space available",
    ]


# -- rotation ------------------------------------------------------------------------------------------------------


def test_the_file_behind_stderr_rotates_and_stderr_follows(tmp_path: Path) -> None:
    path = tmp_path / "service.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stream = os.fdopen(fd, "w", encoding="utf-8")
    with stream:
        handler = StderrHandler(stream, rotate=path, max_bytes=4096)
        log = logger_to(handler, "tests.logs.rotate")
        for n in range(200):
            log.info("line %d %s", n, "x" * 80)
        stream.write("written without logging\n")
        stream.flush()
        assert os.path.samestat(os.fstat(fd), os.stat(path))  # the descriptor follows the new file
    old = (tmp_path / "service.log.1").read_text()
    new = path.read_text()
    assert path.stat().st_size < 4096 + 200 and len(old) < 4096 + 200
    assert new.endswith("line 199 " + "x" * 80 + "\nwritten without logging\n")
    assert "line 198" in new or "line 198" in old
    assert oct((tmp_path / "service.log").stat().st_mode & 0o777) == oct(0o600)


async def test_the_service_log_rotates_at_its_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = {**settings_env(settings), "CODEX_LIMITS_LOG": "INFO", "CODEX_LIMITS_LOG_MAX_BYTES": "8192"}
    log_path = settings.data_home / LOG_NAME
    async with service(env) as state:
        for _ in range(100):  # each connection logs two lines of its own ("opened", "closed"); each is answered
            async with on_socket(state.socket):
                pass
    rotated = log_path.with_name(LOG_NAME + ".1")
    assert rotated.exists(), "the log never reached 8 KiB"
    assert log_path.stat().st_size < 8192 + 4096 and rotated.stat().st_size < 8192 + 4096
    assert "stopping" in log_path.read_text() or "stopping" in rotated.read_text()


# -- out of file descriptors ---------------------------------------------------------------------------------------

LIMIT = 128
"""The service's RLIMIT_NOFILE in the test below: a few dozen connections exhaust it."""


def limited(limit: int) -> list[str]:
    """The CLI run with RLIMIT_NOFILE lowered to `limit` (the service it starts inherits the limit)."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        "from app_server.cli.main import main\n"
        "main(sys.argv[1:])\n"
    )
    return [sys.executable, "-c", code]


async def log_says(path: Path, text: bytes) -> None:
    """Return once `text` is in the file at `path` (written by another process: polled)."""
    with anyio.fail_after(WAIT):
        while True:
            if text in await anyio.Path(path).read_bytes():
                return
            await anyio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_out_of_file_descriptors_the_log_stays_small_and_the_service_recovers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = {**settings_env(settings), "CODEX_LIMITS_LOG": "WARNING"}
    port = free_port()
    log_path = settings.data_home / LOG_NAME
    listen = ["--listen", f"ws://127.0.0.1:{port}", "--ws-auth", "none"]
    started = await cli(["service", "start", *listen], env, limited(LIMIT))
    assert started.returncode == 0, started.stderr.decode()
    try:
        idle: list[socket.socket] = []
        try:
            for _ in range(LIMIT * 2):  # past the limit: accept() fails while these wait in the backlog
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                idle.append(sock)
            await log_says(log_path, b"cannot accept connections")
            # Held for a few retries (asyncio's pause is 1 s): the old accept loop wrote thousands of tracebacks here.
            await anyio.sleep(3)
        finally:
            for sock in idle:
                sock.close()
        with anyio.fail_after(WAIT):  # every idle connection closed: the service answers a new client
            while True:
                try:
                    ws = await connect_tcp("127.0.0.1", port)
                    break
                except OSError:
                    await anyio.sleep(0.1)
            async with running_client(ws) as client:
                answer = await client.request("initialize", INIT_PARAMS)
            assert "userAgent" in answer
    finally:
        stopped = await cli(["service", "stop"], env)
    assert stopped.returncode == 0, stopped.stderr.decode()
    text = log_path.read_text()
    assert len(text) < 16 * 1024, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    # One failed accept() a second, not one per waiting connection per loop tick (2,000 tracebacks in 5 s before).
    failures = text.count("cannot accept connections: Too many open files")
    failures += sum(int(n) for n in re.findall(r"… repeated (\d+) more times?", text))
    assert 1 <= failures <= 60, text[-2000:]
