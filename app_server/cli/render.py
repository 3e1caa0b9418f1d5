"""What the operator commands show: pure functions from wire models to rich renderables.

Nothing here does I/O or reads the clock: every function takes `now` (Unix seconds) and the
`width` it may use, so the same summaries render the same way in a test as in a terminal.
Below `WIDE` columns the tables fold (label, id, plan and status share one cell; reset times
are relative only); from `WIDE` on they add the plan, e-mail and absolute local times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from protocol.ext import (
    AccountPoolApplyResponse,
    AccountStatus,
    AccountSummary,
    ApplyRecord,
    ApplyStatus,
    ResetDisabledReason,
)
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from protocol.v2 import RateLimitResetCredit, RateLimitResetCreditStatus, RateLimitWindow

WIDE: Final = 140
"""From this many columns on, tables show more (plan, status and e-mail columns, absolute local times)."""
CRAMPED: Final = 80
"""Below this many columns, bars shrink and reset times drop the word "resets"."""
NARROW: Final = 60
"""Below this many columns, `status` shows one stacked block per account instead of a table."""

EXHAUSTED: Final = "exhausted"
AVAILABLE: Final = "available"

NONE: Final = "—"

STATUS_TEXT: Final = {
    AccountStatus.ACTIVE: ("active", "green"),
    AccountStatus.RATE_LIMITED: ("rate limited", "red"),
    AccountStatus.REAUTH_REQUIRED: ("needs sign-in", "yellow"),
    AccountStatus.UNSUPPORTED: ("unsupported", "magenta"),
    AccountStatus.UNAVAILABLE: ("unavailable", "yellow"),
}

UNKNOWN_CREDIT: Final = ResetDisabledReason.UNKNOWN_CREDIT.value
"""Refusal of an apply naming a credit the account does not have (`error.data.availableCreditIds` lists them)."""

REASON_SHORT: Final[dict[str, str]] = {
    ResetDisabledReason.NO_CREDIT: "no saved reset",
    ResetDisabledReason.REAUTH_REQUIRED: "sign in again",
    ResetDisabledReason.UNSUPPORTED: "not supported",
    ResetDisabledReason.UNAVAILABLE: "usage unknown",
    ResetDisabledReason.PENDING_APPLY: "unfinished",
    ResetDisabledReason.UNKNOWN_CREDIT: "no such credit",
}

REASON_LONG: Final[dict[str, str]] = {
    ResetDisabledReason.NO_CREDIT: "this account has no saved reset to spend",
    ResetDisabledReason.REAUTH_REQUIRED: "this account must sign in again first (`codex login` with its CODEX_HOME)",
    ResetDisabledReason.UNSUPPORTED: "this account cannot use saved resets (API-key sign-in or a plan without them)",
    ResetDisabledReason.UNAVAILABLE: "its usage could not be read just now, so it is not safe to apply",
    ResetDisabledReason.PENDING_APPLY: (
        "an earlier apply has an unknown outcome; `codex-limits apply` re-sends that one first (it cannot spend twice)"
    ),
    ResetDisabledReason.UNKNOWN_CREDIT: "this account has no saved reset with that id (see `codex-limits status`)",
}


class Summary(AccountSummary):
    """`AccountSummary` as the CLI reads it: when an older server sends no `resetAction.readiness`,
    `readiness()` works it out from the windows."""


def reason_words(reason: str | None, *, long: bool) -> str:
    """Why apply is not possible, in plain words (`long`: a clause; else two or three words)."""
    if reason is None:
        return "the server gave no reason" if long else "no"
    table = REASON_LONG if long else REASON_SHORT
    return table.get(str(reason), str(reason))


def exhausted_windows(summary: AccountSummary) -> bool:
    """Whether the summary shows a window used up (100 %, or upstream says a limit was reached)."""
    limits = summary.rate_limits
    if limits is None:
        return False
    if limits.rate_limit_reached_type is not None:
        return True
    return any(w is not None and w.used_percent >= 100 for w in (limits.primary, limits.secondary))


def readiness(summary: AccountSummary) -> str | None:
    """`exhausted` (applying helps now), `available` (a credit, but nothing used up), or None (disabled).

    Newer servers send `resetAction.readiness`; for older ones it is worked out from the windows."""
    action = summary.reset_action
    sent = getattr(action, "readiness", None)
    if sent is not None:
        return str(getattr(sent, "value", sent))
    if not action.enabled:
        return None
    return EXHAUSTED if exhausted_windows(summary) else AVAILABLE


def usage_words(summary: AccountSummary) -> str:
    """`5h 71 %, weekly 44 %`: what each window has used, for sentences."""
    limits = summary.rate_limits
    if limits is None:
        return "usage unknown"
    parts = [
        f"{window_name(w, fallback)} {round(w.used_percent)} %"
        for w, fallback in ((limits.primary, "primary"), (limits.secondary, "secondary"))
        if w is not None
    ]
    return ", ".join(parts) if parts else "no usage windows"


def next_step(summary: AccountSummary, *, simulated: bool = False, never_signed_in: bool = False) -> str | None:
    """What the operator can do about the account's problem, when the message does not say it already.

    `never_signed_in`: the account's Codex home has no auth.json at all (the caller looked)."""
    home = summary.codex_home
    status = summary.status
    message = summary.error.message if summary.error is not None else ""
    if status is AccountStatus.REAUTH_REQUIRED:
        if never_signed_in and not simulated:
            if "codex login" in message:
                return None  # the server's message already says how (`Problem`): once is enough
            return (
                f"never signed in here: run `CODEX_HOME={home} codex login`, or try `codex-limits demo` "
                "to see the tool without an account"
            )
        if simulated:
            return "simulated: expired on purpose, nothing to fix"
        step = "" if "codex login" in message else f"sign in with `CODEX_HOME={home} codex login`, then "
        return step + f"check with `codex-limits refresh {summary.account_id}`"
    if status is AccountStatus.UNAVAILABLE:
        again = f"try again with `codex-limits refresh {summary.account_id}`"
        if "sending request" in message or "connect" in message:  # the backend address could not be reached
            return f"check `chatgpt_base_url` in {home}/config.toml (if set) and the network, then {again}"
        return again
    return None


