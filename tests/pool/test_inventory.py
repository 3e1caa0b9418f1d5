"""The pool-wide inventory of saved resets as a pure function over summaries (issue #23)."""

from __future__ import annotations

from app_server.pool.inventory import inventory
from protocol import ext
from tests.support.live import credit, summary

T0 = 1_800_000_000
DAY = 86_400


def with_count(s: ext.AccountSummary, available: int | None, *, listed: bool = True) -> ext.AccountSummary:
    """`s` whose `resetCredits.availableCount` is `available` (its detail rows kept, or dropped)."""
    credits = s.reset_credits.credits if s.reset_credits is not None and listed else None
    overview = ext.ResetCreditsOverview(available_count=available, credits=credits) if available is not None else None
    return s.model_copy(update={"reset_credits": overview})


def test_earliest_expiry_first_across_accounts_never_expiring_last() -> None:
    zed = summary("zed", credits=[credit("z-late", T0 + 9 * DAY), credit("z-tie", T0 + 2 * DAY)])
    amy = with_count(
        summary(
            "amy",
            credits=[
                credit("a-forever", None),
                credit("a-tie", T0 + 2 * DAY),
                credit("a-spent", T0, status="redeemed"),
            ],
        ),
        2,
    )
    bea = summary("bea", credits=[credit("b-soon", T0 + DAY)])

    answer = inventory([zed, amy, bea], T0)

    assert [(c.account_id, c.credit_id, c.expires_at) for c in answer.credits] == [
        ("bea", "b-soon", T0 + DAY),
        ("amy", "a-tie", T0 + 2 * DAY),  # the same second: by account id
        ("zed", "z-tie", T0 + 2 * DAY),
        ("zed", "z-late", T0 + 9 * DAY),
        ("amy", "a-forever", None),
    ]
    assert answer.credits[0].label == "Bea"
    assert answer.total_available == 5
    assert answer.unlisted == [] and answer.generated_at == T0


def test_accounts_whose_credits_are_not_all_listed_are_named() -> None:
    count_only = with_count(summary("cid"), 4, listed=False)
    capped = with_count(summary("cap", credits=[credit("c-1", T0 + DAY)]), 3)
    unreadable = summary("ned", status=ext.AccountStatus.REAUTH_REQUIRED)
    nothing = summary("bob", credits=[])

    answer = inventory([count_only, capped, unreadable, nothing], T0)

    assert [c.credit_id for c in answer.credits] == ["c-1"]
    assert answer.total_available == 7
    assert [(u.account_id, u.available_count, u.listed_count, u.status.value) for u in answer.unlisted] == [
        ("cid", 4, 0, "active"),
        ("cap", 3, 1, "active"),
        ("ned", None, 0, "reauthRequired"),
    ]
