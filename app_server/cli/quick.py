"""The operator commands on a running service, answered quickly: no rich, no pydantic, no anyio.

`status` (its plain view, `--json`, `--compact`, `--fail-above`), `history`, `refresh` and `credits` are a
request or two to the service and some printing: `service_session` asks, `plain` words the answer. Each
function here returns None when the command is not for this path (a terminal to draw a table on,
`--simulate`, `--watch`, a log level asked for, or no service running), and the caller goes on with the full
command, which spawns a server when there is none. The words, the JSON and the exit statuses are the full
command's. `apply` is not here: it waits on upstream and on a person, and the money path keeps one client.
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


def _eligible(args: argparse.Namespace, *, needs_pipe: bool) -> bool:
    if getattr(args, "simulate", False) or getattr(args, "log_level", None):
        return False
    if getattr(args, "verbose", 0) or getattr(args, "quiet", False):
        return False
    return not (needs_pipe and is_terminal(sys.stdout))


def _run(args: argparse.Namespace, body: Callable[[ServiceSession, Any], int]) -> int | None:
    """Open a session and run `body` on it; None when there is no service to ask."""
    out = safe_stream(sys.stdout)
    try:
        session = open_session()
        if session is None:
            return None
        try:
            return body(session, out)
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


def _fail(failure: CommandFailed, out: Any, *, as_json: bool) -> int:
    """The failure's line on stderr (and with `--json` its payload on stdout, when stdout still takes it)."""
    if failure.payload is not None and as_json:
        with contextlib.suppress(OSError):
            write_json(out, failure.payload)
    if failure.message:
        fail_line(failure.message)
    return int(failure.code)


def status(args: argparse.Namespace) -> int | None:
    if args.watch is not None or args.timeout is not None:
        return None
    if not _eligible(args, needs_pipe=not (args.json or args.compact)):
        return None

    def body(session: ServiceSession, out: Any) -> int:
        from app_server.cli.plain import status as view
        from app_server.cli.plain.words import never_signed_in

        params = {"maxAgeSeconds": COMPACT_MAX_AGE} if args.compact else None
        raw = [view.with_readiness(r) for r in session.request("accountPool/list", params)["accounts"]]
        ahead = None if args.compact else _forecasts(session)
        if args.json:
            write_json(out, view.with_forecasts(raw, ahead))
        elif args.compact:
            out.write(view.compact_line(raw) + "\n")
        else:
            unsigned = never_signed_in(raw, simulated=False)
            out.write(view.status_text(raw, now=time.time(), forecasts=ahead, never_signed_in=unsigned))
        out.flush()
        if args.fail_above is not None:
            over = view.above(raw, args.fail_above)
            if over:
                raise CommandFailed(Exit.CHECK_FAILED, f"above {args.fail_above:g} %: " + ", ".join(over))
        return int(Exit.OK)

    return _run(args, body)


def _forecasts(session: ServiceSession) -> dict[str, Any] | None:
    """Every account's forecasts, or None from a service that cannot say (the view goes without them)."""
    try:
        result: dict[str, Any] = session.request("accountPool/forecast")
    except CommandFailed:  # as `status.forecasts`: the table goes without them, whatever the reason
        return None
    return result


def refresh(args: argparse.Namespace) -> int | None:
    if not _eligible(args, needs_pipe=not args.json):
        return None

    def body(session: ServiceSession, out: Any) -> int:
        from app_server.cli.plain.account import account_text, refresh_failure
        from app_server.cli.plain.status import with_readiness
        from app_server.cli.plain.words import never_signed_in

        raw = session.request("accountPool/refresh", {"accountId": args.account})
        unsigned = bool(never_signed_in([raw], simulated=False))
        if args.json:
            write_json(out, with_readiness(raw))
        else:
            out.write(account_text(raw, now=time.time(), never_signed_in=unsigned))
            out.flush()
        failure = refresh_failure(raw, never_signed_in=unsigned)
        if failure is not None:
            raise CommandFailed(Exit.REFUSED if failure[0] else Exit.UPSTREAM, failure[1])
        return int(Exit.OK)

    return _run(args, body)


def history(args: argparse.Namespace) -> int | None:
    """The ledger's apply attempts (`history` without `--usage`)."""
    if not _eligible(args, needs_pipe=not args.json):
        return None

    def body(session: ServiceSession, out: Any) -> int:
        from app_server.cli.plain.history import history_text

        entries = session.request("accountPool/history", {"accountId": args.account, "limit": args.limit})["entries"]
        if args.json:
            write_json(out, entries)
        else:
            out.write(history_text(entries))
            out.flush()
        return int(Exit.OK)

    return _run(args, body)


def credits(args: argparse.Namespace) -> int | None:
    """The pool's saved resets (`accountPool/resetCredits/list`); it never applies."""
    if not _eligible(args, needs_pipe=not args.json):
        return None

    def body(session: ServiceSession, out: Any) -> int:
        from app_server.cli.plain.credits import credits_text

        try:
            inventory = session.request("accountPool/resetCredits/list")
        except CommandFailed as failure:
            raise too_old(failure, session.name) from None
        if args.json:
            write_json(out, inventory)
        else:
            out.write(credits_text(inventory, now=time.time()))
            out.flush()
        return int(Exit.OK)

    return _run(args, body)


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
