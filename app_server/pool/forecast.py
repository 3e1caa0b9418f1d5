"""Forecasts: each window's burn rate over a lookback, and when it runs out at that rate.

Pure functions over `UsageSample`s (the usage history the pool records on every read), with the
time passed in (`now`), so a test states the clock. The rules:

* only samples of the window's current period count: a reset (usage fell, or `resetsAt` moved on,
  see `usage.is_reset`) starts a new one, and a window whose `resetsAt` has passed since its last
  sample has no history yet;
* of those, the samples taken in the last `lookback` seconds; with fewer than `min_samples`, or
  less than `min_span` seconds between the first and the last, the forecast says plainly that there
  is too little history;
* the burn rate is the percentage points gained between the first and the last of them per hour,
  and the window runs out at the last sample's time plus what is left at that rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Final

from app_server.pool.usage import MAIN_LIMIT, current_window
from app_server.store.base import UsageSample
from protocol import ext

MIN_SAMPLES: Final = 3
"""Samples a burn rate needs within the lookback (two points make a line, a third shows it holds)."""
MIN_SPAN: Final = 600
"""Seconds between the first and the last of those samples; a shorter span says more about rounding
(upstream reports whole percents) than about use."""
DEFAULT_LOOKBACK: Final = 3 * 3600
MAX_LOOKBACK: Final = 31 * 86_400


@dataclass(frozen=True)
class ForecastRules:
    """How much history a forecast looks at, and how much it needs."""

    lookback: int = DEFAULT_LOOKBACK
    min_samples: int = MIN_SAMPLES
    min_span: int = MIN_SPAN


DEFAULT_RULES: Final = ForecastRules()


def forecast_window(
    samples: Sequence[UsageSample], now: float, rules: ForecastRules = DEFAULT_RULES
) -> ext.WindowForecast:
    """The forecast of one window from its samples (one limit id and slot, oldest first, not empty)."""
    if not samples:
        raise ValueError("a window's forecast needs at least its latest sample")
    latest = samples[-1]
    slot = ext.UsageWindow(latest.window)
    name = window_name(latest.limit_id, slot, latest.window_minutes)
    if latest.resets_at is not None and latest.resets_at <= now:
        return ext.WindowForecast(
            limit_id=latest.limit_id,
            window=slot,
            window_minutes=latest.window_minutes,
            status=ext.ForecastStatus.TOO_LITTLE_HISTORY,
            sample_count=0,
            span_seconds=0,
            message=f"{name}: too little history to forecast: the window reset {duration(now - latest.resets_at)} "
            "ago, after the last read, and nothing has been read since",
        )
    period = current_window(list(samples))
    recent = [s for s in period if s.taken_at >= now - rules.lookback]
    span = recent[-1].taken_at - recent[0].taken_at if recent else 0
    rate: float | None = None
    if len(recent) >= rules.min_samples and span >= rules.min_span:
        rate = (recent[-1].used_percent - recent[0].used_percent) * 3600 / span

    def answer(
        status: ext.ForecastStatus,
        message: str,
        runs_out_at: int | None = None,
        before_reset: bool | None = None,
    ) -> ext.WindowForecast:
        return ext.WindowForecast(
            limit_id=latest.limit_id,
            window=slot,
            window_minutes=latest.window_minutes,
            status=status,
            used_percent=latest.used_percent,
            resets_at=latest.resets_at,
            burn_rate_per_hour=round(rate, 3) if rate is not None else None,
            runs_out_at=runs_out_at,
            runs_out_before_reset=before_reset,
            sample_count=len(recent),
            span_seconds=span,
            measured_at=latest.taken_at,
            message=f"{name}: {message}",
        )

    resets = latest.resets_at
    if latest.used_percent >= 100:
        ran_out = next(s.taken_at for s in period if s.used_percent >= 100)
        left = f", resets in {duration(resets - now)}" if resets is not None else ""
        return answer(ext.ForecastStatus.EXHAUSTED, f"used up{left}", ran_out, True if resets is not None else None)
    if rate is None:
        seen = f"{_samples(len(recent))} over {duration(span)}" if recent else "no read"
        return answer(
            ext.ForecastStatus.TOO_LITTLE_HISTORY,
            f"too little history to forecast: {seen} in this window within the last {duration(rules.lookback)}; "
            f"a forecast needs at least {_samples(rules.min_samples)} over {duration(rules.min_span)}",
        )
    over = f"over the last {duration(span)}"
    if rate <= 0:
        return answer(
            ext.ForecastStatus.NOT_GROWING,
            f"no usage {over}; it does not run out at this rate",
            before_reset=False if resets is not None else None,
        )
    last = recent[-1]
    runs_out = round(last.taken_at + (100 - last.used_percent) * 3600 / rate)
    before_reset = runs_out < resets if resets is not None else None
    when = f"runs out in {duration(runs_out - now)}" if runs_out > now else "runs out about now"
    if resets is not None and runs_out < resets:
        when += f", {duration(resets - runs_out)} before it resets"
    elif resets is not None:
        when = "resets before it runs out"
    return answer(ext.ForecastStatus.PROJECTED, f"{rate:.3g} %/h {over}; {when}", runs_out, before_reset)


def forecast_account(
    account_id: str, samples: Iterable[UsageSample], now: float, rules: ForecastRules = DEFAULT_RULES
) -> ext.AccountForecast:
    """Every window of one account's samples, the main limit first, primary before secondary."""

    def key(sample: UsageSample) -> tuple[bool, str, str]:
        return sample.limit_id != MAIN_LIMIT, sample.limit_id, sample.window

    ordered = sorted(samples, key=lambda s: (key(s), s.taken_at))
    windows = [forecast_window(list(group), now, rules) for _, group in groupby(ordered, key=key)]
    return ext.AccountForecast(account_id=account_id, windows=windows)


def _samples(count: int) -> str:
    return "1 sample" if count == 1 else f"{count} samples"


# -- what a person calls things (the alert messages use these too) --------------------------------


def window_name(limit_id: str, slot: ext.UsageWindow, minutes: int | None) -> str:
    """`5h`, `weekly`, `codex_other 5h`: what a person calls the window."""
    if minutes is None:
        name = slot.value
    elif minutes == 10_080:
        name = "weekly"
    elif minutes == 1_440:
        name = "daily"
    elif minutes % 60 == 0:
        name = f"{minutes // 60}h"
    else:
        name = f"{minutes} min"
    return name if limit_id == MAIN_LIMIT else f"{limit_id} {name}"


def duration(seconds: float) -> str:
    """`2d 3h`, `4h 5m`, `12m`, `under a minute`."""
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else "under a minute"
