"""The `status` view: every account as a table (wide) or blocks (narrow), with notes and waiting rows."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app_server.cli.plain.times import until
from app_server.cli.plain.words import NONE, Json, caption, forecasts_by_window, inventory_words, notes, of_summary
from app_server.cli.render.cells import apply_cell, bar, saved_cell, saved_count, status_text, window_cell
from app_server.cli.render.forecast import forecast_line, history_note
from app_server.cli.render.words import CRAMPED, NARROW, is_wide, window_name, wire
from protocol.ext import (
    AccountSummary,
)


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
    forecasts: Json | None = None,
    inventory: bool = False,
) -> RenderableType:
    """The pool at a glance: one row per account (one stacked block each below `NARROW` columns).

    `forecasts` (`accountPool/forecast`'s answer) add a line under each window's bar (burn rate, when it runs
    out before it resets, or that the history is too short); `inventory` adds the footer on the pool's saved
    resets (from the summaries shown).

    From `WIDE` columns: plan, status and e-mail get their own room and reset times add the local
    time. Below it the account cell stacks label, id · plan and status; below `CRAMPED` the bars
    shrink and reset times lose the word "resets". A `Waiting` row shows `spinner` (or why it is empty).
    """
    summaries = [r for r in rows if isinstance(r, AccountSummary)]
    wired = {s.account_id: wire(s) for s in summaries}
    windowed = forecasts_by_window(forecasts)
    ahead = {account_id: of_summary(windowed, summary) for account_id, summary in wired.items()}
    shown = [f for pair in ahead.values() for f in pair]
    said = inventory_words(list(wired.values()), now=now) if inventory else []
    footer: list[RenderableType] = [Text.assemble(*spans) for spans in said]
    note = history_note(forecasts, shown)
    if note is not None:
        footer.append(note)
    if width < NARROW:
        body: RenderableType = _status_blocks(rows, now=now, width=width, spinner=spinner, ahead=ahead)
        caption: list[RenderableType] = [Text(_caption(rows, now), style="dim")]
        notes = _notes(summaries, simulated=simulated, never_signed_in=never_signed_in)
        return Group(body, *caption, *footer, *notes)
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
        lines = [forecast_line(f, now=now, folded=not wide) for f in ahead[summary.account_id]]
        slots = (limits.primary, limits.secondary) if limits is not None else (None, None)
        windows = [
            window_cell(w, now=now, bar_width=bar_width, absolute=wide, terse=terse, forecast=line)
            for w, line in zip(slots, lines, strict=True)
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
    below = [*footer, *_notes(summaries, simulated=simulated, never_signed_in=never_signed_in)]
    return Group(table, *below) if below else table


def _waiting_cell(row: Waiting, spinner: RenderableType | None) -> RenderableType:
    if row.timed_out is not None:
        return Text(f"no answer in {row.timed_out:g} s", style="yellow")
    if spinner is not None:
        return spinner
    return Text("reading…", style="dim")


def _status_blocks(
    rows: Sequence[Row],
    *,
    now: float,
    width: int,
    spinner: RenderableType | None,
    ahead: Mapping[str, tuple[Json | None, Json | None]],
) -> RenderableType:
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
        mine = ahead[summary.account_id]
        slots = ((limits.primary, "primary", mine[0]), (limits.secondary, "secondary", mine[1])) if limits else ()
        for window, fallback, forecast in slots:
            if window is None:
                continue
            cell = bar(window.used_percent, bar_width)
            if window.resets_at is not None:
                cell.append(" " + until(window.resets_at, now), style="dim")
            grid.add_row(window_name(window, fallback), cell)
            line = forecast_line(forecast, now=now)
            if line is not None:
                grid.add_row("", line)
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
    return caption(len(rows), read, now=now, waiting=waiting)


def _notes(
    summaries: Sequence[AccountSummary], *, simulated: bool = False, never_signed_in: Collection[str] = ()
) -> list[Text]:
    said = notes([wire(s) for s in summaries], simulated=simulated, never_signed_in=set(never_signed_in))
    return [Text.assemble(*spans) for spans in said]
