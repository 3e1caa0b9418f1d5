"""JSON as serde reads it: `NaN`, `Infinity` and `-Infinity` are not JSON, though Python's json takes them.

The one decoder both directions use: request lines from clients and bodies from the backend.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["DECODER", "NonFiniteNumber"]


class NonFiniteNumber(ValueError):
    """`NaN`, `Infinity` or `-Infinity` in the text; the argument is the constant's name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not valid JSON")
        self.name = name


def _reject_constant(name: str) -> Any:
    raise NonFiniteNumber(name)


DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
