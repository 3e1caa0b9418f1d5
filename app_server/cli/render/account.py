"""One account in detail (`refresh`, `apply`'s preview), and which saved reset an apply would spend."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from app_server.cli.plain.times import local_date, local_time, until
from app_server.cli.plain.words import AVAILABLE, EXHAUSTED, credit_line
from app_server.cli.render.cells import apply_possible, bar, saved_count, status_text
from app_server.cli.render.words import is_wide, next_step, readiness, usage_words, window_name, wire
from protocol.ext import (
    AccountSummary,
)
from protocol.v2 import RateLimitResetCredit, RateLimitResetCreditStatus


def account_detail(
    summary: AccountSummary, *, now: float, width: int, simulated: bool = False, never_signed_in: bool = False
) -> RenderableType:
    """Everything about one account: windows, saved resets one by one, whether apply is possible."""
    wide = is_wide(width)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    title = Text(summary.label, style="bold")
    title.append("  " + " · ".join(x for x in (summary.account_id, _plan(summary), summary.email) if x), style="dim")
    grid.add_row("Account", title)
    grid.add_row("Status", status_text(summary))
    limits = summary.rate_limits
    bar_width = 30 if wide else max(10, min(24, width - 44))
    for window, fallback in ((limits.primary, "primary"), (limits.secondary, "secondary")) if limits else ():
        if window is None:
            continue
        row = bar(window.used_percent, bar_width)
        if window.resets_at is not None:
            row.append(f"  resets {until(window.resets_at, now)} · {local_time(window.resets_at, now)}", style="dim")
        grid.add_row(f"{window_name(window, fallback).capitalize()} limit", row)
    if limits is None:
        grid.add_row("Usage", Text("not available", style="dim"))
    grid.add_row("Saved resets", _credits_text(summary, now=now))
    style = {EXHAUSTED: "green", AVAILABLE: "cyan"}.get(readiness(summary) or "", "dim")
    grid.add_row("Apply", Text(apply_possible(summary, never_signed_in=never_signed_in), style=style))
    if summary.error is not None:
        grid.add_row("Problem", Text(summary.error.message, style="yellow"))
        step = next_step(summary, simulated=simulated, never_signed_in=never_signed_in)
        if step:
            grid.add_row("Next", Text(step))
    return grid


def available_credits(summary: AccountSummary) -> list[RateLimitResetCredit]:
    """The account's available credits as listed, the one expiring soonest first (never-expiring last)."""
    overview = summary.reset_credits
    rows = [c for c in (overview.credits or ()) if c.status is RateLimitResetCreditStatus.AVAILABLE] if overview else []
    return sorted(rows, key=lambda c: (c.expires_at is None, c.expires_at or 0, c.id))


def credit_to_spend(summary: AccountSummary, credit_id: str | None) -> RateLimitResetCredit | None:
    """The credit an apply will spend: `credit_id`'s row, else the one expiring soonest (what the server picks)."""
    rows = available_credits(summary)
    if credit_id is not None:
        return next((c for c in rows if c.id == credit_id), None)
    return rows[0] if rows else None


def credit_words(credit: RateLimitResetCredit, now: float) -> str:
    """`credit-alice-1 (Full reset, expires in 7d · Dec 05)`."""
    details = [credit.title] if credit.title else []
    if credit.expires_at is not None:
        details.append(f"expires {until(credit.expires_at, now, coarse=True)} · {local_date(credit.expires_at, now)}")
    else:
        details.append("does not expire")
    return f"{credit.id} ({', '.join(details)})"


def apply_prompt(summary: AccountSummary, credit_id: str | None, *, now: float) -> list[Text]:
    """What the confirmation says before asking: which credit it spends, and a warning when nothing is used up."""
    lines: list[Text] = []
    credit = credit_to_spend(summary, credit_id)
    if credit is not None:
        lines.append(Text.assemble("Spends: ", (credit_words(credit, now), "bold")))
    elif credit_id is not None:
        lines.append(Text.assemble("Spends: ", (credit_id, "bold")))
    elif saved_count(summary):
        lines.append(Text("Spends: the saved reset the server picks (it did not list them)"))
    if readiness(summary) == AVAILABLE:
        lines.append(
            Text(
                f"⚠ Nothing on {summary.account_id} is used up ({usage_words(summary)}). Applying now spends a "
                "saved reset early; it helps most once a window reaches 100 %.",
                style="bold yellow",
            )
        )
    return lines


def _plan(summary: AccountSummary) -> str | None:
    return summary.plan_type.value if summary.plan_type is not None else None


def _credits_text(summary: AccountSummary, *, now: float) -> Text:
    overview = summary.reset_credits
    if overview is None:
        return Text("unknown", style="dim")
    text = Text(str(overview.available_count), style="bold")
    for credit in overview.credits or ():
        if credit.status is RateLimitResetCreditStatus.AVAILABLE:
            text.append("\n" + credit_line(wire(credit), now), style="dim")
    return text
