"""Live updates in the long-running service: what each fresh read sets off, and the background refresh.

Two pieces, both handed a `notify_all(notification, params)` that reaches every session that did
not opt out:

* `LiveUpdates.observe(summary)` is the `notify` of every pool read (background or asked for by a
  client). It records the read's usage, sends `accountPool/accountUpdated` and, for the
  `$CODEX_HOME` account, upstream's `account/rateLimits/updated`, each only when the content
  changed, and sends the `accountPool/alert`s that `AlertRules` raises.
* `RefreshScheduler.run()` refreshes every pool account in the background (opt-in): every interval
  (never below a floor, with jitter), backing off while reads fail (429, 5xx, timeouts: the pool
  reports them as `unavailable`) or the account must sign in, plus one read just after each
  window's `resetsAt` passes. It reads through `Pool.refresh`, which never spends anything.

Time comes from an injectable `Clock` and jitter from an injectable random source, so tests drive
both without sleeping.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import anyio
from pydantic import BaseModel

from app_server.config import REFRESH_FLOOR
from app_server.pool.alerts import AlertRules
from app_server.pool.usage import UsageRecorder, windows_of
from protocol import ext, v2
from protocol.methods import POOL_ACCOUNT_UPDATED, POOL_ALERT, RATE_LIMITS_UPDATED, Notification

if TYPE_CHECKING:
    from app_server.pool.pool import Identity, Notify, Pool
    from app_server.pool.snapshot import SnapshotWriter

log = logging.getLogger(__name__)

NotifyAll = Callable[[Notification, BaseModel], Awaitable[object]]

JITTER: Final = 0.1
"""Each delay is stretched or shrunk by up to this fraction, so accounts do not read in lockstep."""
MAX_BACKOFF: Final = 900.0
RESET_DELAY: Final = 5.0
"""Seconds after a window's `resetsAt` at which it is read again (upstream needs a moment)."""
CONCURRENCY: Final = 4


class Clock(Protocol):
    """Unix time in seconds (window resets are Unix times), and a way to wait for one."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class SystemClock:
    """The monitor's clock: wall time and sleeping until a deadline (tests give their own)."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, deadline - time.time()))


# -- what a fresh read sets off ----------------------------------------------------------------


class LiveUpdates:
    """Turns each fresh account summary into usage samples, change notifications and alerts.

    Parameters:
        notify_all: sends a server notification to every session that did not opt out of it.
        codex_home: the server's `$CODEX_HOME`; its account also gets `account/rateLimits/updated`.
        rules: the alert rules and their state.
        recorder: where usage samples go; None records nothing.
        clock: the time alerts are stamped with and expiries measured from.
        snapshot: keeps `statusline.json` current (the service only); None writes nothing.
        on_alert: also given each alert raised (alert delivery's `submit`); must not wait. None: nobody.
    """

    def __init__(
        self,
        notify_all: NotifyAll,
        *,
        codex_home: Path,
        rules: AlertRules | None = None,
        recorder: UsageRecorder | None = None,
        clock: Clock | None = None,
        snapshot: SnapshotWriter | None = None,
        on_alert: Callable[[ext.AccountPoolAlert], None] | None = None,  # alert delivery (#23)
    ) -> None:
        self._notify_all = notify_all
        self._on_alert = on_alert  # alert delivery (#23)
        self.snapshot = snapshot
        self._codex_home = codex_home
        self.rules = rules or AlertRules()
        self._recorder = recorder
        self._clock = clock or SystemClock()
        self._last: dict[str, ext.AccountSummary] = {}
        self._last_rate_limits: v2.RateLimitSnapshot | None = None

    def forget(self, account_id: str) -> None:
        self._last.pop(account_id, None)
        self.rules.forget(account_id)
        if self.snapshot is not None:
            self.snapshot.forget(account_id)

    async def observe(self, summary: ext.AccountSummary) -> bool:
        """Everything a fresh read of one account sets off. Never raises: the read it follows stands.

        Returns whether `accountPool/accountUpdated` went to every session (the summary changed)."""
        # State first, in one step: reads of one account that finish together must not both count as news.
        sends: list[tuple[Notification, BaseModel]] = []
        content = summary.model_copy(update={"refreshed_at": None})
        if self._last.get(summary.account_id) != content:
            self._last[summary.account_id] = content
            sends.append((POOL_ACCOUNT_UPDATED, ext.AccountUpdatedNotification(account=summary)))
        snapshot = summary.rate_limits
        if snapshot is not None and Path(summary.codex_home) == self._codex_home and snapshot != self._last_rate_limits:
            self._last_rate_limits = snapshot
            sends.append((RATE_LIMITS_UPDATED, v2.AccountRateLimitsUpdatedNotification(rate_limits=snapshot)))
        now = self._clock.now()
        try:
            alerts = self.rules.evaluate(summary, now)
        except Exception:
            log.exception("alert rules failed on account %r", summary.account_id)
            alerts = []
        if self.snapshot is not None:
            try:
                self.snapshot.update(summary, self.rules.attention(summary.account_id, now))
            except Exception:
                log.exception("updating the status line snapshot failed on account %r", summary.account_id)
        sends.extend((POOL_ALERT, ext.AccountPoolAlertNotification(alert=alert)) for alert in alerts)
        for alert in alerts:
            log.info("alert: %s", alert.message)
            if self._on_alert is not None:  # alert delivery (#23): queues only, never waits
                try:
                    self._on_alert(alert)
                except Exception:
                    log.exception("handing alert to delivery failed")
        if self._recorder is not None:
            await self._recorder.record(summary)
        for kind, params in sends:
            try:
                await self._notify_all(kind, params)
            except Exception:
                log.exception("sending %s failed", kind.name)
        return bool(sends) and sends[0][0] is POOL_ACCOUNT_UPDATED


