"""The alert rule "runs out before it resets" (issue #23): once per window period, within the lead time."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_server.config import LiveSettings
from app_server.pool.alerts import AlertRules
from app_server.pool.monitor import LiveUpdates
from app_server.sandbox import simulated_world
from app_server.world import World
from protocol import ext
from tests.support.live import FakeClock, Sent, summary, window

T0 = 1_800_000_000
HOUR = 3600
RESETS = T0 + 5 * HOUR
STEP = 600


def run(rules: AlertRules, reads: list[tuple[int, int, int]]) -> list[list[ext.AccountPoolAlert]]:
    """Feed (seconds after T0, used %, resetsAt) reads of alice's 5-hour window; the alerts of each."""
    return [
        rules.evaluate(summary(primary=window(used, resets), refreshed_at=T0 + at), T0 + at)
        for at, used, resets in reads
    ]


# 30 %/h from T0+1h: at T0+1h50m (65 %) it runs out in 70 minutes, at T0+2h (70 %) in 60: within the lead.
CLIMB = [(HOUR + i * STEP, 40 + 5 * i, RESETS) for i in range(8)]


def test_runs_out_before_it_resets_fires_once_within_the_lead_time() -> None:
    rules = AlertRules(runout_lead_minutes=60)

    seen = run(rules, CLIMB)

    kinds = [[a.kind.value for a in alerts] for alerts in seen]
    assert kinds == [[], [], [], [], [], [], ["runsOutBeforeReset"], []]
    alert = seen[6][0]
    assert alert.runs_out_at == T0 + 3 * HOUR and alert.burn_rate_per_hour == 30.0
    assert (alert.severity, alert.limit_id, alert.window, alert.used_percent, alert.resets_at) == (
        ext.AlertSeverity.WARNING,
        "codex",
        ext.UsageWindow.PRIMARY,
        70,
        RESETS,
    )
    assert alert.message == "alice: the 5h window runs out in 1h at 30%/h, before it resets in 3h"
    assert rules.attention("alice", T0 + 2 * HOUR + STEP) is ext.AlertSeverity.WARNING


def test_a_reset_re_arms_it_and_lead_time_zero_turns_it_off() -> None:
    later = RESETS + 5 * HOUR
    after = [(5 * HOUR + 60 + i * STEP, 40 + 10 * i, later) for i in range(4)]  # 60 %/h in the new period
    rules = AlertRules(runout_lead_minutes=60)

    seen = run(rules, CLIMB + after)

    kinds = [[a.kind.value for a in alerts] for alerts in seen]
    assert kinds[6] == ["runsOutBeforeReset"]
    assert kinds[8] == ["windowReset"]
    # Three reads of the new period over 20 minutes: 40 -> 60 at 60 %/h runs out 40 minutes later.
    assert kinds[10] == ["runsOutBeforeReset"] and kinds.count(["runsOutBeforeReset"]) == 2

    off = AlertRules(runout_lead_minutes=0)
    assert all(a.kind is not ext.AlertKind.RUNS_OUT_BEFORE_RESET for alerts in run(off, CLIMB + after) for a in alerts)
    assert off.attention("alice", T0 + 2 * HOUR) is None


def test_the_lead_time_is_a_live_setting() -> None:
    assert LiveSettings().runout_lead_minutes == 60.0
    assert LiveSettings.from_env({"CODEX_LIMITS_RUNOUT_LEAD_MINUTES": "90"}).runout_lead_minutes == 90.0
    assert LiveSettings.from_env({"CODEX_LIMITS_RUNOUT_LEAD_MINUTES": "0"}).runout_lead_minutes == 0.0
    assert LiveSettings.from_env({"CODEX_LIMITS_RUNOUT_LEAD_MINUTES": "soon"}).runout_lead_minutes == 60.0


@pytest.mark.anyio
async def test_the_alert_reaches_every_session_as_an_account_pool_alert() -> None:
    sent = Sent()
    clock = FakeClock(T0)
    updates = LiveUpdates(
        sent, codex_home=Path("/homes/default"), rules=AlertRules(runout_lead_minutes=60), clock=clock
    )
    for at, used, resets in CLIMB:
        clock.time = T0 + at
        await updates.observe(summary(primary=window(used, resets), refreshed_at=T0 + at))

    runs_out = [a for a in sent.alerts() if a["kind"] == "runsOutBeforeReset"]
    assert len(runs_out) == 1
    assert runs_out[0]["runsOutAt"] == T0 + 3 * HOUR and runs_out[0]["burnRatePerHour"] == 30.0
    assert runs_out[0]["emittedAt"] == T0 + 2 * HOUR and runs_out[0]["accountId"] == "alice"


def test_the_service_uses_the_configured_lead_time() -> None:
    with simulated_world(seed_history=False, live=LiveSettings(runout_lead_minutes=15)) as (_, settings):
        assert World(settings).live.rules.runout_lead_seconds == 900
