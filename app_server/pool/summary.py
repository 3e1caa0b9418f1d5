"""One account's summary: what its read shows (status, windows, saved resets) and what an operator can do.

Pure functions over what the upstream layer returned; no I/O, no clock of their own.
"""

from __future__ import annotations

from pathlib import Path

from app_server.errors import CodexLimitsError
from app_server.pool.accounts import AccountEntry
from app_server.pool.errors import ReadFailed, SignInRequired
from app_server.upstream.auth import AuthKind, AuthState
from app_server.upstream.backend import BackendError
from app_server.upstream.errors import READ_FAILED
from app_server.upstream.mapping import plan_type
from protocol import ext, v2


def summary(
    entry: AccountEntry,
    auth: AuthState,
    status: ext.AccountStatus,
    reason: ext.ResetDisabledReason | None,
    *,
    now: int,
    error: ext.AccountError | None = None,
    read: v2.GetAccountRateLimitsResponse | None = None,
    email: str | None = None,
) -> ext.AccountSummary:
    creds = auth.credentials
    credits = read.rate_limit_reset_credits if read is not None else None
    overview = None
    if credits is not None:
        expiries = [
            c.expires_at
            for c in credits.credits or ()
            if c.expires_at is not None and c.status is v2.RateLimitResetCreditStatus.AVAILABLE
        ]
        overview = ext.ResetCreditsOverview(
            available_count=credits.available_count,
            credits=credits.credits,
            nearest_expires_at=min(expiries) if expiries else None,
        )
    plan = read.rate_limits.plan_type if read is not None else None
    if plan is None and creds is not None and creds.plan_type:
        plan = plan_type(creds.plan_type)
    readiness = None
    if reason is None:
        readiness = (
            ext.ResetReadiness.EXHAUSTED if status is ext.AccountStatus.RATE_LIMITED else ext.ResetReadiness.AVAILABLE
        )
    return ext.AccountSummary(
        account_id=entry.id,
        label=entry.label,
        codex_home=str(entry.codex_home),
        email=email or (creds.email if creds is not None else None),
        plan_type=plan,
        status=status,
        rate_limits=read.rate_limits if read is not None else None,
        rate_limits_by_limit_id=read.rate_limits_by_limit_id if read is not None else None,
        reset_credits=overview,
        reset_action=ext.ResetAction(
            enabled=reason is None, disabled_reason=reason, warning=ext.APPLY_WARNING, readiness=readiness
        ),
        refreshed_at=now,
        error=error,
    )


def account_error(error: CodexLimitsError) -> ext.AccountError:
    """A summary's `error`: the code and text the error would answer with."""
    return ext.AccountError(code=error.rpc_code, message=error.message)


def sign_in_problem(home: Path, auth: AuthState, *, expired: bool) -> tuple[ext.AccountStatus, ext.AccountError]:
    """Why this account cannot be read, in words that say what to do next."""
    login = f"`CODEX_HOME={home} codex login`"
    if auth.kind is AuthKind.API_KEY:
        return ext.AccountStatus.UNSUPPORTED, account_error(
            SignInRequired(
                "signed in with an API key: such accounts have no ChatGPT rate-limit windows or saved resets; "
                f"sign in with ChatGPT ({login}) to use it here"
            )
        )
    if expired:
        message = f"the saved sign-in expired; run {login}"
    elif not (home / "auth.json").exists():
        message = f"never signed in here (no auth.json in {home}); run {login}, or try `codex-limits demo`"
    else:
        message = f"the saved sign-in in {home}/auth.json cannot be used; run {login}"
    return ext.AccountStatus.REAUTH_REQUIRED, account_error(SignInRequired(message))


def read_failure(home: Path, base_url: str, failure: BackendError) -> tuple[ext.AccountStatus, ext.AccountError]:
    """A failed usage read, said so that the operator knows where it went and what to do."""
    if failure.status == 401:
        return ext.AccountStatus.REAUTH_REQUIRED, account_error(
            ReadFailed(f"upstream no longer accepts this sign-in (401); sign in again: `CODEX_HOME={home} codex login`")
        )
    message = READ_FAILED + failure.detail
    if failure.kind == "transport":
        message += f" (chatgpt_base_url {base_url})"
    return ext.AccountStatus.UNAVAILABLE, account_error(ReadFailed(message))


def is_exhausted(read: v2.GetAccountRateLimitsResponse, limit_reached: bool) -> bool:
    windows = [w for w in (read.rate_limits.primary, read.rate_limits.secondary) if w is not None]
    return limit_reached or any(w.used_percent >= 100 for w in windows)


def credit_to_spend(summary: ext.AccountSummary, requested: str | None) -> str | None:
    """The credit an apply will spend: the one asked for, else the available one that expires first
    (so the ledger records what was actually spent, and no credit expires unused that could have been)."""
    if requested is not None:
        return requested
    credits = summary.reset_credits.credits if summary.reset_credits is not None else None
    available = [c for c in credits or () if c.status is v2.RateLimitResetCreditStatus.AVAILABLE]
    if not available:
        return None
    return min(available, key=lambda c: (c.expires_at is None, c.expires_at or 0)).id
