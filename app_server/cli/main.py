"""The `codex-limits` command: the app-server (serve), its schemas, and the operator commands.

The operator commands (status, apply, refresh, history, accounts, demo) live in `operator`;
this module only parses arguments, so `--help` stays fast (rich and anyio load on first use).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app_server.cli import service
from app_server.cli.exits import EXIT_MEANING, Exit

if TYPE_CHECKING:
    from app_server.cli.commands import UI, Interrupt


EXIT_OK = Exit.OK
EXIT_USAGE = Exit.USAGE

_EPILOG = "exit statuses:\n" + "\n".join(
    textwrap.fill(meaning, width=79, initial_indent=f"  {int(code):<4} ", subsequent_indent=" " * 7)
    for code, meaning in EXIT_MEANING.items()
    if code is not Exit.CHECK_FAILED
)


def _serve(args: argparse.Namespace) -> int:
    import gc

    gc.disable()  # start-up allocates only long-lived objects; serve_stdio freezes them and re-enables
    return service.serve(args)


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


# -- operator commands: thin wrappers around `operator` ------------------------------------------


def _run_async(args: argparse.Namespace, make: Callable[[UI, Interrupt], Awaitable[Exit]]) -> int:
    from app_server.cli import commands as operator

    ui = operator.UI(as_json=getattr(args, "json", False))
    interrupt = operator.Interrupt()
    return operator.run(lambda: make(ui, interrupt), interrupt)


def _status(args: argparse.Namespace) -> int:
    from app_server.cli import commands as operator

    def make(ui: UI, interrupt: Interrupt) -> Awaitable[Exit]:
        if args.watch is not None:
            interrupt.code, interrupt.message = Exit.OK, ""
        return operator.status(ui, simulate=args.simulate, watch=args.watch)

    return _run_async(args, make)


def _apply(args: argparse.Namespace) -> int:
    from app_server.cli import commands as operator

    return _run_async(
        args,
        lambda ui, interrupt: operator.apply(
            ui, interrupt, account=args.account, credit_id=args.credit, yes=args.yes, simulate=args.simulate
        ),
    )


def _refresh(args: argparse.Namespace) -> int:
    from app_server.cli import commands as operator

    return _run_async(args, lambda ui, _: operator.refresh(ui, account=args.account, simulate=args.simulate))


def _history(args: argparse.Namespace) -> int:
    from app_server.cli import commands as operator

    return _run_async(
        args, lambda ui, _: operator.history(ui, account=args.account, limit=args.limit, simulate=args.simulate)
    )


def _demo(args: argparse.Namespace) -> int:
    from app_server.cli import commands as operator

    return _run_async(args, operator.demo)


def _accounts(args: argparse.Namespace) -> int:
    from app_server.cli import commands as operator

    ui = operator.UI(as_json=getattr(args, "json", False))
    if args.action == "add":
        return operator.run_local(
            lambda: operator.accounts_add(ui, account=args.account, codex_home=args.codex_home, label=args.label)
        )
    if args.action == "remove":
        return operator.run_local(lambda: operator.accounts_remove(ui, account=args.account))
    return operator.run_local(lambda: operator.accounts_list(ui))


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codex-limits",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=_EPILOG + "\n\nStart with `codex-limits demo` (no account needed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def simulate_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--simulate", action="store_true", help="use a simulated upstream with three accounts (no account needed)"
        )

    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout (for scripts)")

    serve = sub.add_parser("serve", help="run the app-server on stdin/stdout (JSON-RPC, one message per line)")
    serve.add_argument("--log-level", default=None, help="stderr log level (default WARNING, or $CODEX_LIMITS_LOG)")
    simulate_flag(serve)
    service.add_serve_flags(serve)
    serve.set_defaults(run=_serve)

    schema = sub.add_parser("schema", help="export the JSON Schemas (upstream layout)")
    schema.add_argument("--out", required=True, help="directory to write, or to compare with --check")
    schema.add_argument("--check", action="store_true", help="exit 1 if the files in --out differ from the models")
    schema.set_defaults(run=_schema)

    status = sub.add_parser("status", help="every account: usage windows, saved resets, whether apply is possible")
    json_flag(status, "the account summaries (the `accounts` array)")
    status.add_argument(
        "--watch",
        type=_seconds,
        metavar="SECONDS",
        help="re-list every SECONDS seconds until Ctrl-C (with --json: one array per line)",
    )
    simulate_flag(status)
    status.set_defaults(run=_status)

    apply = sub.add_parser(
        "apply",
        help="spend one saved reset on ACCOUNT (asks first)",
        description="Show ACCOUNT, ask for confirmation, then spend exactly one saved rate-limit reset on it. "
        "An earlier attempt whose outcome is unknown is re-sent with its own key instead of starting a new one.",
    )
    apply.add_argument("account", metavar="ACCOUNT", help="account id (see `codex-limits status`)")
    apply.add_argument("--credit", metavar="ID", help="the saved reset to spend (default: the one expiring first)")
    apply.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    json_flag(apply, "the apply response")
    simulate_flag(apply)
    apply.set_defaults(run=_apply)

    refresh = sub.add_parser("refresh", help="read one account's usage and saved resets now")
    refresh.add_argument("account", metavar="ACCOUNT", help="account id")
    json_flag(refresh, "the account summary")
    simulate_flag(refresh)
    refresh.set_defaults(run=_refresh)

    history = sub.add_parser("history", help="apply attempts recorded in the ledger, newest first")
    history.add_argument("account", metavar="ACCOUNT", nargs="?", help="only this account")
    history.add_argument("--limit", type=_positive, metavar="N", help="at most N entries (default 100)")
    json_flag(history, "the ledger entries")
    simulate_flag(history)
    history.set_defaults(run=_history)

    accounts = sub.add_parser("accounts", help="edit the pool (accounts.toml in $CODEX_LIMITS_HOME)")
    actions = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the accounts in the pool, and whether each has an auth.json")
    json_flag(listing, "the accounts")
    add = actions.add_parser("add", help="add an account: an id and the CODEX_HOME it signs in with")
    add.add_argument("account", metavar="ID", help="1-64 letters, digits, '.', '_' or '-'")
    add.add_argument("codex_home", metavar="CODEX_HOME", help="the account's Codex home directory")
    add.add_argument("--label", help="display name (default: the id)")
    remove = actions.add_parser("remove", help="remove an account from the pool (its files are left alone)")
    remove.add_argument("account", metavar="ID")
    accounts.set_defaults(run=_accounts)

    demo = sub.add_parser("demo", help="walk through status and apply against simulated accounts (no account needed)")
    demo.set_defaults(run=_demo)
    service.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["proxy"]:  # routed before the parser is built: the proxy must start fast
        from app_server.cli.proxy import main as proxy

        sys.exit(proxy(arguments[1:]))
    args = build_parser().parse_args(arguments)
    sys.exit(int(args.run(args)))


if __name__ == "__main__":
    main()
