"""Delivering alerts to the configured sinks in the background, never holding up the pool.

`AlertDelivery.submit(alert)` is the listener `LiveUpdates` calls with each alert it raises: it only
appends to each interested sink's bounded queue (synchronous, never waits), so a sink that is down or
hangs can slow nothing but its own queue. When a queue is full its oldest alert is dropped and counted.

`AlertDelivery.run()` drains every queue, one worker per sink, in order: each alert is POSTed until a
2xx answer, retried after a transport error, a timeout, 408, 425, 429 or a 5xx with exponential
backoff and jitter (honouring a `Retry-After` in seconds), up to the sink's `max_attempts`; another
4xx is final. Every failure is logged by the sink's label (never its URL, which may carry a secret,
nor the secret) and counted in `stats`.

Its own small httpx client, not the upstream `HttpPool`: that one reserves its connections and call
slots for upstream, strips every default header, and must never wait behind a hanging alert receiver.
Time (`sleep`, `now`) and jitter (`rand`) are injectable so tests drive retries without waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import anyio

from app_server.pool.delivery.sinks import USER_AGENT, Outgoing, ntfy_message, signed_headers, webhook_body
from protocol import ext

if TYPE_CHECKING:
    import httpx

    from app_server.pool.delivery.settings import SinkSettings

log = logging.getLogger(__name__)

BASE_DELAY: Final = 2.0
MAX_DELAY: Final = 300.0
_DROP_LOG_EVERY: Final = 100
_RETRY_STATUS: Final = frozenset({408, 425, 429})


@dataclass
class SinkStats:
    """What happened to the alerts meant for one sink (counters only grow)."""

    queued: int = 0
    delivered: int = 0
    failed: int = 0
    """Given up on: a final 4xx, or `max_attempts` used up."""
    dropped: int = 0
    """Pushed out of a full queue before being sent."""
    retries: int = 0
    errors: int = 0
    """Attempts that failed, retried or not."""


@dataclass
class _Sink:
    settings: SinkSettings
    queue: deque[Outgoing]
    stats: SinkStats = field(default_factory=SinkStats)
    wake: anyio.Event | None = None


class AlertDelivery:
    """The configured sinks, their queues and counters.

    Parameters:
        sinks: what to deliver to.
        transport: the httpx transport (tests: `httpx.MockTransport`); None: the network.
        sleep: waits between attempts; `now`: the Unix time a webhook signs; `rand`: [0, 1) for jitter.
        base_delay, max_delay: the first retry's delay and the cap of every delay, in seconds.
    """

    def __init__(
        self,
        sinks: Sequence[SinkSettings],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        now: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self._sinks = [_Sink(s, deque()) for s in sinks]
        self._transport = transport
        self._sleep = sleep
        self._now = now
        self._rand = rand
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._changed: anyio.Event | None = None

    @property
    def stats(self) -> dict[str, SinkStats]:
        """Per sink label (kind and host, or its configured name)."""
        return {sink.settings.label: sink.stats for sink in self._sinks}

    def pending(self) -> int:
        """Alerts waiting in the queues (not counting one in flight per sink)."""
        return sum(len(sink.queue) for sink in self._sinks)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; it is checked again after each attempt's outcome is counted."""
        while not condition():
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def _counted(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def submit(self, alert: ext.AccountPoolAlert) -> None:
        """Queue `alert` for every sink that wants its severity. Never waits, never raises."""
        for sink in self._sinks:
            try:
                if not sink.settings.wants(alert):
                    continue
                if sink.settings.kind == "webhook":
                    outgoing = webhook_body(alert)
                else:
                    outgoing = ntfy_message(alert, sink.settings.secret)
                if len(sink.queue) >= sink.settings.queue:
                    sink.queue.popleft()
                    sink.stats.dropped += 1
                    if sink.stats.dropped % _DROP_LOG_EVERY == 1:  # a receiver down for hours: not a line per alert
                        log.warning(
                            "alert sink %s: queue full (%d alerts), dropped its oldest alert (%d dropped so far)",
                            sink.settings.label,
                            sink.settings.queue,
                            sink.stats.dropped,
                        )
                sink.queue.append(outgoing)
                sink.stats.queued += 1
                if sink.wake is not None:
                    sink.wake.set()
            except Exception:
                log.exception("queueing an alert for %s failed", sink.settings.label)

    async def run(self) -> None:
        """Deliver until cancelled (the server's task group owns it)."""
        import httpx

        hide = _HideSinkUrls([str(httpx.URL(sink.settings.url)) for sink in self._sinks])
        httpx_log = logging.getLogger("httpx")
        httpx_log.addFilter(hide)
        try:
            async with (
                httpx.AsyncClient(
                    transport=self._transport,
                    follow_redirects=False,  # a redirect would carry the signed body somewhere unconfigured
                    trust_env=False,
                    headers={"User-Agent": USER_AGENT},
                ) as client,
                anyio.create_task_group() as tg,
            ):
                for sink in self._sinks:
                    tg.start_soon(self._worker, client, sink)
        finally:
            httpx_log.removeFilter(hide)

    async def _worker(self, client: httpx.AsyncClient, sink: _Sink) -> None:
        while True:
            if not sink.queue:
                sink.wake = anyio.Event()
                await sink.wake.wait()
                sink.wake = None
                continue
            outgoing = sink.queue.popleft()  # in flight: a full queue drops the oldest waiting, not this one
            try:
                await self._deliver(client, sink, outgoing)
            except Exception:
                sink.stats.failed += 1
                log.exception("alert sink %s: delivering alert %s failed", sink.settings.label, outgoing.alert_id)
            finally:
                self._counted()

    async def _deliver(self, client: httpx.AsyncClient, sink: _Sink, outgoing: Outgoing) -> None:
        settings = sink.settings
        for attempt in range(1, settings.max_attempts + 1):
            status, problem, retry_after = await self._attempt(client, settings, outgoing)
            if status is not None and 200 <= status < 300:
                sink.stats.delivered += 1
                if attempt > 1:
                    log.info(
                        "alert sink %s: alert %s delivered on attempt %d", settings.label, outgoing.alert_id, attempt
                    )
                return
            sink.stats.errors += 1
            self._counted()
            final = status is not None and status < 500 and status not in _RETRY_STATUS
            if final or attempt == settings.max_attempts:
                sink.stats.failed += 1
                log.warning(
                    "alert sink %s: gave up on alert %s after %d attempt%s: %s",
                    settings.label,
                    outgoing.alert_id,
                    attempt,
                    "" if attempt == 1 else "s",
                    problem,
                )
                return
            delay = self._delay(attempt, retry_after)
            log.warning(
                "alert sink %s: alert %s not delivered (%s); retrying in %.1f s",
                settings.label,
                outgoing.alert_id,
                problem,
                delay,
            )
            sink.stats.retries += 1
            await self._sleep(delay)

    async def _attempt(
        self, client: httpx.AsyncClient, settings: SinkSettings, outgoing: Outgoing
    ) -> tuple[int | None, str, float | None]:
        """(status or None, what went wrong, Retry-After seconds) of one POST."""
        import httpx

        headers = {"Content-Type": outgoing.content_type, **outgoing.headers}
        if settings.kind == "webhook" and settings.secret is not None:
            headers = signed_headers(outgoing, settings.secret, int(self._now())) | {
                "Content-Type": outgoing.content_type
            }
        with anyio.move_on_after(settings.timeout):
            try:
                response = await client.post(
                    settings.url, content=outgoing.body, headers=headers, timeout=settings.timeout
                )
            except httpx.TimeoutException:
                return None, "timed out", None
            except httpx.HTTPError as exc:  # the message may quote the URL: name the error only
                return None, type(exc).__name__, None
            return response.status_code, f"HTTP {response.status_code}", _retry_after(response)
        return None, "timed out", None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential, with "equal jitter" (between half and all of it), never past `max_delay`."""
        delay = min(self._max_delay, self._base_delay * 2.0 ** min(attempt - 1, 32))
        delay = delay / 2 + self._rand() * delay / 2
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self._max_delay)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "")
    return float(raw) if raw.isdigit() else None


class _HideSinkUrls(logging.Filter):
    """httpx logs each request's URL at INFO; a sink's URL may carry its secret (a password, a token in the
    path), so the record names the scheme and host only."""

    def __init__(self, urls: Sequence[str]) -> None:
        super().__init__()
        self._urls = tuple(urls)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(str(arg) in self._urls for arg in args):
            record.args = tuple(_origin(str(arg)) if str(arg) in self._urls else arg for arg in args)
        return True


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"
