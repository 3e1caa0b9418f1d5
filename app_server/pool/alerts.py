"""Alert rules: what in a stream of account summaries is worth telling an operator, once.

`AlertRules.evaluate` is fed each fresh summary of an account and answers the alerts it raises:

* `windowReset`: a window that had been used was reset (it came round, or a saved reset was applied);
* `usageThreshold`: a window's usage reached a threshold (default 80, 90, 100 %). Each threshold
  fires once per crossing: it re-arms only when usage falls below it again (after a reset). When a
  read jumps past several, only the highest is reported;
* `creditExpiring`: an unused saved reset expires within N days (default 3); once per credit;
* `reauthRequired`: the account must sign in again; once, until a read succeeds again;
* `runsOutBeforeReset`: at its burn rate (see `pool.forecast`, over the reads this process saw) a window
  reaches 100 % before it resets, within the lead time (default 60 minutes; 0 turns the rule off);
  once per window period: a reset re-arms it.

State is in memory: a restarted service reports what is true at its first read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from app_server.pool.forecast import DEFAULT_RULES, ForecastRules, duration, forecast_window, window_name
from app_server.pool.usage import is_reset, windows_of
from app_server.store.base import UsageSample
from protocol import ext, v2

__all__ = [
    "DEFAULT_EXPIRY_DAYS",
    "DEFAULT_RUNOUT_LEAD_MINUTES",
    "DEFAULT_THRESHOLDS",
    "AlertRules",
    "duration",
    "window_name",
]

DEFAULT_THRESHOLDS: Final = (80, 90, 100)
DEFAULT_EXPIRY_DAYS: Final = 3.0
DEFAULT_RUNOUT_LEAD_MINUTES: Final = 60.0

_RECOVERED: Final = frozenset({ext.AccountStatus.ACTIVE, ext.AccountStatus.RATE_LIMITED, ext.AccountStatus.UNSUPPORTED})


@dataclass
class _Window:
    used: int
    resets_at: int | None
    above: set[int]  # thresholds already reported for the current crossing
    samples: list[UsageSample] = field(default_factory=list)  # this period's reads, within the lookback
    runs_out: bool = False  # the latest forecast: runs out before it resets, within the lead time
    runout_reported: bool = False  # once per period


@dataclass
class _Account:
    windows: dict[tuple[str, ext.UsageWindow], _Window] = field(default_factory=dict)
    reauth: bool = False
    expiring: dict[str, int] = field(default_factory=dict)  # credit id -> its expiry, once reported


class AlertRules:
    """The alert state of every account seen, and the rules that turn a new summary into alerts."""

    def __init__(
        self,
        thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
        credit_expiry_days: float = DEFAULT_EXPIRY_DAYS,
        runout_lead_minutes: float = DEFAULT_RUNOUT_LEAD_MINUTES,
        forecast_rules: ForecastRules = DEFAULT_RULES,
    ) -> None:
        self.thresholds = tuple(sorted(set(thresholds)))
        self.credit_expiry_seconds = credit_expiry_days * 86_400
        self.runout_lead_seconds = runout_lead_minutes * 60
        self.forecast_rules = forecast_rules
        self._accounts: dict[str, _Account] = {}

    def forget(self, account_id: str) -> None:
        self._accounts.pop(account_id, None)

    def attention(self, account_id: str, now: float) -> ext.AlertSeverity | None:
        """The alert condition still in force for the account, after `evaluate` saw its latest read:
        critical while it must sign in or a window is used up, warning while a window is above a threshold or
        runs out before it resets within the lead time, or an unused saved reset is about to expire (what the
        status line marks)."""
        state = self._accounts.get(account_id)
        if state is None:
            return None
        if state.reauth or any(w.used >= 100 for w in state.windows.values()):
            return ext.AlertSeverity.CRITICAL
        if any(w.above or w.runs_out for w in state.windows.values()) or any(
            at >= now for at in state.expiring.values()
        ):
            return ext.AlertSeverity.WARNING
        return None

    def evaluate(self, summary: ext.AccountSummary, now: float) -> list[ext.AccountPoolAlert]:
        state = self._accounts.setdefault(summary.account_id, _Account())
        alerts = self._reauth(state, summary, now)
        for limit_id, slot, window in windows_of(summary):
            alerts.extend(self._window(state, summary, now, limit_id, slot, window))
        alerts.extend(self._credits(state, summary, now))
        return alerts

    def _reauth(self, state: _Account, summary: ext.AccountSummary, now: float) -> list[ext.AccountPoolAlert]:
        if summary.status is ext.AccountStatus.REAUTH_REQUIRED:
            if state.reauth:
                return []
            state.reauth = True
            return [
                ext.AccountPoolAlert(
                    kind=ext.AlertKind.REAUTH_REQUIRED,
                    account_id=summary.account_id,
                    message=f"{summary.account_id}: needs to sign in again: "
                    f"run `CODEX_HOME={summary.codex_home} codex login`",
                    severity=ext.AlertSeverity.CRITICAL,
                    emitted_at=int(now),
                )
            ]
        if summary.status in _RECOVERED:  # `unavailable` proves nothing either way
            state.reauth = False
        return []

    def _window(
        self,
        state: _Account,
        summary: ext.AccountSummary,
        now: float,
        limit_id: str,
        slot: ext.UsageWindow,
        window: v2.RateLimitWindow,
    ) -> list[ext.AccountPoolAlert]:
        used, resets_at = window.used_percent, window.resets_at
        name = window_name(limit_id, slot, window.window_duration_mins)
        before = state.windows.get((limit_id, slot))
        if before is None:
            before = state.windows[(limit_id, slot)] = _Window(used, resets_at, set())
        alerts = []

        def alert(kind: ext.AlertKind, severity: ext.AlertSeverity, message: str, threshold: int | None = None) -> None:
            alerts.append(
                ext.AccountPoolAlert(
                    kind=kind,
                    account_id=summary.account_id,
                    message=f"{summary.account_id}: {message}",
                    severity=severity,
                    limit_id=limit_id,
                    window=slot,
                    window_minutes=window.window_duration_mins,
                    threshold=threshold,
                    used_percent=used,
                    resets_at=resets_at,
                    emitted_at=int(now),
                )
            )

        was_reset = is_reset(before.used, before.resets_at, used, resets_at)
        if before.used > 0 and was_reset:
            alert(
                ext.AlertKind.WINDOW_RESET,
                ext.AlertSeverity.INFO,
                f"the {name} window was reset ({before.used}% used before, {used}% now)",
            )
        if was_reset:
            before.samples, before.runout_reported = [], False
        before.used, before.resets_at = used, resets_at
        before.above = {t for t in before.above if used >= t}  # falling below a threshold re-arms it
        crossed = [t for t in self.thresholds if used >= t and t not in before.above]
        if crossed:
            before.above.update(crossed)
            top = crossed[-1]
            when = f", resets in {duration(resets_at - now)}" if resets_at is not None and resets_at > now else ""
            alert(
                ext.AlertKind.USAGE_THRESHOLD,
                ext.AlertSeverity.CRITICAL if top >= 100 else ext.AlertSeverity.WARNING,
                f"the {name} window is at {used}% (crossed {top}%){when}",
                threshold=top,
            )
        forecast = self._forecast(before, summary, now, limit_id, slot, window)
        if forecast is not None and forecast.runs_out_at is not None:
            before.runout_reported = True
            alerts.append(
                ext.AccountPoolAlert(
                    kind=ext.AlertKind.RUNS_OUT_BEFORE_RESET,
                    account_id=summary.account_id,
                    message=f"{summary.account_id}: the {name} window runs out in "
                    f"{duration(max(0.0, forecast.runs_out_at - now))} at {forecast.burn_rate_per_hour:g}%/h, "
                    f"before it resets"
                    + (f" in {duration(resets_at - now)}" if resets_at is not None and resets_at > now else ""),
                    severity=ext.AlertSeverity.WARNING,
                    limit_id=limit_id,
                    window=slot,
                    window_minutes=window.window_duration_mins,
                    used_percent=used,
                    resets_at=resets_at,
                    runs_out_at=forecast.runs_out_at,
                    burn_rate_per_hour=forecast.burn_rate_per_hour,
                    emitted_at=int(now),
                )
            )
        return alerts

    def _forecast(
        self,
        state: _Window,
        summary: ext.AccountSummary,
        now: float,
        limit_id: str,
        slot: ext.UsageWindow,
        window: v2.RateLimitWindow,
    ) -> ext.WindowForecast | None:
        """The window's forecast when it is news: it runs out before it resets, within the lead time, and that
        was not reported in this period yet."""
        taken_at = summary.refreshed_at if summary.refreshed_at is not None else int(now)
        sample = UsageSample(
            summary.account_id,
            limit_id,
            slot.value,
            taken_at,
            window.used_percent,
            window.window_duration_mins,
            window.resets_at,
        )
        horizon = now - self.forecast_rules.lookback
        state.samples = [s for s in state.samples if s.taken_at >= horizon and s.taken_at < taken_at] + [sample]
        state.runs_out = False
        if self.runout_lead_seconds <= 0:
            return None
        forecast = forecast_window(state.samples, now, self.forecast_rules)
        state.runs_out = (
            forecast.status is ext.ForecastStatus.PROJECTED
            and forecast.runs_out_before_reset is True
            and forecast.runs_out_at is not None
            and forecast.runs_out_at - now <= self.runout_lead_seconds
        )
        return forecast if state.runs_out and not state.runout_reported else None

    def _credits(self, state: _Account, summary: ext.AccountSummary, now: float) -> list[ext.AccountPoolAlert]:
        state.expiring = {cid: at for cid, at in state.expiring.items() if at >= now}
        overview = summary.reset_credits
        if overview is None or overview.credits is None:
            return []
        alerts = []
        for credit in overview.credits:
            at = credit.expires_at
            if (
                at is None
                or credit.status is not v2.RateLimitResetCreditStatus.AVAILABLE
                or credit.id in state.expiring
                or not now < at <= now + self.credit_expiry_seconds
            ):
                continue
            state.expiring[credit.id] = at
            what = f"saved reset “{credit.title}”" if credit.title else "a saved reset"
            alerts.append(
                ext.AccountPoolAlert(
                    kind=ext.AlertKind.CREDIT_EXPIRING,
                    account_id=summary.account_id,
                    message=f"{summary.account_id}: {what} expires in {duration(at - now)} and has not been used",
                    severity=ext.AlertSeverity.WARNING,
                    credit_id=credit.id,
                    expires_at=at,
                    emitted_at=int(now),
                )
            )
        return alerts
