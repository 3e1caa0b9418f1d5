"""WebSocket listeners over real sockets (TCP on 127.0.0.1 and AF_UNIX): the HTTP edge, framing, sessions,
the corpus, backpressure and many connections. The server runs in the test's event loop."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections import Counter
from pathlib import Path

import anyio
import pytest

from app_server.config import Settings
from app_server.rpc import wsframe
from app_server.rpc.listeners import Listen, ListenError, bind_unix, parse_listen, real_socket_path
from app_server.rpc.websocket import MAX_MESSAGE_HEADER, Limits, TokenCheck
from app_server.rpc.wsclient import WebSocketStream, running_client
from protocol.jsonrpc import RpcError
from tests.support.connection import make_settings
from tests.support.corpus import CASES, FINAL, FINAL_ANSWER, MAX_LINE, PREAMBLE, Case
from tests.support.listener import WAIT, get, listening, message, raw_http

pytestmark = pytest.mark.anyio

READ = "account/rateLimits/read"
NOT_INITIALIZED = {"code": -32600, "message": "Not initialized"}
NO_AUTH = "codex account authentication required to read rate limits"
WS = ["ws://127.0.0.1:0"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def read_request(rid: object) -> bytes:
    return json.dumps({"id": rid, "method": READ, "params": {"excludeResetCreditDetails": True}}).encode()


async def next_text(ws: WebSocketStream) -> bytes:
    with anyio.fail_after(WAIT):
        return (await ws.receive()).removesuffix(b"\n")


# -- --listen ------------------------------------------------------------------------------------------------


def test_listen_addresses_take_upstreams_forms(tmp_path: Path) -> None:
    default = tmp_path / "service.sock"
    assert parse_listen("stdio://", default_unix=default) == Listen("stdio")
    assert parse_listen("off", default_unix=default) == Listen("off")
    assert parse_listen("unix://", default_unix=default) == Listen("unix", path=default)
    assert parse_listen(f"unix://{tmp_path}/x.sock", default_unix=default).path == tmp_path / "x.sock"
    assert parse_listen("ws://127.0.0.1:4500", default_unix=default) == Listen("ws", host="127.0.0.1", port=4500)
    assert parse_listen("ws://[::1]:0", default_unix=default).url(99) == "ws://[::1]:99"
    assert parse_listen("ws://[::1]:1", default_unix=default).loopback
    assert not parse_listen("ws://0.0.0.0:1", default_unix=default).loopback
    for bad in ("http://127.0.0.1:1", "ws://127.0.0.1", "ws://127.0.0.1:70000", "ws://example.com:80", "tcp://x"):
        with pytest.raises(ListenError):
            parse_listen(bad, default_unix=default)


# -- the HTTP edge -----------------------------------------------------------------------------------------------


async def test_health_bad_request_origin_and_upgrade_on_any_path(settings: Settings) -> None:
    async with listening(settings, WS) as served:
        host, port = served.ws()

        async def ask(request: bytes) -> tuple[int, str, dict[str, str], bytes]:
            async with await anyio.connect_tcp(host, port) as stream:
                answer = await raw_http(stream, request)
            return answer.status, answer.reason, answer.headers, answer.body

        for path in ("/healthz", "/readyz"):
            status, _, _, body = await ask(get(path))
            assert (status, body) == (200, b"")
        status, reason, headers, body = await ask(get("/"))
        assert (status, reason, body) == (400, "Bad Request", b"Bad Request")
        assert headers["content-type"].startswith("text/plain")
        for origin in (f"http://127.0.0.1:{port}", "http://localhost:3000", "null"):
            status, reason, _, body = await ask(get("/", {"Origin": origin}, upgrade=True))
            assert (status, reason, body) == (403, "Forbidden", b"")
        ws = await served.connect("ws", path="/anything?x=1")
        await ws.send(read_request(1) + b"\n")
        assert message(await next_text(ws))["error"] == NOT_INITIALIZED
        await ws.aclose()


async def test_capability_token_401_texts_and_the_right_token(settings: Settings) -> None:
    token = TokenCheck(hashlib.sha256(b"s3cret").digest())
    async with listening(settings, WS, token=token) as served:
        for headers, text in (
            (None, b"missing websocket bearer token"),
            ({"Authorization": "Basic czNjcmV0"}, b"missing websocket bearer token"),
            ({"Authorization": "Bearer wrong"}, b"invalid websocket bearer token"),
        ):
            with pytest.raises(wsframe.HandshakeError) as refused:
                await served.connect("ws", headers)
            assert (refused.value.status, refused.value.body) == (401, text)
        ws = await served.connect("ws", {"Authorization": "Bearer s3cret"})
        await ws.send(read_request(1) + b"\n")
        assert message(await next_text(ws))["error"] == NOT_INITIALIZED
        await ws.aclose()
        async with await anyio.connect_tcp(*served.ws()) as stream:
            answer = await raw_http(stream, get("/", {"Authorization": "Bearer wrong"}, upgrade=True))
        assert answer.headers["content-type"].startswith("text/plain")


async def test_unix_socket_is_private_and_its_101_names_the_message_limit(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "app.sock"
    async with listening(settings, [f"unix://{path}"]) as served:
        real = real_socket_path(path)
        assert path.is_symlink() and Path(os.readlink(path)) == real
        assert stat.S_IMODE(real.parent.stat().st_mode) == 0o700 and real.parent.stat().st_uid == os.getuid()
        ws = await served.connect("unix")
        assert ws.response_headers[MAX_MESSAGE_HEADER] == "16777216"
        await ws.aclose()
        async with await anyio.connect_unix(real) as stream:
            answer = await raw_http(stream, get("/", {"Origin": "null"}, upgrade=True))
        assert (answer.status, answer.body) == (403, b"")
        async with await anyio.connect_unix(real) as stream:  # raw JSON lines: no answer of ours, just a close
            await stream.send(read_request(1) + b"\n")
            with anyio.fail_after(WAIT):
                reply = b""
                try:
                    while True:
                        reply += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    pass
        assert b'"id"' not in reply
    assert not path.exists() and not real.exists()  # removed at shutdown


async def test_a_second_server_on_a_live_socket_is_refused(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "one.sock"
    async with listening(settings, [f"unix://{path}"]) as served:
        with pytest.raises(ListenError, match="already listening"):
            bind_unix(path)
        ws = await served.connect("unix")  # the first server's socket is untouched
        await ws.aclose()
    (tmp_path / "file.sock").write_text("")
    with pytest.raises(ListenError, match="not a socket"):
        bind_unix(tmp_path / "file.sock")


# -- framing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "unix"])
async def test_only_single_json_text_frames_are_answered_and_pings_are_ponged(
    settings: Settings, tmp_path: Path, scheme: str
) -> None:
    async with listening(settings, [*WS, f"unix://{tmp_path / 's.sock'}"]) as served:
        ws = await served.connect(scheme)
        await ws.send_frame(wsframe.OP_BINARY, read_request(1))
        await ws.send_frame(wsframe.OP_TEXT, read_request(2) + b"\n" + read_request(3))
        await ws.send_frame(wsframe.OP_TEXT, b"not json")
        await ws.send_frame(wsframe.OP_PING, b"are you there")
        with anyio.fail_after(WAIT):
            assert await ws.receive_message() == (wsframe.OP_PONG, b"are you there")
        await ws.send(read_request(4) + b"\n")
        assert message(await next_text(ws)) == {"error": NOT_INITIALIZED, "id": 4}  # nothing for 1, 2, 3
        await ws.aclose()


# -- sessions ----------------------------------------------------------------------------------------------------


async def test_every_connection_is_its_own_session(settings: Settings, tmp_path: Path) -> None:
    async with (
        listening(settings, [*WS, f"unix://{tmp_path / 's.sock'}"]) as served,
        served.client("ws", clientInfo={"name": "alpha", "title": None, "version": "1"}) as first,
        served.client("unix", initialize=False) as second,
    ):
        with anyio.fail_after(WAIT):
            with pytest.raises(RpcError) as before:
                await second.request(READ, {})
            assert (before.value.code, before.value.message) == (-32600, "Not initialized")
            result = await second.request("initialize", {"clientInfo": {"name": "beta", "title": None, "version": "2"}})
            with pytest.raises(RpcError) as again:
                await first.request("initialize", {"clientInfo": {"name": "alpha", "title": None, "version": "1"}})
            with pytest.raises(RpcError) as read:
                await second.request(READ, {})
    assert result["userAgent"].endswith("(beta; 2)") and result["userAgent"].startswith("codex-limits/")
    assert again.value.message == "Already initialized"
    assert read.value.message == NO_AUTH


# -- the corpus, the same on every transport -----------------------------------------------------------------


def travels_in_a_text_frame(case: Case) -> bool:
    """WebSocket text frames must be UTF-8 (RFC 6455 closes the connection otherwise, code 1007) and our
    listeners take messages up to 16 MiB (1009 beyond): the other corpus lines cannot be sent as one."""
    try:
        case.line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(case.line) <= MAX_LINE


FRAMED = [case for case in CASES if travels_in_a_text_frame(case)]


@pytest.mark.parametrize("scheme", ["ws", "unix"])
async def test_the_corpus_gets_the_answers_stdio_gives(settings: Settings, tmp_path: Path, scheme: str) -> None:
    assert len(FRAMED) >= 35
    async with listening(settings, [*WS, f"unix://{tmp_path / 's.sock'}"]) as served:
        ws = await served.connect(scheme)
        for line in (PREAMBLE, *(case.line for case in FRAMED), FINAL):
            await ws.send_frame(wsframe.OP_TEXT, line)
        expected = [case.answer for case in FRAMED if case.answer is not None] + [FINAL_ANSWER]
        got = [await next_text(ws) for _ in range(len(expected) + 1)]
        await ws.aclose()
    assert message(got[0])["id"] == "preamble"
    assert Counter(got[1:]) == Counter(expected)


# -- backpressure -----------------------------------------------------------------------------------------------


async def test_a_reader_that_stopped_is_disconnected_and_the_others_keep_their_answers(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "app_server.rpc.websocket")
    limits = Limits(queue=32, stall_timeout=0.5, close_timeout=0.5)
    unknown = b'{"id":%d,"method":"nope/' + b"x" * 2000 + b'"}'  # each answer repeats the name: ~2.5 kB
    async with listening(settings, [f"unix://{tmp_path / 's.sock'}"], limits=limits) as served:
        slow = await served.connect("unix")
        gone = anyio.Event()

        async def flood() -> None:
            try:
                for n in range(100_000):
                    await slow.send(unknown % n + b"\n")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            gone.set()

        async with served.client("unix") as fast, anyio.create_task_group() as tg:
            tg.start_soon(flood)
            answered = 0
            with anyio.fail_after(WAIT):
                while not gone.is_set():
                    with pytest.raises(RpcError, match=NO_AUTH):
                        await fast.request(READ, {"excludeResetCreditDetails": True})
                    answered += 1
            with anyio.fail_after(WAIT), pytest.raises(RpcError, match=NO_AUTH):
                await fast.request(READ, {})
    assert answered > 0
    assert any("disconnecting it (close 1008)" in r.getMessage() for r in caplog.records)


# -- many connections ---------------------------------------------------------------------------------------------


async def test_100_concurrent_connections_each_get_their_own_answers(settings: Settings) -> None:
    results: dict[int, list[str]] = {}
    async with listening(settings, WS) as served:

        async def one(n: int) -> None:
            ws = await served.connect("ws")
            async with running_client(ws) as client:
                with anyio.fail_after(WAIT):
                    init = await client.request("initialize", {"clientInfo": {"name": f"c{n}", "version": "1"}})
                    messages = []
                    for _ in range(5):
                        try:
                            await client.request(READ, {"excludeResetCreditDetails": True})
                        except RpcError as exc:
                            messages.append(exc.message)
            results[n] = [init["userAgent"], *messages]

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(100):
                    tg.start_soon(one, n)
    assert sorted(results) == list(range(100))
    for n, (agent, *messages) in results.items():
        assert agent.endswith(f"(c{n}; 1)")
        assert messages == [NO_AUTH] * 5
