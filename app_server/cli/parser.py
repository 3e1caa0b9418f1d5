"""The `codex-limits` command line: every command's arguments, checked as they are parsed.

Parsing only: each command's parser sets `run` to its function in `actions`, so `--help` stays fast (rich
and anyio load on first use). Shell completion comes from argcomplete (`codex-limits completion SHELL`).
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any, NoReturn

from app_server.cli import dashboard, service
from app_server.cli.actions import (
    _accounts,
    _apply,
    _completion,
    _credits,
    _demo,
    _history,
    _refresh,
    _schema,
    _serve,
    _status,
    _watch,
    log_level,
)
from app_server.cli.exits import EXIT_MEANING

DESCRIPTION = "The `codex-limits` command: the app-server (serve), its schemas, and the operator commands."
MIN_WATCH = 5.0
"""Shortest `status --watch` interval: every tick reads every account upstream."""

_EPILOG = "exit statuses:\n" + "\n".join(
    textwrap.fill(meaning, width=79, initial_indent=f"  {int(code):<4} ", subsequent_indent=" " * 7)
    for code, meaning in EXIT_MEANING.items()
)


LEVELS = ("debug", "info", "warning", "error", "critical")


def _command(text: str) -> list[str]:
    from app_server.cli.watch import parse_command

    try:
        return parse_command(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> int:
    from app_server.cli.usage import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _watch_seconds(text: str) -> float:
    value = _seconds(text)
    if value < MIN_WATCH:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_WATCH:g} seconds (each tick reads every account)")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse's parser that suggests the nearest command for a mistyped one (`stauts`: did you mean `status`?).

    Every (sub)command's parser is one (argparse makes subparsers of the parent's class) and records itself as
    the `parser` default, so the innermost command's parser is `args.parser` after parsing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(parser=self)

    def error(self, message: str) -> NoReturn:
        import re

        mistyped = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if mistyped:
            import difflib

            choices = re.findall(r"'([^']*)'", mistyped.group(2))
            near = difflib.get_close_matches(mistyped.group(1), choices, n=1)
            if near:
                message += f"; did you mean '{near[0]}'?"
        super().error(message)


def _common() -> argparse.ArgumentParser:
    """Options every command takes (a parent parser, so they work after the command name)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=LEVELS,
        default=None,
        help="stderr log level, also the spawned server's (default warning, or $CODEX_LIMITS_LOG)",
    )
    group.add_argument("-v", "--verbose", action="count", default=0, help="log more: -v info, -vv debug")
    group.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    return common


