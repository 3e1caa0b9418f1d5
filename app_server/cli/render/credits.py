"""The inventory of saved resets on a terminal: `credits` (every credit of every account, earliest expiry first)
as a table. Reading only: nothing here leads to an apply."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app_server.cli.plain.credits import SPEND_HINT, total_line, unlisted_words
from app_server.cli.plain.times import countdown, exact_time
from app_server.cli.render.words import NARROW, wire
from protocol.ext import AccountPoolResetCreditsListResponse, PoolResetCredit


def credits_view(inventory: AccountPoolResetCreditsListResponse, *, now: float, width: int) -> RenderableType:
    """Every available saved reset, earliest expiry first (as the server ordered them): its exact expiry, a
    countdown, the account and the credit's id; then the accounts whose resets are not all listed."""
    parts: list[RenderableType] = []
    if not inventory.credits:
        parts.append(Text("No saved resets listed." if inventory.unlisted else "No saved resets in the pool."))
    elif width < NARROW:
        parts.append(_blocks(inventory.credits, now=now))
    else:
        parts.append(_table(inventory.credits, now=now, width=width))
    for entry in inventory.unlisted:
        parts.append(Text(unlisted_words(wire(entry)), style="yellow"))
    parts.append(Text(total_line(wire(inventory)), style="dim"))
    if inventory.credits:
        parts.append(Text(SPEND_HINT, style="dim"))
    return Group(*parts)


def _table(credits: Sequence[PoolResetCredit], *, now: float, width: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False, header_style="bold")
    table.add_column("Expires", no_wrap=True)
    table.add_column("In", no_wrap=True)
    table.add_column("Account", overflow="fold", max_width=30)
    table.add_column("Saved reset", overflow="fold")
    for credit in credits:
        expires = Text(exact_time(credit.expires_at) if credit.expires_at is not None else "never")
        left = credit.expires_at - now if credit.expires_at is not None else None
        style = "" if left is None or left >= 3 * 86_400 else "red" if left < 86_400 else "yellow"
        account = Text(credit.account_id, style="bold")
        if credit.label != credit.account_id:
            account.append("\n" + credit.label, style="dim")
        what = Text(credit.credit_id)
        if credit.title:
            what.append("\n" + credit.title, style="dim")
        table.add_row(expires, Text(countdown(credit.expires_at, now), style=style), account, what)
    return table


def _blocks(credits: Sequence[PoolResetCredit], *, now: float) -> RenderableType:
    """Narrow terminals: two short lines per credit."""
    lines: list[RenderableType] = []
    for credit in credits:
        head = Text(credit.account_id, style="bold", no_wrap=True, overflow="ellipsis")
        head.append(f"  {credit.credit_id}", style="dim")
        when = exact_time(credit.expires_at) if credit.expires_at is not None else "never expires"
        lines += [head, Text(f"  {countdown(credit.expires_at, now)} · {when}", overflow="fold")]
    return Group(*lines)
