"""What feeds the metrics, each through its own surface: upstream calls through the wrapped HTTP pool (status
classes, no-answer kinds, bounded endpoint names), the account gauges' memory of the last successful read, the
dispatcher's observer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app_server.metrics import ServiceMetrics
from app_server.rpc.dispatcher import Route
from app_server.rpc.memory import connect_in_memory
from app_server.upstream.backend import HttpPool
from protocol import ext, methods, v2
from protocol.jsonrpc import RpcError

pytestmark = pytest.mark.anyio

BASE = "https://chatgpt.example/backend-api/wham"


def samples(metrics: ServiceMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def summary(account: str, status: ext.AccountStatus, refreshed_at: int) -> ext.AccountSummary:
    return ext.AccountSummary(
        account_id=account,
        label=account,
        codex_home=f"/home/{account}",
        email=f"{account}@example.com",
        status=status,
        reset_action=ext.ResetAction(enabled=False, warning=ext.APPLY_WARNING),
        refreshed_at=refreshed_at,
    )


async def test_upstream_calls_are_counted_by_endpoint_and_status_class_with_their_latency() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/usage"):
            return httpx.Response(200, json={})
        if path.endswith("/consume"):
            raise httpx.ReadTimeout("slow", request=request)
        if path.endswith("/rate-limit-reset-credits"):
            return httpx.Response(503)
        raise httpx.ConnectError("refused", request=request)

    metrics = ServiceMetrics(list, methods=())
    pool = HttpPool(httpx.MockTransport(answer))
    pool.wrap_transport = metrics.wrap_transport
    client = pool.client()
    try:
        for _ in range(2):
            await client.get(f"{BASE}/usage?secret=1")
        await client.get(f"{BASE}/rate-limit-reset-credits")
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{BASE}/rate-limit-reset-credits/consume")
        with pytest.raises(httpx.ConnectError):
            await client.get("https://elsewhere.example/some/path/of/its/own")
    finally:
        await pool.aclose()
    calls = samples(metrics, "codex_limits_upstream_requests_total")
    assert calls == {
        (("endpoint", "usage"), ("status_class", "2xx")): 2,
        (("endpoint", "details"), ("status_class", "5xx")): 1,
        (("endpoint", "consume"), ("status_class", "timeout")): 1,
        (("endpoint", "other"), ("status_class", "error")): 1,
    }
    assert samples(metrics, "codex_limits_upstream_request_duration_seconds_count") == calls
    text = metrics.render().decode()
    assert "secret" not in text and "elsewhere" not in text


async def test_a_cancelled_call_is_counted_as_cancelled() -> None:
    started = anyio.Event()

    async def never(request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError

    metrics = ServiceMetrics(list, methods=())
    pool = HttpPool(httpx.MockTransport(never))
    pool.wrap_transport = metrics.wrap_transport
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.client().get, f"{BASE}/usage")
                await started.wait()
                tg.cancel_scope.cancel()
    finally:
        await pool.aclose()
    assert samples(metrics, "codex_limits_upstream_requests_total") == {
        (("endpoint", "usage"), ("status_class", "cancelled")): 1
    }


def test_the_last_successful_read_outlives_a_failed_one() -> None:
    now = 1_800_000_000.0
    current = [summary("a", ext.AccountStatus.ACTIVE, 1_799_999_900)]
    metrics = ServiceMetrics(lambda: current, methods=(), clock=lambda: now)
    ok_age = "codex_limits_account_last_success_age_seconds"
    read_age = "codex_limits_account_read_age_seconds"
    assert samples(metrics, ok_age) == {(("account", "a"),): 100}
    current[:] = [summary("a", ext.AccountStatus.UNAVAILABLE, 1_799_999_990)]
    assert samples(metrics, read_age) == {(("account", "a"),): 10}
    assert samples(metrics, ok_age) == {(("account", "a"),): 100}
    status = samples(metrics, "codex_limits_account_status")
    assert status[(("account", "a"), ("status", "unavailable"))] == 1
    assert sum(status.values()) == 1
    current[:] = []  # removed from accounts.toml: its series end
    assert samples(metrics, ok_age) == {}
    assert "example.com" not in metrics.render().decode()


async def test_the_dispatcher_tells_its_observer_each_answer() -> None:
    seen: list[tuple[str | None, int | None]] = []

    async def fails(ctx: object, params: object) -> ext.AccountPoolListResponse:
        raise RpcError(-32602, "bad")

    async def breaks(ctx: object, params: object) -> ext.AccountPoolListResponse:
        raise ValueError("unforeseen")

    table: dict[str, Route[Any]] = {
        "initialize": Route(
            methods.INITIALIZE,
            inline=lambda ctx, params: ext.AccountPoolListResponse(accounts=[]),
            needs_initialize=False,
        ),
        "accountPool/list": Route(methods.POOL_LIST, handler=fails, needs_initialize=False),
        "accountPool/history": Route(methods.POOL_HISTORY, handler=breaks, needs_initialize=False),
    }
    async with connect_in_memory(table, None, observer=lambda m, e: seen.append((m, e))) as harness:
        with anyio.fail_after(10):
            await harness.client.request("initialize", {"clientInfo": {"name": "t", "version": "1"}})
            for method in ("accountPool/list", "accountPool/history", "no/such"):
                with pytest.raises(RpcError):
                    await harness.client.request(method, {})
    assert seen == [("initialize", None), ("accountPool/list", -32602), ("accountPool/history", -32603), (None, -32600)]


def test_the_readme_lists_every_metric_with_its_type_and_labels() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(codex_limits_\w+)` \| (\w+) \|([^|]*)\|", readme, flags=re.MULTILINE)
    listed = {name: (kind, sorted(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}
    window = v2.RateLimitWindow(used_percent=5, resets_at=2_000_000_000)
    rich = summary("a", ext.AccountStatus.ACTIVE, 1_800_000_000).model_copy(
        update={
            "rate_limits": v2.RateLimitSnapshot(primary=window, secondary=window),
            "reset_credits": ext.ResetCreditsOverview(available_count=1, nearest_expires_at=2_000_000_000),
        }
    )
    metrics = ServiceMetrics(lambda: [rich], methods=(), clock=lambda: 1_800_000_100)
    served: dict[str, tuple[str, list[str]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        keys = {key for sample in family.samples for key in sample.labels if key != "le"}
        served[name] = (family.type, sorted(keys))
    assert {name for name in served if not name.endswith("_created")} == set(listed)
    for name, (kind, names) in served.items():
        if name in listed:
            assert listed[name][0] == kind, name
            assert not names or listed[name][1] == names, name  # request counters have no sample yet
