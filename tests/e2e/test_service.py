"""Listeners and the service as real processes: start-up checks and banner, SIGTERM draining, `service
start|stop|status`, the operator commands and `proxy` on a running service, and SIGKILL in the middle of an
apply followed by a restart that settles the attempt with its own key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from app_server.config import data_home as config_data_home
from app_server.rpc import wsframe
from app_server.rpc.client import ServerClosed
from app_server.rpc.wsclient import connect_tcp, running_client
from app_server.service.state import data_home, read_state, running
from protocol import ext
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.connection import READ, make_settings, signed_in
from tests.support.mock_backend import MockBackend
from tests.support.pool_world import GatedUpstream, World, make_world
from tests.support.service_process import (
    APPLY,
    CLI,
    INIT_PARAMS,
    REPO,
    SERVE,
    WAIT,
    Stderr,
    cli,
    killed_at_exit,
    on_socket,
    service,
    settings_env,
    world_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]


# -- serve --listen ---------------------------------------------------------------------------------------------


async def test_start_up_refuses_what_it_cannot_serve_safely(tmp_path: Path) -> None:
    env = settings_env(make_settings(tmp_path))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    for args, text in (
        (["--listen", "ws://0.0.0.0:0"], "refusing to listen on ws://0.0.0.0:0 without authentication"),
        (["--listen", "http://127.0.0.1:1"], "unsupported --listen 'http://127.0.0.1:1'"),
        (["--listen", "off"], "--listen off leaves nothing to serve"),
        (["--listen", "ws://127.0.0.1:0", "--ws-auth", "capability-token"], "exactly one of --ws-token-file"),
        (
            [
                "--listen",
                "ws://127.0.0.1:0",
                "--ws-auth",
                "capability-token",
                "--ws-token-file",
                str(tmp_path / "empty"),
            ],
            "is empty",
        ),
    ):
        done = await cli(args, env, SERVE)
        assert done.returncode == 2, args
        assert text in done.stderr.decode(), done.stderr.decode()


async def test_ws_listener_banner_token_and_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    with MockBackend() as backend:
        signed_in(settings, backend, delay=1.0)
        env = {**settings_env(settings), "CODEX_LIMITS_LOG": "WARNING"}
        args = ["--listen", "ws://127.0.0.1:0", "--ws-auth", "capability-token", "--ws-token-file", str(token_file)]
        process = await anyio.open_process([*SERVE, *args], env=env, cwd=REPO)
        err = Stderr()
        async with process, anyio.create_task_group() as outer, killed_at_exit(process):
            outer.start_soon(err.drain, process.stderr)
            banner = await err.banner()
            url = next(w for w in banner.split() if w.startswith("ws://"))
            host, _, port = url.removeprefix("ws://").rpartition(":")
            assert banner.startswith("codex-limits app-server (WebSockets)\n")
            assert (
                f"readyz: http://{host}:{port}/readyz" in banner and f"healthz: http://{host}:{port}/healthz" in banner
            )
            with pytest.raises(wsframe.HandshakeError, match="invalid websocket bearer token"):
                await connect_tcp(host, int(port), headers={"Authorization": "Bearer nope"})
            ws = await connect_tcp(host, int(port), headers={"Authorization": "Bearer s3cret"})
            async with running_client(ws) as client, anyio.create_task_group() as tg:
                answers: list[Any] = []

                async def read() -> None:
                    answers.append(await client.request(READ, {"excludeResetCreditDetails": True}))

                with anyio.fail_after(WAIT):
                    await client.request("initialize", INIT_PARAMS)
                    tg.start_soon(read)
                    await anyio.to_thread.run_sync(backend.wait_for_requests, 1, WAIT)
                    process.send_signal(signal.SIGTERM)  # the read is still waiting on the backend (1 s)
                    assert await process.wait() == 0
    assert answers[0]["rateLimits"]["primary"]["usedPercent"] == 42
    assert ws.close_code == 1001


# -- the service ------------------------------------------------------------------------------------------------


def test_the_service_finds_the_data_directory_as_the_configuration_does(tmp_path: Path) -> None:
    for env in ({}, {"CODEX_LIMITS_HOME": str(tmp_path)}, {"CODEX_LIMITS_HOME": "~/x"}):
        assert data_home(env) == config_data_home(env)


async def test_service_start_status_stop(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = settings_env(settings)
    before = await cli(["service", "status"], env)
    assert (before.returncode, before.stdout.decode().split("\n")[0]) == (
        3,
        f"service not running (data directory {settings.data_home})",
    )
    async with service(env) as state:
        assert state.socket == str(settings.data_home / "service.sock")
        assert state.listen == [f"unix://{settings.data_home / 'service.sock'}"]
        status = await cli(["service", "status"], env)
        assert status.returncode == 0
        assert f"pid: {state.pid}" in status.stdout.decode() and "uptime: " in status.stdout.decode()
        as_json = json.loads((await cli(["service", "status", "--json"], env)).stdout)
        assert as_json["running"] is True and as_json["pid"] == state.pid
        again = await cli(["service", "start"], env)
        assert again.stdout.decode().startswith(f"service already running: pid {state.pid}")
        second = await cli(["--listen", "unix://"], env, SERVE)  # exactly one service per data directory
        assert second.returncode == 2 and f"already running (pid {state.pid})" in second.stderr.decode()
        async with on_socket(state.socket) as client:
            with anyio.fail_after(WAIT):
                result = await client.request("accountPool/history", {})
        assert result == {"entries": []}
        stopped = await cli(["service", "stop"], env)
        assert stopped.stdout.decode().strip() == f"service stopped (pid {state.pid})"
    after = await cli(["service", "status", "--json"], env)
    assert (after.returncode, json.loads(after.stdout)) == (3, {"running": False})
    assert read_state(settings.data_home) is None and not (settings.data_home / "service.sock").exists()


async def test_service_stop_answers_the_requests_in_flight(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with MockBackend() as backend:
        signed_in(settings, backend, delay=1.0)
        env = settings_env(settings)
        async with service(env) as state, on_socket(state.socket) as client, anyio.create_task_group() as tg:
            answers: list[Any] = []

            async def read() -> None:
                answers.append(await client.request(READ, {"excludeResetCreditDetails": True}))

            tg.start_soon(read)
            with anyio.fail_after(WAIT):
                await anyio.to_thread.run_sync(backend.wait_for_requests, 1, WAIT)
            stopped = await cli(["service", "stop"], env)
            assert stopped.returncode == 0
    assert answers[0]["rateLimits"]["primary"]["usedPercent"] == 42


# -- operator commands and the proxy on the service -----------------------------------------------------------


@pytest.fixture
def world(upstream: GatedUpstream, tmp_path: Path) -> World:
    return make_world(upstream, tmp_path)


async def test_operator_commands_use_the_running_service(world: World) -> None:
    env = world_env(world)
    async with service(env, "--log-level", "INFO"):
        log = world.data_home / "service.log"
        before = log.read_text().count(": opened")
        status = await cli(["status", "--json"], env)
        assert status.returncode == 0, status.stderr.decode()
        accounts = json.loads(status.stdout)
        assert log.read_text().count(": opened") == before + 1  # it connected to the service, spawned nothing
    assert sorted(a["accountId"] for a in accounts) == sorted(world.homes)


async def test_proxy_bridges_lines_to_the_service_and_starts_it_when_needed(world: World) -> None:
    env = world_env(world)
    assert running(world.data_home) is None
    lines = [
        json.dumps({"id": 1, "method": READ}),
        json.dumps({"id": 2, "method": "initialize", "params": INIT_PARAMS}),
        "not json",
        json.dumps({"id": 3, "method": "accountPool/history", "params": {}}),
    ]
    try:
        with anyio.fail_after(WAIT):
            done = await anyio.run_process(
                [*CLI, "proxy"], input="\n".join(lines).encode() + b"\n", env=env, cwd=REPO, check=False
            )
        assert done.returncode == 0, done.stderr.decode()
        answers = [json.loads(line) for line in done.stdout.splitlines()]
        assert answers[0] == {"error": {"code": -32600, "message": "Not initialized"}, "id": 1}
        assert answers[1]["id"] == 2 and answers[1]["result"]["userAgent"].endswith("(probe; 1.0)")
        assert answers[2] == {"id": 3, "result": {"entries": []}}
        assert running(world.data_home) is not None  # the proxy started the service, which stays up
    finally:
        await cli(["service", "stop"], env)


def test_the_proxy_path_imports_only_the_standard_library() -> None:
    script = (
        "import sys\n"
        "from app_server.cli import main\n"
        "try:\n    main.main(['proxy', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'anyio', 'pydantic', 'websockets', 'httpx', 'rich'}))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('app_server', 'protocol'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=REPO, check=True, timeout=WAIT)
    heavy, ours = done.stdout.decode().splitlines()[-2:]
    assert heavy == "[]"
    assert "app_server.cli.commands" not in ours and "protocol" not in ours


# -- SIGKILL in the middle of an apply ------------------------------------------------------------------------


async def test_service_killed_mid_apply_then_restarted_settles_the_attempt_with_its_key(world: World) -> None:
    env = world_env(world)
    key = "key-killed"
    world.upstream.hold(after=True)  # upstream spends the credit; the service dies before the answer arrives
    async with service(env) as state, on_socket(state.socket) as client, anyio.create_task_group() as tg:
        closed = anyio.Event()

        async def doomed() -> None:
            with pytest.raises(ServerClosed):
                await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
            closed.set()

        tg.start_soon(doomed)
        with anyio.fail_after(WAIT):
            assert await anyio.to_thread.run_sync(world.upstream.consume_arrived.wait, WAIT)
        os.kill(state.pid, signal.SIGKILL)
        with anyio.fail_after(WAIT):
            await closed.wait()
            while running(world.data_home) is not None:  # noqa: ASYNC110 (a lock in another process)
                await anyio.sleep(0.02)
    world.upstream.release()
    assert world.upstream.available_credit_count("alice") == 1  # the killed apply did spend one
    assert [(r["idempotency_key"], r["status"]) for r in world.ledger_rows()] == [(key, "pending")]

    async with service(env) as restarted, on_socket(restarted.socket) as client:
        assert restarted.pid != state.pid
        with anyio.fail_after(WAIT):
            listed = ext.AccountPoolListResponse.model_validate(await client.request("accountPool/list", {}))
            resent = ext.AccountPoolApplyResponse.model_validate(
                await client.request(APPLY, {"accountId": "alice", "idempotencyKey": key})
            )
    alice = next(a for a in listed.accounts if a.account_id == "alice")
    assert alice.pending_apply is not None and alice.pending_apply.idempotency_key == key
    assert resent.outcome is Outcome.ALREADY_REDEEMED
    assert world.upstream.consume_keys() == [key, key]
    assert world.upstream.available_credit_count("alice") == 1  # nothing spent twice
    (row,) = world.ledger_rows()
    assert (row["status"], row["outcome"]) == ("finished", "alreadyRedeemed")
