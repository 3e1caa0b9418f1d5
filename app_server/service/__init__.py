"""The pool service: one long-running server per data directory on a Unix socket (standard library only here).

`state` names the files (socket, lock, state) and finds a running service; `control` starts, stops
and describes it. Both are imported by `codex-limits proxy`, which must start fast.
"""

__all__ = ["control", "snapshot", "state", "token"]
