"""The inventory of saved resets: `credits` (every credit of every account, earliest expiry first) and the
one or two lines `status` shows under its table. Reading only: nothing here leads to an apply."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app_server.cli.plain.times import countdown, local_time, plural
from app_server.cli.render.words import NARROW, STATUS_TEXT
from protocol.ext import AccountPoolResetCreditsListResponse, PoolResetCredit, UnlistedResetCredits

SPEND_HINT = "Nothing here spends anything; to spend one: codex-limits apply ACCOUNT --credit ID (asks first)."


def exact_time(ts: float) -> str:
    """The full local time with its zone, to the second: `2026-12-14 20:49:07 UTC`."""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def holders(inventory: AccountPoolResetCreditsListResponse) -> list[str]:
    """The ids of the accounts that hold at least one saved reset, listed or counted only."""
    ids = {c.account_id for c in inventory.credits}
    ids |= {u.account_id for u in inventory.unlisted if u.available_count}
    return sorted(ids)


def unlisted_words(entry: UnlistedResetCredits) -> str:
    """Why an account's saved resets are not all in the list, in plain words."""
    if entry.available_count is None:
        status = STATUS_TEXT.get(entry.status, (str(entry.status), ""))[0]
        return f"{entry.account_id}: could not be read ({status}); its saved resets are unknown"
    missing = entry.available_count - entry.listed_count
    more = "more saved reset" if entry.listed_count else "saved reset"
    return f"{entry.account_id}: {plural(missing, more)} upstream counted but did not list"


def inventory_lines(inventory: AccountPoolResetCreditsListResponse, *, now: float) -> list[Text]:
    """`status`'s footer: `3 saved resets across 2 accounts; next expires in 7d (alice, Mon 20:49)`, and a
    second line naming the accounts whose saved resets are unknown or not all listed."""
    total = inventory.total_available
    accounts = holders(inventory)
    if total:
        line = Text(f"{plural(total, 'saved reset')} across {plural(len(accounts), 'account')}")
        expiring = [c for c in inventory.credits if c.expires_at is not None]
        if expiring:
            first = expiring[0]
            assert first.expires_at is not None
            line.append(
                f"; next expires {countdown(first.expires_at, now)} ({first.account_id}, "
                f"{local_time(first.expires_at, now)})"
            )
        line.append(" (codex-limits credits lists them)", style="dim")
    else:
        line = Text("No saved resets in the pool" + (" that could be read" if inventory.unlisted else "") + ".")
    lines = [line]
    if inventory.unlisted:
        lines.append(Text("; ".join(unlisted_words(u) for u in inventory.unlisted), style="yellow"))
    return lines


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
        parts.append(Text(unlisted_words(entry), style="yellow"))
    total = inventory.total_available
    summary = f"{plural(total, 'saved reset')} across {plural(len(holders(inventory)), 'account')}"
    read = datetime.fromtimestamp(inventory.generated_at).astimezone().strftime("%H:%M:%S")
    parts.append(Text(f"{summary} · read {read}", style="dim"))
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
