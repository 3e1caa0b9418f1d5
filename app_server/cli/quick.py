"""The operator commands on a running service, answered quickly: no rich, no pydantic, no anyio.

`status` (its plain view, `--json`, `--compact`, `--fail-above`), `history`, `refresh` and `credits` are a
request or two to the service and some printing: `service_session` asks, `plain` words the answer. Each
function here returns None when the command is not for this path (a terminal to draw a table on,
`--simulate`, `--watch`, a log level asked for, or no service running), and the caller goes on with the full
command, which spawns a server when there is none. The words, the JSON and the exit statuses are the full
command's: the full commands print through the `show_*` functions here too, whenever they do not draw for a
terminal. `apply` is not here: it waits on upstream and on a person, and the money path keeps one client.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from app_server.cli.exits import CommandFailed, Exit, internal_error
from app_server.cli.service_session import ServiceSession, open_session
from app_server.cli.streams import fail_line, is_terminal, quiet_stdout, safe_stream, write_json

COMPACT_MAX_AGE: Final = 60
"""`--compact` accepts summaries this many seconds old (a running service answers from its cache)."""


def _run(args: argparse.Namespace, body: Callable[[ServiceSession, Any], None], *, needs_pipe: bool) -> int | None:
    """Open a session and run `body` on it; None when the command is not for this path (`needs_pipe`: only
    when stdout is not a terminal) or there is no service to ask."""
    if getattr(args, "simulate", False) or getattr(args, "log_level", None):
        return None
    if getattr(args, "verbose", 0) or getattr(args, "quiet", False):
        return None
    if needs_pipe and is_terminal(sys.stdout):
        return None
    out = safe_stream(sys.stdout)
    try:
        session = open_session()
        if session is None:
            return None
        try:
            body(session, out)
        finally:
            session.close()
    except CommandFailed as failure:
        return _fail(failure, out, as_json=getattr(args, "json", False))
    except BrokenPipeError:
        quiet_stdout()
        return int(Exit.OUTPUT_CLOSED)
    except KeyboardInterrupt:
        fail_line("interrupted")
        return int(Exit.INTERRUPTED)
    except Exception as exc:  # as `failures.run` says it: one line, exit 5, never a traceback
        return _fail(internal_error(exc), out, as_json=False)
    return int(Exit.OK)


def _fail(failure: CommandFailed, out: Any, *, as_json: bool) -> int:
    """The failure's line on stderr (and with `--json` its payload on stdout, when stdout still takes it)."""
    if failure.payload is not None and as_json:
        with contextlib.suppress(OSError):
            write_json(out, failure.payload)
    if failure.message:
        fail_line(failure.message)
    return int(failure.code)


# -- the commands ----------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int | None:
    if args.watch is not None or args.timeout is not None:
        return None

    def body(session: ServiceSession, out: Any) -> None:
        from app_server.cli.plain.status import with_readiness

        params = {"maxAgeSeconds": COMPACT_MAX_AGE} if args.compact else None
        raw = [with_readiness(r) for r in session.request("accountPool/list", params)["accounts"]]
        ahead = None if args.compact else _forecasts(session)
        show_status(out, raw, ahead, as_json=args.json, compact=args.compact, simulated=False)
        gate(raw, args.fail_above)

    return _run(args, body, needs_pipe=not (args.json or args.compact))


def _forecasts(session: ServiceSession) -> dict[str, Any] | None:
    """Every account's forecasts, or None from a service that cannot say (the view goes without them)."""
    try:
        result: dict[str, Any] = session.request("accountPool/forecast")
    except CommandFailed:  # as `status.forecasts`: the table goes without them, whatever the reason
        return None
    return result


def refresh(args: argparse.Namespace) -> int | None:
    def body(session: ServiceSession, out: Any) -> None:
        raw = session.request("accountPool/refresh", {"accountId": args.account})
        show_refresh(out, raw, as_json=args.json, simulated=False)

    return _run(args, body, needs_pipe=not args.json)


def history(args: argparse.Namespace) -> int | None:
    """The ledger's apply attempts (`history` without `--usage`)."""

    def body(session: ServiceSession, out: Any) -> None:
        entries = session.request("accountPool/history", {"accountId": args.account, "limit": args.limit})["entries"]
        show_history(out, entries, as_json=args.json)

    return _run(args, body, needs_pipe=not args.json)


