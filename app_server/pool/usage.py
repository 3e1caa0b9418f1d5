"""Usage history: each read's windows as samples, and what they say (burn rate, when a window runs out).

The arithmetic is pure functions over `UsageSample` lists (oldest first, as the store answers);
`UsageRecorder` turns a fresh `AccountSummary` into samples for the store and prunes old ones;
`usage_history` answers `accountPool/usageHistory` from the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Final, Protocol

from app_server.store.base import UsageSample
from protocol import ext, v2

log = logging.getLogger(__name__)

MAIN_LIMIT: Final = "codex"
RESET_SLACK: Final = 120
"""Seconds `resetsAt` may move between two reads of one window without it being a reset: upstream
computes it as now plus the seconds left, which jitters by a second or so."""
MIN_SPAN: Final = 300
"""Seconds of history a burn rate needs; a shorter span says more about rounding than about use."""
DEFAULT_LIMIT: Final = 5000
PRUNE_EVERY: Final = 3600.0


class UsageStore(Protocol):
    """The part of `app_server.store.base.Store` that usage history uses."""

    async def record_usage(self, samples: list[UsageSample]) -> None: ...

    async def usage_history(self, account_id: str, *, since: int | None, limit: int) -> list[UsageSample]: ...

    async def prune_usage(self, before: int) -> int: ...


# -- windows of a summary ----------------------------------------------------------------------


def windows_of(summary: ext.AccountSummary) -> Iterator[tuple[str, ext.UsageWindow, v2.RateLimitWindow]]:
    """Every (limit id, primary|secondary, window) the summary's read shows, the main limit first."""
    snapshots: dict[str, v2.RateLimitSnapshot] = {}
    if summary.rate_limits_by_limit_id:
        snapshots.update(summary.rate_limits_by_limit_id)
    elif summary.rate_limits is not None:
        snapshots[summary.rate_limits.limit_id or MAIN_LIMIT] = summary.rate_limits
    for limit_id in sorted(snapshots, key=lambda name: (name != MAIN_LIMIT, name)):
        snapshot = snapshots[limit_id]
        for slot, window in (
            (ext.UsageWindow.PRIMARY, snapshot.primary),
            (ext.UsageWindow.SECONDARY, snapshot.secondary),
        ):
            if window is not None:
                yield limit_id, slot, window


def samples_from(summary: ext.AccountSummary, now: float) -> list[UsageSample]:
    """One sample per window of the summary, taken when the summary was read (or `now`)."""
    taken_at = summary.refreshed_at if summary.refreshed_at is not None else int(now)
    return [
        UsageSample(
            account_id=summary.account_id,
            limit_id=limit_id,
            window=slot.value,
            taken_at=taken_at,
            used_percent=window.used_percent,
            window_minutes=window.window_duration_mins,
            resets_at=window.resets_at,
        )
        for limit_id, slot, window in windows_of(summary)
    ]


# -- arithmetic over one window's samples --------------------------------------------------------


def is_reset(before_used: int, before_resets_at: int | None, used: int, resets_at: int | None) -> bool:
    """Whether a window was reset between two reads: usage fell, or its reset time moved on."""
    if used < before_used:
        return True
    return before_resets_at is not None and resets_at is not None and resets_at - before_resets_at > RESET_SLACK


def current_window(samples: list[UsageSample]) -> list[UsageSample]:
    """The samples since the last reset (all of one window, oldest first)."""
    start = 0
    for i in range(1, len(samples)):
        a, b = samples[i - 1], samples[i]
        if is_reset(a.used_percent, a.resets_at, b.used_percent, b.resets_at):
            start = i
    return samples[start:]


def burn_rate(samples: list[UsageSample]) -> float | None:
    """Percentage points per hour in the current window since its last reset.

    When the window's length and reset time are known, the window began at `resetsAt - length`
    with nothing used, so the rate is measured from there; otherwise from the first sample after
    the reset. None with less than `MIN_SPAN` seconds to measure over.
    """
    window = current_window(samples)
    if not window:
        return None
    first, last = window[0], window[-1]
    start_at, start_used = first.taken_at, first.used_percent
    if last.window_minutes and last.resets_at is not None:
        began = last.resets_at - last.window_minutes * 60
        if began <= first.taken_at:
            start_at, start_used = began, 0
    span = last.taken_at - start_at
    if span < MIN_SPAN:
        return None
    return round(max(0.0, (last.used_percent - start_used) * 3600 / span), 3)


def runs_out_at(samples: list[UsageSample], rate: float | None) -> int | None:
    """When the current window reaches 100 % at `rate` (when it did, if it has); None when it resets
    first, usage is not growing, or the rate is unknown."""
    window = current_window(samples)
    if not window:
        return None
    last = window[-1]
    if last.used_percent >= 100:
        return next(s.taken_at for s in window if s.used_percent >= 100)
    if rate is None or rate <= 0:
        return None
    at = last.taken_at + (100 - last.used_percent) * 3600 / rate
    if last.resets_at is not None and at >= last.resets_at:
        return None
    return int(at)


def window_histories(samples: list[UsageSample]) -> list[ext.UsageWindowHistory]:
    """Samples of one account grouped by window (main limit first, primary before secondary)."""

    def key(sample: UsageSample) -> tuple[bool, str, str]:
        return sample.limit_id != MAIN_LIMIT, sample.limit_id, sample.window

    histories = []
    for (_, limit_id, window), group in groupby(sorted(samples, key=lambda s: (key(s), s.taken_at)), key=key):
        rows = list(group)
        rate = burn_rate(rows)
        histories.append(
            ext.UsageWindowHistory(
                limit_id=limit_id,
                window=ext.UsageWindow(window),
                window_minutes=rows[-1].window_minutes,
                samples=[
                    ext.UsagePoint(taken_at=s.taken_at, used_percent=s.used_percent, resets_at=s.resets_at)
                    for s in rows
                ],
                burn_rate_per_hour=rate,
                runs_out_at=runs_out_at(rows, rate),
            )
        )
    return histories


async def usage_history(
    store: UsageStore, params: ext.AccountPoolUsageHistoryParams, now: float
) -> ext.AccountPoolUsageHistoryResponse:
    since = int(now) - params.since_seconds if params.since_seconds is not None and params.since_seconds > 0 else None
    limit = params.limit if params.limit is not None and params.limit > 0 else DEFAULT_LIMIT
    samples = await store.usage_history(params.account_id, since=since, limit=limit)
    return ext.AccountPoolUsageHistoryResponse(account_id=params.account_id, windows=window_histories(samples))


# -- recording ---------------------------------------------------------------------------------


class UsageRecorder:
    """Records every fresh read's windows, and drops samples older than the retention (hourly).

    A failing store is logged, never raised: history is a convenience, the read it rides on is not.
    """

    def __init__(
        self,
        store: UsageStore,
        *,
        retention_seconds: float,
        now: Callable[[], float] = time.time,
        prune_every: float = PRUNE_EVERY,
    ) -> None:
        self._store = store
        self._retention = retention_seconds
        self._now = now
        self._prune_every = prune_every
        self._pruned_at: float | None = None

    async def record(self, summary: ext.AccountSummary) -> None:
        now = self._now()
        samples = samples_from(summary, now)
        try:
            if samples:
                await self._store.record_usage(samples)
            if self._pruned_at is None or now - self._pruned_at >= self._prune_every:
                self._pruned_at = now
                dropped = await self._store.prune_usage(int(now - self._retention))
                if dropped:
                    log.info("dropped %d usage samples older than the retention", dropped)
        except Exception:
            log.exception("recording usage of account %r failed", summary.account_id)
