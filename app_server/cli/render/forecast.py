"""Forecasts as `status` shows them: one short line under each window's bar, and a note when the history
is too short to forecast (what a forecast needs, and how to get it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from rich.text import Text

from app_server.cli.plain.times import duration
from protocol.ext import AccountForecast, AccountPoolForecastResponse, ForecastStatus, UsageWindow, WindowForecast
from protocol.v2 import RateLimitSnapshot

MAIN_LIMIT: Final = "codex"
"""The limit id of a snapshot that names none (upstream's main Codex limit)."""

Forecasts = Mapping[str, Mapping[tuple[str, str], WindowForecast]]
"""Per account id, each window's forecast by (limit id, `primary` / `secondary`)."""

TOO_LITTLE: Final = "too little history"


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


def rate(forecast: WindowForecast) -> str:
    value = forecast.burn_rate_per_hour or 0.0
    return f"{value:.3g} %/h"


def forecast_line(forecast: WindowForecast | None, *, now: float, folded: bool = False) -> Text | None:
    """`12 %/h · runs out in 1h 10m` (before it resets), `12 %/h` (resets first), `not growing`,
    `too little history`; nothing for a window already used up (its bar says so) or without a forecast.
    `folded`: on two lines where one would be wider than the window's reset line (tables below `WIDE`)."""
    if forecast is None or forecast.status is ForecastStatus.EXHAUSTED:
        return None
    if forecast.status is ForecastStatus.TOO_LITTLE_HISTORY:
        return Text(TOO_LITTLE.replace(" history", "\nhistory") if folded else TOO_LITTLE, style="dim")
    if forecast.status is ForecastStatus.NOT_GROWING:
        return Text("not growing", style="dim")
    if forecast.runs_out_before_reset and forecast.runs_out_at is not None:
        left = forecast.runs_out_at - now
        when = f"runs out in {duration(left)}" if left >= 1 else "runs out now"
        return Text(f"{rate(forecast)}{chr(10) if folded else ' · '}{when}", style="red" if left < 3600 else "yellow")
    return Text(rate(forecast), style="dim")


def history_note(response: AccountPoolForecastResponse | None, shown: Sequence[WindowForecast | None]) -> Text | None:
    """Said once under the table when a shown window has too little history to forecast."""
    if response is None or not any(f is not None and f.status is ForecastStatus.TOO_LITTLE_HISTORY for f in shown):
        return None
    return Text(
        f"{TOO_LITTLE}: a forecast needs {response.min_samples} reads over at least "
        f"{duration(response.min_span_seconds)} within {duration(response.lookback_seconds)}; each status is one "
        "read, and the service (`codex-limits service start`) reads in the background.",
        style="dim",
    )


def account_forecasts(response: AccountPoolForecastResponse | None, account_id: str) -> AccountForecast | None:
    if response is None:
        return None
    return next((a for a in response.accounts if a.account_id == account_id), None)