# -- background refresh ------------------------------------------------------------------------


class RefreshSource(Protocol):
    """The accounts to refresh and a read of one; `PoolSource` adapts the pool."""

    def account_ids(self) -> list[str]: ...

    async def refresh(self, account_id: str) -> ext.AccountSummary: ...


class PoolSource:
    """Reads through `Pool.refresh` (never spends) with the server's own identity; each fresh
    summary goes to `notify` (normally `LiveUpdates.observe`)."""

    def __init__(self, pool: Pool, identity: Identity, notify: Notify) -> None:
        self._pool = pool
        self._identity = identity
        self._notify = notify

    def account_ids(self) -> list[str]:
        return [member.entry.id for member in self._pool.members()]

    async def refresh(self, account_id: str) -> ext.AccountSummary:
        return await self._pool.refresh(account_id, self._identity, self._notify)


def server_identity() -> Identity:
    """(user agent, originator) of reads nobody asked for: the server's own product user agent."""
    from app_server.upstream.useragent import PRODUCT, user_agent

    return user_agent(), PRODUCT


_BACK_OFF: Final = frozenset({ext.AccountStatus.UNAVAILABLE, ext.AccountStatus.REAUTH_REQUIRED})


class RefreshScheduler:
    """Refreshes every account of `source` on its own schedule until cancelled.

    One loop: sleep until the earliest account is due, read every due account (at most
    `concurrency` at once), schedule each one's next read, repeat. Accounts added to or removed
    from the pool are picked up at each wake-up; a new account is read at once.

    Parameters:
        source: the accounts and how to read one.
        interval: seconds between reads of an account that reads fine (raised to `floor`).
        clock: `now()` and `sleep_until()`; tests pass a fake one.
        rand: a random float in [0, 1) per delay, for jitter.
        floor: no two reads of one account closer than this, reset reads included.
        max_backoff: the longest wait while an account's reads fail or it must sign in.
    """

    def __init__(
        self,
        source: RefreshSource,
        *,
        interval: float,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        floor: float = REFRESH_FLOOR,
        jitter: float = JITTER,
        max_backoff: float = MAX_BACKOFF,
        reset_delay: float = RESET_DELAY,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._source = source
        self.floor = floor
        self.interval = max(interval, floor)
        self._clock = clock or SystemClock()
        self._rand = rand
        self._jitter = jitter
        self._max_backoff = max(max_backoff, self.interval)
        self._reset_delay = reset_delay
        self._concurrency = concurrency
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    def due(self) -> dict[str, float]:
        """When each known account is read next (Unix seconds)."""
        return dict(self._due)

    async def run(self) -> None:
        limiter = anyio.CapacityLimiter(self._concurrency)
        while True:
            now = self._clock.now()
            self._sync(now)
            deadline = min(self._due.values(), default=now + self.interval)
            if deadline > now:
                await self._clock.sleep_until(deadline)
                continue
            ready = sorted(a for a, at in self._due.items() if at <= now)
            async with anyio.create_task_group() as tg:
                for account_id in ready:
                    tg.start_soon(self._read, account_id, limiter)

    def _sync(self, now: float) -> None:
        try:
            ids = self._source.account_ids()
        except Exception as exc:  # a broken accounts.toml: keep the accounts we know, say why once per wake-up
            log.warning("background refresh: cannot list the pool's accounts: %s", exc)
            return
        for gone in self._due.keys() - set(ids):
            del self._due[gone]
            self._failures.pop(gone, None)
        for account_id in ids:
            self._due.setdefault(account_id, now)

    async def _read(self, account_id: str, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            started = self._clock.now()
            try:
                summary: ext.AccountSummary | None = await self._source.refresh(account_id)
            except Exception as exc:
                log.warning("background refresh of %r failed: %s", account_id, exc)
                summary = None
        if account_id in self._due:  # not removed from the pool meanwhile
            self._due[account_id] = self._next(account_id, summary, started, self._clock.now())

    def _next(self, account_id: str, summary: ext.AccountSummary | None, started: float, now: float) -> float:
        """When to read again: the interval, longer while failing, earlier for a window reset."""
        earliest = started + self.floor
        if summary is None or summary.status in _BACK_OFF:
            failures = self._failures[account_id] = self._failures.get(account_id, 0) + 1
            delay = min(self._max_backoff, self.interval * 2 ** min(failures, 16))
            return max(earliest, now + self._jittered(delay))
        self._failures.pop(account_id, None)
        at = now + self._jittered(self.interval)
        for _, _, window in windows_of(summary):
            if window.resets_at is not None and window.resets_at > now:
                at = min(at, window.resets_at + self._reset_delay)
        return max(earliest, at)

    def _jittered(self, delay: float) -> float:
        return delay * (1 + self._jitter * (2 * self._rand() - 1))
