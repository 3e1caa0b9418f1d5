"""The HTTP client for the upstream usage, reset-credit details and consume endpoints.

One shared `httpx.AsyncClient` (keep-alive), created on first use so httpx stays out of
start-up. Request headers, paths, bodies, timeouts and error texts follow CONTRACT §4–§7, with
0.171.0's `accept-encoding: zstd,gzip` (CONTRACT-0.171). Nothing here retries: a consume is sent
exactly once per call. Never trusted: a redirect is an error, never followed (the token would go
with it); a body is read as a stream, decoded to at most `Timeouts.max_body_bytes`, and the call's
deadline covers the whole exchange, body included; error texts quote at most a prefix of a body.
"""

from __future__ import annotations

import http
import http.cookiejar
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import anyio

from app_server.config import DEFAULT_BASE_URL, DEFAULT_UPSTREAM_CONNECTIONS, BaseUrl, Timeouts
from app_server.errors import CodexLimitsError
from app_server.upstream.bodies import ACCEPT_ENCODING, BodyDecodeError, read_body
from app_server.upstream.errors import CONSUME_FAILED, CONSUME_TIMED_OUT, READ_FAILED, Purpose
from app_server.upstream.payloads import (
    DecodeError,
    ResetCreditDetails,
    Usage,
    decode_consume,
    decode_details,
    decode_usage,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ErrorKind = Literal["status", "decode", "transport", "timeout", "redirect", "too_large", "config"]

# Reason phrases as upstream's HTTP stack writes them (Python's differ for a few codes).
_REASONS: Final = {418: "I'm a teapot", 413: "Payload Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable"}
QUOTED_CHARS: Final = 8000
"""How much of a body an error text quotes; the rest is counted, not shown. Upstream quotes bodies whole
(CONTRACT §7.3, a 5000-byte one observed): up to this size ours are the same."""
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class BackendError(CodexLimitsError):
    """An upstream call failed; `detail` is the text after upstream's message prefix (CONTRACT §7.3).

    Kinds: `status` (a non-2xx answer, `status` set), `decode` (a body we cannot use: not JSON as expected,
    or not in its content-encoding), `transport` (no answer), `timeout` (the deadline passed), `redirect`
    (a 3xx, not followed), `too_large` (a 2xx body over the cap), `config` (config.toml refused; nothing
    was sent). Only `config` proves the request never left. `purpose` is set by the call that failed
    (`Backend.consume` says `CONSUME`) and picks upstream's prefix.
    """

    def __init__(self, kind: ErrorKind, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind: ErrorKind = kind
        self.detail = detail
        self.status = status
        self.purpose = Purpose.READ

    def __repr__(self) -> str:
        return f"BackendError(kind={self.kind!r}, status={self.status!r}, detail={self.detail!r})"

    @property
    def message(self) -> str:
        if self.purpose is Purpose.READ:
            return READ_FAILED + self.detail
        return CONSUME_TIMED_OUT if self.kind == "timeout" else CONSUME_FAILED + self.detail


@dataclass(frozen=True)
class Caller:
    """The identity a call is made with. The token never appears in repr or logs."""

    user_agent: str
    access_token: str = field(repr=False)
    account_id: str | None = None
    fedramp: bool = False


@dataclass(frozen=True)
class Endpoints:
    """The backend's usage, details and consume URLs for one base URL."""

    usage: str
    details: str
    consume: str

    @classmethod
    def for_base(cls, base_url: str) -> Endpoints:
        """CONTRACT §7.1: `/backend-api` bases use the `wham` paths, all others `api/codex`."""
        base = base_url.rstrip("/")
        prefix = f"{base}/wham" if "/backend-api" in base else f"{base}/api/codex"
        return cls(
            usage=f"{prefix}/usage",
            details=f"{prefix}/rate-limit-reset-credits",
            consume=f"{prefix}/rate-limit-reset-credits/consume",
        )


def reason_phrase(status: int) -> str:
    if status in _REASONS:
        return _REASONS[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "<unknown status code>"


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False


class HttpPool:
    """Owns the one AsyncClient and the bound on the calls in flight. `transport` is the test seam
    (httpx.MockTransport).

    The client holds `max_connections` connections; the upstream calls (`Backend`) in flight stay
    `RESERVED` below that, so httpcore never queues a request on itself (its pool re-scans its whole
    queue on every change, which made each call slower the further the server fell behind) and a
    token refresh, which does not take a slot, always finds a connection. Calls beyond the bound
    wait in `calls`, a FIFO semaphore: the oldest call goes first, and waiting costs nothing per
    waiter. The wait counts against the call's own deadline.
    """

    RESERVED: Final = 2

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        connect_timeout: float = 10.0,
        max_connections: int = DEFAULT_UPSTREAM_CONNECTIONS,
    ) -> None:
        self._transport = transport
        self._connect_timeout = connect_timeout
        self._client: httpx.AsyncClient | None = None
        self.max_connections = max(max_connections, self.RESERVED + 1)
        self.max_calls = self.max_connections - self.RESERVED
        self._calls: anyio.Semaphore | None = None
        self.wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None
        """Set before the first call (the service's metrics): wraps the transport every request goes through."""

    @property
    def calls(self) -> anyio.Semaphore:
        """The slots of the upstream calls in flight (made in the event loop that first calls)."""
        if self._calls is None:
            self._calls = anyio.Semaphore(self.max_calls)
        return self._calls

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            # Every connection may be kept alive: under load, closing and reopening them costs more than the call.
            limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
            transport = self._transport
            if self.wrap_transport is not None:
                # httpx's own default transport for these limits (what the client would make), wrapped.
                transport = self.wrap_transport(transport or httpx.AsyncHTTPTransport(limits=limits, trust_env=False))
            self._client = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(None, connect=self._connect_timeout),
                limits=limits,
                follow_redirects=False,
                trust_env=False,
                # Upstream's HTTP client keeps no cookies: one the backend sets is never sent back.
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            )
            # Send only the headers upstream sends: no httpx user agent, no httpx accept-encoding.
            for name in list(self._client.headers.keys()):
                del self._client.headers[name]
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def quote_body(body: bytes, overflowed: bool = False) -> str:
    """A body as error texts embed it: whole when short, else its first QUOTED_CHARS characters and its size."""
    text = body.decode("utf-8", "replace")
    if len(text) <= QUOTED_CHARS and not overflowed:
        return text
    size = f"more than {len(body)}" if overflowed else str(len(body))
    return f"{text[:QUOTED_CHARS]}…({size} bytes)"


def _shown_location(location: str) -> str:
    """A redirect target for an error text: bounded, and without any user:password part."""
    import httpx

    try:
        url = httpx.URL(location)
        if url.userinfo:
            location = str(url.copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        location = "<invalid url>"
    return location if len(location) <= QUOTED_CHARS else location[:QUOTED_CHARS] + "…"


async def _whole(content: bytes) -> AsyncIterator[bytes]:
    yield content


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    body: bytes
    overflowed: bool


class Backend:
    """The three upstream calls of one Codex home, against `base` (from config.toml, maybe refused)."""

    def __init__(self, base: BaseUrl | str, pool: HttpPool, timeouts: Timeouts) -> None:
        base = BaseUrl(base) if isinstance(base, str) else base
        self._problem = base.problem
        self.base_url = base.url if base.problem is None else "(refused by config.toml)"
        self.endpoints = Endpoints.for_base(base.url if base.problem is None else DEFAULT_BASE_URL)
        self._pool = pool
        self._timeouts = timeouts
        self._parsed: dict[str, httpx.URL] = {}

    def _url(self, url: str) -> httpx.URL:
        """The parsed form of one of our few URLs, parsed once (httpx would parse the string on every call)."""
        parsed = self._parsed.get(url)
        if parsed is None:
            import httpx

            parsed = self._parsed[url] = httpx.URL(url)
        return parsed

    def _headers(self, caller: Caller, *, luna: bool = False, json_body: bool = False) -> list[tuple[str, bytes]]:
        headers: list[tuple[str, bytes]] = [("user-agent", caller.user_agent.encode("utf-8"))]
        headers.append(("authorization", b"Bearer " + caller.access_token.encode("utf-8")))
        if caller.account_id is not None:
            headers.append(("chatgpt-account-id", caller.account_id.encode("utf-8")))
        if caller.fedramp:
            headers.append(("x-openai-fedramp", b"true"))
        if luna:
            headers.append(("x-openai-codex-luna-reserve", b"1"))
        if json_body:
            headers.append(("content-type", b"application/json"))
        headers.append(("accept", b"*/*"))
        # 0.171.0: after accept, as its HTTP client adds it after the default `accept` (CONTRACT-0.171).
        headers.append(("accept-encoding", ACCEPT_ENCODING))
        return headers

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, bytes]], timeout: float, body: bytes | None = None
    ) -> _Answer:
        import httpx

        if self._problem is not None:
            raise BackendError("config", self._problem)
        client = self._pool.client()
        try:
            target = self._url(url)
        except httpx.InvalidURL:
            raise BackendError("config", f"invalid chatgpt_base_url: cannot build the url of {method} call") from None
        # Upstream sends host after accept. Listing it there is as close as we get: h11 always writes host first
        # on the wire (RFC 9112's advice); httpx appends content-length last, as upstream does.
        raw = [(name.encode("ascii"), value) for name, value in headers]
        raw.append((b"host", target.netloc))
        cap = self._timeouts.max_body_bytes
        try:
            # One deadline for the whole exchange: the wait for a slot, connecting, the head, every byte of the body.
            with anyio.fail_after(timeout):
                async with self._pool.calls, client.stream(method, target, headers=raw, content=body) as response:
                    status = response.status_code
                    if status in _REDIRECTS:
                        location = _shown_location(response.headers.get("location", ""))
                        raise BackendError(
                            "redirect",
                            f"{method} {url} failed: {status} {reason_phrase(status)}; "
                            f"redirect to {location} not followed",
                            status,
                        )
                    content_type = response.headers.get("content-type", "")
                    encodings = response.headers.get_list("content-encoding")
                    if response.is_stream_consumed:
                        # Built whole in memory (a MockTransport answer): httpx already holds it, decoded.
                        chunks, encodings = _whole(response.content), []
                    else:
                        chunks = response.aiter_raw()
                    try:
                        answer = await read_body(chunks, encodings, cap)
                    except BodyDecodeError as exc:
                        raise BackendError("decode", str(exc), status) from None
                    return _Answer(status, content_type, answer.data, answer.overflowed)
        except TimeoutError:
            raise BackendError("timeout", f"request timed out after {timeout:g} s for url ({url})") from None
        except httpx.HTTPError as exc:
            log.info("%s %s: %s", method, url, type(exc).__name__)
            raise BackendError("transport", f"error sending request for url ({url})") from None

    def _check(self, method: str, url: str, answer: _Answer) -> bytes:
        """The body of a 2xx answer; a BackendError for any other status or a body over the cap."""
        status = answer.status
        if not 200 <= status < 300:
            raise BackendError(
                "status",
                f"{method} {url} failed: {status} {reason_phrase(status)}; content-type={answer.content_type}; "
                f"body={quote_body(answer.body, answer.overflowed)}",
                status,
            )
        if answer.overflowed:
            cap = self._timeouts.max_body_bytes
            raise BackendError("too_large", f"response body from {url} exceeds {cap} bytes", status)
        return answer.body

    @staticmethod
    def _decode_error(url: str, exc: DecodeError, content_type: str, body: bytes) -> BackendError:
        return BackendError(
            "decode", f"Decode error for {url}: {exc}; content-type={content_type}; body={quote_body(body)}"
        )

    async def usage(self, caller: Caller, *, luna: bool = False) -> Usage:
        url = self.endpoints.usage
        answer = await self._send("GET", url, self._headers(caller, luna=luna), self._timeouts.usage)
        body = self._check("GET", url, answer)
        try:
            return decode_usage(body)
        except DecodeError as exc:
            raise self._decode_error(url, exc, answer.content_type, body) from None

    async def details_or_error(self, caller: Caller) -> tuple[ResetCreditDetails | None, BackendError | None]:
        """The detail rows, or the reason there are none. Never raises: details never fail a read (§4.9)."""
        url = self.endpoints.details
        try:
            answer = await self._send("GET", url, self._headers(caller), self._timeouts.details)
            body = self._check("GET", url, answer)
            try:
                return decode_details(body), None
            except DecodeError as exc:
                return None, self._decode_error(url, exc, answer.content_type, body)
        except BackendError as exc:
            return None, exc

    async def consume(self, caller: Caller, idempotency_key: str, credit_id: str | None) -> str:
        """One POST, never retried. Returns the backend code (`reset`, `nothing_to_reset`, …)."""
        url = self.endpoints.consume
        payload: dict[str, str] = {"redeem_request_id": idempotency_key}
        if credit_id is not None:
            payload["credit_id"] = credit_id
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = self._headers(caller, json_body=True)
        try:
            answer = await self._send("POST", url, headers, self._timeouts.consume, body)
            content = self._check("POST", url, answer)
            try:
                return decode_consume(content)
            except DecodeError as exc:
                raise self._decode_error(url, exc, answer.content_type, content) from None
        except BackendError as exc:
            exc.purpose = Purpose.CONSUME
            raise
