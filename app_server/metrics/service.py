"""`ServiceMetrics`: the registry of one service and what feeds it; `render()` is the `/metrics` body.

The composition root makes one per listening service and connects it: the pool's summaries (read at scrape
time), the dispatcher's observer (`observe_request`), the apply route (`count_applies`), the HTTP pool's
transport (`wrap_transport`) and the number of connections (`clients`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app_server.metrics.accounts import AccountsCollector
from app_server.metrics.upstream import BUCKETS, ObservedTransport
from app_server.pool.errors import ApplyRefused, OutcomeUnknown
from protocol import ext
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as ConsumeOutcome

if TYPE_CHECKING:
    import httpx
    from pydantic import BaseModel

    from app_server.rpc.context import RequestContext
    from app_server.rpc.dispatcher import Handler, S

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
UNKNOWN_METHOD: Final = "unknown"
"""The `method` label of a request for a method this server does not serve (client text never becomes a label)."""


APPLY_OUTCOMES: Final = (
    *(outcome.value for outcome in ConsumeOutcome),
    "replayed",
    "refused",
    "unknown",
    "error",
)


def apply_outcome(result: object) -> str:
    """The `outcome` label of one apply: upstream's outcome, `replayed` (an earlier answer sent again: nothing
    spent now), `refused`, `unknown` (the credit may have been spent; the key settles it) or `error`."""
    if isinstance(result, ext.AccountPoolApplyResponse):
        return "replayed" if result.replayed else result.outcome.value
    if isinstance(result, ApplyRefused):
        return "refused"
    if isinstance(result, OutcomeUnknown):
        return "unknown"
    return "error"


class ServiceMetrics:
    """One service's metrics. `summaries` gives the pool's current account summaries (no I/O upstream);
    `clients` the number of connections served now; `clock` is Unix seconds (injectable for tests)."""

    def __init__(
        self,
        summaries: Callable[[], Iterable[ext.AccountSummary]],
        *,
        methods: Iterable[str],
        clients: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._methods = frozenset(methods)
        self.registry.register(AccountsCollector(summaries, clock=clock))
        self.requests = Counter(
            "codex_limits_rpc_requests",
            "JSON-RPC requests answered, by method and outcome (`ok`, or the error code).",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.applies = Counter(
            "codex_limits_applies",
            "accountPool/resetCredit/apply answers by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in APPLY_OUTCOMES:  # every outcome a series from the start: rates and alerts need no absent()
            self.applies.labels(outcome)
        self.upstream_calls = Counter(
            "codex_limits_upstream_requests",
            "HTTP requests to upstream by endpoint and status class (`2xx`..`5xx`, `timeout`, `error`, `cancelled`).",
            ["endpoint", "status_class"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "codex_limits_upstream_request_duration_seconds",
            "Time to upstream's response headers, by endpoint and status class.",
            ["endpoint", "status_class"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.clients = Gauge(
            "codex_limits_connected_clients",
            "Connections served now (WebSocket and Unix socket).",
            registry=self.registry,
        )
        self.clients.set_function(lambda: float(clients()))

    def render(self) -> bytes:
        """The registry in Prometheus' text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def observe_request(self, method: str | None, error: int | None) -> None:
        """The dispatcher's observer: one answered request (`method` None when no route serves it)."""
        name = method if method is not None and method in self._methods else UNKNOWN_METHOD
        self.requests.labels(name, "ok" if error is None else str(error)).inc()

    def count_applies(self, handler: Handler[S]) -> Handler[S]:
        """`handler` (the apply route's), with each answer counted by outcome."""

        async def counted(ctx: RequestContext[S], params: Any) -> BaseModel:
            try:
                result = await handler(ctx, params)
            except Exception as exc:
                self.applies.labels(apply_outcome(exc)).inc()
                raise
            self.applies.labels(apply_outcome(result)).inc()
            return result

        return counted

    def wrap_transport(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return ObservedTransport(inner, self.upstream_calls, self.upstream_latency)
