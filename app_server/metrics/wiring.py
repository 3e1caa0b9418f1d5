"""`instrument`: a service's metrics connected to what it serves (the composition root calls it once).

The pool's current summaries feed the per-account gauges at scrape time (reading `accounts.toml`, never
upstream); the HTTP pool's transport is wrapped before its first call; the apply route's handler is counted
by outcome; connected clients are the broadcaster's connections.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app_server.metrics.service import CONTENT_TYPE, ServiceMetrics
from protocol import ext
from protocol.methods import POOL_APPLY

if TYPE_CHECKING:
    from app_server.rpc.dispatcher import Route
    from app_server.world import World

log = logging.getLogger(__name__)


def pool_summaries(world: World) -> list[ext.AccountSummary]:
    """The summary each pool account holds now (accounts never read yet have none); no upstream call."""
    try:
        members = world.pool.members()
    except Exception as exc:  # accounts.toml unreadable: the scrape still answers, without the accounts
        log.warning("metrics: the pool's accounts cannot be listed: %s", exc)
        return []
    return [member.summary for member in members if member.summary is not None]


def instrument(
    world: World, routes: dict[str, Route[World]], *, clock: Callable[[], float] = time.time
) -> ServiceMetrics:
    """The metrics of the service made of `world` and `routes` (the apply route in `routes` is replaced by
    its counted form)."""
    metrics = ServiceMetrics(
        lambda: pool_summaries(world), methods=routes, clients=lambda: len(world.broadcaster), clock=clock
    )
    world.http.wrap_transport = metrics.wrap_transport
    apply = routes.get(POOL_APPLY.name)
    if apply is not None and apply.handler is not None:
        routes[POOL_APPLY.name] = dataclasses.replace(apply, handler=metrics.count_applies(apply.handler))
    return metrics


def page(metrics: ServiceMetrics) -> Callable[[], tuple[bytes, str]]:
    """What `GET /metrics` answers, for the listeners' HTTP edge."""
    return lambda: (metrics.render(), CONTENT_TYPE)
