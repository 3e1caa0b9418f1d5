"""`--listen` addresses and the listeners behind them: WebSocket over TCP and over a Unix socket.

`parse_listen` understands upstream's forms (`stdio://`, `ws://IP:PORT`, `unix://`, `unix://PATH`,
`off`). `serve_listeners` runs every WebSocket listener of one process on the same routes and
services (one session per connection) until SIGTERM/SIGINT/SIGHUP, then stops accepting, lets
every connection finish the requests it has, and closes them with 1001.

A Unix socket lives in a directory only its owner can enter, `$TMPDIR/codex-limits-<uid>/` (0700);
the requested PATH is a symlink to it, as upstream does it. A directory another user owns or may write
in is refused, and so is any address we cannot bind, each as a `ListenError` of one line. Every listening
socket is a `PacedSocket`: out of file descriptors, it fails accept() once a second rather than once per
waiting connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio

if TYPE_CHECKING:
    from app_server.rpc.dispatcher import Observer, Route, S
    from app_server.rpc.sessions import Broadcaster
    from app_server.rpc.websocket import Limits, MetricsPage, TokenCheck

log = logging.getLogger(__name__)

Scheme = Literal["stdio", "ws", "unix", "off"]
EXPECTED = "expected stdio://, ws://IP:PORT, unix://, unix://PATH or off"
LISTEN_BACKLOG: Final = 128


class ListenError(ValueError):
    """A `--listen` address we cannot serve; the text says why."""


@dataclass(frozen=True)
class Listen:
    """One parsed `--listen` address: `ws://host:port` or `unix://path`."""

    scheme: Scheme
    host: str = ""
    port: int = 0
    path: Path | None = None

    def url(self, port: int | None = None) -> str:
        if self.scheme == "ws":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"ws://{host}:{self.port if port is None else port}"
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return "stdio://" if self.scheme == "stdio" else "off"

    @property
    def loopback(self) -> bool:
        return self.scheme != "ws" or is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str, *, default_unix: Path) -> Listen:
    """One `--listen` value; `unix://` alone means `default_unix`."""
    if text in ("stdio://", "stdio"):
        return Listen("stdio")
    if text == "off":
        return Listen("off")
    if text.startswith("unix://"):
        rest = text.removeprefix("unix://")
        return Listen("unix", path=Path(rest).expanduser().absolute() if rest else default_unix)
    if text.startswith("ws://"):
        rest = text.removeprefix("ws://").rstrip("/")
        host, sep, port_text = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ListenError(f"invalid --listen {text!r}: expected ws://IP:PORT")
        if host != "localhost":
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ListenError(f"invalid --listen {text!r}: {host!r} is not an IP address") from None
        return Listen("ws", host=host, port=int(port_text))
    raise ListenError(f"unsupported --listen {text!r}: {EXPECTED}")


# -- the Unix socket in its private directory ---------------------------------------------------------


def private_dir() -> Path:
    """`$TMPDIR/codex-limits-<uid>/`, made 0700; one found there must be a directory of ours, mode 0700
    (never followed through a symlink): another user who made it first, or opened it, could read or replace
    the socket, so it is refused with what to do rather than repaired."""
    path = Path(tempfile.gettempdir()) / f"codex-limits-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ListenError(f"cannot make the socket directory {path}: {exc.strerror or exc}") from None
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ListenError(f"{path} is not a directory; refusing to put a socket there (remove it)")
    if info.st_uid != os.getuid():
        raise ListenError(
            f"the socket directory {path} belongs to another user (uid {info.st_uid}); refusing to put a socket "
            "in it (remove it, or set TMPDIR to a directory of your own)"
        )
    if info.st_mode & 0o077:
        raise ListenError(
            f"the socket directory {path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"refusing to put a socket in it (run: chmod 700 {path})"
        )
    return path


def real_socket_path(path: Path) -> Path:
    """Where the socket for `path` really lives (short: AF_UNIX paths are limited to ~100 bytes)."""
    name = hashlib.sha256(str(path).encode()).hexdigest()[:20]
    return private_dir() / f"{name}.sock"


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.path.realpath(path))
        except OSError:
            return False
    return True


def _clear_stale(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not (stat.S_ISLNK(info.st_mode) or stat.S_ISSOCK(info.st_mode)):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
    if _answers(path):
        raise ListenError(f"another server is already listening on {path}")
    path.unlink()


# -- accepting when the process is out of file descriptors -------------------------------------------

ACCEPT_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_QUIET: Final = 0.5
"""Seconds after a failed accept() during which accept() reports an empty queue; below asyncio's 1 s pause."""


