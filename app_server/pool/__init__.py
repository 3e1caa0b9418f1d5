"""The account pool: accounts.toml, per-account summaries, the careful apply, alerts, usage, forecasts.

`accounts` (the file and each home's identity: the CLI's one door in), `pool` (Pool: summaries and
apply), `errors` (the pool's domain errors), `monitor` (the background refresh), `alerts`, `usage`,
`forecast`, `inventory`, `snapshot` (the status line's writer), `delivery/` (alert sinks).
`summary` is `pool`'s own.
"""

__all__ = [
    "accounts",
    "alerts",
    "delivery",
    "errors",
    "forecast",
    "inventory",
    "monitor",
    "pool",
    "snapshot",
    "usage",
]
