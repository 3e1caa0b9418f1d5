"""Ledger records for the store tests: a plain account summary and an apply response around it."""

from __future__ import annotations

from protocol import ext
from protocol.ext import AccountPoolApplyResponse
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome


def summary(account_id: str, available: int | None) -> ext.AccountSummary:
    return ext.AccountSummary(
        account_id=account_id,
        label=account_id,
        codex_home=f"/homes/{account_id}",
        status=ext.AccountStatus.ACTIVE,
        reset_credits=None if available is None else ext.ResetCreditsOverview(available_count=available),
        reset_action=ext.ResetAction(enabled=True, warning=ext.APPLY_WARNING),
    )


def response(
    account_id: str, outcome: Outcome = Outcome.RESET, *, applied_at: int = 1_790_000_100
) -> AccountPoolApplyResponse:
    """An apply on `account_id` that took its saved resets from 2 to 1."""
    return AccountPoolApplyResponse(
        outcome=outcome, before=summary(account_id, 2), after=summary(account_id, 1), applied_at=applied_at
    )
