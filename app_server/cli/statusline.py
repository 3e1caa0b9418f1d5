"""`codex-limits statusline`: one line for shell prompts, tmux, editors and status bars.

Reads the snapshot the running service keeps (`app_server.service.snapshot`): no connection, no upstream
call, nothing spent. Without a service, or with reads older than `--max-age`, the line says so. Standard
library only and only its cheap parts, routed before the CLI's parser (see `app_server.cli.launch`): a
prompt runs this on every keystroke of Enter, so it must cost about what the interpreter costs.
"""

from __future__ import annotations

import json
import os
import sys
import time

from app_server import env as environment
from app_server.service import snapshot

TYPE_CHECKING = False  # `typing` costs the status line milliseconds at start-up
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

DEFAULT_FORMAT: Final = "{alert}{account}( {primary}%)(/{secondary}%)( ⟳{resets_in})( ★{saved})( {ready})( {problem})"
DEFAULT_MAX_AGE: Final = 900.0
DEADLINE: Final = 1.0
"""Seconds after which the status line gives up and says so, whatever it was waiting for."""
SEPARATOR: Final = " | "
NO_SERVICE: Final = "codex-limits: no service"
NO_READS: Final = "codex-limits: no reads yet"
TIMED_OUT: Final = "codex-limits: timed out"

PLACEHOLDERS: Final = {
    "account": "the account id (from accounts.toml)",
    "label": "the account's display name",
    "status": "active, rateLimited, reauthRequired, unsupported or unavailable",
    "primary": "percent used of the short (5h) window",
    "secondary": "percent used of the long (weekly) window",
    "primary_resets_in": "time until the short window resets, e.g. 2h5m",
    "secondary_resets_in": "time until the long window resets, e.g. 3d4h",
    "resets_in": "time until the most-used window resets (what you wait for when blocked)",
    "saved": "saved resets available (empty when none)",
    "ready": "`ready` when a window is used up and a saved reset can be applied now",
    "alert": "`!` while an alert holds (usage above a threshold, a saved reset expiring), `!!` when critical",
    "problem": "sign-in, unsupported, unavailable or pending (an apply of unknown outcome); empty when fine",
    "age": "how old the read is, e.g. 4m",
    "stale": "the read's age when it is older than --max-age; empty otherwise",
}

USAGE: Final = (
    "usage: codex-limits statusline [--format TEMPLATE] [--account ID] [--json] [--color WHEN] [--max-age SECONDS]"
    " [--separator TEXT]"
)


def _help() -> str:
    names = "\n".join(f"  {{{name}}}{' ' * (22 - len(name))}{text}" for name, text in PLACEHOLDERS.items())
    return f"""{USAGE}

One line for shell prompts, tmux, editors and status bars, from the snapshot the running service keeps
(`codex-limits service start`; reads come from its background refresh or any client's). No connection, no
upstream call, never spends anything; gives up after {DEADLINE:g} s. Without a service the line is
`{NO_SERVICE}`; reads older than --max-age are marked `stale` in the line. Exit status 0 whenever a line
was printed, 2 for bad arguments.

options:
  -f, --format TEMPLATE  how each account is shown (default: {DEFAULT_FORMAT})
  --account ID           only this account (repeatable; default: every account the service has read)
  --json                 the same as JSON: service state, the line, and each account's values
  --color WHEN           auto (default: only on a terminal, unless NO_COLOR is set), always or never
  --max-age SECONDS      reads older than this are stale (default {DEFAULT_MAX_AGE:g})
  --separator TEXT       between accounts (default "{SEPARATOR}")

template: text with {{placeholder}}s; a group ( ... ) is shown only when every placeholder in it has a
value. \\( \\) \\{{ \\}} \\\\ are literal characters. Placeholders:
{names}

examples:
  PS1='$(codex-limits statusline --account work) \\$ '
  set -g status-right '#(codex-limits statusline -f "{{account}} {{primary}}%%")'   # tmux, every status-interval
"""


class UsageError(Exception):
    """A template or flag the status line cannot use; the text says what is wrong."""


class TimedOut(Exception):
    """The service did not answer within the status line's deadline."""


# -- the template ------------------------------------------------------------------------------


