"""Run the app-server: on this process's stdin/stdout, or on WebSocket listeners; wiring, signals, a clean exit.

`ServeOptions` is what `serve` was asked for (`--listen`, `--ws-auth`); `run` picks the transport.
Every transport feeds the same routes through a `Dispatcher` per connection, on one `World` (the composition
root, `app_server.world`), opened by `open_world`.
Serving the data directory's default socket (`--listen unix://`) makes this process *the service*:
it holds the service lock and publishes `service.json` (see `app_server.service.state`).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from app_server.config import Settings, log_level
from app_server.rpc.dispatcher import Dispatcher
from app_server.rpc.framing import DEFAULT_MAX_LINE
from app_server.rpc.outbox import Outbox
from app_server.rpc.stdio import FdSink, FdSource, claim_stdout
from app_server.world import World, open_world

if TYPE_CHECKING:
    from app_server.pool.delivery.deliverer import AlertDelivery
    from app_server.rpc.listeners import Bound, Listen
    from app_server.rpc.memory import Harness
    from app_server.rpc.websocket import Limits, TokenCheck

log = logging.getLogger(__name__)


class ServeError(Exception):
    """`serve` cannot start as asked; the text says why (a usage error, exit status 2)."""


@dataclass(frozen=True)
class ServeOptions:
    """The transports `serve` was asked for. The default is stdio, as upstream."""

    listen: Sequence[str] = ("stdio://",)
    ws_auth: str | None = None
    ws_token_file: str | None = None
    ws_token_sha256: str | None = None
    limits: Limits | None = field(default=None)

    def stdio(self) -> bool:
        return list(self.listen) in ([], ["stdio://"], ["stdio"])


def parse_listens(options: ServeOptions, data_home: Path) -> list[Listen]:
    from app_server.rpc.listeners import ListenError, parse_listen
    from app_server.service.state import socket_path

    try:
        listens = [parse_listen(text, default_unix=socket_path(data_home)) for text in options.listen]
    except ListenError as exc:
        raise ServeError(str(exc)) from None
    if any(listen.scheme == "stdio" for listen in listens):
        raise ServeError("--listen stdio:// cannot be combined with other listeners")
    listens = [listen for listen in listens if listen.scheme != "off"]
    if not listens:
        raise ServeError("--listen off leaves nothing to serve")
    return listens


def token_check(options: ServeOptions, listens: Sequence[Listen]) -> TokenCheck | None:
    """The capability token of `--ws-auth`, and the refusal of a non-loopback listener without one."""
    if options.ws_auth is None:
        if options.ws_token_file or options.ws_token_sha256:
            raise ServeError("--ws-token-file and --ws-token-sha256 need --ws-auth capability-token")
        exposed = [listen.url() for listen in listens if not listen.loopback]
        if exposed:
            raise ServeError(
                f"refusing to listen on {', '.join(exposed)} without authentication: anyone who can reach it "
                "could spend reset credits; add --ws-auth capability-token --ws-token-file PATH, "
                "or listen on 127.0.0.1"
            )
        return None
    if options.ws_auth != "capability-token":
        raise ServeError(f"--ws-auth {options.ws_auth} is not supported; use capability-token")
    from app_server.rpc.websocket import TokenCheck

    if bool(options.ws_token_file) == bool(options.ws_token_sha256):
        raise ServeError("--ws-auth capability-token needs exactly one of --ws-token-file or --ws-token-sha256")
    if options.ws_token_sha256:
        digest = options.ws_token_sha256.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ServeError("--ws-token-sha256 must be 64 hexadecimal digits (a SHA-256 digest)")
        return TokenCheck(bytes.fromhex(digest))
    assert options.ws_token_file is not None
    from app_server.service.token import TokenError, read_token

    try:
        token = read_token(Path(options.ws_token_file))
    except TokenError as exc:
        raise ServeError(f"--ws-token-file: {exc}") from None
    import hashlib  # only a listener with a token file needs it

    source = str(Path(options.ws_token_file).absolute())
    return TokenCheck(hashlib.sha256(token.encode("utf-8")).digest(), source=source)


def setup_logging(level: str | None = None) -> None:
    from app_server.logs import setup

    setup(log_level(given=level), sys.stderr)


def serve_default() -> int:
    """`codex-limits serve` with no flags: stdio, settings from the environment. The exit status."""
    setup_logging()
    run(Settings.from_env())
    return 0


def run(settings: Settings, *, simulate: bool = False, options: ServeOptions | None = None) -> None:
    """Serve until end of input (stdio) or a signal (listeners); with `simulate`, against a throwaway
    simulated upstream. Raises `ServeError` before serving anything when the options cannot work."""
    options = options or ServeOptions()

    # A simulated server delivers its alerts (to the simulated world's test webhook); a stdio server that a
    # CLI command spawns for itself does not (it would re-send every alert on each command).
    if options.stdio():

        async def serve(world: Settings) -> None:
            await serve_stdio(world, deliver=simulate)

    else:
        listens = parse_listens(options, settings.data_home)
        token = token_check(options, listens)

        async def serve(world: Settings) -> None:
            # Simulated, the service still holds (and answers on) this data directory: only its world is made up.
            home = settings.data_home if simulate else None
            await serve_network(world, listens, token=token, limits=options.limits, service_home=home, deliver=simulate)

    if not simulate:
        anyio.run(serve, settings)
        return
    from app_server.sandbox import simulated_world

    with simulated_world(settings.timeouts) as (_, sim_settings):
        anyio.run(serve, sim_settings)


async def serve_network(
    settings: Settings,
    listens: Sequence[Listen],
    *,
    token: TokenCheck | None = None,
    limits: Limits | None = None,
    service_home: Path | None = None,
    deliver: bool = False,
) -> None:
    """Serve `listens` until SIGTERM/SIGINT/SIGHUP; as the service when the default socket is among them.
    The service (or with `deliver`) also sends alerts to the configured sinks.

    `service_home`: the data directory the service holds when it is not `settings.data_home` (a simulated world's)."""
    simulated = service_home is not None
    home = settings.data_home if service_home is None else service_home
    from app_server.handlers import routes
    from app_server.rpc.listeners import serve_listeners
    from app_server.service.state import AlreadyRunning, ServiceLock, State, socket_path

    service_socket = socket_path(home)
    lock = ServiceLock(home) if any(listen.path == service_socket for listen in listens) else None
    if lock is not None:
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            raise ServeError(f"{exc}; see `codex-limits service status`") from None
        except OSError as exc:  # a data directory this user cannot write (or create)
            raise ServeError(f"cannot use the data directory {home}: {exc.strerror or exc}") from None
    # After the lock: an unusable data directory is said as such, not as its config.toml; a configuration
    # that cannot be used stops the service before it serves anything.
    try:
        delivery = alert_delivery(settings) if lock is not None or deliver else None
    except ServeError:
        if lock is not None:
            lock.release()
        raise
    started = time.time()

    def ready(bound: list[Bound]) -> None:
        if lock is not None:
            urls = [b.url for b in bound]
            token_file = token.source if token is not None else None
            codex_home = str(settings.codex_home)
            lock.publish(State(os.getpid(), str(service_socket), urls, started, codex_home, token_file, simulated))

    try:
        # The service keeps the status line's snapshot current, in the data directory it holds.
        snapshot_home = home if lock is not None else None
        async with (
            open_world(settings, service_home=snapshot_home, delivery=delivery) as world,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(world.background)
            # GET /metrics on the listeners, fed by the pool, the dispatchers, the apply route, the HTTP pool
            from app_server.metrics.wiring import instrument, page

            table = routes()
            metrics = instrument(world, table)
            await serve_listeners(
                list(listens),
                table,
                world,
                broadcaster=world.broadcaster,
                token=token,
                limits=limits,
                on_ready=ready,
                metrics=page(metrics),
                observer=metrics.observe_request,
            )
            tg.cancel_scope.cancel()
    finally:
        if lock is not None:
            lock.release()


STDIO_MAX_QUEUED = 1024
"""Requests read ahead of the 512 in flight on stdio, oldest first. With the input thread's 256 KiB of
read-ahead, what a client can have waiting is bounded, and so is an answer's wait under overload:
about (512 + 1,024 + ~2,600 lines) / reads per second."""


async def serve_stdio(
    settings: Settings, *, max_line: int = DEFAULT_MAX_LINE, shutdown_grace: float = 10.0, deliver: bool = False
) -> None:
    """Serve this process's stdin/stdout until end of input or a signal; requests in flight finish first.
    With `deliver` (simulated servers only: each CLI command spawns its own stdio server, which must not re-send
    every alert to real sinks) alerts also go to the configured sinks."""
    delivery = alert_delivery(settings) if deliver else None
    protocol_fd = claim_stdout()
    from app_server.handlers import routes

    async with open_world(settings, delivery=delivery) as world:
        dispatcher = Dispatcher(
            routes(),
            world,
            Outbox(FdSink(protocol_fd)),
            max_line=max_line,
            max_queued=STDIO_MAX_QUEUED,
            shutdown_grace=shutdown_grace,
            broadcaster=world.broadcaster,
        )
        source = FdSource(0)
        # What start-up built lives as long as the process: keep it out of every collection from now on.
        gc.freeze()
        gc.enable()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signal, dispatcher, tg.cancel_scope)
                tg.start_soon(world.background)
                await dispatcher.serve(source, ended=source.ended)
                tg.cancel_scope.cancel()
        finally:
            source.close()  # input the client is still writing is refused now, not at loop shutdown


def alert_delivery(settings: Settings) -> AlertDelivery | None:
    """The configured alert sinks (alert delivery, #23), or None when there are none; ServeError when the
    configuration cannot be used (a service that silently sends no alert would be worse)."""
    from app_server.config import ConfigError
    from app_server.pool.delivery.settings import read_alert_sinks

    try:
        sinks = read_alert_sinks(settings.data_home, settings.env)
    except ConfigError as exc:
        raise ServeError(f"alert delivery: {exc}") from None
    if not sinks:
        return None
    from app_server.pool.delivery.deliverer import AlertDelivery

    log.info("delivering alerts to %s", ", ".join(sink.label for sink in sinks))
    return AlertDelivery(sinks)


async def _stop_on_signal(dispatcher: Dispatcher[World], scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: finishing in-flight requests, then exiting", signal.Signals(signum).name)
            dispatcher.stop_reading()
            break


@asynccontextmanager
async def serve_in_memory(world: World, **dispatcher_options: Any) -> AsyncIterator[Harness[World]]:
    """The real server (routes and `world`) and a client in this event loop; closes `world` after."""
    from app_server.handlers import routes
    from app_server.rpc.memory import connect_in_memory  # in-process use only, never on the stdio path

    dispatcher_options.setdefault("broadcaster", world.broadcaster)
    try:
        async with connect_in_memory(routes(), world, **dispatcher_options) as harness:
            yield harness
    finally:
        await world.aclose()


@asynccontextmanager
async def initialized(settings: Settings, *, wait: float = 5.0) -> AsyncIterator[Harness[World]]:
    """A server for `settings` whose client has already initialized as `probe` 1.0 (as the transcripts do)."""
    async with serve_in_memory(World(settings)) as harness:
        with anyio.fail_after(wait):
            await harness.initialize(name="probe", version="1.0")
        yield harness
