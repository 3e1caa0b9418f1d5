"""`serve`'s transport flags, and `codex-limits service start|stop|status` (the pool service in the background).

Parsing only at import: `register` adds the parsers; the work happens in the functions they call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app_server.cli.exits import Exit

NOT_RUNNING = Exit.REFUSED
"""`service status` when no service runs (3, as `systemctl status` says for a stopped unit)."""


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """Upstream's `codex app-server` transport flags."""
    parser.add_argument(
        "--listen",
        action="append",
        metavar="URL",
        help="stdio:// (default), ws://IP:PORT, unix:// (the service socket in $CODEX_LIMITS_HOME), "
        "unix://PATH, or off; may be given more than once for several listeners",
    )
    parser.add_argument(
        "--ws-auth", choices=["capability-token"], help="require a bearer token on WebSocket upgrades over TCP"
    )
    parser.add_argument(
        "--ws-token-file",
        metavar="PATH",
        help="file holding the capability token (a regular file only its owner can read)",
    )
    parser.add_argument("--ws-token-sha256", metavar="HEX", help="SHA-256 of the capability token (instead of a file)")


def serve(args: argparse.Namespace, level: str | None) -> int:
    """`serve` (and `python -m app_server`): stdio by default, listeners when `--listen` says so."""
    from app_server.config import Settings
    from app_server.rpc.listeners import ListenError
    from app_server.server import ServeError, ServeOptions, run, setup_logging

    setup_logging(level)
    options = ServeOptions(
        listen=args.listen or ["stdio://"],
        ws_auth=args.ws_auth,
        ws_token_file=args.ws_token_file,
        ws_token_sha256=args.ws_token_sha256,
    )
    try:
        run(Settings.from_env(), simulate=args.simulate, options=options)
    except (ServeError, ListenError) as exc:
        print(f"codex-limits serve: {exc}", file=sys.stderr)
        return Exit.USAGE
    except BaseExceptionGroup as group:
        refusal = _refusal(group)
        if refusal is None:
            raise
        print(f"codex-limits serve: {refusal}", file=sys.stderr)
        return Exit.USAGE
    return Exit.OK