def parse(template: str) -> list[tuple[str, Any]]:
    """Literal text, `("field", name)` and `("group", [parts])`; raises UsageError naming what is wrong."""
    top: list[tuple[str, Any]] = []
    current = top
    text: list[str] = []
    i = 0

    def flush() -> None:
        if text:
            current.append(("text", "".join(text)))
            text.clear()

    while i < len(template):
        ch = template[i]
        if ch == "\\" and i + 1 < len(template) and template[i + 1] in "(){}\\":
            text.append(template[i + 1])
            i += 2
            continue
        if ch == "{":
            end = template.find("}", i)
            if end < 0:
                raise UsageError(f"unclosed {{ at column {i + 1} of the template")
            name = template[i + 1 : end]
            if name not in PLACEHOLDERS:
                raise UsageError(f"unknown placeholder {{{name}}}; known: {', '.join(PLACEHOLDERS)}")
            flush()
            current.append(("field", name))
            i = end + 1
            continue
        if ch == "}":
            raise UsageError(f"unmatched }} at column {i + 1} of the template (write \\}} for a literal one)")
        if ch == "(":
            if current is not top:
                raise UsageError(f"groups do not nest: ( at column {i + 1} of the template")
            flush()
            current = []
            top.append(("group", current))
            i += 1
            continue
        if ch == ")":
            if current is top:
                raise UsageError(f"unmatched ) at column {i + 1} of the template (write \\) for a literal one)")
            flush()
            current = top
            i += 1
            continue
        text.append(ch)
        i += 1
    if current is not top:
        raise UsageError("unclosed ( in the template")
    flush()
    return top


def render(parts: Sequence[tuple[str, Any]], values: dict[str, str], colours: dict[str, str] | None) -> str:
    out: list[str] = []
    for kind, item in parts:
        if kind == "text":
            out.append(item)
        elif kind == "field":
            out.append(_paint(values[item], colours.get(item) if colours else None))
        elif all(values[name] for k, name in item if k == "field"):
            out.append(render(item, values, colours))
    return "".join(out)


def _paint(value: str, code: str | None) -> str:
    return f"\x1b[{code}m{value}\x1b[0m" if code and value else value


# -- one account's values ----------------------------------------------------------------------


def duration(seconds: float) -> str:
    """`3d4h`, `2h5m`, `45m`, `<1m`: short enough for a prompt."""
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else "<1m"


_PROBLEMS: Final = {"reauthRequired": "sign-in", "unsupported": "unsupported", "unavailable": "unavailable"}


def account_values(summary: dict[str, Any], attention: str | None, now: float, max_age: float) -> dict[str, Any]:
    """The placeholders of one account (typed: numbers stay numbers, absent values are None)."""
    limits = summary.get("rateLimits") or {}
    windows = {slot: limits.get(slot) for slot in ("primary", "secondary")}
    used = {slot: w.get("usedPercent") if w else None for slot, w in windows.items()}
    resets_at = {slot: w.get("resetsAt") if w else None for slot, w in windows.items()}

    def resets_in(at: Any) -> str | None:
        return duration(at - now) if isinstance(at, int) and at > now else None

    # What you wait for: the most-used window (on a tie, the one that resets first).
    known = [(-percent, resets_at[slot] or 0, slot) for slot, percent in used.items() if isinstance(percent, int)]
    worst = min(known)[2] if known else None
    credits = summary.get("resetCredits") or {}
    action = summary.get("resetAction") or {}
    status = summary.get("status")
    problem = _PROBLEMS.get(status or "")
    if problem is None and summary.get("pendingApply") is not None:
        problem = "pending"
    refreshed = summary.get("refreshedAt")
    age = max(0.0, now - refreshed) if isinstance(refreshed, (int, float)) else None
    stale = age is None or age > max_age
    return {
        "account": summary.get("accountId"),
        "label": summary.get("label"),
        "status": status,
        "primary": used["primary"],
        "secondary": used["secondary"],
        "primary_resets_in": resets_in(resets_at["primary"]),
        "secondary_resets_in": resets_in(resets_at["secondary"]),
        "resets_in": resets_in(resets_at[worst]) if worst else None,
        "saved": credits.get("availableCount"),
        "ready": "ready" if action.get("enabled") and action.get("readiness") == "exhausted" else None,
        "alert": {"warning": "!", "critical": "!!"}.get(attention or ""),
        "problem": problem,
        "age": duration(age) if age is not None else None,
        "stale": (duration(age) if age is not None else "?") if stale else None,
        # for --json only
        "primary_resets_at": resets_at["primary"],
        "secondary_resets_at": resets_at["secondary"],
        "refreshed_at": refreshed,
        "attention": attention,
    }


def _level(percent: Any) -> str | None:
    if not isinstance(percent, int):
        return None
    return "31" if percent >= 100 else "33" if percent >= 80 else "32"


def _colours(values: dict[str, Any]) -> dict[str, str]:
    colours = {"ready": "1;32", "problem": "33", "stale": "2", "alert": "31" if values["alert"] == "!!" else "33"}
    for slot in ("primary", "secondary"):
        level = _level(values[slot])
        if level:
            colours[slot] = level
    return colours


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# -- the command ------------------------------------------------------------------------------


