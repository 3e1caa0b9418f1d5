"""The backend's own (snake_case) payloads: usage, reset-credit details, consume, and their decoding.

Parsed tolerantly where upstream is tolerant (unknown members ignored, unknown enum strings
mapped) and strictly where upstream fails the read (CONTRACT §4.10): a malformed payload becomes
a `DecodeError` whose text reads like upstream's serde message. Timestamps are 64-bit (D4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator
from pydantic_core import ErrorDetails

from protocol import v2
from protocol._model import I64_MAX, I64_MIN
from protocol.strict_json import DECODER, NonFiniteNumber
from protocol.validation import describe

I32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
I64 = Annotated[StrictInt, Field(ge=I64_MIN, le=I64_MAX)]


class DecodeError(ValueError):
    """A 2xx body we cannot use; `str()` is the serde-style reason (without url or body)."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Window(_Payload):
    """A rate-limit window in the usage body."""

    used_percent: I32
    limit_window_seconds: I32
    reset_after_seconds: I32
    reset_at: I64


class RateLimit(_Payload):
    """A rate limit in the usage body: whether it is reached, and its primary and secondary windows."""

    allowed: StrictBool
    limit_reached: StrictBool
    primary_window: Window | None = None
    secondary_window: Window | None = None


class Credits(_Payload):
    """The usage body's credits: whether there are any, unlimited, and the balance."""

    has_credits: StrictBool
    unlimited: StrictBool
    balance: StrictStr | None = None


class IndividualLimit(_Payload):
    """A spend control's individual limit in the usage body."""

    limit: StrictStr
    used: StrictStr
    remaining: StrictStr
    used_percent: I32
    remaining_percent: I32
    reset_after_seconds: I32
    reset_at: I64
    source: StrictStr | None = None


class SpendControl(_Payload):
    """The usage body's spend control: whether it is reached, and the individual limit."""

    reached: StrictBool
    individual_limit: IndividualLimit | None = None


class ReachedType(_Payload):
    """The usage body's `rate_limit_reached_type`."""

    type: StrictStr


class AdditionalLimit(_Payload):
    """A metered feature's own rate limit in the usage body."""

    limit_name: StrictStr
    metered_feature: StrictStr
    rate_limit: RateLimit | None = None
    normal_model_slug: StrictStr | None = None


