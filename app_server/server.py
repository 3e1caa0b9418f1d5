"""Run the app-server on this process's stdin/stdout: wiring, signals, and a clean exit."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from app_server.config import Settings
from app_server.rpc.dispatcher import Dispatcher
from app_server.rpc.framing import DEFAULT_MAX_LINE
from app_server.rpc.memory import Harness, connect_in_memory
from app_server.rpc.outbox import Outbox
from app_server.rpc.stdio import FdSink, FdSource
from app_server.services import Services

log = logging.getLogger(__name__)


def setup_logging(level: str | None = None) -> None:
    name = (level or os.environ.get("CODEX_LIMITS_LOG") or "WARNING").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, name, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def claim_stdout() -> int:
    """Keep the real stdout for protocol messages only; anything printed goes to stderr instead."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


def run(settings: Settings, *, simulate: bool = False) -> None:
    """Serve until end of input; with `simulate`, against a throwaway simulated upstream."""
    if not simulate:
        anyio.run(serve_stdio, settings)
        return
    from app_server.sandbox import simulated_world

    with simulated_world(settings.timeouts) as (_, sim_settings):
        anyio.run(serve_stdio, sim_settings)


async def serve_stdio(settings: Settings, *, max_line: int = DEFAULT_MAX_LINE, shutdown_grace: float = 10.0) -> None:
    protocol_fd = claim_stdout()
    services = Services(settings)
    from app_server.handlers import routes

    dispatcher = Dispatcher(
        routes(), services, Outbox(FdSink(protocol_fd)), max_line=max_line, shutdown_grace=shutdown_grace
    )
    source = FdSource(0)
    # What start-up built lives as long as the process: keep it out of every collection from now on.
    gc.freeze()
    gc.enable()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, dispatcher, tg.cancel_scope)
            await dispatcher.serve(source)
            tg.cancel_scope.cancel()
    finally:
        source.close()  # input the client is still writing is refused now, not at loop shutdown
        with anyio.CancelScope(shield=True):
            await services.aclose()


async def _stop_on_signal(dispatcher: Dispatcher, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: finishing in-flight requests, then exiting", signal.Signals(signum).name)
            dispatcher.stop_reading()
            break


@asynccontextmanager
async def serve_in_memory(services: Services, **dispatcher_options: Any) -> AsyncIterator[Harness]:
    """The real server (routes and `services`) and a client in this event loop; closes `services` after."""
    from app_server.handlers import routes

    try:
        async with connect_in_memory(routes(), services, **dispatcher_options) as harness:
            yield harness
    finally:
        await services.aclose()


@asynccontextmanager
async def initialized(settings: Settings, *, wait: float = 5.0) -> AsyncIterator[Harness]:
    """A server for `settings` whose client has already initialized as `probe` 1.0 (as the transcripts do)."""
    async with serve_in_memory(Services(settings)) as harness:
        with anyio.fail_after(wait):
            await harness.initialize(name="probe", version="1.0")
        yield harness
