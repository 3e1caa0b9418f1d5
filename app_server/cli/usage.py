"""`codex-limits history --usage ACCOUNT`: each window over time, its burn rate and when it runs out.

A table for a person (a sparkline per window), `--json` for the `accountPool/usageHistory` answer
as is, `--csv` for one row per sample.
"""

from __future__ import annotations

import csv
import re
import time
from datetime import UTC, datetime
from typing import IO, Final

from rich.table import Table
from rich.text import Text

from app_server.cli import render
from app_server.cli.connection import connect
from app_server.cli.exits import Exit
from app_server.cli.failures import rpc_failure
from app_server.cli.terminal import UI
from protocol import ext, v2
from protocol.jsonrpc import RpcError
from protocol.methods import POOL_USAGE_HISTORY

CSV_COLUMNS: Final = (
    "accountId",
    "limitId",
    "window",
    "windowMinutes",
    "takenAt",
    "takenAtUtc",
    "usedPercent",
    "resetsAt",
)
_BARS: Final = "▁▂▃▄▅▆▇█"
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> int:
    """`90`, `90s`, `45m`, `24h`, `7d`, `2w` as whole seconds (at least 1)."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (examples: 3600, 45m, 24h, 7d)")
    seconds = int(float(match.group(1)) * _UNITS[match.group(2) or "s"])
    if seconds < 1:
        raise ValueError("must be at least 1 second")
    return seconds


async def usage_history(
    ui: UI, *, account: str, since: int | None, limit: int | None, as_csv: bool, simulate: bool
) -> Exit:
    params = ext.AccountPoolUsageHistoryParams(account_id=account, since_seconds=since, limit=limit)
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.request(POOL_USAGE_HISTORY.name, params.model_dump(mode="json", by_alias=True))
        except RpcError as exc:
            raise rpc_failure(exc) from None
    history = ext.AccountPoolUsageHistoryResponse.model_validate(raw)
    if as_csv:
        write_csv(history, ui.out.file)
    elif ui.as_json:
        ui.emit_json(raw)
    else:
        ui.show(usage_table(history, now=time.time()))
    return Exit.OK


def write_csv(history: ext.AccountPoolUsageHistoryResponse, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for window in history.windows:
        for point in window.samples:
            writer.writerow(
                (
                    history.account_id,
                    window.limit_id,
                    window.window.value,
                    "" if window.window_minutes is None else window.window_minutes,
                    point.taken_at,
                    datetime.fromtimestamp(point.taken_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    point.used_percent,
                    "" if point.resets_at is None else point.resets_at,
                )
            )
    out.flush()


def sparkline(values: list[int], width: int = 32) -> str:
    """Usage percentages as block characters, the newest on the right (thinned to `width`)."""
    if len(values) > width:
        step = len(values) / width
        values = [values[min(len(values) - 1, int((i + 1) * step) - 1)] for i in range(width)]
    return "".join(_BARS[min(len(_BARS) - 1, max(0, v) * len(_BARS) // 101)] for v in values)


def usage_table(history: ext.AccountPoolUsageHistoryResponse, *, now: float) -> Table | Text:
    if not history.windows:
        return Text(f"{history.account_id}: no usage recorded yet (it is recorded at each read)")
    table = Table(title=f"usage of {history.account_id}", title_justify="left")
    for column, justify in (
        ("window", "left"),
        ("used", "right"),
        ("over time", "left"),
        ("burn rate", "right"),
        ("runs out", "left"),
        ("resets", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for window in history.windows:
        last = window.samples[-1] if window.samples else None
        rate = window.burn_rate_per_hour
        table.add_row(
            _window_name(window),
            f"{last.used_percent}%" if last else "-",
            sparkline([p.used_percent for p in window.samples]),
            f"{rate:.1f} %/h" if rate is not None else "-",
            _runs_out(window.runs_out_at, now),
            render.until(last.resets_at, now) if last is not None and last.resets_at is not None else "-",
        )
    return table


def _window_name(window: ext.UsageWindowHistory) -> str:
    shape = v2.RateLimitWindow(used_percent=0, window_duration_mins=window.window_minutes)
    name = render.window_name(shape, window.window.value)
    return name if window.limit_id == "codex" else f"{window.limit_id} {name}"


def _runs_out(at: int | None, now: float) -> str:
    if at is None:
        return "-"
    if at <= now:
        return "ran out " + render.local_time(at, now)
    return f"{render.until(at, now)} ({render.local_time(at, now)})"
