"""codex-limits' account-pool extension: methods and types that upstream does not have.

Kept apart from `v2` so that nothing here is mistaken for the upstream contract; exported under
`schemas/json/ext/`. Same conventions as upstream: camelCase members, nulls written, new string
enums camelCase.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._model import Int32, Int64, WireModel
from .v2 import (
    ConsumeAccountRateLimitResetCreditOutcome,
    PlanType,
    RateLimitResetCredit,
    RateLimitSnapshot,
)

__all__ = [
    "APPLY_WARNING",
    "KEY_MAX_LENGTH",
    "AccountError",
    "AccountPoolAlert",
    "AccountPoolAlertNotification",
    "AccountPoolApplyParams",
    "AccountPoolApplyResponse",
    "AccountPoolHistoryParams",
    "AccountPoolHistoryResponse",
    "AccountPoolListParams",
    "AccountPoolListResponse",
    "AccountPoolRefreshParams",
    "AccountPoolUsageHistoryParams",
    "AccountPoolUsageHistoryResponse",
    "AccountStatus",
    "AccountSummary",
    "AccountUpdatedNotification",
    "AlertKind",
    "AlertSeverity",
    "ApplyRecord",
    "ApplyRefusedData",
    "ApplyStatus",
    "PendingApply",
    "ResetAction",
    "ResetCreditsOverview",
    "ResetDisabledReason",
    "ResetReadiness",
    "UsagePoint",
    "UsageWindow",
    "UsageWindowHistory",
]

APPLY_WARNING = "Applying consumes one saved rate-limit reset on this account and cannot be undone."
KEY_MAX_LENGTH = 256
"""The longest `idempotencyKey` and `creditId` an apply accepts (characters); longer ones get -32600. The key
is stored in the ledger and shown in summaries; upstream's own consume keeps upstream's (unbounded) rule."""


class AccountStatus(StrEnum):
    """What an operator can do with the account right now."""

    ACTIVE = "active"
    RATE_LIMITED = "rateLimited"
    REAUTH_REQUIRED = "reauthRequired"
    UNSUPPORTED = "unsupported"
    UNAVAILABLE = "unavailable"


class ResetDisabledReason(StrEnum):
    """Why `accountPool/resetCredit/apply` would be refused for this account.

    `pendingApply`: an earlier apply's outcome is unknown (a timeout or a crash); only re-sending its
    key (`pendingApply.idempotencyKey` of the summary) is accepted until it is settled, so two
    credits are never spent while the first one's fate is unclear."""

    NO_CREDIT = "noCredit"
    REAUTH_REQUIRED = "reauthRequired"
    UNSUPPORTED = "unsupported"
    UNAVAILABLE = "unavailable"
    PENDING_APPLY = "pendingApply"
    UNKNOWN_CREDIT = "unknownCredit"


class ResetReadiness(StrEnum):
    """How much an apply would help now: `exhausted`, a window is used up (applying resets it);
    `available`, a saved reset could be applied but no window is exhausted (it would be wasted, or
    answered `nothingToReset`)."""

    EXHAUSTED = "exhausted"
    AVAILABLE = "available"


class ApplyStatus(StrEnum):
    """State of one apply attempt in the ledger."""

    PENDING = "pending"
    FINISHED = "finished"
    FAILED = "failed"


class AccountError(WireModel):
    """The error the last refresh of this account ran into (same code and message a read would answer)."""

    code: Int64
    message: str


class ResetCreditsOverview(WireModel):
    available_count: Int64
    credits: list[RateLimitResetCredit] | None = Field(
        default=None, description="Detail rows when the backend provided them; `null` when only the count is known."
    )
    nearest_expires_at: Int64 | None = Field(
        default=None, description="Unix seconds of the soonest expiry among the available credits, if any expire."
    )


class ResetAction(WireModel):
    enabled: bool
    disabled_reason: ResetDisabledReason | None = None
    warning: str = Field(description="A sentence saying what applying costs; show it before asking to confirm.")
    readiness: ResetReadiness | None = Field(
        default=None, description="With `enabled`: whether a window is exhausted (applying helps now) or not."
    )


class PendingApply(WireModel):
    """An apply whose outcome is not known yet (a timeout or a crash); re-send it with the same key."""

    idempotency_key: str
    credit_id: str | None = None
    started_at: Int64


class AccountSummary(WireModel):
    account_id: str = Field(description="Pool id of the account (from accounts.toml).")
    label: str
    codex_home: str = Field(description="The account's Codex home; `CODEX_HOME=<it> codex login` signs it in.")
    email: str | None = None
    plan_type: PlanType | None = None
    status: AccountStatus
    rate_limits: RateLimitSnapshot | None = None
    rate_limits_by_limit_id: dict[str, RateLimitSnapshot] | None = None
    reset_credits: ResetCreditsOverview | None = None
    reset_action: ResetAction
    pending_apply: PendingApply | None = None
    refreshed_at: Int64 | None = Field(default=None, description="Unix seconds of the read this summary comes from.")
    error: AccountError | None = None


class AccountPoolListParams(WireModel):
    max_age_seconds: Int64 | None = Field(
        default=None,
        description="Serve a cached summary younger than this; omitted or null reads every account now.",
    )


