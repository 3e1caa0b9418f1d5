"""Usage history: samples from summaries, burn rate, run-out estimate, the recorder (issue #12)."""

from __future__ import annotations

import logging

import anyio
import pytest

from app_server.pool.usage import (
    UsageRecorder,
    burn_rate,
    current_window,
    runs_out_at,
    samples_from,
    usage_history,
)
from protocol import ext, v2
from protocol.jsonrpc import INVALID_REQUEST, RpcError
from tests.support.live import WEEK, MemoryUsageStore, sample, summary, window
from tests.support.pool_calls import WAIT, running
from tests.support.pool_world import World

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000  # a window start
HOUR = 3600


# -- samples ---------------------------------------------------------------------------------------------------


def test_a_summary_gives_one_sample_per_window_main_limit_first() -> None:
    other = v2.RateLimitSnapshot(limit_id="codex_other", primary=window(7, T0 + 600, minutes=60))
    s = summary(
        primary=window(40, T0 + 5 * HOUR),
        secondary=window(12, T0 + 7 * 86_400, minutes=WEEK),
        refreshed_at=T0 + 100,
        extra_limits={"codex_other": other},
    )
    got = [
        (x.limit_id, x.window, x.used_percent, x.window_minutes, x.resets_at, x.taken_at) for x in samples_from(s, 0)
    ]
    assert got == [
        ("codex", "primary", 40, 300, T0 + 5 * HOUR, T0 + 100),
        ("codex", "secondary", 12, WEEK, T0 + 7 * 86_400, T0 + 100),
        ("codex_other", "primary", 7, 60, T0 + 600, T0 + 100),
    ]


def test_a_failed_read_gives_no_samples() -> None:
    assert samples_from(summary(status=ext.AccountStatus.UNAVAILABLE), T0) == []


# -- burn rate -------------------------------------------------------------------------------------------------


def test_burn_rate_counts_from_the_window_start() -> None:
    resets = T0 + 5 * HOUR  # a 5 h window that began at T0 with nothing used
    samples = [sample(T0 + HOUR, 10, resets), sample(T0 + 2 * HOUR, 30, resets)]
    assert burn_rate(samples) == 15.0


def test_burn_rate_ignores_the_windows_before_the_last_reset() -> None:
    old, new = T0, T0 + 5 * HOUR
    samples = [
        sample(T0 - 2 * HOUR, 70, old),
        sample(T0 - HOUR, 95, old),
        sample(T0 + HOUR, 5, new),  # the window came round: usage fell, resetsAt moved on
        sample(T0 + 3 * HOUR, 15, new),
    ]
    assert [s.used_percent for s in current_window(samples)] == [5, 15]
    assert burn_rate(samples) == 5.0  # 15 % over the 3 h since the window began at T0


def test_a_reset_is_seen_by_the_reset_time_moving_on_even_when_usage_did_not_fall() -> None:
    samples = [sample(T0, 0, T0 + HOUR, minutes=None), sample(T0 + 2 * HOUR, 0, T0 + 3 * HOUR, minutes=None)]
    assert current_window(samples) == samples[1:]
    jitter = [sample(T0, 5, T0 + HOUR, minutes=None), sample(T0 + 600, 5, T0 + HOUR + 1, minutes=None)]
    assert current_window(jitter) == jitter


def test_burn_rate_without_the_window_length_measures_from_the_first_sample() -> None:
    samples = [sample(T0, 20, None, minutes=None), sample(T0 + 2 * HOUR, 30, None, minutes=None)]
    assert burn_rate(samples) == 5.0


def test_burn_rate_needs_a_few_minutes_of_history() -> None:
    samples = [sample(T0, 20, None, minutes=None), sample(T0 + 60, 21, None, minutes=None)]
    assert burn_rate(samples) is None
    assert burn_rate([]) is None


# -- run-out estimate ------------------------------------------------------------------------------------------


def test_runs_out_at_the_current_rate_before_the_window_resets() -> None:
    resets = T0 + 7 * 86_400
    samples = [sample(T0 + 12 * HOUR, 20, resets, minutes=WEEK), sample(T0 + 24 * HOUR, 50, resets, minutes=WEEK)]
    rate = burn_rate(samples)
    assert rate is not None and rate == pytest.approx(50 / 24, abs=1e-3)
    out = runs_out_at(samples, rate)
    assert out is not None and abs(out - (T0 + 48 * HOUR)) <= 60  # the other 50 % in another day


def test_no_run_out_when_the_window_resets_first_or_usage_is_flat() -> None:
    resets = T0 + 5 * HOUR
    slow = [sample(T0 + HOUR, 5, resets), sample(T0 + 2 * HOUR, 10, resets)]
    assert runs_out_at(slow, burn_rate(slow)) is None  # 5 %/h reaches 100 % after the reset
    flat = [sample(T0, 30, None, minutes=None), sample(T0 + HOUR, 30, None, minutes=None)]
    assert burn_rate(flat) == 0.0
    assert runs_out_at(flat, 0.0) is None


