"""Shutdown whatever upstream does: a real server process, an upstream that accepts and never answers,
thousands of requests read and waiting, then SIGTERM or end of input. Every request is answered and the
process exits 0. Nothing here measures time: the deadlines are hang guards only."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from app_server.rpc.dispatcher import SHUTDOWN_MESSAGE
from tests.e2e.test_subprocess import INIT, child, server_env
from tests.support import transcripts
from tests.support.connection import CONSUME, READ, make_settings

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]

GUARD = 120.0
"""Hang guard only: with the usage timeout at 600 s, a server that waits for upstream never gets under it."""
READS = 1200
CONSUMES = 24

# The server with a short grace (the real default is 10 s): the grace's length is not what is tested.
SERVER = r"""
import anyio, functools
from app_server import server
from app_server.config import Settings
server.setup_logging()
anyio.run(functools.partial(server.serve_stdio, Settings.from_env(), shutdown_grace=1.0))
"""


class DeadUpstream:
    """Accepts connections on 127.0.0.1 and never reads or answers a byte: calls hang, they are not refused."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted.append(conn)
            self.connected.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._listener.close()
        for conn in self.accepted:
            conn.close()


@contextmanager
def dead_upstream() -> Iterator[DeadUpstream]:
    upstream = DeadUpstream()
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


def requests() -> list[dict[str, Any]]:
    """Reads of every shape, and consumes (each must be answered with its outcome unknown)."""
    out: list[dict[str, Any]] = []
    for i in range(READS):
        params = {"excludeResetCreditDetails": bool(i % 2)}
        out.append({"id": i + 1, "method": READ, "params": params})
        if i % (READS // CONSUMES) == 0:
            out.append({"id": f"c{i}", "method": CONSUME, "params": {"idempotencyKey": f"k{i}"}})
    return out


async def run_until_stopped(tmp_path: Path, stop: str) -> None:
    settings = make_settings(tmp_path)
    with dead_upstream() as upstream:
        transcripts.load("61_stdin_eof_with_requests_in_flight").write_codex_home(settings.codex_home, upstream.port)
        env = server_env(settings, CODEX_LIMITS_USAGE_TIMEOUT="600", CODEX_LIMITS_CONSUME_TIMEOUT="600")
        env["CODEX_LIMITS_DETAILS_TIMEOUT"] = "600"
        sent = requests()
        async with child(env, [sys.executable, "-c", SERVER]) as proc:
            await proc.write(INIT, *sent, {"id": "sync", "method": "nope/x"})
            with anyio.fail_after(GUARD):
                # Inline answers are written in input order: once this one is out, every line before it was read.
                await proc.out.wait_for("sync")
                await anyio.to_thread.run_sync(upstream.connected.wait)
            if stop == "SIGTERM":
                proc.process.send_signal(signal.SIGTERM)
            else:
                await proc.close_stdin()
            with anyio.fail_after(GUARD):
                assert await proc.process.wait() == 0
        answers = {a["id"]: a for a in map(json.loads, proc.out.lines())}
    assert sorted(map(str, answers)) == sorted(str(r["id"]) for r in [INIT, *sent, {"id": "sync"}])
    for request in sent:
        answer = answers[request["id"]]
        assert answer["error"]["code"] == -32603, answer
        if request["method"] == CONSUME:  # never "failed": its outcome is unknown
            assert answer["error"]["message"] == SHUTDOWN_MESSAGE
    assert b"Traceback" not in proc.err


async def test_sigterm_with_upstream_dead_and_thousands_waiting_answers_all_and_exits(tmp_path: Path) -> None:
    await run_until_stopped(tmp_path, "SIGTERM")


async def test_end_of_input_with_upstream_dead_and_thousands_waiting_answers_all_and_exits(tmp_path: Path) -> None:
    await run_until_stopped(tmp_path, "EOF")


async def test_end_of_input_behind_more_than_the_server_admits_still_ends_it_within_the_grace(tmp_path: Path) -> None:
    """The client closes stdin behind 3,500 reads while upstream hangs: far more than run (512) and wait
    (1,024). The input thread reads ahead to the end, the grace starts there, and the reads still unread
    when it is over are answered with the shutdown error without being run."""
    settings = make_settings(tmp_path)
    with dead_upstream() as upstream:
        transcripts.load("61_stdin_eof_with_requests_in_flight").write_codex_home(settings.codex_home, upstream.port)
        env = server_env(settings, CODEX_LIMITS_USAGE_TIMEOUT="600")
        sent = [{"id": i, "method": READ, "params": {"excludeResetCreditDetails": True}} for i in range(1, 3501)]
        async with child(env, [sys.executable, "-c", SERVER]) as proc:
            with anyio.fail_after(GUARD):
                await proc.write(INIT, *sent)
                await proc.out.wait_for(0)
                await anyio.to_thread.run_sync(upstream.connected.wait)
            await proc.close_stdin()
            with anyio.fail_after(GUARD):
                assert await proc.process.wait() == 0
        answers = [json.loads(line) for line in proc.out.lines()]
    assert sorted(a["id"] for a in answers) == list(range(3501))
    assert {a["error"]["message"] for a in answers[1:]} == {SHUTDOWN_MESSAGE}
    assert b"Traceback" not in proc.err
