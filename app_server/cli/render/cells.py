"""Table cells the views share: window bars, status, saved resets, whether apply would help."""

from __future__ import annotations

import math

from rich.text import Text

from app_server.cli.plain import words
from app_server.cli.plain.times import local_date, local_time, until
from app_server.cli.plain.words import NONE, STATUS_TEXT
from app_server.cli.render.words import wire
from protocol.ext import (
    AccountSummary,
)
from protocol.v2 import RateLimitWindow


def bar(percent: float, width: int) -> Text:
    """` 52% █████░░░░░`: the number first (it survives any truncation), red from 90 %, yellow from 70 %."""
    clamped = min(100.0, max(0.0, percent))
    filled = math.floor(clamped / 100 * width + 0.5) if clamped < 100 else width
    if clamped > 0 and filled == 0:
        filled = 1
    style = "red" if clamped >= 90 else "yellow" if clamped >= 70 else "green"
    text = Text(f"{round(percent):>3}% ")
    text.append("█" * filled, style=style)
    text.append("░" * (width - filled), style="grey50")
    return text


def window_cell(
    window: RateLimitWindow | None,
    *,
    now: float,
    bar_width: int,
    absolute: bool,
    terse: bool = False,
    forecast: Text | None = None,
) -> Text:
    """The bar, then `resets in 2h 17m` (+ ` · 14:32` when `absolute`; just `in 2h 17m` when `terse`), then the
    window's `forecast` line when there is one."""
    if window is None:
        return Text(NONE, style="dim")
    cell = bar(window.used_percent, bar_width)
    if window.resets_at is not None:
        line = until(window.resets_at, now) if terse else "resets " + until(window.resets_at, now)
        if absolute:
            line += f" · {local_time(window.resets_at, now)}"
        cell.append("\n" + line, style="dim")
    if forecast is not None:
        cell.append("\n")
        cell.append_text(forecast)
    return cell


def status_text(summary: AccountSummary) -> Text:
    words, style = STATUS_TEXT.get(summary.status, (str(summary.status), ""))
    return Text(words, style=style)


def saved_count(summary: AccountSummary) -> int | None:
    return summary.reset_credits.available_count if summary.reset_credits is not None else None


def saved_cell(summary: AccountSummary, *, now: float, absolute: bool) -> Text:
    count = saved_count(summary)
    if count is None:
        return Text(NONE, style="dim")
    cell = Text(str(count), style="bold" if count else "dim")
    nearest = summary.reset_credits.nearest_expires_at if summary.reset_credits is not None else None
    if count and nearest is not None:
        when = until(nearest, now, coarse=True)
        if absolute:
            cell.append(f"\nnext expires {when} · {local_date(nearest, now)}", style="dim")
        else:
            cell.append(f"\nnext expires\n{when}", style="dim")
    return cell


def apply_cell(summary: AccountSummary, *, never_signed_in: bool = False) -> Text:
    """`ready`, or why not in two or three words (the notes under the table say more)."""
    return Text(*words.apply_word(wire(summary), never_signed_in=never_signed_in))


def apply_possible(summary: AccountSummary, *, never_signed_in: bool = False) -> str:
    """One plain sentence: can an operator apply on this account now, and if not, why (`plain.words`)."""
    return words.apply_possible(wire(summary), never_signed_in=never_signed_in)
