"""The dispatcher in memory: every error path of CONTRACT §1-§3 with exact bytes, and never a lost answer.

Client and server run in one event loop: the server reads an in-memory byte source and writes through
the real `Outbox` into a sink that records every byte, so the exact output lines can be compared.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel

from app_server import __version__
from app_server.config import Settings
from app_server.handlers import routes as handler_routes
from app_server.rpc.context import RequestContext
from app_server.rpc.dispatcher import SHUTDOWN_MESSAGE, Route
from app_server.upstream.useragent import os_description
from app_server.world import World
from protocol import v1, v2
from protocol.jsonrpc import INVALID_REQUEST, RpcError
from protocol.methods import METHODS, Method
from tests.support import transcripts
from tests.support.connection import (
    CONSUME,
    INIT,
    READ,
    WAIT,
    Output,
    backend_requests,
    check_wire_line,
    connect,
    encode,
    make_settings,
    open_services,
    parsed,
    server,
    signed_in,
    warnings,
)
from tests.support.corpus import NO_AUTH_READ, OUR_METHODS, error, invalid, no_auth, unknown_method
from tests.support.mock_backend import MockBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("TERM_PROGRAM", raising=False)
    monkeypatch.delenv("TERM_PROGRAM_VERSION", raising=False)
    return make_settings(tmp_path)


@pytest.fixture
def backend() -> Iterator[MockBackend]:
    with MockBackend() as mock:
        yield mock


# -- §2 handshake ---------------------------------------------------------------------------------------------


async def test_initialize_answers_exactly_and_sends_no_unasked_notification(settings: Settings) -> None:
    async with server(settings) as conn:
        conn.send(INIT, {"id": 1, "method": "nope/x"})
        lines = await conn.output.wait_lines(2)
        conn.send({"id": 2, "method": "nope/x"})
        lines = await conn.output.wait_lines(3)
    ua = f"codex-limits/{__version__} ({os_description()}) xterm (probe; 1.0)"
    home = json.dumps(str(settings.codex_home))
    assert (
        lines[0]
        == (
            f'{{"id":0,"result":{{"userAgent":"{ua}","codexHome":{home},'
            f'"platformFamily":"unix","platformOs":"linux"}}}}'
        ).encode()
    )
    # Deviation: no configWarning or remoteControl/status/changed, only the answers.
    assert lines[1:] == [error("1", unknown_method("nope/x")), error("2", unknown_method("nope/x"))]


@pytest.mark.parametrize(
    ("name", "shown"),
    [("bad\nname", "bad\\nname"), ("nul\x00", "nul\\u0000"), ("del\x7f", "del\x7f"), ("é\r", "é\\r")],
)
async def test_invalid_client_name_is_refused_and_a_retry_succeeds(settings: Settings, name: str, shown: str) -> None:
    """§2.1, transcript 05a: the name quoted verbatim; the connection stays uninitialized."""
    async with server(settings) as conn:
        bad = {
            "id": "a",
            "method": "initialize",
            "params": {"clientInfo": {"name": name, "title": None, "version": "1"}},
        }
        assert (
            await conn.call(bad)
            == (
                '{"error":{"code":-32600,"message":"Invalid clientInfo.name: \''
                + shown
                + '\'. Must be a valid HTTP header value."},"id":"a"}'
            ).encode()
        )
        assert await conn.call({"id": 99, "method": READ}) == error("99", "Not initialized")
        assert json.loads(await conn.initialize())["result"]["userAgent"].endswith(" (probe; 1.0)")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"clientInfo": {"name": "probe"}}, "missing field `version`"),  # 05b
        ({"clientInfo": {"version": "1"}}, "missing field `name`"),
        ({}, "missing field `clientInfo`"),
        ({"clientInfo": 5}, "invalid type: integer `5`, expected struct ClientInfo"),
        ({"clientInfo": {"name": 1, "version": "1"}}, "invalid type: integer `1`, expected a string"),
        ({"clientInfo": {"name": "p", "title": 3, "version": "1"}}, "invalid type: integer `3`, expected a string"),
        (
            {"clientInfo": {"name": "p", "version": "1"}, "capabilities": {"experimentalApi": "yes"}},
            'invalid type: string "yes", expected a boolean',  # 05g
        ),
        (
            {"clientInfo": {"name": "p", "version": "1"}, "capabilities": {"optOutNotificationMethods": [1]}},
            "invalid type: integer `1`, expected a string",
        ),
        (
            {"clientInfo": {"name": "p", "version": "1"}, "capabilities": 7},
            "invalid type: integer `7`, expected struct",
        ),
        (None, "missing field `params`"),
        ("x", 'invalid type: string "x", expected struct InitializeParams'),
    ],
)
async def test_malformed_initialize_gets_its_parse_error_and_leaves_the_connection_open(
    settings: Settings, params: Any, message: str
) -> None:
    async with server(settings) as conn:
        request: dict[str, Any] = {"id": 1, "method": "initialize"}
        if params is not None:
            request["params"] = params
        answer = json.loads(await conn.call(request))
        assert answer["error"]["code"] == INVALID_REQUEST
        assert answer["error"]["message"].startswith(invalid(message))
        assert await conn.call({"id": 2, "method": READ}) == error("2", "Not initialized")
        assert "result" in json.loads(
            await conn.initialize(capabilities={"bogus": 1, "optOutNotificationMethods": None})
        )


@pytest.mark.parametrize(
    ("client_info", "suffix"),
    [
        ({"name": "my client", "title": "T", "version": "1\n0"}, " (my client; 1_0)"),  # 05d
        ({"name": "clié", "version": "1.0"}, " (clié; 1.0)"),  # 05e
        ({"name": "", "version": ""}, " (;)"),  # 05f
    ],
)
async def test_user_agent_is_ours_with_the_client_suffix(
    settings: Settings, client_info: dict[str, Any], suffix: str
) -> None:
    async with server(settings) as conn:
        line = await conn.initialize(client_info=client_info)
    user_agent = json.loads(line)["result"]["userAgent"]
    assert user_agent == f"codex-limits/{__version__} ({os_description()}) xterm{suffix}"
    assert json.dumps(user_agent, ensure_ascii=False).encode() in line  # non-ASCII stays raw


async def test_transcript_02_before_and_after_initialize(settings: Settings) -> None:
    """§2.2, §3.2 precedence, byte for byte against the reference (the unknown-method list is ours)."""
    scenario = transcripts.load("02_before_initialize")
    expected = []
    for line in scenario.server_lines():
        message = json.loads(line)
        if "method" in message or message.get("id") == 0:
            continue  # upstream's own notifications; the initialize result (ours differs, see above)
        if "unknown variant" in message["error"]["message"]:
            line = error(str(message["id"]), unknown_method("nope/nope")).decode()
        expected.append(line.encode())
    async with server(settings) as conn:
        conn.send(*scenario.client_lines())
        lines = await conn.output.wait_lines(len(expected) + 1)
    assert json.loads(lines[0])["error"]["message"] == "Not initialized"  # id 1, before the result of id 0
    assert [line for line in lines if not line.startswith(b'{"id":0,"result":')] == expected


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"initialize"}))
async def test_every_method_needs_initialize_but_parse_errors_come_first(settings: Settings, method: str) -> None:
    async with server(settings) as conn:
        assert await conn.call({"id": 1, "method": method, "params": "x"}) == error(
            "1", invalid(f'invalid type: string "x", expected struct {METHODS[method].params.__name__}')
        )
        valid: dict[str, Any] = {"accountId": "default", "idempotencyKey": "k"}
        assert await conn.call({"id": 2, "method": method, "params": valid}) == error("2", "Not initialized")
        await conn.initialize()
        assert await conn.call({"id": 3, "method": "initialize", "params": {}}) == error(
            "3", invalid("missing field `clientInfo`")
        )
        assert await conn.call({**INIT, "id": 4}) == error("4", "Already initialized")


async def test_unknown_method_message_lists_our_methods_only(settings: Settings) -> None:
    assert tuple(METHODS) == OUR_METHODS
    async with server(settings) as conn:
        answer = json.loads(await conn.call({"id": 1, "method": "thread/start"}))
    assert answer == {"error": {"code": -32600, "message": unknown_method("thread/start")}, "id": 1}
    assert "`server/diagnostics`" not in answer["error"]["message"]


# -- §1.3 ids --------------------------------------------------------------------------------------------------

ECHOED_IDS = [
    ('"s1"', '"s1"'),
    ('""', '""'),
    ('"é中😀"', '"é中😀"'),
    ('"\\u00e9\\u4e2d\\ud83d\\ude00"', '"é中😀"'),
    ('"tab\\there"', '"tab\\there"'),
    ("0", "0"),
    ("-5", "-5"),
    ("9223372036854775807", "9223372036854775807"),
    ("-9223372036854775808", "-9223372036854775808"),
]


@pytest.mark.parametrize(("sent", "echoed"), ECHOED_IDS)
async def test_ids_are_echoed_with_their_json_type_inline_and_from_a_task(
    settings: Settings, sent: str, echoed: str
) -> None:
    async with server(settings) as conn:
        conn.send(f'{{"id":{sent},"method":"{READ}"}}')  # inline: Not initialized
        await conn.initialize()
        conn.send(f'{{"id":{sent},"method":"{READ}"}}')  # a handler task: no auth
        lines = await conn.finish()
    assert lines[0] == error(echoed, "Not initialized")
    assert lines[2] == no_auth(echoed)


async def test_string_and_integer_ids_with_the_same_digits_stay_distinct(settings: Settings) -> None:
    async with server(settings) as conn:
        conn.send({"id": 1, "method": "nope/a"}, {"id": "1", "method": "nope/b"})
        lines = await conn.finish()
    assert lines == [error("1", unknown_method("nope/a")), error('"1"', unknown_method("nope/b"))]


async def test_duplicate_ids_in_flight_are_both_answered(settings: Settings, backend: MockBackend) -> None:
    """§1.4: an id already in flight is not rejected; both requests get their own answer."""
    signed_in(settings, backend, delay=WAIT)
    async with server(settings) as conn:
        await conn.initialize()
        read = {"id": 7, "method": READ, "params": {"excludeResetCreditDetails": True}}
        conn.send(read, read)
        await backend_requests(backend, 2)  # both are in flight together
        backend.release_delays()
        lines = await conn.output.wait_lines(3)
        conn.send({"id": 7, "method": "nope/x"}, {"id": 7, "method": "nope/x"})
        lines = await conn.finish()
    answers = parsed(lines[1:])
    assert [a["id"] for a in answers] == [7, 7, 7, 7]
    assert [a["result"]["rateLimits"]["primary"]["usedPercent"] for a in answers[:2]] == [42, 42]
    assert lines[3:] == [error("7", unknown_method("nope/x"))] * 2


# -- notifications ----------------------------------------------------------------------------------------------


async def test_opt_out_of_notifications_is_per_connection(settings: Settings, tmp_path: Path) -> None:
    """`accountPool/list` tells its caller of every account it read (`accountPool/accountUpdated`), and
    every other session of a change; a session that opted out hears none of it."""
    settings.data_home.mkdir()
    (settings.data_home / "accounts.toml").write_text(
        "".join(f'[[accounts]]\nid = "{name}"\ncodex_home = "{tmp_path / name}"\n' for name in ("work", "spare")),
        encoding="utf-8",
    )
    updated = "accountPool/accountUpdated"
    async with (
        open_services(settings) as services,
        connect(services) as plain,
        connect(services) as quiet,
        connect(services) as other,
    ):
        await plain.initialize()
        await quiet.initialize(capabilities={"optOutNotificationMethods": [updated]})
        await other.initialize(capabilities={"optOutNotificationMethods": ["account/rateLimits/updated"]})
        results = []
        for n, conn in enumerate((plain, quiet, other)):
            results.append(json.loads(await conn.call({"id": f"list-{n}", "method": "accountPool/list", "params": {}})))
        outputs = [await conn.finish() for conn in (plain, quiet, other)]
    assert all([a["accountId"] for a in r["result"]["accounts"]] == ["default", "work", "spare"] for r in results)
    notes = [[n for n in parsed(lines) if n.get("method") == updated] for lines in outputs]
    assert notes[1] == []  # quiet: opted out
    for seen in notes[0], notes[2]:
        assert all(list(n) == ["method", "params", "emittedAtMs"] and n["method"] == updated for n in seen)
        assert all(type(n["emittedAtMs"]) is int for n in seen)
    # plain's list was news to everyone: plain and other heard of each account once; other's own list
    # changed nothing, so only other heard of it.
    assert sorted(n["params"]["account"]["accountId"] for n in notes[0]) == ["default", "spare", "work"]
    assert sorted(n["params"]["account"]["accountId"] for n in notes[2]) == sorted(["default", "spare", "work"] * 2)
    # The caller hears of its reads before its answer.
    plain_lines = parsed(outputs[0])
    assert [m.get("id") for m in plain_lines].index("list-0") == len(plain_lines) - 1


# -- §1.1, §1.2 output ------------------------------------------------------------------------------------------


async def test_output_is_compact_utf8_in_member_order(settings: Settings, backend: MockBackend, tmp_path: Path) -> None:
    signed_in(settings, backend)
    settings.data_home.mkdir()
    (settings.data_home / "accounts.toml").write_text(
        f'[[accounts]]\nid = "x"\nlabel = "Ünï"\ncodex_home = "{tmp_path / "x"}"\n', encoding="utf-8"
    )
    async with server(settings) as conn:
        conn.send(
            '{"jsonrpc":"2.0","id":"é","method":"initialize","params":{"clientInfo":{"name":"clié","version":"1"}}}',
            {"jsonrpc": "2.0", "id": "ü/中", "method": READ, "params": {"excludeResetCreditDetails": True}},
            {"id": "é/x", "method": "méthode"},
            {"id": 3, "method": CONSUME, "params": {"idempotencyKey": "k€y"}},
            {"id": 4, "method": "accountPool/list"},
            {
                "id": 5,
                "method": "accountPool/resetCredit/apply",
                "params": {"accountId": "nope", "idempotencyKey": "k"},
            },
        )
        lines = await conn.finish()
    messages = [check_wire_line(line) for line in lines]
    assert len([m for m in messages if "id" in m]) == 6
    methods = {m.get("method") for m in messages}
    assert {None, "accountPool/accountUpdated"} <= methods  # answers, and the pool's updates
    assert methods <= {None, "accountPool/accountUpdated", "account/rateLimits/updated", "accountPool/alert"}
    assert "é".encode() in lines[0] and b"\\u" not in b"".join(lines)


async def test_an_error_with_data_keeps_the_member_order(settings: Settings) -> None:
    async def refuse(ctx: RequestContext[Any], params: Any) -> BaseModel:
        raise RpcError(INVALID_REQUEST, "nö", {"why": "ü", "n": 1})

    method = Method("t/refuse", v2.GetAccountRateLimitsParams, v1.InitializeResponse, params_required=False)
    routes = {method.name: Route(method, handler=refuse, needs_initialize=False)}
    async with server(settings, routes=routes) as conn:
        line = await conn.call({"id": 1, "method": "t/refuse"})
    assert line == '{"error":{"code":-32600,"message":"nö","data":{"why":"ü","n":1}},"id":1}'.encode()


# -- the exception boundary -----------------------------------------------------------------------------------


def boom_routes() -> dict[str, Route[World]]:
    """Routes whose code fails in ways no handler should: the server must answer and carry on."""

    def inline_boom(ctx: RequestContext[Any], params: Any) -> BaseModel:
        raise ZeroDivisionError("inline")

    def precheck_boom(params: Any) -> None:
        raise KeyError("precheck")

    async def handler_boom(ctx: RequestContext[Any], params: Any) -> BaseModel:
        raise ValueError("handler")

    async def rpc_error(ctx: RequestContext[Any], params: Any) -> BaseModel:
        raise RpcError(-32603, "failed to fetch codex rate limits: nope")

    def method(name: str) -> Method:
        return Method(name, v2.GetAccountRateLimitsParams, v1.InitializeResponse, params_required=False)

    table = handler_routes()
    table["t/inline"] = Route(method("t/inline"), inline=inline_boom, needs_initialize=False)
    table["t/precheck"] = Route(method("t/precheck"), handler=handler_boom, precheck=precheck_boom)
    table["t/handler"] = Route(method("t/handler"), handler=handler_boom, needs_initialize=False)
    table["t/rpc"] = Route(method("t/rpc"), handler=rpc_error, needs_initialize=False)
    return table


async def test_unexpected_exceptions_become_32603_and_the_server_carries_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with server(settings, routes=boom_routes()) as conn:
        conn.send({"id": 1, "method": "t/inline"}, {"id": 2, "method": "t/handler"}, {"id": 3, "method": "t/rpc"})
        await conn.initialize()
        conn.send({"id": 4, "method": "t/precheck"}, {"id": 5, "method": "nope/x"})
        lines = await conn.finish()
    assert sorted(line for line in lines if not line.startswith(b'{"id":"init","result":')) == sorted(
        [
            error("1", "internal error: ZeroDivisionError", -32603),
            error("2", "internal error: ValueError", -32603),
            error("3", "failed to fetch codex rate limits: nope", -32603),
            error("4", "internal error: KeyError", -32603),
            error("5", unknown_method("nope/x")),
        ]
    )
    assert len(lines) == 6
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "app_server.rpc.dispatcher"]
    assert len(logged) == 3 and all(r.exc_info for r in logged)


# -- framing edge cases the fixes cover -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 50_000,
        b'{"id":1,"method":"nope/x","params":' + b"{" * 50_000,
        b'{"id":1,"method":"nope/x","params":' + b'{"a":' * 3000 + b"1" + b"}" * 3001,
        b'{"id":1,"method":"nope/x","params":' + b"[" * 3000 + b'"\\u00e9"' + b"]" * 3000 + b"}",
    ],
    ids=["unclosed", "unclosed_in_params", "deep_objects", "deep_with_escape"],
)
async def test_deeply_nested_json_is_dropped_not_fatal(
    settings: Settings, caplog: pytest.LogCaptureFixture, line: bytes
) -> None:
    async with server(settings) as conn:
        conn.send(line, {"id": "next", "method": "nope/x"})
        lines = await conn.finish()
    assert lines == [error('"next"', unknown_method("nope/x"))]
    assert len(warnings(caplog)) == 1


@pytest.mark.parametrize(
    ("line", "answered"),
    [
        (b'{"id":1,"method":"nope/x","params":{"a":{"id":1,"id":2}}}', True),
        (b'{"id":1,"method":"nope/x","params":[{"method":1,"method":2,"params":3,"params":4}]}', True),
        (b'{"id":1,"method":"nope/x","params":{"id":1,"id":2},"params":{}}', False),
        (b'{"id":1,"method":"nope/x","\\u0070arams":{},"params":{}}', False),
        (b'{"\\u0069d":1,"method":"nope/x","id":2}', False),
        (b'{"id":1,"method":"nope/x","\\u006detho\\u0064":"nope/y"}', False),
        (b'{"id":1,"method":"nope/x","extra":1,"extra":2}', True),
    ],
)
async def test_only_the_envelope_keys_must_be_unique(
    settings: Settings, caplog: pytest.LogCaptureFixture, line: bytes, answered: bool
) -> None:
    async with server(settings) as conn:
        conn.send(line)
        lines = await conn.finish()
    assert lines == ([error("1", unknown_method("nope/x"))] if answered else [])
    assert len(warnings(caplog)) == (0 if answered else 1)


@pytest.mark.parametrize("blank", [b" ", b"\t", b"\r", b"\x0b", b"\x0c", "\u00a0".encode(), "\u2028".encode()])
async def test_only_json_whitespace_surrounds_a_line(settings: Settings, blank: bytes) -> None:
    async with server(settings) as conn:
        conn.send(blank + b'{"id":1,"method":"nope/x"}' + blank)
        lines = await conn.finish()
    assert lines == ([error("1", unknown_method("nope/x"))] if blank in (b" ", b"\t", b"\r") else [])


# -- over-long lines ------------------------------------------------------------------------------------------

LIMIT = 1000


def padded(prefix: bytes, size: int, suffix: bytes = b'"}}') -> bytes:
    """`prefix` + x... + `suffix`, exactly `size` bytes."""
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


def too_long(size: int) -> str:
    return invalid(f"message of {size} bytes exceeds the {LIMIT}-byte line limit")


async def test_an_over_long_line_is_answered_when_its_id_is_found(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with server(settings, max_line=LIMIT) as conn:
        await conn.initialize()
        at_limit = padded(b'{"id":1,"method":"' + READ.encode() + b'","params":{"pad":"', LIMIT)
        over = padded(b'{"method":"' + READ.encode() + b'", "id" : "o",\t"params":{"pad":"', LIMIT + 1)
        nested_id = padded(b'{"params":{"id":5,"pad":"', 5000, b'"},"method":"nope/x"}')
        huge = padded(b'{"id":-7,"method":"nope/x","params":{"pad":"', 3 * 1024 * 1024)
        conn.send(at_limit, over, nested_id, huge, over + b"\r")
        conn.send({"id": "next", "method": "nope/x"})
        lines = await conn.finish()
    assert sorted(lines[1:]) == sorted(
        [
            no_auth("1"),  # exactly at the limit: served (by a task, so possibly last)
            error('"o"', too_long(LIMIT + 1)),
            error("-7", too_long(3 * 1024 * 1024)),
            error('"o"', too_long(LIMIT + 2)),  # the CR counts
            error('"next"', unknown_method("nope/x")),
        ]
    )
    assert len(warnings(caplog)) == 4  # three answered over-long lines, one skipped (its id is nested)


@pytest.mark.parametrize(
    "start",
    [
        b'{"id":"\\ud800","method":"nope/x","params":{"pad":"',  # a lone surrogate could not be echoed
        b'{"id":"\xff\xfe","method":"nope/x","params":{"pad":"',  # nor could invalid UTF-8
        b'{"id":' + b"[" * 30_000,  # not an id, and too deep to decode
        b'{"id":1.5,"method":"nope/x","params":{"pad":"',
        b'{"id":null,"method":"nope/x","params":{"pad":"',
        b'{"method":"nope/x","params":{"pad":"',
        b'[{"id":1,"method":"nope/x","params":{"pad":"',
        b'{"x":"\\"id\\":1","pad":"',
    ],
    ids=["lone_surrogate", "invalid_utf8", "deep", "float", "null", "no_id", "batch", "id_inside_a_string"],
)
async def test_an_over_long_line_without_a_usable_id_is_skipped(
    settings: Settings, caplog: pytest.LogCaptureFixture, start: bytes
) -> None:
    async with server(settings, max_line=LIMIT) as conn:
        conn.send(padded(start, 40_000), {"id": "next", "method": "nope/x"})
        lines = await conn.finish()
    assert lines == [error('"next"', unknown_method("nope/x"))]
    assert len(warnings(caplog)) == 1


async def test_an_over_long_line_arriving_in_small_chunks_and_at_end_of_input(settings: Settings) -> None:
    line = padded(b'{"id":"slow","method":"nope/x","params":{"pad":"', 50_000)
    async with server(settings, max_line=LIMIT) as conn:
        for i in range(0, len(line), 777):
            conn.input.write(line[i : i + 777])
        conn.input.write(b"\n" + line)  # the last line has no newline: still a line at end of input
        lines = await conn.finish()
    assert lines == [error('"slow"', too_long(50_000))] * 2


# -- backpressure: never a lost or doubled answer ------------------------------------------------------------


class SlowSink:
    """Writes through to `Output`, yielding to the event loop first: a slow client."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.writes = 0

    async def send(self, data: bytes) -> None:
        self.writes += 1
        await anyio.lowlevel.checkpoint()
        await self.output.send(data)


