"""v2 of the Codex app-server protocol: rate limits, saved reset credits and their consume.

Field order is wire order (CONTRACT §4.3): pydantic serializes in declaration order, and the
reference's answers are compared byte for byte.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ._model import Int32, Int64, WireModel

__all__ = [
    "OUTCOME_DESCRIPTIONS",
    "AccountRateLimitsUpdatedNotification",
    "ConsumeAccountRateLimitResetCreditOutcome",
    "ConsumeAccountRateLimitResetCreditParams",
    "ConsumeAccountRateLimitResetCreditResponse",
    "CreditsSnapshot",
    "GetAccountRateLimitsParams",
    "GetAccountRateLimitsResponse",
    "PlanType",
    "RateLimitReachedType",
    "RateLimitResetCredit",
    "RateLimitResetCreditStatus",
    "RateLimitResetCreditsSummary",
    "RateLimitResetType",
    "RateLimitSnapshot",
    "RateLimitWindow",
    "SpendControlLimitSnapshot",
]


class PlanType(StrEnum):
    FREE = "free"
    GO = "go"
    PLUS = "plus"
    PRO = "pro"
    PROLITE = "prolite"
    PROMAX = "promax"
    TEAM = "team"
    SELF_SERVE_BUSINESS_PROLITE = "self_serve_business_prolite"
    SELF_SERVE_BUSINESS_USAGE_BASED = "self_serve_business_usage_based"
    BUSINESS = "business"
    ENT26 = "ent26"
    ENTERPRISE_CBP_AUTOMATION = "enterprise_cbp_automation"
    ENTERPRISE_CBP_USAGE_BASED = "enterprise_cbp_usage_based"
    ENTERPRISE = "enterprise"
    EDU = "edu"
    EDU_PLUS = "edu_plus"
    EDU_PRO = "edu_pro"
    SCI = "sci"
    SCI_PLUS = "sci_plus"
    UNKNOWN = "unknown"


class RateLimitReachedType(StrEnum):
    RATE_LIMIT_REACHED = "rate_limit_reached"
    WORKSPACE_OWNER_CREDITS_DEPLETED = "workspace_owner_credits_depleted"
    WORKSPACE_MEMBER_CREDITS_DEPLETED = "workspace_member_credits_depleted"
    WORKSPACE_OWNER_USAGE_LIMIT_REACHED = "workspace_owner_usage_limit_reached"
    WORKSPACE_MEMBER_USAGE_LIMIT_REACHED = "workspace_member_usage_limit_reached"


class RateLimitResetType(StrEnum):
    CODEX_RATE_LIMITS = "codexRateLimits"
    UNKNOWN = "unknown"


class RateLimitResetCreditStatus(StrEnum):
    AVAILABLE = "available"
    REDEEMING = "redeeming"
    REDEEMED = "redeemed"
    UNKNOWN = "unknown"


class ConsumeAccountRateLimitResetCreditOutcome(StrEnum):
    RESET = "reset"
    NOTHING_TO_RESET = "nothingToReset"
    NO_CREDIT = "noCredit"
    ALREADY_REDEEMED = "alreadyRedeemed"

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # Upstream documents each outcome: one `oneOf` branch per value, with its description.
        ref = handler(core_schema)
        definition = handler.resolve_ref_schema(ref)
        definition.clear()
        definition["oneOf"] = [
            {"description": OUTCOME_DESCRIPTIONS[outcome], "enum": [outcome.value], "type": "string"} for outcome in cls
        ]
        return ref


OUTCOME_DESCRIPTIONS: dict[ConsumeAccountRateLimitResetCreditOutcome, str] = {
    ConsumeAccountRateLimitResetCreditOutcome.RESET: (
        "A reset credit was consumed and the eligible rate-limit windows were reset."
    ),
    ConsumeAccountRateLimitResetCreditOutcome.NOTHING_TO_RESET: "No current rate-limit window is eligible for a reset.",
    ConsumeAccountRateLimitResetCreditOutcome.NO_CREDIT: "The account has no earned reset credits available.",
    ConsumeAccountRateLimitResetCreditOutcome.ALREADY_REDEEMED: (
        "The same idempotency key already completed a reset successfully."
    ),
}


class RateLimitWindow(WireModel):
    used_percent: Int32
    window_duration_mins: Int64 | None = None
    resets_at: Int64 | None = None


class CreditsSnapshot(WireModel):
    has_credits: bool
    unlimited: bool
    balance: str | None = None


class SpendControlLimitSnapshot(WireModel):
    limit: str
    used: str
    remaining_percent: Int32
    resets_at: Int64


class RateLimitSnapshot(WireModel):
    limit_id: str | None = None
    limit_name: str | None = None
    normal_model_slug: str | None = Field(
        default=None,
        description="Normal model whose display name and reasoning options describe this quota alias.",
    )
    primary: RateLimitWindow | None = None
    secondary: RateLimitWindow | None = None
    credits: CreditsSnapshot | None = None
    individual_limit: SpendControlLimitSnapshot | None = None
    spend_control_reached: bool | None = Field(
        default=None,
        description="Backend-reported spend-control state. `None` is unavailable, not a sparse-update recovery.",
    )
    plan_type: PlanType | None = None
    rate_limit_reached_type: RateLimitReachedType | None = None


class RateLimitResetCredit(WireModel):
    id: str = Field(description="Opaque backend identifier for this reset credit.")
    reset_type: RateLimitResetType
    status: RateLimitResetCreditStatus
    granted_at: Int64 = Field(description="Unix timestamp in seconds when the credit was granted.")
    expires_at: Int64 | None = Field(
        default=None, description="Unix timestamp in seconds when the credit expires, or `null` if it does not expire."
    )
    title: str | None = Field(
        default=None, description="Backend-provided display title for this credit, or `null` when unavailable."
    )
    description: str | None = Field(
        default=None, description="Backend-provided display description for this credit, or `null` when unavailable."
    )


class RateLimitResetCreditsSummary(WireModel):
    available_count: Int64
    credits: list[RateLimitResetCredit] | None = Field(
        default=None,
        description="Detail rows for available reset credits, when the backend provides them.\n\n"
        "`null` means only `availableCount` is known, while an empty array means details were fetched and no "
        "available credits were returned. The backend may cap this list, so its length can be less than "
        "`availableCount`.",
    )


class GetAccountRateLimitsParams(WireModel):
    """Usage-read capabilities of the requesting client, never inferred from its experiment arm."""

    # Positional-array params bind in this order (CONTRACT §4.1 quirk: `[true]` is supportsLunaReserve).
    supports_luna_reserve: bool = Field(
        default=False,
        description="The client supports automatic Luna Reserve fallback. For eligible ChatGPT CLI users, allow "
        "the backend to record experiment exposure after ordinary usage is blocked.",
    )
    exclude_reset_credit_details: bool = Field(
        default=False,
        description="Skip the separate reset-credit detail lookup for background usage polls. The usage response "
        "still includes the available count; omitted/false preserves detailed reads.",
    )


class GetAccountRateLimitsResponse(WireModel):
    ordinary_usage_allowed: bool | None = Field(
        default=None,
        description="Backend permission for ordinary included usage, validated against the active account. Null "
        "means unavailable; clients must not infer recovery from percentages or reset times.",
    )
    rate_limits: RateLimitSnapshot = Field(
        description="Backward-compatible single-bucket view; mirrors the historical payload."
    )
    rate_limits_by_limit_id: dict[str, RateLimitSnapshot] | None = Field(
        default=None, description="Multi-bucket view keyed by metered `limit_id` (for example, `codex`)."
    )
    rate_limit_reset_credits: RateLimitResetCreditsSummary | None = None
    account_id: str | None = Field(
        default=None, description="Account associated with this usage snapshot, when supplied by the backend."
    )
    rate_limit_upsell: Any = Field(
        default=None,
        description="Optional backend-owned banner from the same usage read. Its nested keys retain the backend's "
        "snake_case contract; an absent banner leaves the client's existing UI unchanged.",
    )


class ConsumeAccountRateLimitResetCreditParams(WireModel):
    idempotency_key: str = Field(
        description="Identifies one logical reset attempt. A UUID is recommended; reuse the same value when "
        "retrying that attempt."
    )
    credit_id: str | None = Field(
        default=None,
        description="Opaque reset-credit identifier to redeem. When omitted, the backend selects the next "
        "available credit.",
    )


class ConsumeAccountRateLimitResetCreditResponse(WireModel):
    outcome: ConsumeAccountRateLimitResetCreditOutcome


class AccountRateLimitsUpdatedNotification(WireModel):
    rate_limits: RateLimitSnapshot
