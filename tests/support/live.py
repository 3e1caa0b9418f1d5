"""Helpers for the live-update tests: account summaries built in one line, a fake clock, a recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio.lowlevel
from pydantic import BaseModel

from app_server.store.base import UsageSample
from protocol import ext, v2
from protocol.methods import Notification

FIVE_HOURS = 300
WEEK = 10_080


def window(used: int, resets_at: int | None, minutes: int | None = FIVE_HOURS) -> v2.RateLimitWindow:
    return v2.RateLimitWindow(used_percent=used, window_duration_mins=minutes, resets_at=resets_at)


def credit(credit_id: str, expires_at: int | None, status: str = "available") -> v2.RateLimitResetCredit:
    return v2.RateLimitResetCredit(
        id=credit_id,
        reset_type=v2.RateLimitResetType.CODEX_RATE_LIMITS,
        status=v2.RateLimitResetCreditStatus(status),
        granted_at=1,
        expires_at=expires_at,
    )


def summary(
    account_id: str = "alice",
    *,
    primary: v2.RateLimitWindow | None = None,
    secondary: v2.RateLimitWindow | None = None,
    status: ext.AccountStatus = ext.AccountStatus.ACTIVE,
    credits: list[v2.RateLimitResetCredit] | None = None,
    refreshed_at: int | None = None,
    codex_home: str = "/homes/alice",
    extra_limits: dict[str, v2.RateLimitSnapshot] | None = None,
) -> ext.AccountSummary:
    """A summary as the pool makes one; no windows and `reauthRequired` give the summary of a failed read."""
    snapshot = None
    by_id = None
    if primary is not None or secondary is not None:
        snapshot = v2.RateLimitSnapshot(limit_id="codex", primary=primary, secondary=secondary)
        by_id = {"codex": snapshot, **(extra_limits or {})}
    overview = None
    if credits is not None:
        overview = ext.ResetCreditsOverview(available_count=len(credits), credits=credits)
    return ext.AccountSummary(
        account_id=account_id,
        label=account_id.title(),
        codex_home=codex_home,
        status=status,
        rate_limits=snapshot,
        rate_limits_by_limit_id=by_id,
        reset_credits=overview,
        reset_action=ext.ResetAction(enabled=False, warning=ext.APPLY_WARNING),
        refreshed_at=refreshed_at,
    )


def sample(
    taken_at: int,
    used: int,
    resets_at: int | None,
    *,
    minutes: int | None = FIVE_HOURS,
    limit_id: str = "codex",
    window_name: str = "primary",
    account_id: str = "alice",
) -> UsageSample:
    return UsageSample(account_id, limit_id, window_name, taken_at, used, minutes, resets_at)


class FakeClock:
    """Unix time that moves only when someone sleeps: `sleep_until` jumps straight to the deadline."""

    def __init__(self, start: float) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        self.sleeps.append(deadline)
        self.time = max(self.time, deadline)
        await anyio.lowlevel.checkpoint()


@dataclass
class Sent:
    """A `notify_all` that records what it was asked to send."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, kind: Notification, params: BaseModel) -> None:
        self.messages.append((kind.name, params.model_dump(mode="json", by_alias=True)))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [params for method, params in self.messages if method == name]

    def alerts(self) -> list[dict[str, Any]]:
        return [params["alert"] for params in self.named("accountPool/alert")]


@dataclass
class MemoryUsageStore:
    """The usage part of the store, in a list, with the interface's semantics (newest `limit`, oldest first)."""

    samples: list[UsageSample] = field(default_factory=list)
    pruned_before: list[int] = field(default_factory=list)
    fail: bool = False

    async def record_usage(self, samples: list[UsageSample]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.samples.extend(samples)

    async def usage_history(self, account_id: str, *, since: int | None, limit: int) -> list[UsageSample]:
        rows = [s for s in self.samples if s.account_id == account_id and (since is None or s.taken_at >= since)]
        rows.sort(key=lambda s: (s.taken_at, s.limit_id, s.window))
        return rows[-limit:] if limit > 0 else []

    async def prune_usage(self, before: int) -> int:
        self.pruned_before.append(before)
        kept = [s for s in self.samples if s.taken_at >= before]
        dropped = len(self.samples) - len(kept)
        self.samples = kept
        return dropped
