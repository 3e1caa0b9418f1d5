"""Words every view shares, worked out from the wire JSON (`accountPool/list`'s summaries as dicts).

Status and reason texts, readiness, window names, the next step to suggest, and the forecast and
inventory sentences. The rich views (`render/`) say the same things: they hand their models here as
wire dicts, so each sentence is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from app_server.cli.plain.times import ago, countdown, duration, local_date, local_time, plural, until

Json = dict[str, Any]
Line = list[tuple[str, str]]
"""One line of output as (words, style) spans; a style is a rich style name ("" for none)."""

EXHAUSTED: Final = "exhausted"
AVAILABLE: Final = "available"
NONE: Final = "—"
MAIN_LIMIT: Final = "codex"
"""The limit id of a snapshot that names none (upstream's main Codex limit)."""
TOO_LITTLE: Final = "too little history"

STATUS_TEXT: Final[dict[str, tuple[str, str]]] = {
    "active": ("active", "green"),
    "rateLimited": ("rate limited", "red"),
    "reauthRequired": ("needs sign-in", "yellow"),
    "unsupported": ("unsupported", "magenta"),
    "unavailable": ("unavailable", "yellow"),
}
"""By `AccountStatus` value: the words and the colour a terminal shows them in."""
REASON_SHORT: Final[dict[str, str]] = {
    "noCredit": "no saved reset",
    "reauthRequired": "sign in again",
    "unsupported": "not supported",
    "unavailable": "usage unknown",
    "pendingApply": "unfinished",
    "unknownCredit": "no such credit",
}
"""By `ResetDisabledReason` value: why apply is not possible, in two or three words."""
REASON_LONG: Final[dict[str, str]] = {
    "noCredit": "this account has no saved reset to spend",
    "reauthRequired": "this account must sign in again first (`codex login` with its CODEX_HOME)",
    "unsupported": "this account cannot use saved resets (API-key sign-in or a plan without them)",
    "unavailable": "its usage could not be read just now, so it is not safe to apply",
    "pendingApply": (
        "an earlier apply has an unknown outcome; `codex-limits apply` re-sends that one first (it cannot spend twice)"
    ),
    "unknownCredit": "this account has no saved reset with that id (see `codex-limits status`)",
}
OUTCOME_HEADLINE: Final[dict[str, str]] = {
    "reset": "Reset applied",
    "nothingToReset": "Nothing to reset",
    "noCredit": "No saved reset available",
    "alreadyRedeemed": "Already applied",
}
"""By consume outcome value."""
OUTCOME_SENTENCE: Final[dict[str, str]] = {
    "reset": "One saved reset was spent and the usage windows were reset.",
    "nothingToReset": "Your usage does not need a reset right now; nothing was spent.",
    "noCredit": (
        "The account had no saved reset to spend when the request arrived (it may have expired or been used "
        "elsewhere); nothing was spent."
    ),
    "alreadyRedeemed": (
        "This attempt had already been applied earlier (same idempotency key); no second reset was spent."
    ),
}


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """`rows` as lines of columns two spaces apart, each column as wide as its widest cell (the last unpadded)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, [*widths, 0], strict=True)).rstrip() for row in rows]


def credit_line(credit: Json, now: float) -> str:
    """`credit-alice-1  Full reset  expires in 7d · Dec 05`: one of an account's saved resets."""
    expires = credit.get("expiresAt")
    words = f"{credit.get('id')}" + (f"  {credit['title']}" if credit.get("title") else "")
    if expires is None:
        return words + "  does not expire"
    return words + f"  expires {until(expires, now, coarse=True)} · {local_date(expires, now)}"


def status_words(summary: Json) -> tuple[str, str]:
    status = str(summary.get("status"))
    return STATUS_TEXT.get(status, (status, ""))


def reason_words(reason: str | None, *, long: bool) -> str:
    """Why apply is not possible, in plain words (`long`: a clause; else two or three words)."""
    if reason is None:
        return "the server gave no reason" if long else "no"
    table = REASON_LONG if long else REASON_SHORT
    return table.get(str(reason), str(reason))


def windows(summary: Json) -> list[tuple[Json, str]]:
    """The summary's primary and secondary windows with their fallback names (those it has)."""
    limits = summary.get("rateLimits") or {}
    return [(w, name) for name in ("primary", "secondary") if isinstance(w := limits.get(name), dict)]


def window_name(window: Json | None, fallback: str) -> str:
    """`5h`, `weekly`, `daily`, or the window's length; `fallback` when it has none."""
    mins = window.get("windowDurationMins") if window is not None else None
    if mins is None:
        return fallback
    if mins == 7 * 24 * 60:
        return "weekly"
    if mins == 24 * 60:
        return "daily"
    return duration(mins * 60)


def exhausted_windows(summary: Json) -> bool:
    """Whether the summary shows a window used up (100 %, or upstream says a limit was reached)."""
    limits = summary.get("rateLimits")
    if not limits:
        return False
    if limits.get("rateLimitReachedType") is not None:
        return True
    return any(w["usedPercent"] >= 100 for w, _ in windows(summary))


def readiness(summary: Json) -> str | None:
    """`exhausted` (applying helps now), `available` (a credit, but nothing used up), or None (disabled).

    Newer servers send `resetAction.readiness`; for older ones it is worked out from the windows."""
    action = summary.get("resetAction") or {}
    sent = action.get("readiness")
    if sent is not None:
        return str(sent)
    if not action.get("enabled"):
        return None
    return EXHAUSTED if exhausted_windows(summary) else AVAILABLE


def saved_count(summary: Json) -> int | None:
    credits = summary.get("resetCredits")
    return credits.get("availableCount") if credits else None


def usage_words(summary: Json) -> str:
    """`5h 71 %, weekly 44 %`: what each window has used, for sentences."""
    if not summary.get("rateLimits"):
        return "usage unknown"
    parts = [f"{window_name(w, fallback)} {round(w['usedPercent'])} %" for w, fallback in windows(summary)]
    return ", ".join(parts) if parts else "no usage windows"


SIGN_IN_FIRST: Final = "signInFirst"
"""`apply_state` of an account that needs sign-in and has never signed in here (nothing to sign in "again")."""


def apply_state(summary: Json, *, never_signed_in: bool = False) -> str | None:
    """Where an apply on this account stands: `SIGN_IN_FIRST`, `pendingApply` (an earlier attempt's outcome is
    unknown), `exhausted` (ready: applying helps now), `available` (a credit, nothing used up), or why it is not
    possible (the `resetAction.disabledReason`, None when the server gave none)."""
    action = summary.get("resetAction") or {}
    reason = action.get("disabledReason")
    if never_signed_in and reason == "reauthRequired":
        return SIGN_IN_FIRST
    if summary.get("pendingApply") is not None:
        return "pendingApply"
    return readiness(summary) or reason


APPLY_WORD: Final[dict[str, tuple[str, str]]] = {
    SIGN_IN_FIRST: ("sign in first", "dim"),
    "pendingApply": ("unfinished (see below)", "yellow"),
    EXHAUSTED: ("ready", "green bold"),
    AVAILABLE: ("available", "cyan"),
}
"""`apply_state`s that are not refusals: the status table's words for them, and their colour."""


def apply_word(summary: Json, *, never_signed_in: bool = False) -> tuple[str, str]:
    """`(words, style)`: `ready`, or why not in two or three words."""
    state = apply_state(summary, never_signed_in=never_signed_in)
    return APPLY_WORD.get(state or "") or (reason_words(state, long=False), "dim")


def apply_possible(summary: Json, *, never_signed_in: bool = False) -> str:
    """One plain sentence: can an operator apply on this account now, and if not, why."""
    state = apply_state(summary, never_signed_in=never_signed_in)
    if state == SIGN_IN_FIRST:
        return "not possible: this account has not signed in yet"
    if state == "pendingApply":
        return "an earlier apply has an unknown outcome; applying again re-sends it and cannot spend twice"
    if state == EXHAUSTED:
        return "ready: a window is used up; applying spends one saved reset"
    if state == AVAILABLE:
        return f"available, but nothing is used up ({usage_words(summary)}): applying now spends a saved reset early"
    return "not possible: " + reason_words(state, long=True)


def next_step(summary: Json, *, simulated: bool = False, never_signed_in: bool = False) -> str | None:
    """What the operator can do about the account's problem, when the message does not say it already.

    `never_signed_in`: the account's Codex home has no auth.json at all (the caller looked)."""
    home = summary.get("codexHome")
    status = summary.get("status")
    account_id = summary.get("accountId")
    message = (summary.get("error") or {}).get("message") or ""
    if status == "reauthRequired":
        if never_signed_in and not simulated:
            if "codex login" in message:
                return None  # the server's message already says how (`Problem`): once is enough
            return (
                f"never signed in here: run `CODEX_HOME={home} codex login`, or try `codex-limits demo` "
                "to see the tool without an account"
            )
        if simulated:
            return "simulated: expired on purpose, nothing to fix"
        step = "" if "codex login" in message else f"sign in with `CODEX_HOME={home} codex login`, then "
        return step + f"check with `codex-limits refresh {account_id}`"
    if status == "unavailable":
        again = f"try again with `codex-limits refresh {account_id}`"
        if "sending request" in message or "connect" in message:  # the backend address could not be reached
            return f"check `chatgpt_base_url` in {home}/config.toml (if set) and the network, then {again}"
        return again
    return None


def never_signed_in(summaries: list[Json], *, simulated: bool) -> set[str]:
    """Ids of accounts needing sign-in whose Codex home has no auth.json at all (never signed in there)."""
    if simulated:
        return set()
    import os.path

    return {
        s["accountId"]
        for s in summaries
        if s.get("status") == "reauthRequired"
        and s.get("codexHome")
        and not os.path.exists(os.path.join(s["codexHome"], "auth.json"))
    }


# -- forecasts -------------------------------------------------------------------------------


def forecasts_by_window(response: Json | None) -> dict[str, dict[tuple[str, str], Json]]:
    """`accountPool/forecast`'s answer per account id, each window's forecast by (limit id, primary/secondary)."""
    if not response:
        return {}
    return {
        a["accountId"]: {(w["limitId"], w["window"]): w for w in a.get("windows") or []}
        for a in response.get("accounts") or []
        if isinstance(a, dict)
    }


def of_summary(forecasts: dict[str, dict[tuple[str, str], Json]], summary: Json) -> tuple[Json | None, Json | None]:
    """The forecasts of the summary's primary and secondary windows (None where there is none)."""
    limits = summary.get("rateLimits")
    if not limits:
        return None, None
    mine = forecasts.get(summary.get("accountId") or "", {})
    limit_id = limits.get("limitId") or MAIN_LIMIT
    return mine.get((limit_id, "primary")), mine.get((limit_id, "secondary"))


def forecast_words(forecast: Json | None, *, now: float) -> tuple[str, str] | None:
    """`(words, style)`: `12 %/h · runs out in 1h 10m` (before it resets), `12 %/h` (resets first),
    `not growing`, `too little history`; None for a window already used up (its bar says so) or without one."""
    if forecast is None or forecast.get("status") == "exhausted":
        return None
    status = forecast.get("status")
    if status == "tooLittleHistory":
        return TOO_LITTLE, "dim"
    if status == "notGrowing":
        return "not growing", "dim"
    rate = f"{forecast.get('burnRatePerHour') or 0.0:.3g} %/h"
    runs_out = forecast.get("runsOutAt")
    if forecast.get("runsOutBeforeReset") and runs_out is not None:
        left = runs_out - now
        when = f"runs out in {duration(left)}" if left >= 1 else "runs out now"
        return f"{rate} · {when}", "red" if left < 3600 else "yellow"
    return rate, "dim"


def history_note(response: Json | None, shown: list[Json | None]) -> str | None:
    """Said once under the table when a shown window has too little history to forecast."""
    if not response or not any(f is not None and f.get("status") == "tooLittleHistory" for f in shown):
        return None
    return (
        f"{TOO_LITTLE}: a forecast needs {response['minSamples']} reads over at least "
        f"{duration(response['minSpanSeconds'])} within {duration(response['lookbackSeconds'])}; each status is one "
        "read, and the service (`codex-limits service start`) reads in the background."
    )


# -- the pool's saved resets ------------------------------------------------------------------


def unlisted_words(entry: Json) -> str:
    """Why an account's saved resets are not all listed (an `unlisted` entry of
    `accountPool/resetCredits/list`), in plain words."""
    count = entry.get("availableCount")
    if count is None:
        return f"{entry['accountId']}: could not be read ({status_words(entry)[0]}); its saved resets are unknown"
    listed = entry.get("listedCount") or 0
    more = "more saved reset" if listed else "saved reset"
    return f"{entry['accountId']}: {plural(count - listed, more)} upstream counted but did not list"


def inventory_words(summaries: list[Json], *, now: float) -> list[Line]:
    """`status`'s footer: `3 saved resets across 2 accounts; next expires in 7d (alice,
    Mon 20:49) (codex-limits credits lists them)`, then the accounts whose saved resets are unknown or not all
    listed. Worked out from the summaries just read (as `pool.inventory` does), never a second read."""
    total = 0
    holders: set[str] = set()
    first: tuple[float, str] | None = None
    unlisted: list[str] = []
    for s in summaries:
        overview = s.get("resetCredits")
        listed = [c for c in (overview.get("credits") or [] if overview else []) if c.get("status") == "available"]
        for credit in listed:
            holders.add(s["accountId"])
            expires = credit.get("expiresAt")
            if expires is not None and (first is None or (expires, s["accountId"]) < first):
                first = (expires, s["accountId"])
        count = overview.get("availableCount") if overview else None
        if count:
            total += count
            holders.add(s["accountId"])
        if count is None or count > len(listed):
            entry = {"accountId": s["accountId"], "availableCount": count, "listedCount": len(listed)}
            unlisted.append(unlisted_words({**entry, "status": s.get("status")}))
    if total:
        line = f"{plural(total, 'saved reset')} across {plural(len(holders), 'account')}"
        if first is not None:
            line += f"; next expires {countdown(first[0], now)} ({first[1]}, {local_time(first[0], now)})"
        lines: list[Line] = [[(line, ""), (" (codex-limits credits lists them)", "dim")]]
    else:
        lines = [[("No saved resets in the pool" + (" that could be read" if unlisted else "") + ".", "")]]
    if unlisted:
        lines.append([("; ".join(unlisted), "yellow")])
    return lines


# -- under the status table -------------------------------------------------------------------


def caption(count: int, read_at: Sequence[float], *, now: float, waiting: int = 0) -> str:
    """`4 accounts · read 2m ago (14:30:05)`: how many, and when the oldest of them was read."""
    import time

    words = plural(count, "account")
    if waiting:
        words += f" · {waiting} still reading"
    if not read_at:
        return words
    oldest = min(read_at)
    return f"{words} · read {ago(oldest, now)} ({time.strftime('%H:%M:%S', time.localtime(oldest))})"


def notes(summaries: list[Json], *, simulated: bool = False, never_signed_in: set[str] | None = None) -> list[Line]:
    """The notes under the status table: unfinished applies, each account's problem and what to do about it,
    and what `available` means when one is."""
    unsigned = never_signed_in or set()
    lines: list[Line] = []
    for s in summaries:
        account_id = s.get("accountId")
        if s.get("pendingApply") is not None:
            lines.append(
                [
                    (f"{account_id}: ", "bold"),
                    ("an earlier apply has an unknown outcome; run ", ""),
                    (f"codex-limits apply {account_id}", "bold"),
                    (" to re-send it (same key, it cannot spend twice).", ""),
                ]
            )
        error = s.get("error")
        if error:
            line: Line = [(f"{account_id}: ", "bold"), (str(error.get("message")), "yellow")]
            step = next_step(s, simulated=simulated, never_signed_in=account_id in unsigned)
            if step:
                line.append((f" → {step}", ""))
            lines.append(line)
    if any(readiness(s) == AVAILABLE for s in summaries):
        lines.append(
            [
                (
                    "available: a saved reset could be spent, but no window is used up yet; "
                    "ready: a window is used up, so applying helps now.",
                    "dim",
                )
            ]
        )
    return lines
