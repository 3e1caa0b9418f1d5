"""The `accounts list` view: the pool file's accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class AccountRow:
    """One line of `accounts list`: a pool entry and whether its Codex home is signed in."""

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
