"""Forecasts (issue #23): burn rate over a lookback within the current window, and the run-out time.

The clock is whatever the test says (`now`); the histories are written out, so every figure is exact.
"""

from __future__ import annotations

from app_server.pool.forecast import MIN_SAMPLES, MIN_SPAN, ForecastRules, forecast_account, forecast_window
from protocol import ext
from tests.support.live import WEEK, sample

T0 = 1_800_000_000
HOUR = 3600
RESETS = T0 + 5 * HOUR  # the 5-hour window began at T0


def test_rate_and_run_out_time_are_exact() -> None:
    history = [sample(T0 + HOUR, 40, RESETS), sample(T0 + 90 * 60, 50, RESETS), sample(T0 + 2 * HOUR, 60, RESETS)]
    now = T0 + 2 * HOUR + 60

    f = forecast_window(history, now)

    # 20 points in the hour between the first and the last sample: 20 %/h; 40 % left at 20 %/h is 2 hours
    # after the last sample, an hour before the window resets.
    assert f.status is ext.ForecastStatus.PROJECTED
    assert f.burn_rate_per_hour == 20.0
    assert f.runs_out_at == T0 + 4 * HOUR
    assert f.runs_out_before_reset is True
    assert (f.sample_count, f.span_seconds, f.measured_at) == (3, HOUR, T0 + 2 * HOUR)
    assert (f.used_percent, f.resets_at, f.limit_id, f.window) == (60, RESETS, "codex", ext.UsageWindow.PRIMARY)
    assert f.message == "5h: 20 %/h over the last 1h; runs out in 1h 59m, 1h before it resets"
    wire = f.model_dump(mode="json", by_alias=True)
    assert wire["burnRatePerHour"] == 20.0 and wire["runsOutAt"] == T0 + 4 * HOUR and wire["runsOutBeforeReset"]


def test_a_slow_burn_resets_before_it_runs_out() -> None:
    history = [sample(T0 + HOUR, 10, RESETS), sample(T0 + 90 * 60, 15, RESETS), sample(T0 + 2 * HOUR, 20, RESETS)]

    f = forecast_window(history, T0 + 2 * HOUR)

    assert (f.status, f.burn_rate_per_hour) == (ext.ForecastStatus.PROJECTED, 10.0)
    assert f.runs_out_at == T0 + 10 * HOUR  # 80 % left at 10 %/h: 8 hours on, past the reset
    assert f.runs_out_before_reset is False
    assert f.message.endswith("resets before it runs out")


def test_too_little_history_is_said_plainly() -> None:
    two = [sample(T0 + HOUR, 40, RESETS), sample(T0 + 2 * HOUR, 60, RESETS)]
    short = [sample(T0 + HOUR + i * 60, 40 + i, RESETS) for i in range(5)]  # five samples over 4 minutes
    assert MIN_SAMPLES == 3 and MIN_SPAN == 600

    for history in (two, short):
        f = forecast_window(history, T0 + 2 * HOUR)
        assert f.status is ext.ForecastStatus.TOO_LITTLE_HISTORY
        assert (f.burn_rate_per_hour, f.runs_out_at, f.runs_out_before_reset) == (None, None, None)
        assert f.used_percent == history[-1].used_percent
        assert "too little history to forecast" in f.message
        assert "a forecast needs at least 3 samples over 10m" in f.message
    assert "2 samples over 1h in this window within the last 3h" in forecast_window(two, T0 + 2 * HOUR).message

    # A window whose reset time passed after its last read has no history in its new period at all.
    gone = forecast_window(two, RESETS + 60)
    assert (gone.status, gone.sample_count, gone.used_percent) == (ext.ForecastStatus.TOO_LITTLE_HISTORY, 0, None)
    assert "reset 1m ago" in gone.message


def test_a_reset_in_the_middle_starts_a_new_window() -> None:
    later = RESETS + 5 * HOUR
    history = [
        sample(T0 + 3 * HOUR, 70, RESETS),
        sample(T0 + 4 * HOUR, 90, RESETS),
        sample(RESETS + 30 * 60, 5, later),  # the window came round: only what follows counts
        sample(RESETS + HOUR, 10, later),
        sample(RESETS + 90 * 60, 15, later),
    ]

    f = forecast_window(history, RESETS + 90 * 60, ForecastRules(lookback=6 * HOUR))

    assert f.sample_count == 3 and f.span_seconds == HOUR
    assert f.burn_rate_per_hour == 10.0
    assert f.runs_out_at == RESETS + 90 * 60 + 85 * 360  # 85 % left at 10 %/h: 8.5 hours
    assert f.runs_out_before_reset is False
    # Without the reset the same span (70 -> 15) would have been a falling rate; one sample of the new period
    # alone is too little.
    assert forecast_window(history[:3], RESETS + 30 * 60).status is ext.ForecastStatus.TOO_LITTLE_HISTORY


def test_lookback_flat_usage_and_a_used_up_window() -> None:
    old_and_new = [
        sample(T0, 0, RESETS),
        sample(T0 + 2 * HOUR, 30, RESETS),
        sample(T0 + 3 * HOUR, 30, RESETS),
        sample(T0 + 4 * HOUR, 30, RESETS),
    ]
    # Over the last 2 hours nothing was used, though the window rose earlier.
    flat = forecast_window(old_and_new, T0 + 4 * HOUR, ForecastRules(lookback=2 * HOUR))
    assert (flat.status, flat.burn_rate_per_hour, flat.runs_out_at) == (ext.ForecastStatus.NOT_GROWING, 0.0, None)
    assert flat.runs_out_before_reset is False and flat.sample_count == 3
    # Over 4 hours it rose 30 points: 7.5 %/h.
    assert forecast_window(old_and_new, T0 + 4 * HOUR, ForecastRules(lookback=4 * HOUR)).burn_rate_per_hour == 7.5

    used_up = [sample(T0 + HOUR, 80, RESETS), sample(T0 + 2 * HOUR, 100, RESETS), sample(T0 + 3 * HOUR, 100, RESETS)]
    f = forecast_window(used_up, T0 + 3 * HOUR)
    assert (f.status, f.runs_out_at, f.runs_out_before_reset) == (ext.ForecastStatus.EXHAUSTED, T0 + 2 * HOUR, True)


def test_an_account_forecasts_each_window_main_limit_first() -> None:
    week_resets = T0 + 7 * 86_400
    samples = [
        sample(T0 + HOUR, 1, week_resets, limit_id="other", minutes=WEEK),
        sample(T0 + HOUR, 3, week_resets, minutes=WEEK, window_name="secondary"),
        sample(T0 + HOUR, 40, RESETS),
        sample(T0 + 2 * HOUR, 60, RESETS),
        sample(T0 + 2 * HOUR, 5, week_resets, minutes=WEEK, window_name="secondary"),
        sample(T0 + 3 * HOUR, 80, RESETS),
        sample(T0 + 3 * HOUR, 7, week_resets, minutes=WEEK, window_name="secondary"),
    ]

    account = forecast_account("alice", samples, T0 + 3 * HOUR)

    assert [(w.limit_id, w.window.value, w.status.value) for w in account.windows] == [
        ("codex", "primary", "projected"),
        ("codex", "secondary", "projected"),
        ("other", "primary", "tooLittleHistory"),
    ]
    assert [w.burn_rate_per_hour for w in account.windows[:2]] == [20.0, 2.0]
    assert account.windows[0].runs_out_at == T0 + 4 * HOUR
    assert account.windows[1].runs_out_at == T0 + 3 * HOUR + 93 * 1800  # 93 % left at 2 %/h
