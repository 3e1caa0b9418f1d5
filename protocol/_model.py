"""The one base class every wire model derives from, and the integer aliases upstream names."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Int64 = Annotated[int, Field(json_schema_extra={"format": "int64"})]
Int32 = Annotated[int, Field(json_schema_extra={"format": "int32"})]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown members ignored; nulls always written."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        frozen=True,
    )

    def to_wire(self) -> bytes:
        """Compact UTF-8 JSON, members in declaration order, `None` written as null."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True)
