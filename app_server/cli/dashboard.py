"""`codex-limits dashboard` and `codex-limits demo --dashboard`: the accounts dashboard in a browser.

`dashboard` starts the service if it is not running, keeps one JSON-RPC session with it (`ServiceLink`,
reconnected when the service restarts), serves the page and the admin API on their own HTTP listener
(127.0.0.1 and a free port unless told otherwise), and prints a one-time sign-in link on stdout. Every
client of the service shares its notifications, so an apply from a terminal reaches the page live.

With `--simulate` (and in `demo --dashboard`) there is no service: the dashboard spawns its own
`codex-limits serve --simulate` and the world is gone when it stops. Ctrl-C stops the dashboard (exit 0);
the service keeps running.

Parsing only at import: starlette, uvicorn and anyio load when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from app_server.cli.exits import Exit

START_TIMEOUT: Final = 30.0
"""Seconds a spawned `serve --simulate` has to answer `initialize`."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dashboard`'s options."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs --token-file)"
    )
    parser.add_argument("--port", type=_port, default=0, help="port to listen on (default: a free one)")
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="the admin API's bearer token (created with mode 0600 when missing; without it only the page works)",
    )
    parser.add_argument("--open", action="store_true", help="also open the sign-in link in a web browser")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="against a simulated upstream with four made-up accounts (no service; nothing is kept)",
    )


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """`demo --dashboard` and the two options that make sense with it (loopback, no token file)."""
    parser.add_argument("--dashboard", action="store_true", help="open the dashboard on the simulated pool instead")
    parser.add_argument("--port", type=_port, default=0, help="with --dashboard: the port (default: a free one)")
    parser.add_argument("--open", action="store_true", help="with --dashboard: open the sign-in link in a browser")
    parser.set_defaults(host="127.0.0.1", token_file=None)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0..65535 (0: a free port)")
    return value


def run(args: argparse.Namespace, level: str | None, *, simulate: bool = False) -> int:
    """The command: the exit status (0 after Ctrl-C: that is how a dashboard stops).

    `level` is the log level asked for (None: the default); `simulate` serves a simulated pool."""
    from app_server.dashboard.security import is_loopback

    if not is_loopback(args.host) and args.token_file is None:
        from app_server.dashboard.run import non_loopback_message

        print(f"codex-limits: {non_loopback_message(args.host)}", file=sys.stderr)
        return Exit.USAGE
    _logging(level)
    import anyio

    from app_server.dashboard import DashboardError

    try:
        if simulate:
            anyio.run(_simulated, args, level)
        else:
            home, socket = _service(level)
            anyio.run(_on_service, args, home, socket)
    except BaseException as raised:  # task groups wrap what their body raises: look at the one exception
        exc = _single(raised)
        if isinstance(exc, KeyboardInterrupt):
            return Exit.OK
        if isinstance(exc, DashboardError | _Failed):
            print(f"codex-limits: {exc}", file=sys.stderr)
            return Exit.USAGE if isinstance(exc, DashboardError) else Exit.SERVER
        raise
    return Exit.OK


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) groups of one, or `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _Failed(Exception):
    """The pool could not be reached; the text says why."""


def _logging(level: str | None) -> None:
    import logging

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, (level or "WARNING").upper(), logging.WARNING),
        format="codex-limits dashboard: %(message)s",
    )


# -- on the running service --------------------------------------------------------------------


def _service(level: str | None) -> tuple[Path, str]:
    """The data directory and the socket of its running service, started first if needed."""
    from app_server.service import control
    from app_server.service.state import codex_home, data_home

    home = data_home()
    try:
        state, started = control.start(home, log_level=level)
    except control.ServiceError as exc:
        raise _Failed(f"cannot start the service: {exc}") from None
    if not state.simulated and state.codex_home != str(codex_home()):  # a simulated one is this directory's
        raise _Failed(
            f"the running service (pid {state.pid}) acts on CODEX_HOME={state.codex_home}, not {codex_home()}: "
            "stop it (codex-limits service stop) or run the dashboard with the same CODEX_HOME"
        )
    if started:
        print(
            f"codex-limits dashboard: started the service (pid {state.pid}); it keeps running after the dashboard "
            "(codex-limits service stop)",
            file=sys.stderr,
        )
    return home, state.socket


async def _on_service(args: argparse.Namespace, home: Path, socket: str) -> None:
    from app_server.dashboard import ServiceLink, serve_dashboard
    from app_server.dashboard.events import EventHub
    from app_server.rpc.client import ServerClosed
    from app_server.service.state import running

    def locate() -> str | None:
        state = running(home)
        return state.socket if state is not None else None

    hub = EventHub()
    try:
        async with ServiceLink.open(locate, on_reconnect=hub.resync) as link:
            await serve_dashboard(link, args.host, args.port, args.token_file, open_browser=args.open, hub=hub)
    except ServerClosed as exc:
        raise _Failed(f"{exc} (socket {socket})") from None


# -- on a simulated pool -------------------------------------------------------------------------


async def _simulated(args: argparse.Namespace, level: str | None) -> None:
    import anyio

    from app_server import __version__
    from app_server.config import log_level
    from app_server.dashboard.run import serve_dashboard
    from app_server.rpc.client import ServerClosed, spawn

    async with spawn(["--simulate", "--log-level", log_level(given=level)]) as (client, _process):
        try:
            with anyio.fail_after(START_TIMEOUT):
                await client.initialize(name="codex-limits-dashboard", version=__version__)
        except (ServerClosed, TimeoutError) as exc:
            raise _Failed(f"the simulated server did not start: {exc}") from None
        await serve_dashboard(client, args.host, args.port, args.token_file, open_browser=args.open)
