"""`history` as plain text: one line per apply attempt in the ledger, newest first, for a pipe."""

from __future__ import annotations

from app_server.cli.plain.times import stamp
from app_server.cli.plain.words import OUTCOME_HEADLINE, Json, aligned


def result_words(entry: Json) -> tuple[str, str]:
    """`(words, style)`: the outcome of a finished attempt, `outcome unknown` for a pending one, or `failed`."""
    status, outcome = entry.get("status"), entry.get("outcome")
    if status == "finished" and outcome is not None:
        good = outcome in ("reset", "alreadyRedeemed")
        return OUTCOME_HEADLINE.get(outcome, str(outcome)).lower(), "green" if good else "yellow"
    if status == "pending":
        return "outcome unknown", "yellow bold"
    return "failed", "red"


def saved_words(entry: Json) -> str:
    """`2 → 1` for a finished attempt (saved resets before and after), else the count before; `?` unknown."""
    before = _num(entry.get("availableBefore"))
    if entry.get("status") == "finished":
        return f"{before} → {_num(entry.get('availableAfter'))}"
    return before


def history_text(entries: list[Json]) -> str:
    """Started, account, result, saved resets, idempotency key and note, in aligned columns."""
    if not entries:
        return "No apply attempts recorded yet.\n"
    rows = [
        [
            stamp(e["startedAt"]),
            str(e.get("accountId")),
            result_words(e)[0],
            "saved " + saved_words(e),
            "key " + str(e.get("idempotencyKey")),
            e.get("error") or "",
        ]
        for e in entries
    ]
    return "".join(line + "\n" for line in aligned(rows))


def _num(value: object) -> str:
    return "?" if value is None else str(value)
