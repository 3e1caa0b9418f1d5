"""GET /metrics of a service over the simulated pool: scraped over a real socket, parsed with the client library's
own parser, every metric present and its values those of `accountPool/list`; the token rule; bounded labels."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app_server.config import Settings
from app_server.handlers import routes
from app_server.metrics.wiring import instrument, page
from app_server.rpc.client import Client
from app_server.rpc.listeners import Bound, parse_listen, serve_listeners
from app_server.rpc.websocket import INVALID_TOKEN, MISSING_TOKEN, TokenCheck
from app_server.rpc.wsclient import connect_tcp, running_client
from app_server.sandbox import simulated_world
from app_server.world import World as ServerWorld
from protocol import ext
from protocol.jsonrpc import RpcError
from tests.support.listener import INIT_PARAMS, WAIT, HttpAnswer, get, raw_http

pytestmark = pytest.mark.anyio

TOKEN = "metrics-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ACCOUNT_METRICS = (
    "codex_limits_account_window_used_percent",
    "codex_limits_account_window_reset_seconds",
    "codex_limits_account_reset_credits_available",
    "codex_limits_account_reset_credit_expiry_seconds",
    "codex_limits_account_status",
    "codex_limits_account_read_age_seconds",
    "codex_limits_account_last_success_age_seconds",
)
SERVICE_METRICS = (
    "codex_limits_applies",
    "codex_limits_upstream_requests",
    "codex_limits_upstream_request_duration_seconds",
    "codex_limits_rpc_requests",
    "codex_limits_connected_clients",
)


class Clock:
    """The metrics' clock, fixed by the test so that ages and countdowns are exact."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Service:
    host: str
    port: int
    clock: Clock
    unix: Path | None = None

    async def scrape_answer(self, headers: dict[str, str] | None = None, path: str = "/metrics") -> HttpAnswer:
        async with await anyio.connect_tcp(self.host, self.port) as stream:
            return await raw_http(stream, get(path, headers))

    async def scrape(self) -> dict[str, list[Sample]]:
        answer = await self.scrape_answer(BEARER)
        assert answer.status == 200, answer.body
        assert answer.headers["content-type"].startswith("text/plain; version=")
        families: dict[str, list[Sample]] = {}
        for family in text_string_to_metric_families(answer.body.decode("utf-8")):
            families[family.name] = list(family.samples)
        return families

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        with anyio.fail_after(WAIT):
            ws = await connect_tcp(self.host, self.port, headers=BEARER)
        async with running_client(ws) as client:
            with anyio.fail_after(WAIT):
                await client.request("initialize", INIT_PARAMS)
            yield client


@pytest.fixture
def world() -> Iterator[Settings]:
    with simulated_world(seed_history=False) as (_, settings):
        yield settings


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[Service]:
    """The listening service as the composition root wires it (`instrument`), with a token, on 127.0.0.1."""
    services = ServerWorld(settings)
    table = routes()
    clock = Clock()
    metrics = instrument(services, table, clock=clock)
    stop = anyio.Event()
    ready: list[Bound] = []
    up = anyio.Event()

    def on_ready(bound: list[Bound]) -> None:
        ready.extend(bound)
        up.set()

    socket = settings.data_home / "s.sock"
    listens = [parse_listen(text, default_unix=socket) for text in ("ws://127.0.0.1:0", "unix://")]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_listeners(
                    listens,
                    table,
                    services,
                    broadcaster=services.broadcaster,
                    token=TokenCheck.from_token(TOKEN),
                    on_ready=on_ready,
                    stop=stop,
                    metrics=page(metrics),
                    observer=metrics.observe_request,
                )
            )
            with anyio.fail_after(WAIT):
                await up.wait()
            host, _, port = ready[0].url.removeprefix("ws://").rpartition(":")
            try:
                yield Service(host, int(port), clock, socket)
            finally:
                stop.set()
    finally:
        await services.aclose()


