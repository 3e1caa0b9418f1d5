"""The one table of methods: name -> params model, result model; and the notifications.

The server routes with it, the client types its calls with it, and the schema export walks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel

from . import ext, v1, v2

__all__ = [
    "CLIENT_NOTIFICATIONS",
    "INITIALIZE",
    "METHODS",
    "POOL_ACCOUNT_UPDATED",
    "POOL_ALERT",
    "POOL_APPLY",
    "POOL_FORECAST",
    "POOL_HISTORY",
    "POOL_LIST",
    "POOL_REFRESH",
    "POOL_RESET_CREDITS_LIST",
    "POOL_USAGE_HISTORY",
    "RATE_LIMITS_READ",
    "RATE_LIMITS_UPDATED",
    "RESET_CREDIT_CONSUME",
    "SERVER_NOTIFICATIONS",
    "Method",
    "Notification",
]


@dataclass(frozen=True)
class Method:
    name: str
    params: type[BaseModel]
    result: type[BaseModel]
    params_required: bool
    extension: bool = False


@dataclass(frozen=True)
class Notification:
    name: str
    params: type[BaseModel]
    extension: bool = False


INITIALIZE: Final = Method("initialize", v1.InitializeParams, v1.InitializeResponse, params_required=True)
RATE_LIMITS_READ: Final = Method(
    "account/rateLimits/read", v2.GetAccountRateLimitsParams, v2.GetAccountRateLimitsResponse, params_required=False
)
RESET_CREDIT_CONSUME: Final = Method(
    "account/rateLimitResetCredit/consume",
    v2.ConsumeAccountRateLimitResetCreditParams,
    v2.ConsumeAccountRateLimitResetCreditResponse,
    params_required=True,
)
POOL_LIST: Final = Method(
    "accountPool/list", ext.AccountPoolListParams, ext.AccountPoolListResponse, params_required=False, extension=True
)
POOL_REFRESH: Final = Method(
    "accountPool/refresh", ext.AccountPoolRefreshParams, ext.AccountSummary, params_required=True, extension=True
)
POOL_APPLY: Final = Method(
    "accountPool/resetCredit/apply",
    ext.AccountPoolApplyParams,
    ext.AccountPoolApplyResponse,
    params_required=True,
    extension=True,
)
POOL_HISTORY: Final = Method(
    "accountPool/history",
    ext.AccountPoolHistoryParams,
    ext.AccountPoolHistoryResponse,
    params_required=False,
    extension=True,
)
POOL_USAGE_HISTORY: Final = Method(
    "accountPool/usageHistory",
    ext.AccountPoolUsageHistoryParams,
    ext.AccountPoolUsageHistoryResponse,
    params_required=True,
    extension=True,
)
POOL_FORECAST: Final = Method(
    "accountPool/forecast",
    ext.AccountPoolForecastParams,
    ext.AccountPoolForecastResponse,
    params_required=False,
    extension=True,
)
POOL_RESET_CREDITS_LIST: Final = Method(
    "accountPool/resetCredits/list",
    ext.AccountPoolResetCreditsListParams,
    ext.AccountPoolResetCreditsListResponse,
    params_required=False,
    extension=True,
)

METHODS: Final[dict[str, Method]] = {
    m.name: m
    for m in (
        INITIALIZE,
        RATE_LIMITS_READ,
        RESET_CREDIT_CONSUME,
        POOL_LIST,
        POOL_REFRESH,
        POOL_APPLY,
        POOL_HISTORY,
        POOL_USAGE_HISTORY,
        POOL_FORECAST,
        POOL_RESET_CREDITS_LIST,
    )
}

RATE_LIMITS_UPDATED: Final = Notification("account/rateLimits/updated", v2.AccountRateLimitsUpdatedNotification)
POOL_ACCOUNT_UPDATED: Final = Notification("accountPool/accountUpdated", ext.AccountUpdatedNotification, extension=True)
POOL_ALERT: Final = Notification("accountPool/alert", ext.AccountPoolAlertNotification, extension=True)
SERVER_NOTIFICATIONS: Final[dict[str, Notification]] = {
    n.name: n for n in (RATE_LIMITS_UPDATED, POOL_ACCOUNT_UPDATED, POOL_ALERT)
}

CLIENT_NOTIFICATIONS: Final[frozenset[str]] = frozenset({"initialized"})
