"""Words the views share: status and reason texts, readiness, the next step to suggest."""

from __future__ import annotations

from typing import Final

from app_server.cli.render.times import duration
from protocol.ext import (
    AccountStatus,
    AccountSummary,
    ResetDisabledReason,
)
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from protocol.v2 import RateLimitWindow

WIDE: Final = 140
"""From this many columns on, tables show more (plan, status and e-mail columns, absolute local times)."""
CRAMPED: Final = 80
"""Below this many columns, bars shrink and reset times drop the word "resets"."""
NARROW: Final = 60
"""Below this many columns, `status` shows one stacked block per account instead of a table."""

EXHAUSTED: Final = "exhausted"
AVAILABLE: Final = "available"

NONE: Final = "—"

STATUS_TEXT: Final = {
    AccountStatus.ACTIVE: ("active", "green"),
    AccountStatus.RATE_LIMITED: ("rate limited", "red"),
    AccountStatus.REAUTH_REQUIRED: ("needs sign-in", "yellow"),
    AccountStatus.UNSUPPORTED: ("unsupported", "magenta"),
    AccountStatus.UNAVAILABLE: ("unavailable", "yellow"),
}

UNKNOWN_CREDIT: Final = ResetDisabledReason.UNKNOWN_CREDIT.value
"""Refusal of an apply naming a credit the account does not have (`error.data.availableCreditIds` lists them)."""

REASON_SHORT: Final[dict[str, str]] = {
    ResetDisabledReason.NO_CREDIT: "no saved reset",
    ResetDisabledReason.REAUTH_REQUIRED: "sign in again",
    ResetDisabledReason.UNSUPPORTED: "not supported",
    ResetDisabledReason.UNAVAILABLE: "usage unknown",
    ResetDisabledReason.PENDING_APPLY: "unfinished",
    ResetDisabledReason.UNKNOWN_CREDIT: "no such credit",
}

REASON_LONG: Final[dict[str, str]] = {
    ResetDisabledReason.NO_CREDIT: "this account has no saved reset to spend",
    ResetDisabledReason.REAUTH_REQUIRED: "this account must sign in again first (`codex login` with its CODEX_HOME)",
    ResetDisabledReason.UNSUPPORTED: "this account cannot use saved resets (API-key sign-in or a plan without them)",
    ResetDisabledReason.UNAVAILABLE: "its usage could not be read just now, so it is not safe to apply",
    ResetDisabledReason.PENDING_APPLY: (
        "an earlier apply has an unknown outcome; `codex-limits apply` re-sends that one first (it cannot spend twice)"
    ),
    ResetDisabledReason.UNKNOWN_CREDIT: "this account has no saved reset with that id (see `codex-limits status`)",
}


class Summary(AccountSummary):
    """`AccountSummary` as the CLI reads it: when an older server sends no `resetAction.readiness`,
    `readiness()` works it out from the windows."""


def reason_words(reason: str | None, *, long: bool) -> str:
    """Why apply is not possible, in plain words (`long`: a clause; else two or three words)."""
    if reason is None:
        return "the server gave no reason" if long else "no"
    table = REASON_LONG if long else REASON_SHORT
    return table.get(str(reason), str(reason))


def exhausted_windows(summary: AccountSummary) -> bool:
    """Whether the summary shows a window used up (100 %, or upstream says a limit was reached)."""
    limits = summary.rate_limits
    if limits is None:
        return False
    if limits.rate_limit_reached_type is not None:
        return True
    return any(w is not None and w.used_percent >= 100 for w in (limits.primary, limits.secondary))


def readiness(summary: AccountSummary) -> str | None:
    """`exhausted` (applying helps now), `available` (a credit, but nothing used up), or None (disabled).

    Newer servers send `resetAction.readiness`; for older ones it is worked out from the windows."""
    action = summary.reset_action
    sent = getattr(action, "readiness", None)
    if sent is not None:
        return str(getattr(sent, "value", sent))
    if not action.enabled:
        return None
    return EXHAUSTED if exhausted_windows(summary) else AVAILABLE


def usage_words(summary: AccountSummary) -> str:
    """`5h 71 %, weekly 44 %`: what each window has used, for sentences."""
    limits = summary.rate_limits
    if limits is None:
        return "usage unknown"
    parts = [
        f"{window_name(w, fallback)} {round(w.used_percent)} %"
        for w, fallback in ((limits.primary, "primary"), (limits.secondary, "secondary"))
        if w is not None
    ]
    return ", ".join(parts) if parts else "no usage windows"


def next_step(summary: AccountSummary, *, simulated: bool = False, never_signed_in: bool = False) -> str | None:
    """What the operator can do about the account's problem, when the message does not say it already.

    `never_signed_in`: the account's Codex home has no auth.json at all (the caller looked)."""
    home = summary.codex_home
    status = summary.status
    message = summary.error.message if summary.error is not None else ""
    if status is AccountStatus.REAUTH_REQUIRED:
        if never_signed_in and not simulated:
            if "codex login" in message:
                return None  # the server's message already says how (`Problem`): once is enough
            return (
                f"never signed in here: run `CODEX_HOME={home} codex login`, or try `codex-limits demo` "
                "to see the tool without an account"
            )
        if simulated:
            return "simulated: expired on purpose, nothing to fix"
        step = "" if "codex login" in message else f"sign in with `CODEX_HOME={home} codex login`, then "
        return step + f"check with `codex-limits refresh {summary.account_id}`"
    if status is AccountStatus.UNAVAILABLE:
        again = f"try again with `codex-limits refresh {summary.account_id}`"
        if "sending request" in message or "connect" in message:  # the backend address could not be reached
            return f"check `chatgpt_base_url` in {home}/config.toml (if set) and the network, then {again}"
        return again
    return None


OUTCOME_HEADLINE: Final = {
    Outcome.RESET: "Reset applied",
    Outcome.NOTHING_TO_RESET: "Nothing to reset",
    Outcome.NO_CREDIT: "No saved reset available",
    Outcome.ALREADY_REDEEMED: "Already applied",
}

OUTCOME_SENTENCE: Final = {
    Outcome.RESET: "One saved reset was spent and the usage windows were reset.",
    Outcome.NOTHING_TO_RESET: "Your usage does not need a reset right now; nothing was spent.",
    Outcome.NO_CREDIT: (
        "The account had no saved reset to spend when the request arrived (it may have expired or been used "
        "elsewhere); nothing was spent."
    ),
    Outcome.ALREADY_REDEEMED: (
        "This attempt had already been applied earlier (same idempotency key); no second reset was spent."
    ),
}


def is_wide(width: int) -> bool:
    return width >= WIDE


def window_name(window: RateLimitWindow | None, fallback: str) -> str:
    """`5h`, `weekly`, `daily`, or the window's length; `fallback` when it has none."""
    mins = window.window_duration_mins if window is not None else None
    if mins is None:
        return fallback
    if mins == 7 * 24 * 60:
        return "weekly"
    if mins == 24 * 60:
        return "daily"
    return duration(mins * 60)
