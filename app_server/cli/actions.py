"""What each command does once parsed: the `run` the parser sets for it (heavy modules load here, on first use)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app_server.cli import dashboard, service
from app_server.cli.exits import Exit

if TYPE_CHECKING:
    from app_server.cli.failures import Interrupt
    from app_server.cli.terminal import UI


def log_level(args: argparse.Namespace) -> str | None:
    """`--log-level`, or what `-v` / `-q` ask for; None: the default (WARNING, or $CODEX_LIMITS_LOG)."""
    level: str | None = getattr(args, "log_level", None)
    if level:
        return level.upper()
    verbose, quiet = getattr(args, "verbose", 0) or 0, getattr(args, "quiet", False)
    if quiet:
        return "ERROR"
    if verbose:
        return "DEBUG" if verbose > 1 else "INFO"
    return None


def _serve(args: argparse.Namespace) -> int:
    import gc

    gc.disable()  # start-up allocates only long-lived objects; serve_stdio freezes them and re-enables
    return service.serve(args, log_level(args))


def _schema(args: argparse.Namespace) -> int:
    from protocol import schema

    out = Path(args.out)
    if args.check:
        drift = schema.check(out)
        if drift:
            print(f"schemas in {out} are out of date: {', '.join(drift)}", file=sys.stderr)
            print(f"run: codex-limits schema --out {out}", file=sys.stderr)
            return Exit.CHECK_FAILED
        print(f"schemas in {out} are up to date")
        return Exit.OK
    written = schema.write(out)
    print(f"wrote {len(written)} schema files to {out}")
    return Exit.OK


def _setup(args: argparse.Namespace) -> UI:
    """The operator commands' terminal and logging: their own on stderr, and the spawned server's when a level
    was asked for (the `UI` carries that level to `connection.connect`)."""
    import logging

    from app_server.cli.terminal import UI

    level = log_level(args)
    if level:
        logging.basicConfig(
            stream=sys.stderr,
            level=getattr(logging, level, logging.WARNING),
            format="%(levelname)s %(name)s: %(message)s",
        )
    return UI(as_json=getattr(args, "json", False), log_level=level)


def _run_async(args: argparse.Namespace, make: Callable[[UI, Interrupt], Awaitable[Exit]]) -> int:
    from app_server.cli.failures import Interrupt, run

    ui = _setup(args)
    interrupt = Interrupt()
    return run(lambda: make(ui, interrupt), interrupt, ui)


def _status(args: argparse.Namespace) -> int:
    from app_server.cli import quick

    answered = quick.status(args)
    if answered is not None:
        return answered
    from app_server.cli import status

    def make(ui: UI, interrupt: Interrupt) -> Awaitable[Exit]:
        if args.watch is not None:
            interrupt.code, interrupt.message = Exit.OK, ""
        return status.status(
            ui,
            simulate=args.simulate,
            watch=args.watch,
            timeout=args.timeout,
            compact=args.compact,
            fail_above=args.fail_above,
        )

    return _run_async(args, make)


def _credits(args: argparse.Namespace) -> int:
    from app_server.cli import quick

    answered = quick.credits(args)
    if answered is not None:
        return answered
    from app_server.cli.credits import credits

    return _run_async(args, lambda ui, _: credits(ui, simulate=args.simulate))


def _apply(args: argparse.Namespace) -> int:
    from app_server.cli import apply

    return _run_async(
        args,
        lambda ui, interrupt: apply.apply(
            ui, interrupt, account=args.account, credit_id=args.credit, yes=args.yes, simulate=args.simulate
        ),
    )


def _refresh(args: argparse.Namespace) -> int:
    from app_server.cli import quick

    answered = quick.refresh(args)
    if answered is not None:
        return answered
    from app_server.cli import commands

    return _run_async(args, lambda ui, _: commands.refresh(ui, account=args.account, simulate=args.simulate))


def _history(args: argparse.Namespace) -> int:
    if args.usage or args.csv or args.since is not None:
        return _usage_history(args)
    from app_server.cli import quick

    answered = quick.history(args)
    if answered is not None:
        return answered
    from app_server.cli import commands

    return _run_async(
        args, lambda ui, _: commands.history(ui, account=args.account, limit=args.limit, simulate=args.simulate)
    )


def _usage_history(args: argparse.Namespace) -> int:
    from app_server.cli.exits import CommandFailed
    from app_server.cli.failures import fail
    from app_server.cli.usage import usage_history

    if args.account is None:
        return fail(CommandFailed(Exit.USAGE, "history --usage needs an ACCOUNT"))
    return _run_async(
        args,
        lambda ui, _: usage_history(
            ui, account=args.account, since=args.since, limit=args.limit, as_csv=args.csv, simulate=args.simulate
        ),
    )


def _watch(args: argparse.Namespace) -> int:
    from app_server.cli.watch import watch

    def make(ui: UI, interrupt: Interrupt) -> Awaitable[Exit]:
        interrupt.code, interrupt.message = Exit.OK, ""
        return watch(
            ui,
            simulate=args.simulate,
            commands=args.exec or [],
            exec_timeout=args.exec_timeout,
            refresh_interval=args.refresh_interval,
        )

    return _run_async(args, make)


def _demo(args: argparse.Namespace) -> int:
    from app_server.cli.demo import demo

    if args.dashboard:
        return dashboard.run(args, log_level(args), simulate=True)

    return _run_async(args, demo)


def _accounts(args: argparse.Namespace) -> int:
    from app_server.cli import accounts
    from app_server.cli.failures import run_local

    ui = _setup(args)
    if args.action == "add":
        return run_local(
            lambda: accounts.accounts_add(ui, account=args.account, codex_home=args.codex_home, label=args.label), ui
        )
    if args.action == "remove":
        return run_local(lambda: accounts.accounts_remove(ui, account=args.account), ui)
    return run_local(lambda: accounts.accounts_list(ui, simulate=args.simulate), ui)


def _completion(args: argparse.Namespace) -> int:
    from argcomplete import shell_integration

    sys.stdout.write(shell_integration.shellcode(["codex-limits"], shell=args.shell))
    return Exit.OK
