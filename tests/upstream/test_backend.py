"""Backend failures end to end: the exact error for each kind of failure, timeouts, no retries, queueing.

The server runs in memory against ``MockBackend`` on 127.0.0.1 with short timeouts. Time bounds are the
ones the contract's timeouts imply ("within the timeout plus a second"); ordering is asserted with events
(what the mock has recorded, which answers exist), not sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from app_server.config import Settings, Timeouts
from app_server.rpc.memory import Harness
from app_server.server import initialized as server
from app_server.upstream.backend import Endpoints
from app_server.upstream.payloads import DecodeError, decode_consume, decode_usage
from app_server.world import World
from protocol.jsonrpc import INTERNAL_ERROR, RpcError
from tests.support import replay as rs
from tests.support.mock_backend import MockBackend, unused_port
from tests.support.signed_home import (
    CONSUME,
    CONSUME_ROUTE,
    DETAILS,
    DETAILS_ROUTE,
    READ,
    USAGE_ROUTE,
    settings_for,
)

pytestmark = pytest.mark.anyio

TIMEOUTS: Final = Timeouts(usage=1.0, details=0.5, consume=1.0, refresh=2.0, connect=2.0)
SLOW_CONSUME: Final = Timeouts(usage=1.0, details=0.5, consume=10.0, refresh=2.0, connect=2.0)
NEVER: Final = 60.0
WAIT: Final = 5.0


USAGE: Final = {
    "plan_type": "pro",
    "rate_limit": {
        "allowed": True,
        "limit_reached": False,
        "primary_window": {"used_percent": 42, "limit_window_seconds": 3600, "reset_after_seconds": 1, "reset_at": 1},
        "secondary_window": None,
    },
    "rate_limit_reset_credits": {"available_count": 3},
}


@pytest.fixture
def backend() -> Iterator[MockBackend]:
    with MockBackend() as mock:
        mock.set_routes(
            {USAGE_ROUTE: {"json": USAGE}, DETAILS_ROUTE: {"json": DETAILS}, CONSUME_ROUTE: {"json": {"code": "reset"}}}
        )
        yield mock


async def error_of(harness: Harness[World], method: str, params: Any, bound: float) -> RpcError:
    """The error answer to one request, which must arrive within `bound` seconds."""
    with anyio.fail_after(bound), pytest.raises(RpcError) as caught:
        await harness.client.request(method, params)
    return caught.value


def count(backend: MockBackend, method: str, path: str) -> int:
    return sum(1 for r in backend.recorded() if r.method == method and r.path == path)


# -- each failure kind, read and consume -------------------------------------------------------------------------

Failure = tuple[dict[str, Any], str]


def failures(url: str, method: str) -> dict[str, Failure]:
    """Route spec -> the detail text after the `failed to …: ` prefix (CONTRACT §7.3)."""
    return {
        "500 with body": (
            {"status": 500, "body": 'boom\nline 2 "quoted" é', "headers": {"content-type": "text/plain"}},
            f'{method} {url} failed: 500 Internal Server Error; content-type=text/plain; body=boom\nline 2 "quoted" é',
        ),
        "401": (
            {"status": 401, "json": {"detail": "Unauthorized"}},
            f"{method} {url} failed: 401 Unauthorized; "
            'content-type=application/json; body={"detail": "Unauthorized"}',
        ),
        "invalid JSON": (
            {"status": 200, "body": "not json", "headers": {"content-type": "application/json"}},
            f"Decode error for {url}: expected ident at line 1 column 2; content-type=application/json; body=not json",
        ),
        "connection closed": ({"action": "close"}, f"error sending request for url ({url})"),
    }


@pytest.mark.parametrize("kind", ["500 with body", "401", "invalid JSON", "connection closed"])
async def test_read_failure_gives_the_exact_error_once(kind: str, backend: MockBackend, tmp_path: Path) -> None:
    url = Endpoints.for_base(backend.base_url).usage
    spec, detail = failures(url, "GET")[kind]
    backend.update_routes({USAGE_ROUTE: spec})
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, TIMEOUTS.usage + 1)
    assert (error.code, error.message) == (INTERNAL_ERROR, "failed to fetch codex rate limits: " + detail)
    assert count(backend, "GET", "/api/codex/usage") == 1, "a failed usage call is not retried"
    assert count(backend, "POST", "/oauth/token") == 0, "a 401 never triggers a token refresh"


async def test_read_connection_refused(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{unused_port()}"
    async with server(settings_for(tmp_path, base)) as harness:
        error = await error_of(harness, READ, None, TIMEOUTS.usage + 1)
    url = Endpoints.for_base(base).usage
    assert error.message == f"failed to fetch codex rate limits: error sending request for url ({url})"


async def test_read_backend_that_never_answers_times_out(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({USAGE_ROUTE: {"json": USAGE, "delay": NEVER}})
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, TIMEOUTS.usage + 1)
    url = Endpoints.for_base(backend.base_url).usage
    assert error.code == INTERNAL_ERROR
    assert error.message == f"failed to fetch codex rate limits: request timed out after 1 s for url ({url})"
    assert count(backend, "GET", "/api/codex/usage") == 1


@pytest.mark.parametrize("kind", ["500 with body", "401", "invalid JSON", "connection closed"])
async def test_consume_failure_gives_the_exact_error_and_is_never_retried(
    kind: str, backend: MockBackend, tmp_path: Path
) -> None:
    url = Endpoints.for_base(backend.base_url).consume
    spec, detail = failures(url, "POST")[kind]
    backend.update_routes({CONSUME_ROUTE: spec})
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, CONSUME, {"idempotencyKey": "k1"}, TIMEOUTS.consume + 1)
        assert (error.code, error.message) == (INTERNAL_ERROR, "failed to consume rate limit reset: " + detail)
        assert count(backend, "POST", "/api/codex/rate-limit-reset-credits/consume") == 1
        # The next consume is one more request, not a replay of the failed one.
        backend.update_routes({CONSUME_ROUTE: {"json": {"code": "already_redeemed"}}})
        with anyio.fail_after(WAIT):
            result = await harness.client.request(CONSUME, {"idempotencyKey": "k1"})
    assert result == {"outcome": "alreadyRedeemed"}
    posts = [r for r in backend.recorded() if r.path.endswith("/consume")]
    assert [p.body for p in posts] == [b'{"redeem_request_id":"k1"}'] * 2


async def test_consume_connection_refused_is_not_retried(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{unused_port()}"
    async with server(settings_for(tmp_path, base)) as harness:
        error = await error_of(harness, CONSUME, {"idempotencyKey": "k"}, TIMEOUTS.consume + 1)
    url = Endpoints.for_base(base).consume
    assert error.message == f"failed to consume rate limit reset: error sending request for url ({url})"


async def test_a_consume_whose_connection_drops_is_sent_once(tmp_path: Path) -> None:
    """Counted at the socket: a connection that is accepted and then dropped is never tried again."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.1)
        accepted: list[int] = []
        stop = threading.Event()

        def accept_and_drop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                accepted.append(1)
                conn.recv(65536)
                conn.close()

        thread = threading.Thread(target=accept_and_drop, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        try:
            async with server(settings_for(tmp_path, base)) as harness:
                error = await error_of(harness, CONSUME, {"idempotencyKey": "k"}, TIMEOUTS.consume + 1)
        finally:
            stop.set()
            thread.join(5)
    assert error.message.startswith("failed to consume rate limit reset: ")
    assert len(accepted) == 1


async def test_consume_timeout_message_and_no_retry(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({CONSUME_ROUTE: {"json": {"code": "reset"}, "delay": NEVER}})
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, CONSUME, {"idempotencyKey": "k"}, TIMEOUTS.consume + 1)
    assert (error.code, error.message) == (INTERNAL_ERROR, "rate limit reset consume timed out")
    assert count(backend, "POST", "/api/codex/rate-limit-reset-credits/consume") == 1


async def test_cookies_set_by_the_backend_are_never_sent_back(backend: MockBackend, tmp_path: Path) -> None:
    """Upstream's HTTP client keeps no cookies (a Cloudflare `__cf_bm` must not come back on the next call)."""
    cookie = {"set-cookie": "__cf_bm=abc123; Path=/; HttpOnly", "content-type": "application/json"}
    backend.update_routes(
        {USAGE_ROUTE: {"json": USAGE, "headers": cookie}, CONSUME_ROUTE: {"json": {"code": "reset"}, "headers": cookie}}
    )
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            await harness.client.request(READ)
            await harness.client.request(CONSUME, {"idempotencyKey": "k"})
            await harness.client.request(READ)
    assert len(backend.recorded()) == 5
    assert [r.header("cookie") for r in backend.recorded()] == [None] * 5


# -- the details call ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("usage_delay", [0.0, 0.2])
async def test_slow_details_cost_at_most_the_details_timeout(
    usage_delay: float, backend: MockBackend, tmp_path: Path
) -> None:
    """Details that would answer after NEVER seconds: the read answers within the details timeout (+1 s), with
    the usage count, so before the delayed details route could have answered."""
    backend.update_routes(
        {USAGE_ROUTE: {"json": USAGE, "delay": usage_delay}, DETAILS_ROUTE: {"json": DETAILS, "delay": NEVER}}
    )
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(TIMEOUTS.details + 1):
            result = await harness.client.request(READ)
    assert result["rateLimitResetCredits"] == {"availableCount": 3, "credits": None}
    assert count(backend, "GET", "/api/codex/rate-limit-reset-credits") == 1


async def test_details_in_time_are_used(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({DETAILS_ROUTE: {"json": DETAILS, "delay": TIMEOUTS.details / 5}})
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(TIMEOUTS.details + 1):
            result = await harness.client.request(READ)
    assert result["rateLimitResetCredits"]["availableCount"] == 2
    assert [c["id"] for c in result["rateLimitResetCredits"]["credits"]] == ["c1"]


@pytest.mark.parametrize("spec", [{"status": 500, "body": "x"}, {"action": "close"}, {"json": {"credits": []}}])
async def test_details_failure_never_fails_the_read(spec: dict[str, Any], backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({DETAILS_ROUTE: spec})
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            result = await harness.client.request(READ)
    assert result["rateLimitResetCredits"] == {"availableCount": 3, "credits": None}


async def test_excluded_details_are_not_requested(backend: MockBackend, tmp_path: Path) -> None:
    async with server(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            await harness.client.request(READ, {"excludeResetCreditDetails": True})
    assert [r.path for r in backend.recorded()] == ["/api/codex/usage"]


# -- concurrency -----------------------------------------------------------------------------------------------------


@dataclass
class Raw:
    """Our server driven with raw lines (to control the exact order of what is sent)."""

    server: rs.InMemoryServer

    async def send(self, message: dict[str, Any]) -> None:
        await self.server.send(json.dumps(message).encode() + b"\n")

    def answers(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.server.output.lines]

    async def wait_answers(self, n: int) -> list[dict[str, Any]]:
        with anyio.fail_after(WAIT):
            await self.server.output.wait_for(n)
        return self.answers()


@asynccontextmanager
async def raw_server(settings: Settings) -> AsyncIterator[Raw]:
    async with anyio.create_task_group() as tg:
        raw = Raw(rs.InMemoryServer(World(settings), tg))
        await raw.send({"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "probe", "version": "1"}}})
        await raw.wait_answers(1)
        try:
            yield raw
        finally:
            await raw.server.close_input()
            with anyio.fail_after(SLOW_CONSUME.consume + WAIT):
                await raw.server.wait_exit()


async def wait_recorded(backend: MockBackend, n: int) -> None:
    await rs.wait_requests(backend, n)


async def test_reads_are_not_queued_behind_a_slow_consume(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({CONSUME_ROUTE: {"json": {"code": "reset"}, "delay": NEVER}})
    async with raw_server(settings_for(tmp_path, backend.base_url, SLOW_CONSUME)) as raw:
        await raw.send({"id": "slow", "method": CONSUME, "params": {"idempotencyKey": "k"}})
        await wait_recorded(backend, 1)
        for i in range(3):
            await raw.send({"id": f"read-{i}", "method": READ, "params": {"excludeResetCreditDetails": True}})
        answers = await raw.wait_answers(1 + 3)
        assert sorted(a["id"] for a in answers[1:]) == ["read-0", "read-1", "read-2"]
        assert all("result" in a for a in answers[1:])
        backend.release_delays()
        answers = await raw.wait_answers(1 + 3 + 1)
    assert answers[-1] == {"id": "slow", "result": {"outcome": "reset"}}


async def test_consumes_run_one_at_a_time_in_arrival_order(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes(
        {CONSUME_ROUTE: [{"json": {"code": "reset"}, "delay": NEVER}, {"json": {"code": "nothing_to_reset"}}]}
    )
    keys = ["A", "B", "C", "D"]
    async with raw_server(settings_for(tmp_path, backend.base_url, SLOW_CONSUME)) as raw:
        await raw.send({"id": "A", "method": CONSUME, "params": {"idempotencyKey": "A"}})
        await wait_recorded(backend, 1)
        for key in keys[1:]:
            await raw.send({"id": key, "method": CONSUME, "params": {"idempotencyKey": key}})
        # A read sent after B, C and D makes a full backend round trip: had any of them not been queued, its POST
        # would have reached the mock by the time the read is answered.
        await raw.send({"id": "probe-read", "method": READ, "params": {"excludeResetCreditDetails": True}})
        answers = await raw.wait_answers(2)
        assert answers[1]["id"] == "probe-read"
        assert count(backend, "POST", "/api/codex/rate-limit-reset-credits/consume") == 1
        backend.release_delays()
        answers = await raw.wait_answers(2 + len(keys))
    posts = [json.loads(r.body)["redeem_request_id"] for r in backend.recorded() if r.method == "POST"]
    assert posts == keys
    assert [a["id"] for a in answers[2:]] == keys
    assert [a["result"]["outcome"] for a in answers[2:]] == [
        "reset",
        "nothingToReset",
        "nothingToReset",
        "nothingToReset",
    ]


async def test_a_timed_out_consume_frees_the_queue(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes(
        {CONSUME_ROUTE: [{"json": {"code": "reset"}, "delay": NEVER}, {"json": {"code": "nothing_to_reset"}}]}
    )
    async with raw_server(settings_for(tmp_path, backend.base_url)) as raw:
        await raw.send({"id": "A", "method": CONSUME, "params": {"idempotencyKey": "A"}})
        await wait_recorded(backend, 1)
        await raw.send({"id": "B", "method": CONSUME, "params": {"idempotencyKey": "B"}})
        with anyio.fail_after(TIMEOUTS.consume + 1):
            answers = await raw.wait_answers(3)
    assert answers[1] == {"error": {"code": INTERNAL_ERROR, "message": "rate limit reset consume timed out"}, "id": "A"}
    assert answers[2] == {"id": "B", "result": {"outcome": "nothingToReset"}}
    assert [json.loads(r.body)["redeem_request_id"] for r in backend.recorded()] == ["A", "B"]


# -- decoding details the replay cannot see ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"code": "reset", "windows_reset": "2"}', 'invalid type: string "2", expected i64 at line 1 column 38'),
        (
            b'{"code": "reset", "windows_reset": 1.5}',
            "invalid type: floating point `1.5`, expected i64 at line 1 column 38",
        ),
        (b'{"code": "reset", "windows_reset": null}', "invalid type: null, expected i64 at line 1 column 39"),
        (b'{"code": 5}', "expected value at line 1 column 10"),
        (b'{"code": "reset", "windows_reset": NaN}', "expected value at line 1 column 36"),
        (b'{"code": "\\ud800"}', "unexpected end of hex escape at line 1 column 17"),
        (b'{"code": "\\udc00"}', "lone leading surrogate in hex escape at line 1 column 16"),
        (b'{"code": "\\ud800\\u0041"}', "lone leading surrogate in hex escape at line 1 column 22"),
        (
            b'{"code": "\\ud83d\\ude00"}',
            "unknown variant `\U0001f600`, expected one of `reset`, `nothing_to_reset`, "
            "`no_credit`, `already_redeemed` at line 1 column 23",
        ),
        (b'{"code": "r\xffeset"}', "invalid unicode code point at line 1 column 12"),
        (b'{"code": "reset"', "EOF while parsing an object at line 1 column 16"),
        (b'{"code": "reset",}', "trailing comma at line 1 column 18"),
        (b'{"code": "reset"} x', "trailing characters at line 1 column 19"),
        (b'{"code" "reset"}', "expected `:` at line 1 column 9"),
        (b"[1 2]", "expected `,` or `]` at line 1 column 4"),
        (
            b'{\n  "code": "no_such"\n}',
            "unknown variant `no_such`, expected one of `reset`, `nothing_to_reset`, "
            "`no_credit`, `already_redeemed` at line 2 column 19",
        ),
        (b"", "EOF while parsing a value at line 1 column 0"),
        (b"   ", "EOF while parsing a value at line 1 column 3"),
    ],
)
def test_consume_decode_names_the_integer_width(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_consume(body)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("used_percent", 1.5, "invalid type: floating point `1.5`, expected i32"),
        ("reset_at", "1", 'invalid type: string "1", expected i64'),
        ("reset_at", 2**63, "invalid value: integer `9223372036854775808`, expected i64"),
        ("limit_window_seconds", 2**31, "invalid value: integer `2147483648`, expected i32"),
    ],
)
def test_usage_decode_names_the_integer_width(field: str, value: Any, message: str) -> None:
    """Members of `rate_limit` are reported at the end of the document, as upstream decodes them late."""
    window = {"used_percent": 1, "limit_window_seconds": 60, "reset_after_seconds": 1, "reset_at": 1, field: value}
    body = json.dumps(
        {"plan_type": "pro", "rate_limit": {"allowed": True, "limit_reached": False, "primary_window": window}}
    )
    with pytest.raises(DecodeError) as caught:
        decode_usage(body.encode())
    assert str(caught.value) == f"{message} at line 1 column {len(body)}"


def test_usage_decode_reports_the_earliest_error_at_its_own_position() -> None:
    """`account_id` is decoded in place: its error comes before a `rate_limit` one found at the end."""
    body = '{"account_id": 5, "rate_limit": {}, "plan_type": "pro"}'
    with pytest.raises(DecodeError) as caught:
        decode_usage(body.encode())
    assert str(caught.value) == "invalid type: integer `5`, expected a string at line 1 column 16"


@pytest.mark.parametrize(
    "body",
    [b'{"plan_type": "pro", "rate_limit_upsell": NaN}', b'{"plan_type": "pro", "account_id": "\\udc00x"}'],
)
def test_usage_rejects_what_json_does_not_allow(body: bytes) -> None:
    """Python's json takes NaN and lone surrogates; serde does not, and our encoder could not write them back."""
    with pytest.raises(DecodeError):
        decode_usage(body)


def test_usage_accepts_64_bit_timestamps() -> None:
    window = {"used_percent": 1, "limit_window_seconds": 60, "reset_after_seconds": 1, "reset_at": 2**40}
    body = {"plan_type": "pro", "rate_limit": {"allowed": True, "limit_reached": False, "primary_window": window}}
    usage = decode_usage(json.dumps(body).encode())
    assert usage.rate_limit is not None and usage.rate_limit.primary_window is not None
    assert usage.rate_limit.primary_window.reset_at == 2**40


# -- the bound on calls in flight -------------------------------------------------------------------------------


async def test_upstream_calls_in_flight_never_exceed_the_bound_and_start_in_arrival_order(tmp_path: Path) -> None:
    """A burst of 100 calls against a client of 10 connections: at most 8 on the wire at once (two kept for
    token refreshes), the rest waiting in our FIFO queue, not in httpcore's; they start in the order they came."""
    import httpx

    from app_server.upstream.backend import Backend, Caller, HttpPool

    in_flight = peak = 0
    started: list[str] = []
    gate = anyio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        started.append(request.headers["user-agent"])
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await gate.wait()
        finally:
            in_flight -= 1
        return httpx.Response(200, json=USAGE)

    pool = HttpPool(httpx.MockTransport(handle), max_connections=10)
    backend = Backend("http://backend.test", pool, Timeouts(usage=NEVER))  # the wait counts: no deadline here
    done: list[int] = []

    async def call(i: int) -> None:
        await backend.usage(Caller(user_agent=str(i), access_token="t"))
        done.append(i)

    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(call, i)
                await anyio.wait_all_tasks_blocked()
                assert (in_flight, pool.max_calls) == (8, 8)
                gate.set()
    finally:
        await pool.aclose()
    assert peak == 8 and len(done) == 100
    assert started == [str(i) for i in range(100)]


async def test_a_call_that_waits_past_its_deadline_for_a_slot_gets_the_timeout_error(tmp_path: Path) -> None:
    """The deadline covers the wait for a slot: the same error text as a call that upstream never answered."""
    import httpx

    from app_server.upstream.backend import Backend, BackendError, Caller, HttpPool

    holding = anyio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        holding.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    pool = HttpPool(httpx.MockTransport(handle), max_connections=3)  # one slot
    backend = Backend("http://backend.test", pool, Timeouts(usage=NEVER, details=0.2))
    caller = Caller(user_agent="ua", access_token="t")
    try:
        with anyio.fail_after(NEVER):
            async with anyio.create_task_group() as tg:
                tg.start_soon(backend.usage, caller)
                await holding.wait()
                rows, error = await backend.details_or_error(caller)  # never reaches upstream
                tg.cancel_scope.cancel()
    finally:
        await pool.aclose()
    assert rows is None and isinstance(error, BackendError)
    url = Endpoints.for_base("http://backend.test").details
    assert (error.kind, error.detail) == ("timeout", f"request timed out after 0.2 s for url ({url})")
