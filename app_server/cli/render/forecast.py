"""Forecasts as `status` shows them on a terminal: one short line under each window's bar, and a note when the
history is too short to forecast (`plain.words` says both; this gives them their colour)."""

from __future__ import annotations

from rich.text import Text

from app_server.cli.plain.words import Json, forecast_words
from app_server.cli.plain.words import history_note as plain_note


def forecast_line(forecast: Json | None, *, now: float, folded: bool = False) -> Text | None:
    """`12 %/h · runs out in 1h 10m` (before it resets), `12 %/h` (resets first), `not growing`,
    `too little history` for a window's forecast as `accountPool/forecast` gives it; nothing for a window already
    used up or without a forecast. `folded`: on two lines where one would be wider than the window's reset line
    (tables below `WIDE`)."""
    said = forecast_words(forecast, now=now)
    if said is None:
        return None
    words, style = said
    if folded:
        words = words.replace(" · ", "\n") if " · " in words else words.replace(" history", "\nhistory")
    return Text(words, style=style)


def history_note(response: Json | None, shown: list[Json | None]) -> Text | None:
    """Said once under the table when a shown window has too little history to forecast."""
    said = plain_note(response, shown)
    return None if said is None else Text(said, style="dim")
