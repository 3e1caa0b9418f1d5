"""Alert delivery wired into the server: the live updates hand each alert to it, the simulated world's test
webhook receives them, and a sink that hangs never holds up an answer or a notification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from app_server.pool.alerts import AlertRules
from app_server.pool.delivery.deliverer import AlertDelivery
from app_server.pool.delivery.settings import SinkSettings
from app_server.pool.monitor import LiveUpdates
from app_server.sandbox import ALERT_SINK_FILE, simulated_world
from app_server.server import alert_delivery, serve_in_memory
from app_server.world import World
from protocol import ext

pytestmark = pytest.mark.anyio

WAIT = 60.0


def summary(used: int) -> ext.AccountSummary:
    from protocol import v2

    limits = v2.RateLimitSnapshot(
        limit_id="codex", primary=v2.RateLimitWindow(used_percent=used, window_duration_mins=300, resets_at=None)
    )
    return ext.AccountSummary(
        account_id="alice",
        label="Alice",
        codex_home="/homes/alice",
        status=ext.AccountStatus.ACTIVE,
        rate_limits=limits,
        reset_credits=ext.ResetCreditsOverview(available_count=0),
        reset_action=ext.ResetAction(enabled=False, warning=ext.APPLY_WARNING),
    )


class Sent:
    def __init__(self) -> None:
        self.alerts: list[ext.AccountPoolAlert] = []

    async def __call__(self, kind: Any, params: Any) -> None:
        if isinstance(params, ext.AccountPoolAlertNotification):
            self.alerts.append(params.alert)


async def test_the_live_updates_hand_every_alert_they_send_to_delivery() -> None:
    sent, handed = Sent(), list[ext.AccountPoolAlert]()
    updates = LiveUpdates(sent, codex_home=Path("/x"), rules=AlertRules([80, 90]), on_alert=handed.append)
    for used in (50, 85, 95):
        await updates.observe(summary(used))
    assert [a.threshold for a in handed] == [80, 90]
    assert handed == sent.alerts


async def test_a_failing_delivery_hand_off_changes_nothing_else() -> None:
    sent = Sent()

    def broken(alert: ext.AccountPoolAlert) -> None:
        raise RuntimeError("delivery is broken")

    updates = LiveUpdates(sent, codex_home=Path("/x"), rules=AlertRules([80]), on_alert=broken)
    assert await updates.observe(summary(85))
    assert [a.threshold for a in sent.alerts] == [80]


def drain(harness: Any) -> list[dict[str, Any]]:
    """The notifications received so far (those a request set off arrive before its answer)."""
    notes = []
    while True:
        try:
            notes.append(harness.client.notifications.receive_nowait())
        except anyio.WouldBlock:
            return notes


async def list_pool(harness: Any) -> ext.AccountPoolListResponse:
    return ext.AccountPoolListResponse.model_validate(await harness.client.request("accountPool/list", {}))


async def test_the_simulated_world_delivers_its_alerts_to_its_test_webhook() -> None:
    with simulated_world(seed_history=False) as (_, settings):
        delivery = alert_delivery(settings)
        assert delivery is not None and list(delivery.stats) == ["webhook 'simulated test sink'"]
        record = settings.data_home.parent / ALERT_SINK_FILE
        services = World(settings, delivery=delivery)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(delivery.run)
                async with serve_in_memory(services) as harness:
                    await harness.initialize(name="probe", version="1.0")
                    await list_pool(harness)
                    notified = [n["params"]["alert"] for n in drain(harness) if n["method"] == "accountPool/alert"]
                    stats = delivery.stats["webhook 'simulated test sink'"]
                    await delivery.wait_until(lambda: stats.delivered + stats.failed >= len(notified))
                tg.cancel_scope.cancel()
        delivered = [json.loads(line)["alert"] for line in record.read_text().splitlines()]
    assert delivered and sorted(map(json.dumps, delivered)) == sorted(map(json.dumps, notified))
    assert {a["accountId"] for a in delivered} >= {"alice", "carol"}


async def test_the_pool_keeps_serving_while_a_sink_hangs() -> None:
    reached = anyio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        reached.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    sink = SinkSettings("webhook", "https://hangs.example.com/", b"k", timeout=3600, max_attempts=1)
    delivery = AlertDelivery([sink], transport=httpx.MockTransport(hang))
    with simulated_world(seed_history=False) as (_, settings):
        services = World(settings, delivery=delivery)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(delivery.run)
                async with serve_in_memory(services) as harness:
                    await harness.initialize(name="probe", version="1.0")
                    first = await list_pool(harness)
                    await reached.wait()  # the sink now hangs on the first alert
                    again = await list_pool(harness)
                    await harness.client.request("accountPool/history", {})
                    alerts = [n for n in drain(harness) if n["method"] == "accountPool/alert"]
                tg.cancel_scope.cancel()
    assert {a.account_id for a in first.accounts} == {a.account_id for a in again.accounts}
    assert alerts  # the sessions got their alerts all the same
    stats = delivery.stats[sink.label]
    assert stats.delivered == 0 and stats.queued >= 2 and delivery.pending() == stats.queued - 1


def test_a_service_with_an_alert_config_it_cannot_use_does_not_start(tmp_path: Path) -> None:
    from app_server.config import Settings
    from app_server.server import ServeError

    (tmp_path / "config.toml").write_text('[[alerts.webhook]]\nurl = "https://hooks.example.com/x"\n')
    settings = Settings(codex_home=tmp_path / "home", data_home=tmp_path)
    with pytest.raises(ServeError, match=r"alert delivery: .*a webhook needs secret_file"):
        alert_delivery(settings)
    assert alert_delivery(Settings(codex_home=tmp_path / "home", data_home=tmp_path / "none")) is None
