"""Faults of the service as its clients see them, with real processes: `codex-limits service start` on the
simulated upstream (its consume held at a gate), then SIGKILL or SIGSTOP of the service.

- Killed during the consume, with an apply in flight through ws:// (a library client), unix:// (the
  `codex-limits apply` command) and `codex-limits proxy` at once: each client is told the outcome is
  unknown and which key to re-send; the proxy answers, exits 5 and says so in one line; after a restart
  re-sending each key settles it (alreadyRedeemed) with exactly one spend at upstream per account.
- Stopped (SIGSTOP): the proxy and the CLI give up within their handshake deadline with one clear line;
  a proxy owed an answer by a service stopped mid-apply answers it (outcome unknown) after its silence
  deadline.
- The dashboard survives repeated kills and restarts (some killed again at once, while the dashboard may
  be in the middle of its reconnect handshake): its event stream says it is reconnecting, its API answers
  503 meanwhile, and it shows the pool again after each restart. No traceback reaches anyone.

Seeded (`CODEX_LIMITS_FAULT_SEED`): the keys, the order the clients start in, and which restarts are
killed again at once and after how long.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from app_server.cli.exits import Exit
from app_server.pool.errors import RESEND
from app_server.rpc import lost, wsframe
from app_server.rpc.client import ServerClosed
from app_server.rpc.wsclient import connect_tcp, running_client
from app_server.service.state import running
from app_server.service.token import bearer_headers
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.connection import check_wire_line
from tests.support.dashboard import next_event
from tests.support.pool_world import GatedUpstream, World, make_world
from tests.support.service_process import (
    APPLY,
    CLI,
    INIT_PARAMS,
    PROXY,
    REPO,
    WAIT,
    Stderr,
    cli,
    gone,
    killed_at_exit,
    on_socket,
    start_service,
    wait_until,
    world_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]

SEED = int(os.environ.get("CODEX_LIMITS_FAULT_SEED", "18"))
VIA = ("ws", "unix", "proxy")
"""One account per way in, each with two saved resets and a used-up window."""
DASHBOARD_CYCLES = 20


@pytest.fixture
def world(upstream: GatedUpstream, tmp_path: Path) -> World:
    for via in VIA:
        upstream.add_account(via, via.title(), "pro", primary=(100, 3600), secondary=(40, 86_400), credit_days=[7, 14])
    return make_world(upstream, tmp_path)


def line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def one_line(err: bytes) -> str:
    """A child's stderr, which must be exactly one line and no traceback."""
    text = err.decode()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


async def consumes_held(upstream: GatedUpstream, count: int) -> None:
    await wait_until(lambda: len(upstream.consume_arrivals()) >= count)