OUTCOME_HEADLINE: Final = {
    Outcome.RESET: "Reset applied",
    Outcome.NOTHING_TO_RESET: "Nothing to reset",
    Outcome.NO_CREDIT: "No saved reset available",
    Outcome.ALREADY_REDEEMED: "Already applied",
}

OUTCOME_SENTENCE: Final = {
    Outcome.RESET: "One saved reset was spent and the usage windows were reset.",
    Outcome.NOTHING_TO_RESET: "Your usage does not need a reset right now; nothing was spent.",
    Outcome.NO_CREDIT: (
        "The account had no saved reset to spend when the request arrived (it may have expired or been used "
        "elsewhere); nothing was spent."
    ),
    Outcome.ALREADY_REDEEMED: (
        "This attempt had already been applied earlier (same idempotency key); no second reset was spent."
    ),
}


def is_wide(width: int) -> bool:
    return width >= WIDE


# -- times -----------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A short human duration: `45s`, `17m`, `2h 17m`, `3d 5h`, `21d`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    minutes = s // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    if days >= 10 or not hours:
        return f"{days}d"
    return f"{days}d {hours}h"


def until(ts: float, now: float, *, coarse: bool = False) -> str:
    """`in 2h 17m`, or `now` when the moment has passed; `coarse` rounds to whole days from two days on."""
    delta = ts - now
    if delta < 1:
        return "now"
    if coarse and delta >= 2 * 86_400:
        return f"in {round(delta / 86_400)}d"
    return "in " + duration(delta)


def ago(ts: float, now: float) -> str:
    delta = now - ts
    return "just now" if delta < 1 else duration(delta) + " ago"


