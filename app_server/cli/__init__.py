"""The `codex-limits` command, split by job: `launch` is the console script, `main` routes and parses.

The public face is `main` (the command, what `python -m app_server` runs for flags) and `proxy` (the
standard-library stdio proxy behind `python -m app_server.proxy`); every other module is the CLI's own.
"""

__all__ = ["main", "proxy"]
