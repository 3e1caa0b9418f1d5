"""Prometheus metrics of one service (issue #23): the pool's accounts read at scrape time, applies, upstream calls,
JSON-RPC requests and connected clients, in a registry of its own (never the process-global one).

Imported only by the composition root of a listening service (`prometheus_client` stays off the stdio path).
`ServiceMetrics` is the one object the root makes; `render()` is what `GET /metrics` answers.
"""

from app_server.metrics.service import ServiceMetrics

__all__ = ["ServiceMetrics", "wiring"]
