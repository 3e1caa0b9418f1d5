"""Alert rules: thresholds, resets, expiring saved resets and sign-in, each once per occurrence (issue #12).

Time is whatever the test says it is: `evaluate` takes `now`, nothing sleeps.
"""

from __future__ import annotations

from app_server.pool.alerts import AlertRules
from protocol import ext
from tests.support.live import WEEK, credit, summary, window

T0 = 1_800_000_000
HOUR = 3600
DAY = 86_400
RESETS = T0 + 5 * HOUR


def kinds(alerts: list[ext.AccountPoolAlert]) -> list[tuple[str, int | None]]:
    return [(a.kind.value, a.threshold) for a in alerts]


def test_each_threshold_fires_once_per_crossing() -> None:
    rules = AlertRules()
    seen = [
        kinds(rules.evaluate(summary(primary=window(used, RESETS)), T0 + i * 60))
        for i, used in enumerate([50, 79, 80, 85, 85, 90, 99, 100, 100])
    ]
    assert seen == [
        [],
        [],
        [("usageThreshold", 80)],
        [],
        [],
        [("usageThreshold", 90)],
        [],
        [("usageThreshold", 100)],
        [],
    ]


def test_a_jump_past_several_thresholds_reports_the_highest_once() -> None:
    rules = AlertRules()
    (alert,) = rules.evaluate(summary(primary=window(93, RESETS)), T0)
    assert (alert.kind, alert.threshold, alert.severity) == (
        ext.AlertKind.USAGE_THRESHOLD,
        90,
        ext.AlertSeverity.WARNING,
    )
    assert (alert.account_id, alert.limit_id, alert.window, alert.used_percent) == ("alice", "codex", "primary", 93)
    assert alert.message == "alice: the 5h window is at 93% (crossed 90%), resets in 5h"
    assert alert.emitted_at == T0 and alert.credit_id is None and alert.expires_at is None
    assert rules.evaluate(summary(primary=window(95, RESETS)), T0 + 60) == []  # 80 was passed in the same jump
    (full,) = rules.evaluate(summary(primary=window(100, RESETS)), T0 + 120)
    assert (full.threshold, full.severity) == (100, ext.AlertSeverity.CRITICAL)


def test_falling_below_a_threshold_rearms_it() -> None:
    rules = AlertRules()
    assert kinds(rules.evaluate(summary(primary=window(85, RESETS)), T0)) == [("usageThreshold", 80)]
    later = RESETS + 5 * HOUR
    after_reset = rules.evaluate(summary(primary=window(10, later)), RESETS + 10)
    assert kinds(after_reset) == [("windowReset", None)]
    assert after_reset[0].message == "alice: the 5h window was reset (85% used before, 10% now)"
    assert kinds(rules.evaluate(summary(primary=window(81, later)), RESETS + HOUR)) == [("usageThreshold", 80)]


def test_thresholds_are_configurable_and_windows_are_apart() -> None:
    rules = AlertRules(thresholds=[50])
    s = summary(primary=window(60, RESETS), secondary=window(55, T0 + 7 * DAY, minutes=WEEK))
    alerts = rules.evaluate(s, T0)
    assert [(a.window, a.threshold) for a in alerts] == [("primary", 50), ("secondary", 50)]
    assert "weekly window" in alerts[1].message


def test_a_window_reset_is_reported_only_when_the_window_had_been_used() -> None:
    rules = AlertRules()
    assert rules.evaluate(summary(primary=window(0, RESETS)), T0) == []
    assert rules.evaluate(summary(primary=window(0, RESETS + 5 * HOUR)), RESETS + 10) == []  # nothing was used
    assert rules.evaluate(summary(primary=window(20, RESETS + 5 * HOUR)), RESETS + HOUR) == []
    # resetsAt wobbles by a second between reads (upstream computes it from "seconds left"): no reset
    assert rules.evaluate(summary(primary=window(20, RESETS + 5 * HOUR + 1)), RESETS + HOUR + 60) == []


def test_a_saved_reset_expiring_soon_is_reported_once() -> None:
    rules = AlertRules(credit_expiry_days=3)
    soon, later = T0 + 2 * DAY, T0 + 10 * DAY
    credits = [credit("c-soon", soon), credit("c-later", later), credit("c-never", None)]
    (alert,) = rules.evaluate(summary(credits=credits), T0)
    assert (alert.kind, alert.credit_id, alert.expires_at, alert.severity) == (
        ext.AlertKind.CREDIT_EXPIRING,
        "c-soon",
        soon,
        ext.AlertSeverity.WARNING,
    )
    assert alert.message == "alice: a saved reset expires in 2d and has not been used"
    assert rules.evaluate(summary(credits=credits), T0 + HOUR) == []
    # a week on, the other one comes within three days: its own alert, once
    (second,) = rules.evaluate(summary(credits=credits[1:]), T0 + 8 * DAY)
    assert second.credit_id == "c-later"
    assert rules.evaluate(summary(credits=credits[1:]), T0 + 9 * DAY) == []


def test_a_saved_reset_that_is_used_or_already_expired_is_not_reported() -> None:
    rules = AlertRules()
    credits = [credit("c-used", T0 + DAY, status="redeemed"), credit("c-gone", T0 - 1)]
    assert rules.evaluate(summary(credits=credits), T0) == []


def test_sign_in_is_reported_once_until_the_account_recovers() -> None:
    rules = AlertRules()
    broken = summary(status=ext.AccountStatus.REAUTH_REQUIRED, codex_home="/homes/alice")
    (alert,) = rules.evaluate(broken, T0)
    assert (alert.kind, alert.severity) == (ext.AlertKind.REAUTH_REQUIRED, ext.AlertSeverity.CRITICAL)
    assert alert.message == "alice: needs to sign in again: run `CODEX_HOME=/homes/alice codex login`"
    assert rules.evaluate(broken, T0 + 60) == []
    # a network failure in between proves nothing: still no second alert
    assert rules.evaluate(summary(status=ext.AccountStatus.UNAVAILABLE), T0 + 120) == []
    assert rules.evaluate(broken, T0 + 180) == []
    assert rules.evaluate(summary(primary=window(10, RESETS)), T0 + 240) == []  # signed in again
    assert kinds(rules.evaluate(broken, T0 + 300)) == [("reauthRequired", None)]


def test_accounts_are_apart() -> None:
    rules = AlertRules()
    assert kinds(rules.evaluate(summary("alice", primary=window(85, RESETS)), T0)) == [("usageThreshold", 80)]
    bob = rules.evaluate(summary("bob", primary=window(85, RESETS)), T0)
    assert [(a.account_id, a.threshold) for a in bob] == [("bob", 80)]
