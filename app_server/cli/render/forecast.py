"""Forecasts as `status` shows them: one short line under each window's bar, and a note when the history
is too short to forecast (what a forecast needs, and how to get it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text

from app_server.cli.plain.words import MAIN_LIMIT, TOO_LITTLE, forecast_words
from app_server.cli.plain.words import history_note as plain_note
from app_server.cli.render.words import wire
from protocol.ext import AccountForecast, AccountPoolForecastResponse, UsageWindow, WindowForecast
from protocol.v2 import RateLimitSnapshot

__all__ = ["MAIN_LIMIT", "TOO_LITTLE", "Forecasts", "account_forecasts", "by_window", "forecast_line", "history_note"]

Forecasts = Mapping[str, Mapping[tuple[str, str], WindowForecast]]
"""Per account id, each window's forecast by (limit id, `primary` / `secondary`)."""


def by_window(response: AccountPoolForecastResponse | None) -> dict[str, dict[tuple[str, str], WindowForecast]]:
    if response is None:
        return {}
    return {a.account_id: {(w.limit_id, w.window.value): w for w in a.windows} for a in response.accounts}


def of_snapshot(
    forecasts: Forecasts, account_id: str, limits: RateLimitSnapshot | None
) -> tuple[WindowForecast | None, WindowForecast | None]:
    """The forecasts of the snapshot's primary and secondary windows (None where there is none)."""
    if limits is None:
        return None, None
    mine = forecasts.get(account_id, {})
    limit_id = limits.limit_id or MAIN_LIMIT
    return mine.get((limit_id, UsageWindow.PRIMARY.value)), mine.get((limit_id, UsageWindow.SECONDARY.value))


def forecast_line(forecast: WindowForecast | None, *, now: float, folded: bool = False) -> Text | None:
    """`12 %/h · runs out in 1h 10m` (before it resets), `12 %/h` (resets first), `not growing`,
    `too little history` (`plain.words.forecast_words`); nothing for a window already used up or without a
    forecast. `folded`: on two lines where one would be wider than the window's reset line (tables below `WIDE`)."""
    said = forecast_words(None if forecast is None else wire(forecast), now=now)
    if said is None:
        return None
    words, style = said
    if folded:
        words = words.replace(" · ", "\n") if " · " in words else words.replace(" history", "\nhistory")
    return Text(words, style=style)


def history_note(response: AccountPoolForecastResponse | None, shown: Sequence[WindowForecast | None]) -> Text | None:
    """Said once under the table when a shown window has too little history to forecast."""
    said = plain_note(None if response is None else wire(response), [None if f is None else wire(f) for f in shown])
    return None if said is None else Text(said, style="dim")


def account_forecasts(response: AccountPoolForecastResponse | None, account_id: str) -> AccountForecast | None:
    if response is None:
        return None
    return next((a for a in response.accounts if a.account_id == account_id), None)
