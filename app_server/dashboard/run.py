"""Serving the dashboard: the HTTP listener (uvicorn) and the admin token.

`serve_dashboard(rpc, host, port, token_file)` serves until stopped (Ctrl-C, SIGTERM, or
`DashboardServer.stop`) and, once the listener accepts connections, prints the address and a one-time
login link on stdout. It listens on loopback unless told otherwise; any other address needs a token file,
and says so. The `codex-limits dashboard` command (`app_server.cli.dashboard`) finds the pool and calls it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import webbrowser
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from app_server.dashboard._rpc import RpcClient
from app_server.dashboard.app import create_app
from app_server.dashboard.events import EventHub
from app_server.dashboard.security import LOGIN_CODE_TTL, LOOPBACK_NAMES, is_loopback, new_secret
from app_server.files import FileRefused, read_private

TOKEN_FILE_MAX: Final = 4096
WILDCARDS: Final = frozenset({"0.0.0.0", "::", ""})


class DashboardError(Exception):
    """A configuration the dashboard refuses to run with; the message says what to do."""


def read_or_create_token(path: Path) -> tuple[str, bool]:
    """The admin token in `path`, or a new one written there (mode 0600); True when it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        pass
    else:
        token = new_secret()
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
        return token, True
    try:
        data = read_private(path, TOKEN_FILE_MAX, follow_symlinks=False)
    except FileRefused as exc:
        raise DashboardError(f"the token file {path} is {exc.reason}") from None
    except OSError as exc:
        raise DashboardError(f"cannot read the token file {path}: {exc.strerror}") from None
    token = data.decode("utf-8", "replace").strip()
    if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
        raise DashboardError(f"the token in {path} must be one line of at least 16 visible characters")
    return token, False


def non_loopback_message(host: str) -> str:
    return (
        f"{host or '*'} is not a loopback address: serving the dashboard there needs --token-file FILE "
        "(the admin token; created with mode 0600 if missing). The connection is plain HTTP."
    )


def _url_host(host: str) -> str:
    if host in WILDCARDS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _served_hosts(host: str, given: Iterable[str] | None) -> frozenset[str] | None:
    if given is not None:
        return frozenset(given)
    if is_loopback(host):
        return LOOPBACK_NAMES
    if host in WILDCARDS:
        return None  # any name of this machine; the token and the session are the guard
    return frozenset({host.lower(), _url_host(host).lower()})


@dataclass
class DashboardServer:
    """A running listener: its address, a way to stop it, and a way to mint more login links."""

    url: str
    login_url: str
    stop: Callable[[], None]
    new_login_url: Callable[[], str]


async def serve_dashboard(
    rpc: RpcClient,
    host: str = "127.0.0.1",
    port: int = 0,
    token_file: Path | None = None,
    *,
    allowed_hosts: Iterable[str] | None = None,
    open_browser: bool = False,
    on_ready: Callable[[DashboardServer], None] | None = None,
    hub: EventHub | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> None:
    """Serve the dashboard over `rpc` on `host:port` (0: a free port) until stopped.

    Without `token_file` the admin token is made up for this run and never shown: the page works
    (through the login link) but scripts cannot call the API. With it, the token is read from the
    file, or created there (mode 0600) when the file does not exist. A non-loopback `host` needs
    `token_file`. The address and the login link go to `stdout`, notes to `stderr`.
    """
    import uvicorn

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    loopback = is_loopback(host)
    if not loopback and token_file is None:
        raise DashboardError(non_loopback_message(host))
    if token_file is not None:
        token, created = read_or_create_token(token_file)
        if created:
            err.write(f"codex-limits dashboard: wrote a new admin token to {token_file}\n")
    else:
        token = new_secret()
    app = create_app(rpc, token=token, allowed_hosts=_served_hosts(host, allowed_hosts), hub=hub)
    gate = app.state.dashboard.gate

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound_port = sock.getsockname()[1]
    url = f"http://{_url_host(host)}:{bound_port}"

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,  # the login link carries a one-time code: keep URLs out of the logs
        lifespan="on",
        server_header=False,
        ws="none",
        timeout_graceful_shutdown=3,
    )

    def stop() -> None:
        server.should_exit = True

    def new_login_url() -> str:
        return f"{url}/login?code={gate.issue_login_code()}"

    handle = DashboardServer(url=url, login_url=new_login_url(), stop=stop, new_login_url=new_login_url)
    if not loopback:
        err.write(f"codex-limits dashboard: listening on {host} (not loopback), plain HTTP\n")

    def started() -> None:
        # Only now does the listener accept connections: a link printed earlier is refused when followed at once.
        out.write(
            f"Dashboard: {url}\nSign in (one-time link, valid {LOGIN_CODE_TTL / 60:g} minutes): {handle.login_url}\n"
        )
        out.flush()
        if open_browser:
            with contextlib.suppress(Exception):
                webbrowser.open(handle.login_url)
        if on_ready is not None:
            on_ready(handle)

    class _Server(uvicorn.Server):
        """uvicorn's server that says when its startup is complete (lifespan done, listener accepting)."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                started()

    server = _Server(config)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
