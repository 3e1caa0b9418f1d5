"""Alert rules: what in a stream of account summaries is worth telling an operator, once.

`AlertRules.evaluate` is fed each fresh summary of an account and answers the alerts it raises:

* `windowReset`: a window that had been used was reset (it came round, or a saved reset was applied);
* `usageThreshold`: a window's usage reached a threshold (default 80, 90, 100 %). Each threshold
  fires once per crossing: it re-arms only when usage falls below it again (after a reset). When a
  read jumps past several, only the highest is reported;
* `creditExpiring`: an unused saved reset expires within N days (default 3); once per credit;
* `reauthRequired`: the account must sign in again; once, until a read succeeds again.

State is in memory: a restarted service reports what is true at its first read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from app_server.pool.usage import MAIN_LIMIT, is_reset, windows_of
from protocol import ext, v2

DEFAULT_THRESHOLDS: Final = (80, 90, 100)
DEFAULT_EXPIRY_DAYS: Final = 3.0

_RECOVERED: Final = frozenset({ext.AccountStatus.ACTIVE, ext.AccountStatus.RATE_LIMITED, ext.AccountStatus.UNSUPPORTED})


@dataclass
class _Window:
    used: int
    resets_at: int | None
    above: set[int]  # thresholds already reported for the current crossing


@dataclass
class _Account:
    windows: dict[tuple[str, ext.UsageWindow], _Window] = field(default_factory=dict)
    reauth: bool = False
    expiring: dict[str, int] = field(default_factory=dict)  # credit id -> its expiry, once reported


class AlertRules:
    """The alert state of every account seen, and the rules that turn a new summary into alerts."""

    def __init__(
        self, thresholds: Sequence[int] = DEFAULT_THRESHOLDS, credit_expiry_days: float = DEFAULT_EXPIRY_DAYS
    ) -> None:
        self.thresholds = tuple(sorted(set(thresholds)))
        self.credit_expiry_seconds = credit_expiry_days * 86_400
        self._accounts: dict[str, _Account] = {}

    def forget(self, account_id: str) -> None:
        self._accounts.pop(account_id, None)

    def attention(self, account_id: str, now: float) -> ext.AlertSeverity | None:
        """The alert condition still in force for the account, after `evaluate` saw its latest read:
        critical while it must sign in or a window is used up, warning while a window is above a threshold
        or an unused saved reset is about to expire (what the status line marks)."""
        state = self._accounts.get(account_id)
        if state is None:
            return None
        if state.reauth or any(w.used >= 100 for w in state.windows.values()):
            return ext.AlertSeverity.CRITICAL
        if any(w.above for w in state.windows.values()) or any(at >= now for at in state.expiring.values()):
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

        if before.used > 0 and is_reset(before.used, before.resets_at, used, resets_at):
            alert(
                ext.AlertKind.WINDOW_RESET,
                ext.AlertSeverity.INFO,
                f"the {name} window was reset ({before.used}% used before, {used}% now)",
            )
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
        return alerts

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
