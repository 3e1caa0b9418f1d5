"""`status` as plain text: what it prints when stdout is not a terminal, and its one-line and gate forms.

A block per account (its id and label, then one line per fact: status, each window with its reset and
forecast, saved resets, whether apply would help), then the same caption, inventory footer and notes the
terminal's table has. No colour, no bars, no wrapping to a width: lines for `grep`, `less` and logs.
"""

from __future__ import annotations

from app_server.cli.plain.times import local_date, local_time, until
from app_server.cli.plain.words import (
    AVAILABLE,
    EXHAUSTED,
    NONE,
    Json,
    Line,
    apply_word,
    caption,
    forecast_words,
    forecasts_by_window,
    history_note,
    inventory_words,
    notes,
    of_summary,
    readiness,
    saved_count,
    status_words,
    window_name,
    windows,
)

LABEL_WIDTH = 9


def _fact(label: str, value: str) -> str:
    return f"  {label:<{LABEL_WIDTH}}{value}"


def status_text(
    summaries: list[Json],
    *,
    now: float,
    forecasts: Json | None = None,
    simulated: bool = False,
    never_signed_in: set[str] | None = None,
) -> str:
    """Every account as a block of lines, then the caption, the saved-reset footer and the notes."""
    unsigned = never_signed_in or set()
    windowed = forecasts_by_window(forecasts)
    out: list[str] = []
    shown: list[Json | None] = []
    for s in summaries:
        head = s["accountId"] + (f"  {s['label']}" if s.get("label") and s["label"] != s["accountId"] else "")
        out.append(head)
        status = status_words(s)[0]
        if s.get("planType"):
            status += f" · {s['planType']}"
        if s.get("email"):
            status += f" · {s['email']}"
        out.append(_fact("status", status))
        ahead = of_summary(windowed, s)
        shown += ahead
        for window, fallback in windows(s):
            forecast = ahead[0] if fallback == "primary" else ahead[1]
            line = f"{round(window['usedPercent'])}%"
            resets = window.get("resetsAt")
            if resets is not None:
                line += f" · resets {until(resets, now)} ({local_time(resets, now)})"
            said = forecast_words(forecast, now=now)
            if said is not None:
                line += f" · {said[0]}"
            out.append(_fact(window_name(window, fallback), line))
        if not s.get("rateLimits"):
            out.append(_fact("usage", "unknown"))
        count = saved_count(s)
        saved = NONE if count is None else str(count)
        nearest = (s.get("resetCredits") or {}).get("nearestExpiresAt")
        if count and nearest is not None:
            saved += f" · next expires {until(nearest, now, coarse=True)} ({local_date(nearest, now)})"
        out.append(_fact("saved", saved))
        out.append(_fact("apply", apply_word(s, never_signed_in=s["accountId"] in unsigned)[0]))
        out.append("")
    read_at = [s["refreshedAt"] for s in summaries if s.get("refreshedAt") is not None]
    out.append(caption(len(summaries), read_at, now=now))
    out += [_join(spans) for spans in inventory_words(summaries, now=now)]
    note = history_note(forecasts, shown)
    if note is not None:
        out.append(note)
    out += [_join(spans) for spans in notes(summaries, simulated=simulated, never_signed_in=unsigned)]
    return "\n".join(out) + "\n"


def _join(spans: Line) -> str:
    return "".join(text for text, _ in spans)


def compact_line(summaries: list[Json]) -> str:
    """One short line for a status bar: `alice 100/92% ready:2 | bob 35/12% | carol sign-in`."""
    parts: list[str] = []
    for s in summaries:
        if not s.get("rateLimits"):
            state = {"reauthRequired": "sign-in", "unsupported": "unsupported"}.get(str(s.get("status")), "?")
            parts.append(f"{s['accountId']} {state}")
            continue
        used = "/".join(str(round(w["usedPercent"])) for w, _ in windows(s))
        part = f"{s['accountId']} {used}%"
        count = saved_count(s)
        ready = readiness(s)
        if ready == EXHAUSTED:
            part += f" ready:{count}"
        elif ready == AVAILABLE:
            part += f" avail:{count}"
        if s.get("pendingApply") is not None:
            part += " pending"
        parts.append(part)
    return " | ".join(parts)


def above(summaries: list[Json], limit: float) -> list[str]:
    """`alice 5h 100 %` for every window above `limit` percent (unreadable accounts are not counted)."""
    return [
        f"{s['accountId']} {window_name(w, fallback)} {round(w['usedPercent'])} %"
        for s in summaries
        for w, fallback in windows(s)
        if w["usedPercent"] > limit
    ]


def with_readiness(raw: Json) -> Json:
    """The summary as the server sent it, with `resetAction.readiness` filled in when an older server left it out."""
    action = raw.get("resetAction")
    if not isinstance(action, dict) or "readiness" in action:
        return raw
    return {**raw, "resetAction": {**action, "readiness": readiness(raw)}}


def with_forecasts(raw: list[Json], ahead: Json | None) -> list[Json]:
    """`status --json`: each summary as before, plus `forecast` (its windows' forecasts, as
    `accountPool/forecast` gives them) when the server could forecast."""
    if ahead is None:
        return raw
    by_id = {a.get("accountId"): a.get("windows") for a in ahead.get("accounts") or [] if isinstance(a, dict)}
    return [{**r, "forecast": by_id[r["accountId"]]} if r.get("accountId") in by_id else r for r in raw]
