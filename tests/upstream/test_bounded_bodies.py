"""Upstream answers we do not trust: bodies capped after decoding, deadlines over the whole exchange, redirects
never followed, and 0.171.0's content encodings (CONTRACT-0.171.md), each through the JSON-RPC surface.

Real-socket cases use ``MockBackend`` on 127.0.0.1; bodies that must be produced as they are read (endless or
trickling) come from ``httpx.MockTransport`` with an async generator, which also counts what was pulled.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import httpx
import pytest

from app_server.config import Settings, Timeouts
from app_server.rpc.memory import Harness
from app_server.server import serve_in_memory
from app_server.upstream.backend import Endpoints, HttpPool
from app_server.world import World
from protocol.jsonrpc import INTERNAL_ERROR, RpcError
from tests.support.mock_backend import MockBackend
from tests.support.signed_home import (
    CONSUME,
    CONSUME_ROUTE,
    DETAILS,
    DETAILS_ROUTE,
    READ,
    USAGE_ROUTE,
    settings_for,
)

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

pytestmark = pytest.mark.anyio

CAP: Final = 64 * 1024
TIMEOUTS: Final = Timeouts(usage=2.0, details=1.0, consume=2.0, refresh=2.0, connect=2.0)
SMALL_CAP: Final = Timeouts(usage=2.0, details=1.0, consume=2.0, refresh=2.0, connect=2.0, max_body_bytes=CAP)
WAIT: Final = 5.0
FAKE_BASE: Final = "http://backend.test"


USAGE: Final = {"plan_type": "pro", "rate_limit_reset_credits": {"available_count": 3}}


@asynccontextmanager
async def serving(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Harness[World]]:
    http = HttpPool(transport) if transport is not None else None
    async with serve_in_memory(World(settings, http=http)) as harness:
        with anyio.fail_after(WAIT):
            await harness.initialize(name="probe", version="1.0")
        yield harness


async def error_of(harness: Harness[World], method: str, params: Any, bound: float) -> RpcError:
    with anyio.fail_after(bound), pytest.raises(RpcError) as caught:
        await harness.client.request(method, params)
    return caught.value


@pytest.fixture
def backend() -> Iterator[MockBackend]:
    with MockBackend() as mock:
        mock.set_routes(
            {USAGE_ROUTE: {"json": USAGE}, DETAILS_ROUTE: {"json": DETAILS}, CONSUME_ROUTE: {"json": {"code": "reset"}}}
        )
        yield mock


class Endless:
    """A body produced as it is read, 16 KiB at a time; `pulled` counts the bytes handed out. Stops at 64 MiB so
    that a reader without a cap fails a test instead of filling the machine."""

    CHUNK: Final = 16 * 1024
    STOP: Final = 64 << 20

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.pulled = 0

    async def body(self) -> AsyncIterator[bytes]:
        chunk = b" " * self.CHUNK
        while self.pulled < self.STOP:
            self.pulled += len(chunk)
            yield chunk
            await anyio.lowlevel.checkpoint()

    def transport(self, route: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith(route):
                return httpx.Response(self.status, content=self.body())
            if request.url.path.endswith("/usage"):
                return httpx.Response(200, json=USAGE)
            return httpx.Response(200, json=DETAILS)

        return httpx.MockTransport(handle)


# -- the cap ----------------------------------------------------------------------------------------------------


async def test_usage_body_over_the_cap_is_an_error_and_reading_stops_there(tmp_path: Path) -> None:
    endless = Endless()
    settings = settings_for(tmp_path, FAKE_BASE, SMALL_CAP)
    async with serving(settings, endless.transport("/usage")) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, SMALL_CAP.usage + 1)
        url = Endpoints.for_base(FAKE_BASE).usage
        assert (error.code, error.message) == (
            INTERNAL_ERROR,
            f"failed to fetch codex rate limits: response body from {url} exceeds {CAP} bytes",
        )
        assert endless.pulled <= CAP + 2 * Endless.CHUNK, "the body is read no further than the cap"


async def test_consume_body_over_the_cap_is_an_error(tmp_path: Path) -> None:
    endless = Endless()
    settings = settings_for(tmp_path, FAKE_BASE, SMALL_CAP)
    async with serving(settings, endless.transport("/consume")) as harness:
        error = await error_of(harness, CONSUME, {"idempotencyKey": "k"}, SMALL_CAP.consume + 1)
    url = Endpoints.for_base(FAKE_BASE).consume
    assert error.message == f"failed to consume rate limit reset: response body from {url} exceeds {CAP} bytes"
    assert endless.pulled <= CAP + 2 * Endless.CHUNK


async def test_details_over_the_cap_falls_back_to_the_usage_count(tmp_path: Path) -> None:
    endless = Endless()
    settings = settings_for(tmp_path, FAKE_BASE, SMALL_CAP)
    async with serving(settings, endless.transport("/rate-limit-reset-credits")) as harness:
        with anyio.fail_after(WAIT):
            result = await harness.client.request(READ)
    assert result["rateLimitResetCredits"] == {"availableCount": 3, "credits": None}
    assert endless.pulled <= CAP + 2 * Endless.CHUNK


async def test_error_body_over_the_cap_is_quoted_as_a_prefix_and_its_status_kept(tmp_path: Path) -> None:
    endless = Endless(status=500)
    settings = settings_for(tmp_path, FAKE_BASE, SMALL_CAP)
    async with serving(settings, endless.transport("/usage")) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, SMALL_CAP.usage + 1)
    url = Endpoints.for_base(FAKE_BASE).usage
    prefix = f"failed to fetch codex rate limits: GET {url} failed: 500 Internal Server Error; content-type=; body="
    assert error.message == prefix + " " * 8000 + f"…(more than {CAP} bytes)"
    assert endless.pulled <= CAP + 2 * Endless.CHUNK


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_a_compressed_body_is_capped_after_decoding(encoding: str, backend: MockBackend, tmp_path: Path) -> None:
    """40 MiB of JSON whitespace compresses to a few KiB; decoded it is valid JSON, but over the 4 MiB cap."""
    plain = json.dumps(USAGE).encode() + b" " * (40 << 20)
    packed = gzip.compress(plain) if encoding == "gzip" else zstd.compress(plain)
    assert len(packed) < 200_000
    backend.update_routes({USAGE_ROUTE: {"body": packed, "headers": {"content-encoding": encoding}}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, TIMEOUTS.usage + 1)
    url = Endpoints.for_base(backend.base_url).usage
    cap = TIMEOUTS.max_body_bytes
    assert cap == 4 << 20
    assert error.message == f"failed to fetch codex rate limits: response body from {url} exceeds {cap} bytes"


async def test_a_long_error_body_is_quoted_up_to_8000_characters(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes(
        {CONSUME_ROUTE: {"status": 503, "body": "é" * 9000, "headers": {"content-type": "text/plain"}}}
    )
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, CONSUME, {"idempotencyKey": "k"}, TIMEOUTS.consume + 1)
    url = Endpoints.for_base(backend.base_url).consume
    assert error.message == (
        f"failed to consume rate limit reset: POST {url} failed: 503 Service Unavailable; content-type=text/plain; "
        f"body={'é' * 8000}…(18000 bytes)"
    )


async def test_the_deadline_covers_a_body_that_never_ends(tmp_path: Path) -> None:
    """The head arrives at once, then one byte and nothing more: the call still ends at its deadline."""
    finished = anyio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        try:
            yield b"{"
            await anyio.sleep(3600)
        finally:
            finished.set()

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=trickle()))
    timeouts = Timeouts(usage=0.5, details=0.5, consume=0.5, refresh=2.0, connect=2.0)
    async with serving(settings_for(tmp_path, FAKE_BASE, timeouts), transport) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, timeouts.usage + 1)
        url = Endpoints.for_base(FAKE_BASE).usage
        assert error.message == f"failed to fetch codex rate limits: request timed out after 0.5 s for url ({url})"
        with anyio.fail_after(WAIT):
            await finished.wait()  # the body stream was closed, not left running


# -- redirects ----------------------------------------------------------------------------------------------------


async def test_a_consume_redirect_is_not_followed_and_no_header_reaches_the_target(
    backend: MockBackend, tmp_path: Path
) -> None:
    with MockBackend() as elsewhere:
        elsewhere.set_routes({CONSUME_ROUTE: {"json": {"code": "reset"}}})
        target = f"{elsewhere.base_url}/api/codex/rate-limit-reset-credits/consume"
        backend.update_routes({CONSUME_ROUTE: {"status": 307, "headers": {"location": target}}})
        async with serving(settings_for(tmp_path, backend.base_url)) as harness:
            error = await error_of(harness, CONSUME, {"idempotencyKey": "k"}, TIMEOUTS.consume + 1)
            # A later request on the same connection pool still goes only where it should.
            with anyio.fail_after(WAIT):
                await harness.client.request(READ, {"excludeResetCreditDetails": True})
        url = Endpoints.for_base(backend.base_url).consume
        assert error.message == (
            f"failed to consume rate limit reset: POST {url} failed: 307 Temporary Redirect; "
            f"redirect to {target} not followed"
        )
        assert elsewhere.recorded() == [], "nothing, and so no token or account id, reaches the redirect target"
    assert [r.path for r in backend.recorded()] == ["/api/codex/rate-limit-reset-credits/consume", "/api/codex/usage"]


@pytest.mark.parametrize("status", [301, 302, 303, 308])
async def test_a_read_redirect_is_an_error_naming_the_target(status: int, backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes(
        {USAGE_ROUTE: {"status": status, "headers": {"location": "http://user:hunter2@elsewhere.test/usage"}}}
    )
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, TIMEOUTS.usage + 1)
    url = Endpoints.for_base(backend.base_url).usage
    phrase = {301: "Moved Permanently", 302: "Found", 303: "See Other", 308: "Permanent Redirect"}[status]
    assert error.message == (
        f"failed to fetch codex rate limits: GET {url} failed: {status} {phrase}; "
        "redirect to http://elsewhere.test/usage not followed"
    )
    assert len(backend.recorded()) == 1


# -- 0.171.0: accept-encoding and decoding ---------------------------------------------------------------------------


async def test_every_backend_call_advertises_zstd_and_gzip_right_after_accept(
    backend: MockBackend, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            await harness.client.request(READ)
            await harness.client.request(CONSUME, {"idempotencyKey": "k"})
    calls = backend.recorded()
    assert sorted(r.path.rsplit("/", 1)[-1] for r in calls) == ["consume", "rate-limit-reset-credits", "usage"]
    for request in calls:
        assert request.header("accept-encoding") == "zstd,gzip", request.path
        names = [n for n in request.header_names() if n != "host"]
        assert names[-2:] == ["accept", "accept-encoding"] or names[-3:] == [
            "accept",
            "accept-encoding",
            "content-length",
        ]


def packed(encoding: str, data: bytes) -> bytes:
    return gzip.compress(data) if encoding == "gzip" else zstd.compress(data)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_compressed_bodies_give_the_same_results_as_plain_ones(
    encoding: str, backend: MockBackend, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            plain_read = await harness.client.request(READ)
        headers = {"content-encoding": encoding, "content-type": "application/json"}
        backend.update_routes(
            {
                USAGE_ROUTE: {"body": packed(encoding, json.dumps(USAGE).encode()), "headers": headers},
                DETAILS_ROUTE: {"body": packed(encoding, json.dumps(DETAILS).encode()), "headers": headers},
                CONSUME_ROUTE: {"body": packed(encoding, b'{"code": "no_credit"}'), "headers": headers},
            }
        )
        with anyio.fail_after(WAIT):
            read = await harness.client.request(READ)
            consumed = await harness.client.request(CONSUME, {"idempotencyKey": "k"})
    assert read == plain_read
    assert read["rateLimitResetCredits"]["availableCount"] == 2, "the decoded details were used"
    assert consumed == {"outcome": "noCredit"}


async def test_several_gzip_members_are_one_body(backend: MockBackend, tmp_path: Path) -> None:
    text = json.dumps(USAGE).encode()
    body = gzip.compress(text[:10]) + gzip.compress(text[10:])
    backend.update_routes({USAGE_ROUTE: {"body": body, "headers": {"content-encoding": "gzip"}}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            result = await harness.client.request(READ, {"excludeResetCreditDetails": True})
    assert result["rateLimits"]["planType"] == "pro"


BOGUS: Final = {
    "gzip header over a plain body": (json.dumps(USAGE).encode(), "gzip"),
    "zstd header over a plain body": (json.dumps(USAGE).encode(), "zstd"),
    "truncated gzip": (gzip.compress(json.dumps(USAGE).encode())[:-6], "gzip"),
    "gzip followed by junk": (gzip.compress(json.dumps(USAGE).encode()) + b"junk!junk!", "gzip"),
}


@pytest.mark.parametrize("case", sorted(BOGUS))
async def test_read_of_a_body_not_in_its_encoding(case: str, backend: MockBackend, tmp_path: Path) -> None:
    body, encoding = BOGUS[case]
    backend.update_routes({USAGE_ROUTE: {"body": body, "headers": {"content-encoding": encoding}}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, TIMEOUTS.usage + 1)
    assert (error.code, error.message) == (
        INTERNAL_ERROR,
        "failed to fetch codex rate limits: error decoding response body",
    )


async def test_consume_of_a_body_not_in_its_encoding(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({CONSUME_ROUTE: {"json": {"code": "reset"}, "headers": {"content-encoding": "gzip"}}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, CONSUME, {"idempotencyKey": "k"}, TIMEOUTS.consume + 1)
    assert (error.code, error.message) == (
        INTERNAL_ERROR,
        "failed to consume rate limit reset: error decoding response body",
    )


async def test_details_not_in_their_encoding_fall_back_to_the_usage_count(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({DETAILS_ROUTE: {"json": DETAILS, "headers": {"content-encoding": "gzip"}}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            result = await harness.client.request(READ)
    assert result["rateLimitResetCredits"] == {"availableCount": 3, "credits": None}


async def test_an_error_with_a_gzip_body_quotes_the_decoded_body(backend: MockBackend, tmp_path: Path) -> None:
    headers = {"content-encoding": "gzip", "content-type": "text/plain"}
    backend.update_routes({USAGE_ROUTE: {"status": 500, "body": gzip.compress(b"upstream broke"), "headers": headers}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, TIMEOUTS.usage + 1)
    url = Endpoints.for_base(backend.base_url).usage
    assert error.message == (
        f"failed to fetch codex rate limits: GET {url} failed: 500 Internal Server Error; "
        "content-type=text/plain; body=upstream broke"
    )


async def test_an_error_with_a_bogus_gzip_body_is_a_decoding_error(backend: MockBackend, tmp_path: Path) -> None:
    backend.update_routes({USAGE_ROUTE: {"status": 500, "body": "not gzip", "headers": {"content-encoding": "gzip"}}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        error = await error_of(harness, READ, {"excludeResetCreditDetails": True}, TIMEOUTS.usage + 1)
    assert error.message == "failed to fetch codex rate limits: error decoding response body"


@pytest.mark.parametrize("encoding", ["br", "deflate", "GZIP"])
async def test_encodings_not_advertised_are_left_as_they_came(
    encoding: str, backend: MockBackend, tmp_path: Path
) -> None:
    """As upstream: only exactly `gzip` and `zstd` are decoded; a plain JSON body under another name is used."""
    backend.update_routes({USAGE_ROUTE: {"json": USAGE, "headers": {"content-encoding": encoding}}})
    async with serving(settings_for(tmp_path, backend.base_url)) as harness:
        with anyio.fail_after(WAIT):
            result = await harness.client.request(READ, {"excludeResetCreditDetails": True})
    assert result["rateLimits"]["planType"] == "pro"
