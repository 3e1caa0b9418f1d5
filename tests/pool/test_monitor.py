"""Live updates: the background refresh schedule and what each fresh read sends (issue #12).

The scheduler runs on a fake clock that jumps to each deadline (nothing sleeps), and a scripted
source that records when each account was read; the last test runs it against the pool and the
simulated upstream on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from app_server.config import REFRESH_FLOOR, LiveSettings
from app_server.pool.alerts import AlertRules
from app_server.pool.monitor import LiveUpdates, PoolSource, RefreshScheduler, server_identity
from app_server.pool.usage import UsageRecorder
from app_server.world import World as ServerWorld
from protocol import ext
from tests.support.live import FakeClock, MemoryUsageStore, Sent, summary, window
from tests.support.pool_world import World

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0
WAIT = 10.0
FAR = int(T0) + 7 * 86_400  # a window reset well past every test's horizon

Answer = Callable[[str, float], ext.AccountSummary | Exception]


def healthy(account_id: str, now: float) -> ext.AccountSummary:
    return summary(account_id, primary=window(10, FAR), refreshed_at=int(now))


class ScriptedSource:
    """Accounts that answer `answer(account_id, now)`; stops the test after `reads` reads."""

    def __init__(self, clock: FakeClock, ids: list[str], reads: int, answer: Answer = healthy) -> None:
        self.clock = clock
        self.ids = ids
        self.answer = answer
        self.reads = reads
        self.calls: list[tuple[float, str]] = []
        self.done = anyio.Event()

    def account_ids(self) -> list[str]:
        return list(self.ids)

    async def refresh(self, account_id: str) -> ext.AccountSummary:
        self.calls.append((self.clock.now() - T0, account_id))
        if len(self.calls) >= self.reads:
            self.done.set()
        result = self.answer(account_id, self.clock.now())
        if isinstance(result, Exception):
            raise result
        return result

    def times(self, account_id: str) -> list[float]:
        return [round(t, 3) for t, a in self.calls if a == account_id]


async def run_until_done(scheduler: RefreshScheduler, source: ScriptedSource) -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run)
            await source.done.wait()
            tg.cancel_scope.cancel()


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def sequence(*values: float) -> Callable[[], float]:
    it: Iterator[float] = iter(values)
    return lambda: next(it)


# -- the schedule ----------------------------------------------------------------------------------------------


async def test_each_account_is_read_at_once_then_every_interval() -> None:
    clock = FakeClock(T0)
    source = ScriptedSource(clock, ["alice", "bob"], reads=6)
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=constant(0.5))
    await run_until_done(scheduler, source)
    assert source.times("alice") == [0, 60, 120]
    assert source.times("bob") == [0, 60, 120]


async def test_jitter_stretches_and_shrinks_the_interval() -> None:
    clock = FakeClock(T0)
    source = ScriptedSource(clock, ["alice"], reads=3)
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=sequence(0.0, 1.0, 0.5))
    await run_until_done(scheduler, source)
    assert source.times("alice") == [0, 54, 120]  # 60 s - 10 %, then + 10 %


async def test_no_account_is_read_more_often_than_the_floor() -> None:
    clock = FakeClock(T0)
    source = ScriptedSource(clock, ["alice"], reads=3)
    scheduler = RefreshScheduler(source, interval=5, clock=clock, rand=constant(0.0), floor=15)
    assert scheduler.interval == 15
    await run_until_done(scheduler, source)
    assert source.times("alice") == [0, 15, 30]  # jitter would make it 13.5: the floor wins


async def test_failing_reads_back_off_and_a_good_read_restores_the_interval() -> None:
    clock = FakeClock(T0)
    script = iter(["unavailable", "unavailable", "error", "unavailable", "ok", "ok"])

    def answer(account_id: str, now: float) -> ext.AccountSummary | Exception:
        step = next(script)
        if step == "error":
            return RuntimeError("boom")
        if step == "unavailable":  # how the pool reports a 429, a 5xx or a timeout
            return summary(account_id, status=ext.AccountStatus.UNAVAILABLE, refreshed_at=int(now))
        return healthy(account_id, now)

    source = ScriptedSource(clock, ["alice"], reads=6, answer=answer)
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=constant(0.5), max_backoff=400)
    await run_until_done(scheduler, source)
    gaps = [b - a for a, b in zip(source.times("alice"), source.times("alice")[1:], strict=False)]
    assert gaps == [120, 240, 400, 400, 60]  # doubling, capped; then back to the interval


async def test_an_account_that_must_sign_in_is_read_less_often() -> None:
    clock = FakeClock(T0)

    def answer(account_id: str, now: float) -> ext.AccountSummary:
        return summary(account_id, status=ext.AccountStatus.REAUTH_REQUIRED, refreshed_at=int(now))

    source = ScriptedSource(clock, ["carol"], reads=3, answer=answer)
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=constant(0.5))
    await run_until_done(scheduler, source)
    assert source.times("carol") == [0, 120, 360]


async def test_a_window_is_read_again_just_after_it_resets() -> None:
    clock = FakeClock(T0)
    resets = int(T0) + 40

    def answer(account_id: str, now: float) -> ext.AccountSummary:
        at = resets if now < resets else resets + 5 * 3600  # the read after the reset shows the next window
        return summary(account_id, primary=window(90 if now < resets else 0, at), refreshed_at=int(now))

    source = ScriptedSource(clock, ["alice"], reads=3, answer=answer)
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=constant(0.5), reset_delay=5)
    await run_until_done(scheduler, source)
    assert source.times("alice") == [0, 45, 105]


async def test_a_reset_read_still_keeps_the_floor() -> None:
    clock = FakeClock(T0)
    resets = int(T0) + 3
    source = ScriptedSource(
        clock,
        ["alice"],
        reads=2,
        answer=lambda a, now: summary(a, primary=window(90, resets), refreshed_at=int(now)),
    )
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=constant(0.5), floor=15)
    await run_until_done(scheduler, source)
    assert source.times("alice") == [0, 15]


async def test_accounts_joining_and_leaving_the_pool_are_picked_up() -> None:
    clock = FakeClock(T0)
    source = ScriptedSource(clock, ["alice"], reads=5)

    def answer(account_id: str, now: float) -> ext.AccountSummary:
        if now - T0 == 60 and account_id == "alice":
            source.ids = ["bob"]  # edited accounts.toml: alice out, bob in
        return healthy(account_id, now)

    source.answer = answer
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=constant(0.5))
    await run_until_done(scheduler, source)
    assert source.calls == [(0, "alice"), (60, "alice"), (60, "bob"), (120, "bob"), (180, "bob")]
    assert set(scheduler.due()) == {"bob"}


async def test_an_unreadable_pool_keeps_the_known_accounts() -> None:
    clock = FakeClock(T0)
    source = ScriptedSource(clock, ["alice"], reads=3)
    listings = iter([["alice"]])

    def account_ids() -> list[str]:
        try:
            return next(listings)
        except StopIteration:
            raise ValueError("accounts.toml: line 3: bad id") from None

    source.account_ids = account_ids  # type: ignore[method-assign]
    scheduler = RefreshScheduler(source, interval=60, clock=clock, rand=constant(0.5))
    await run_until_done(scheduler, source)
    assert source.times("alice") == [0, 60, 120]


# -- what a read sends -----------------------------------------------------------------------------------------


def live(sent: Sent, clock: FakeClock, **kwargs: object) -> LiveUpdates:
    return LiveUpdates(sent, codex_home=Path("/homes/default"), clock=clock, **kwargs)  # type: ignore[arg-type]


async def test_account_updates_are_sent_only_when_something_changed() -> None:
    sent = Sent()
    updates = live(sent, FakeClock(T0))
    await updates.observe(summary(primary=window(10, FAR), refreshed_at=int(T0)))
    await updates.observe(summary(primary=window(10, FAR), refreshed_at=int(T0) + 60))  # only the time moved
    await updates.observe(summary(primary=window(11, FAR), refreshed_at=int(T0) + 120))
    accounts = sent.named("accountPool/accountUpdated")
    assert [(a["account"]["rateLimits"]["primary"]["usedPercent"], a["account"]["refreshedAt"]) for a in accounts] == [
        (10, int(T0)),
        (11, int(T0) + 120),
    ]
    assert sent.named("account/rateLimits/updated") == []  # alice is not the $CODEX_HOME account


async def test_the_codex_home_account_also_gets_upstreams_notification_in_its_exact_shape() -> None:
    sent = Sent()
    updates = live(sent, FakeClock(T0))
    home = "/homes/default"
    await updates.observe(summary("default", primary=window(26, FAR), codex_home=home))
    await updates.observe(summary("default", primary=window(26, FAR), codex_home=home, refreshed_at=5))
    await updates.observe(summary("default", status=ext.AccountStatus.UNAVAILABLE, codex_home=home))
    await updates.observe(summary("default", primary=window(27, FAR), codex_home=home))
    notes = sent.named("account/rateLimits/updated")
    assert notes == [
        {
            "rateLimits": {
                "limitId": "codex",
                "limitName": None,
                "normalModelSlug": None,
                "primary": {"usedPercent": used, "windowDurationMins": 300, "resetsAt": FAR},
                "secondary": None,
                "credits": None,
                "individualLimit": None,
                "spendControlReached": None,
                "planType": None,
                "rateLimitReachedType": None,
            }
        }
        for used in (26, 27)
    ]  # a failed read sends none: the notification has no way to say "unknown"
    assert len(sent.named("accountPool/accountUpdated")) == 3


async def test_alerts_go_to_every_session_once_and_usage_is_recorded() -> None:
    sent = Sent()
    store = MemoryUsageStore()
    clock = FakeClock(T0)
    updates = live(
        sent,
        clock,
        rules=AlertRules(thresholds=[80]),
        recorder=UsageRecorder(store, retention_seconds=86_400, now=clock.now),
    )
    for used in (70, 85, 85):
        await updates.observe(summary(primary=window(used, FAR), refreshed_at=int(clock.now())))
        clock.time += 60
    (alert,) = sent.alerts()
    assert (alert["kind"], alert["threshold"], alert["accountId"], alert["emittedAt"]) == (
        "usageThreshold",
        80,
        "alice",
        int(T0) + 60,
    )
    assert [s.used_percent for s in store.samples] == [70, 85, 85]


async def test_a_failing_send_does_not_stop_the_others() -> None:
    calls: list[str] = []

    async def flaky(kind: object, params: object) -> None:
        name = getattr(kind, "name", "")
        calls.append(name)
        if name == "accountPool/accountUpdated":
            raise ConnectionResetError("a session went away")

    updates = LiveUpdates(flaky, codex_home=Path("/x"), clock=FakeClock(T0))
    await updates.observe(summary(primary=window(95, FAR)))
    assert calls == ["accountPool/accountUpdated", "accountPool/alert"]


# -- against the pool ------------------------------------------------------------------------------------------


async def test_background_refresh_reads_the_pool_without_spending_and_announces_it(world: World) -> None:
    services = ServerWorld(world.settings())
    pool = services.pool
    sent = Sent()
    clock = FakeClock(time.time())
    updates = LiveUpdates(sent, codex_home=world.codex_home, rules=AlertRules(credit_expiry_days=8), clock=clock)
    reads: list[str] = []
    done = anyio.Event()

    async def observe(s: ext.AccountSummary) -> None:
        reads.append(s.account_id)
        await updates.observe(s)
        if all(reads.count(a) >= 2 for a in ("alice", "bob", "carol")):
            done.set()

    scheduler = RefreshScheduler(PoolSource(pool, server_identity(), observe), interval=60, clock=clock)
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                await done.wait()
                tg.cancel_scope.cancel()
    finally:
        await services.aclose()

    assert set(reads) == {"alice", "bob", "carol"}
    # every account read at least twice, nothing changed upstream in between: one update per account
    assert sorted(n["account"]["accountId"] for n in sent.named("accountPool/accountUpdated")) == [
        "alice",
        "bob",
        "carol",
    ]
    alerts = sorted((a["accountId"], a["kind"], a["threshold"] or a["creditId"]) for a in sent.alerts())
    assert alerts == [
        ("alice", "creditExpiring", "credit-alice-1"),
        ("alice", "usageThreshold", 90),  # the weekly window at 92 %
        ("alice", "usageThreshold", 100),  # the 5 h window used up
        ("carol", "reauthRequired", None),
    ]
    assert world.upstream.consumes() == []
    agents = {r.headers["user-agent"] for r in world.upstream.recorded_requests() if "/usage" in r.path}
    assert agents and all(a.startswith("codex-limits/") for a in agents)


# -- settings --------------------------------------------------------------------------------------------------


def test_background_refresh_is_opt_in_and_never_below_the_floor() -> None:
    assert LiveSettings.from_env({}).refresh_interval is None
    assert LiveSettings.from_env({"CODEX_LIMITS_REFRESH_INTERVAL": "120"}).refresh_interval == 120
    assert LiveSettings.from_env({"CODEX_LIMITS_REFRESH_INTERVAL": "2"}).refresh_interval == REFRESH_FLOOR
    assert LiveSettings.from_env({"CODEX_LIMITS_REFRESH_INTERVAL": "0"}).refresh_interval is None
    assert LiveSettings.from_env({"CODEX_LIMITS_REFRESH_INTERVAL": "often"}).refresh_interval is None


def test_alert_settings_come_from_the_environment() -> None:
    live_settings = LiveSettings.from_env(
        {"CODEX_LIMITS_ALERT_THRESHOLDS": "95, 50,75", "CODEX_LIMITS_CREDIT_EXPIRY_DAYS": "7"}
    )
    assert (live_settings.alert_thresholds, live_settings.credit_expiry_days) == ((50, 75, 95), 7.0)
    for bad in ("80,x", "0,50", "150"):
        assert LiveSettings.from_env({"CODEX_LIMITS_ALERT_THRESHOLDS": bad}).alert_thresholds == (80, 90, 100)