def local_time(ts: float, now: float) -> str:
    """Absolute local time, as short as it can be unambiguous: `14:32`, `Tue 09:00`, `Nov 29 14:32`."""
    moment = datetime.fromtimestamp(ts).astimezone()
    today = datetime.fromtimestamp(now).astimezone()
    if moment.date() == today.date():
        return moment.strftime("%H:%M")
    if abs(ts - now) < 7 * 86_400:
        return moment.strftime("%a %H:%M")
    if moment.year == today.year:
        return moment.strftime("%b %d %H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def local_date(ts: float, now: float) -> str:
    """A local date for far-off moments (`Nov 29`); the time too when it is within a day."""
    if abs(ts - now) < 86_400:
        return local_time(ts, now)
    moment = datetime.fromtimestamp(ts).astimezone()
    today = datetime.fromtimestamp(now).astimezone()
    return moment.strftime("%b %d" if moment.year == today.year else "%Y-%m-%d")


def stamp(ts: float) -> str:
    """A full local timestamp for logs and history: `2026-11-22 14:32`."""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")


# -- pieces ----------------------------------------------------------------------------------


def window_name(window: RateLimitWindow | None, fallback: str) -> str:
    """`5h`, `weekly`, `daily`, or the window's length; `fallback` when it has none."""
    mins = window.window_duration_mins if window is not None else None
    if mins is None:
        return fallback
    if mins == 7 * 24 * 60:
        return "weekly"
    if mins == 24 * 60:
        return "daily"
    return duration(mins * 60)


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
    window: RateLimitWindow | None, *, now: float, bar_width: int, absolute: bool, terse: bool = False
) -> Text:
    """The bar, then `resets in 2h 17m` (+ ` · 14:32` when `absolute`; just `in 2h 17m` when `terse`)."""
    if window is None:
        return Text(NONE, style="dim")
    cell = bar(window.used_percent, bar_width)
    if window.resets_at is not None:
        line = until(window.resets_at, now) if terse else "resets " + until(window.resets_at, now)
        if absolute:
            line += f" · {local_time(window.resets_at, now)}"
        cell.append("\n" + line, style="dim")
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
    if never_signed_in and summary.reset_action.disabled_reason is ResetDisabledReason.REAUTH_REQUIRED:
        return Text("sign in first", style="dim")
    if summary.pending_apply is not None:
        return Text("unfinished\n(see below)", style="yellow")
    action = summary.reset_action
    ready = readiness(summary)
    if ready == EXHAUSTED:
        return Text("ready", style="green bold")
    if ready is not None:
        return Text("available", style="cyan")
    return Text(reason_words(action.disabled_reason, long=False), style="dim")


def apply_possible(summary: AccountSummary, *, never_signed_in: bool = False) -> str:
    """One plain sentence: can an operator apply on this account now, and if not, why.

    `never_signed_in`: the account's Codex home has no auth.json at all, so there is nothing to sign in "again"."""
    if never_signed_in and summary.reset_action.disabled_reason is ResetDisabledReason.REAUTH_REQUIRED:
        return "not possible: this account has not signed in yet"
    if summary.pending_apply is not None:
        return "an earlier apply has an unknown outcome; applying again re-sends it and cannot spend twice"
    ready = readiness(summary)
    if ready == EXHAUSTED:
        return "ready: a window is used up; applying spends one saved reset"
    if ready is not None:
        return f"available, but nothing is used up ({usage_words(summary)}): applying now spends a saved reset early"
    return "not possible: " + reason_words(summary.reset_action.disabled_reason, long=True)


# -- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """An account whose read has not answered yet (`timed_out`: and will not be waited for any more)."""

    account_id: str
    timed_out: float | None = None


Row = AccountSummary | Waiting


def status_table(
    rows: Sequence[Row],
    *,
    now: float,
    width: int,
    simulated: bool = False,
    spinner: RenderableType | None = None,
    never_signed_in: Collection[str] = (),
) -> RenderableType:
    """The pool at a glance: one row per account (one stacked block each below `NARROW` columns).

    From `WIDE` columns: plan, status and e-mail get their own room and reset times add the local
    time. Below it the account cell stacks label, id · plan and status; below `CRAMPED` the bars
    shrink and reset times lose the word "resets". A `Waiting` row shows `spinner` (or why it is empty).
    """
    summaries = [r for r in rows if isinstance(r, AccountSummary)]
    if width < NARROW:
        body: RenderableType = _status_blocks(rows, now=now, width=width, spinner=spinner)
        caption: list[RenderableType] = [Text(_caption(rows, now), style="dim")]
        notes = _notes(summaries, simulated=simulated, never_signed_in=never_signed_in)
        return Group(body, *caption, *notes)
    wide = is_wide(width)
    terse = width < CRAMPED
    names = _window_headers(summaries)
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
        header_style="bold",
        caption=_caption(rows, now),
        caption_justify="left",
        caption_style="dim",
    )
    # Only the account and apply cells may wrap: when room is short, rich narrows those first and the
    # numbers keep their width.
    table.add_column("Account", overflow="fold", max_width=30 if wide else 20)
    if wide:
        table.add_column("Plan", no_wrap=True, overflow="ellipsis", max_width=12)
        table.add_column("Status", no_wrap=True)
    table.add_column(names[0], no_wrap=True, overflow="ellipsis")
    table.add_column(names[1], no_wrap=True, overflow="ellipsis")
    table.add_column("Saved resets", no_wrap=True, overflow="ellipsis", min_width=5)
    table.add_column("Apply", overflow="fold", min_width=5)
    bar_width = 16 if wide else 6 if terse else 10
    for row in rows:
        if isinstance(row, Waiting):
            lead_cells: list[RenderableType] = [Text(row.account_id, style="bold")]
            if wide:
                lead_cells += [Text(NONE, style="dim"), _waiting_cell(row, spinner)]
            else:
                lead_cells = [Group(Text(row.account_id, style="bold"), _waiting_cell(row, spinner))]
            blank = Text(NONE, style="dim")
            table.add_row(*lead_cells, blank, blank, blank, blank)
            table.add_section()
            continue
        summary = row
        limits = summary.rate_limits
        windows = [
            window_cell(w, now=now, bar_width=bar_width, absolute=wide, terse=terse)
            for w in ((limits.primary, limits.secondary) if limits is not None else (None, None))
        ]
        account = Text(summary.label, style="bold")
        if wide:
            account.append("\n" + summary.account_id, style="dim")
            if summary.email:
                account.append("\n" + summary.email, style="dim")
            plan = Text(summary.plan_type.value if summary.plan_type is not None else NONE)
            lead: list[Text] = [account, plan, status_text(summary)]
        else:
            ident = summary.account_id + (f" · {summary.plan_type.value}" if summary.plan_type is not None else "")
            account.append("\n" + ident, style="dim")
            account.append("\n")
            account.append_text(status_text(summary))
            lead = [account]
        unsigned = summary.account_id in never_signed_in
        table.add_row(
            *lead, *windows, saved_cell(summary, now=now, absolute=wide), apply_cell(summary, never_signed_in=unsigned)
        )
        table.add_section()
    notes = _notes(summaries, simulated=simulated, never_signed_in=never_signed_in)
    return Group(table, *notes) if notes else table