def value(families: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    """The one sample of `name` (a sample name: `_total`, `_count` included) with exactly `labels`."""
    family = name.removesuffix("_total").removesuffix("_count")
    found = [s.value for s in families.get(family, []) if s.name == name and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else None


async def test_a_scrape_has_every_metric_and_the_values_of_account_pool_list(world: Settings) -> None:
    async with service(world) as served, served.client() as client:
        with anyio.fail_after(WAIT):
            listed = ext.AccountPoolListResponse.model_validate(await client.request("accountPool/list", {}))
            alice = next(a for a in listed.accounts if a.account_id == "alice")
            assert alice.reset_action.enabled
            credit = {"accountId": "alice", "idempotencyKey": "metrics-apply-1"}
            applied = ext.AccountPoolApplyResponse.model_validate(
                await client.request("accountPool/resetCredit/apply", credit)
            )
            again = ext.AccountPoolApplyResponse.model_validate(
                await client.request("accountPool/resetCredit/apply", credit)
            )
            with pytest.raises(RpcError):  # bob has no saved reset: refused
                await client.request("accountPool/resetCredit/apply", {"accountId": "bob", "idempotencyKey": "k-bob"})
            # The list after the apply is what the pool holds now (alice was read again by the apply).
            listed = ext.AccountPoolListResponse.model_validate(await client.request("accountPool/list", {}))
        served.clock.now = time.time() + 0.5
        now = served.clock.now
        families = await served.scrape()

    for name in (*ACCOUNT_METRICS, *SERVICE_METRICS):
        assert families.get(name), f"{name} missing from the scrape"
    assert again.replayed and not applied.replayed
    by_id = {a.account_id: a for a in listed.accounts}
    assert set(by_id) == {"alice", "bob", "carol", "dave"}
    for account_id, summary in by_id.items():
        for status in ext.AccountStatus:
            expected = 1.0 if summary.status is status else 0.0
            assert value(families, "codex_limits_account_status", account=account_id, status=status.value) == expected
        snapshots = summary.rate_limits_by_limit_id or (
            {summary.rate_limits.limit_id or "codex": summary.rate_limits} if summary.rate_limits else {}
        )
        for limit, snapshot in snapshots.items():
            for window, numbers in (("primary", snapshot.primary), ("secondary", snapshot.secondary)):
                labels = {"account": account_id, "limit": limit, "window": window}
                assert numbers is not None and numbers.resets_at is not None
                assert value(families, "codex_limits_account_window_used_percent", **labels) == numbers.used_percent
                assert value(families, "codex_limits_account_window_reset_seconds", **labels) == max(
                    0.0, numbers.resets_at - now
                )
        credits = summary.reset_credits
        available = value(families, "codex_limits_account_reset_credits_available", account=account_id)
        expiry = value(families, "codex_limits_account_reset_credit_expiry_seconds", account=account_id)
        assert available == (None if credits is None else credits.available_count)
        nearest = None if credits is None else credits.nearest_expires_at
        assert expiry == (None if nearest is None else nearest - now)
        assert summary.refreshed_at is not None
        age = now - summary.refreshed_at
        assert value(families, "codex_limits_account_read_age_seconds", account=account_id) == age
        ok = summary.status in (ext.AccountStatus.ACTIVE, ext.AccountStatus.RATE_LIMITED)
        assert value(families, "codex_limits_account_last_success_age_seconds", account=account_id) == (
            age if ok else None
        )
    # The simulated world as the sandbox describes it: every kind of row is there.
    assert by_id["carol"].status is ext.AccountStatus.REAUTH_REQUIRED
    assert by_id["bob"].reset_credits is not None and by_id["bob"].reset_credits.available_count == 0
    assert by_id["dave"].reset_credits is not None and by_id["dave"].reset_credits.nearest_expires_at is not None

    assert value(families, "codex_limits_applies_total", outcome=applied.outcome.value) == 1
    assert value(families, "codex_limits_applies_total", outcome="replayed") == 1
    assert value(families, "codex_limits_applies_total", outcome="refused") == 1
    rpc = "codex_limits_rpc_requests_total"
    assert value(families, rpc, method="initialize", outcome="ok") == 1
    assert value(families, rpc, method="accountPool/list", outcome="ok") == 2
    assert value(families, rpc, method="accountPool/resetCredit/apply", outcome="ok") == 2
    assert value(families, rpc, method="accountPool/resetCredit/apply", outcome="-32600") == 1
    assert value(families, "codex_limits_connected_clients") == 1  # the client was still connected

    # Upstream: one usage read per account that signed in, per read (two lists, the apply's before and after).
    calls = {
        (s.labels["endpoint"], s.labels["status_class"]): s.value
        for s in families["codex_limits_upstream_requests"]
        if s.name == "codex_limits_upstream_requests_total"
    }
    assert calls[("consume", "2xx")] == 1
    assert calls[("usage", "2xx")] >= 3 * 2
    for (endpoint, status_class), count in calls.items():
        latency = value(
            families,
            "codex_limits_upstream_request_duration_seconds_count",
            endpoint=endpoint,
            status_class=status_class,
        )
        assert latency == count

    # The sample Grafana dashboard queries only metrics the scrape has.
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs.append(dashboard["templating"]["list"][0]["query"]["query"])
    queried = {name for expr in exprs for name in re.findall(r"codex_limits_\w+", expr)}
    scraped = {sample.name for samples in families.values() for sample in samples}
    assert len(queried) >= 12 and queried <= scraped, queried - scraped


async def test_metrics_need_the_token_health_does_not(world: Settings) -> None:
    async with service(world) as served:
        missing = await served.scrape_answer()
        wrong = await served.scrape_answer({"Authorization": "Bearer not-the-token"})
        basic = await served.scrape_answer({"Authorization": f"Basic {TOKEN}"})
        twice = await served.scrape_answer({"Authorization": f"Bearer {TOKEN}", "authorization": f"Bearer {TOKEN}"})
        health = await served.scrape_answer(path="/healthz")
        good = await served.scrape_answer(BEARER)
    assert (missing.status, missing.body.decode()) == (401, MISSING_TOKEN)
    assert (wrong.status, wrong.body.decode()) == (401, INVALID_TOKEN)
    assert (basic.status, basic.body.decode()) == (401, MISSING_TOKEN)
    assert twice.status == 400
    assert b"codex_limits" not in missing.body + wrong.body + basic.body + twice.body
    assert health.status == 200
    assert good.status == 200 and b"codex_limits_connected_clients" in good.body


async def test_the_unix_socket_serves_metrics_without_a_token(world: Settings) -> None:
    async with service(world) as served:
        assert served.unix is not None
        async with await anyio.connect_unix(served.unix) as stream:
            answer = await raw_http(stream, get("/metrics"))
    assert answer.status == 200
    families = {family.name for family in text_string_to_metric_families(answer.body.decode())}
    assert {"codex_limits_connected_clients", "codex_limits_account_status"} <= families


async def test_labels_stay_bounded_and_never_carry_emails_keys_or_paths(world: Settings) -> None:
    async with service(world) as served, served.client() as client:
        with anyio.fail_after(WAIT):
            listed = ext.AccountPoolListResponse.model_validate(await client.request("accountPool/list", {}))
            for n in range(40):  # methods the server does not know: one label for all
                with pytest.raises(RpcError):
                    await client.request(f"made/up/{n}", {})
            for n in range(5):  # unknown accounts: the apply is counted, the id never becomes a label
                with pytest.raises(RpcError):
                    await client.request(
                        "accountPool/resetCredit/apply", {"accountId": f"nobody-{n}", "idempotencyKey": f"k{n}"}
                    )
        first = await served.scrape()
        text = (await served.scrape_answer(BEARER)).body.decode()

    accounts = {a.account_id for a in listed.accounts}
    methods = set(routes()) | {"unknown"}
    assert value(first, "codex_limits_rpc_requests_total", method="unknown", outcome="-32600") == 40
    for samples in first.values():
        for sample in samples:
            if "account" in sample.labels:
                assert sample.labels["account"] in accounts
            if "method" in sample.labels:
                assert sample.labels["method"] in methods
    assert "nobody-" not in text and "made/up" not in text
    for summary in listed.accounts:
        assert summary.codex_home not in text
        if summary.email:
            assert summary.email not in text
    assert TOKEN not in text
    assert "k0" not in json.dumps([s.labels for samples in first.values() for s in samples])
