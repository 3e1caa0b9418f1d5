"""A shared store that cannot be used, through the real server: an unreachable server, a malformed URL and
a schema newer than the code each answer `accountPool/list` with a clear error within seconds, the server
keeps serving, and the password appears nowhere on its stdout or stderr (issue #14)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import anyio
import psycopg
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from app_server.config import DATABASE_URL_ENV
from app_server.rpc.client import server_command
from app_server.store.migrations_pg import LATEST
from app_server.store.postgres import PostgresStore
from protocol.jsonrpc import INTERNAL_ERROR
from tests.support.pool_world import World
from tests.support.postgres import PostgresCluster, free_port
from tests.support.store_backends import POSTGRES_ONLY

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess, POSTGRES_ONLY]

WAIT = 30.0
SECRET = "pw-never-shown-7f3a"


async def newer_schema_url(world: World) -> str:
    assert world.backend.url is not None
    store = await PostgresStore.open(world.backend.url)
    await store.aclose()
    with psycopg.connect(world.backend.url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, 'from the future')", (LATEST + 1,))
    return world.backend.url


async def converse(env: dict[str, str], requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bytes, bytes]:
    """Send `requests` one at a time to a fresh server, each answered before the next; then end its input.
    Returns the answers, and everything the server wrote on stdout and stderr."""
    answers: list[dict[str, Any]] = []
    stdout = b""
    process = await anyio.open_process(server_command(), env=env, stderr=subprocess.PIPE)
    async with process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(WAIT):
            for request in requests:
                await process.stdin.send(json.dumps(request).encode() + b"\n")
                if "id" not in request:
                    continue
                while True:
                    line = await reader.receive_until(b"\n", 1 << 20)
                    stdout += line + b"\n"
                    message = json.loads(line)
                    if message.get("id") == request["id"]:
                        answers.append(message)
                        break
            await process.stdin.aclose()
            while True:
                try:
                    stdout += await reader.receive()
                except anyio.EndOfStream:
                    break
            stderr = b""
            async for chunk in process.stderr:
                stderr += chunk
            assert await process.wait() == 0
    return answers, stdout, stderr


@pytest.mark.parametrize("case", ["unreachable", "malformed", "newer schema"])
async def test_an_unusable_database_is_a_clear_error_and_the_server_keeps_serving(
    world: World, postgres_cluster: PostgresCluster, case: str
) -> None:
    port = free_port()
    if case == "unreachable":
        url = f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres"
        expected = f"cannot reach PostgreSQL at 127.0.0.1:{port}: "
    elif case == "malformed":
        url = f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/postgres"
        expected = "the PostgreSQL URL is malformed"
    else:
        url = await newer_schema_url(world)
        expected = f"the database schema is version {LATEST + 1}, newer than this codex-limits ({LATEST})"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_"))}
    env.update(
        HOME=str(world.root / "home"),
        CODEX_HOME=str(world.codex_home),
        CODEX_LIMITS_HOME=str(world.data_home),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=world.upstream.refresh_url,
        CODEX_LIMITS_LOG="DEBUG",
        **{DATABASE_URL_ENV: url},
    )
    init = {"clientInfo": {"name": "errors", "title": None, "version": "1"}}
    requests: list[dict[str, Any]] = [
        {"id": 1, "method": "initialize", "params": init},
        {"method": "initialized"},
        {"id": 2, "method": "accountPool/list", "params": {}},
        {"id": 3, "method": "accountPool/list", "params": {}},  # still serving, and still clear
        {"id": 4, "method": "accountPool/history", "params": {}},
    ]
    started = time.monotonic()
    answers, stdout, stderr = await converse(env, requests)
    elapsed = time.monotonic() - started

    initialized, listed, listed_again, history = answers
    assert "result" in initialized
    for answer in (listed, listed_again, history):
        assert answer["error"]["code"] == INTERNAL_ERROR, answer
        assert answer["error"]["message"].startswith(expected), answer
    assert elapsed < WAIT  # within the connect timeout (a few seconds), not a hang
    password = SECRET if case != "newer schema" else postgres_cluster.password
    assert password.encode() not in stdout
    assert password.encode() not in stderr
    assert world.upstream.consumes() == []