def _refusal(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The start-up refusal a task group wrapped (a listener that cannot bind, say), if that is all it holds."""
    from app_server.cli.failures import leaves
    from app_server.rpc.listeners import ListenError
    from app_server.server import ServeError

    found = leaves(group)
    if found and all(isinstance(leaf, ServeError | ListenError) for leaf in found):
        return found[-1]  # the one this command has always reported when several listeners refused
    return None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `service` and `proxy` to the top-level subparsers `sub` (`common`: the options every command has)."""
    service = sub.add_parser(
        "service",
        parents=[common],
        help="run the pool service in the background on $CODEX_LIMITS_HOME/service.sock",
        description="One long-running server per data directory; operator commands and `proxy` use it when it runs.",
    )
    actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the service (nothing to do when it already runs)", parents=[common])
    start.add_argument("--listen", action="append", metavar="URL", help="also listen on ws://IP:PORT (repeatable)")
    start.add_argument(
        "--ws-auth",
        choices=["capability-token", "none"],
        help="ws:// listeners require a bearer token by default (capability-token: the one in "
        "$CODEX_LIMITS_HOME/service-token, made 0600 on first use, unless --ws-token-file or --ws-token-sha256 "
        "names another); `none` opts out: any local user could then reach the service on 127.0.0.1",
    )
    start.add_argument("--ws-token-file", metavar="PATH", help="file holding the capability token (0600)")
    start.add_argument("--ws-token-sha256", metavar="HEX", help="SHA-256 of the capability token (instead of a file)")
    start.add_argument(
        "--refresh-interval",
        type=float,
        metavar="SECONDS",
        help="read every account in the background this often (at least 15; off by default): changes and "
        "alerts are pushed to every client (`codex-limits watch`, the dashboard)",
    )
    start.add_argument(
        "--simulate",
        action="store_true",
        help="serve a simulated upstream with four made-up accounts (no account needed; nothing is kept)",
    )
    actions.add_parser("stop", help="stop the service: it answers the requests it has, then exits", parents=[common])
    status = actions.add_parser(
        "status", help="running or not, pid, socket, uptime (exit 3: not running)", parents=[common]
    )
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    service.set_defaults(run=service_command)

    proxy = sub.add_parser(
        "proxy",
        parents=[common],
        help="bridge stdin/stdout to the service's socket (starting the service if needed)",
        description="Like `codex app-server proxy`: one stdin line is one message to the service, one message "
        "from it is one stdout line.",
    )
    proxy.add_argument("--sock", metavar="PATH", help="the service socket (default: $CODEX_LIMITS_HOME/service.sock)")
    proxy.add_argument(
        "--simulate",
        action="store_true",
        help="a simulated server with four made-up accounts instead of the service (no account needed; nothing kept)",
    )
    proxy.set_defaults(run=lambda args: _proxy(args))


def _proxy(args: argparse.Namespace) -> int:
    from app_server.cli.proxy import main

    if args.simulate:
        return main(["--simulate"])
    return main(["--sock", args.sock] if args.sock else [])


def _uptime(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _ws_options(args: argparse.Namespace, home: Path) -> list[str]:
    """`serve`'s `--ws-auth` options for the service: a token unless the operator said `--ws-auth none`.

    Raises ValueError (the service's own token file refused, or options that contradict each other)."""
    if args.ws_auth == "none":
        if args.ws_token_file or args.ws_token_sha256:
            raise ValueError("--ws-auth none takes no --ws-token-file or --ws-token-sha256")
        return []
    if args.ws_token_file and args.ws_token_sha256:
        raise ValueError("give one of --ws-token-file or --ws-token-sha256, not both")
    if not any(url.startswith("ws://") for url in args.listen or ()):
        if args.ws_auth or args.ws_token_file or args.ws_token_sha256:
            raise ValueError("--ws-auth, --ws-token-file and --ws-token-sha256 need a --listen ws://IP:PORT")
        return []
    if args.ws_token_sha256:
        return ["--ws-auth", "capability-token", "--ws-token-sha256", args.ws_token_sha256]
    if args.ws_token_file:
        return ["--ws-auth", "capability-token", "--ws-token-file", str(Path(args.ws_token_file).absolute())]
    from app_server.service.token import ensure_token

    return ["--ws-auth", "capability-token", "--ws-token-file", str(ensure_token(home))]


def service_command(args: argparse.Namespace) -> int:
    from app_server.cli.failures import run_local

    def command() -> Exit:
        code = _service_command(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then an exception that run_local makes 141
        return code

    # run_local: a reader that stops early (`| head -c 1`) is exit 141, not a BrokenPipeError traceback.
    return run_local(command)


def _state_json(current: Any) -> dict[str, Any]:
    """`service status --json`: camelCase like every other JSON the CLI prints."""
    if current is None:
        return {"running": False}
    return {
        "running": True,
        "pid": current.pid,
        "socket": current.socket,
        "listen": current.listen,
        "startedAt": current.started_at,
        "codexHome": current.codex_home,
        "tokenFile": current.token_file,
        **({"simulated": True} if current.simulated else {}),
    }


def _service_command(args: argparse.Namespace) -> Exit:
    from app_server.service import control
    from app_server.service.state import data_home, running

    home = data_home()
    if args.action == "start":
        try:
            ws = _ws_options(args, home)
        except (ValueError, OSError) as exc:
            print(f"codex-limits service: {exc}", file=sys.stderr)
            return Exit.USAGE
        try:
            from app_server import env as environment
            from app_server.config import REFRESH_INTERVAL_ENV

            overrides = {} if args.refresh_interval is None else {REFRESH_INTERVAL_ENV: f"{args.refresh_interval:g}"}
            env = environment.child(overrides)
            state, started = control.start(
                home, listen=args.listen or (), log_level=args.log_level, ws=ws, env=env, simulate=args.simulate
            )
        except control.ServiceError as exc:
            print(f"codex-limits service: {exc}", file=sys.stderr)
            return Exit.SERVER
        verb = "started" if started else "already running"
        simulated = " (simulated accounts)" if state.simulated else ""
        print(f"service {verb}{simulated}: pid {state.pid}, listening on {', '.join(state.listen)}")
        return Exit.OK
    if args.action == "stop":
        try:
            stopped = control.stop(home)
        except control.ServiceError as exc:
            print(f"codex-limits service: {exc}", file=sys.stderr)
            return Exit.SERVER
        print("service not running" if stopped is None else f"service stopped (pid {stopped.pid})")
        return Exit.OK
    current = running(home)
    if args.json:
        print(json.dumps(_state_json(current)))
    elif current is None:
        print(f"service not running (data directory {home})")
    else:
        print(f"service running\n  pid: {current.pid}\n  socket: {current.socket}")
        print(f"  listening on: {', '.join(current.listen)}\n  uptime: {_uptime(current.uptime())}")
        print(f"  codex home: {current.codex_home}" + (" (simulated)" if current.simulated else ""))
        if current.token_file is not None:
            print(f"  ws:// token file: {current.token_file}")
    return Exit.OK if current is not None else NOT_RUNNING