class AccountPoolListResponse(WireModel):
    accounts: list[AccountSummary]


class AccountPoolRefreshParams(WireModel):
    account_id: str


class AccountPoolApplyParams(WireModel):
    account_id: str
    idempotency_key: str = Field(
        description="Identifies one logical apply. A UUID is recommended; re-send the same value to retry it. "
        f"At most {KEY_MAX_LENGTH} characters.",
        json_schema_extra={"maxLength": KEY_MAX_LENGTH},
    )
    credit_id: str | None = Field(
        default=None,
        description="Saved reset to spend; omitted lets the backend pick the next available one. "
        f"At most {KEY_MAX_LENGTH} characters.",
        json_schema_extra={"maxLength": KEY_MAX_LENGTH},
    )


class AccountPoolApplyResponse(WireModel):
    outcome: ConsumeAccountRateLimitResetCreditOutcome
    before: AccountSummary
    after: AccountSummary | None = Field(
        default=None, description="Summary read right after the consume; null only if that read failed."
    )
    applied_at: Int64 = Field(description="Unix seconds when the consume was answered.")
    replayed: bool = Field(
        default=False, description="True when this key had finished before and the recorded result is returned."
    )


class AccountPoolHistoryParams(WireModel):
    account_id: str | None = None
    limit: Int64 | None = None


class ApplyRecord(WireModel):
    idempotency_key: str
    account_id: str
    credit_id: str | None = None
    status: ApplyStatus
    outcome: ConsumeAccountRateLimitResetCreditOutcome | None = None
    error: str | None = None
    started_at: Int64
    finished_at: Int64 | None = None
    available_before: Int64 | None = None
    available_after: Int64 | None = None


class AccountPoolHistoryResponse(WireModel):
    entries: list[ApplyRecord]


class AccountUpdatedNotification(WireModel):
    account: AccountSummary


class ApplyRefusedData(WireModel):
    """`error.data` of a refused apply: the reason, so clients need not parse the message."""

    account_id: str
    disabled_reason: ResetDisabledReason
    pending_idempotency_key: str | None = Field(
        default=None, description="With `pendingApply`: the key to re-send to settle the earlier attempt."
    )
    available_credit_ids: list[str] | None = Field(
        default=None, description="With `unknownCredit`: the ids of the credits that can be applied."
    )


# -- live updates: alerts and usage history (issue #12) ----------------------------------------


class UsageWindow(StrEnum):
    """Which window of a rate limit: upstream's `primary` (the short one) or `secondary`."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


class AlertKind(StrEnum):
    WINDOW_RESET = "windowReset"
    USAGE_THRESHOLD = "usageThreshold"
    CREDIT_EXPIRING = "creditExpiring"
    REAUTH_REQUIRED = "reauthRequired"


class AlertSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AccountPoolAlert(WireModel):
    """Something an operator may want to act on, sent once per occurrence (once per crossing of a
    threshold, once per expiring saved reset, once until an account that must sign in recovers)."""

    kind: AlertKind
    account_id: str
    message: str = Field(description="One line for a person, naming the account.")
    severity: AlertSeverity
    limit_id: str | None = Field(
        default=None, description="The rate limit (`codex`, or an additional limit's id) of `window`."
    )
    window: UsageWindow | None = None
    window_minutes: Int64 | None = None
    threshold: Int32 | None = Field(default=None, description="With `usageThreshold`: the percentage crossed.")
    used_percent: Int32 | None = None
    resets_at: Int64 | None = Field(default=None, description="Unix seconds when `window` resets next.")
    credit_id: str | None = Field(default=None, description="With `creditExpiring`: the saved reset that expires.")
    expires_at: Int64 | None = Field(default=None, description="With `creditExpiring`: Unix seconds of its expiry.")
    emitted_at: Int64 = Field(description="Unix seconds when the alert was raised.")


class AccountPoolAlertNotification(WireModel):
    alert: AccountPoolAlert


class AccountPoolUsageHistoryParams(WireModel):
    account_id: str
    since_seconds: Int64 | None = Field(
        default=None, description="Only samples taken in the last this many seconds; omitted or null: all kept."
    )
    limit: Int64 | None = Field(
        default=None, description="At most this many samples in all, the newest ones (default 5000)."
    )


class UsagePoint(WireModel):
    taken_at: Int64 = Field(description="Unix seconds of the read.")
    used_percent: Int32
    resets_at: Int64 | None = None


class UsageWindowHistory(WireModel):
    limit_id: str
    window: UsageWindow
    window_minutes: Int64 | None = None
    samples: list[UsagePoint] = Field(description="Oldest first.")
    burn_rate_per_hour: float | None = Field(
        default=None,
        description="Percentage points used per hour in the current window, since its last reset; null when "
        "the samples cannot tell.",
    )
    runs_out_at: Int64 | None = Field(
        default=None,
        description="Unix seconds when the window reaches 100 % at that rate (when it did, if it is used up); "
        "null when it resets first or usage is not growing.",
    )


class AccountPoolUsageHistoryResponse(WireModel):
    account_id: str
    windows: list[UsageWindowHistory]
