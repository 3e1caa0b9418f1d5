"""Upstream calls by endpoint and status class, with their latency: an httpx transport wrapped around the one
HTTP pool's transport (installed by the composition root through `HttpPool.wrap_transport`).

The latency is the time to the response's headers (the body is read after, under the call's own deadline).
Endpoints are named from the URL's path (`usage`, `details`, `consume`, `token`, anything else `other`),
never from the URL itself, so a base URL or a query never becomes a label.
"""

from __future__ import annotations

import time
from typing import Final

import anyio
import httpx
from prometheus_client import Counter, Histogram

BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ENDPOINTS: Final = (
    ("/rate-limit-reset-credits/consume", "consume"),
    ("/rate-limit-reset-credits", "details"),
    ("/usage", "usage"),
    ("/oauth/token", "token"),
)


def endpoint(url: httpx.URL) -> str:
    path = url.path.rstrip("/")
    for suffix, name in ENDPOINTS:
        if path.endswith(suffix):
            return name
    return "other"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class ObservedTransport(httpx.AsyncBaseTransport):
    """Counts and times every request `inner` sends; what fails without an answer is `timeout`, `error` or
    `cancelled` (the call's deadline passed while it waited)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, calls: Counter, latency: Histogram) -> None:
        self._inner = inner
        self._calls = calls
        self._latency = latency

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = endpoint(request.url)
        started = time.perf_counter()
        outcome = "error"
        try:
            response = await self._inner.handle_async_request(request)
            outcome = status_class(response.status_code)
            return response
        except httpx.TimeoutException:
            outcome = "timeout"
            raise
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        finally:
            self._calls.labels(name, outcome).inc()
            self._latency.labels(name, outcome).observe(time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._inner.aclose()