class PacedSocket(socket.socket):
    """A listening socket whose accept() fails once per pause when the process is out of resources.

    asyncio's accept loop (3.11) answers EMFILE by logging, unregistering the socket and scheduling a retry
    in 1 s, but then keeps calling accept() up to `backlog` times in the same tick: one traceback and one
    more retry timer per call, and the retries multiply (126,000 tracebacks in seconds with 1,500 idle
    clients at a limit of 512). After one failure this socket answers "nothing waiting" (EAGAIN) for
    `ACCEPT_QUIET` seconds, which ends asyncio's loop: one log line and one retry per second.
    """

    _quiet_until = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        if self._quiet_until and time.monotonic() < self._quiet_until:
            raise BlockingIOError(errno.EAGAIN, "accept paused: out of resources")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in ACCEPT_ERRNOS:
                self._quiet_until = time.monotonic() + ACCEPT_QUIET
            raise


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler, but the accept failure it reports once per pause is one line, not a traceback."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS and "socket.accept()" in context.get("message", ""):
        log.error("cannot accept connections: %s; trying again in 1 s", exc.strerror or exc)
        return
    loop.default_exception_handler(context)


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host` (an IP address, or `localhost` for 127.0.0.1) and `port`."""
    address = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = PacedSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_link_dir(directory: Path) -> None:
    """The directory that holds the symlink `PATH`: another user who owns it, or may write in it (without the
    sticky bit of /tmp), could point `PATH` at a socket of theirs; refused rather than trusted."""
    info = directory.stat()
    if info.st_uid not in (os.getuid(), 0):
        raise ListenError(
            f"the socket directory {directory} belongs to another user (uid {info.st_uid}); refusing to put a "
            "socket in it"
        )
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise ListenError(
            f"the socket directory {directory} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"refusing to put a socket in it (run: chmod go-w {directory})"
        )


def bind_unix(path: Path) -> socket.socket:
    """A listening socket in the private directory, with `path` a symlink to it."""
    real = real_socket_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ListenError(f"cannot make the socket directory {path.parent}: {exc.strerror or exc}") from None
    _check_link_dir(path.parent)
    _clear_stale(path)
    _clear_stale(real)
    sock = PacedSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(real))
        os.chmod(real, 0o600)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        if path != real:
            link = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            os.symlink(real, link)
            os.replace(link, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            real.unlink()
        raise
    return sock


def unbind_unix(path: Path) -> None:
    """Remove `path` and its socket, if `path` still leads to the socket this process made."""
    real = real_socket_path(path)
    with contextlib.suppress(OSError):
        if path != real and os.readlink(path) == str(real):
            path.unlink()
    with contextlib.suppress(OSError):
        real.unlink()


# -- serving ------------------------------------------------------------------------------------------


@dataclass
class Bound:
    """A listener that is up: what it was asked for and where it really listens (port 0 resolved)."""

    listen: Listen
    url: str
    http: str | None = None


def banner(bound: list[Bound]) -> str:
    lines = ["codex-limits app-server (WebSockets)"]
    for item in bound:
        lines.append(f"  listening on: {item.url}")
        if item.http is not None:
            lines += [f"  readyz: {item.http}/readyz", f"  healthz: {item.http}/healthz"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _unix_sockets() -> Iterator[list[Path]]:
    made: list[Path] = []
    try:
        yield made
    finally:
        for path in made:
            unbind_unix(path)


async def serve_listeners(
    listens: list[Listen],
    routes: dict[str, Route[S]],
    services: S,
    *,
    broadcaster: Broadcaster,
    token: TokenCheck | None = None,
    limits: Limits | None = None,
    on_ready: Callable[[list[Bound]], None] | None = None,
    stop: anyio.Event | None = None,
    metrics: MetricsPage | None = None,
    observer: Observer | None = None,
) -> None:
    """Serve every listener until a signal (or `stop`), then drain and close every connection. `metrics`, when
    given, answers `GET /metrics` on every listener; `observer` is told of every request answered."""
    from websockets.asyncio.server import Server, serve

    from app_server.rpc.websocket import MAX_MESSAGE, ConnectionHandler, HttpEdge, Limits

    limits = limits or Limits()
    handler = ConnectionHandler(routes, services, limits, broadcaster, observer=observer)
    servers: list[Server] = []
    bound: list[Bound] = []
    common: dict[str, Any] = {
        "max_size": MAX_MESSAGE,
        "compression": None,
        "server_header": None,
        "close_timeout": limits.close_timeout,
    }
    asyncio.get_running_loop().set_exception_handler(_loop_exception_handler)
    with _unix_sockets() as made:
        try:
            for listen in listens:
                if listen.scheme == "ws":
                    edge = HttpEdge(token, advertise_max_message=False, metrics=metrics)
                    sock = _bound(listen, functools.partial(bind_tcp, listen.host, listen.port))
                    server = await serve(
                        handler,
                        sock=sock,
                        process_request=edge.process_request,
                        process_response=edge.process_response,
                        **common,
                    )
                    port = sock.getsockname()[1]
                    url = listen.url(port)
                    bound.append(Bound(listen, url, "http" + url.removeprefix("ws")))
                elif listen.scheme == "unix":
                    path = listen.path
                    assert path is not None
                    sock = _bound(listen, functools.partial(bind_unix, path))
                    made.append(path)
                    edge = HttpEdge(None, advertise_max_message=True, metrics=metrics)
                    server = await serve(
                        handler,
                        sock=sock,
                        unix=True,
                        process_request=edge.process_request,
                        process_response=edge.process_response,
                        **common,
                    )
                    bound.append(Bound(listen, listen.url()))
                else:
                    raise ListenError(f"{listen.url()} cannot be served by a listener")
                servers.append(server)
            sys.stderr.write(banner(bound))
            sys.stderr.flush()
            if on_ready is not None:
                on_ready(bound)
            await _until_stopped(stop)
            log.info("stopping: no new connections; finishing the requests in flight")
        finally:
            handler.stopping = True
            for server in servers:
                server.close(close_connections=False)
            broadcaster.stop_reading()
            with anyio.CancelScope(shield=True):
                for server in servers:
                    await server.wait_closed()


def _bound(listen: Listen, bind: Callable[[], socket.socket]) -> socket.socket:
    """`bind()`, with a system error said in one line naming the listener."""
    try:
        return bind()
    except ListenError:
        raise
    except OSError as exc:
        raise ListenError(f"cannot listen on {listen.url()}: {exc.strerror or exc}") from None


async def _until_stopped(stop: anyio.Event | None) -> None:
    async with anyio.create_task_group() as tg:
        if stop is not None:

            async def external() -> None:
                await stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(external)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("%s received", signal.Signals(signum).name)
                break
        tg.cancel_scope.cancel()
