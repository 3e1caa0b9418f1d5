"""The one base class every wire model derives from, and the integer aliases upstream names."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

__all__ = [
    "I64_MAX",
    "I64_MIN",
    "Int32",
    "Int64",
    "WireModel",
]

# Bounded like the Rust types upstream uses, so an out-of-range value is a params error, not a crash later.
I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1

Int64 = Annotated[int, Field(ge=I64_MIN, le=I64_MAX), WithJsonSchema({"format": "int64", "type": "integer"})]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1), WithJsonSchema({"format": "int32", "type": "integer"})]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown members ignored; nulls always written."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        frozen=True,
        # Validators and serializers are built on a model's first use, not at import: start-up
        # pays only for the few models the first requests touch.
        defer_build=True,
    )

    def to_wire(self) -> bytes:
        """Compact UTF-8 JSON, members in declaration order, `None` written as null."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True)