@asynccontextmanager
async def stopped(pid: int) -> AsyncIterator[None]:
    """The service stopped with SIGSTOP, continued whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class Proxy:
    """`codex-limits proxy` with its stdin kept open, stdout and stderr read to the end."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.out = Stderr()
        self.err = Stderr()

    async def send(self, *messages: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(b"".join(line(m) for m in messages))

    async def answer(self, request_id: int) -> dict[str, Any]:
        """The answer to `request_id`, once the proxy wrote it."""
        with anyio.fail_after(WAIT):
            while True:
                for message in self.answers():
                    if message.get("id") == request_id:
                        return message
                await self.out.grown()

    def answers(self) -> list[dict[str, Any]]:
        """What the proxy wrote that answers a request (notifications left out), in order."""
        messages = [json.loads(text) for text in self.out.lines()]
        assert all("jsonrpc" not in m for m in messages)
        return [m for m in messages if "id" in m]


@asynccontextmanager
async def proxy(env: dict[str, str]) -> AsyncIterator[Proxy]:
    process = await anyio.open_process(PROXY, env=env, cwd=REPO)
    running_proxy = Proxy(process)
    async with process, anyio.create_task_group() as tg, killed_at_exit(process):
        tg.start_soon(running_proxy.out.drain, process.stdout)
        tg.start_soon(running_proxy.err.drain, process.stderr)
        yield running_proxy
        with anyio.fail_after(WAIT):
            await process.wait()


def check_unknown(error: dict[str, Any], key: str, account: str) -> None:
    """The proxy's answer for an apply whose outcome is unknown: the server's code, words and key."""
    assert error["code"] == lost.INTERNAL_ERROR
    assert error["message"].startswith("the codex-limits service went away before answering (")
    assert error["message"].endswith(
        f'its outcome is unknown: re-send the same idempotencyKey "{key}" to learn '
        "its outcome (it will not spend a second reset)"
    )
    assert error["data"] == {"outcome": "unknown", "idempotencyKey": key, "accountId": account}


def test_the_clients_speak_of_an_unknown_outcome_in_the_servers_words() -> None:
    assert lost.RESEND == RESEND
    assert lost.resend(None) == RESEND


# -- SIGKILL in the middle of the consume --------------------------------------------------------------------


async def test_killed_mid_apply_every_client_hears_the_outcome_is_unknown_and_its_key_settles_it(
    world: World,
) -> None:
    rng = random.Random(SEED)
    env = world_env(world)
    keys = {via: f"fault-{via}-{rng.getrandbits(32):08x}" for via in VIA}  # "unix": the CLI's own, below
    before = {via: world.upstream.available_credit_count(via) for via in VIA}
    world.upstream.hold(after=True)  # upstream spends; the service dies before the answer reaches it
    state = await start_service(env, "--listen", "ws://127.0.0.1:0")
    ws_url = next(url for url in state.listen if url.startswith("ws://"))
    host, _, port = ws_url.removeprefix("ws://").rpartition(":")
    results: dict[str, Any] = {}

    async def via_ws() -> None:
        # The service is private by default: its ws:// listener wants the token it keeps.
        ws = await connect_tcp(host, int(port), headers=bearer_headers(state.token_file))
        async with running_client(ws) as client:
            await client.request("initialize", INIT_PARAMS)
            with pytest.raises(ServerClosed) as closed:
                await client.request(APPLY, {"accountId": "ws", "idempotencyKey": keys["ws"]})
        results["ws"] = closed.value

    async def via_unix() -> None:  # `codex-limits apply` on the running service's Unix socket
        results["unix"] = await cli(["apply", "unix", "--yes"], env)

    async def via_proxy(task_status: anyio.abc.TaskStatus[Proxy]) -> None:
        async with proxy(env) as bridge:
            await bridge.send(
                {"id": 1, "method": "initialize", "params": INIT_PARAMS},
                {"id": 2, "method": APPLY, "params": {"accountId": "proxy", "idempotencyKey": keys["proxy"]}},
            )
            task_status.started(bridge)
            # stdin stays open: the client is still there when the service dies
        results["proxy"] = bridge

    with anyio.fail_after(4 * WAIT):
        async with anyio.create_task_group() as tg:
            for via in rng.sample(VIA, len(VIA)):
                if via == "proxy":
                    await tg.start(via_proxy)
                else:
                    tg.start_soon(via_ws if via == "ws" else via_unix)
            await consumes_held(world.upstream, len(VIA))
            os.kill(state.pid, signal.SIGKILL)
        await gone(world.data_home)
    world.upstream.release()

    # ws://: the library client's exception says the outcome is unknown and names the key.
    closed = results["ws"]
    assert closed.outcome_unknown and closed.idempotency_key == keys["ws"]
    assert f'"{keys["ws"]}"' in str(closed) and "its outcome is unknown" in str(closed)
    # unix:// (`codex-limits apply`): exit 5, one line: outcome unknown, the key, run the same command again.
    applied = results["unix"]
    assert applied.returncode == Exit.SERVER, applied.stderr.decode()
    said = one_line(applied.stderr)
    assert f"stopped before answering {APPLY}" in said
    named = re.search(r"the apply's outcome is unknown \(idempotencyKey ([0-9a-f-]+)\)", said)
    assert named is not None, said
    keys["unix"] = named.group(1)  # the command made up its own key: the one it names is the one pending
    assert "run `codex-limits apply unix` again" in said
    # The proxy: the apply answered (outcome unknown, key named, no "jsonrpc"), exit 5, one line on stderr.
    bridge = results["proxy"]
    assert bridge.process.returncode == 5
    init, answer = bridge.answers()
    assert init["id"] == 1 and "result" in init
    assert list(answer) == ["error", "id"] and answer["id"] == 2
    check_unknown(answer["error"], keys["proxy"], "proxy")
    said = one_line(bridge.err.data)
    assert said.startswith("codex-limits proxy: the service went away (") and f'"{keys["proxy"]}"' in said

    # Each attempt is pending; after a restart each client re-sends its key and it settles, spending nothing more.
    assert sorted((r["idempotency_key"], r["status"]) for r in world.ledger_rows()) == sorted(
        (key, "pending") for key in keys.values()
    )
    restarted = await start_service(env)
    try:
        async with on_socket(restarted.socket) as client:
            with anyio.fail_after(WAIT):
                resent = await client.request(APPLY, {"accountId": "ws", "idempotencyKey": keys["ws"]})
        assert resent["outcome"] == Outcome.ALREADY_REDEEMED.value
        again = await cli(["apply", "unix", "--yes", "--json"], env)
        assert again.returncode == 0, again.stderr.decode()
        assert f"key {keys['unix']}" in again.stderr.decode() + again.stdout.decode()
        assert json.loads(again.stdout)["outcome"] == Outcome.ALREADY_REDEEMED.value
        async with proxy(env) as bridge:
            await bridge.send(
                {"id": 1, "method": "initialize", "params": INIT_PARAMS},
                {"id": 2, "method": APPLY, "params": {"accountId": "proxy", "idempotencyKey": keys["proxy"]}},
            )
            assert bridge.process.stdin is not None
            await bridge.process.stdin.aclose()  # end of input: the proxy waits for the answers, then exits 0
        assert bridge.process.returncode == 0, bridge.err.data.decode()
        assert bridge.answers()[1]["result"]["outcome"] == Outcome.ALREADY_REDEEMED.value
        assert bridge.err.data == b""
    finally:
        await cli(["service", "stop"], env)

    for via in VIA:
        assert world.upstream.available_credit_count(via) == before[via] - 1, via  # exactly one spend each
    consumed = world.upstream.consume_keys()
    assert sorted(consumed) == sorted([*keys.values(), *keys.values()])  # the spend, and the settling re-send
    rows = {r["idempotency_key"]: r for r in world.ledger_rows()}
    assert {key: (rows[key]["status"], rows[key]["outcome"]) for key in keys.values()} == {
        key: ("finished", "alreadyRedeemed") for key in keys.values()
    }


# -- SIGSTOP --------------------------------------------------------------------------------------------------


async def test_a_stopped_service_is_given_up_on_within_the_handshake_deadline(world: World) -> None:
    env = world_env(world)
    state = await start_service(env)
    try:
        async with stopped(state.pid):
            with anyio.fail_after(WAIT):
                bridged = await anyio.run_process(
                    PROXY,
                    input=line({"id": 1, "method": "initialize", "params": INIT_PARAMS}),
                    env=env,
                    cwd=REPO,
                    check=False,
                )
            assert bridged.returncode == 5 and bridged.stdout == b""
            said = one_line(bridged.stderr)
            assert said == (
                "codex-limits proxy: the service did not answer: no answer to the WebSocket handshake within "
                f"{wsframe.HANDSHAKE_TIMEOUT:g} s (is it stopped? see `codex-limits service status`)"
            )
            status = await cli(["status", "--json"], env)
            assert status.returncode == Exit.SERVER and status.stdout == b""
            said = one_line(status.stderr)
            assert said.startswith(f"codex-limits: the codex-limits service (pid {state.pid}) did not answer: ")
            assert f"within {wsframe.HANDSHAKE_TIMEOUT:g} s" in said and f"kill -CONT {state.pid}" in said
    finally:
        await cli(["service", "stop"], env)


async def test_a_service_stopped_mid_apply_leaves_each_client_saying_the_outcome_is_unknown(world: World) -> None:
    env = world_env(world)
    key = f"stopped-{random.Random(SEED).getrandbits(32):08x}"
    world.upstream.hold(after=False)  # the consumes wait at upstream before anything is spent
    credits = world.upstream.available_credit_count("proxy")
    state = await start_service(env)
    applied: list[Any] = []
    cli_done = anyio.Event()

    async def via_cli() -> None:
        applied.append(await cli(["apply", "unix", "--yes"], env, timeout=2 * wsframe.SILENCE_TIMEOUT + 2 * WAIT))
        cli_done.set()

    try:
        async with proxy(env) as bridge, anyio.create_task_group() as tg:
            await bridge.send(
                {"id": "init", "method": "initialize", "params": INIT_PARAMS},
                {"id": 7, "method": APPLY, "params": {"accountId": "proxy", "idempotencyKey": key}},
                {"id": 8, "method": "accountPool/history", "params": {}},
            )
            await bridge.answer(8)
            tg.start_soon(via_cli)
            await consumes_held(world.upstream, 2)
            async with stopped(state.pid):
                with anyio.fail_after(2 * wsframe.SILENCE_TIMEOUT + WAIT):
                    await bridge.process.wait()
                assert bridge.process.returncode == 5
                answer = await bridge.answer(7)
                check_unknown(answer["error"], key, "proxy")
                assert "did not answer a ping within" in answer["error"]["message"]
                said = one_line(bridge.err.data)
                assert "did not answer a ping" in said and f'"{key}"' in said
                with anyio.fail_after(2 * wsframe.SILENCE_TIMEOUT + WAIT):
                    await cli_done.wait()
                (done,) = applied
                assert done.returncode == Exit.SERVER
                said = one_line(done.stderr)
                assert f"stopped before answering {APPLY} (it did not answer a ping within" in said
                assert "the apply's outcome is unknown (idempotencyKey " in said
                assert "run `codex-limits apply unix` again" in said
        world.upstream.release()
        settled_by_cli = await cli(["apply", "unix", "--yes", "--json"], env)
        assert settled_by_cli.returncode == 0, settled_by_cli.stderr.decode()
        assert json.loads(settled_by_cli.stdout)["outcome"] in (Outcome.RESET.value, Outcome.ALREADY_REDEEMED.value)
        # The service goes on once continued: the same key settles the attempt, nothing spent twice.
        async with on_socket(state.socket) as client:
            with anyio.fail_after(WAIT):
                settled = await client.request(APPLY, {"accountId": "proxy", "idempotencyKey": key})
        # (alreadyRedeemed when the service gave up on the consume as its client left: upstream spent it anyway)
        assert settled["outcome"] in (Outcome.RESET.value, Outcome.ALREADY_REDEEMED.value)
        for account in ("proxy", "unix"):
            assert world.upstream.available_credit_count(account) == credits - 1, account  # exactly one spend
    finally:
        world.upstream.release()
        await cli(["service", "stop"], env)


# -- the dashboard across kills and restarts ------------------------------------------------------------------


class Dashboard:
    """`codex-limits dashboard --token-file`, read through its admin API and its event stream."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=WAIT)

    async def state(self, wanted: str) -> None:
        """Until the event stream says the link to the service is `wanted` ("connected" / "reconnecting").

        `ready` says the state the stream starts in, `service` events its changes. A stream that ends
        (the dashboard ends them all when it reconnects, so every page re-reads the pool) is opened again."""
        with anyio.fail_after(2 * WAIT):
            while True:
                async with self.http.stream("GET", "/api/events") as events:
                    assert events.status_code == 200
                    lines = events.aiter_lines()
                    try:
                        name, data = await next_event(lines)
                        assert name == "ready"
                        current = data.get("service", "connected")
                        while current != wanted:
                            name, data = await next_event(lines)
                            if name == "service":
                                current = data["service"]
                        return
                    except AssertionError as ended:
                        if "the event stream ended" not in str(ended):
                            raise

    async def accounts(self) -> list[str]:
        response = await self.http.get("/api/accounts", params={"maxAgeSeconds": 3600})
        assert response.status_code == 200, response.text
        return sorted(a["accountId"] for a in response.json()["accounts"])


async def test_the_dashboard_survives_kills_and_restarts_and_shows_the_pool_after_each(world: World) -> None:
    rng = random.Random(SEED)
    env = world_env(world)
    token_file = world.root / "dashboard-token"
    token_file.write_text("fault-suite-admin-token-0123456789\n")
    token_file.chmod(0o600)
    # Which restarts are killed again at once (the first two always are), and how soon (within a second).
    doubles = {0, 1, *rng.sample(range(2, DASHBOARD_CYCLES), 4)}
    await start_service(env)
    process = await anyio.open_process([*CLI, "dashboard", "--token-file", str(token_file)], env=env, cwd=REPO)
    out, err = Stderr(), Stderr()
    survived = 0
    try:
        async with process, anyio.create_task_group() as tg, killed_at_exit(process):
            tg.start_soon(out.drain, process.stdout)
            tg.start_soon(err.drain, process.stderr)
            await out.wait_for(b"Sign in")
            url = re.search(rb"Dashboard: (http://\S+)", out.data)
            assert url is not None
            dashboard = Dashboard(url.group(1).decode(), token_file.read_text().strip())
            async with dashboard.http:
                pool = await dashboard.accounts()
                assert pool == sorted(world.homes)
                for cycle in range(DASHBOARD_CYCLES):
                    state = running(world.data_home)
                    assert state is not None
                    os.kill(state.pid, signal.SIGKILL)
                    await gone(world.data_home)
                    await dashboard.state("reconnecting")
                    down = await dashboard.http.get("/api/accounts", params={"maxAgeSeconds": 3600})
                    assert down.status_code == 503, down.text
                    assert down.json()["error"]["code"] == "serviceUnavailable"
                    assert "reconnecting to the codex-limits service" in down.json()["error"]["message"]
                    if cycle in doubles:  # restarted and killed again within a second, the dashboard reconnecting
                        again = await start_service(env)
                        await anyio.sleep(rng.uniform(0.0, 0.5))
                        os.kill(again.pid, signal.SIGKILL)
                        await gone(world.data_home)
                    await start_service(env)
                    await dashboard.state("connected")
                    assert await dashboard.accounts() == pool  # the pool, read again through the new link
                    assert process.returncode is None, err.data.decode()
                    survived += 1
            process.terminate()
            with anyio.fail_after(WAIT):
                await process.wait()
    finally:
        await cli(["service", "stop"], env)
    assert survived == DASHBOARD_CYCLES
    assert "Traceback" not in err.data.decode() and "Error" not in err.data.decode(), err.data.decode()
    assert err.data.decode().count("lost the connection to the codex-limits service") >= DASHBOARD_CYCLES


# -- the proxy's answers, against a service that goes away on cue ------------------------------------------------


class GoingAway:
    """A stand-in service on a Unix socket: upgrades, reads `expect` requests, answers the first, then goes
    away: `how` is "drop" (the connection just ends) or "close" (a close frame, 1001, as a stopping service)."""

    def __init__(self, path: Path, expect: int, how: str) -> None:
        self.path, self.expect, self.how = path, expect, how

    async def serve(self, tg: anyio.abc.TaskGroup) -> None:
        listener = await anyio.create_unix_listener(self.path)
        tg.start_soon(listener.serve, self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            request, rest = head.split(b"\r\n\r\n", 1)
            key = next(ln.split(b":", 1)[1].strip() for ln in request.split(b"\r\n") if b"websocket-key" in ln.lower())
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            await stream.send(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            reader = wsframe.FrameReader()
            messages = [payload for _, payload in reader.feed(rest)]
            while len(messages) < self.expect:
                messages += [payload for _, payload in reader.feed(await stream.receive())]
            first = json.loads(messages[0])
            await stream.send(wsframe.encode_frame(wsframe.OP_TEXT, b'{"id":%d,"result":{}}' % first["id"], mask=False))
            if self.how == "close":
                await stream.send(
                    wsframe.encode_frame(wsframe.OP_CLOSE, wsframe.close_payload(1001, "bye"), mask=False)
                )
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    await stream.receive()


@pytest.mark.parametrize("how", ["drop", "close"])
async def test_the_proxy_answers_what_it_owed_in_the_servers_wire_shape(tmp_path: Path, how: str) -> None:
    requests: list[dict[str, Any]] = [
        {"id": 1, "method": "initialize", "params": INIT_PARAMS},
        {"id": "read-1", "method": "account/rateLimits/read"},
        {"id": 3, "method": "account/rateLimitResetCredit/consume", "params": ["K-consume", None]},
        {"id": 4, "method": APPLY, "params": {"accountId": "alice", "idempotencyKey": "K-apply"}},
        {"method": "initialized"},  # a notification: owed nothing
    ]
    service = GoingAway(tmp_path / "s.sock", expect=len(requests), how=how)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            await service.serve(tg)
            done = await anyio.run_process(
                [*PROXY, "--sock", str(service.path)],
                input=b"".join(line(r) for r in requests)[:-1] + b"\n",
                env=dict(os.environ),
                cwd=REPO,
                check=False,
            )
            tg.cancel_scope.cancel()
    assert done.returncode == 5
    answers = [check_wire_line(raw) for raw in done.stdout.splitlines()]
    assert answers[0] == {"id": 1, "result": {}}
    by_id = {a["id"]: a["error"] for a in answers[1:]}
    assert set(by_id) == {"read-1", 3, 4}
    why = "its connection closed" if how == "drop" else "it closed the connection: 1001 bye"
    assert by_id["read-1"] == {
        "code": -32603,
        "message": f"the codex-limits service went away before answering ({why}); send it again once the service runs",
    }
    assert by_id[3]["data"] == {"outcome": "unknown", "idempotencyKey": "K-consume"}
    assert 're-send the same idempotencyKey "K-consume"' in by_id[3]["message"]
    check_unknown(by_id[4], "K-apply", "alice")
    assert one_line(done.stderr) == (
        f"codex-limits proxy: the service went away ({why}); answered the 3 request(s) it still owed with an "
        'error; outcome unknown: re-send idempotencyKey "K-consume", "K-apply"'
    )
