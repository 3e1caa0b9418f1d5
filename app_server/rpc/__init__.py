"""JSON-RPC, knowing no account: framing, the dispatcher, sessions, transports and the clients.

Servers use `dispatcher`, `context`, `sessions`, `outbox`, `framing`, `stdio`, `websocket`, `listeners`
and `memory`; clients use `client`, `wsclient`, `wsframe` and `lost`. `codec` is the dispatcher's own.
"""

__all__ = [
    "client",
    "context",
    "dispatcher",
    "framing",
    "listeners",
    "lost",
    "memory",
    "outbox",
    "sessions",
    "stdio",
    "websocket",
    "wsclient",
    "wsframe",
]
