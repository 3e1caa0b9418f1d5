"""An apply's outcome: the headline, the sentence, the windows it reset."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app_server.cli.plain.words import OUTCOME_HEADLINE, OUTCOME_SENTENCE
from app_server.cli.render.cells import saved_count, window_cell
from app_server.cli.render.words import is_wide, usage_words, window_name
from protocol.ext import (
    AccountPoolApplyResponse,
)
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome


def windows_reset(response: AccountPoolApplyResponse) -> bool:
    """Whether the read after the apply shows every window back at 0 %."""
    after = response.after
    if after is None or after.rate_limits is None:
        return False
    windows = [w for w in (after.rate_limits.primary, after.rate_limits.secondary) if w is not None]
    return bool(windows) and all(w.used_percent == 0 for w in windows)


def outcome_sentence(response: AccountPoolApplyResponse) -> str:
    """What happened, saying only what the answer and the read after it show."""
    if response.outcome is not Outcome.RESET or windows_reset(response):
        return OUTCOME_SENTENCE[response.outcome]
    if response.after is None or response.after.rate_limits is None:
        return "One saved reset was spent; the usage could not be read afterwards, so the windows are not shown."
    return (
        f"One saved reset was spent, but the read right after still shows {usage_words(response.after)} "
        f"(upstream may take a moment: `codex-limits refresh {response.before.account_id}`)."
    )


def outcome_line(response: AccountPoolApplyResponse) -> Text:
    good = response.outcome in (Outcome.RESET, Outcome.ALREADY_REDEEMED)
    text = Text("✓ " if good else "✗ ", style="green bold" if good else "yellow bold")
    text.append(f"{OUTCOME_HEADLINE[response.outcome]} on {response.before.account_id}. ", style="bold")
    text.append(outcome_sentence(response))
    if response.replayed:
        text.append(" (This is the recorded result of an earlier run with the same key.)", style="dim")
    return text


def apply_result(response: AccountPoolApplyResponse, *, now: float, width: int) -> RenderableType:
    """The outcome in a sentence, then the windows and saved resets before and after."""
    before, after = response.before, response.after
    bar_width = 16 if is_wide(width) else 10
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False, header_style="bold")
    table.add_column("")
    table.add_column("Before", no_wrap=True)
    table.add_column("After", no_wrap=True)
    b_limits, a_limits = before.rate_limits, after.rate_limits if after is not None else None
    for slot, fallback in (("primary", "primary"), ("secondary", "secondary")):
        b_window = getattr(b_limits, slot) if b_limits is not None else None
        a_window = getattr(a_limits, slot) if a_limits is not None else None
        if b_window is None and a_window is None:
            continue
        name = window_name(b_window or a_window, fallback).capitalize() + " limit"
        table.add_row(
            name,
            window_cell(b_window, now=now, bar_width=bar_width, absolute=False),
            window_cell(a_window, now=now, bar_width=bar_width, absolute=False),
        )
    b_count = saved_count(before)
    a_count = saved_count(after) if after is not None else None
    parts: list[RenderableType] = [outcome_line(response), table]
    if after is None:
        parts.append(
            Text(
                "The usage could not be read after the apply; run "
                f"`codex-limits refresh {before.account_id}` to see it.",
                style="yellow",
            )
        )
    elif b_count is not None and a_count is not None:
        parts.append(Text(f"Saved resets: {b_count} → {a_count} ({a_count} left).", style="bold"))
    return Group(*parts)