def build_parser() -> argparse.ArgumentParser:
    from app_server import __version__

    common = _common()
    parser: argparse.ArgumentParser = _Parser(
        prog="codex-limits",
        description=DESCRIPTION,
        epilog=_EPILOG + "\n\nStart with `codex-limits demo` (no account needed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"codex-limits {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description or summary, parents=[common])

    def simulate_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--simulate",
            action="store_true",
            help="use a simulated upstream with four made-up accounts (no account needed; nothing is kept)",
        )

    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout (for scripts)")

    serve = command("serve", "run the app-server on stdin/stdout (JSON-RPC, one message per line)")
    simulate_flag(serve)
    service.add_serve_flags(serve)
    serve.set_defaults(run=_serve)

    schema = command("schema", "export the JSON Schemas (upstream layout)")
    schema.add_argument("--out", required=True, help="directory to write, or to compare with --check")
    schema.add_argument("--check", action="store_true", help="exit 1 if the files in --out differ from the models")
    schema.set_defaults(run=_schema)

    status = command(
        "status",
        "every account: usage windows, saved resets, whether apply would help now",
        description="Every account in the pool: usage windows, saved resets, and whether applying one would help "
        "now (ready: a window is used up) or only could (available: nothing is used up yet). On a terminal, "
        "rows appear as each account's read finishes.",
    )
    json_flag(status, "the account summaries (the `accounts` array)")
    status.add_argument(
        "--watch",
        type=_watch_seconds,
        metavar="SECONDS",
        help=f"re-read every SECONDS (at least {MIN_WATCH:g}) until Ctrl-C, waiting longer after errors; "
        "not on a terminal: one line (with --json one array) per read",
    )
    status.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop waiting for accounts that have not answered after SECONDS; they show as unavailable",
    )
    status.add_argument(
        "--compact",
        action="store_true",
        help="one short line for status bars (accepts reads up to a minute old from a running service)",
    )
    status.add_argument(
        "--fail-above",
        type=_percent,
        metavar="PERCENT",
        help="exit 1 when any account's window is above PERCENT used (a quota gate for scripts)",
    )
    simulate_flag(status)
    status.set_defaults(run=_status)

    credits = command(
        "credits",
        "every saved reset of every account, earliest expiry first (lists only, never applies)",
        description="Every available saved reset (reset credit) of every account in the pool, the one expiring "
        "first at the top: its exact expiry and a countdown, the account it belongs to, and its id (for "
        "`apply ACCOUNT --credit ID`). Accounts whose saved resets could not all be listed are named below. "
        "Nothing is spent.",
    )
    json_flag(credits, "the `accountPool/resetCredits/list` result")
    simulate_flag(credits)
    credits.set_defaults(run=_credits)

    apply = command(
        "apply",
        "spend one saved reset on ACCOUNT (asks first)",
        description="Show ACCOUNT and the saved reset it would spend, warn when nothing is used up yet, ask for "
        "confirmation, then spend exactly one saved rate-limit reset on it. An earlier attempt whose outcome is "
        "unknown is re-sent with its own key instead of starting a new one.",
    )
    apply.add_argument("account", metavar="ACCOUNT", help="account id (see `codex-limits status`)")
    apply.add_argument("--credit", metavar="ID", help="the saved reset to spend (default: the one expiring first)")
    apply.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    json_flag(apply, "the apply response (or the error object of a refusal)")
    simulate_flag(apply)
    apply.set_defaults(run=_apply)

    refresh = command("refresh", "read one account's usage and saved resets now")
    refresh.add_argument("account", metavar="ACCOUNT", help="account id (see `codex-limits status`)")
    json_flag(refresh, "the account summary")
    simulate_flag(refresh)
    refresh.set_defaults(run=_refresh)

    history = command("history", "apply attempts recorded in the ledger, newest first")
    history.add_argument("account", metavar="ACCOUNT", nargs="?", help="only this account (default: all)")
    history.add_argument("--limit", type=_positive, metavar="N", help="at most N entries (default 100)")
    json_flag(history, "the ledger entries")
    history.add_argument("--usage", action="store_true", help="ACCOUNT's usage windows over time, burn rate, run-out")
    history.add_argument("--since", type=_duration, metavar="DURATION", help="with --usage: only the last 24h, 7d, ...")
    history.add_argument("--csv", action="store_true", help="with --usage: one CSV row per sample on stdout")
    simulate_flag(history)
    history.set_defaults(run=_history)

    watch = command(
        "watch",
        "show alerts as they arrive (resets, usage thresholds, expiring saved resets, sign-in needed)",
        "Print each alert of the service as it arrives; with --exec, also run a command per alert "
        "with the alert as JSON on its stdin (no shell: write `sh -c '...'` for one). A slow or failing command "
        "is logged and never holds up later alerts.",
    )
    json_flag(watch, "each alert (one object per line)")
    watch.add_argument(
        "--exec",
        type=_command,
        action="append",
        metavar="COMMAND",
        help="run COMMAND for each alert, e.g. --exec 'notify-send codex-limits' (repeatable)",
    )
    watch.add_argument(
        "--exec-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="kill a command still running after this long (default 30)",
    )
    watch.add_argument(
        "--refresh-interval",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how often the server watch starts reads each account (default 60; at least 15)",
    )
    simulate_flag(watch)
    watch.set_defaults(run=_watch)

    accounts = command("accounts", "list or edit the pool (accounts.toml in $CODEX_LIMITS_HOME)")
    actions = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="the accounts in the pool, and whether each has an auth.json", parents=[common]
    )
    json_flag(listing, "the accounts")
    simulate_flag(listing)
    add = actions.add_parser("add", help="add an account: an id and the CODEX_HOME it signs in with", parents=[common])
    add.add_argument("account", metavar="ID", help="1-64 letters, digits, '.', '_' or '-'")
    add.add_argument("codex_home", metavar="CODEX_HOME", help="the account's Codex home directory")
    add.add_argument("--label", help="display name (default: the id)")
    remove = actions.add_parser(
        "remove", help="remove an account from the pool (its files are left alone)", parents=[common]
    )
    remove.add_argument("account", metavar="ID", help="the id to remove (see `codex-limits accounts list`)")
    accounts.set_defaults(run=_accounts)

    demo = command("demo", "walk through status and apply against simulated accounts (no account needed)")
    dashboard.add_demo_arguments(demo)
    demo.set_defaults(run=_demo)

    board = command(
        "dashboard",
        "the accounts dashboard in a browser (starts the service if needed; prints a one-time sign-in link)",
    )
    dashboard.add_arguments(board)
    board.set_defaults(run=lambda args: dashboard.run(args, log_level(args), simulate=args.simulate))

    command(  # listed for --help; `main` routes it before this parser is built (see cli/statusline.py)
        "statusline",
        "one line for shell prompts and status bars from the running service's snapshot (--help: the template)",
    )

    completion = command(
        "completion",
        "print the shell completion script for bash, zsh or fish",
        description='Print the completion script. bash: `eval "$(codex-limits completion bash)"` in ~/.bashrc; '
        "zsh: the same in ~/.zshrc; fish: `codex-limits completion fish | source` in config.fish.",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell to complete in")
    completion.set_defaults(run=_completion)
    service.register(sub, common)
    return parser


def parse(parser: argparse.ArgumentParser, arguments: list[str]) -> argparse.Namespace:
    """Parse; an option the command does not take is reported with that command's usage, not the top-level one."""
    args, extras = parser.parse_known_args(arguments)
    if extras:
        owner: argparse.ArgumentParser = getattr(args, "parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extras)}")
    return args
