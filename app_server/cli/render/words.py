"""Widths the rich views fold at, and the words they share for wire models: each is `plain.words`' sentence
of the model's wire JSON."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from app_server.cli.plain import words
from protocol.ext import AccountSummary, ResetDisabledReason
from protocol.v2 import RateLimitWindow

WIDE: Final = 140
"""From this many columns on, tables show more (plan, status and e-mail columns, absolute local times)."""
CRAMPED: Final = 80
"""Below this many columns, bars shrink and reset times drop the word "resets"."""
NARROW: Final = 60
"""Below this many columns, `status` shows one stacked block per account instead of a table."""
UNKNOWN_CREDIT: Final = ResetDisabledReason.UNKNOWN_CREDIT.value
"""Refusal of an apply naming a credit the account does not have (`error.data.availableCreditIds` lists them)."""


class Summary(AccountSummary):
    """`AccountSummary` as the CLI reads it: when an older server sends no `resetAction.readiness`,
    `readiness()` works it out from the windows."""


def is_wide(width: int) -> bool:
    return width >= WIDE


def wire(model: BaseModel) -> dict[str, Any]:
    """The model as the server sent it (camelCase JSON), for `plain.words`."""
    return model.model_dump(mode="json", by_alias=True)


def exhausted_windows(summary: AccountSummary) -> bool:
    """Whether the summary shows a window used up (100 %, or upstream says a limit was reached)."""
    return words.exhausted_windows(wire(summary))


def readiness(summary: AccountSummary) -> str | None:
    """`exhausted` (applying helps now), `available` (a credit, but nothing used up), or None (disabled)."""
    return words.readiness(wire(summary))


def usage_words(summary: AccountSummary) -> str:
    """`5h 71 %, weekly 44 %`: what each window has used, for sentences."""
    return words.usage_words(wire(summary))


def next_step(summary: AccountSummary, *, simulated: bool = False, never_signed_in: bool = False) -> str | None:
    """What the operator can do about the account's problem, when the message does not say it already."""
    return words.next_step(wire(summary), simulated=simulated, never_signed_in=never_signed_in)


def window_name(window: RateLimitWindow | None, fallback: str) -> str:
    """`5h`, `weekly`, `daily`, or the window's length; `fallback` when it has none."""
    return words.window_name(None if window is None else wire(window), fallback)