def _waiting_cell(row: Waiting, spinner: RenderableType | None) -> RenderableType:
    if row.timed_out is not None:
        return Text(f"no answer in {row.timed_out:g} s", style="yellow")
    if spinner is not None:
        return spinner
    return Text("reading…", style="dim")


def _status_blocks(rows: Sequence[Row], *, now: float, width: int, spinner: RenderableType | None) -> RenderableType:
    """Narrow terminals: per account a heading (label and id) and one short line per fact."""
    bar_width = 4 if width < 40 else 8
    parts: list[RenderableType] = []
    for row in rows:
        if isinstance(row, Waiting):
            head = Text(row.account_id, style="bold", no_wrap=True, overflow="ellipsis")
            parts += [head, _waiting_cell(row, spinner), Text("")]
            continue
        summary = row
        head = Text(summary.account_id, style="bold", no_wrap=True, overflow="ellipsis")
        if summary.label != summary.account_id:
            head.append(f"  {summary.label}", style="dim")
        parts.append(head)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, style="dim")
        grid.add_column(no_wrap=True, overflow="ellipsis")
        status = status_text(summary)
        if summary.plan_type is not None:
            status.append(f" · {summary.plan_type.value}", style="dim")
        grid.add_row("status", status)
        limits = summary.rate_limits
        for window, fallback in ((limits.primary, "primary"), (limits.secondary, "secondary")) if limits else ():
            if window is None:
                continue
            cell = bar(window.used_percent, bar_width)
            if window.resets_at is not None:
                cell.append(" " + until(window.resets_at, now), style="dim")
            grid.add_row(window_name(window, fallback), cell)
        count = saved_count(summary)
        saved = Text(NONE if count is None else str(count), style="bold" if count else "dim")
        nearest = summary.reset_credits.nearest_expires_at if summary.reset_credits is not None else None
        if count and nearest is not None:
            saved.append(f", next expires {until(nearest, now, coarse=True)}", style="dim")
        grid.add_row("saved", saved)
        grid.add_row("apply", apply_cell(summary).split("\n")[0])
        parts += [grid, Text("")]
    return Group(*parts)


def _window_headers(summaries: Sequence[AccountSummary]) -> tuple[str, str]:
    primary = {window_name(s.rate_limits.primary, "") for s in summaries if s.rate_limits and s.rate_limits.primary}
    secondary = {
        window_name(s.rate_limits.secondary, "") for s in summaries if s.rate_limits and s.rate_limits.secondary
    }
    first = f"{primary.pop()} limit" if len(primary) == 1 and "" not in primary else "Short window"
    second = f"{secondary.pop().capitalize()} limit" if len(secondary) == 1 and "" not in secondary else "Long window"
    return first, second


def _caption(rows: Sequence[Row], now: float) -> str:
    read = [s.refreshed_at for s in rows if isinstance(s, AccountSummary) and s.refreshed_at is not None]
    waiting = sum(1 for r in rows if isinstance(r, Waiting) and r.timed_out is None)
    count = f"{len(rows)} account" + ("" if len(rows) == 1 else "s")
    if waiting:
        count += f" · {waiting} still reading"
    if not read:
        return count
    oldest = min(read)
    return f"{count} · read {ago(oldest, now)} ({time.strftime('%H:%M:%S', time.localtime(oldest))})"


