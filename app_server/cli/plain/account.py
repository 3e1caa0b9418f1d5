"""One account as plain text (`refresh` on a pipe): its windows, saved resets one by one, whether apply would
help, and its problem with the next step."""

from __future__ import annotations

from app_server.cli.plain.times import local_time, until
from app_server.cli.plain.words import (
    Json,
    apply_possible,
    credit_line,
    next_step,
    status_words,
    window_name,
    windows,
)


def account_text(summary: Json, *, now: float, simulated: bool = False, never_signed_in: bool = False) -> str:
    ident = [summary.get("accountId"), summary.get("planType"), summary.get("email")]
    lines = [("Account", f"{summary.get('label')}  " + " · ".join(str(x) for x in ident if x))]
    lines.append(("Status", status_words(summary)[0]))
    for window, fallback in windows(summary):
        line = f"{round(window['usedPercent'])}%"
        resets = window.get("resetsAt")
        if resets is not None:
            line += f"  resets {until(resets, now)} · {local_time(resets, now)}"
        lines.append((f"{window_name(window, fallback).capitalize()} limit", line))
    if not summary.get("rateLimits"):
        lines.append(("Usage", "not available"))
    overview = summary.get("resetCredits")
    if overview is None:
        lines.append(("Saved resets", "unknown"))
    else:
        lines.append(("Saved resets", str(overview.get("availableCount"))))
        for credit in overview.get("credits") or []:
            if credit.get("status") == "available":
                lines.append(("", credit_line(credit, now)))
    lines.append(("Apply", apply_possible(summary, never_signed_in=never_signed_in)))
    error = summary.get("error")
    if error:
        lines.append(("Problem", str(error.get("message"))))
        step = next_step(summary, simulated=simulated, never_signed_in=never_signed_in)
        if step:
            lines.append(("Next", step))
    width = max(len(label) for label, _ in lines)
    return "".join(f"{label:<{width}}  {value}".rstrip() + "\n" for label, value in lines)


def refresh_failure(
    summary: Json, *, simulated: bool = False, never_signed_in: bool = False
) -> tuple[bool, str] | None:
    """For a refresh whose read failed: whether nothing could even be tried (sign-in needed, an API-key account:
    exit 3, like a refusal; else 4), and the one line to say; None when the read worked."""
    error = summary.get("error")
    if not error:
        return None
    nothing_done = summary.get("status") in ("reauthRequired", "unsupported")
    step = next_step(summary, simulated=simulated, never_signed_in=never_signed_in)
    return nothing_done, f"{summary.get('accountId')}: {error.get('message')}" + (f"; {step}" if step else "")