class ResetCreditsCount(_Payload):
    """The usage body's count of saved reset credits."""

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
    """One saved reset credit in the details body."""

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
    """The consume call's answer: its code and how many windows it reset."""

    code: StrictStr  # an enum upstream: anything but a string is "expected value", at the value's first byte
    windows_reset: I64 | None = None

    @field_validator("windows_reset", mode="before")
    @classmethod
    def _present_means_integer(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("invalid type: null, expected i64")
        return value


CONSUME_OUTCOMES: Final = {
    "reset": v2.ConsumeAccountRateLimitResetCreditOutcome.RESET,
    "nothing_to_reset": v2.ConsumeAccountRateLimitResetCreditOutcome.NOTHING_TO_RESET,
    "no_credit": v2.ConsumeAccountRateLimitResetCreditOutcome.NO_CREDIT,
    "already_redeemed": v2.ConsumeAccountRateLimitResetCreditOutcome.ALREADY_REDEEMED,
}
"""The consume codes the backend answers, and the wire outcome of each (CONTRACT §5)."""
CONSUME_CODES: Final = tuple(CONSUME_OUTCOMES)

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
    if kind == "string_type" and tuple(loc[-2:]) == ("rate_limit_reached_type", "type"):
        return f"invalid type: {given}, expected string or map"  # an enum upstream, as plan_type
    expected = {
        "int_type": _int_width(loc),
        "string_type": "a string",
        "bool_type": "a boolean",
        "list_type": "a sequence",
        "model_type": "struct " + _model_name(loc),
        "model_attributes_type": "struct " + _model_name(loc),
    }.get(kind, error["msg"])
    return f"invalid type: {given}, expected {expected}"


# The integer members declared I64 above; every other integer member is an i32.
_I64_FIELDS: Final = frozenset({"reset_at", "available_count", "windows_reset"})


def _int_width(loc: tuple[int | str, ...]) -> str:
    name = next((part for part in reversed(loc) if isinstance(part, str)), "")
    return "i64" if name in _I64_FIELDS else "i32"


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


def _decode(model: type[_Payload], body: bytes, struct: str, buffered: frozenset[str] = frozenset()) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = body.rfind(b"\n", 0, exc.start) + 1
        line = body.count(b"\n", 0, line_start) + 1
        raise DecodeError(f"invalid unicode code point at line {line} column {exc.start - line_start + 1}") from None
    try:
        data = DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(_position(text, *_syntax_error(text, exc))) from None
    except NonFiniteNumber:
        raise DecodeError(_position(text, "expected value", _constant_index(text))) from None
    if "\\u" in text and (surrogate := _lone_surrogate(text)) is not None:
        raise DecodeError(_position(text, *surrogate)) from None
    if not isinstance(data, dict):
        # serde looks at the first byte without consuming it: the position is that of the byte before.
        start = len(text) - len(text.lstrip(_JSON_WS))
        raise DecodeError(_position(text, f"invalid type: {describe(data)}, expected struct {struct}", start - 1))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DecodeError(_first_error(text, exc.errors(include_url=False), buffered)) from None


# -- serde-style positions ---------------------------------------------------------------------------------------
#
# serde_json reports `<message> at line L column C`, where (L, C) is the last byte it consumed (C counts bytes
# from 1; 0 when nothing on the line was consumed). A bad value is reported after it was read; a missing member
# at the object's closing brace; an object or array where a scalar was expected before its opening bracket.

_JSON_WS: Final = " \t\n\r"
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_NUMBER_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")

Path = tuple[int | str, ...]


def _position(text: str, message: str, index: int) -> str:
    """`message at line L column C` for the byte(s) of `text[index]` consumed last (-1: nothing consumed)."""
    index = min(index, len(text) - 1)
    if index < 0:
        return f"{message} at line 1 column 0"
    if text[index] == "\n":  # a consumed newline: the position is the start of the next line
        return f"{message} at line {text.count(chr(10), 0, index + 1) + 1} column 0"
    line_start = text.rfind("\n", 0, index) + 1
    line = text.count("\n", 0, line_start) + 1
    # Bytes before the character, plus its first byte (serde counts bytes, and stops at a character's first).
    column = len(text[line_start:index].encode("utf-8")) + 1
    return f"{message} at line {line} column {column}"


def _value_spans(text: str) -> dict[Path, tuple[int, int]]:
    """Start and end (exclusive) of every value of a valid JSON document, by path (the last duplicate wins)."""
    spans: dict[Path, tuple[int, int]] = {}

    def skip(i: int) -> int:
        while i < len(text) and text[i] in _JSON_WS:
            i += 1
        return i

    def value(i: int, path: Path) -> int:
        i = skip(i)
        start, char = i, text[i]
        if char == "{":
            i = skip(i + 1)
            while text[i] != "}":
                key, i = _scanstring(text, i + 1)
                i = skip(value(skip(i) + 1, (*path, key)))  # the value after ":"
                if text[i] == ",":
                    i = skip(i + 1)
            end = i + 1
        elif char == "[":
            i = skip(i + 1)
            index = 0
            while text[i] != "]":
                i = skip(value(i, (*path, index)))
                index += 1
                if text[i] == ",":
                    i = skip(i + 1)
            end = i + 1
        elif char == '"':
            end = _scanstring(text, i + 1)[1]
        elif match := _NUMBER_RE.match(text, i):
            end = match.end()
        else:
            end = i + {"t": 4, "f": 5, "n": 4}[char]
        spans[path] = (start, end)
        return end

    value(0, ())
    return spans


def _first_error(text: str, errors: list[ErrorDetails], buffered: frozenset[str]) -> str:
    """The error serde would stop at (the earliest in the document), with its position.

    Top-level members in `buffered` belong to a struct upstream flattens into the payload: serde collects them
    while reading the object and decodes them after its closing brace, so their errors are reported there.
    """
    try:
        spans = _value_spans(text)
    except (RecursionError, KeyError, IndexError, ValueError):  # pragma: no cover - json.loads accepted it
        return _error_text(errors[0])
    placed: list[tuple[int, str]] = []
    for error in errors:
        loc = tuple(error["loc"])
        if loc and loc[0] in buffered:
            index = spans[()][1] - 1
        elif loc == ("code",) and error["type"] == "string_type" and not isinstance(error["input"], dict):
            placed.append((spans[loc][0], "expected value"))
            continue
        elif error["type"] == "missing":
            index = spans.get(loc[:-1], (0, len(text)))[1] - 1  # the closing brace
        elif loc in spans:
            start, end = spans[loc]
            index = start - 1 if text[start] in "{[" and error["type"] not in _STRUCT_ERRORS else end - 1
        else:
            index = len(text) - 1
        placed.append((index, _error_text(error)))
    index, message = min(placed, key=lambda item: item[0])
    return _position(text, message, index)


_STRUCT_ERRORS: Final = frozenset({"model_type", "model_attributes_type"})


def _syntax_error(text: str, exc: json.JSONDecodeError) -> tuple[str, int]:
    """serde's wording and position for a document Python's json rejected."""
    pos, msg = exc.pos, exc.msg
    at_end = not text[pos:].strip(_JSON_WS)
    container = _open_container(text, pos)
    eof = {"{": "EOF while parsing an object", "[": "EOF while parsing a list"}.get(container, "")
    if msg.startswith("Unterminated string"):
        return "EOF while parsing a string", len(text) - 1
    if at_end:
        return eof or "EOF while parsing a value", len(text) - 1
    if msg == "Expecting value":
        literal = {"t": "true", "f": "false", "n": "null"}.get(text[pos])
        if literal is not None:
            i = 1
            while i < len(literal) and pos + i < len(text) and text[pos + i] == literal[i]:
                i += 1
            if pos + i >= len(text):
                return "EOF while parsing a value", len(text) - 1
            return "expected ident", pos + i
        if text[pos] == "]" and text[:pos].rstrip(_JSON_WS).endswith(","):
            return "trailing comma", pos
        return "expected value", pos
    if msg == "Extra data":
        return "trailing characters", pos
    if msg.startswith("Expecting property name"):
        if text[pos] == "}" and text[:pos].rstrip(_JSON_WS).endswith(","):
            return "trailing comma", pos
        return "key must be a string", pos
    if msg.startswith("Expecting ':'"):
        return "expected `:`", pos
    if msg.startswith("Expecting ','"):
        return ("expected `,` or `]`" if container == "[" else "expected `,` or `}`"), pos
    if msg.startswith("Invalid control character"):
        return "control character (\\u0000-\\u001F) found while parsing a string", pos
    if msg.startswith("Invalid \\"):
        return "invalid escape", pos + 1
    return msg, pos


def _open_container(text: str, pos: int) -> str:
    """The innermost `{` or `[` still open at `pos` ("" at top level)."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _outside_strings(text: str) -> Iterator[int]:
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        else:
            yield index


def _constant_index(text: str) -> int:
    """Where `NaN` / `Infinity` starts (serde stops at its first letter; after the `-` of `-Infinity`)."""
    for index in _outside_strings(text):
        if text[index] in "NI":
            return index
    return len(text) - 1  # pragma: no cover - only called when one was found


_ESCAPE_RE: Final = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")


def _lone_surrogate(text: str) -> tuple[str, int] | None:
    """serde's error for the first `\\uD800`-`\\uDFFF` escape that is not a valid pair, if any.

    A low surrogate first is a "lone leading surrogate" once read; a high one must be followed by `\\u` and a
    low one ("unexpected end of hex escape" at the first byte that is not, else "lone leading surrogate").
    """
    for match in _ESCAPE_RE.finditer(text):
        digits = match.group(1)
        if digits is None:
            continue
        code = int(digits, 16)
        if 0xDC00 <= code <= 0xDFFF and not _follows_high(text, match.start()):
            return "lone leading surrogate in hex escape", match.end() - 1
        if 0xD800 <= code <= 0xDBFF:
            after = match.end()
            if text[after : after + 1] != "\\":
                return "unexpected end of hex escape", after
            if text[after + 1 : after + 2] != "u":
                return "unexpected end of hex escape", after + 1
            low = _ESCAPE_RE.match(text, after)
            if low is None or low.group(1) is None or not 0xDC00 <= int(low.group(1), 16) <= 0xDFFF:
                return "lone leading surrogate in hex escape", after + 5
    return None


def _follows_high(text: str, start: int) -> bool:
    before = text[max(0, start - 6) : start]
    return len(before) == 6 and before[:2] == "\\u" and 0xD800 <= int(before[2:], 16) <= 0xDBFF


# Upstream decodes these members through a flattened struct (see `_first_error`); the others are its own.
_USAGE_BUFFERED: Final = frozenset({"plan_type", "rate_limit", "credits", "spend_control", "rate_limit_reached_type"})


def decode_usage(body: bytes) -> Usage:
    result: Usage = _decode(Usage, body, "RateLimitStatusWithResetCredits", _USAGE_BUFFERED)
    return result


def decode_details(body: bytes) -> ResetCreditDetails:
    result: ResetCreditDetails = _decode(ResetCreditDetails, body, "RateLimitResetCreditsResponse")
    return result


def decode_consume(body: bytes) -> str:
    """The consume `code`; unknown codes are a decode error, as upstream's enum is closed."""
    answer: ConsumeAnswer = _decode(ConsumeAnswer, body, "ConsumeRateLimitResetCreditResponse")
    if answer.code not in CONSUME_CODES:
        expected = ", ".join(f"`{c}`" for c in CONSUME_CODES)
        message = f"unknown variant `{answer.code}`, expected one of {expected}"
        text = body.decode("utf-8")
        raise DecodeError(_position(text, message, _value_spans(text)[("code",)][1] - 1))
    return answer.code
