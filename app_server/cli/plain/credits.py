"""`credits` as plain text: every available saved reset, earliest expiry first, a line each; then the accounts
whose saved resets are not all listed, and the total. Reading only: nothing here leads to an apply."""

from __future__ import annotations

import time

from app_server.cli.plain.times import countdown, exact_time, plural
from app_server.cli.plain.words import Json, aligned, unlisted_words

__all__ = ["SPEND_HINT", "credits_text", "holders", "total_line", "unlisted_words"]

SPEND_HINT = "Nothing here spends anything; to spend one: codex-limits apply ACCOUNT --credit ID (asks first)."


def holders(inventory: Json) -> list[str]:
    """The ids of the accounts that hold at least one saved reset, listed or counted only."""
    ids = {c["accountId"] for c in inventory.get("credits") or []}
    ids |= {u["accountId"] for u in inventory.get("unlisted") or [] if u.get("availableCount")}
    return sorted(ids)


def total_line(inventory: Json) -> str:
    """`3 saved resets across 2 accounts · read 14:30:05`."""
    total = inventory.get("totalAvailable") or 0
    read = time.strftime("%H:%M:%S", time.localtime(inventory.get("generatedAt") or 0))
    return f"{plural(total, 'saved reset')} across {plural(len(holders(inventory)), 'account')} · read {read}"


def credits_text(inventory: Json, *, now: float) -> str:
    """A line per saved reset (its exact expiry, the countdown, the account, the credit's id and title), in the
    server's order; then the accounts not all listed, the total and how to spend one."""
    credits = inventory.get("credits") or []
    lines: list[str] = []
    if not credits:
        lines.append("No saved resets listed." if inventory.get("unlisted") else "No saved resets in the pool.")
    rows = [
        [
            exact_time(c["expiresAt"]) if c.get("expiresAt") is not None else "never",
            countdown(c.get("expiresAt"), now),
            c["accountId"],
            c["creditId"] + (f"  {c['title']}" if c.get("title") else ""),
        ]
        for c in credits
    ]
    lines += aligned(rows)
    lines += [unlisted_words(u) for u in inventory.get("unlisted") or []]
    lines.append(total_line(inventory))
    if credits:
        lines.append(SPEND_HINT)
    return "".join(line + "\n" for line in lines)