def _notes(
    summaries: Sequence[AccountSummary], *, simulated: bool = False, never_signed_in: Collection[str] = ()
) -> list[Text]:
    notes: list[Text] = []
    for s in summaries:
        if s.pending_apply is not None:
            notes.append(
                Text.assemble(
                    (f"{s.account_id}: ", "bold"),
                    "an earlier apply has an unknown outcome; run ",
                    (f"codex-limits apply {s.account_id}", "bold"),
                    " to re-send it (same key, it cannot spend twice).",
                )
            )
        if s.error is not None:
            note = Text.assemble((f"{s.account_id}: ", "bold"), (s.error.message, "yellow"))
            step = next_step(s, simulated=simulated, never_signed_in=s.account_id in never_signed_in)
            if step:
                note.append(f" → {step}")
            notes.append(note)
    if any(readiness(s) == AVAILABLE for s in summaries):
        notes.append(
            Text(
                "available: a saved reset could be spent, but no window is used up yet; "
                "ready: a window is used up, so applying helps now.",
                style="dim",
            )
        )
    return notes


# -- one account -----------------------------------------------------------------------------


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
        if credit.status is not RateLimitResetCreditStatus.AVAILABLE:
            continue
        line = f"\n{credit.id}"
        if credit.title:
            line += f"  {credit.title}"
        line += (
            f"  expires {until(credit.expires_at, now, coarse=True)} · {local_date(credit.expires_at, now)}"
            if credit.expires_at is not None
            else "  does not expire"
        )
        text.append(line, style="dim")
    return text


# -- apply -----------------------------------------------------------------------------------


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


# -- history ---------------------------------------------------------------------------------


def _history_result(entry: ApplyRecord) -> Text:
    if entry.status is ApplyStatus.FINISHED and entry.outcome is not None:
        good = entry.outcome in (Outcome.RESET, Outcome.ALREADY_REDEEMED)
        return Text(OUTCOME_HEADLINE[entry.outcome].lower(), style="green" if good else "yellow")
    if entry.status is ApplyStatus.PENDING:
        return Text("outcome unknown", style="yellow bold")
    return Text("failed", style="red")


def _history_saved(entry: ApplyRecord) -> str:
    if entry.status is ApplyStatus.FINISHED:
        return f"{_num(entry.available_before)} → {_num(entry.available_after)}"
    return _num(entry.available_before)


def history_table(entries: Sequence[ApplyRecord], *, now: float, width: int) -> RenderableType:
    if not entries:
        return Text("No apply attempts recorded yet.", style="dim")
    if width < NARROW:
        lines: list[RenderableType] = []
        for entry in entries:
            head = Text(f"{local_time(entry.started_at, now)}  ", style="dim")
            head.append(entry.account_id, style="bold")
            body = Text("  ").append_text(_history_result(entry))
            body.append(f" · saved {_history_saved(entry)}", style="dim")
            lines += [head, body, Text(f"  key {entry.idempotency_key}", style="dim", overflow="fold")]
            if entry.error:
                lines.append(Text(f"  {entry.error}", style="dim"))
        return Group(*lines)
    wide = is_wide(width)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False, header_style="bold")
    table.add_column("Started", no_wrap=True)
    table.add_column("Account", no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("Result", no_wrap=True)
    table.add_column("Saved", no_wrap=True)
    table.add_column("Key", no_wrap=True, overflow="ellipsis", max_width=36 if wide else 10)
    table.add_column("Note", overflow="fold")
    for entry in entries:
        table.add_row(
            stamp(entry.started_at) if wide else local_time(entry.started_at, now),
            entry.account_id,
            _history_result(entry),
            _history_saved(entry),
            entry.idempotency_key,
            Text(entry.error or "", style="dim"),
        )
    return table


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


# -- accounts.toml ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRow:
    id: str
    label: str
    codex_home: Path
    signed_in: bool


def accounts_table(rows: Sequence[AccountRow], *, width: int) -> RenderableType:
    if not rows:
        return Text("The pool is empty: add an account with `codex-limits accounts add ID CODEX_HOME`.", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False, header_style="bold")
    table.add_column("Id", no_wrap=True)
    table.add_column("Label", overflow="fold", max_width=30)
    table.add_column("CODEX_HOME", overflow="fold")
    table.add_column("auth.json", no_wrap=True)
    for row in rows:
        table.add_row(
            row.id,
            row.label,
            str(row.codex_home),
            Text("present", style="green") if row.signed_in else Text("missing", style="yellow"),
        )
    return table