def _options(argv: Sequence[str]) -> dict[str, Any]:
    # Parsed by hand: argparse alone costs the status line about a tenth of the interpreter's start-up.
    options: dict[str, Any] = {
        "format": DEFAULT_FORMAT,
        "accounts": [],
        "json": False,
        "color": "auto",
        "max_age": DEFAULT_MAX_AGE,
        "separator": SEPARATOR,
        "help": False,
    }
    takes_value = {"-f": "format", "--format": "format", "--account": "accounts", "--color": "color"}
    takes_value |= {"--max-age": "max_age", "--separator": "separator"}
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in ("-h", "--help"):
            options["help"] = True
        elif name == "--json" and not eq:
            options["json"] = True
        elif name in takes_value:
            if not eq:
                if not args:
                    raise UsageError(f"{name} needs a value")
                inline = args.pop(0)
            key = takes_value[name]
            if key == "accounts":
                options["accounts"].append(inline)
            elif key == "max_age":
                try:
                    options["max_age"] = float(inline)
                except ValueError:
                    raise UsageError(f"--max-age: not a number of seconds: {inline!r}") from None
                if not options["max_age"] > 0:
                    raise UsageError("--max-age must be more than 0 seconds")
            elif key == "color":
                if inline not in ("auto", "always", "never"):
                    raise UsageError(f"--color: {inline!r} is not one of auto, always, never")
                options["color"] = inline
            else:
                options[key] = inline
        else:
            raise UsageError(f"unrecognized argument: {arg}")
    return options


def _use_colour(when: str) -> bool:
    if when != "auto":
        return when == "always"
    if environment.no_colour():
        return False
    try:
        return os.isatty(sys.stdout.fileno())
    except (OSError, ValueError):
        return False


def build(options: dict[str, Any], home: str, now: float) -> dict[str, Any]:
    """The line and what it is made of, as `--json` prints it."""
    template = parse(options["format"])
    colour = _use_colour(options["color"]) and not options["json"]
    result: dict[str, Any] = {"service": "stopped", "snapshot": None, "writtenAt": None, "accounts": []}
    if not snapshot.service_running(home):
        result["line"] = _paint(NO_SERVICE, "2" if colour else None)
        return result
    result["service"] = "running"
    try:
        document = snapshot.read(home)
    except ValueError as exc:
        result["snapshot"] = "unreadable"
        result["line"] = f"codex-limits: {exc}"
        return result
    if document is None or not document["accounts"]:
        result["snapshot"] = "missing"
        result["line"] = _paint(NO_READS, "2" if colour else None)
        return result
    result["snapshot"] = "ok"
    result["writtenAt"] = document.get("writtenAt")
    attention = document.get("attention") or {}
    summaries = [s for s in document["accounts"] if type(s) is dict]
    wanted = options["accounts"]
    if wanted:
        by_id = {s.get("accountId"): s for s in summaries}
        missing = [a for a in wanted if a not in by_id]
        if missing:
            result["line"] = f"codex-limits: {', '.join(missing)} not read by the service"
            return result
        summaries = [by_id[a] for a in wanted]
    segments = []
    uses_stale = any(item == "stale" for kind, item in _fields(template))
    for summary in summaries:
        values = account_values(summary, attention.get(summary.get("accountId")), now, options["max_age"])
        result["accounts"].append(values)
        strings = {name: _text(values[name]) for name in PLACEHOLDERS}
        if values["saved"] == 0:
            strings["saved"] = ""
        segment = render(template, strings, _colours(values) if colour else None)
        if values["stale"] is not None and not uses_stale:  # a custom template still says so
            segment += _paint(f" (stale {values['stale']})", "2" if colour else None)
        segments.append(segment)
    result["line"] = options["separator"].join(segments)
    return result


def _fields(parts: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    found = []
    for kind, item in parts:
        if kind == "group":
            found.extend(_fields(item))
        elif kind == "field":
            found.append((kind, item))
    return found


def main(argv: Sequence[str]) -> int:
    """Print the line (or `--json`); 0 whenever a line was printed, 2 for bad arguments."""
    try:
        options = _options(argv)
    except UsageError as exc:
        sys.stderr.write(f"{USAGE}\ncodex-limits statusline: error: {exc}\n")
        return 2
    if options["help"]:
        sys.stdout.write(_help())
        return 0
    import signal

    def give_up(signum: int, frame: object) -> None:
        raise TimedOut

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE)  # a hung file system must not hang the prompt
    home = snapshot.data_home()
    try:
        result = build(options, home, time.time())
    except (AttributeError, TypeError, KeyError) as exc:  # valid JSON of the wrong shape: say so, no traceback
        line = f"codex-limits: {snapshot.path(home)} is not a format-{snapshot.FORMAT} snapshot ({exc})"
        result = {"service": "running", "snapshot": "unreadable", "writtenAt": None, "accounts": [], "line": line}
    except UsageError as exc:
        sys.stderr.write(f"{USAGE}\ncodex-limits statusline: error: {exc}\n")
        return 2
    except TimedOut:
        result = {"service": "unknown", "snapshot": None, "writtenAt": None, "accounts": [], "line": TIMED_OUT}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        if options["json"]:
            sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(result["line"] + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): say nothing more, not even at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0
