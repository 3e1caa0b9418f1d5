"""Strict params parsing with upstream's error texts.

Upstream deserializes params with serde, so its `Invalid request: …` details read like
``missing field `idempotencyKey` `` or ``invalid type: integer `5`, expected a string``.
Clients rely on the code and the prefix only (CONTRACT §3.1), but keeping the wording close
makes our answers interchangeable with the reference's.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .jsonrpc import INVALID_REQUEST, RpcError, invalid_request

__all__ = [
    "MISSING",
    "M",
    "check_key_length",
    "describe",
    "parse_params",
    "validation_error",
]

M = TypeVar("M", bound=BaseModel)

MISSING: Final[Any] = object()
"""Stands for a `params` member that was not sent at all."""

_EXPECTED: Final[dict[str, str]] = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "i64",
    "int_from_float": "i64",
    "float_type": "f64",
    "list_type": "a sequence",
    "dict_type": "a map",
    "enum": "a valid variant",
    "literal_error": "a valid variant",
}


def describe(value: Any) -> str:
    """serde's `Unexpected` wording for a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return "string " + json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "sequence"
    return "map"


def _struct(model: type[BaseModel]) -> str:
    return f"struct {model.__name__}"


def _input_position(error: ErrorDetails, raw: dict[str, Any]) -> tuple[int, int]:
    # serde reports the first bad member in document order and missing members only at the end.
    if error["type"] == "missing":
        return (1, 0)
    keys = list(raw)
    first = error["loc"][0] if error["loc"] else None
    return (0, keys.index(first) if first in keys else len(keys))


def _detail(error: ErrorDetails, model: type[BaseModel]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "missing":
        return f"missing field `{loc[-1]}`"
    if kind in ("model_type", "model_attributes_type"):
        return f"invalid type: {describe(error['input'])}, expected {_struct(_nested_model(model, loc))}"
    if kind in ("less_than_equal", "greater_than_equal"):
        return f"invalid value: {describe(error['input'])}, expected i64"
    expected = _EXPECTED.get(kind)
    if expected is None:
        return error["msg"]
    return f"invalid type: {describe(error['input'])}, expected {expected}"


def _nested_model(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    current = model
    for part in loc:
        field = next(
            (f for name, f in current.model_fields.items() if part in (name, f.alias)),
            None,
        )
        if field is None:
            break
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            break
        current = nested
    return current


def validation_error(exc: ValidationError, model: type[BaseModel], raw: Any) -> RpcError:
    errors = exc.errors(include_url=False)
    if isinstance(raw, dict):
        errors = sorted(errors, key=lambda e: _input_position(e, raw))
    return invalid_request(_detail(errors[0], model))


def parse_params(model: type[M], raw: Any, *, required: bool) -> M:
    """Validate request params strictly: exact JSON types, required members, unknown members ignored.

    Raises `RpcError(-32600, "Invalid request: …")` with a serde-style detail.
    """
    if type(raw) is dict:  # the common case first: no shape checks to make
        try:
            validated: M = model.__pydantic_validator__.validate_python(raw, strict=True, by_alias=True, by_name=False)
            return validated
        except ValidationError as exc:
            raise validation_error(exc, model, raw) from None
    if raw is MISSING or raw is None:
        if required:
            raise invalid_request("missing field `params`")
        return model()
    if isinstance(raw, list):
        raw = _bind_positional(model, raw)
    elif not isinstance(raw, dict):
        raise invalid_request(f"invalid type: {describe(raw)}, expected {_struct(model)}")
    try:
        return model.model_validate(raw, strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise validation_error(exc, model, raw) from None


def _bind_positional(model: type[BaseModel], values: list[Any]) -> dict[str, Any]:
    # Quirk kept from upstream (CONTRACT §4.1, §5.1): serde also accepts a struct as a sequence.
    fields = list(model.model_fields.items())
    required = sum(1 for _, f in fields if f.is_required()) and len(fields)
    if len(values) > len(fields) or len(values) < required:
        raise invalid_request(f"invalid length {len(values)}, expected {_struct(model)} with {len(fields)} elements")
    return {(field.alias or name): value for (name, field), value in zip(fields, values, strict=False)}


def check_key_length(name: str, value: str | None, limit: int) -> None:
    """-32600 `<name> must be at most <limit> characters` for a key past its documented limit."""
    if value is not None and len(value) > limit:
        raise RpcError(INVALID_REQUEST, f"{name} must be at most {limit} characters (got {len(value)})")
