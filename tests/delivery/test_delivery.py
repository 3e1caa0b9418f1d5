"""Alert delivery: signed webhooks retried until the receiver is back, ntfy's request shape, the bounded
queue, and a hanging sink that holds up nothing but itself."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from app_server.pool.delivery.deliverer import AlertDelivery
from app_server.pool.delivery.settings import SinkSettings
from app_server.pool.delivery.sinks import (
    ALERT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    alert_id,
    sign,
    verify,
)
from app_server.sim.alert_sink import SimAlertSink
from protocol import ext

pytestmark = pytest.mark.anyio

WAIT = 30.0
SECRET = b"s3cret-shared-with-the-receiver"
T0 = 1_800_000_000


def alert(n: int = 0, severity: ext.AlertSeverity = ext.AlertSeverity.WARNING) -> ext.AccountPoolAlert:
    return ext.AccountPoolAlert(
        kind=ext.AlertKind.USAGE_THRESHOLD,
        account_id=f"acct-{n}",
        message=f"acct-{n}: the 5h window is at 90% (crossed 90%)",
        severity=severity,
        limit_id="codex",
        window=ext.UsageWindow.PRIMARY,
        window_minutes=300,
        threshold=90,
        used_percent=90,
        resets_at=T0 + 3600,
        emitted_at=T0 + n,
    )


def webhook(url: str, secret: bytes = SECRET, **kwargs: Any) -> SinkSettings:
    return SinkSettings("webhook", url, secret, **kwargs)


@pytest.fixture
def sink() -> Iterator[SimAlertSink]:
    with SimAlertSink(SECRET) as receiver:
        yield receiver


async def run_until(delivery: AlertDelivery, done: Callable[[], Awaitable[object]]) -> None:
    """Run `delivery` in the background until `done` returns, with a hang guard."""
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(delivery.run)
            await done()
            tg.cancel_scope.cancel()


def received(receiver: SimAlertSink, count: int) -> Callable[[], Awaitable[bool]]:
    async def wait() -> bool:
        return await anyio.to_thread.run_sync(receiver.wait_for, count, WAIT)

    return wait


# -- webhook -----------------------------------------------------------------------------------------------------


async def test_a_webhook_down_for_a_while_gets_each_alert_once_with_a_valid_signature(sink: SimAlertSink) -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:  # no real backoff: the receiver comes up at the third wait
        delays.append(seconds)
        if len(delays) == 3:
            sink.start()
        await anyio.lowlevel.checkpoint()

    delivery = AlertDelivery([webhook(sink.url)], sleep=sleep, rand=lambda: 1.0, now=lambda: T0)
    alerts = [alert(n) for n in range(3)]
    for a in alerts:
        delivery.submit(a)

    label = webhook(sink.url).label

    async def delivered() -> None:  # the receiver has them, and the sender has its answers
        await received(sink, 3)()
        await delivery.wait_until(lambda: delivery.stats[label].delivered == 3)

    await run_until(delivery, delivered)

    assert delays == [2.0, 4.0, 8.0]  # exponential (jitter at its top here): refused three times, then up
    assert [r["id"] for r in sink.received] == [alert_id(a) for a in alerts]  # in order, each once
    assert [ext.AccountPoolAlert.model_validate(r["alert"]) for r in sink.received] == alerts
    assert all(r["event"] == "accountPool/alert" for r in sink.received)
    assert (sink.requests, sink.rejected, sink.duplicates) == (3, 0, 0)  # every signature checked out
    stats = delivery.stats[label]
    assert (stats.delivered, stats.retries, stats.errors, stats.failed, stats.dropped) == (3, 3, 3, 0, 0)


async def test_a_bad_secret_fails_verification_and_is_not_retried(sink: SimAlertSink) -> None:
    sink.start()
    delivery = AlertDelivery([webhook(sink.url, secret=b"not-the-shared-secret")], now=lambda: T0)
    delivery.submit(alert())
    settings = webhook(sink.url)

    async def given_up() -> None:
        await delivery.wait_until(lambda: delivery.stats[settings.label].failed > 0)

    await run_until(delivery, given_up)
    assert (sink.requests, sink.rejected, sink.received) == (1, 1, [])  # a 401 is final: no retry


def test_the_signature_covers_the_timestamp_and_the_exact_body() -> None:
    body = b'{"id":"x","event":"accountPool/alert","alert":{}}'
    signature = sign(SECRET, T0, body)
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert verify(SECRET, str(T0), body, signature)
    assert not verify(b"another secret", str(T0), body, signature)
    assert not verify(SECRET, str(T0 + 1), body, signature)  # a replay with a fresh timestamp
    assert not verify(SECRET, str(T0), body + b" ", signature)
    assert not verify(SECRET, "not a number", body, signature)


async def test_each_attempt_is_signed_the_same_body_and_a_5xx_is_retried() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) < 3 else 204)

    clock = iter(range(T0, T0 + 100))
    delivery = AlertDelivery(
        [webhook("https://hooks.example.com/codex")],
        transport=httpx.MockTransport(answer),
        sleep=lambda _: anyio.lowlevel.checkpoint(),
        now=lambda: next(clock),
    )
    delivery.submit(alert())

    async def three() -> None:
        await delivery.wait_until(lambda: len(seen) == 3)

    await run_until(delivery, three)
    bodies = {r.content for r in seen}
    assert len(bodies) == 1  # the very same bytes every time
    assert [r.headers[TIMESTAMP_HEADER] for r in seen] == [str(T0), str(T0 + 1), str(T0 + 2)]
    for request in seen:
        assert verify(SECRET, request.headers[TIMESTAMP_HEADER], request.content, request.headers[SIGNATURE_HEADER])
        assert request.headers[ALERT_ID_HEADER] == alert_id(alert())
        assert request.headers["content-type"] == "application/json"
    assert json.loads(seen[0].content)["id"] == alert_id(alert())


# -- ntfy --------------------------------------------------------------------------------------------------------


async def test_ntfy_gets_the_message_with_a_priority_by_severity_a_title_and_tags() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "x"})

    ntfy = SinkSettings("ntfy", "https://ntfy.example.com/codex-alerts", b"tk_token")
    delivery = AlertDelivery([ntfy], transport=httpx.MockTransport(answer))
    severities = [ext.AlertSeverity.INFO, ext.AlertSeverity.WARNING, ext.AlertSeverity.CRITICAL]
    for n, severity in enumerate(severities):
        delivery.submit(alert(n, severity))

    async def all_sent() -> None:
        await delivery.wait_until(lambda: len(seen) == 3)

    await run_until(delivery, all_sent)
    assert [r.method for r in seen] == ["POST"] * 3
    assert {str(r.url) for r in seen} == {"https://ntfy.example.com/codex-alerts"}
    assert [r.headers["Priority"] for r in seen] == ["3", "4", "5"]
    assert [r.headers["Title"] for r in seen] == [
        "codex-limits: acct-0 info",
        "codex-limits: acct-1 warning",
        "codex-limits: acct-2 critical",
    ]
    assert [r.headers["Tags"] for r in seen] == [
        "information_source,codex-limits,usageThreshold",
        "warning,codex-limits,usageThreshold",
        "rotating_light,codex-limits,usageThreshold",
    ]
    assert [r.content.decode() for r in seen] == [alert(n).message for n in range(3)]
    assert all(r.headers["Authorization"] == "Bearer tk_token" for r in seen)
    assert all(SIGNATURE_HEADER not in r.headers for r in seen)


async def test_a_sink_gets_only_the_severities_it_asked_for() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    ntfy = SinkSettings("ntfy", "https://ntfy.example.com/t", min_severity=ext.AlertSeverity.CRITICAL)
    delivery = AlertDelivery([ntfy], transport=httpx.MockTransport(answer))
    delivery.submit(alert(0, ext.AlertSeverity.WARNING))
    delivery.submit(alert(1, ext.AlertSeverity.CRITICAL))
    assert delivery.pending() == 1

    async def sent() -> None:
        await delivery.wait_until(lambda: bool(seen))

    await run_until(delivery, sent)
    assert [r.headers["Priority"] for r in seen] == ["5"]
    assert "Authorization" not in seen[0].headers


# -- the queue ---------------------------------------------------------------------------------------------------


async def test_a_full_queue_drops_its_oldest_alerts_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers[ALERT_ID_HEADER])
        return httpx.Response(200)

    settings = webhook("https://hooks.example.com/codex", queue=2)
    delivery = AlertDelivery([settings], transport=httpx.MockTransport(answer))
    alerts = [alert(n) for n in range(5)]
    with caplog.at_level(logging.WARNING):
        for a in alerts:
            delivery.submit(a)  # nothing drains yet: the sink is not running
    stats = delivery.stats[settings.label]
    assert (delivery.pending(), stats.queued, stats.dropped) == (2, 5, 3)
    assert caplog.text.count("queue full") == 1  # once, with the count, not a line per dropped alert
    assert "(1 dropped so far)" in caplog.text

    async def drained() -> None:
        await delivery.wait_until(lambda: len(seen) == 2)

    await run_until(delivery, drained)
    assert seen == [alert_id(a) for a in alerts[3:]]  # the newest two
    assert (stats.delivered, stats.dropped) == (2, 3)


async def test_retries_stop_at_the_cap_and_the_failure_is_logged_without_url_or_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "https://user:hunter2@hooks.example.com/services/T0/B0/pathtoken?sig=querytoken"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}")

    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await anyio.lowlevel.checkpoint()

    settings = webhook(url, max_attempts=4)
    delivery = AlertDelivery([settings], transport=httpx.MockTransport(refuse), sleep=sleep, rand=lambda: 0.0)
    delivery.submit(alert())

    async def given_up() -> None:
        await delivery.wait_until(lambda: delivery.stats[settings.label].failed > 0)

    with caplog.at_level(logging.DEBUG):
        await run_until(delivery, given_up)
    assert delays == [1.0, 2.0, 4.0]  # 4 attempts; jitter at its bottom: half of 2, 4, 8
    stats = delivery.stats[settings.label]
    assert (stats.errors, stats.retries, stats.failed, stats.delivered) == (4, 3, 1, 0)
    assert "gave up on alert" in caplog.text and "ConnectError" in caplog.text
    assert "hooks.example.com" in caplog.text  # the receiver is named by its host ...
    for secret in ("hunter2", "pathtoken", "querytoken", SECRET.decode()):
        assert secret not in caplog.text  # ... never by its password, path, query or the signing secret


# -- never holding up the pool -----------------------------------------------------------------------------------


async def test_a_hanging_sink_holds_up_only_its_own_queue() -> None:
    release = anyio.Event()
    hanging = 0
    fine: list[str] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        nonlocal hanging
        hanging += 1
        await release.wait()
        return httpx.Response(200)

    async def answer(request: httpx.Request) -> httpx.Response:
        fine.append(request.headers[ALERT_ID_HEADER])
        return httpx.Response(200)

    class Route(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await (hang(request) if request.url.host == "hangs.example.com" else answer(request))

    hung = webhook("https://hangs.example.com/", timeout=3600)
    ok = webhook("https://ok.example.com/")
    delivery = AlertDelivery([hung, ok], transport=Route())

    async def both_handled() -> None:
        for n in range(3):
            delivery.submit(alert(n))  # returns at once, with one sink stuck
        await delivery.wait_until(lambda: len(fine) == 3)

    await run_until(delivery, both_handled)
    assert fine == [alert_id(alert(n)) for n in range(3)]
    assert hanging == 1 and delivery.stats[hung.label].delivered == 0
    release.set()


def test_a_sink_label_names_the_host_only() -> None:
    settings = webhook("https://user:pw@hooks.example.com:8443/secret/path?token=1")
    assert settings.label == "webhook https://hooks.example.com:8443"
    assert "pw" not in repr(settings) and "secret" not in repr(settings)
    assert webhook("https://x.example.com/", name="team chat").label == "webhook 'team chat'"


async def test_the_sim_sink_records_what_it_accepted(tmp_path: Path) -> None:
    record = tmp_path / "sink.jsonl"
    with SimAlertSink(SECRET, record_to=record) as receiver:
        receiver.start()
        delivery = AlertDelivery([webhook(receiver.url)])
        delivery.submit(alert())
        await run_until(delivery, received(receiver, 1))
    (line,) = record.read_text().splitlines()
    assert json.loads(line)["id"] == alert_id(alert())


async def test_httpx_request_logs_name_the_receiver_by_its_host_only(caplog: pytest.LogCaptureFixture) -> None:
    url = "https://user:hunter2@hooks.example.com/services/T0/B0/pathtoken"
    settings = webhook(url)
    delivery = AlertDelivery([settings], transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    delivery.submit(alert())
    with caplog.at_level(logging.INFO, logger="httpx"):
        await run_until(delivery, lambda: delivery.wait_until(lambda: delivery.stats[settings.label].delivered == 1))
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert requests and all("hooks.example.com" in m for m in requests)
    assert not any(secret in m for m in requests for secret in ("hunter2", "pathtoken"))


async def test_a_429_waits_at_least_its_retry_after() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "42"}), httpx.Response(200)])
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await anyio.lowlevel.checkpoint()

    settings = webhook("https://hooks.example.com/x")
    delivery = AlertDelivery([settings], transport=httpx.MockTransport(lambda _: next(answers)), sleep=sleep)
    delivery.submit(alert())
    await run_until(delivery, lambda: delivery.wait_until(lambda: delivery.stats[settings.label].delivered == 1))
    assert delays == [42.0]
