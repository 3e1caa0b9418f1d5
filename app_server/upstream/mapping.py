"""Backend payloads -> wire results: the mapping rules of CONTRACT §4.4–§4.9, and nothing else."""

from __future__ import annotations

from typing import Final

from app_server.upstream.payloads import (
    AdditionalLimit,
    DetailRow,
    RateLimit,
    ResetCreditDetails,
    Usage,
    Window,
    parse_rfc3339,
)
from protocol import v2

_PLAN_ALIASES: Final = {"education": v2.PlanType.EDU}
_PLANS: Final = {p.value: p for p in v2.PlanType}
_REACHED: Final = {r.value: r for r in v2.RateLimitReachedType}
_STATUSES: Final = {s.value: s for s in v2.RateLimitResetCreditStatus}


def plan_type(raw: str) -> v2.PlanType:
    return _PLAN_ALIASES.get(raw) or _PLANS.get(raw, v2.PlanType.UNKNOWN)


def window(raw: Window | None) -> v2.RateLimitWindow | None:
    if raw is None:
        return None
    seconds = raw.limit_window_seconds
    minutes = -(-seconds // 60) if seconds > 0 else None
    return v2.RateLimitWindow(used_percent=raw.used_percent, window_duration_mins=minutes, resets_at=raw.reset_at)


def _windows(rate_limit: RateLimit | None) -> tuple[v2.RateLimitWindow | None, v2.RateLimitWindow | None]:
    if rate_limit is None:
        return None, None
    return window(rate_limit.primary_window), window(rate_limit.secondary_window)


def main_snapshot(usage: Usage, plan: v2.PlanType) -> v2.RateLimitSnapshot:
    primary, secondary = _windows(usage.rate_limit)
    credits = None
    if usage.credits is not None:
        credits = v2.CreditsSnapshot(
            has_credits=usage.credits.has_credits, unlimited=usage.credits.unlimited, balance=usage.credits.balance
        )
    individual = None
    reached = None
    if usage.spend_control is not None:
        reached = usage.spend_control.reached
        limit = usage.spend_control.individual_limit
        if limit is not None:
            individual = v2.SpendControlLimitSnapshot(
                limit=limit.limit, used=limit.used, remaining_percent=limit.remaining_percent, resets_at=limit.reset_at
            )
    reached_type = None
    if usage.rate_limit_reached_type is not None:
        reached_type = _REACHED.get(usage.rate_limit_reached_type.type)
    return v2.RateLimitSnapshot(
        limit_id="codex",
        limit_name=None,
        normal_model_slug=None,
        primary=primary,
        secondary=secondary,
        credits=credits,
        individual_limit=individual,
        spend_control_reached=reached,
        plan_type=plan,
        rate_limit_reached_type=reached_type,
    )


def additional_snapshot(entry: AdditionalLimit, plan: v2.PlanType) -> v2.RateLimitSnapshot:
    primary, secondary = _windows(entry.rate_limit)
    return v2.RateLimitSnapshot(
        limit_id=entry.metered_feature,
        limit_name=entry.limit_name,
        normal_model_slug=entry.normal_model_slug,
        primary=primary,
        secondary=secondary,
        plan_type=plan,
    )


def credit_row(row: DetailRow) -> v2.RateLimitResetCredit:
    return v2.RateLimitResetCredit(
        id=row.id,
        reset_type=(
            v2.RateLimitResetType.CODEX_RATE_LIMITS
            if row.reset_type == "codex_rate_limits"
            else v2.RateLimitResetType.UNKNOWN
        ),
        status=_STATUSES.get(row.status, v2.RateLimitResetCreditStatus.UNKNOWN),
        granted_at=parse_rfc3339(row.granted_at),
        expires_at=None if row.expires_at is None else parse_rfc3339(row.expires_at),
        title=row.title,
        description=row.description,
    )


def reset_credits(usage: Usage, details: ResetCreditDetails | None) -> v2.RateLimitResetCreditsSummary | None:
    """The details count wins when the details call succeeded; else the usage count; else null."""
    if details is not None:
        return v2.RateLimitResetCreditsSummary(
            available_count=details.available_count, credits=[credit_row(r) for r in details.credits]
        )
    if usage.rate_limit_reset_credits is not None:
        return v2.RateLimitResetCreditsSummary(available_count=usage.rate_limit_reset_credits.available_count)
    return None


def rate_limits_response(
    usage: Usage,
    details: ResetCreditDetails | None,
    *,
    signed_in_user_id: str | None,
    signed_in_account_id: str | None,
) -> v2.GetAccountRateLimitsResponse:
    plan = plan_type(usage.plan_type)
    main = main_snapshot(usage, plan)
    by_id: dict[str, v2.RateLimitSnapshot] = {"codex": main}
    for entry in usage.additional_rate_limits or ():
        by_id[entry.metered_feature] = additional_snapshot(entry, plan)
    # §4.8: account-bound fields are shown only when the usage belongs to the signed-in account.
    validated = (
        usage.user_id is not None
        and usage.user_id == signed_in_user_id
        and usage.account_id is not None
        and usage.account_id == signed_in_account_id
    )
    allowed = usage.rate_limit.allowed if validated and usage.rate_limit is not None else None
    return v2.GetAccountRateLimitsResponse(
        ordinary_usage_allowed=allowed,
        rate_limits=main,
        rate_limits_by_limit_id=by_id,
        rate_limit_reset_credits=reset_credits(usage, details),
        account_id=usage.account_id,
        rate_limit_upsell=usage.rate_limit_upsell if validated else None,
    )