async def test_5000_pipelined_requests_with_tiny_buffers_are_all_answered_once(settings: Settings) -> None:
    output = Output()
    sink = SlowSink(output)
    expected: dict[int, bytes] = {}
    lines: list[bytes] = [encode({**INIT, "id": -1})]
    for i in range(5000):
        kind = i % 4
        if kind == 0:
            lines.append(encode({"id": i, "method": READ}))
            expected[i] = no_auth(str(i))
        elif kind == 1:
            lines.append(encode({"id": i, "method": "nope/x"}))
            expected[i] = error(str(i), unknown_method("nope/x"))
        elif kind == 2:
            lines.append(encode({"id": i, "method": CONSUME, "params": {"idempotencyKey": ""}}))
            expected[i] = error(str(i), "idempotencyKey must not be empty")
        else:
            lines.append(encode({"id": i, "method": CONSUME, "params": {"idempotencyKey": "k"}}))
            expected[i] = error(str(i), "codex account authentication required for rate limit reset credits")
        lines.append(b'{"method":"initialized"}')  # a notification between each: never answered
    async with (
        open_services(settings) as services,
        connect(services, sink=sink, outbox_capacity=2, max_in_flight=2) as conn,
    ):
        conn.input.write(b"\n".join(lines) + b"\n")  # one write: a burst
        conn.input.close()
        with anyio.fail_after(WAIT * 3):
            await conn.finished.wait()
    answers = output.lines()
    ids = Counter(json.loads(line)["id"] for line in answers)
    assert len(answers) == 5001 and set(ids.values()) == {1}
    assert answers[0].startswith(b'{"id":-1,"result":')
    assert sorted(answers[1:]) == sorted(expected.values())
    assert sink.writes < 5001  # the outbox batches what piles up


