"""The `history` view: the ledger's apply attempts as a table."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app_server.cli.plain.history import result_words, saved_words
from app_server.cli.plain.times import local_time, stamp
from app_server.cli.render.words import NARROW, is_wide, wire
from protocol.ext import ApplyRecord


def _history_result(entry: ApplyRecord) -> Text:
    return Text(*result_words(wire(entry)))


def _history_saved(entry: ApplyRecord) -> str:
    return saved_words(wire(entry))


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
