"""The backend's own (snake_case) payloads: usage, reset-credit details, consume, and their decoding.

Parsed tolerantly where upstream is tolerant (unknown members ignored, unknown enum strings
mapped) and strictly where upstream fails the read (CONTRACT §4.10): a malformed payload becomes
a `DecodeError` whose text reads like upstream's serde message. Timestamps are 64-bit (D4).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator
from pydantic_core import ErrorDetails

from protocol.validation import describe

I32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
I64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


class DecodeError(ValueError):
    """A 2xx body we cannot use; `str()` is the serde-style reason (without url or body)."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Window(_Payload):
    used_percent: I32
    limit_window_seconds: I32
    reset_after_seconds: I32
    reset_at: I64


class RateLimit(_Payload):
    allowed: StrictBool
    limit_reached: StrictBool
    primary_window: Window | None = None
    secondary_window: Window | None = None


class Credits(_Payload):
    has_credits: StrictBool
    unlimited: StrictBool
    balance: StrictStr | None = None


class IndividualLimit(_Payload):
    limit: StrictStr
    used: StrictStr
    remaining: StrictStr
    used_percent: I32
    remaining_percent: I32
    reset_after_seconds: I32
    reset_at: I64
    source: StrictStr | None = None


class SpendControl(_Payload):
    reached: StrictBool
    individual_limit: IndividualLimit | None = None


class ReachedType(_Payload):
    type: StrictStr


class AdditionalLimit(_Payload):
    limit_name: StrictStr
    metered_feature: StrictStr
    rate_limit: RateLimit | None = None
    normal_model_slug: StrictStr | None = None


class ResetCreditsCount(_Payload):
    available_count: I64


class Usage(_Payload):
    """`GET …/usage`. The minimal valid body is `{"plan_type": "plus"}`."""

    plan_type: StrictStr
    rate_limit: RateLimit | None = None
    credits: Credits | None = None
    spend_control: SpendControl | None = None
    rate_limit_reached_type: ReachedType | None = None
    additional_rate_limits: list[AdditionalLimit] | None = None
    rate_limit_reset_credits: ResetCreditsCount | None = None
    account_id: StrictStr | None = None
    user_id: StrictStr | None = None
    email: StrictStr | None = None
    rate_limit_upsell: Any = None

    @field_validator("plan_type", mode="before")
    @classmethod
    def _plan_from_map(cls, value: Any) -> Any:
        # Upstream's serde also accepts a one-member map naming the plan (CONTRACT §4.6 quirk).
        if isinstance(value, dict) and len(value) == 1:
            ((key, content),) = value.items()
            if content is None or content == {}:
                return key
            raise ValueError(f"invalid type: {describe(content)}, expected unit")
        if value is None or not isinstance(value, str):
            raise ValueError(f"invalid type: {describe(value)}, expected string or map")
        return value


class DetailRow(_Payload):
    id: StrictStr
    reset_type: StrictStr
    status: StrictStr
    granted_at: StrictStr
    expires_at: StrictStr | None = None
    title: StrictStr | None = None
    description: StrictStr | None = None

    @field_validator("granted_at", "expires_at")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rfc3339(value)
        return value


class ResetCreditDetails(_Payload):
    """`GET …/rate-limit-reset-credits`; any invalid row invalidates the whole answer (CONTRACT §4.9)."""

    available_count: I64
    credits: list[DetailRow]


class ConsumeAnswer(_Payload):
    code: StrictStr
    windows_reset: I64 | None = None

    @field_validator("windows_reset", mode="before")
    @classmethod
    def _present_means_integer(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("invalid type: null, expected i64")
        return value


CONSUME_CODES: Final = ("reset", "nothing_to_reset", "no_credit", "already_redeemed")

_RFC3339: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_rfc3339(text: str) -> int:
    """Unix seconds of an RFC 3339 timestamp (fraction dropped, offset honoured); ValueError otherwise."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"invalid RFC 3339 timestamp {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if match.group(7):
        tz = UTC
    else:
        offset = timedelta(hours=int(match.group(9)), minutes=int(match.group(10)))
        tz = timezone(-offset if match.group(8) == "-" else offset)
    moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
    return int(moment.timestamp())


def _error_text(error: ErrorDetails) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "missing":
        return f"missing field `{loc[-1]}`"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return message
    given = describe(error["input"])
    if kind in ("less_than_equal", "greater_than_equal"):
        bits = "i32" if abs(int(error["ctx"].get("le", error["ctx"].get("ge", 0)))) < 2**40 else "i64"
        return f"invalid value: {given}, expected {bits}"
    expected = {
        "int_type": "i32",
        "string_type": "a string",
        "bool_type": "a boolean",
        "list_type": "a sequence",
        "model_type": "struct " + _model_name(loc),
        "model_attributes_type": "struct " + _model_name(loc),
    }.get(kind, error["msg"])
    return f"invalid type: {given}, expected {expected}"


_STRUCT_NAMES: Final = {
    "rate_limit": "RateLimitStatusDetails",
    "primary_window": "RateLimitWindowSnapshot",
    "secondary_window": "RateLimitWindowSnapshot",
    "credits": "CreditStatusDetails",
    "spend_control": "SpendControlSnapshot",
    "individual_limit": "SpendControlLimitSnapshot",
    "rate_limit_reached_type": "RateLimitReachedType",
    "rate_limit_reset_credits": "RateLimitResetCreditsSummary",
}


def _model_name(loc: tuple[int | str, ...]) -> str:
    for part in reversed(loc):
        if isinstance(part, str):
            return _STRUCT_NAMES.get(part, part)
    return "RateLimitStatusWithResetCredits"


def _decode(model: type[_Payload], body: bytes, struct: str) -> Any:
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        reason = "EOF while parsing a value" if not body.strip() else exc.msg
        raise DecodeError(f"{reason} at line {exc.lineno} column {exc.colno - 1}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"invalid type: {describe(data)}, expected struct {struct}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DecodeError(_error_text(exc.errors(include_url=False)[0])) from None


def decode_usage(body: bytes) -> Usage:
    result: Usage = _decode(Usage, body, "RateLimitStatusWithResetCredits")
    return result


def decode_details(body: bytes) -> ResetCreditDetails:
    result: ResetCreditDetails = _decode(ResetCreditDetails, body, "RateLimitResetCreditsResponse")
    return result


def decode_consume(body: bytes) -> str:
    """The consume `code`; unknown codes are a decode error, as upstream's enum is closed."""
    answer: ConsumeAnswer = _decode(ConsumeAnswer, body, "ConsumeRateLimitResetCreditResponse")
    if answer.code not in CONSUME_CODES:
        expected = ", ".join(f"`{c}`" for c in CONSUME_CODES)
        raise DecodeError(f"unknown variant `{answer.code}`, expected one of {expected}")
    return answer.code