class StalledSink:
    """A client that stops reading until told to go on."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.go = anyio.Event()
        self.stalled = anyio.Event()

    async def send(self, data: bytes) -> None:
        self.stalled.set()
        await self.go.wait()
        await self.output.send(data)


async def test_a_stalled_reader_stops_the_server_reading_then_everything_is_answered(settings: Settings) -> None:
    output = Output()
    sink = StalledSink(output)
    async with (
        open_services(settings) as services,
        connect(services, sink=sink, outbox_capacity=8, max_in_flight=4) as conn,
    ):
        for i in range(2000):  # 2000 separate chunks, all available at once
            conn.send({"id": i, "method": "nope/x" if i % 2 else READ})
        with anyio.fail_after(WAIT):
            await sink.stalled.wait()
            await anyio.wait_all_tasks_blocked()
        taken = conn.input.taken
        assert taken < 50  # bounded by the outbox and in-flight limits, not by the input
        sink.go.set()
        await conn.finish()
    answers = output.lines()
    assert Counter(json.loads(line)["id"] for line in answers) == Counter(range(2000))


# -- end of input, SIGTERM and the grace period -----------------------------------------------------------------


async def test_requests_in_flight_at_end_of_input_are_answered(settings: Settings, backend: MockBackend) -> None:
    """D2: drain at EOF, and start nothing new."""
    signed_in(settings, backend, delay=WAIT)
    async with server(settings) as conn:
        await conn.initialize()
        conn.send(
            {"id": 1, "method": READ, "params": {"excludeResetCreditDetails": True}},
            {"id": 2, "method": CONSUME, "params": {"idempotencyKey": "k"}},
            {"id": 3, "method": "nope/x"},
        )
        await backend_requests(backend, 2)
        conn.input.close()
        with anyio.fail_after(WAIT):
            await anyio.wait_all_tasks_blocked()  # the reader has seen the end; the two are still waiting
        assert not conn.finished.is_set()
        backend.release_delays()
        lines = await conn.finish()
    answers = {a["id"]: a for a in parsed(lines[1:])}
    assert answers[1]["result"]["rateLimits"]["primary"]["usedPercent"] == 42
    assert answers[2] == {"id": 2, "result": {"outcome": "reset"}}
    assert lines[1] == error("3", unknown_method("nope/x"))  # inline: at once
    assert len(backend.recorded()) == 2


async def test_requests_still_running_after_the_grace_get_the_shutdown_error(
    settings: Settings, backend: MockBackend
) -> None:
    signed_in(settings, backend, delay=60)
    async with server(settings, shutdown_grace=0.2) as conn:
        await conn.initialize()
        conn.send({"id": 1, "method": READ, "params": {"excludeResetCreditDetails": True}})
        await backend_requests(backend, 1)
        lines = await conn.finish()
    assert lines[1:] == [error("1", SHUTDOWN_MESSAGE, -32603)]


async def test_requests_waiting_for_a_slot_at_end_of_input_get_the_shutdown_error_after_the_grace(
    settings: Settings, backend: MockBackend
) -> None:
    """More requests than slots, upstream stuck: the end of input is still read, the grace still ends, and the
    requests that never started are answered like the one that was cancelled (their outcome is unknown)."""
    signed_in(settings, backend, delay=60)
    async with server(settings, max_in_flight=1, shutdown_grace=0.2) as conn:
        await conn.initialize()
        conn.send(*({"id": i, "method": CONSUME, "params": {"idempotencyKey": f"k{i}"}} for i in range(1, 5)))
        await backend_requests(backend, 1)
        lines = await conn.finish()
    assert sorted(lines[1:]) == sorted(error(str(i), SHUTDOWN_MESSAGE, -32603) for i in range(1, 5))
    assert len(backend.recorded()) == 1


async def test_queued_requests_start_in_arrival_order(settings: Settings, backend: MockBackend) -> None:
    signed_in(settings, backend)
    async with server(settings, max_in_flight=1) as conn:
        await conn.initialize()
        conn.send(*({"id": i, "method": CONSUME, "params": {"idempotencyKey": f"k{i}"}} for i in range(20)))
        lines = await conn.finish()
    assert len(lines) == 21
    assert [c.json()["redeem_request_id"] for c in backend.recorded()] == [f"k{i}" for i in range(20)]


class TrickleSink:
    """A client that keeps reading, slowly: every write takes a while."""

    def __init__(self, output: Output, pause: float) -> None:
        self.output = output
        self.pause = pause

    async def send(self, data: bytes) -> None:
        await anyio.sleep(self.pause)
        await self.output.send(data)


async def test_a_slow_reader_gets_every_answer_after_end_of_input(settings: Settings) -> None:
    """The grace bounds a client that stopped reading, not one that reads slowly: the output after
    end of input takes longer than the grace here, and all of it is written."""
    output = Output()
    sink = TrickleSink(output, pause=0.03)
    async with (
        open_services(settings) as services,
        connect(services, sink=sink, batch_bytes=1, shutdown_grace=0.25) as conn,
    ):
        conn.send(*({"id": i, "method": "nope/x"} for i in range(15)))
        await conn.finish()
    assert [json.loads(line)["id"] for line in output.lines()] == list(range(15))


async def test_stop_reading_answers_every_line_already_read(settings: Settings, backend: MockBackend) -> None:
    """SIGTERM while the reader waits for a free slot: the lines of the chunk in hand are still served."""
    signed_in(settings, backend, delay=WAIT, first_only=True)
    async with server(settings, max_in_flight=1) as conn:
        await conn.initialize()
        read = {"method": READ, "params": {"excludeResetCreditDetails": True}}
        conn.send({"id": 1, **read}, {"id": 2, **read}, {"id": 3, "method": "nope/x"}, {"id": 4, **read})
        await backend_requests(backend, 1)  # 1 is in flight; the reader waits for its slot to send 2
        conn.dispatcher.stop_reading()
        conn.send({"id": 5, "method": "nope/x"})  # after the stop: never read
        backend.release_delays()
        with anyio.fail_after(WAIT):
            await conn.finished.wait()
    answers = parsed(conn.output.lines()[1:])
    assert sorted(a["id"] for a in answers) == [1, 2, 3, 4]
    assert all(a["result"]["rateLimits"]["limitId"] == "codex" for a in answers if a["id"] != 3)


async def test_stop_reading_while_idle_ends_the_connection(settings: Settings) -> None:
    async with server(settings) as conn:
        await conn.call({"id": 1, "method": "nope/x"})
        with anyio.fail_after(WAIT):
            await anyio.wait_all_tasks_blocked()
        conn.dispatcher.stop_reading()
        with anyio.fail_after(WAIT):
            await conn.finished.wait()
        conn.send({"id": 2, "method": "nope/x"})
    assert conn.output.lines() == [error("1", unknown_method("nope/x"))]


async def test_a_closed_output_ends_the_connection(settings: Settings, backend: MockBackend) -> None:
    gone = anyio.Event()

    class Gone:
        """The client goes away once the read below has reached upstream: the first write fails then."""

        async def send(self, data: bytes) -> None:
            await gone.wait()
            raise anyio.BrokenResourceError

    signed_in(settings, backend, delay=60)
    async with open_services(settings) as services, connect(services, sink=Gone()) as conn:
        conn.send(INIT, {"id": 1, "method": READ, "params": {"excludeResetCreditDetails": True}})
        await backend_requests(backend, 1)  # the read is in flight at upstream
        assert not conn.finished.is_set()
        gone.set()
        with anyio.fail_after(WAIT):
            await conn.finished.wait()  # without end of input, and with the read still in flight
        assert conn.dispatcher.outbox.broken.is_set()
    assert [r.path for r in backend.recorded()] == ["/api/codex/usage"]


# -- every dropped line is logged once, in one line ------------------------------------------------------------


async def test_dropped_lines_log_one_warning_line_each(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    dropped = [b"not json", b"[]", b'{"id":1.5,"method":"nope/x"}', b'{"id":1,"id":2,"method":"x"}', b"\xff\n\n"]
    ignored = [b'{"method":"initialized"}', b'{"id":9,"result":{}}', b'{"method":"nope/x","params":[1]}']
    async with server(settings) as conn:
        conn.send(*dropped, *ignored, {"id": 1, "method": READ})
        lines = await conn.finish()
    assert lines == [error("1", "Not initialized")]
    records = warnings(caplog)
    assert len(records) == len(dropped) + 2  # b"\xff\n\n" is three lines: two of them empty
    assert all("\n" not in r.getMessage() and "no answer" in r.getMessage() for r in records)


async def test_no_auth_read_message(settings: Settings) -> None:
    async with server(settings) as conn:
        await conn.initialize()
        line = await conn.call({"id": 1, "method": READ, "params": None})
    assert json.loads(line)["error"] == {"code": -32600, "message": NO_AUTH_READ}
    assert re.fullmatch(rb'\{"error":\{"code":-32600,"message":"[^"]+"\},"id":1\}', line)