def test_a_used_up_window_ran_out_when_it_first_read_100() -> None:
    resets = T0 + 5 * HOUR
    samples = [sample(T0 + HOUR, 80, resets), sample(T0 + 2 * HOUR, 100, resets), sample(T0 + 3 * HOUR, 100, resets)]
    assert runs_out_at(samples, burn_rate(samples)) == T0 + 2 * HOUR


# -- accountPool/usageHistory ----------------------------------------------------------------------------------


async def test_usage_history_groups_windows_and_honours_since_and_limit() -> None:
    resets = T0 + 5 * HOUR
    store = MemoryUsageStore(
        [
            sample(T0 + HOUR, 10, resets),
            sample(T0 + HOUR, 3, T0 + 7 * 86_400, minutes=WEEK, window_name="secondary"),
            sample(T0 + 2 * HOUR, 30, resets),
            sample(T0 + 2 * HOUR, 6, T0 + 7 * 86_400, minutes=WEEK, window_name="secondary"),
            sample(T0 + 2 * HOUR, 99, resets, account_id="bob"),
        ]
    )
    params = ext.AccountPoolUsageHistoryParams(account_id="alice")
    answer = await usage_history(store, params, now=T0 + 2 * HOUR)
    assert answer.account_id == "alice"
    primary, secondary = answer.windows
    assert (primary.limit_id, primary.window, primary.window_minutes) == ("codex", ext.UsageWindow.PRIMARY, 300)
    assert [(p.taken_at, p.used_percent) for p in primary.samples] == [(T0 + HOUR, 10), (T0 + 2 * HOUR, 30)]
    assert primary.burn_rate_per_hour == 15.0
    assert primary.runs_out_at is None  # at 15 %/h the other 70 % take longer than the 3 h left
    assert secondary.window is ext.UsageWindow.SECONDARY and [p.used_percent for p in secondary.samples] == [3, 6]

    recent = await usage_history(
        store, ext.AccountPoolUsageHistoryParams(account_id="alice", since_seconds=HOUR // 2), now=T0 + 2 * HOUR
    )
    assert [len(w.samples) for w in recent.windows] == [1, 1]
    newest = await usage_history(store, ext.AccountPoolUsageHistoryParams(account_id="alice", limit=3), T0)
    assert [[p.used_percent for p in w.samples] for w in newest.windows] == [[30], [3, 6]]
    wire = answer.model_dump(mode="json", by_alias=True)
    assert set(wire["windows"][0]) == {
        "limitId",
        "window",
        "windowMinutes",
        "samples",
        "burnRatePerHour",
        "runsOutAt",
    }


# -- recording -------------------------------------------------------------------------------------------------


async def test_the_recorder_stores_each_read_and_prunes_hourly() -> None:
    now = [float(T0)]
    store = MemoryUsageStore([sample(T0 - 40 * 86_400, 50, None)])  # older than the 30-day retention
    recorder = UsageRecorder(store, retention_seconds=30 * 86_400, now=lambda: now[0])

    await recorder.record(summary(primary=window(10, T0 + HOUR), refreshed_at=T0))
    assert [(s.taken_at, s.used_percent) for s in store.samples] == [(T0, 10)]
    assert store.pruned_before == [T0 - 30 * 86_400]

    now[0] = T0 + 60
    await recorder.record(summary(primary=window(11, T0 + HOUR), refreshed_at=T0 + 60))
    assert store.pruned_before == [T0 - 30 * 86_400]  # not again within the hour
    now[0] = T0 + HOUR
    await recorder.record(summary(primary=window(12, T0 + HOUR), refreshed_at=T0 + HOUR))
    assert len(store.pruned_before) == 2
    assert [s.used_percent for s in store.samples] == [10, 11, 12]


async def test_a_failing_store_is_logged_and_the_read_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryUsageStore(fail=True)
    recorder = UsageRecorder(store, retention_seconds=86_400, now=lambda: T0)
    with caplog.at_level(logging.ERROR):
        await recorder.record(summary(primary=window(10, T0 + HOUR), refreshed_at=T0))
    assert "recording usage of account 'alice' failed" in caplog.text


# -- over the protocol -----------------------------------------------------------------------------------------


async def test_usage_history_over_the_protocol(world: World) -> None:
    async with running(world.settings()) as h:
        resets = T0 + 5 * HOUR
        # Recorded in the server's own store (each backend), where the handler reads them.
        await h.services.store.record_usage([sample(T0 + HOUR, 10, resets), sample(T0 + 2 * HOUR, 30, resets)])
        with anyio.fail_after(WAIT):
            raw = await h.client.request("accountPool/usageHistory", {"accountId": "alice"})
            with pytest.raises(RpcError) as unknown:
                await h.client.request("accountPool/usageHistory", {"accountId": "zoe"})
    assert raw == {
        "accountId": "alice",
        "windows": [
            {
                "limitId": "codex",
                "window": "primary",
                "windowMinutes": 300,
                "samples": [
                    {"takenAt": T0 + HOUR, "usedPercent": 10, "resetsAt": resets},
                    {"takenAt": T0 + 2 * HOUR, "usedPercent": 30, "resetsAt": resets},
                ],
                "burnRatePerHour": 15.0,
                "runsOutAt": None,
            }
        ],
    }
    assert unknown.value.code == INVALID_REQUEST and "unknown account 'zoe'" in unknown.value.message