def credits(args: argparse.Namespace) -> int | None:
    """The pool's saved resets (`accountPool/resetCredits/list`); it never applies."""

    def body(session: ServiceSession, out: Any) -> None:
        try:
            inventory = session.request("accountPool/resetCredits/list")
        except CommandFailed as failure:
            raise too_old(failure, session.name) from None
        show_credits(out, inventory, as_json=args.json)

    return _run(args, body, needs_pipe=not args.json)


def too_old(failure: CommandFailed, name: str) -> CommandFailed:
    """`failure`, or when the server does not know `accountPool/resetCredits/list` (it predates it), one that
    says to restart it."""
    error = (failure.payload or {}).get("error") or {}
    message = str(error.get("message", ""))
    if "unknown variant" in message and "accountPool/resetCredits/list" in message:
        return CommandFailed(
            Exit.SERVER,
            f"{name} is older than this command and cannot list saved resets; "
            "restart it (codex-limits service stop, then service start)",
        )
    return failure


# -- what a pipe, a status bar or a script gets (the full commands print these too) ---------------


def show_status(
    out: Any, raw: list[dict[str, Any]], ahead: dict[str, Any] | None, *, as_json: bool, compact: bool, simulated: bool
) -> None:
    """`status`: the JSON (each summary with its forecasts), the one line, or the plain view; `raw` as
    `plain.status.with_readiness` gives each summary."""
    from app_server.cli.plain import status as view
    from app_server.cli.plain.words import never_signed_in

    if as_json:
        write_json(out, view.with_forecasts(raw, ahead))
        return
    if compact:
        out.write(view.compact_line(raw) + "\n")
    else:
        unsigned = never_signed_in(raw, simulated=simulated)
        out.write(
            view.status_text(raw, now=time.time(), forecasts=ahead, simulated=simulated, never_signed_in=unsigned)
        )
    out.flush()


def gate(raw: list[dict[str, Any]], limit: float | None) -> None:
    """`status --fail-above`: `CommandFailed(CHECK_FAILED)` naming every window above `limit` percent."""
    from app_server.cli.plain.status import above

    over = [] if limit is None else above(raw, limit)
    if over:
        raise CommandFailed(Exit.CHECK_FAILED, f"above {limit:g} %: " + ", ".join(over))


def show_refresh(out: Any, raw: dict[str, Any], *, as_json: bool, simulated: bool) -> None:
    """`refresh`: the JSON or the plain view of the account, then its failure when the read failed."""
    from app_server.cli.plain.account import account_text
    from app_server.cli.plain.status import with_readiness
    from app_server.cli.plain.words import never_signed_in

    unsigned = bool(never_signed_in([raw], simulated=simulated))
    if as_json:
        write_json(out, with_readiness(raw))
    else:
        out.write(account_text(raw, now=time.time(), simulated=simulated, never_signed_in=unsigned))
        out.flush()
    refresh_checked(raw, simulated=simulated, never_signed_in=unsigned)


def refresh_checked(raw: dict[str, Any], *, simulated: bool, never_signed_in: bool) -> None:
    """A refresh whose read failed is `CommandFailed`: exit 3 when nothing could even be tried (sign-in needed,
    an API-key account), like a refusal; else 4."""
    from app_server.cli.plain.account import refresh_failure

    failure = refresh_failure(raw, simulated=simulated, never_signed_in=never_signed_in)
    if failure is not None:
        raise CommandFailed(Exit.REFUSED if failure[0] else Exit.UPSTREAM, failure[1])


def show_history(out: Any, entries: list[dict[str, Any]], *, as_json: bool) -> None:
    from app_server.cli.plain.history import history_text

    if as_json:
        write_json(out, entries)
        return
    out.write(history_text(entries))
    out.flush()


def show_credits(out: Any, inventory: dict[str, Any], *, as_json: bool) -> None:
    from app_server.cli.plain.credits import credits_text

    if as_json:
        write_json(out, inventory)
        return
    out.write(credits_text(inventory, now=time.time()))
    out.flush()
