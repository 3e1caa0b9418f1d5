"""The pool-wide inventory of saved resets: every available credit of every account, earliest expiry first.

A pure function over the account summaries `accountPool/list` answers; it reads, never applies.
Credits that never expire come last; ties go by account id, then credit id, so the order is stable.
Accounts whose credits are not all listed (upstream gave only a count or a capped list, or the
account could not be read) are named apart, so a short list is never mistaken for the whole stock.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol import ext, v2


def inventory(summaries: Iterable[ext.AccountSummary], now: float) -> ext.AccountPoolResetCreditsListResponse:
    credits: list[ext.PoolResetCredit] = []
    unlisted: list[ext.UnlistedResetCredits] = []
    total = 0
    for summary in summaries:
        overview = summary.reset_credits
        listed = [
            ext.PoolResetCredit(
                account_id=summary.account_id,
                label=summary.label,
                credit_id=credit.id,
                reset_type=credit.reset_type,
                title=credit.title,
                granted_at=credit.granted_at,
                expires_at=credit.expires_at,
            )
            for credit in (overview.credits or [] if overview is not None else [])
            if credit.status is v2.RateLimitResetCreditStatus.AVAILABLE
        ]
        credits.extend(listed)
        if overview is not None:
            total += overview.available_count
        if overview is None or overview.available_count > len(listed):
            unlisted.append(
                ext.UnlistedResetCredits(
                    account_id=summary.account_id,
                    label=summary.label,
                    available_count=overview.available_count if overview is not None else None,
                    listed_count=len(listed),
                    status=summary.status,
                )
            )
    credits.sort(key=lambda c: (c.expires_at is None, c.expires_at or 0, c.account_id, c.credit_id))
    return ext.AccountPoolResetCreditsListResponse(
        credits=credits, total_available=total, unlisted=unlisted, generated_at=int(now)
    )
