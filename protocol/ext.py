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
    RateLimitResetType,
    RateLimitSnapshot,
)

__all__ = [
    "APPLY_WARNING",
    "KEY_MAX_LENGTH",
    "AccountError",
    "AccountForecast",
    "AccountPoolAlert",
    "AccountPoolAlertNotification",
    "AccountPoolApplyParams",
    "AccountPoolApplyResponse",
    "AccountPoolForecastParams",
    "AccountPoolForecastResponse",
    "AccountPoolHistoryParams",
    "AccountPoolHistoryResponse",
    "AccountPoolListParams",
    "AccountPoolListResponse",
    "AccountPoolRefreshParams",
    "AccountPoolResetCreditsListParams",
    "AccountPoolResetCreditsListResponse",
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
    "ForecastStatus",
    "PendingApply",
    "PoolResetCredit",
    "ResetAction",
    "ResetCreditsOverview",
    "ResetDisabledReason",
    "ResetReadiness",
    "UnlistedResetCredits",
    "UsagePoint",
    "UsageWindow",
    "UsageWindowHistory",
    "WindowForecast",
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
    RUNS_OUT_BEFORE_RESET = "runsOutBeforeReset"


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
    runs_out_at: Int64 | None = Field(
        default=None,
        description="With `runsOutBeforeReset`: Unix seconds when `window` reaches 100 % at its burn rate.",
    )
    burn_rate_per_hour: float | None = Field(
        default=None, description="With `runsOutBeforeReset`: percentage points used per hour (see `WindowForecast`)."
    )
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


# -- forecasts and the pool-wide inventory of saved resets (issue #23) ---------------------------


class ForecastStatus(StrEnum):
    """What a window's forecast could say: `projected`, usage grows and `runsOutAt` is when it reaches
    100 % at the burn rate; `notGrowing`, no usage in the lookback (it does not run out at this rate);
    `exhausted`, it is used up already; `tooLittleHistory`, too few samples or too short a span in the
    current window to measure a rate (see `minSamples`, `minSpanSeconds`)."""

    PROJECTED = "projected"
    NOT_GROWING = "notGrowing"
    EXHAUSTED = "exhausted"
    TOO_LITTLE_HISTORY = "tooLittleHistory"


class WindowForecast(WireModel):
    limit_id: str
    window: UsageWindow
    window_minutes: Int64 | None = None
    status: ForecastStatus
    used_percent: Int32 | None = Field(default=None, description="At the latest sample; null with no sample.")
    resets_at: Int64 | None = Field(default=None, description="Unix seconds when the window resets next.")
    burn_rate_per_hour: float | None = Field(
        default=None,
        description="Percentage points used per hour over the lookback, within the current window only (a reset "
        "starts a new window); null with too little history.",
    )
    runs_out_at: Int64 | None = Field(
        default=None,
        description="Unix seconds when the window reaches 100 % at that rate (when it reached it, if exhausted); "
        "null when it does not run out at this rate or the history is too short.",
    )
    runs_out_before_reset: bool | None = Field(
        default=None, description="Whether `runsOutAt` comes before `resetsAt`; null when either is unknown."
    )
    sample_count: Int64 = Field(description="Samples of the current window within the lookback.")
    span_seconds: Int64 = Field(description="Seconds between the first and the last of those samples.")
    measured_at: Int64 | None = Field(default=None, description="Unix seconds of the latest sample used.")
    message: str = Field(description="One line for a person, saying plainly when there is too little history.")


class AccountForecast(WireModel):
    account_id: str
    windows: list[WindowForecast] = Field(description="Main limit first, primary before secondary.")


class AccountPoolForecastParams(WireModel):
    account_id: str | None = Field(default=None, description="One account; omitted or null: every pool account.")
    lookback_seconds: Int64 | None = Field(
        default=None, description="Measure the burn rate over this many seconds (default 3 hours)."
    )


class AccountPoolForecastResponse(WireModel):
    accounts: list[AccountForecast]
    lookback_seconds: Int64
    min_samples: Int64 = Field(description="Fewer samples than this in a window's lookback: `tooLittleHistory`.")
    min_span_seconds: Int64 = Field(description="A shorter span between those samples: `tooLittleHistory`.")
    generated_at: Int64 = Field(description="Unix seconds the forecasts were computed at.")


class PoolResetCredit(WireModel):
    """One available saved reset of one pool account."""

    account_id: str
    label: str
    credit_id: str
    reset_type: RateLimitResetType
    title: str | None = None
    granted_at: Int64
    expires_at: Int64 | None = Field(default=None, description="Unix seconds of its expiry; null: never expires.")


class UnlistedResetCredits(WireModel):
    """An account whose saved resets are not all listed: only a count is known, or the read failed."""

    account_id: str
    label: str
    available_count: Int64 | None = Field(default=None, description="Null when the account could not be read.")
    listed_count: Int64 = Field(description="How many of its credits `credits` lists.")
    status: AccountStatus


class AccountPoolResetCreditsListParams(WireModel):
    max_age_seconds: Int64 | None = Field(
        default=None,
        description="Serve a cached summary younger than this; omitted or null reads every account now "
        "(as `accountPool/list`). Never spends anything.",
    )


class AccountPoolResetCreditsListResponse(WireModel):
    credits: list[PoolResetCredit] = Field(
        description="Every listed available saved reset of every account, earliest expiry first (those that never "
        "expire last), then by account id and credit id."
    )
    total_available: Int64 = Field(description="Sum of `availableCount` over the accounts that could be read.")
    unlisted: list[UnlistedResetCredits] = Field(
        description="Accounts whose credits are not all in `credits` (count only, capped list, or unreadable)."
    )
    generated_at: Int64 = Field(description="Unix seconds of the answer.")
