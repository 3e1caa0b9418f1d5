"""The per-account gauges, read at scrape time from the pool's current summaries (a custom Collector).

Never calls upstream: each scrape reports the summaries the pool already holds (those of the last
`accountPool/list`, refresh, apply or background refresh). Labels are the pool's account ids and a
rate limit's id, never a key, an email or a label the operator typed; an account's limits are capped at
`MAX_LIMITS` so a misbehaving upstream cannot grow the series without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol import ext
from protocol.v2 import RateLimitSnapshot

MAX_LIMITS: Final = 8
"""Rate limits reported per account, at most (upstream sends one or two)."""
DEFAULT_LIMIT: Final = "codex"
PREFIX: Final = "codex_limits_account"

Summaries = Callable[[], Iterable[ext.AccountSummary]]


def _limits(summary: ext.AccountSummary) -> list[tuple[str, RateLimitSnapshot]]:
    by_id = summary.rate_limits_by_limit_id
    if by_id:
        return sorted(by_id.items())[:MAX_LIMITS]
    if summary.rate_limits is not None:
        return [(summary.rate_limits.limit_id or DEFAULT_LIMIT, summary.rate_limits)]
    return []


def read_ok(summary: ext.AccountSummary) -> bool:
    """Whether this summary comes from a successful read of the account's usage."""
    return summary.status in (ext.AccountStatus.ACTIVE, ext.AccountStatus.RATE_LIMITED)


class AccountsCollector(Collector):
    """`collect()` turns the pool's summaries into gauges; `clock` (Unix seconds) is injectable for tests.

    The last successful read of each account is remembered from one scrape to the next: a failed read
    replaces the pool's summary, and the age of the last good one is what an operator alerts on.
    """

    def __init__(self, summaries: Summaries, *, clock: Callable[[], float] = time.time) -> None:
        self._summaries = summaries
        self._clock = clock
        self._last_ok: dict[str, int] = {}

    def describe(self) -> Iterator[Metric]:
        # Described as nothing: the registry then never calls `collect` at registration (the pool may not exist yet).
        return iter(())

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        used = GaugeMetricFamily(
            f"{PREFIX}_window_used_percent",
            "Percent of a rate-limit window used, as of the account's last read.",
            labels=["account", "limit", "window"],
        )
        resets = GaugeMetricFamily(
            f"{PREFIX}_window_reset_seconds",
            "Seconds until a rate-limit window resets (0 when the reset time has passed).",
            labels=["account", "limit", "window"],
        )
        credits = GaugeMetricFamily(
            f"{PREFIX}_reset_credits_available", "Saved rate-limit resets available to apply.", labels=["account"]
        )
        expiry = GaugeMetricFamily(
            f"{PREFIX}_reset_credit_expiry_seconds",
            "Seconds until the soonest-expiring available saved reset expires (absent when none expires).",
            labels=["account"],
        )
        status = GaugeMetricFamily(
            f"{PREFIX}_status", "The account's status, one-hot: 1 for its current status.", labels=["account", "status"]
        )
        read_age = GaugeMetricFamily(
            f"{PREFIX}_read_age_seconds",
            "Seconds since the account was last read, successfully or not.",
            labels=["account"],
        )
        ok_age = GaugeMetricFamily(
            f"{PREFIX}_last_success_age_seconds",
            "Seconds since the last successful read of the account's usage seen by this service.",
            labels=["account"],
        )
        seen: set[str] = set()
        for summary in self._summaries():
            account = summary.account_id
            seen.add(account)
            for limit, snapshot in _limits(summary):
                for window, values in (("primary", snapshot.primary), ("secondary", snapshot.secondary)):
                    if values is None:
                        continue
                    used.add_metric([account, limit, window], values.used_percent)
                    if values.resets_at is not None:
                        resets.add_metric([account, limit, window], max(0.0, values.resets_at - now))
            overview = summary.reset_credits
            if overview is not None:
                credits.add_metric([account], overview.available_count)
                if overview.nearest_expires_at is not None:
                    expiry.add_metric([account], max(0.0, overview.nearest_expires_at - now))
            for value in ext.AccountStatus:
                status.add_metric([account, value.value], 1.0 if summary.status is value else 0.0)
            if summary.refreshed_at is not None:
                read_age.add_metric([account], max(0.0, now - summary.refreshed_at))
                if read_ok(summary):
                    self._last_ok[account] = max(summary.refreshed_at, self._last_ok.get(account, 0))
            if account in self._last_ok:
                ok_age.add_metric([account], max(0.0, now - self._last_ok[account]))
        for gone in self._last_ok.keys() - seen:  # removed from accounts.toml: its series end
            del self._last_ok[gone]
        yield from (used, resets, credits, expiry, status, read_age, ok_age)
